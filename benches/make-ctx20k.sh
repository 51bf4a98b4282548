#!/usr/bin/env bash
# The build context of the ctx-cached and ctx-one rows (side-by-side.sh) and
# of rootless-copy.sh: DIR/tree holds 100 dirs of 200 files of 1 KiB (20,000
# files, each distinct), DIR/Dockerfile copies it onto the busybox fixture.
#   usage: benches/make-ctx20k.sh DIR
set -euo pipefail
dir=$1
mkdir -p "$dir/tree"
python3 - "$dir/tree" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(100):
    os.makedirs(f"{root}/d{d:03}", exist_ok=True)
    for f in range(200):
        with open(f"{root}/d{d:03}/f{f:03}", "wb") as fh:
            fh.write((b"%07d" % (d * 200 + f)) * 146 + b"xx")
PY
printf 'FROM localhost/bbfixture:latest\nCOPY tree /tree\n' > "$dir/Dockerfile"
