#!/usr/bin/env bash
# The one-changed-file COPY of the side-by-side bench's ctx-one row (a
# context of 20,000 small files, `COPY tree /tree`, one file appended to,
# `sync`, rebuild), run as root or rootless, printing the build's
# CAIRN_TRACE_TIMINGS spans of the copy per run (issue 16, docs/performance.md
# "Fifth pass"). Cairn only (no peer): compare two binaries by alternating.
#   usage: benches/rootless-copy.sh BIN root|rootless RUNS
#   env:   CAIRN_BENCH_WORK (default /var/tmp/cairn-rootless-copy),
#          CAIRN_TEST_USER (default cairntest; needs a subordinate range)
set -euo pipefail
bin=$(realpath "$1"); mode=$2; n=$3
w=${CAIRN_BENCH_WORK:-/var/tmp/cairn-rootless-copy}
user=${CAIRN_TEST_USER:-cairntest}
here=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$w"; chmod 755 "$w"
if [ ! -d "$w/ctx20k/tree" ]; then
  bash "$here/benches/make-ctx20k.sh" "$w/ctx20k"
  chown -R "$user:" "$w/ctx20k"
fi
[ -d "$w/layout" ] || { bash "$here/fixtures/busybox/make-image.sh" "$w/layout" >/dev/null; chmod -R a+rX "$w/layout"; }
store=$w/store-$mode-$(echo "$bin" | md5sum | cut -c1-8)
if [ "$mode" = root ]; then pre=(env); else pre=(runuser -u "$user" -- env); mkdir -p "$store"; chown "$user:" "$store"; fi
if [ ! -e "$store/.seeded" ]; then
  "${pre[@]}" CAIRN_STORE="$store" "$bin" import "oci:$w/layout:fixture" localhost/bbfixture:latest >/dev/null
  "${pre[@]}" CAIRN_STORE="$store" "$bin" build "$w/ctx20k" >/dev/null 2>&1
  touch "$store/.seeded"
fi
err=$(mktemp); trap 'rm -f "$err"' EXIT
for i in $(seq "$n"); do
  echo "$RANDOM$RANDOM" >> "$w/ctx20k/tree/d050/f100"; sync
  s=$(date +%s%N)
  "${pre[@]}" CAIRN_STORE="$store" CAIRN_TRACE_TIMINGS=1 "$bin" build "$w/ctx20k" 2>"$err" >/dev/null || { cat "$err"; exit 1; }
  e=$(date +%s%N)
  spans=$(grep -o 'cairn-timing: [0-9]* \(copy\.[a-z_]*\|build.commit_layer\|layer.extract\) [0-9.]*' "$err" | awk '{printf "%s=%s ", $3, $4}')
  echo "$(basename "$bin") $mode run$i total=$(((e - s) / 1000000))ms load=$(cut -d' ' -f1 /proc/loadavg) $spans"
done
echo "stores under $w (remove with rm -rf $w/store-*)"
