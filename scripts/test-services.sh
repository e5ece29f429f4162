#!/usr/bin/env bash
# Starts the services the scale-out tests need, on loopback only:
#   - PostgreSQL (Debian package `postgresql`; a throw-away cluster made with
#     initdb in the state directory, trust auth, listening on 127.0.0.1)
#   - MinIO (a pinned version, built once with `go install` and cached as
#     ~/.cache/flakegate/bin/minio-<version>; the build time is shown)
# and tells the tests where they are through FLAKEGATE_TEST_POSTGRES_URL,
# FLAKEGATE_TEST_S3_URL and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
#
#   scripts/test-services.sh start [ENVFILE]  start (or reuse) both; write KEY=VALUE lines to
#                                             ENVFILE, or print `export` lines for eval
#   scripts/test-services.sh env   [ENVFILE]  the same for services already running
#   scripts/test-services.sh stop             stop both and delete their data
#
#   eval "$(scripts/test-services.sh start)" && go test ./internal/index/postgres/ ./internal/blob/s3/
#
# Idempotent: a second start reuses running services and returns at once. The
# first MinIO build takes several minutes (once per machine and version; two
# runs never build it at the same time); set FLAKEGATE_MINIO_BIN to use an
# existing binary. State lives in $FLAKEGATE_SERVICES_DIR (default
# ${TMPDIR:-/tmp}/flakegate-test-services; scripts/test.sh gives each run its
# own, on its own free ports, so two runs coexist). Exits non-zero if a
# service cannot start (scripts/test.sh then fails with CI=true, or lets the
# tests skip).
set -euo pipefail

MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=${FLAKEGATE_MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}
BUCKET=flakegate-test
STATE=${FLAKEGATE_SERVICES_DIR:-${TMPDIR:-/tmp}/flakegate-test-services}

log() { echo "test-services: $*" >&2; }
die() { log "$*"; exit 1; }

# free_port prints a TCP port nothing listens on at 127.0.0.1.
free_port() {
  local p i
  for i in $(seq 1 100); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}

# ---------------------------------------------------------------- PostgreSQL

pg_bindir() {
  local d
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir
    return
  fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && { echo "$d"; return; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(readlink -f "$(command -v initdb)")"; return; }
  return 1
}

# as_pg runs a command as the PostgreSQL user (postgres refuses to run as root).
PGUSER_OS=""
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$PGUSER_OS" -- "$@"
  else
    "$@"
  fi
}

pg_running() {
  [ -f "$STATE/pg.port" ] && [ -d "$STATE/pg/data" ] && as_pg "$PGBIN/pg_ctl" -D "$STATE/pg/data" status >/dev/null 2>&1
}

start_postgres() {
  PGBIN=$(pg_bindir) || die "PostgreSQL not found: install it (apt-get install postgresql, or scripts/install-test-deps.sh)"
  if [ "$(id -u)" = 0 ]; then
    if id postgres >/dev/null 2>&1; then PGUSER_OS=postgres; else PGUSER_OS=nobody; fi
  fi
  if pg_running; then
    PG_PORT=$(cat "$STATE/pg.port")
    log "PostgreSQL already running on 127.0.0.1:$PG_PORT"
    return 0
  fi
  rm -rf "$STATE/pg"
  mkdir -p "$STATE/pg/sock"
  [ -n "$PGUSER_OS" ] && chown -R "$PGUSER_OS" "$STATE/pg"
  as_pg "$PGBIN/initdb" -D "$STATE/pg/data" -U postgres --auth=trust -E UTF8 --no-sync >"$STATE/pg/initdb.log" 2>&1 ||
    { cat "$STATE/pg/initdb.log" >&2; die "initdb failed"; }
  PG_PORT=$(free_port)
  # fsync off: a test database need not survive a power cut.
  as_pg "$PGBIN/pg_ctl" -D "$STATE/pg/data" -l "$STATE/pg/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $STATE/pg/sock -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    start >/dev/null 9>&- || { tail -20 "$STATE/pg/postgres.log" >&2; die "PostgreSQL did not start"; }
  echo "$PG_PORT" >"$STATE/pg.port"
  log "PostgreSQL started on 127.0.0.1:$PG_PORT (data $STATE/pg/data)"
}

