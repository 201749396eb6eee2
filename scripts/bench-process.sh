#!/usr/bin/env bash
# bench-process.sh measures the CPU time a whole proxy process spends per request, side by side
# for four proxies in one run: the sluice quickstart, a plain httputil.ReverseProxy
# (internal/cmd/stdproxy, "stdlib"), NGINX and HAProxy, each in front of the same three backends
# (internal/cmd/demobackend), under the same load: wrk for HTTP/1.1, h2load for HTTP/2 and
# openssl s_time for new TLS connections.
#
# The proxy under test is pinned to core PROXY_CPU; the load and the backends share core
# LOAD_CPU. The CPU figure is the proxy's utime+stime from /proc/PID/stat over the run (summed
# over its processes: NGINX's master and worker), divided by the requests the load completed: on
# a shared machine that is much steadier than requests per second. Each run starts a fresh
# proxy, warms it up with the same load for WARMUP, then measures for DURATION; peak RSS is the
# largest VmHWM among the proxy's processes at the end of the run. Rounds rotate the order of the
# proxies, so that none always runs first or last.
#
# Scenarios (SCENARIOS picks a subset, in this order; h2c-m10 runs only when asked for). Every
# response is 1 KiB but get1m's; the proxies speak HTTP/1.1 with keep-alive to the backends in
# all of them.
#   get      keep-alive GET (wrk, CONNS connections)
#   paced    the same at the same load for every proxy: each connection waits PACE_MS between
#            a response and its next request (wrk's delay), so that p50 and p99 compare the
#            proxies' latency at one request rate rather than at each one's own maximum
#   close    GET with Connection: close, a new client connection per request (wrk)
#   post     keep-alive POST with a 1 KiB body (wrk)
#   get1m    keep-alive GET, 1 MiB response (demobackend's ?size=1048576; wrk)
#   h2c      GET over h2c with prior knowledge, CONNS connections of one stream each (h2load -m1)
#   h2c-m10  the same with ten concurrent streams per connection (h2load -m10)
#   h2tls    GET over HTTP/2 over TLS 1.3, ALPN h2, CONNS connections of one stream (h2load -m1)
#   tls      TLS termination: every request is a new connection with a full TLS 1.3 handshake,
#            then one HTTP/1.0 GET (TLS_CLIENTS openssl s_time -new loops); µs CPU/req is the
#            CPU per handshake (GET included) and req/s the handshakes per second
# Not measured yet: TLS or HTTP/2 to the backends, WebSockets, gRPC streaming.
#
# TLS uses an ECDSA P-256 certificate (what most sites serve) made with openssl for each run,
# TLS 1.3 with TLS_AES_128_GCM_SHA256 and X25519, which every client pins or picks. NGINX and
# HAProxy have session tickets and their session cache off; the Go proxies keep crypto/tls's
# default (one TLS 1.3 ticket per connection, never used) since the quickstart has no flag for
# it. Full handshakes are the client's doing: wrk and h2load resume sessions on reconnect (wrk
# keeps the session across SSL_clear), s_time -new never does, and the script checks that
# s_time reported no resumed connection. h2tls's 2 × CONNS handshakes (warm-up, run) are a
# small part of its CPU. The client's half of a handshake costs about what the proxy's does, so
# tls's req/s is bound by the load core: a line under the summary gives the handshakes per
# second one core of each proxy would do, from its CPU per handshake.
#
# Latency: wrk's percentiles; for h2load the percentiles of the per-request times it writes with
# --log-file (it prints no percentiles itself). s_time measures no latency: tls's p50 column is
# the mean time per connection by Little's law (TLS_CLIENTS × seconds / connections), its p99 "-".
#
# NGINX and HAProxy get configs written to a temporary directory (upstream keep-alive to the
# three backends, round robin, one worker / one thread, no logging unless ACCESS_LOG=true) and
# run unprivileged. When they are missing, the script installs them from Debian if it runs as
# root (or has password-less sudo), else skips them with a line saying so; wrk and h2load
# (nghttp2-client) it installs the same way, but cannot do without.
#
#   scripts/bench-process.sh                          # 3 rounds of 4s per scenario and proxy
#   ROUNDS=1 DURATION=3s scripts/bench-process.sh
#   SCENARIOS=get PROXIES=sluice,stdlib scripts/bench-process.sh
#   SCENARIOS=h2c,h2c-m10,h2tls,tls scripts/bench-process.sh
#   ACCESS_LOG=true scripts/bench-process.sh          # every proxy logs each request to /dev/null
#
# Environment: DURATION (4s; wrk's and h2load's syntax, 4s or 1m), WARMUP (1s), CONNS (64),
# TLS_CLIENTS (8), PACE_MS (10), ROUNDS (3), SCENARIOS (get paced close post get1m h2c h2tls
# tls), PROXIES (sluice stdlib nginx haproxy; sluice is the quickstart with sluice's own
# servers, h1 and h2; sluice-nethttp is the quickstart with net/http's; sluice-l4 is
# examples/tcp-proxy, a TCP relay that reads no HTTP, the floor of moving the bytes, for the
# h1 scenarios only; sluice-observed is the quickstart with metrics, the dashboard's recorder
# and tracing with sampling off), PORT (first of four ports, 19080), ACCESS_LOG (false), PROXY_CPU (0),
# LOAD_CPU (1). Lists may be separated by spaces or commas. The defaults (8 scenarios × 4
# proxies × 3 rounds) take about 9 minutes.
set -euo pipefail

