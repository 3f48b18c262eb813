#!/bin/sh
# Installs the Debian packages the benchmark suite needs (the load generator,
# the peer servers it compares corral with, espeak-ng for the whole-file TTS
# peer, and the plotting library), and only those that are missing, so a
# second run does nothing. Needs root (or sudo). The bench starts every peer
# itself on loopback; a service that a package's install may enable is not
# used.
set -eu

PKGS="wrk gunicorn uwsgi-core uwsgi-plugin-python3 python3-fastapi python3-uvicorn python3-uvloop python3-httptools nginx-light
python3-matplotlib python3-numpy python3-requests procps curl espeak-ng"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "bench deps: installing$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
