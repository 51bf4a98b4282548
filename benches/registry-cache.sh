#!/usr/bin/env bash
# Issue 18's bench: a second runner with --cache-from against building cold
# there. One 8-step Dockerfile (benches/registry-cache/Dockerfile: a COPY,
# a RUN writing 256 MiB of random bytes, config steps, small RUNs) is built
# once in store A with --cache-to (mode=max) into a local docker-registry;
# then, RUNS times (default 3), alternating, in fresh stores:
#   cold:  cairn build (nothing cached, no registry)
#   cache: cairn build --cache-from (every step's layer pulled, nothing runs)
# Medians and the ratio cold/cache are printed (the issue's target: >= 3x).
#
#   usage: benches/registry-cache.sh     (RUNS=N, CAIRN_BIN=..., CAIRN_BENCH_WORK=DIR)
#
# A cold store holds ~0.5 GiB (blob + extracted dir), a --cache-from one
# ~0.25 GiB (the cache's layers stay blobs): about 1 + RUNS * 0.75 GiB. The work dir is removed at the end, after all
# measuring (DESIGN.md: deleting big trees slows creation for minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CAIRN_BIN:-}" ]; then cargo build --release -q -p cairn-cli; fi
cairn=${CAIRN_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/cairn}
runs=${RUNS:-3}
work=${CAIRN_BENCH_WORK:-/var/tmp/cairn-registry-cache-$$}
ctx=$PWD/benches/registry-cache
mkdir -p "$work"

reg_pid=""
cleanup() {
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null; wait "$reg_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/reg"
printf 'version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: %s/data}}\nhttp: {addr: 127.0.0.1:%s, secret: bench}\n' "$work/reg" "$port" >"$work/reg/config.yml"
docker-registry serve "$work/reg/config.yml" >"$work/reg/log" 2>&1 &
reg_pid=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.05; done
cache="type=registry,ref=127.0.0.1:$port/bench/cache:main"

bash fixtures/busybox/make-image.sh "$work/layout" >/dev/null
# store NAME: a fresh store holding the fixture; prints its path.
store() {
  CAIRN_STORE=$work/$1 "$cairn" import "oci:$work/layout:fixture" localhost/bbfixture:latest >/dev/null
  echo "$work/$1"
}
ms() { # wall time of one command in ms; a failure aborts the bench
  local s e
  s=$(date +%s%N)
  "$@" >/dev/null 2>"$work/last-stderr" || { cat "$work/last-stderr" >&2; echo "failed: $*" >&2; exit 1; }
  e=$(date +%s%N)
  echo $(((e - s) / 1000000))
}
median() { printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"; }

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
a=$(store a)
first=$(CAIRN_STORE=$a "$cairn" build -q --cache-to "$cache,mode=max" "$ctx")
sync
cold="" warm=""
for ((i = 0; i < runs; i++)); do
  c=$(store "cold$i"); w=$(store "warm$i")
  # sync first: the store's syncfs would otherwise also flush the previous
  # measurement's ~0.5 GiB of dirty pages and charge them to this one.
  sync; cold="$cold $(CAIRN_STORE=$c ms "$cairn" build -q "$ctx")"
  sync; warm="$warm $(CAIRN_STORE=$w ms "$cairn" build -q --cache-from "$cache" "$ctx")"
  got=$(CAIRN_STORE=$w "$cairn" build -q --cache-from "$cache" "$ctx")
  [ "$got" = "$first" ] || { echo "digest differs: $got vs $first" >&2; exit 1; }
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
c=$(median $cold); w=$(median $warm)
echo "| 8 steps, 256 MiB RUN layer | cold $c ms | --cache-from $w ms | $(python3 -c "print(f'{$c/$w:.1f}')")x |"
echo "(runs: cold$cold; cache$warm)"
