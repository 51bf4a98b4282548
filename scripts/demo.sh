#!/usr/bin/env bash
# The README's main job. Until the build engine lands, it builds the CLI and
# prints the syntax tree of the demo Dockerfile; the build issue replaces this
# with "build the demo snapshot from fixtures/ and run it".
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p cairn-cli
./target/release/cairn parse -f fixtures/demo/Dockerfile --format json
