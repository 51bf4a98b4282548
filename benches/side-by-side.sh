#!/usr/bin/env bash
# The table of issue 16, measured in one run: Cairn against buildah (1.28,
# rootless-style overlay storage, --layers, chroot isolation) and skopeo,
# on the busybox fixture, each case run RUNS times (default 3) alternating
# the two tools, medians printed with the ratio peer/cairn (>1: Cairn faster).
#
#   usage: benches/side-by-side.sh            (all rows)
#          ROWS="gzip zstd" benches/side-by-side.sh
#   rows: gzip zstd many true push pull runrm ctx-cached ctx-one big-cached
#   CAIRN_BIN=/path/to/cairn: measure that binary instead of building one
#
# Needs buildah, skopeo, docker-registry, python3. The machine is shared:
# the load average is printed before and after; compare ratios of one run.
# Leaves its work dir (see DESIGN.md on deleting on ext4); CAIRN_BENCH_WORK
# overrides its place.
set -euo pipefail
cd "$(dirname "$0")/.."
# CAIRN_BIN: measure that binary (e.g. an older build) instead of building.
if [ -z "${CAIRN_BIN:-}" ]; then cargo build --release -q -p cairn-cli; fi
cairn=${CAIRN_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/cairn}
runs=${RUNS:-3}
rows=${ROWS:-gzip zstd many true push pull runrm ctx-cached ctx-one big-cached}
work=${CAIRN_BENCH_WORK:-/var/tmp/cairn-side-by-side-$$}
mkdir -p "$work"
export BUILDAH_ISOLATION=chroot CAIRN_STORE=$work/cairn
bs="--root $work/buildah/root --runroot $work/buildah/run --storage-driver overlay"
df_dir=$PWD/benches/run-commit

bash fixtures/busybox/make-image.sh "$work/layout" >/dev/null
"$cairn" import "oci:$work/layout:fixture" localhost/bbfixture:latest >/dev/null
buildah $bs tag "$(buildah $bs pull -q "oci:$work/layout:fixture")" localhost/bbfixture:latest

