#!/usr/bin/env bash
# The test command (README "Run the tests"): installs what the tests need, starts the
# scale-out test services (PostgreSQL, MinIO) on loopback, and runs every Go test.
#   scripts/test.sh            full suite (as CI runs it)
#   scripts/test.sh -short     quick suite: skips the slow real-Nix scenarios
# Extra arguments go to `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh

if [ -x scripts/test-services.sh ] && [ "${FLAKEGATE_NO_SERVICES:-}" != 1 ]; then
  envfile=$(mktemp)
  if scripts/test-services.sh start "$envfile"; then
    # shellcheck disable=SC1090
    set -a; . "$envfile"; set +a
    trap 'scripts/test-services.sh stop >/dev/null 2>&1 || true' EXIT
  else
    echo "test.sh: test services did not start; the scale-out tests will skip" >&2
  fi
  rm -f "$envfile"
fi

echo "== go vet"
go vet ./...
echo "== go test"
go test -count=1 -timeout 30m "$@" ./...
