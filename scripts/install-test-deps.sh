#!/usr/bin/env bash
# Installs what the test suite needs on a Debian/Ubuntu machine: Nix (nix-bin, used by the
# tests that push and pull with a real Nix client), PostgreSQL (scale-out tests) and Node.js
# (the GitHub Action's steps, run by test/e2e).
# MinIO (scale-out tests) is built by scripts/test-services.sh. Idempotent and quick when
# everything is present. Needs root (or sudo) for apt-get; without it, prints what is missing.
set -euo pipefail

need=()
command -v nix >/dev/null 2>&1 || need+=(nix-bin)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v pg_ctlcluster >/dev/null 2>&1 || [ -x /usr/lib/postgresql/15/bin/initdb ] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)

# Nix as root builds as the users of the group nixbld (build-users-group). Debian's
# nix-bin does not create them (nix-setup-systemd would); without them every build in
# the tests fails with "the group 'nixbld' ... does not exist". Create them as Nix's
# own installer does.
ensure_nixbld() {
  [ "$(id -u)" = 0 ] || return 0
  getent group nixbld >/dev/null 2>&1 || groupadd --system nixbld
  for i in 1 2 3 4 5 6 7 8; do
    id "nixbld$i" >/dev/null 2>&1 ||
      useradd --system --no-create-home --home-dir /var/empty --shell /usr/sbin/nologin \
        --gid nixbld --groups nixbld --comment "Nix build user $i" "nixbld$i"
  done
}

if [ ${#need[@]} -eq 0 ]; then
  ensure_nixbld
  exit 0
fi

sudo=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "install-test-deps: missing ${need[*]} and not root: install them, or the tests that need them will skip" >&2
    exit 0
  fi
fi
echo "install-test-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
ensure_nixbld