DURATION=${DURATION:-4s}
WARMUP=${WARMUP:-1s}
CONNS=${CONNS:-64}
TLS_CLIENTS=${TLS_CLIENTS:-8}
ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-get paced close post get1m h2c h2tls tls}
PACE_MS=${PACE_MS:-10}
PROXIES=${PROXIES:-sluice stdlib nginx haproxy}
PORT=${PORT:-19080}
ACCESS_LOG=${ACCESS_LOG:-false}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
export PATH="$PATH:/usr/sbin:/sbin"

cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

read -r -a scenarios <<<"${SCENARIOS//,/ }"
read -r -a proxies <<<"${PROXIES//,/ }"
for s in "${scenarios[@]}"; do
	case $s in get | paced | close | post | get1m | h2c | h2c-m10 | h2tls | tls) ;; *)
		echo "SCENARIOS: unknown scenario $s (want get, paced, close, post, get1m, h2c, h2c-m10, h2tls, tls)" >&2
		exit 2
		;;
	esac
done
for p in "${proxies[@]}"; do
	case $p in sluice | sluice-observed | sluice-nethttp | sluice-l4 | stdlib | nginx | haproxy) ;; *)
		echo "PROXIES: unknown proxy $p (want sluice, sluice-observed, sluice-nethttp, sluice-l4, stdlib, nginx, haproxy)" >&2
		exit 2
		;;
	esac
done

# mode prints how clients reach the proxy in scenario $1: h1 (HTTP/1.1), h2c (prior knowledge
# only: NGINX 1.22 and HAProxy speak nothing else on such a port) or tls (HTTP/2 or HTTP/1.1 by
# ALPN).
mode() {
	case $1 in
	h2c*) echo h2c ;;
	h2tls | tls) echo tls ;;
	*) echo h1 ;;
	esac
}

# need COMMAND PACKAGE installs PACKAGE from Debian when COMMAND is missing, or exits.
need() {
	command -v "$1" >/dev/null && return
	echo "installing $2 from Debian" >&2
	{ as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$2" >/dev/null; } ||
		{ echo "could not install $1: run 'apt-get install $2' as root" >&2; exit 1; }
}

modes=()
for s in "${scenarios[@]}"; do
	case $s in
	get | paced | close | post | get1m) need wrk wrk ;;
	h2c | h2c-m10 | h2tls) need h2load nghttp2-client ;;
	tls) need openssl openssl ;;
	esac
	m=$(mode "$s")
	[[ " ${modes[*]} " == *" $m "* ]] || modes+=("$m")
done

# Install NGINX and HAProxy when asked for and missing, as scripts/framing-compare.sh does, but
# a failure only drops them from the run.
missing=()
want nginx && ! command -v nginx >/dev/null && missing+=(nginx-light)
want haproxy && ! command -v haproxy >/dev/null && missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
	echo "installing ${missing[*]} from Debian" >&2
	if as_root apt-get update -qq; then
		DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
			# nginx-light is gone from newer Debian releases; plain nginx will do.
			DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]/nginx-light/nginx}" >/dev/null 2>&1 ||
			true
	fi
fi
kept=()
for p in "${proxies[@]}"; do
	if [ "$p" = nginx ] || [ "$p" = haproxy ]; then
		if ! command -v "$p" >/dev/null; then
			echo "skipping $p: not installed and could not install it (run 'apt-get install nginx-light haproxy' as root)"
			continue
		fi
	fi
	kept+=("$p")
