#!/usr/bin/env bash
# Starts a complete flakegate on this machine, for trying it out:
#   one single-host process (blobserver -policies: filesystem + SQLite, the embedded gate and
#   the authorization core with the shipped policies — policies/, hot-reloaded: edit them
#   while it runs — in one process), and a LOCAL
#   DEVELOPMENT token issuer (devissuer: NOT FOR PRODUCTION, anyone who can read .data/
#   can mint any identity). Then prints what to paste to push and pull with Nix.
# Stop with Ctrl-C. State lives in .data/ (delete it to start over).
#
# Environment: FLAKEGATE_QUICKSTART_DIR (default .data), FLAKEGATE_PORT (default 8080),
# FLAKEGATE_QUICKSTART_DETACH=1 (start, print, and return, leaving the servers running;
# stop them with: kill $(cat .data/pids)). If anything fails, the servers are stopped again.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
data=${FLAKEGATE_QUICKSTART_DIR:-$root/.data}
case "$data" in /*) ;; *) data=$root/$data ;; esac
port=${FLAKEGATE_PORT:-8080}
internal_port=$((port + 1))
cache="http://127.0.0.1:$port"
mkdir -p "$data/bin" "$data/blobserver"

if ! command -v nix >/dev/null 2>&1; then
  echo "quickstart: Nix is not installed; installing nix-bin (apt) so you can push and pull" >&2
  bash scripts/install-test-deps.sh
fi

echo "quickstart: building binaries into $data/bin" >&2
go build -o "$data/bin/" ./cmd/blobserver ./cmd/devissuer

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
  - name: dev-gitlab
    issuer: $dev/gitlab
    jwks_file: dev-issuer/dev-issuer-jwks.json
    audience: ["$cache"]
    claims: gitlab-ci
  - name: dev-users
    issuer: $dev/users
    jwks_file: dev-issuer/dev-issuer-jwks.json
    audience: ["$cache"]
    claims: oidc
    org_claim: org
YAML

pids=()
stop() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
# Whatever goes wrong below stops the servers again; only a detached start that
# got as far as printing the instructions leaves them running.
trap stop EXIT

"$data/bin/blobserver" -listen "127.0.0.1:$port" -internal-listen "127.0.0.1:$internal_port" \
  -data-dir "$data/blobserver" \
  -policies "$root/policies" -issuers "$data/issuers.yaml" \
  -public-url "$cache" -token-keys "$data/token-keys" >"$data/blobserver.log" 2>&1 &
pids+=($!)
printf '%s\n' "${pids[@]}" >"$data/pids"
detach=${FLAKEGATE_QUICKSTART_DETACH:-}
if [ "$detach" != 1 ]; then trap 'stop; exit 0' INT TERM; fi

ready=""
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$internal_port/healthz" >/dev/null 2>&1; then ready=1; break; fi
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || { echo "quickstart: a server exited; see $data/*.log:" >&2; tail -n 20 "$data"/*.log >&2; exit 1; }; done
  sleep 0.1
done
[ -n "$ready" ] || { echo "quickstart: servers did not become healthy; see $data/*.log" >&2; exit 1; }

# The blob server's public signing key (Nix format name:base64), of the key it created on first start.
pubkey=$("$data/bin/blobserver" -data-dir "$data/blobserver" -print-public-key | head -n 1)
[ -n "$pubkey" ] || { echo "quickstart: blobserver printed no public key" >&2; exit 1; }

mint() { "$data/bin/devissuer" mint -dir "$data/dev-issuer" -aud "$cache" "$@"; }
netrc() { printf 'machine 127.0.0.1\nlogin flakegate\npassword %s\n' "$1" >"$2"; chmod 600 "$2"; }
netrc "$(mint -issuer "$dev/github" -github omnicorp/app -ref refs/heads/main -lifetime 8h)" "$data/netrc-ci-omnicorp-app"
netrc "$(mint -issuer "$dev/users" -user alice -org omnicorp -lifetime 8h)" "$data/netrc-alice"
netrc "$(mint -issuer "$dev/users" -user mallory -org omnicorp -lifetime 8h)" "$data/netrc-mallory"

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
  curl -sS -X POST -H "Authorization: Bearer \$(sed -n 3p $data/netrc-ci-omnicorp-app | cut -d' ' -f2)" $cache/_flakegate/token

Mint more tokens:   $data/bin/devissuer mint -dir $data/dev-issuer -aud $cache -issuer $dev/github -github ORG/REPO
Stop:               $stophow
TXT

if [ "$detach" = 1 ]; then trap - EXIT; exit 0; fi
wait