stop_postgres() {
  local bin
  bin=$(pg_bindir) || return 0
  PGBIN=$bin
  if [ "$(id -u)" = 0 ]; then
    if id postgres >/dev/null 2>&1; then PGUSER_OS=postgres; else PGUSER_OS=nobody; fi
  fi
  if [ -d "$STATE/pg/data" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$STATE/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$STATE/pg" "$STATE/pg.port"
}

# The daemons are started with fd 9 (the lock) closed: holding it they would
# block every later start/stop.

# --------------------------------------------------------------------- MinIO

CACHE_BIN="$HOME/.cache/flakegate/bin"

# minio_version prints the module version a minio binary was built from.
minio_version() {
  go version -m "$1" 2>/dev/null | awk '$1 == "mod" && $2 == "'"$MINIO_MODULE"'" { print $3 }'
}

# minio_bin prints the MinIO to run: FLAKEGATE_MINIO_BIN as given, else the
# cached build of the pinned version, else a minio found on PATH or in GOPATH/bin
# (or an unversioned cache from before) that was built from the pinned version.
minio_bin() {
  local c
  if [ -n "${FLAKEGATE_MINIO_BIN:-}" ]; then
    [ -x "$FLAKEGATE_MINIO_BIN" ] || die "FLAKEGATE_MINIO_BIN=$FLAKEGATE_MINIO_BIN is not an executable"
    echo "$FLAKEGATE_MINIO_BIN"
    return 0
  fi
  [ -x "$CACHE_BIN/minio-$MINIO_VERSION" ] && { echo "$CACHE_BIN/minio-$MINIO_VERSION"; return 0; }
  command -v go >/dev/null 2>&1 || return 1
  for c in "$CACHE_BIN/minio" "$(command -v minio 2>/dev/null || true)" "$(go env GOPATH)/bin/minio"; do
    if [ -n "$c" ] && [ -x "$c" ] && [ "$(minio_version "$c")" = "$MINIO_VERSION" ]; then
      mkdir -p "$CACHE_BIN"
      cp "$c" "$CACHE_BIN/minio-$MINIO_VERSION.tmp" && mv "$CACHE_BIN/minio-$MINIO_VERSION.tmp" "$CACHE_BIN/minio-$MINIO_VERSION"
      echo "$CACHE_BIN/minio-$MINIO_VERSION"
      return 0
    fi
  done
  return 1
}

build_minio() {
  command -v go >/dev/null 2>&1 || die "MinIO not found and no Go toolchain to build it: set FLAKEGATE_MINIO_BIN"
  mkdir -p "$CACHE_BIN"
  # One build per machine: a second run waits for the first's and uses it.
  exec 7>"$HOME/.cache/flakegate/minio-build.lock"
  flock -w 1800 7 || die "another MinIO build holds ~/.cache/flakegate/minio-build.lock"
  if [ -x "$CACHE_BIN/minio-$MINIO_VERSION" ]; then exec 7>&-; return 0; fi
  log "building MinIO $MINIO_VERSION into $CACHE_BIN/minio-$MINIO_VERSION (once per machine and version; takes several minutes)"
  local started=$SECONDS tmp
  tmp=$(mktemp -d "$HOME/.cache/flakegate/minio-build.XXXXXX")
  # A private directory: `go install pkg@version` ignores the current module.
  (cd "$HOME/.cache/flakegate" && GOBIN="$tmp" GOFLAGS=-mod=mod go install "$MINIO_MODULE@$MINIO_VERSION") >&2 ||
    { rm -rf "$tmp"; exec 7>&-; die "MinIO build failed"; }
  mv "$tmp/minio" "$CACHE_BIN/minio-$MINIO_VERSION"
  rm -rf "$tmp"
  exec 7>&-
  log "MinIO built in $((SECONDS - started))s"
}

minio_running() {
  local pid
  [ -f "$STATE/minio.pid" ] && [ -f "$STATE/minio.port" ] || return 1
  pid=$(cat "$STATE/minio.pid")
  kill -0 "$pid" 2>/dev/null && grep -q minio "/proc/$pid/cmdline" 2>/dev/null &&
    curl -fsS -m 2 "http://127.0.0.1:$(cat "$STATE/minio.port")/minio/health/live" >/dev/null 2>&1
}

start_minio() {
  if minio_running; then
    MINIO_PORT=$(cat "$STATE/minio.port")
    log "MinIO already running on 127.0.0.1:$MINIO_PORT"
  else
    local bin i
    [ -z "${FLAKEGATE_MINIO_BIN:-}" ] || [ -x "$FLAKEGATE_MINIO_BIN" ] || die "FLAKEGATE_MINIO_BIN=$FLAKEGATE_MINIO_BIN is not an executable"
    bin=$(minio_bin) || { build_minio; bin=$(minio_bin) || die "MinIO build produced no binary"; }
    stop_minio
    mkdir -p "$STATE/minio/data"
    if [ ! -s "$STATE/minio.key" ]; then
      (umask 077; { echo "fg$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"; od -An -N20 -tx1 /dev/urandom | tr -d ' \n'; echo; } >"$STATE/minio.key")
    fi
    MINIO_PORT=$(free_port)
    MINIO_ROOT_USER=$(sed -n 1p "$STATE/minio.key") MINIO_ROOT_PASSWORD=$(sed -n 2p "$STATE/minio.key") \
      MINIO_BROWSER=off MINIO_UPDATE=off \
      setsid "$bin" server --quiet --address "127.0.0.1:$MINIO_PORT" "$STATE/minio/data" \
      >"$STATE/minio.log" 2>&1 </dev/null 9>&- &
    echo $! >"$STATE/minio.pid"
    echo "$MINIO_PORT" >"$STATE/minio.port"
    for i in $(seq 1 120); do
      curl -fsS -m 2 "http://127.0.0.1:$MINIO_PORT/minio/health/live" >/dev/null 2>&1 && break
      kill -0 "$(cat "$STATE/minio.pid")" 2>/dev/null || { tail -20 "$STATE/minio.log" >&2; die "MinIO exited"; }
      sleep 0.5
    done
    minio_running || { tail -20 "$STATE/minio.log" >&2; die "MinIO not ready after 60s"; }
    log "MinIO started on 127.0.0.1:$MINIO_PORT (data $STATE/minio/data)"
  fi
  AWS_ACCESS_KEY_ID=$(sed -n 1p "$STATE/minio.key")
  AWS_SECRET_ACCESS_KEY=$(sed -n 2p "$STATE/minio.key")
  # Create the bucket (S3 CreateBucket, SigV4-signed by curl); 409 = exists.
  local code
  code=$(curl -sS -o /dev/null -w '%{http_code}' -m 10 -X PUT \
    --aws-sigv4 "aws:amz:us-east-1:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    "http://127.0.0.1:$MINIO_PORT/$BUCKET") || code=000
  case "$code" in
    200 | 409) ;;
    *) log "could not create bucket $BUCKET (HTTP $code); the tests create it themselves" ;;
  esac
}

