#!/usr/bin/env bash
# Layer commit/extraction: shell baselines and Cairn, in the same run, on the
# same trees (issue 4). Prints medians and Cairn/baseline throughput ratios.
#
#   benches/layer-baseline.sh            # baselines + cargo bench (criterion)
#   RUNS=7 SKIP_CAIRN=1 benches/layer-baseline.sh
#
# Trees live in $CAIRN_BENCH_DIR (default /var/tmp/cairn-layer-bench) and are
# built once by the criterion bench's own generator (same bytes every time).
# Nothing big is deleted between measured runs: each extraction goes into a
# fresh directory, and all of them are removed at the end (ext4 without a
# journal slows file creation for minutes after mass deletes).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${CAIRN_BENCH_DIR:-/var/tmp/cairn-layer-bench}
RUNS=${RUNS:-5}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
SCR="$BASE/shell-$$"
mkdir -p "$SCR"
trap 'rm -rf "$SCR"' EXIT

if [[ ! -e $BASE/tree-big/.complete || ! -e $BASE/tree-small/.complete ]]; then
  # The criterion bench builds the trees first thing; a filtered run that
  # matches nothing does only that.
  cargo bench -p cairn-layer --bench commit -- --test no-such-bench >/dev/null 2>&1 || true
fi

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }

declare -A RESULT
for tree in big small; do
  dir="$BASE/tree-$tree"
  layer="$SCR/$tree.tar.zst"
  tar -C "$dir" -cf - . | zstd -q -T2 -3 > "$layer"
  c=(); x=()
  for i in $(seq "$RUNS"); do
    c+=("$(secs sh -c "tar -C '$dir' -cf - . | zstd -q -T2 -3 | openssl dgst -sha256")")
    mkdir "$SCR/x-$tree-$i"
    x+=("$(secs sh -c "zstd -q -dc '$layer' | tar -xf - -C '$SCR/x-$tree-$i'")")
  done
  RESULT[commit-$tree]=$(printf '%s\n' "${c[@]}" | median)
  RESULT[extract-$tree]=$(printf '%s\n' "${x[@]}" | median)
  printf 'baseline %-6s commit  tar|zstd -T2 -3|openssl sha256 : median %.3f s  (runs: %s)\n' "$tree" "${RESULT[commit-$tree]}" "${c[*]}"
  printf 'baseline %-6s extract zstd -dc|tar -x             : median %.3f s  (runs: %s)\n' "$tree" "${RESULT[extract-$tree]}" "${x[*]}"
done

if [[ -n ${SKIP_CAIRN:-} ]]; then exit 0; fi

# Peak memory of a 1 GiB layer (commit and extraction), through the example driver.
cargo build -q --release -p cairn-layer --example layer_tool
tool="$CARGO_TARGET_DIR/release/examples/layer_tool"
if [[ ! -e $BASE/tree-1g/.complete ]]; then
  mkdir -p "$BASE/tree-1g"
  for i in 0 1 2 3; do head -c 256M /dev/urandom > "$BASE/tree-1g/part$i"; done
  touch "$BASE/tree-1g/.complete"
fi
for comp in zstd gzip; do
  rss=$( { /usr/bin/time -f '%M %e' "$tool" commit "$BASE/tree-1g" "$SCR/1g.$comp" "$comp" >/dev/null; } 2>&1 | tail -1)
  printf 'cairn    1GiB   commit %-4s peak RSS %d MiB, %s s\n' "$comp" "$(( ${rss% *} / 1024 ))" "${rss#* }"
done
mkdir "$SCR/x-1g"
rss=$( { /usr/bin/time -f '%M %e' "$tool" extract "$SCR/1g.zstd" "$SCR/x-1g" >/dev/null; } 2>&1 | tail -1)
printf 'cairn    1GiB   extract zstd peak RSS %d MiB, %s s\n' "$(( ${rss% *} / 1024 ))" "${rss#* }"
cargo bench -p cairn-layer --bench commit 2>&1 | grep -E '^(commit|extract)/|time:' || true
crit="$CARGO_TARGET_DIR/criterion"
est() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["median"]["point_estimate"]/1e9)' "$crit/$1/new/estimates.json"; }
for tree in big small; do
  name=$([[ $tree == big ]] && echo 256MiB-4files || echo 20k-1KiB-files)
  cz=$(est "commit_${name}/zstd"); cg=$(est "commit_${name}/gzip"); xz=$(est "extract_${name}/zstd")
  printf 'cairn    %-6s commit zstd %.3f s  gzip %.3f s  extract %.3f s\n' "$tree" "$cz" "$cg" "$xz"
  printf 'ratio    %-6s commit throughput cairn/baseline %.2f   extract %.2f\n' "$tree" \
    "$(echo "${RESULT[commit-$tree]} / $cz" | bc -l)" "$(echo "${RESULT[extract-$tree]} / $xz" | bc -l)"
done