done
proxies=("${kept[@]}")
[ ${#proxies[@]} -gt 0 ] || { echo "no proxy left to measure" >&2; exit 1; }

tmp=$(mktemp -d /tmp/bench-process.XXXXXX)
chmod 0755 "$tmp"
mkdir -p "$tmp/nginx-temp" && chmod 0777 "$tmp/nginx-temp"
pids=()
# shellcheck disable=SC2317 # run by the trap
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/demobackend" ./internal/cmd/demobackend
{ want sluice || want sluice-observed || want sluice-nethttp; } && go build -o "$tmp/quickstart" ./examples/quickstart
want stdlib && go build -o "$tmp/stdproxy" ./internal/cmd/stdproxy
want sluice-l4 && go build -o "$tmp/tcp-proxy" ./examples/tcp-proxy

proxy_addr=127.0.0.1:$PORT
backends=127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2)),127.0.0.1:$((PORT + 3))

# A fresh ECDSA P-256 certificate for the TLS scenarios; HAProxy wants chain and key in one file.
if [[ " ${modes[*]} " == *" tls "* ]]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
		-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$tmp/tls.key" -out "$tmp/tls.crt" 2>/dev/null
	cat "$tmp/tls.crt" "$tmp/tls.key" >"$tmp/haproxy.pem"
fi

if [ "$ACCESS_LOG" = true ]; then
	nginx_log="access_log /dev/null;"
	haproxy_log="log stdout format raw local0
	option httplog"
else
	nginx_log="access_log off;"
	haproxy_log=""
fi

