#!/usr/bin/env bash
# The test command of the README: installs what the tests need (when root),
# then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-env.sh
# Benches are compiled by clippy in .ci/run; they run only under `cargo bench`.
cargo test --workspace --release "$@"
