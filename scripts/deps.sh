#!/bin/sh
# Installs the Debian packages corral needs to build, serve and test, and only
# those that are missing, so a second run does nothing. Needs root (or sudo).
set -eu

PKGS="build-essential cmake pkg-config libuv1-dev libh2o-dev libssl-dev libjansson-dev libyaml-dev
libcurl4-openssl-dev zlib1g-dev libsqlite3-dev libarchive-dev libespeak-ng-dev espeak-ng-data libgrpc-dev libprotobuf-c-dev protobuf-c-compiler
python3 python3-pytest python3-pytest-xdist python3-numpy python3-requests python3-grpcio python3-grpc-tools
python3-yaml python3-jsonschema
clang libclang-rt-14-dev util-linux prometheus chromium nodejs"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# npm for the dashboard's browser test (tests/browser): Debian's, unless npm
# came with nodejs (NodeSource's nodejs bundles it, and conflicts with Debian's).
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -z "$missing" ] && exit 0

echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
