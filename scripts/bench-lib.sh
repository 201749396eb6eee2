# bench-lib.sh holds the shell functions that scripts/bench-process.sh and scripts/bench-l4.sh
# share: running as root, and reading a proxy's CPU time and peak memory from /proc. Source it
# from the repository's root.

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

# want reports whether proxy $1 is in PROXIES.
want() {
	local p
	for p in "${proxies[@]}"; do [ "$p" = "$1" ] && return 0; done
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
