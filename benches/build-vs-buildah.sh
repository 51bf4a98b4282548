#!/usr/bin/env bash
# Side-by-side build timings, one run, same machine, same 8-step Dockerfile
# (benches/build-context) on the busybox fixture:
#   cold     : empty build cache (fresh store / fresh buildah storage each run)
#   cached   : nothing changed since the last build
#   last-copy: main.sh (read by the last COPY) changed
# Needs hyperfine and buildah. Prints hyperfine's markdown tables.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p cairn-cli
cairn=$PWD/target/release/cairn
work=/tmp/cairn-builder-bench-$$
mkdir -p "$work"
bash fixtures/busybox/make-image.sh "$work/layout" >/dev/null
cp -r benches/build-context "$work/ctx"
export BUILDAH_ISOLATION=chroot
bst() { echo "--root $work/buildah/$1/root --runroot $work/buildah/$1/run --storage-driver overlay"; }
prep_buildah() { # $1 = storage name
  local id; id=$(buildah $(bst "$1") pull -q "oci:$work/layout:fixture")
  buildah $(bst "$1") tag "$id" localhost/bbfixture:latest
}
prep_cairn() { # $1 = store dir
  CAIRN_STORE=$1 "$cairn" import "oci:$work/layout:fixture" localhost/bbfixture:latest >/dev/null
}
# Cold runs use a new store each time (no deletion between runs: see DESIGN.md on ext4).
echo "## cold"
hyperfine --runs 5 --export-markdown "$work/cold.md" \
  --prepare "bash -c 'd=$work/cold-cairn-\$RANDOM\$RANDOM; echo \$d > $work/cur; CAIRN_STORE=\$d $cairn import oci:$work/layout:fixture localhost/bbfixture:latest >/dev/null'" \
  -n cairn "bash -c 'CAIRN_STORE=\$(cat $work/cur) $cairn build $work/ctx >/dev/null 2>&1'" \
  --prepare "bash -c 's=b\$RANDOM\$RANDOM; echo \$s > $work/curb; id=\$(buildah --root $work/buildah/\$s/root --runroot $work/buildah/\$s/run --storage-driver overlay pull -q oci:$work/layout:fixture); buildah --root $work/buildah/\$s/root --runroot $work/buildah/\$s/run --storage-driver overlay tag \$id localhost/bbfixture:latest'" \
  -n buildah "bash -c 's=\$(cat $work/curb); buildah --root $work/buildah/\$s/root --runroot $work/buildah/\$s/run --storage-driver overlay build --layers --isolation chroot -q $work/ctx >/dev/null 2>&1'"
# Warm stores for the cached runs.
prep_cairn "$work/warm-cairn"; prep_buildah warm
CAIRN_STORE=$work/warm-cairn "$cairn" build "$work/ctx" >/dev/null 2>&1
buildah $(bst warm) build --layers --isolation chroot -q "$work/ctx" >/dev/null 2>&1
echo "## cached"
hyperfine --warmup 2 --runs 20 --export-markdown "$work/cached.md" \
  -n cairn "env CAIRN_STORE=$work/warm-cairn $cairn build $work/ctx" \
  -n buildah "buildah $(bst warm) build --layers --isolation chroot -q $work/ctx"
echo "## last-copy"
hyperfine --runs 10 --export-markdown "$work/lastcopy.md" \
  --prepare "bash -c 'echo \"echo \$RANDOM\$RANDOM\" >> $work/ctx/main.sh'" \
  -n cairn "env CAIRN_STORE=$work/warm-cairn $cairn build $work/ctx" \
  --prepare "bash -c 'echo \"echo \$RANDOM\$RANDOM\" >> $work/ctx/main.sh'" \
  -n buildah "buildah $(bst warm) build --layers --isolation chroot -q $work/ctx"
cat "$work/cold.md" "$work/cached.md" "$work/lastcopy.md"
echo "(work dir $work left in place; remove it when the machine is idle)"