# Both configs keep idle connections to the backends (the default of the Go proxies) and add
# X-Forwarded-For, as stdproxy and the quickstart do. NGINX buffers responses in memory as it
# does by default, but never spills them to a temporary file (proxy_max_temp_file_size 0): the
# Go proxies stream, and a disk write per 1 MiB response would measure the disk. One config per
# mode, differing in the listener only.
for m in "${modes[@]}"; do
	case $m in
	h1)
		nginx_listen="listen $proxy_addr;"
		haproxy_bind="bind $proxy_addr"
		;;
	h2c)
		nginx_listen="listen $proxy_addr http2;"
		haproxy_bind="bind $proxy_addr proto h2"
		;;
	tls)
		nginx_listen="listen $proxy_addr ssl http2;
		ssl_certificate $tmp/tls.crt;
		ssl_certificate_key $tmp/tls.key;
		ssl_protocols TLSv1.3;
		ssl_session_tickets off;
		ssl_session_cache off;"
		haproxy_bind="bind $proxy_addr ssl crt $tmp/haproxy.pem alpn h2,http/1.1 ssl-min-ver TLSv1.3 no-tls-tickets"
		;;
	esac
	cat >"$tmp/nginx-$m.conf" <<CONF
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log warn;
events { worker_connections 4096; }
http {
	$nginx_log
	client_body_temp_path $tmp/nginx-temp/body;
	proxy_temp_path $tmp/nginx-temp/proxy;
	fastcgi_temp_path $tmp/nginx-temp/fastcgi;
	uwsgi_temp_path $tmp/nginx-temp/uwsgi;
	scgi_temp_path $tmp/nginx-temp/scgi;
	keepalive_requests 1000000;
	upstream backends {
$(for b in ${backends//,/ }; do echo "		server $b;"; done)
		keepalive 64;
		keepalive_requests 1000000;
	}
	server {
		$nginx_listen
		location / {
			proxy_pass http://backends;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
			proxy_max_temp_file_size 0;
		}
	}
}
CONF

	cat >"$tmp/haproxy-$m.cfg" <<CONF
global
	nbthread 1
	maxconn 4096
	tune.ssl.cachesize 0
defaults
	mode http
	$haproxy_log
	option forwardfor
	http-reuse always
	timeout connect 5s
	timeout client 30s
	timeout server 30s
	timeout http-request 10s
	timeout http-keep-alive 30s
frontend bench
	$haproxy_bind
	default_backend backends
backend backends
	balance roundrobin
$(n=0; for b in ${backends//,/ }; do n=$((n + 1)); echo "	server b$n $b"; done)
CONF
done

# A 1 KiB request body for the post scenario.
# The paced scenario's wait between a response and the next request on a connection.
cat >"$tmp/paced.lua" <<LUA
function delay()
	return $PACE_MS
end
LUA

cat >"$tmp/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("x", 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA

# wait_up URL [CURL-ARGS] polls URL until it answers 200, for at most 10 seconds.
wait_up() {
	for _ in $(seq 100); do
		curl -fsS -o /dev/null "${@:2}" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "$1 did not come up" >&2
	return 1
}

# proxy_url prints the URL of the proxy in mode $1 and the curl arguments that reach it.
proxy_url() {
	case $1 in
	h1) echo "http://$proxy_addr/" ;;
	h2c) echo "http://$proxy_addr/ --http2-prior-knowledge" ;;
	tls) echo "https://$proxy_addr/ --insecure" ;;
	esac
}

# start_proxy NAME MODE starts proxy NAME for clients in MODE, pinned to PROXY_CPU, and sets
# proxy_pid. The Go proxies serve HTTP/1.1 and h2c on one plain listener.
start_proxy() {
	local tls=()
	[ "$2" = tls ] && tls=(-tls-cert "$tmp/tls.crt" -tls-key "$tmp/tls.key")
	case $1 in
	sluice)
		taskset -c "$PROXY_CPU" "$tmp/quickstart" -listen "$proxy_addr" -backends "$backends" \
			-access-log="$ACCESS_LOG" "${tls[@]}" >/dev/null 2>&1 &
		;;
	sluice-observed)
		# The quickstart with Prometheus metrics (edge, proxy, balancer, health) and the
		# dashboard's recorder fed on every request, and OpenTelemetry tracing with sampling
		# off: what observability costs per request.
		taskset -c "$PROXY_CPU" "$tmp/quickstart" -listen "$proxy_addr" -backends "$backends" \
			-access-log="$ACCESS_LOG" -admin 127.0.0.1:0 -tracing "${tls[@]}" >/dev/null 2>&1 &
		;;
	sluice-nethttp)
		taskset -c "$PROXY_CPU" "$tmp/quickstart" -listen "$proxy_addr" -backends "$backends" \
			-access-log="$ACCESS_LOG" -server net/http "${tls[@]}" >/dev/null 2>&1 &
		;;
	stdlib)
		taskset -c "$PROXY_CPU" "$tmp/stdproxy" -listen "$proxy_addr" -backends "$backends" \
			-access-log="$ACCESS_LOG" "${tls[@]}" >/dev/null 2>&1 &
		;;
	sluice-l4)
		# A TCP relay, not an HTTP proxy: each client connection is spliced to a backend
		# connection of its own. It reads no HTTP at all, so it shows the floor under any proxy
		# of what moving the bytes costs; h1 only (TLS would be terminated by the backend).
		taskset -c "$PROXY_CPU" "$tmp/tcp-proxy" -listen "$proxy_addr" -default "$backends" >/dev/null 2>&1 &
		;;
	nginx)
		taskset -c "$PROXY_CPU" nginx -p "$tmp" -c "$tmp/nginx-$2.conf" -e "$tmp/nginx-error.log" \
			-g 'daemon off;' >/dev/null 2>&1 &
		;;
	haproxy)
		taskset -c "$PROXY_CPU" haproxy -db -f "$tmp/haproxy-$2.cfg" >/dev/null 2>"$tmp/haproxy.log" &
		;;
	esac
	proxy_pid=$!
	pids+=("$proxy_pid")
}

