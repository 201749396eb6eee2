#!/usr/bin/env bash
# framing-compare.sh: runs internal/framing's request and response framing cases against
# sluice, NGINX and HAProxy side by side, each proxying to the same scripted upstream, and
# prints one row per case (ok / questionable / UNSAFE for each proxy) and the totals.
#
# It is not part of `make test`: it needs nginx and haproxy, which it installs from Debian
# (apt-get, as root or through sudo) when they are missing. Run it as `make framing-compare`.
#
# How: TestCompare (internal/framing/framing_test.go) starts the scripted upstream on
# 127.0.0.1:$FRAMING_UP_PORT and a sluice proxy in front of it; this script starts NGINX and
# HAProxy on loopback ports with configs it writes to a temporary directory, both proxying to
# that upstream with keep-alive (the production set-up in which framing bugs poison pools),
# and stops them at the end.
#
# Environment: FRAMING_UP_PORT (18090), FRAMING_NGINX_PORT (18081), FRAMING_HAPROXY_PORT
# (18082); FRAMING_CASES=substring runs only matching cases; FRAMING_VERBOSE=1 adds what each
# non-ok case saw.
set -euo pipefail
cd "$(dirname "$0")/.."

up_port=${FRAMING_UP_PORT:-18090}
nginx_port=${FRAMING_NGINX_PORT:-18081}
haproxy_port=${FRAMING_HAPROXY_PORT:-18082}
export PATH="$PATH:/usr/sbin:/sbin"

install_missing() {
	local pkgs=()
	command -v nginx >/dev/null 2>&1 || pkgs+=(nginx-light)
	command -v haproxy >/dev/null 2>&1 || pkgs+=(haproxy)
	[ ${#pkgs[@]} -eq 0 ] && return
	local sudo=
	[ "$(id -u)" = 0 ] || sudo=sudo
	echo "installing ${pkgs[*]} from Debian"
	$sudo apt-get update -qq
	if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}" >/dev/null; then
		# nginx-light is gone from newer Debian releases; plain nginx will do.
		pkgs=("${pkgs[@]/nginx-light/nginx}")
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}" >/dev/null
	fi
	command -v nginx >/dev/null 2>&1 && command -v haproxy >/dev/null 2>&1 || {
		echo "could not install nginx and haproxy: run 'apt-get install nginx-light haproxy' as root" >&2
		exit 1
	}
}
install_missing

tmp=$(mktemp -d /tmp/framing-compare.XXXXXX)
chmod 0755 "$tmp"
mkdir -p "$tmp/nginx-temp" && chmod 0777 "$tmp/nginx-temp"
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$tmp"
}
trap cleanup EXIT

cat >"$tmp/nginx.conf" <<CONF
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log warn;
events { worker_connections 256; }
http {
	access_log off;
	client_body_temp_path $tmp/nginx-temp/body;
	proxy_temp_path $tmp/nginx-temp/proxy;
	fastcgi_temp_path $tmp/nginx-temp/fastcgi;
	uwsgi_temp_path $tmp/nginx-temp/uwsgi;
	scgi_temp_path $tmp/nginx-temp/scgi;
	upstream framing { server 127.0.0.1:$up_port; keepalive 16; }
	server {
		listen 127.0.0.1:$nginx_port;
		location / {
			proxy_pass http://framing;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Host \$host;
			proxy_set_header X-Forwarded-For \$remote_addr;
			proxy_connect_timeout 2s;
			proxy_read_timeout 5s;
			proxy_send_timeout 5s;
		}
	}
}
CONF

cat >"$tmp/haproxy.cfg" <<CONF
global
	maxconn 256
defaults
	mode http
	option forwardfor
	timeout connect 2s
	timeout client 5s
	timeout server 5s
	timeout http-request 5s
frontend framing
	bind 127.0.0.1:$haproxy_port
	default_backend framing
backend framing
	server up 127.0.0.1:$up_port
CONF

nginx -v 2>&1
haproxy -v 2>&1 | head -1
nginx -p "$tmp" -c "$tmp/nginx.conf" -e "$tmp/nginx-error.log" -g 'daemon off;' &
pids+=($!)
haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
pids+=($!)

# Wait for both to listen, at most 10s.
for port in "$nginx_port" "$haproxy_port"; do
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
		sleep 0.1
	done
	(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "nothing listens on $port" >&2; cat "$tmp"/*.log >&2; exit 1; }
done

FRAMING_UPSTREAM=127.0.0.1:$up_port \
FRAMING_TARGETS=nginx=127.0.0.1:$nginx_port,haproxy=127.0.0.1:$haproxy_port \
	go test -count=1 -timeout 30m -run '^TestCompare$' -v ./internal/framing/ |
	sed -e 's/^    framing_test.go:[0-9]*: //' -e 's/^        //'
