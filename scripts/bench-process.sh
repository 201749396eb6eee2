#!/usr/bin/env bash
# bench-process.sh measures the CPU time a whole proxy process spends per request: the sluice
# quickstart against a plain httputil.ReverseProxy (internal/cmd/stdproxy), each in front of
# the same three backends (internal/cmd/demobackend, 1 KiB responses).
#
# The proxy under test is pinned to core 0; wrk and the backends share core 1. The figure is
# the proxy's utime+stime from /proc/PID/stat over the run, divided by the requests wrk
# completed: on a shared machine that is much steadier than requests per second.
#
#   scripts/bench-process.sh                      # 3 rounds of 10s each, alternating
#   ROUNDS=1 DURATION=5s scripts/bench-process.sh
#   ACCESS_LOG=true scripts/bench-process.sh      # with both proxies writing an access log
#
# Environment: DURATION (10s), CONNS (32), ROUNDS (3), PORT (first of four ports, 19080),
# ACCESS_LOG (false), PROXY_CPU (0), LOAD_CPU (1).
set -euo pipefail

DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-19080}
ACCESS_LOG=${ACCESS_LOG:-false}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null; then
	echo "installing wrk from Debian" >&2
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null ||
		{ echo "could not install wrk: run 'apt-get install wrk' as root" >&2; exit 1; }
fi

bin=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$bin"
}
trap cleanup EXIT

go build -o "$bin/quickstart" ./examples/quickstart
go build -o "$bin/stdproxy" ./internal/cmd/stdproxy
go build -o "$bin/demobackend" ./internal/cmd/demobackend

proxy_addr=127.0.0.1:$PORT
backends=127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2)),127.0.0.1:$((PORT + 3))

# wait_up polls url until it answers 200, for at most 10 seconds.
wait_up() {
	for _ in $(seq 100); do
		curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "$1 did not come up" >&2
	return 1
}

# cpu_ticks prints utime+stime of a process, in clock ticks. The command name may hold spaces,
# so fields are counted from the closing parenthesis.
cpu_ticks() {
	sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

taskset -c "$LOAD_CPU" "$bin/demobackend" -listen "$backends" -size 1024 >/dev/null &
pids+=($!)
for b in ${backends//,/ }; do wait_up "http://$b/"; done

hz=$(getconf CLK_TCK)
declare -A total_us total_req

# measure NAME CMD... runs one proxy, loads it and prints its CPU time per request.
measure() {
	local name=$1
	shift
	taskset -c "$PROXY_CPU" "$@" >/dev/null 2>&1 &
	local pid=$!
	pids+=("$pid")
	wait_up "http://$proxy_addr/"
	# Warm up: connections, pools and the heap reach their steady state.
	taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s --timeout 10s "http://$proxy_addr/" >/dev/null
	local t0 t1 out reqs errs
	t0=$(cpu_ticks "$pid")
	out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"$DURATION" --timeout 10s "http://$proxy_addr/")
	t1=$(cpu_ticks "$pid")
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
	# A timeout only says the core was busy (the machine is shared); any other error or a
	# non-2xx status means the proxy misbehaved and the figure would be meaningless.
	errs=$(awk '/Non-2xx/ { print $NF }
		/Socket errors/ { gsub(",", ""); if ($4 + $6 + $8 > 0) print "socket" }' <<<"$out")
	if [ -n "$errs" ]; then
		echo "$name: wrk saw errors:" >&2
		echo "$out" >&2
		exit 1
	fi
	local us
	us=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$reqs" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')
	printf '%-8s %9s requests  %8.0f req/s  %6s µs CPU/request  %s\n' "$name" "$reqs" \
		"$(awk '/Requests\/sec/ { print $2 }' <<<"$out")" "$us" \
		"$(awk '/Socket errors/ { print "(wrk timeouts: " $NF ")" }' <<<"$out")"
	total_us[$name]=$(awk -v a="${total_us[$name]:-0}" -v t=$((t1 - t0)) -v hz="$hz" 'BEGIN { print a + t * 1e6 / hz }')
	total_req[$name]=$((${total_req[$name]:-0} + reqs))
}

echo "proxy on core $PROXY_CPU; wrk -t1 -c$CONNS -d$DURATION and backends on core $LOAD_CPU; access log: $ACCESS_LOG"
for round in $(seq "$ROUNDS"); do
	echo "round $round"
	measure sluice "$bin/quickstart" -listen "$proxy_addr" -backends "$backends" -access-log="$ACCESS_LOG"
	measure stdlib "$bin/stdproxy" -listen "$proxy_addr" -backends "$backends" -access-log="$ACCESS_LOG"
done

awk -v su="${total_us[sluice]}" -v sn="${total_req[sluice]}" \
	-v tu="${total_us[stdlib]}" -v tn="${total_req[stdlib]}" 'BEGIN {
	s = su / sn; t = tu / tn
	printf "all rounds: sluice %.2f µs CPU/request, stdlib %.2f µs CPU/request, ratio %.2f (target ≤ 0.80)\n", s, t, s / t
}'
