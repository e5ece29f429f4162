#!/usr/bin/env bash
# Starts a complete flakegate on this machine, for trying it out:
#   one single-host process (blobserver -policies: filesystem + SQLite, the embedded gate and
#   the authorization core with the shipped policies — policies/, hot-reloaded: edit them
#   while it runs — in one process), and a LOCAL
#   DEVELOPMENT token issuer (devissuer: NOT FOR PRODUCTION, anyone who can read .data/
#   can mint any identity). Then prints what to paste to push and pull with Nix.
# Stop with Ctrl-C. State lives in .data/ (delete it to start over).
#
# Environment (also in the README, "Quickstart"):
#   FLAKEGATE_QUICKSTART_DIR     state directory (default .data)
#   FLAKEGATE_PORT               the cache's loopback port (default 8080); PORT+1 is the
#                                internal listener (/healthz, /metrics)
#   FLAKEGATE_QUICKSTART_DETACH  1: start, print, and return, leaving the server running
#                                (stop it with: kill $(cat .data/pids))
# It refuses to start while another quickstart runs with the same state directory, or
# while anything listens on one of its ports; it never touches a running instance's files.
# If anything fails, the server it started is stopped again.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
data=${FLAKEGATE_QUICKSTART_DIR:-$root/.data}
case "$data" in /*) ;; *) data=$root/$data ;; esac
port=${FLAKEGATE_PORT:-8080}
case "$port" in '' | *[!0-9]*) echo "quickstart: FLAKEGATE_PORT=$port is not a port number" >&2; exit 2 ;; esac
internal_port=$((port + 1))
cache="http://127.0.0.1:$port"
mkdir -p "$data"

# One instance per state directory: the lock is held by the servers themselves (they
# inherit fd 8), so it stays held as long as any of them runs, detached or not.
exec 8>>"$data/quickstart.lock"
if ! flock -n 8; then
  echo "quickstart: another quickstart is already running with $data (servers: $(tr '\n' ' ' <"$data/pids" 2>/dev/null || echo '?'))." >&2
  echo "quickstart: nothing was changed. Stop it first (Ctrl-C in its terminal, or: kill \$(cat $data/pids)), or use another FLAKEGATE_QUICKSTART_DIR and FLAKEGATE_PORT." >&2
  exit 1
fi
# And no one else on our ports (another quickstart with another directory, any server).
for p in "$port" "$internal_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "quickstart: port $p on 127.0.0.1 is in use (another quickstart or another server; it uses ports $port and $internal_port)." >&2
    echo "quickstart: nothing was started. Stop what listens there, or pick other ports: FLAKEGATE_PORT=$((port + 10)) $0" >&2
    exit 1
  fi
done
mkdir -p "$data/bin" "$data/blobserver"

if ! command -v nix >/dev/null 2>&1; then
  echo "quickstart: Nix is not installed; installing nix-bin (apt) so you can push and pull" >&2
  bash scripts/install-test-deps.sh
fi

# go build -v names each package it compiles: a counter shows progress (a cold build
# compiles a few hundred packages and takes minutes on a small machine).
echo "quickstart: building blobserver, devissuer into $data/bin (the first build takes a few minutes)" >&2
built_at=$SECONDS
if ! go build -v -o "$data/bin/" ./cmd/blobserver ./cmd/devissuer 2>&1 | tee "$data/build.log" | {
  n=0
  while IFS= read -r _; do
    n=$((n + 1))
    if [ -t 2 ]; then printf '\rquickstart: building: %d packages compiled' "$n" >&2
    elif [ $((n % 50)) = 0 ]; then echo "quickstart: building: $n packages compiled" >&2; fi
  done
  if [ -t 2 ] && [ "$n" -gt 0 ]; then echo >&2; fi
}; then
  echo "quickstart: build failed:" >&2
  tail -n 30 "$data/build.log" >&2
  exit 1
fi
echo "quickstart: built in $((SECONDS - built_at))s" >&2

"$data/bin/devissuer" init -dir "$data/dev-issuer" >/dev/null
dev=https://dev-issuer.flakegate.invalid
cat > "$data/issuers.yaml" <<YAML
# Written by scripts/quickstart.sh.
# LOCAL DEVELOPMENT ISSUERS — NOT FOR PRODUCTION: their key is in $data/dev-issuer.
# In production list your real issuers here (see examples/issuers.yaml).
issuers:
  - name: dev-github
    issuer: $dev/github
    jwks_file: dev-issuer/dev-issuer-jwks.json
    audience: ["$cache"]
    claims: github-actions
    # The orgs each issuer speaks for (required with several issuers: a
    # namespace on one provider must not pass as the same name on another).
    orgs: [omnicorp]
  - name: dev-gitlab
    issuer: $dev/gitlab
    jwks_file: dev-issuer/dev-issuer-jwks.json
    audience: ["$cache"]
    claims: gitlab-ci
    orgs: [omnicorp]
  - name: dev-users
    issuer: $dev/users
    jwks_file: dev-issuer/dev-issuer-jwks.json
    audience: ["$cache"]
    claims: oidc
    org_claim: org
    orgs: [omnicorp]
YAML

pids=()
stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
# Whatever goes wrong below stops the servers again; only a detached start that
# got as far as printing the instructions leaves them running.
trap stop EXIT

# The server does not get this script's knobs (they would be reported as FLAKEGATE_*
# variables that name no flag); it inherits fd 8, the lock.
env -u FLAKEGATE_PORT -u FLAKEGATE_QUICKSTART_DIR -u FLAKEGATE_QUICKSTART_DETACH \
  "$data/bin/blobserver" -listen "127.0.0.1:$port" -internal-listen "127.0.0.1:$internal_port" \
  -data-dir "$data/blobserver" \
  -policies "$root/policies" -issuers "$data/issuers.yaml" \
  -public-url "$cache" -token-keys "$data/token-keys" >"$data/blobserver.log" 2>&1 &
pids+=($!)
printf '%s\n' "${pids[@]}" >"$data/pids"
detach=${FLAKEGATE_QUICKSTART_DETACH:-}
if [ "$detach" != 1 ]; then trap 'stop; exit 0' INT TERM; fi

# Ready when OUR server says it listens (the line in our own log file: nothing else
# writes there, and it logs it only once every port is bound) and answers on its
# health endpoint; if it exits, show why.
ready=""
for _ in $(seq 1 300); do
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || { echo "quickstart: the server exited; see $data/blobserver.log:" >&2; tail -n 20 "$data/blobserver.log" >&2; exit 1; }; done
  if grep -q '"msg":"listening"' "$data/blobserver.log" &&
     curl -fsS "http://127.0.0.1:$internal_port/healthz" >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.1
done
[ -n "$ready" ] || { echo "quickstart: the server did not become healthy within 30s; see $data/blobserver.log" >&2; exit 1; }

# The blob server's public signing key (Nix format name:base64), of the key it created on first start.
pubkey=$("$data/bin/blobserver" -data-dir "$data/blobserver" -print-public-key | head -n 1)
[ -n "$pubkey" ] || { echo "quickstart: blobserver printed no public key" >&2; exit 1; }

# Tokens straight into netrc files (machine 127.0.0.1, the host of the cache URL).
mint() { "$data/bin/devissuer" mint -dir "$data/dev-issuer" -aud "$cache" "$@" >/dev/null; }
mint -issuer "$dev/github" -github omnicorp/app -ref refs/heads/main -lifetime 8h -netrc "$data/netrc-ci-omnicorp-app"
mint -issuer "$dev/users" -user alice -org omnicorp -lifetime 8h -netrc "$data/netrc-alice"
mint -issuer "$dev/users" -user mallory -org omnicorp -lifetime 8h -netrc "$data/netrc-mallory"

nixflags="--extra-experimental-features nix-command --option substituters ''"
if [ "$detach" = 1 ]; then stophow="kill \$(cat $data/pids)"; else stophow="Ctrl-C"; fi
cat <<TXT

flakegate is running (log: $data/blobserver.log)
  cache:          $cache   (union view; flake namespaces at $cache/{org}/{flake})
  public key:     $pubkey
  policies:       $root/policies   (edit them: changes apply within a second)
  tokens (netrc): $data/netrc-ci-omnicorp-app  CI job of omnicorp/app on protected refs/heads/main
                  $data/netrc-alice            user alice (org omnicorp, trusted for super-duper-secure)
                  $data/netrc-mallory          user mallory (org omnicorp, not trusted)
  (tokens come from the LOCAL DEVELOPMENT issuer: not for production)

Push a store path as the CI job of omnicorp/app:
  path=\$(echo "hello from flakegate \$(date)" > $data/hello.txt && nix-store --add $data/hello.txt)
  nix copy $nixflags --option netrc-file $data/netrc-ci-omnicorp-app --to '$cache/omnicorp/app?compression=zstd' \$path

Pull it back as alice into a fresh store (built paths need the cache's key; this one is content-addressed).
narinfo-cache-negative-ttl 0: Nix otherwise remembers a "not found" for an hour, so after a policy
change a pull it already tried would not even ask the cache again:
  nix copy $nixflags --option netrc-file $data/netrc-alice --option trusted-public-keys '$pubkey' \\
    --option narinfo-cache-negative-ttl 0 --from '$cache/omnicorp/app' --to $data/pulled-store \$path
  cat $data/pulled-store\$path

Or use the union view as a substituter (nix.conf):
  extra-substituters = $cache/
  extra-trusted-public-keys = $pubkey
  netrc-file = $data/netrc-alice

Exchange a token for a longer-lived cache token (what "flakegate login --ci" does):
  curl -sS -X POST -H "Authorization: Bearer \$(sed -n 's/.* password //p' $data/netrc-ci-omnicorp-app)" $cache/_flakegate/token

Mint more tokens:   $data/bin/devissuer mint -dir $data/dev-issuer -aud $cache -issuer $dev/github -github omnicorp/REPO
                    (another org: add it to orgs: in $data/issuers.yaml; a token of an org not listed there is refused)
Into a netrc:       add -netrc FILE to write it as FILE's password for 127.0.0.1 (other entries kept), e.g.
                    $data/bin/devissuer mint -dir $data/dev-issuer -aud $cache -issuer $dev/users -user bob -org omnicorp -netrc ~/.config/nix/netrc
Stop:               $stophow
TXT

if [ "$detach" = 1 ]; then trap - EXIT; exit 0; fi
wait
