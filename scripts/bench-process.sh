#!/usr/bin/env bash
# bench-process.sh measures the CPU time a whole proxy process spends per request, side by side
# for four proxies in one run: the sluice quickstart, a plain httputil.ReverseProxy
# (internal/cmd/stdproxy, "stdlib"), NGINX and HAProxy, each in front of the same three backends
# (internal/cmd/demobackend), under the same wrk load.
#
# The proxy under test is pinned to core PROXY_CPU; wrk and the backends share core LOAD_CPU.
# The CPU figure is the proxy's utime+stime from /proc/PID/stat over the run (summed over its
# processes: NGINX's master and worker), divided by the requests wrk completed: on a shared
# machine that is much steadier than requests per second. Each run starts a fresh proxy, warms
# it up with the same load for WARMUP, then measures for DURATION; peak RSS is the largest
# VmHWM among the proxy's processes at the end of the run. Rounds rotate the order of the
# proxies, so that none always runs first or last.
#
# Scenarios (SCENARIOS picks a subset, in this order):
#   get     keep-alive GET, 1 KiB response
#   close   GET with Connection: close (a new client connection per request), 1 KiB response
#   post    keep-alive POST with a 1 KiB body, 1 KiB response
#   get1m   keep-alive GET, 1 MiB response (demobackend's ?size=1048576)
# Not measured yet: HTTP/2 (h2c or TLS) on the client side, TLS to the proxy.
#
# NGINX and HAProxy get configs written to a temporary directory (upstream keep-alive to the
# three backends, round robin, one worker / one thread, no logging unless ACCESS_LOG=true) and
# run unprivileged. When they are missing, the script installs them from Debian if it runs as
# root (or has password-less sudo), else skips them with a line saying so.
#
#   scripts/bench-process.sh                          # 3 rounds of 5s per scenario and proxy
#   ROUNDS=1 DURATION=3s scripts/bench-process.sh
#   SCENARIOS=get PROXIES=sluice,stdlib scripts/bench-process.sh
#   ACCESS_LOG=true scripts/bench-process.sh          # every proxy logs each request to /dev/null
#
# Environment: DURATION (5s), WARMUP (2s), CONNS (64), ROUNDS (3), SCENARIOS (get close post
# get1m), PROXIES (sluice stdlib nginx haproxy), PORT (first of four ports, 19080), ACCESS_LOG
# (false), PROXY_CPU (0), LOAD_CPU (1). Lists may be separated by spaces or commas.
set -euo pipefail

DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-2s}
CONNS=${CONNS:-64}
ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-get close post get1m}
PROXIES=${PROXIES:-sluice stdlib nginx haproxy}
PORT=${PORT:-19080}
ACCESS_LOG=${ACCESS_LOG:-false}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
export PATH="$PATH:/usr/sbin:/sbin"

cd "$(dirname "$0")/.."

read -r -a scenarios <<<"${SCENARIOS//,/ }"
read -r -a proxies <<<"${PROXIES//,/ }"
for s in "${scenarios[@]}"; do
	case $s in get | close | post | get1m) ;; *)
		echo "SCENARIOS: unknown scenario $s (want get, close, post, get1m)" >&2
		exit 2
		;;
	esac
done
for p in "${proxies[@]}"; do
	case $p in sluice | sluice-nethttp | stdlib | nginx | haproxy) ;; *)
		echo "PROXIES: unknown proxy $p (want sluice, stdlib, nginx, haproxy)" >&2
		exit 2
		;;
	esac
done

# as_root runs a command as root: directly, through password-less sudo, or not at all.
as_root() {
	if [ "$(id -u)" = 0 ]; then
		"$@"
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
		sudo -n "$@"
	else
		return 1
	fi
}

if ! command -v wrk >/dev/null; then
	echo "installing wrk from Debian" >&2
	{ as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq wrk >/dev/null; } ||
		{ echo "could not install wrk: run 'apt-get install wrk' as root" >&2; exit 1; }
fi