# load SCENARIO DURATION OUT runs the scenario's load against the proxy and writes what the
# load tool printed to OUT (h2load's per-request log to OUT.log).
load() {
	local args path=/
	case $1 in
	get | paced | close | post | get1m)
		args=(-t1 -c"$CONNS" -d"$2" --timeout 10s --latency)
		case $1 in
		paced) args+=(-s "$tmp/paced.lua") ;;
		close) args+=(-H 'Connection: close') ;;
		post) args+=(-s "$tmp/post.lua") ;;
		get1m) path='/?size=1048576' ;;
		esac
		taskset -c "$LOAD_CPU" wrk "${args[@]}" "http://$proxy_addr$path" >"$3"
		;;
	h2c | h2c-m10 | h2tls)
		local streams=1 url=http://$proxy_addr/
		[ "$1" = h2c-m10 ] && streams=10
		[ "$1" = h2tls ] && url=https://$proxy_addr/
		taskset -c "$LOAD_CPU" h2load -t1 -c"$CONNS" -m"$streams" -D "$2" --log-file "$3.log" \
			--tls13-ciphers TLS_AES_128_GCM_SHA256 "$url" >"$3"
		;;
	tls)
		# Each s_time loops connect, full handshake, GET, close until timeout stops it; it
		# prints a * per new session, an r per resumed one. Exit status 124 is that stop.
		local i rc t0 t1 spids=()
		t0=$(date +%s%N)
		for i in $(seq "$TLS_CLIENTS"); do
			timeout "$2" taskset -c "$LOAD_CPU" openssl s_time -connect "$proxy_addr" -new -tls1_3 \
				-ciphersuites TLS_AES_128_GCM_SHA256 -time 86400 -www / >"$3.$i" 2>&1 &
			spids+=($!)
		done
		for i in $(seq "$TLS_CLIENTS"); do
			rc=0
			wait "${spids[$((i - 1))]}" || rc=$?
			printf '\nclient %d exit %d\n' "$i" "$rc" >>"$3.$i"
		done
		t1=$(date +%s%N)
		# The first line of each is "Collecting connection statistics for 86400 seconds".
		{
			for i in $(seq "$TLS_CLIENTS"); do sed 1d "$3.$i" && echo; done
			echo "elapsed $(((t1 - t0) / 1000000)) ms"
		} >"$3"
		;;
	esac
}

# to_ms converts one of wrk's durations (850.00us, 1.20ms, 2.00s, 1.00m) to milliseconds.
to_ms() {
	awk -v d="$1" 'BEGIN {
		v = d + 0
		if (d ~ /us$/) v /= 1000; else if (d ~ /ms$/) v *= 1; else if (d ~ /m$/) v *= 60000; else if (d ~ /s$/) v *= 1000
		printf "%.3f", v
	}'
}

# figures SCENARIO OUT prints "requests req/s p50-ms p99-ms note" from the load's output, or
# fails with the reason on stderr when the run saw errors. A wrk timeout only says the core was
# busy (the machine is shared); any other error or a non-2xx status means the proxy misbehaved
# and the figures would be meaningless.
figures() {
	local out
	out=$(<"$2")
	case $1 in
	get | paced | close | post | get1m)
		if grep -q Non-2xx <<<"$out" ||
			awk '/Socket errors/ { gsub(",", ""); if ($4 + $6 + $8 > 0) e = 1 } END { exit !e }' <<<"$out"; then
			echo "wrk saw errors" >&2
			return 1
		fi
		echo "$(awk '/requests in/ { print $1 }' <<<"$out")" \
			"$(awk '/Requests\/sec/ { print $2 }' <<<"$out")" \
			"$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")" \
			"$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")" \
			"$(awk '/Socket errors/ { print "(wrk timeouts: " $NF ")" }' <<<"$out")"
		;;
	h2c | h2c-m10 | h2tls)
		# requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
		# status codes: N 2xx, N 3xx, N 4xx, N 5xx
		local want=h2c
		[ "$1" = h2tls ] && want=h2
		if ! grep -qx "Application protocol: $want" <<<"$out" ||
			awk '/^requests:/ && $10 + $12 + $14 > 0 { e = 1 }
				/^status codes:/ && $5 + $7 + $9 > 0 { e = 1 } END { exit !e }' <<<"$out"; then
			echo "h2load saw errors or no $want" >&2
			return 1
		fi
		# Nearest-rank percentiles of the per-request times (µs) of the successful requests.
		awk '$2 >= 200 && $2 < 300 { print $3 }' "$2.log" | sort -n | awk -v reqs="$(awk '/^requests:/ { print $8 }' <<<"$out")" \
			-v rps="$(awk '/^finished in/ { print $4 }' <<<"$out")" '
			{ t[NR] = $1 }
			END {
				if (NR == 0) exit 1
				printf "%s %s %.3f %.3f\n", reqs, rps, t[int((NR * 50 + 99) / 100)] / 1000, t[int((NR * 99 + 99) / 100)] / 1000
			}'
		;;
	tls)
		# Every client must have run until timeout stopped it (124) and printed only *s.
		if awk '/^client / { if ($4 != 124) e = 1; next } /^elapsed / { next } /[^*]/ { e = 1 }
			END { exit !e }' <<<"$out"; then
			echo "s_time failed, or saw a resumed session" >&2
			return 1
		fi
		local conns ms
		conns=$(grep -v -e '^client ' -e '^elapsed ' <<<"$out" | tr -cd '*' | wc -c)
		ms=$(awk '/^elapsed/ { print $2 }' <<<"$out")
		[ "$conns" -gt 0 ] || { echo "s_time made no connection" >&2; return 1; }
		awk -v n="$conns" -v ms="$ms" -v c="$TLS_CLIENTS" 'BEGIN {
			printf "%d %.2f %.3f - (%d full TLS handshakes, none resumed)\n", n, n * 1000 / ms, c * ms / n, n
		}'
		;;
	esac
}

