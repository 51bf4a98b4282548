#!/usr/bin/env bash
# Sandbox start against image size, and sandbox commit against the layer
# pipeline (crates/sandbox/benches/scaling.rs), then the criterion medians:
#   start_by_image/*  create + exec `true` from images of 1 and 20 layers,
#                     ~1 MiB and ~200 MiB (layers already extracted)
#   commit_100mib/*   commit of a sandbox that wrote 100 MiB, and the layer
#                     pipeline alone (write_layer into a store blob) on 100 MiB
#
#   benches/sandbox-scaling.sh                 # both groups
#   benches/sandbox-scaling.sh start_by_image  # a criterion filter
#
# Scratch goes to $CAIRN_BENCH_DIR (default /var/tmp): about 5 GiB at peak,
# deleted at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
export CAIRN_BENCH_DIR=${CAIRN_BENCH_DIR:-/var/tmp}
cargo bench -p cairn-sandbox --bench scaling -- "$@"
# Criterion's point estimates, in milliseconds.
for est in "$CARGO_TARGET_DIR"/criterion/{start_by_image,commit_100mib}/*/new/estimates.json; do
  [ -e "$est" ] || continue
  name=${est#"$CARGO_TARGET_DIR"/criterion/}
  name=${name%/new/estimates.json}
  python3 - "$name" "$est" <<'PY'
import json, sys
e = json.load(open(sys.argv[2]))
m, lo, hi = (e["median"]["point_estimate"], e["median"]["confidence_interval"]["lower_bound"],
             e["median"]["confidence_interval"]["upper_bound"])
extra = ""
if sys.argv[1].startswith("commit_100mib"):
    extra = "  (%.0f MiB/s)" % (100 / (m / 1e9))
print("%-40s median %9.2f ms  [%.2f, %.2f]%s" % (sys.argv[1], m / 1e6, lo / 1e6, hi / 1e6, extra))
PY
done
