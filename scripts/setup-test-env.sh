#!/usr/bin/env bash
# Installs what the test suite drives for real and creates the unprivileged
# test user with a subordinate ID range. Idempotent; needs root for the
# installs (as a normal user it only checks and reports what is missing).
set -euo pipefail

PKGS=(busybox-static docker-registry skopeo umoci uidmap buildah zstd pigz postgresql)
TEST_USER=${CAIRN_TEST_USER:-cairntest}

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done

if [ "$(id -u)" -ne 0 ]; then
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-test-env: not root; missing packages: ${missing[*]} (tests that need them will fail)" >&2
  fi
  exit 0
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-test-env: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Debian registry package starts a system service on port 5000; tests
# start their own on free ports, so stop it to keep the machine quiet.
if command -v systemctl >/dev/null 2>&1; then
  systemctl stop docker-registry >/dev/null 2>&1 || true
  # Likewise PostgreSQL's default cluster: tests run their own servers.
  systemctl stop postgresql >/dev/null 2>&1 || true
fi

if ! id "$TEST_USER" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$TEST_USER"
fi
for f in /etc/subuid /etc/subgid; do
  touch "$f"
  grep -q "^$TEST_USER:" "$f" || echo "$TEST_USER:200000:65536" >> "$f"
done

# Root's sandboxes map container IDs onto the `cairn` range (Cairn adds it
# itself when missing; made here so a test machine has it from the start).
for f in /etc/subuid /etc/subgid; do
  grep -q "^cairn:" "$f" || echo "cairn:300000:65536" >> "$f"
done

# A second user with no subordinate range: the single-ID fallback's tests.
NORANGE_USER=${CAIRN_TEST_NORANGE_USER:-cairnnorange}
if ! id "$NORANGE_USER" >/dev/null 2>&1; then
  useradd -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 --no-create-home --shell /bin/sh "$NORANGE_USER"
fi
