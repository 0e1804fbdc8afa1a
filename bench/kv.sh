#!/bin/sh
# bench/kv.sh - examples/kv-server against Debian's redis-server (single
# threaded, the natural rival), both driven by redis-benchmark, side by side
# as ratios: GET and SET, without pipelining and with 16 requests a batch.
# The server runs on CPU 0, redis-benchmark on CPU 1; each figure is the
# median of RUNS runs (3; 1 with BENCH_QUICK=1).  Run by bench/run.sh after
# the main table, or alone from the top of the tree after make.  Installs
# redis-server and redis-tools when missing and running as root.
set -u
runs=3
n=200000
[ "${BENCH_QUICK:-0}" = 1 ] && runs=1 && n=100000
port=${KV_BENCH_PORT:-17950}

say() { printf 'kv: %s\n' "$*" >&2; }

if ! command -v redis-server >/dev/null 2>&1 ||
   ! command -v redis-benchmark >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		say "installing redis-server and redis-tools"
		DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server \
			redis-tools >/dev/null 2>&1
	fi
fi
if ! command -v redis-server >/dev/null 2>&1 ||
   ! command -v redis-benchmark >/dev/null 2>&1; then
	say "no redis-server or redis-benchmark: skipping the kv benchmark"
	exit 0
fi

# Pinning is a prefix, not a function: a function run with & is a subshell,
# whose pid a kill would stop while the server it started lived on.
if command -v taskset >/dev/null 2>&1; then
	pin_server='taskset -c 0'
	pin_load='taskset -c 1'
else
	pin_server=
	pin_load=
fi

answers() { redis-cli -p "$port" PING >/dev/null 2>&1; }

# Starts server $1 on $port; pid is the server's own.  Refuses a port that
# answers already: a server left over would be measured in place of $1.
start() {
	if answers; then
		say "port $port answers before $1 starts: stop what listens there"
		return 1
	fi
	case $1 in
	kv) $pin_server examples/kv-server -h 127.0.0.1 -p "$port" \
		>/dev/null 2>&1 & ;;
	redis) $pin_server redis-server --port "$port" --bind 127.0.0.1 \
		--save '' --appendonly no --daemonize no >/dev/null 2>&1 & ;;
	esac
	pid=$!
	i=0
	until answers; do
		i=$((i + 1))
		if [ "$i" -gt 100 ] || ! kill -0 "$pid" 2>/dev/null; then
			say "$1 did not start"
			stop
			return 1
		fi
		sleep 0.05
	done
}

stop() {
	kill -TERM "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	i=0
	while answers && [ "$i" -lt 100 ]; do
		i=$((i + 1))
		sleep 0.05
	done
}

# rps SERVER TEST PIPELINE: requests per second, median of the runs.
rps() {
	for r in $(seq "$runs"); do
		start "$1" || return 1
		$pin_load redis-benchmark -p "$port" -t "$2" -n "$n" -P "$3" -q \
			2>/dev/null | tr '\r' '\n' |
			awk -F'[: ]+' '/requests per second/ { print $2 }' | tail -n 1
		stop
	done | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

printf '\n'
printf 'kv (redis-benchmark -n %s, %s run(s), median) | kv-server rps | redis-server rps | kv/redis\n' "$n" "$runs"
for p in 1 16; do
	for t in get set; do
		k=$(rps kv "$t" "$p")
		r=$(rps redis "$t" "$p")
		ratio=$(awk -v a="$k" -v b="$r" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
		printf '%s -P %-2s | %s | %s | %s\n' "$(echo "$t" | tr a-z A-Z)" "$p" "$k" "$r" "$ratio"
	done
done