hz=$(getconf CLK_TCK)
results=$tmp/results
: >"$results"
failed=0

# measure SCENARIO NAME ROUND runs one proxy under one scenario, prints its figures and appends
# them to $results; a run with errors is reported and left out of the totals.
measure() {
	local scenario=$1 name=$2 round=$3 url
	start_proxy "$name" "$(mode "$scenario")"
	local pid=$proxy_pid
	read -r -a url <<<"$(proxy_url "$(mode "$scenario")")"
	if ! wait_up "${url[@]}"; then
		[ -f "$tmp/nginx-error.log" ] && cat "$tmp/nginx-error.log" >&2
		cat "$tmp/haproxy.log" >&2 2>/dev/null || true
		exit 1
	fi
	# s_time reads its responses without looking at them: check the one it will send once.
	if [ "$scenario" = tls ]; then
		local status
		status=$(printf 'GET / HTTP/1.0\r\n\r\n' | openssl s_client -quiet -connect "$proxy_addr" 2>/dev/null | head -1 || true)
		[[ $status == HTTP/1.?" 200 "* ]] || { echo "$name answers s_time's GET with: $status" >&2; exit 1; }
	fi
	# Warm up: connections, pools and the heap reach their steady state.
	load "$scenario" "$WARMUP" "$tmp/warmup"
	local t0 t1 fig reqs rps p50 p99 note hwm
	t0=$(cpu_ticks "$pid")
	load "$scenario" "$DURATION" "$tmp/out"
	t1=$(cpu_ticks "$pid")
	hwm=$(hwm_kb "$pid")
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	if ! fig=$(figures "$scenario" "$tmp/out"); then
		echo "$scenario $name: run left out:" >&2
		cat "$tmp/out" >&2
		failed=1
		return
	fi
	read -r reqs rps p50 p99 note <<<"$fig"
	local us
	us=$(awk -v t=$((t1 - t0)) -v hz="$hz" 'BEGIN { printf "%.0f", t * 1e6 / hz }')
	printf '%-7s %-14s %9s requests %8.0f req/s %7.2f µs CPU/request  p50 %7.2f ms  p99 %7s ms  peak RSS %6.1f MiB%s\n' \
		"$scenario" "$name" "$reqs" "$rps" "$(awk -v u="$us" -v n="$reqs" 'BEGIN { print u / n }')" \
		"$p50" "$(awk -v p="$p99" 'BEGIN { if (p == "-") print p; else printf "%.2f", p }')" \
		"$(awk -v k="$hwm" 'BEGIN { print k / 1024 }')" "${note:+ $note}"
	echo "$scenario $name $round $reqs $us $rps $p50 $p99 $hwm" >>"$results"
}

echo "proxy on core $PROXY_CPU; load ($CONNS connections, $TLS_CLIENTS for tls) for $DURATION after $WARMUP of warm-up and backends on core $LOAD_CPU; access log: $ACCESS_LOG"
echo "proxies: ${proxies[*]}; scenarios: ${scenarios[*]}; rounds: $ROUNDS"
want nginx && nginx -v 2>&1
want haproxy && haproxy -v 2>&1 | sed -n 1p
[[ " ${modes[*]} " == *" h1 "* ]] && { wrk -v 2>&1 || true; } | sed -n 1p
[[ " ${scenarios[*]} " == *" h2"* ]] && h2load --version
[[ " ${modes[*]} " == *" tls "* ]] && openssl version

