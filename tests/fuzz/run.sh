#!/bin/sh
# Runs one libFuzzer target: every input of its committed corpus, then
# SECONDS of fuzzing. New inputs go to a scratch directory beside the build
# (the committed corpus changes only by hand: `make fuzz-merge`); a crash
# leaves its input in the current directory and fails the run.
# usage: run.sh TARGET CORPUS_DIR SECONDS
set -eu
target=$1 corpus=$2 seconds=$3
scratch=$(dirname "$target")/fuzz-new/$(basename "$target")
mkdir -p "$scratch"
exec "$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$(dirname "$target")/" "$scratch" "$corpus"