# ms CMD...: wall time of one run, in milliseconds to 0.1 (output discarded; a
# failing command aborts the bench).
# The clock is bash's own $EPOCHREALTIME (microseconds), not `date`: two
# forks of `date` per sample added ~1-2 ms to every figure, which shrank
# the ratio of the short rows (`run --rm`) and not the peer's long ones.
ms() {
  local s e
  s=${EPOCHREALTIME/./}
  "$@" >/dev/null 2>"$work/last-stderr" || { cat "$work/last-stderr" >&2; echo "failed: $*" >&2; exit 1; }
  e=${EPOCHREALTIME/./}
  local us=$((e - s))
  printf '%d.%d\n' $((us / 1000)) $((us % 1000 / 100))
}
median() { printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"; }
fmt() { python3 -c "v=$1/1000; print(f'{v:.2f} s' if v >= 1 else f'{$1} ms')"; }
row() { # label cairn_ms_list peer_label peer_ms_list
  local c p
  c=$(median $2); p=$(median $4)
  printf '| %s | %s | %s %s | %sx |\n' "$1" "$(fmt "$c")" "$3" "$(fmt "$p")" \
    "$(python3 -c "print(f'{$p/$c:.1f}')")"
}
# pair LABEL PEER PREP_CAIRN CAIRN_CMD PREP_PEER PEER_CMD: RUNS alternated runs.
pair() {
  local cs="" ps="" i
  for ((i = 0; i < runs; i++)); do
    eval "$3"; cs="$cs $(eval "ms $4")"
    eval "$5"; ps="$ps $(eval "ms $6")"
  done
  row "$1" "$cs" "$2" "$ps"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
reg_pid=""
start_registry() { # starts an empty registry; sets $port
  local dir=$work/reg-$RANDOM$RANDOM
  port=$(free_port); mkdir -p "$dir"
  printf 'version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: %s/data}}\nhttp: {addr: 127.0.0.1:%s, secret: bench}\n' "$dir" "$port" > "$dir/config.yml"
  docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  reg_pid=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.05; done
}
stop_registry() { [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null; wait "$reg_pid" 2>/dev/null || true; reg_pid=""; }
trap stop_registry EXIT

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| Work | Cairn | Peer | Ratio |"
echo "|---|---|---|---|"
for r in $rows; do
  case $r in
  gzip | zstd)
    pair "RUN writing 256 MiB incompressible + commit, $r" buildah : \
      "$cairn build --no-cache --compression $r -f $df_dir/big.Dockerfile $work" : \
      "buildah $bs build --no-cache --layers -q -f $df_dir/big.Dockerfile $work" ;;
  many)
    pair "RUN writing 20,000 x 1 KiB files + commit (gzip)" buildah : \
      "$cairn build --no-cache --compression gzip -f $df_dir/many.Dockerfile $work" : \
      "buildah $bs build --no-cache --layers -q -f $df_dir/many.Dockerfile $work" ;;
  true)
    printf 'FROM localhost/bbfixture:latest\nRUN true\n' > "$work/true.Dockerfile"
    pair "RUN true + commit" buildah : \
      "$cairn build --no-cache -f $work/true.Dockerfile $work" : \
      "buildah $bs build --no-cache --layers -q -f $work/true.Dockerfile $work" ;;
  push | pull)
    if [ ! -d "$work/big-layout" ]; then
      "$cairn" build --compression gzip -t localhost/big:1 -f "$df_dir/big.Dockerfile" "$work" >/dev/null 2>&1
      "$cairn" export localhost/big:1 "oci:$work/big-layout:big" >/dev/null
    fi
    if [ "$r" = push ]; then
      pair "push 256 MiB (gzip) to an empty registry" skopeo \
        "stop_registry; start_registry" "$cairn push localhost/big:1 127.0.0.1:\$port/bench/big:1" \
        "stop_registry; start_registry" "skopeo copy -q --dest-tls-verify=false oci:$work/big-layout:big docker://127.0.0.1:\$port/bench/big:1"
    else
      stop_registry; start_registry
      "$cairn" push localhost/big:1 "127.0.0.1:$port/bench/big:1" >/dev/null 2>&1
      pair "pull 256 MiB into the store (unpacked)" buildah \
        'd=$work/pull-$RANDOM$RANDOM' "env CAIRN_STORE=\$d $cairn pull 127.0.0.1:$port/bench/big:1" \
        'b=$work/bpull-$RANDOM$RANDOM' "buildah --root \$b/root --runroot \$b/run --storage-driver overlay pull -q --tls-verify=false 127.0.0.1:$port/bench/big:1"
      stop_registry
    fi ;;
  runrm)
    pair "run --rm IMAGE true" "buildah from+run+rm" : \
      "$cairn run --rm localhost/bbfixture:latest -- true" : \
      "bash -c 'c=\$(buildah $bs from -q localhost/bbfixture:latest) && buildah $bs run --isolation chroot \$c true && buildah $bs rm \$c'" ;;
  ctx-cached | ctx-one)
    if [ ! -d "$work/ctx20k/tree" ]; then
      bash benches/make-ctx20k.sh "$work/ctx20k"
      "$cairn" build "$work/ctx20k" >/dev/null 2>&1
      buildah $bs build --layers -q "$work/ctx20k" >/dev/null 2>&1
    fi
    if [ "$r" = ctx-cached ]; then
      pair "fully cached rebuild, context of 20,000 small files" buildah : \
        "$cairn build $work/ctx20k" : "buildah $bs build --layers -q $work/ctx20k"
    else
      # sync first: the store makes its new layer durable (syncfs), which
      # would otherwise also flush what the other tool's last run left dirty.
      touch_one='echo $RANDOM$RANDOM >> $work/ctx20k/tree/d050/f100; sync'
      pair "rebuild after 1 of those 20,000 files changed (COPY tree /tree)" buildah \
        "$touch_one" "$cairn build $work/ctx20k" "$touch_one" "buildah $bs build --layers -q $work/ctx20k"
    fi ;;
  big-cached)
    if [ ! -f "$work/ctxbig/big.bin" ]; then
      mkdir -p "$work/ctxbig"
      head -c 268435456 /dev/urandom > "$work/ctxbig/big.bin"
      printf 'FROM localhost/bbfixture:latest\nCOPY big.bin /big.bin\n' > "$work/ctxbig/Dockerfile"
      "$cairn" build "$work/ctxbig" >/dev/null 2>&1
      buildah $bs build --layers -q "$work/ctxbig" >/dev/null 2>&1
    fi
    pair "fully cached rebuild with a 256 MiB COPY" buildah : \
      "$cairn build $work/ctxbig" : "buildah $bs build --layers -q $work/ctxbig" ;;
  *) echo "unknown row $r" >&2; exit 2 ;;
  esac
done
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg); medians of $runs; work dir $work"