# want reports whether proxy $1 is in PROXIES.
want() {
	local p
	for p in "${proxies[@]}"; do [ "$p" = "$1" ] && return 0; done
	return 1
}

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
{ want sluice || want sluice-nethttp; } && go build -o "$tmp/quickstart" ./examples/quickstart
want stdlib && go build -o "$tmp/stdproxy" ./internal/cmd/stdproxy

proxy_addr=127.0.0.1:$PORT
backends=127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2)),127.0.0.1:$((PORT + 3))

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
# Go proxies stream, and a disk write per 1 MiB response would measure the disk.
cat >"$tmp/nginx.conf" <<CONF
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
		listen $proxy_addr;
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

cat >"$tmp/haproxy.cfg" <<CONF
global
	nbthread 1
	maxconn 4096
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
	bind $proxy_addr
	default_backend backends
backend backends
	balance roundrobin
$(n=0; for b in ${backends//,/ }; do n=$((n + 1)); echo "	server b$n $b"; done)
CONF

# A 1 KiB request body for the post scenario.
cat >"$tmp/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = string.rep("x", 1024)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA

# wait_up polls url until it answers 200, for at most 10 seconds.
wait_up() {
	for _ in $(seq 100); do
		curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "$1 did not come up" >&2
	return 1
}

# tree prints a process and its children (NGINX's worker).
tree() {
	echo "$1"
	pgrep -P "$1" || true
}

# cpu_ticks prints utime+stime of a process and its children, in clock ticks. The command name
# may hold spaces, so fields are counted from the closing parenthesis.
cpu_ticks() {
	local sum=0 p
	for p in $(tree "$1"); do
		sum=$((sum + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')))
	done
	echo "$sum"
}

# hwm_kb prints the largest VmHWM (peak resident set) among a process and its children, in KiB.
hwm_kb() {
	local max=0 p kb
	for p in $(tree "$1"); do
		kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$p/status")
		[ "$kb" -gt "$max" ] && max=$kb
	done
	echo "$max"
}

# start_proxy NAME starts proxy NAME pinned to PROXY_CPU and sets proxy_pid.
start_proxy() {
	case $1 in
	sluice)
		taskset -c "$PROXY_CPU" "$tmp/quickstart" -listen "$proxy_addr" -backends "$backends" \
			-access-log="$ACCESS_LOG" >/dev/null 2>&1 &
		;;
	sluice-nethttp)
		taskset -c "$PROXY_CPU" "$tmp/quickstart" -listen "$proxy_addr" -backends "$backends" \
			-access-log="$ACCESS_LOG" -server net/http >/dev/null 2>&1 &
		;;
	stdlib)
		taskset -c "$PROXY_CPU" "$tmp/stdproxy" -listen "$proxy_addr" -backends "$backends" \
			-access-log="$ACCESS_LOG" >/dev/null 2>&1 &
		;;
	nginx)
		taskset -c "$PROXY_CPU" nginx -p "$tmp" -c "$tmp/nginx.conf" -e "$tmp/nginx-error.log" \
			-g 'daemon off;' >/dev/null 2>&1 &
		;;
	haproxy)
		taskset -c "$PROXY_CPU" haproxy -db -f "$tmp/haproxy.cfg" >/dev/null 2>"$tmp/haproxy.log" &
		;;
	esac
	proxy_pid=$!
	pids+=("$proxy_pid")
}

# wrk_load SCENARIO DURATION runs wrk with the scenario's request against the proxy.
wrk_load() {
	local args=(-t1 -c"$CONNS" -d"$2" --timeout 10s --latency) path=/
	case $1 in
	close) args+=(-H 'Connection: close') ;;
	post) args+=(-s "$tmp/post.lua") ;;
	get1m) path='/?size=1048576' ;;
	esac
	taskset -c "$LOAD_CPU" wrk "${args[@]}" "http://$proxy_addr$path"
}

# to_ms converts one of wrk's durations (850.00us, 1.20ms, 2.00s, 1.00m) to milliseconds.
to_ms() {
	awk -v d="$1" 'BEGIN {
		v = d + 0
		if (d ~ /us$/) v /= 1000; else if (d ~ /ms$/) v *= 1; else if (d ~ /m$/) v *= 60000; else if (d ~ /s$/) v *= 1000
		printf "%.3f", v
	}'
}

