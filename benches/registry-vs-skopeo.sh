#!/usr/bin/env bash
# Registry transfers side by side with `skopeo copy`, one run, same machine,
# an image of the busybox fixture plus one 256 MiB incompressible layer (gzip):
#   push    : store -> an empty loopback registry (a fresh registry per run)
#   pull    : registry -> an empty store (cairn pull --no-unpack) / empty oci dir (skopeo)
#   pull+unpack: cairn pull with layer extraction, for reference
#   re-push : the same image again to the same registry (nothing to send)
# Needs hyperfine, skopeo, docker-registry. Prints hyperfine's markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p cairn-cli
cairn=$PWD/target/release/cairn
work=/var/tmp/cairn-registry-bench-$$
mkdir -p "$work"
bash fixtures/busybox/make-image.sh "$work/layout" >/dev/null
export CAIRN_STORE=$work/store
"$cairn" import "oci:$work/layout:fixture" busybox:fixture >/dev/null
mkdir -p "$work/ctx"
printf 'FROM busybox:fixture\nRUN head -c 268435456 /dev/urandom > /big.bin\n' > "$work/ctx/Dockerfile"
"$cairn" build -t big:1 "$work/ctx" >/dev/null 2>&1
"$cairn" export big:1 "oci:$work/big-layout:big" >/dev/null

# The registry helpers live in a file so hyperfine's --prepare (run by sh) can use them.
cat > "$work/reg.sh" <<'SH'
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_registry() { # $1 = name: starts a registry with empty storage, prints its port
  local dir=$WORK/reg-$1-$RANDOM$RANDOM port; port=$(free_port); mkdir -p "$dir"
  cat > "$dir/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $dir/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port, secret: bench}
YML
  docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  echo $! > "$WORK/pid-$1"
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.05; done
  echo "$port"
}
stop_registry() { kill "$(cat "$WORK/pid-$1")" 2>/dev/null || true; }
SH
export WORK=$work
source "$work/reg.sh"

# push: every run gets a new, empty registry on a new port
cat > "$work/fresh.sh" <<'SH'
source "$WORK/reg.sh"; stop_registry push; start_registry push > "$WORK/push-port"
SH
echo "## push 256 MiB to an empty registry"
hyperfine --runs 5 --export-markdown "$work/push.md" \
  --prepare "bash -c 'source $work/fresh.sh'" \
  -n cairn "bash -c '$cairn push big:1 127.0.0.1:\$(cat $work/push-port)/bench/big:1 >/dev/null 2>&1'" \
  --prepare "bash -c 'source $work/fresh.sh'" \
  -n skopeo "bash -c 'skopeo copy -q --dest-tls-verify=false oci:$work/big-layout:big docker://127.0.0.1:\$(cat $work/push-port)/bench/big:1'"
stop_registry push

# pull: one registry holding the image; a new empty destination per run
port=$(start_registry pull)
"$cairn" push big:1 "127.0.0.1:$port/bench/big:1" >/dev/null 2>&1
echo "## pull 256 MiB into an empty store"
hyperfine --runs 5 --export-markdown "$work/pull.md" \
  --prepare "bash -c 'echo $work/pull-\$RANDOM\$RANDOM > $work/cur'" \
  -n "cairn pull --no-unpack" "bash -c 'CAIRN_STORE=\$(cat $work/cur) $cairn pull --no-unpack 127.0.0.1:$port/bench/big:1 >/dev/null 2>&1'" \
  -n "skopeo copy" "bash -c 'skopeo copy -q --src-tls-verify=false docker://127.0.0.1:$port/bench/big:1 oci:\$(cat $work/cur):big'" \
  -n "cairn pull (with unpack)" "bash -c 'CAIRN_STORE=\$(cat $work/cur) $cairn pull 127.0.0.1:$port/bench/big:1 >/dev/null 2>&1'"
echo "## re-push of an unchanged image"
hyperfine --warmup 2 --runs 20 --export-markdown "$work/repush.md" \
  -n "cairn push (unchanged)" "$cairn push big:1 127.0.0.1:$port/bench/big:1" \
  -n "skopeo copy (unchanged)" "skopeo copy -q --dest-tls-verify=false oci:$work/big-layout:big docker://127.0.0.1:$port/bench/big:1"
stop_registry pull
cat "$work/push.md" "$work/pull.md" "$work/repush.md"
echo "(work dir $work left in place; remove it when the machine is idle)"