taskset -c "$LOAD_CPU" "$tmp/demobackend" -listen "$backends" -size 1024 >/dev/null &
pids+=($!)
for b in ${backends//,/ }; do wait_up "http://$b/"; done
# Another run's backends on the same ports would answer wait_up too.
kill -0 "${pids[-1]}" 2>/dev/null || { echo "demobackend exited: are ports $PORT.. in use? Set PORT" >&2; exit 1; }

n=${#proxies[@]}
for round in $(seq "$ROUNDS"); do
	echo "round $round"
	for scenario in "${scenarios[@]}"; do
		for i in $(seq 0 $((n - 1))); do
			measure "$scenario" "${proxies[$(((i + round - 1) % n))]}" "$round"
		done
	done
done

# The summary: per scenario and proxy, CPU per request over all rounds (total CPU time over
# total requests), the mean req/s, the median p50 and p99 over the rounds, the largest peak RSS,
# and the CPU per request as a multiple of NGINX's. A p99 the load did not measure is "-".
echo
echo "all rounds ($ROUNDS × $DURATION, $CONNS connections, $TLS_CLIENTS for tls):"
awk -v order="${scenarios[*]}" -v porder="${proxies[*]}" '
function median(key,    k, i, j, t, a) {
	k = cnt[key]
	for (i = 1; i <= k; i++) if ((a[i] = vals[key, i]) == "-") return "-"
	for (i = 2; i <= k; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
	return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
}
{
	key = $1 SUBSEP $2
	req[key] += $4; us[key] += $5; rps[key] += $6; runs[key]++
	cnt[key "p50"]++; vals[key "p50", cnt[key "p50"]] = $7
	cnt[key "p99"]++; vals[key "p99", cnt[key "p99"]] = $8
	if ($9 > hwm[key]) hwm[key] = $9
}
END {
	ns = split(order, S, " "); np = split(porder, P, " ")
	printf "%-8s %-14s %12s %9s %9s %9s %13s %10s\n", "scenario", "proxy", "µs CPU/req", "req/s", "p50 ms", "p99 ms", "peak RSS MiB", "CPU/NGINX"
	for (s = 1; s <= ns; s++) {
		nk = S[s] SUBSEP "nginx"
		base = (nk in req) ? us[nk] / req[nk] : 0
		for (p = 1; p <= np; p++) {
			key = S[s] SUBSEP P[p]
			if (!(key in req)) { printf "%-8s %-14s %12s\n", S[s], P[p], "no run"; continue }
			c = us[key] / req[key]
			p99 = median(key "p99")
			printf "%-8s %-14s %12.2f %9.0f %9.2f %9s %13.1f %10s\n", S[s], P[p], c, rps[key] / runs[key],
				median(key "p50"), p99 == "-" ? p99 : sprintf("%.2f", p99), hwm[key] / 1024, base ? sprintf("%.2f", c / base) : "-"
		}
	}
}' "$results"

# The line our docs quote: sluice against httputil.ReverseProxy, keep-alive 1 KiB GET.
if grep -q '^get sluice ' "$results" && grep -q '^get stdlib ' "$results"; then
	awk '$1 == "get" && $2 == "sluice" { su += $5; sn += $4 }
		$1 == "get" && $2 == "stdlib" { tu += $5; tn += $4 }
		END {
			s = su / sn; t = tu / tn
			printf "all rounds: sluice %.2f µs CPU/request, stdlib %.2f µs CPU/request, ratio %.2f (target ≤ 0.80)\n", s, t, s / t
		}' "$results"
fi
# What TLS termination costs: the full handshakes one core of the proxy does per second, and
# the handshake's own CPU, a new connection with a handshake and one GET (tls) less a new
# connection with one GET (close); both close the connection after the response.
if grep -q '^tls ' "$results"; then
	awk -v porder="${proxies[*]}" '$1 == "tls" || $1 == "close" { us[$1, $2] += $5; req[$1, $2] += $4 }
		END {
			np = split(porder, P, " "); rate = ""; own = ""
			for (p = 1; p <= np; p++) {
				if (!req["tls", P[p]]) continue
				t = us["tls", P[p]] / req["tls", P[p]]
				rate = rate sprintf("%s %s %.0f", rate == "" ? "" : ",", P[p], 1e6 / t)
				if (req["close", P[p]])
					own = own sprintf("%s %s %.0f µs", own == "" ? "" : ",", P[p], t - us["close", P[p]] / req["close", P[p]])
			}
			print "all rounds: full TLS 1.3 handshakes per second of proxy CPU (1e6 / tls µs CPU/req):" rate
			if (own != "") print "all rounds: CPU per full TLS 1.3 handshake (tls less close):" own
		}' "$results"
fi
exit "$failed"
