#!/usr/bin/env bash
# RUN-and-commit, Cairn against buildah, in one run on the busybox fixture:
# a RUN that writes 256 MiB of incompressible data, and one that writes
# 20,000 files of 1 KiB, each built with the cache off so the RUN and the
# commit of its layer happen every time. Cairn compresses with zstd (its
# fast path); buildah stores layers uncompressed locally (it compresses on push).
# Needs hyperfine and buildah. Leaves its work dir (see DESIGN.md on ext4).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p cairn-cli
cairn=$PWD/target/release/cairn
[ -n "${CARGO_TARGET_DIR:-}" ] && cairn=$CARGO_TARGET_DIR/release/cairn
work=/tmp/cairn-run-commit-bench-$$
mkdir -p "$work/ctx"
bash fixtures/busybox/make-image.sh "$work/layout" >/dev/null
export CAIRN_STORE=$work/cairn BUILDAH_ISOLATION=chroot
"$cairn" import "oci:$work/layout:fixture" localhost/bbfixture:latest >/dev/null
bs="--root $work/buildah/root --runroot $work/buildah/run --storage-driver overlay"
id=$(buildah $bs pull -q "oci:$work/layout:fixture")
buildah $bs tag "$id" localhost/bbfixture:latest
for case in ${CASES:-big many}; do
  df=$PWD/benches/run-commit/$case.Dockerfile
  echo "## $case"
  hyperfine --runs 5 --export-markdown "$work/$case.md" \
    -n cairn "$cairn build --no-cache --compression zstd -f $df $work/ctx" \
    -n buildah "buildah $bs build --no-cache --layers --isolation chroot -q -f $df $work/ctx"
done
cat "$work/big.md" "$work/many.md"
