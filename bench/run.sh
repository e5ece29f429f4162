#!/usr/bin/env bash
# bench/run.sh — flakegate side by side with what users would otherwise run,
# on this machine, in this run. Prints the table
#   measure | ours | reference | ratio | target | met?
# and writes it, with the machine and the method, into docs/benchmarks.md
# (between the markers; the rest of that file is prose kept by hand).
#
#   bench/run.sh [-quick] [-no-doc] [measure ...]
#
# -no-doc prints the table without writing docs/benchmarks.md: for a trial
# run, or one in a scratch $BENCH_WORK, whose table (built from that work
# dir's results only) would replace the documented rows.
#
# Measures (default: all, in this order):
#   narinfo  narinfo GET, blob server alone vs nginx static files (wrk)
#   miss     narinfo GET of absent paths (404), blob server alone vs nginx
#   gate     narinfo GET with a valid JWT vs nginx: the single-host process
#            (blobserver -policies: gate + authorization in one process), the
#            two-process embedded gate + authz, and that gate with a
#            do-nothing ext_authz (the round trip's bound)
#   nar      NAR GET of a 256 MiB file vs nginx sendfile (wrk)
#   ingest   PUT of a 1 GiB uncompressed NAR vs `openssl dgst -sha256` of it
#   index    narinfo p99 with 1M indexed paths vs 10k (-quick: 100k;
#            BENCH_INDEX_PATHS=N for N paths, e.g. 10000000: the index takes
#            ≈ 2.1 KB of disk per path and 1–9 min per million to generate)
#   memory   authz RSS with 10k cached tokens; blob server RSS, 100 NAR downloads
#   authz    ext_authz Check decisions/s and p99 (ghz) vs opa-envoy-plugin
#   reload   authz p99 while policies reload 10×/s vs without
#   nixcopy  nix copy push + pull of a 200-path closure vs a file:// cache (two-process
#            gate and single-host process), and the push vs a do-nothing HTTP cache
#   push     flakegate push of a 200-path closure vs nix copy (zstd), both via gate+authz
#
# Everything listens on 127.0.0.1 only; every run is bounded in time. Tools
# missing are installed (apt: wrk nginx hey; ghz and the reference are built
# with Go and cached in ~/.cache/flakegate/bin). Generated data lives in
# $BENCH_WORK (default .bench/ in the repository, git-ignored).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${BENCH_WORK:-$ROOT/.bench}
CACHE_BIN=${FLAKEGATE_BIN_CACHE:-$HOME/.cache/flakegate/bin}
GHZ_VERSION=v0.93.0
QUICK=0
DOC=1
ALL=(narinfo miss gate nar ingest index memory authz reload nixcopy push)
MEASURES=()
for a in "$@"; do
	case $a in
	-quick | --quick | -q) QUICK=1 ;;
	-no-doc | --no-doc) DOC=0 ;;
	-h | --help)
		sed -n '2,30p' "$0"
		exit 0
		;;
	*)
		ok=0
		for m in "${ALL[@]}"; do [[ $a == "$m" ]] && ok=1; done
		if ((!ok)); then
			echo "run.sh: unknown measure $a (want: ${ALL[*]})" >&2
			exit 2
		fi
		MEASURES+=("$a")
		;;
	esac
