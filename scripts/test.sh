#!/usr/bin/env bash
# The test command of the README: installs what the tests need (when root),
# then runs every test of the workspace and ends with one total line.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-env.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Benches are compiled by clippy in .ci/run; they run only under `cargo bench`.
set +e
cargo test --workspace --release "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# libtest's "test result: ok. N passed; M failed" lines, plus the summaries
# of the custom-harness suites ("N passed, M failed" alone on a line).
awk '
  /^test result: / { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
  /^[0-9]+ passed, [0-9]+ failed$/ { p += $1; f += $3 }
  END { printf "total: %d passed, %d failed\n", p, f }
' "$log"
exit "$status"