stop_minio() {
  local pid i
  if [ -f "$STATE/minio.pid" ]; then
    pid=$(cat "$STATE/minio.pid")
    if kill -0 "$pid" 2>/dev/null && grep -q minio "/proc/$pid/cmdline" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for i in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -rf "$STATE/minio" "$STATE/minio.pid" "$STATE/minio.port"
}

# ----------------------------------------------------------------------- env

write_env() {
  local out=${1:-}
  local lines=(
    "FLAKEGATE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
    "FLAKEGATE_TEST_S3_URL=s3://$BUCKET?endpoint=127.0.0.1:$MINIO_PORT&region=us-east-1&secure=false"
    "AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID"
    "AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
    "AWS_REGION=us-east-1"
  )
  local l
  if [ -n "$out" ]; then
    : >"$out"
    for l in "${lines[@]}"; do printf '%s=%q\n' "${l%%=*}" "${l#*=}" >>"$out"; done
    log "environment written to $out (FLAKEGATE_TEST_POSTGRES_URL, FLAKEGATE_TEST_S3_URL, AWS_*)"
  else
    for l in "${lines[@]}"; do printf 'export %s=%q\n' "${l%%=*}" "${l#*=}"; done
  fi
}

cmd=${1:-start}
mkdir -p "$STATE"
chmod 755 "$STATE"
exec 9>"$STATE/lock"
flock -w 900 9 || die "another test-services.sh holds $STATE/lock"

case "$cmd" in
  start)
    start_postgres
    start_minio
    write_env "${2:-}"
    ;;
  env)
    PGBIN=$(pg_bindir) || die "PostgreSQL not found"
    if [ "$(id -u)" = 0 ]; then PGUSER_OS=postgres; id postgres >/dev/null 2>&1 || PGUSER_OS=nobody; fi
    pg_running || die "PostgreSQL is not running: scripts/test-services.sh start"
    minio_running || die "MinIO is not running: scripts/test-services.sh start"
    PG_PORT=$(cat "$STATE/pg.port")
    MINIO_PORT=$(cat "$STATE/minio.port")
    AWS_ACCESS_KEY_ID=$(sed -n 1p "$STATE/minio.key")
    AWS_SECRET_ACCESS_KEY=$(sed -n 2p "$STATE/minio.key")
    write_env "${2:-}"
    ;;
  stop)
    stop_minio
    stop_postgres
    rm -f "$STATE/minio.key"
    log "stopped"
    ;;
  *)
    die "usage: $0 start [ENVFILE] | env [ENVFILE] | stop"
    ;;
esac