done
((${#MEASURES[@]})) || MEASURES=("${ALL[@]}")

if ((QUICK)); then
	DUR=3s RUNS=1 INDEX_BIG=${BENCH_INDEX_PATHS:-100000} GHZ_DUR=3s
else
	DUR=10s RUNS=3 INDEX_BIG=${BENCH_INDEX_PATHS:-1000000} GHZ_DUR=10s
fi
# Load shapes (the load generator shares the 2 cores with the server).
WRK_T=2 WRK_C=64

mkdir -p "$WORK"/{bin,results,logs,run}
RESULTS=$WORK/results
LOGS=$WORK/logs
export PATH=$WORK/bin:$CACHE_BIN:$PATH

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
die() {
	echo "run.sh: $*" >&2
	exit 1
}

# ---- processes we start (stopped by pid on exit) -------------------------
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME CMD... : runs CMD in the background, logging to $LOGS/NAME.log;
# the pid is in $LAST_PID.
start() {
	local name=$1
	shift
	"$@" >"$LOGS/$name.log" 2>&1 &
	LAST_PID=$!
	PIDS+=("$LAST_PID")
}
stop() {
	local p=$1 q=()
	kill "$p" 2>/dev/null || true
	wait "$p" 2>/dev/null || true
	for x in "${PIDS[@]}"; do [[ $x == "$p" ]] || q+=("$x"); done
	PIDS=("${q[@]}")
}
# wait_http URL: until it answers (any status) or 30 s pass.
wait_http() {
	local i
	for i in $(seq 300); do
		curl -s -o /dev/null --max-time 1 "$1" && return 0
		sleep 0.1
	done
	die "nothing answers at $1 (see $LOGS)"
}
wait_tcp() {
	local i
	for i in $(seq 300); do
		(exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0
		sleep 0.1
	done
	die "nothing listens on $1 (see $LOGS)"
}
rss_mib() { awk '/^VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }

# ---- tools ----------------------------------------------------------------
need_apt=()
for t in wrk nginx hey openssl curl jq sqlite3; do command -v "$t" >/dev/null || need_apt+=("$t"); done
if ((${#need_apt[@]})); then
	log "installing ${need_apt[*]} (apt)"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
ensure_ghz() {
	command -v ghz >/dev/null && return
	log "building ghz $GHZ_VERSION (cached in $CACHE_BIN)"
	mkdir -p "$CACHE_BIN"
	GOBIN=$CACHE_BIN go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION"
}
ensure_opa_envoy() {
	local bin=$CACHE_BIN/opa-envoy stamp=$CACHE_BIN/opa-envoy.sum
	local want
	want=$(cat "$ROOT/bench/opa-envoy/go.mod" "$ROOT/bench/opa-envoy/main.go" | sha256sum | cut -c1-16)
	[[ -x $bin && -f $stamp && $(cat "$stamp") == "$want" ]] && return
	log "building the reference: opa-envoy-plugin (bench/opa-envoy, cached in $CACHE_BIN)"
	mkdir -p "$CACHE_BIN"
	(cd "$ROOT/bench/opa-envoy" &&
		GONOSUMDB=github.com/open-policy-agent/opa-envoy-plugin GOFLAGS=-mod=mod \
			go build -trimpath -o "$bin" .)
	echo "$want" >"$stamp"
}

log "building flakegate (authz, blobserver, bench/benchdata)"
(cd "$ROOT" && go build -o "$WORK/bin/" ./cmd/authz ./cmd/blobserver ./cmd/flakegate ./bench/benchdata)

# ---- results --------------------------------------------------------------
# result KEY MEASURE OURS REF RATIO TARGET MET : one table row, kept in
# $RESULTS/KEY so that running a subset updates only its rows.
result() {
	printf '%s|%s|%s|%s|%s|%s\n' "$2" "$3" "$4" "$5" "$6" "$7" >"$RESULTS/$1"
	printf '  %-58s ours %-16s ref %-16s ratio %-7s target %-8s %s\n' "$2" "$3" "$4" "$5" "$6" "$7" >&2
}
# median of the arguments (numbers)
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# ratio A B [digits]
ratio() { awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { if (b == 0) print "n/a"; else printf "%.*f\n", d, a / b }'; }
# ge/le X LIMIT → yes/no
ge() { awk -v x="$1" -v l="$2" 'BEGIN { print (x != "n/a" && x + 0 >= l) ? "yes" : "**no**" }'; }
le() { awk -v x="$1" -v l="$2" 'BEGIN { print (x != "n/a" && x + 0 <= l) ? "yes" : "**no**" }'; }

# wrk_run NAME URL [wrk args...]: prints "rps p99_ms mb_per_s" of one run.
# Paths come from $WRK_PATHS (one per line) when set: each request picks one
# at random, so caches see many keys.
wrk_run() {
	local name=$1 url=$2
	shift 2
	local script=$WORK/run/paths.lua
	local args=(-t"$WRK_T" -c"$WRK_C" -d"$DUR" --latency)
	if [[ -n ${WRK_PATHS:-} ]]; then
		cat >"$script" <<EOF
local paths = {}
for l in io.lines("$WRK_PATHS") do paths[#paths + 1] = l end
math.randomseed(os.time())
request = function() return wrk.format(nil, paths[math.random(#paths)]) end
EOF
		args+=(-s "$script")
	fi
	wrk "${args[@]}" "$@" "$url" >"$LOGS/wrk-$name.txt" 2>&1 || die "wrk $name failed: $(cat "$LOGS/wrk-$name.txt")"
	awk '
	function ms(v) {
		if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
		if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000; return v
	}
	function mb(v) {
		if (v ~ /GB$/) return v * 1024; if (v ~ /MB$/) return v + 0
		if (v ~ /KB$/) return v / 1024; return v / 1048576
	}
	/Requests\/sec:/ { rps = $2 }
	/Transfer\/sec:/ { tp = mb($2) }
	$1 == "99%" { p99 = ms($2) }
	/Non-2xx or 3xx responses:/ { bad = ENVIRON["WRK_ALLOW_NON2XX"] ? 0 : $NF }
	/Socket errors:/ { serr = $0 }
	END {
		if (bad > 0) { print "non-2xx responses: " bad > "/dev/stderr"; exit 1 }
		printf "%.0f %.3f %.1f\n", rps, p99, tp
	}' "$LOGS/wrk-$name.txt" || die "wrk $name: bad responses (see $LOGS/wrk-$name.txt)"
}
# wrk_median NAME URL FIELD [wrk args...]: median over $RUNS runs of field
# 1 (req/s), 2 (p99 ms) or 3 (MiB/s).
wrk_median() {
	local name=$1 url=$2 field=$3
	shift 3
	local vals=() i
	for i in $(seq "$RUNS"); do
		vals+=("$(wrk_run "$name-$i" "$url" "$@" | awk -v f="$field" '{print $f}')")
	done
	median "${vals[@]}"
}

# ---- data -----------------------------------------------------------------
FLAKE=omnicorp/app
DATA=$WORK/data
NGINX_ROOT=$DATA/nginx
mkdir -p "$DATA"

gen_index() { # gen_index DIR N
	if [[ ! -f $1/hashes.txt || $(wc -l <"$1/hashes.txt") -ne $2 ]]; then
		log "generating an index of $2 paths in $1"
		rm -rf "$1"
		local extra=()
		[[ $2 -eq 10000 ]] && extra=(-nginx-root "$NGINX_ROOT" -nginx-paths 1000)
		benchdata index -data-dir "$1" -flake "$FLAKE" -paths "$2" "${extra[@]}" >&2
	fi
}
gen_nar() { # gen_nar FILE SIZE → sets NAR_NAME
	if [[ ! -f $1 || ! -f $1.name ]]; then
		log "generating a NAR of $2 bytes"
		benchdata nar -size "$2" -out "$1" | awk '{print $1}' >"$1.name"
	fi
	NAR_NAME=$(cat "$1.name")
}
# fresh_tokens FILE: the tokens in FILE were minted less than an hour ago
# (benchdata mints them for 3 h; a run takes well under an hour).
fresh_tokens() { [[ -n $(find "$1" -mmin -60 2>/dev/null) ]]; }
gen_authz() {
	if ! fresh_tokens "$DATA/authz/tokens.txt"; then
		log "generating RS256 issuer, JWKS and tokens"
		benchdata authz -dir "$DATA/authz" -repo "$FLAKE" -tokens 100 -requests 1000 -policies "$ROOT/policies" >&2
	fi
	TOKEN=$(head -1 "$DATA/authz/tokens.txt")
}
gen_index "$DATA/idx10k" 10000
head -1000 "$DATA/idx10k/hashes.txt" | sed "s|^|/$FLAKE/|; s|\$|.narinfo|" >"$DATA/narinfo-paths.txt"

# ---- servers --------------------------------------------------------------
P_NGINX=127.0.0.1:18080 P_BLOB=127.0.0.1:18081 P_BLOB_INT=127.0.0.1:18082
P_GATE=127.0.0.1:18083 P_GATE_INT=127.0.0.1:18084 P_AUTHZ=127.0.0.1:18090
P_AUTHZ_HTTP=127.0.0.1:18091 P_OPA=127.0.0.1:18095 P_OPA_HTTP=127.0.0.1:18096
P_SINGLE=127.0.0.1:18088 P_SINGLE_INT=127.0.0.1:18089

NGINX_PID=
start_nginx() {
	[[ -n $NGINX_PID ]] && return
	mkdir -p "$WORK/run/nginx"
	cat >"$WORK/run/nginx/nginx.conf" <<EOF
daemon off;
worker_processes auto;
pid $WORK/run/nginx/nginx.pid;
error_log $LOGS/nginx-error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	log_not_found off; # the miss row: no error-log line per 404
	sendfile on;
	tcp_nopush on;
	keepalive_requests 1000000;
	types { text/x-nix-narinfo narinfo; application/x-nix-nar nar; }
	client_body_temp_path $WORK/run/nginx/body;
	proxy_temp_path $WORK/run/nginx/proxy;
	fastcgi_temp_path $WORK/run/nginx/fastcgi;
	uwsgi_temp_path $WORK/run/nginx/uwsgi;
	scgi_temp_path $WORK/run/nginx/scgi;
	server {
		listen $P_NGINX;
		root $NGINX_ROOT;
	}
}
EOF
	start nginx nginx -e "$LOGS/nginx-error.log" -c "$WORK/run/nginx/nginx.conf"
	NGINX_PID=$LAST_PID
	wait_http "http://$P_NGINX/"
}

BLOB_PID=
start_blob() { # the blob server alone (no gate) on the 10k index
	[[ -n $BLOB_PID ]] && return
	start blobserver blobserver -listen "$P_BLOB" -internal-listen "$P_BLOB_INT" \
		-data-dir "$DATA/idx10k" -access-log=false -log-level warn -behind-envoy
	BLOB_PID=$LAST_PID
	wait_http "http://$P_BLOB/nix-cache-info"
}
AUTHZ_PID=
start_authz() {
	[[ -n $AUTHZ_PID ]] && return
	gen_authz
	rm -rf "$WORK/run/policies" && cp -r "$ROOT/policies" "$WORK/run/policies"
	start authz authz -listen "$P_AUTHZ" -http-listen "$P_AUTHZ_HTTP" -policies "$WORK/run/policies" \
		-issuers "$DATA/authz/issuers.yaml" -owners-url "http://127.0.0.1:1" -log-level warn \
		-policy-debounce 20ms # the reload row writes every 100 ms: each write is one reload
	AUTHZ_PID=$LAST_PID
	wait_http "http://$P_AUTHZ_HTTP/healthz"
}
GATE_PID=
start_gate() { # a blob server with the embedded gate, on a copy of the 10k index,
	# asking its own authz over a unix socket (as on a single host)
	[[ -n $GATE_PID ]] && return
	gen_authz
	local sock=$WORK/run/authz.sock
	rm -rf "$WORK/run/gate-policies" && cp -r "$ROOT/policies" "$WORK/run/gate-policies"
	start authz-gate authz -listen "unix:$sock" -http-listen 127.0.0.1:18094 -policies "$WORK/run/gate-policies" \
		-issuers "$DATA/authz/issuers.yaml" -owners-url "http://$P_GATE_INT" -log-level warn
	wait_http "http://127.0.0.1:18094/healthz"
	rm -rf "$WORK/run/gate-data" && cp -r "$DATA/idx10k" "$WORK/run/gate-data"
	start blobserver-gate blobserver -listen "$P_GATE" -internal-listen "$P_GATE_INT" \
		-data-dir "$WORK/run/gate-data" -ext-authz "$sock" -access-log=false -log-level warn
	GATE_PID=$LAST_PID
	wait_http "http://$P_GATE/nix-cache-info"
}

SINGLE_PID=
start_single() { # the single-host process (blobserver -policies) on a copy of the 10k index
	[[ -n $SINGLE_PID ]] && return
	gen_authz
	rm -rf "$WORK/run/single-policies" && cp -r "$ROOT/policies" "$WORK/run/single-policies"
	rm -rf "$WORK/run/single-data" && cp -r "$DATA/idx10k" "$WORK/run/single-data"
	start blobserver-single blobserver -listen "$P_SINGLE" -internal-listen "$P_SINGLE_INT" \
		-data-dir "$WORK/run/single-data" -policies "$WORK/run/single-policies" \
		-issuers "$DATA/authz/issuers.yaml" -access-log=false -log-level warn
	SINGLE_PID=$LAST_PID
	wait_http "http://$P_SINGLE_INT/healthz"
}

# put_nar URL FILE: uploads an uncompressed NAR; prints seconds taken.
put_nar() {
	local out
	out=$(curl -sS --fail-with-body -o "$LOGS/put.txt" -w '%{time_total}' -T "$2" \
		-H 'Content-Type: application/x-nix-nar' "$1") || die "PUT $1 failed: $(cat "$LOGS/put.txt")"
	echo "$out"
}

# vs_nginx NAME URL [wrk args...]: $RUNS pairs of runs, nginx on the same
# narinfos then ours, back to back, so that the host slowing down or
# speeding up (it moves by 25 % within minutes) weighs on both sides of each
# ratio alike. Prints "ours ref ratio": the medians of our runs, of nginx's
# runs and of the per-pair ratios (the ratio reported).
vs_nginx() {
	local name=$1 url=$2
	shift 2
	local ours=() refs=() ratios=() i a b
	for i in $(seq "$RUNS"); do
		b=$(WRK_PATHS=${VS_PATHS:-$DATA/narinfo-paths.txt} wrk_run "nginx-for-$name-$i" "http://$P_NGINX" | awk '{print $1}')
		a=$(WRK_PATHS=${VS_PATHS:-$DATA/narinfo-paths.txt} wrk_run "$name-$i" "$url" "$@" | awk '{print $1}')
		ours+=("$a") refs+=("$b") ratios+=("$(ratio "$a" "$b" 4)")
	done
	echo "$(median "${ours[@]}") $(median "${refs[@]}") $(ratio "$(median "${ratios[@]}")" 1)"
}

# ---- measures -------------------------------------------------------------
m_narinfo() {
	log "narinfo GET: blob server alone vs nginx ($RUNS× $DUR each, interleaved, wrk -t$WRK_T -c$WRK_C, 1000 random paths)"
	start_blob
	start_nginx
	local ours ref r
	read -r ours ref r < <(vs_nginx blob-narinfo "http://$P_BLOB")
	[[ -n $r ]] || die "narinfo row: a wrk run failed (see $LOGS/wrk-*.txt)"
	result 1-narinfo "narinfo GET, blob server alone (req/s)" "$ours" "$ref (nginx)" "$r" "≥ 0.5" "$(ge "$r" 0.5)"
}

m_miss() {
	log "narinfo GET of absent paths: blob server alone vs nginx's 404 ($RUNS× $DUR each, interleaved, wrk -t$WRK_T -c$WRK_C, 1000 random absent paths)"
	# Hashes no index holds (fresh random ones, never in idx10k).
	local absent=$DATA/narinfo-absent-paths.txt
	if [[ ! -s $absent ]]; then
		benchdata hashes -n 1000 | sed "s|^|/$FLAKE/|; s|\$|.narinfo|" >"$absent"
	fi
	start_blob
	start_nginx
	local st
	st=$(curl -s -o /dev/null -w '%{http_code}' "http://$P_BLOB$(head -1 "$absent")")
	[[ $st == 404 ]] || die "miss row: the blob server answers $st for an absent path"
	local ours ref r
	read -r ours ref r < <(WRK_ALLOW_NON2XX=1 VS_PATHS=$absent vs_nginx blob-miss "http://$P_BLOB")
	[[ -n $r ]] || die "miss row: a wrk run failed (see $LOGS/wrk-*.txt)"
	result 1-narinfo-miss "narinfo GET of an absent path (404), blob server alone (req/s)" "$ours" "$ref (nginx 404)" "$r" "≥ 0.8" "$(ge "$r" 0.8)"
	# The floor of any Go server on these requests: net/http answering
	# every narinfo with http.NotFound and nothing else (benchdata
	# nullcache), against the same nginx 404s. What the blob server does
	# per miss (route, caches, metrics) is the gap between the two rows.
	local floor=127.0.0.1:18098
	start missfloor benchdata nullcache -listen "$floor"
	local floorpid=$LAST_PID
	wait_http "http://$floor/nix-cache-info"
	read -r ours ref r < <(WRK_ALLOW_NON2XX=1 VS_PATHS=$absent vs_nginx floor-miss "http://$floor")
	stop "$floorpid"
	[[ -n $r ]] || die "miss floor row: a wrk run failed (see $LOGS/wrk-*.txt)"
	result 1-narinfo-miss-floor "same 404s from a do-nothing net/http server (benchdata nullcache): Go's floor (req/s)" "$ours" "$ref (nginx 404)" "$r" "—" "recorded"
}

m_gate() {
	log "narinfo GET through the single-host process (gate + authorization in one process, RS256 JWT, shipped policy) vs nginx, interleaved"
	start_single
	local ref ours r code
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://$P_SINGLE$(head -1 "$DATA/narinfo-paths.txt")")
	[[ $code == 200 ]] || die "single-host narinfo GET answers $code, want 200 (see $LOGS/blobserver-single.log)"
	start_nginx
	read -r ours ref r < <(vs_nginx single-narinfo "http://$P_SINGLE" -H "Authorization: Bearer $TOKEN")
	[[ -n $r ]] || die "single-host row: a wrk run failed (see $LOGS/wrk-*.txt)"
	result 2-single "narinfo GET, single-host process (gate + authz in-process), JWT + policy (req/s)" "$ours" "$ref (nginx)" "$r" "≥ 0.5" "$(ge "$r" 0.5)"
	stop "$SINGLE_PID"
	SINGLE_PID=

	log "narinfo GET through the embedded gate + authz (valid RS256 JWT, shipped policy) vs nginx, interleaved"
	start_gate
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://$P_GATE$(head -1 "$DATA/narinfo-paths.txt")")
	[[ $code == 200 ]] || die "gated narinfo GET answers $code, want 200 (see $LOGS/authz-gate.log)"
	start_nginx
	read -r ours ref r < <(vs_nginx gate-narinfo "http://$P_GATE" -H "Authorization: Bearer $TOKEN")
	[[ -n $r ]] || die "gate row: a wrk run failed (see $LOGS/wrk-*.txt)"
	result 2-gate "narinfo GET via embedded gate, JWT + policy (req/s)" "$ours" "$ref (nginx)" "$r" "≥ 0.2" "$(ge "$r" 0.2)"

	# The bound: the same gate in front of an ext_authz service that decides
	# nothing (benchdata nullauthz: a fixed OK answer of the same shape).
	log "the same through the gate in front of a do-nothing ext_authz (the round trip's bound), interleaved"
	local nsock=$WORK/run/nullauthz.sock napid nbpid
	start nullauthz benchdata nullauthz -listen "unix:$nsock"
	napid=$LAST_PID
	rm -rf "$WORK/run/gate-null-data" && cp -r "$DATA/idx10k" "$WORK/run/gate-null-data"
	start blobserver-gate-null blobserver -listen 127.0.0.1:18087 -internal-listen "" \
		-data-dir "$WORK/run/gate-null-data" -ext-authz "$nsock" -access-log=false -log-level warn
	nbpid=$LAST_PID
	wait_http "http://127.0.0.1:18087/nix-cache-info"
	read -r ours ref r < <(vs_nginx gate-null-narinfo "http://127.0.0.1:18087" -H "Authorization: Bearer $TOKEN")
	[[ -n $r ]] || die "gate bound row: a wrk run failed (see $LOGS/wrk-*.txt)"
	stop "$nbpid"
	stop "$napid"
	result 2-gate-null "same via the gate with a do-nothing ext_authz: the round trip's bound (req/s)" "$ours" "$ref (nginx)" "$r" "—" "recorded"
}

NAR256=
ensure_nar256() {
	[[ -n $NAR256 ]] && return
	start_blob
	gen_nar "$DATA/nar256.nar" $((256 << 20))
	NAR256=$NAR_NAME
	if [[ $(curl -s -o /dev/null -w '%{http_code}' -I "http://$P_BLOB/$FLAKE/nar/$NAR256") != 200 ]]; then
		log "uploading the 256 MiB NAR to the blob server"
		put_nar "http://$P_BLOB/$FLAKE/nar/$NAR256" "$DATA/nar256.nar" >/dev/null
	fi
	mkdir -p "$NGINX_ROOT/$FLAKE/nar"
	ln -f "$DATA/nar256.nar" "$NGINX_ROOT/$FLAKE/nar/$NAR256" 2>/dev/null || cp "$DATA/nar256.nar" "$NGINX_ROOT/$FLAKE/nar/$NAR256"
}

m_nar() {
	log "NAR GET 256 MiB: blob server vs nginx sendfile ($RUNS× $DUR, wrk -c4)"
	ensure_nar256
	start_nginx
	local ref ours r
	ref=$(WRK_C=4 wrk_median nginx-nar "http://$P_NGINX/$FLAKE/nar/$NAR256" 3)
	ours=$(WRK_C=4 wrk_median blob-nar "http://$P_BLOB/$FLAKE/nar/$NAR256" 3)
	r=$(ratio "$ours" "$ref")
	result 3-nar "NAR GET 256 MiB, 4 connections (MiB/s)" "$ours" "$ref (nginx)" "$r" "≥ 0.8" "$(ge "$r" 0.8)"
}

# Uploads land in a data directory on tmpfs (the processing: receive, hash,
# verify, store), and once more on the disk of $WORK (durable: fsync), whose
# reference is dd of the same bytes with conv=fsync.
INGEST_TMPFS=${BENCH_INGEST_TMPFS:-/dev/shm}
ingest_once() { # ingest_once DATADIR NAME → MiB/s
	local dir=$1 pid t
	rm -rf "$dir"
	start blobserver-ingest blobserver -listen 127.0.0.1:18085 -internal-listen "" \
		-data-dir "$dir" -access-log=false -log-level warn -behind-envoy
	pid=$LAST_PID
	wait_http "http://127.0.0.1:18085/nix-cache-info"
	t=$(put_nar "http://127.0.0.1:18085/$FLAKE/nar/$2" "$DATA/nar1g.nar")
	stop "$pid"
	rm -rf "$dir"
	awk -v t="$t" 'BEGIN {printf "%.0f", 1024 / t}'
}
m_ingest() {
	log "push ingest of a 1 GiB uncompressed NAR (curl -T) vs openssl dgst -sha256; on disk vs dd conv=fsync ($RUNS runs each)"
	gen_nar "$DATA/nar1g.nar" $((1 << 30))
	local name=$NAR_NAME ours=() ref=() disk=() dd=() i t o r
	cat "$DATA/nar1g.nar" >/dev/null # page cache, for all
	sync # no writeback (of a NAR just generated, say) under the measured runs
	[[ -d $INGEST_TMPFS ]] || INGEST_TMPFS=$WORK/run
	# tmpfs runs first: the disk runs leave the kernel flushing and freeing
	# a GiB in the background, which would take CPU from the next run.
	for i in $(seq "$RUNS"); do
		t=$( { /usr/bin/time -f '%e' openssl dgst -sha256 "$DATA/nar1g.nar" >/dev/null; } 2>&1)
		ref+=("$(awk -v t="$t" 'BEGIN {printf "%.0f", 1024 / t}')")
		ours+=("$(ingest_once "$INGEST_TMPFS/flakegate-bench-ingest" "$name")")
	done
	for i in $(seq "$RUNS"); do
		t=$( { /usr/bin/time -f '%e' dd if="$DATA/nar1g.nar" of="$WORK/run/dd.out" bs=256K conv=fsync status=none; } 2>&1)
		rm -f "$WORK/run/dd.out"
		dd+=("$(awk -v t="$t" 'BEGIN {printf "%.0f", 1024 / t}')")
		disk+=("$(ingest_once "$WORK/run/ingest" "$name")")
	done
	o=$(median "${ours[@]}")
	r=$(median "${ref[@]}")
	result 4-ingest "push ingest 1 GiB NAR to tmpfs: receive+hash+verify+store (MiB/s)" "$o" "$r (openssl sha256)" "$(ratio "$o" "$r")" "≥ 0.6" "$(ge "$(ratio "$o" "$r")" 0.6)"
	o=$(median "${disk[@]}")
	r=$(median "${dd[@]}")
	result 4b-ingest-disk "push ingest 1 GiB NAR to disk, fsync'd (MiB/s)" "$o" "$r (dd conv=fsync)" "$(ratio "$o" "$r")" "—" "recorded"
}

m_index() {
	log "narinfo p99 with $INDEX_BIG indexed paths vs 10k (wrk -t$WRK_T -c16, random paths)"
	local big=$DATA/idx$INDEX_BIG p99=() n dir pid
	gen_index "$big" "$INDEX_BIG"
	for n in 10000 "$INDEX_BIG"; do
		dir=$DATA/idx$n
		[[ $n == 10000 ]] && dir=$DATA/idx10k
		shuf -n 100000 "$dir/hashes.txt" | sed "s|^|/$FLAKE/|; s|\$|.narinfo|" >"$WORK/run/index-paths.txt"
		# -lookup-cache 0: every GET reads the index. With the in-memory
		# cache on, all 10k paths would be cached and most of 100k not, and
		# the row would compare the cache with the index.
		start blobserver-index blobserver -listen 127.0.0.1:18086 -internal-listen "" \
			-data-dir "$dir" -access-log=false -log-level warn -behind-envoy -lookup-cache 0
		pid=$LAST_PID
		wait_http "http://127.0.0.1:18086/nix-cache-info"
		# The row is about serving from a warm index (as a running cache
		# does), not about random reads from a cold disk: read the pages a
		# lookup of each sampled path needs (its key and its row) into the
		# page cache, then one unmeasured run. Reading the whole file
		# (cat) does not do it once the index outgrows the page cache (the
		# 10M index is 20 GiB; this machine has 23.5 GiB): part of it stays
		# cold, and the row measured disk reads (7.81 instead of ≈ 2.2).
		{
			echo "CREATE TEMP TABLE warm (hash TEXT PRIMARY KEY); BEGIN;"
			sed "s|^/$FLAKE/||; s|\.narinfo\$||; s|.*|INSERT OR IGNORE INTO warm VALUES ('&');|" "$WORK/run/index-paths.txt"
			echo "COMMIT; SELECT count(*), sum(length(p.narinfo)) FROM warm w JOIN flake_paths p ON p.hash = w.hash;"
		} | sqlite3 "file:$dir/index.db?mode=ro" >"$LOGS/index-$n-warm.txt" 2>&1 ||
			die "warming the $n-path index failed: $(cat "$LOGS/index-$n-warm.txt")"
		WRK_C=16 WRK_PATHS=$WORK/run/index-paths.txt wrk_run "index-$n-warmup" "http://127.0.0.1:18086" >/dev/null
		p99+=("$(WRK_C=16 WRK_PATHS=$WORK/run/index-paths.txt wrk_median "index-$n" "http://127.0.0.1:18086" 2)")
		stop "$pid"
	done
	local r
	r=$(ratio "${p99[1]}" "${p99[0]}")
	local label="$((INDEX_BIG / 1000))k"
	((INDEX_BIG % 1000000 == 0)) && label="$((INDEX_BIG / 1000000))M"
	result 5-index "narinfo p99, $label vs 10k indexed paths (ms)" "${p99[1]}" "${p99[0]} (10k)" "$r" "≤ 1.5" "$(le "$r" 1.5)"
}

m_memory() {
	log "memory: authz RSS with 10k cached tokens; blob server RSS during 100 concurrent NAR downloads"
	ensure_ghz
	local dir=$DATA/authz10k pid before after
	if ! fresh_tokens "$dir/tokens.txt"; then
		benchdata authz -dir "$dir" -repo "$FLAKE" -tokens 10000 -requests 10000 -policies "$ROOT/policies" >&2
	fi
	benchdata protoset -out "$DATA/authz.protoset" >/dev/null
	start authz-mem authz -listen 127.0.0.1:18092 -http-listen 127.0.0.1:18093 -policies "$ROOT/policies" \
		-issuers "$dir/issuers.yaml" -owners-url "http://127.0.0.1:1" -log-level warn
	pid=$LAST_PID
	wait_http "http://127.0.0.1:18093/healthz"
	before=$(rss_mib "$pid")
	ghz --insecure --protoset "$DATA/authz.protoset" --call envoy.service.auth.v3.Authorization.Check \
		--data-file "$dir/ghz-read.json" -n 10000 -c 20 -O json 127.0.0.1:18092 >"$LOGS/ghz-mem.json" ||
		die "ghz (memory) failed"
	after=$(rss_mib "$pid")
	stop "$pid"
	result 6-mem-authz "authz RSS after 10k distinct tokens verified (MiB)" "$after" "$before (idle)" "$(ratio "$after" "$before")" "bounded" "recorded"

	# Blob server: peak RSS while 100 clients download the 256 MiB NAR, and
	# the same with the 1 GiB NAR: it must not grow with NAR size.
	ensure_nar256
	gen_nar "$DATA/nar1g.nar" $((1 << 30))
	local big=$NAR_NAME peak256 peak1g
	if [[ $(curl -s -o /dev/null -w '%{http_code}' -I "http://$P_BLOB/$FLAKE/nar/$big") != 200 ]]; then
		put_nar "http://$P_BLOB/$FLAKE/nar/$big" "$DATA/nar1g.nar" >/dev/null
	fi
	peak_during() { # peak RSS of the blob server while wrk downloads $1
		local w peak=0 r
		wrk -t2 -c100 -d"$DUR" "http://$P_BLOB/$FLAKE/nar/$1" >"$LOGS/wrk-mem.txt" 2>&1 &
		w=$!
		while kill -0 "$w" 2>/dev/null; do
			r=$(rss_mib "$BLOB_PID")
			((r > peak)) && peak=$r
			sleep 0.2
		done
		wait "$w" || true
		echo "$peak"
	}
	peak256=$(peak_during "$NAR256")
	peak1g=$(peak_during "$big")
	result 7-mem-blob "blob server peak RSS, 100 concurrent downloads of 1 GiB NAR (MiB)" "$peak1g" "$peak256 (256 MiB NAR)" "$(ratio "$peak1g" "$peak256")" "≤ 1.5" "$(le "$(ratio "$peak1g" "$peak256")" 1.5)"
}

# ghz_run NAME ADDR DATAFILE: prints "rps p99_ms errors". With GHZ_N set it
# sends that many requests instead of running for $GHZ_DUR (a timed run
# cancels its last in-flight calls, which ghz counts as Unavailable).
ghz_run() {
	local amount=(-z "$GHZ_DUR")
	[[ -n ${GHZ_N:-} ]] && amount=(-n "$GHZ_N")
	ghz --insecure --protoset "$DATA/authz.protoset" --call envoy.service.auth.v3.Authorization.Check \
		--data-file "$3" "${amount[@]}" -c 50 --connections 2 -O json "$2" >"$LOGS/ghz-$1.json" 2>"$LOGS/ghz-$1.err" ||
		die "ghz $1 failed: $(cat "$LOGS/ghz-$1.err")"
	jq -r '[.rps, ((.latencyDistribution // [] | map(select(.percentage == 99)) | .[0].latency // 0) / 1e6),
		((.statusCodeDistribution // {} | to_entries | map(select(.key != "OK") | .value) | add) // 0)] | @tsv' \
		"$LOGS/ghz-$1.json" | awk '{printf "%.0f %.3f %d\n", $1, $2, $3}'
}
ghz_median() { # ghz_median NAME ADDR DATAFILE → "rps p99 errors" (medians, errors summed)
	local i out rps=() p99=() errs=0
	for i in $(seq "$RUNS"); do
		out=$(ghz_run "$1-$i" "$2" "$3")
		rps+=("$(echo "$out" | cut -d' ' -f1)")
		p99+=("$(echo "$out" | cut -d' ' -f2)")
		errs=$((errs + $(echo "$out" | cut -d' ' -f3)))
	done
	echo "$(median "${rps[@]}") $(median "${p99[@]}") $errs"
}

OPA_PID=
start_opa() {
	[[ -n $OPA_PID ]] && return
	ensure_opa_envoy
	gen_authz
	start opa-envoy opa-envoy run --server --addr "$P_OPA_HTTP" --log-level error \
		--set "plugins.envoy_ext_authz_grpc.addr=$P_OPA" \
		--set "plugins.envoy_ext_authz_grpc.path=flakegate/authz/result" \
		--set decision_logs.console=false \
		"$ROOT/bench/opa-envoy/policy.rego" "$DATA/authz/opa-data.json"
	OPA_PID=$LAST_PID
	wait_tcp "$P_OPA"
}

m_authz() {
	log "authz Check: flakegate authz vs opa-envoy-plugin (ghz, $RUNS× $GHZ_DUR, -c 50, 100 tokens round-robin)"
	ensure_ghz
	start_authz
	start_opa
	benchdata protoset -out "$DATA/authz.protoset" >/dev/null
	# Both must decide alike before they are compared.
	local path want got
	path=$(head -1 "$DATA/authz/narinfo-paths.txt")
	for a in "Bearer $TOKEN" "" "Bearer x.y.z"; do
		want=$(benchdata check -addr "$P_AUTHZ" -path "$path" -authorization "$a" | cut -d' ' -f1)
		got=$(benchdata check -addr "$P_OPA" -path "$path" -authorization "$a" | cut -d' ' -f1)
		[[ $want == "$got" ]] || die "authz and opa-envoy disagree on GET $path (auth '${a:0:12}…'): $want vs $got"
	done
	[[ $(benchdata check -addr "$P_AUTHZ" -path "$path" -authorization "Bearer $TOKEN" | cut -d' ' -f1) == 200 ]] ||
		die "authz does not allow the benchmark request"
	local ours ref
	ours=$(ghz_median authz "$P_AUTHZ" "$DATA/authz/ghz-read.json")
	ref=$(ghz_median opa "$P_OPA" "$DATA/authz/ghz-read.json")
	echo "$ours" >"$RESULTS/.authz-baseline"
	local orps op99 rrps rp99 r1 r2
	read -r orps op99 _ <<<"$ours"
	read -r rrps rp99 _ <<<"$ref"
	r1=$(ratio "$orps" "$rrps")
	r2=$(ratio "$op99" "$rp99")
	result 8-authz-rps "authz decisions/s, RS256 JWT, same policy (ghz -c 50)" "$orps" "$rrps (opa-envoy)" "$r1" "≥ 3" "$(ge "$r1" 3)"
	result 9-authz-p99 "authz p99 (ms)" "$op99" "$rp99 (opa-envoy)" "$r2" "≤ 0.33" "$(le "$r2" 0.34)"
}

m_reload() {
	log "authz p99 while the policies reload 10×/s vs without"
	ensure_ghz
	start_authz
	benchdata protoset -out "$DATA/authz.protoset" >/dev/null
	local base under w errs r
	# Request counts, not durations: every request must be answered.
	local n=$((${GHZ_DUR%s} * 4000))
	base=$(GHZ_N=$n ghz_median reload-base "$P_AUTHZ" "$DATA/authz/ghz-read.json")
	# 10 policy changes per second: rewrite a policy file (the same content
	# plus a comment, new bytes each time, so every write is a real change).
	# Writes on a 100 ms clock (not "sleep 0.1" after each, which drifts).
	reloads_total() { curl -s "http://$P_AUTHZ_HTTP/metrics" | awk '/^flakegate_policy_reloads_total/ && /success/ {s += $2} END {print s + 0}'; }
	local r0 t0
	r0=$(reloads_total)
	t0=$(date +%s%N)
	(
		i=0
		next=$(date +%s%N)
		while :; do
			i=$((i + 1))
			# Alternately the data file and the Rego file: half the reloads
			# reuse the compiled modules, half compile everything.
			f=flakes.yaml
			((i % 2)) && f=flakegate.rego
			{ cat "$ROOT/policies/$f"; echo "# reload $i"; } >"$WORK/run/policies/.$f.tmp"
			mv "$WORK/run/policies/.$f.tmp" "$WORK/run/policies/$f"
			next=$((next + 100000000))
			now=$(date +%s%N)
			d=$((next - now))
			((d > 0)) && sleep "$(printf '0.%09d' "$d")"
		done
	) &
	w=$!
	PIDS+=("$w")
	under=$(GHZ_N=$n ghz_median reload "$P_AUTHZ" "$DATA/authz/ghz-read.json")
	stop "$w"
	local reloads secs
	reloads=$(($(reloads_total) - r0))
	secs=$(awk -v a="$t0" -v b="$(date +%s%N)" 'BEGIN {printf "%.1f", (b - a) / 1e9}')
	reloads="$reloads reloads in ${secs} s"
	errs=$(echo "$under" | cut -d' ' -f3)
	r=$(ratio "$(echo "$under" | cut -d' ' -f2)" "$(echo "$base" | cut -d' ' -f2)")
	local met
	met=$(le "$r" 1.5)
	((errs == 0)) || met="**no** ($errs failed)"
	result 10-reload "authz p99 under 10 policy reloads/s (ms; $reloads, $errs failed)" "$(echo "$under" | cut -d' ' -f2)" "$(echo "$base" | cut -d' ' -f2) (no reloads)" "$r" "≤ 1.5, 0 failed" "$met"
}

# make_closure STORE SEED: prints the top of a 201-path closure built in the
# chroot store STORE: 200 content-addressed text paths, path i referencing
# up to 3 earlier ones (i-1, i/2, i/3: a chain, so nix copy goes path by
# path), sizes 1-64 KiB of hex, and one top path referencing them all.
make_closure() {
	local top
	top=$(XDG_CACHE_HOME=$WORK/run/xdg nix-instantiate --store "$1" --eval --read-write-mode -E "
	let
	  noise = i: n: builtins.concatStringsSep \"\" (builtins.genList (j: builtins.hashString \"sha256\" \"$2-\${toString i}-\${toString j}\") (n / 64));
	  p = builtins.genList (i: builtins.toFile \"$2-p\${toString i}\" ''
	    path \${toString i}
	    \${if i > 0 then builtins.elemAt p (i - 1) else \"\"}
	    \${if i > 1 then builtins.elemAt p (i / 2) else \"\"}
	    \${if i > 2 then builtins.elemAt p (i / 3) else \"\"}
	    \${noise i (1024 * (1 + (i * 7) / 22))}
	  '') 200;
	in builtins.toFile \"$2-top\" (builtins.concatStringsSep \"\n\" p)" | tr -d '"')
	[[ $top == /nix/store/* ]] || die "could not make the closure: $top"
	echo "$top"
}

m_nixcopy() {
	log "nix copy push + pull of a 200-path closure: through gate+authz vs file:// cache"
	command -v nix >/dev/null || {
		result 11-nixcopy "nix copy push+pull, 200 paths (s)" "—" "—" "—" "≥ 0.7" "not run: nix not found (install nix-bin)"
		return
	}
	start_gate
	local src=$WORK/run/nix-src pull=$WORK/run/nix-pull netrc=$WORK/run/netrc
	# A fresh XDG cache per run: Nix caches narinfo lookups per cache URL.
	local nixopts=(--extra-experimental-features nix-command --option substituters "" --option netrc-file "$netrc")
	rm -rf "$src" "$WORK/run/xdg-nix" && mkdir -p "$src"
	export XDG_CACHE_HOME=$WORK/run/xdg-nix
	printf 'machine %s\nlogin bench\npassword %s\n' "${P_GATE%:*}" "$TOKEN" >"$netrc"
	local seed top
	seed=bench$(date +%s)
	top=$(make_closure "$src" "$seed")
	local n
	n=$(nix "${nixopts[@]}" path-info --store "$src" -r "$top" | wc -l)
	local fc=$WORK/run/filecache
	timed() { local s e; s=$(date +%s.%N); "$@" >>"$LOGS/nixcopy.log" 2>&1 || die "$* failed (see $LOGS/nixcopy.log)"; e=$(date +%s.%N); awk -v s="$s" -v e="$e" 'BEGIN {printf "%.2f", e - s}'; }
	local pub
	pub=$(blobserver -print-public-key -data-dir "$WORK/run/gate-data" | tail -1)
	# push_pull TOP QUERY: "ours ref split_ours split_ref" for one closure,
	# pushed with ?QUERY (compression) through the gate and to file://.
	# SERVER (default: the two-process gate) is the host:port pushed to.
	push_pull() {
		local t0 t1 t2 t3 server=${3:-$P_GATE} key=${4:-$pub}
		rm -rf "$fc" "$pull" "$pull-ref"
		t0=$(timed nix "${nixopts[@]}" copy --store "$src" --to "http://$server/$FLAKE$2" "$1")
		t1=$(timed nix "${nixopts[@]}" --option trusted-public-keys "$key" copy --from "http://$server/$FLAKE" --to "$pull" "$1")
		t2=$(timed nix "${nixopts[@]}" copy --store "$src" --to "file://$fc$2" "$1")
		t3=$(timed nix "${nixopts[@]}" copy --no-check-sigs --from "file://$fc" --to "$pull-ref" "$1")
		awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" 'BEGIN {printf "%.2f %.2f push_%s_+_pull_%s push_%s_+_pull_%s\n", a + b, c + d, a, b, c, d}'
	}
	local out r
	# nix copy's default (xz), the row the target is for.
	out=$(push_pull "$top" "")
	set -- $out
	r=$(ratio "$2" "$1")
	result 11-nixcopy "nix copy push+pull of $n paths via gate+authz (s; ratio = ref/ours)" "$1 (${3//_/ })" "$2 (file://: ${4//_/ })" "$r" "≥ 0.7" "$(ge "$r" 0.7)"
	# What the README and the CI examples push with: ?compression=zstd.
	top=$(make_closure "$src" "$seed-zstd")
	out=$(push_pull "$top" "?compression=zstd")
	set -- $out
	r=$(ratio "$2" "$1")
	result 12-nixcopy-zstd "same with ?compression=zstd, as the examples push (s; ratio = ref/ours)" "$1 (${3//_/ })" "$2 (file://: ${4//_/ })" "$r" "—" "recorded"
	# The floor of any HTTP cache: a server that keeps nothing (Nix's own
	# HTTP client cost), against the same file:// push.
	local null=127.0.0.1:18097 t_null t_file
	start nullcache benchdata nullcache -listen "$null"
	local nullpid=$LAST_PID
	wait_http "http://$null/nix-cache-info"
	top=$(make_closure "$src" "$seed-null")
	t_null=$(timed nix "${nixopts[@]}" copy --store "$src" --to "http://$null/$FLAKE?compression=zstd" "$top")
	rm -rf "$fc"
	t_file=$(timed nix "${nixopts[@]}" copy --store "$src" --to "file://$fc?compression=zstd" "$top")
	r=$(ratio "$t_file" "$t_null")
	result 13-nixcopy-null "nix copy push (zstd) to a do-nothing HTTP cache: Nix's HTTP cost (s; ratio = file:// / it)" "$t_null" "$t_file (file://)" "$r" "—" "recorded"
	# The single-host process (blobserver -policies), what the quickstart
	# runs: its zstd push against the do-nothing cache's floor, measured in
	# pairs right after it (floor first), and its xz push + pull.
	start_single
	local spub
	spub=$(blobserver -print-public-key -data-dir "$WORK/run/single-data" | tail -1)
	printf 'machine %s\nlogin bench\npassword %s\n' "${P_SINGLE%:*}" "$TOKEN" >"$netrc"
	local i t_s ts=() tn=() rs=()
	for i in $(seq "$RUNS"); do
		top=$(make_closure "$src" "$seed-null$i")
		t_null=$(timed nix "${nixopts[@]}" copy --store "$src" --to "http://$null/$FLAKE?compression=zstd" "$top")
		top=$(make_closure "$src" "$seed-single$i")
		t_s=$(timed nix "${nixopts[@]}" copy --store "$src" --to "http://$P_SINGLE/$FLAKE?compression=zstd" "$top")
		tn+=("$t_null") ts+=("$t_s") rs+=("$(ratio "$t_s" "$t_null")")
	done
	stop "$nullpid"
	r=$(median "${rs[@]}")
	result 13-nixcopy-single-zstd "nix copy push (zstd) of $n paths via the single-host process vs the do-nothing HTTP cache (s; ratio = ours / it)" "$(median "${ts[@]}")" "$(median "${tn[@]}") (do-nothing cache)" "$r" "≤ 1.5" "$(le "$r" 1.5)"
	top=$(make_closure "$src" "$seed-single-xz")
	out=$(push_pull "$top" "" "$P_SINGLE" "$spub")
	set -- $out
	r=$(ratio "$2" "$1")
	result 13-nixcopy-single-xz "nix copy push+pull of $n paths via the single-host process (s; ratio = ref/ours)" "$1 (${3//_/ })" "$2 (file://: ${4//_/ })" "$r" "≥ 0.55" "$(ge "$r" 0.55)"
	unset XDG_CACHE_HOME
	rm -rf "$src" "$pull" "$pull-ref" "$fc"
}

m_push() {
	log "flakegate push vs nix copy (zstd) of a 200-path closure, both through gate+authz"
	command -v nix >/dev/null || {
		result 14-push "flakegate push of 200 paths (s)" "—" "—" "—" "≥ 1" "not run: nix not found (install nix-bin)"
		return
	}
	start_gate
	local src=$WORK/run/nix-src netrc=$WORK/run/netrc
	local nixopts=(--extra-experimental-features nix-command --option substituters "" --option netrc-file "$netrc")
	rm -rf "$src" "$WORK/run/xdg-nix" && mkdir -p "$src"
	export XDG_CACHE_HOME=$WORK/run/xdg-nix
	printf 'machine %s\nlogin bench\npassword %s\n' "${P_GATE%:*}" "$TOKEN" >"$netrc"
	timed() { local s e; s=$(date +%s.%N); "$@" >>"$LOGS/push.log" 2>&1 || die "$* failed (see $LOGS/push.log)"; e=$(date +%s.%N); awk -v s="$s" -v e="$e" 'BEGIN {printf "%.2f", e - s}'; }
	local seed top_a top_b n t_push t_copy r
	seed=benchpush$(date +%s)
	# Two closures of the same shape (different seeds): each tool pushes
	# paths the cache has never seen.
	top_a=$(make_closure "$src" "$seed-a")
	top_b=$(make_closure "$src" "$seed-b")
	n=$(nix "${nixopts[@]}" path-info --store "$src" -r "$top_a" | wc -l)
	t_push=$(timed flakegate push --cache "http://$P_GATE" --flake "$FLAKE" --store "$src" --netrc "$netrc" "$top_a")
	t_copy=$(timed nix "${nixopts[@]}" copy --store "$src" --to "http://$P_GATE/$FLAKE?compression=zstd" "$top_b")
	r=$(ratio "$t_copy" "$t_push")
	result 14-push "flakegate push (8 parallel uploads, zstd) of $n paths via gate+authz (s; ratio = nix copy / ours)" "$t_push" "$t_copy (nix copy ?compression=zstd)" "$r" "≥ 1" "$(ge "$r" 1)"
	unset XDG_CACHE_HOME
	rm -rf "$src"
}

for m in "${MEASURES[@]}"; do "m_$m"; done

# ---- the table ------------------------------------------------------------
cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
mode=full
((QUICK)) && mode="quick (-quick: 1 run of 3 s each, $INDEX_BIG-path index)"
table=$WORK/table.md
{
	echo "Machine: $(nproc) cores, $cpu, $mem RAM; $(uname -sr); $(go version | cut -d' ' -f3)."
	echo "Run: $(date -u +%Y-%m-%dT%H:%MZ), mode $mode; load generator on the same cores."
	echo
	echo "| measure | ours | reference | ratio | target | met? |"
	echo "|---|---|---|---|---|---|"
	for f in $(ls "$RESULTS" | sort -V); do
		awk -F'|' '{printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6}' "$RESULTS/$f"
	done
} >"$table"
echo
cat "$table"

if ((!DOC)); then
	echo "table not written to docs/benchmarks.md (-no-doc); it is in $table" >&2
	exit 0
fi
doc=$ROOT/docs/benchmarks.md
if [[ ! -f $doc ]] || ! grep -q '<!-- bench:table:begin -->' "$doc"; then
	printf '# Benchmarks\n\n<!-- bench:table:begin -->\n<!-- bench:table:end -->\n' >"$doc"
fi
awk -v table="$table" '
	/<!-- bench:table:begin -->/ { print; while ((getline l < table) > 0) print l; skip = 1; next }
	/<!-- bench:table:end -->/ { skip = 0 }
	!skip { print }' "$doc" >"$doc.tmp" && mv "$doc.tmp" "$doc"
echo "table written to docs/benchmarks.md" >&2