hz=$(getconf CLK_TCK)
results=$tmp/results
: >"$results"
failed=0

# measure SCENARIO NAME ROUND runs one proxy under one scenario, prints its figures and appends
# them to $results.
measure() {
	local scenario=$1 name=$2 round=$3
	start_proxy "$name"
	local pid=$proxy_pid
	if ! wait_up "http://$proxy_addr/"; then
		[ -f "$tmp/nginx-error.log" ] && cat "$tmp/nginx-error.log" >&2
		cat "$tmp/haproxy.log" >&2 2>/dev/null || true
		exit 1
	fi
	# Warm up: connections, pools and the heap reach their steady state.
	wrk_load "$scenario" "$WARMUP" >/dev/null
	local t0 t1 out reqs errs hwm
	t0=$(cpu_ticks "$pid")
	out=$(wrk_load "$scenario" "$DURATION")
	t1=$(cpu_ticks "$pid")
	hwm=$(hwm_kb "$pid")
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
	# A timeout only says the core was busy (the machine is shared); any other error or a
	# non-2xx status means the proxy misbehaved and the figure would be meaningless: the run
	# is reported and left out of the totals.
	errs=$(awk '/Non-2xx/ { print $NF }
		/Socket errors/ { gsub(",", ""); if ($4 + $6 + $8 > 0) print "socket" }' <<<"$out")
	if [ -n "$errs" ]; then
		echo "$scenario $name: wrk saw errors, run left out:" >&2
		echo "$out" >&2
		failed=1
		return
	fi
	local us rps p50 p99
	us=$(awk -v t=$((t1 - t0)) -v hz="$hz" 'BEGIN { printf "%.0f", t * 1e6 / hz }')
	rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
	p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
	p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
	printf '%-6s %-8s %9s requests %8.0f req/s %7.2f µs CPU/request  p50 %7.2f ms  p99 %7.2f ms  peak RSS %6.1f MiB%s\n' \
		"$scenario" "$name" "$reqs" "$rps" "$(awk -v u="$us" -v n="$reqs" 'BEGIN { print u / n }')" \
		"$p50" "$p99" "$(awk -v k="$hwm" 'BEGIN { print k / 1024 }')" \
		"$(awk '/Socket errors/ { print " (wrk timeouts: " $NF ")" }' <<<"$out")"
	echo "$scenario $name $round $reqs $us $rps $p50 $p99 $hwm" >>"$results"
}

echo "proxy on core $PROXY_CPU; wrk -t1 -c$CONNS -d$DURATION (warm-up $WARMUP) and backends on core $LOAD_CPU; access log: $ACCESS_LOG"
echo "proxies: ${proxies[*]}; scenarios: ${scenarios[*]}; rounds: $ROUNDS"
want nginx && nginx -v 2>&1
want haproxy && haproxy -v 2>&1 | sed -n 1p

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
# and the CPU per request as a multiple of NGINX's.
echo
echo "all rounds ($ROUNDS × $DURATION, $CONNS connections):"
awk -v order="${scenarios[*]}" -v porder="${proxies[*]}" '
function median(key,    k, i, j, t, a) {
	k = cnt[key]
	for (i = 1; i <= k; i++) a[i] = vals[key, i]
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
	printf "%-8s %-8s %12s %9s %9s %9s %13s %10s\n", "scenario", "proxy", "µs CPU/req", "req/s", "p50 ms", "p99 ms", "peak RSS MiB", "CPU/NGINX"
	for (s = 1; s <= ns; s++) {
		nk = S[s] SUBSEP "nginx"
		base = (nk in req) ? us[nk] / req[nk] : 0
		for (p = 1; p <= np; p++) {
			key = S[s] SUBSEP P[p]
			if (!(key in req)) { printf "%-8s %-8s %12s\n", S[s], P[p], "no run"; continue }
			c = us[key] / req[key]
			printf "%-8s %-8s %12.2f %9.0f %9.2f %9.2f %13.1f %10s\n", S[s], P[p], c, rps[key] / runs[key],
				median(key "p50"), median(key "p99"), hwm[key] / 1024, base ? sprintf("%.2f", c / base) : "-"
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
exit "$failed"
