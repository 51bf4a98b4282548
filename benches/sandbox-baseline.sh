#!/usr/bin/env bash
# Peers of the sandbox start bench (crates/sandbox/benches/start.rs), timed in
# the same session on the busybox fixture:
#   floor : unshare -Urmpf chroot ROOTFS /bin/true
#   buildah: buildah from + buildah run true + buildah rm (chroot isolation)
# Then runs the criterion bench itself, so the three numbers come from one run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
# buildah names an image pulled from oci:PATH after PATH and refuses capitals,
# which mktemp may produce: use a lowercase name of our own.
work=/tmp/cairn-sandbox-bench-$$
mkdir -p "$work"
layout=$work/layout
bash fixtures/busybox/make-image.sh "$layout" >/dev/null
mkdir "$work/rootfs"
for blob in "$layout"/blobs/sha256/*; do
  if [ "$(head -c2 "$blob" | od -An -tx1 | tr -d ' ')" = 1f8b ]; then tar -xzf "$blob" -C "$work/rootfs"; fi
done
export BUILDAH_ISOLATION=chroot
storage=(--root "$work/buildah/root" --runroot "$work/buildah/run" --storage-driver overlay)
id=$(buildah "${storage[@]}" pull -q "oci:$layout:fixture")
buildah "${storage[@]}" tag "$id" localhost/bbfixture
hyperfine -N --warmup 5 --runs 100 --export-markdown "$work/floor.md" \
  "unshare -Urmpf chroot $work/rootfs /bin/true"
hyperfine --warmup 3 --runs 30 --export-markdown "$work/buildah.md" \
  "c=\$(buildah ${storage[*]} from -q localhost/bbfixture) && buildah ${storage[*]} run \$c true && buildah ${storage[*]} rm \$c >/dev/null"
cat "$work/floor.md" "$work/buildah.md"
cargo bench -p cairn-sandbox --bench start -- --warm-up-time 1 --measurement-time 5
buildah "${storage[@]}" rm -a >/dev/null 2>&1 || true
buildah "${storage[@]}" rmi -a >/dev/null 2>&1 || true
rm -rf "$work" 2>/dev/null || true
