#!/usr/bin/env bash
# The test command (README "Run the tests"): installs what the tests need, starts the
# scale-out test services (PostgreSQL, MinIO) on loopback, runs go vet and every Go test
# (the concurrency-heavy packages once more under the race detector), and ends with a
# summary: packages, tests passed/failed/skipped, and every skip with its reason.
#   scripts/test.sh            full suite (as CI runs it)
#   scripts/test.sh -short     quick suite: skips the slow real-Nix scenarios
# Extra arguments go to `go test`.
#
# Environment:
#   CI=true                    a test dependency (Nix, PostgreSQL, MinIO) that cannot be
#                              installed or started fails the run, instead of its tests skipping
#   FLAKEGATE_NO_SERVICES=1    do not start PostgreSQL/MinIO (their tests skip)
#   FLAKEGATE_NO_RACE=1        skip the race-detector pass
#   FLAKEGATE_SERVICES_DIR     the services' state directory (default: a fresh one per run,
#                              removed at the end, so two runs on one machine coexist)
set -euo pipefail
cd "$(dirname "$0")/.."

ci=""
if [ "${CI:-}" = true ]; then ci=1; fi
fail() { echo "test.sh: $*" >&2; exit 1; }
started=$SECONDS

bash scripts/install-test-deps.sh
if [ -n "$ci" ]; then
  for tool in nix nix-store nix-instantiate; do
    command -v "$tool" >/dev/null 2>&1 || fail "CI=true: $tool is not installed (scripts/install-test-deps.sh could not install nix-bin)"
  done
  nix-store --version >/dev/null 2>&1 || fail "CI=true: nix-store does not run"
fi

tmp=$(mktemp -d)
cleanup() {
  if [ -n "${services_started:-}" ]; then
    scripts/test-services.sh stop >/dev/null 2>&1 || true
    if [ -n "${own_services_dir:-}" ]; then rm -rf "$FLAKEGATE_SERVICES_DIR"; fi
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

if [ "${FLAKEGATE_NO_SERVICES:-}" != 1 ]; then
  if [ -z "${FLAKEGATE_SERVICES_DIR:-}" ]; then
    FLAKEGATE_SERVICES_DIR=$(mktemp -d "${TMPDIR:-/tmp}/flakegate-test-services.XXXXXX")
    own_services_dir=1
  fi
  export FLAKEGATE_SERVICES_DIR
  services_started=1
  if scripts/test-services.sh start "$tmp/services.env"; then
    # shellcheck disable=SC1091
    set -a; . "$tmp/services.env"; set +a
  elif [ -n "$ci" ]; then
    fail "CI=true: the test services (PostgreSQL, MinIO) did not start; see above"
  else
    echo "test.sh: test services did not start; the scale-out tests will skip (listed in the summary)" >&2
  fi
elif [ -n "$ci" ]; then
  fail "CI=true with FLAKEGATE_NO_SERVICES=1: the scale-out tests would skip"
fi

# With CI=true a test that skips because one of these is missing fails the run: the
# skip messages of internal/nixtest.Require and of the PostgreSQL, MinIO and scale-out tests.
fail_skips=""
if [ -n "$ci" ]; then
  fail_skips='nix not found|nix-store not found|nix-instantiate not found|FLAKEGATE_TEST_(S3|POSTGRES)_URL'
fi

echo "== go vet"
go vet ./...
go build -o "$tmp/testsummary" ./scripts/testsummary

# The race pass: the packages whose code is concurrent (the gate, the cache's uploads and
# caches, listeners, policy hot reload, JWKS refresh, the checker, the stores), in -short.
race_pkgs=(./internal/gate ./internal/cacheserver ./internal/serve ./internal/policy
  ./internal/identity ./internal/authz ./internal/blob/fs)

echo "== go test"
{
  go test -json -count=1 -timeout 30m "$@" ./... || true
  if [ "${FLAKEGATE_NO_RACE:-}" != 1 ]; then
    echo "== go test -race -short (concurrency-heavy packages)" >&2
    # Their packages are named "… [race]" in the summary, apart from the first pass.
    { go test -json -race -short -count=1 -timeout 20m "${race_pkgs[@]}" || true
      # The decoder memory budget (shared by every upload and decoded read),
      # alone: the whole of nixcache takes a minute under -race.
      go test -json -race -short -count=1 -timeout 10m -run 'Decoder|Budget|OneOwner|Smallest' ./internal/nixcache || true; } |
      sed 's/"Package":"\([^"]*\)"/"Package":"\1 [race]"/'
  fi
} | "$tmp/testsummary" ${fail_skips:+-fail-skips "$fail_skips"}
echo "test.sh: finished in $((SECONDS - started))s"
