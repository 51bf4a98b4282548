#!/usr/bin/env bash
# The README's main job: build the demo snapshot from fixtures/demo on the
# local store (busybox base made from the machine's static busybox, no
# network) and run it.
#   CAIRN_STORE  store directory (default: cairn's own default for this user)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v busybox >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
  else
    echo "demo: needs busybox-static (apt-get install busybox-static)" >&2
    exit 1
  fi
fi
cargo build --release -q -p cairn-cli
cairn=./target/release/cairn
base=$(mktemp -d)
trap 'rm -rf "$base"' EXIT
bash fixtures/busybox/make-image.sh "$base/busybox" >/dev/null
"$cairn" import "oci:$base/busybox:fixture" busybox:fixture >/dev/null
"$cairn" build -t demo:latest fixtures/demo
"$cairn" run --rm demo:latest
