#!/bin/sh
#
# bench/before-after.sh - the switch-cost rows (issue 16) of two builds of
# corio, alternated in one run, each beside the same baselines.
#
#	sh bench/before-after.sh OLD [ROUNDS]	(default ROUNDS: 3)
#
# OLD is another built checkout of corio (./configure && make bench there),
# for example the commit before a change: git worktree add /tmp/old HEAD~3.
# Each round runs, for OLD and then for this tree:
#
#	micro     bench/micro (every case, each beside its baseline)
#	echo      examples/echo-server against bench/echo-uring (the liburing
#	          callback server), 100 connections x 64 B, 3 s each, loaded by
#	          this tree's bench/echo-load on the other CPU
#	sleep     100,000 sleeps of bench/sleep-corio against bench/sleep-uring
#	          and the page-fault floor (bench/pagefault), as bench/run.sh
#
# and prints one line per row and build with the ratio to its baseline, so
# that only ratios measured minutes apart are compared.  Run it with nothing
# else busy.

old=${1:?usage: sh bench/before-after.sh OLD [ROUNDS]}
rounds=${2:-3}
new=$(cd "$(dirname "$0")/.." && pwd)
old=$(cd "$old" && pwd) || exit 2

for tree in "$old" "$new"; do
	for prog in bench/micro bench/echo-uring bench/sleep-corio \
		bench/sleep-uring bench/pagefault examples/echo-server; do
		if [ ! -x "$tree/$prog" ]; then
			printf 'before-after: %s/%s is not built\n' "$tree" "$prog" >&2
			exit 2
		fi
	done
done
load=$new/bench/echo-load
[ -x "$load" ] || { printf 'before-after: build bench/echo-load\n' >&2; exit 2; }

if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
	pin0='taskset -c 0'
	pin1='taskset -c 1'
else
	pin0=
	pin1=
fi
port=$((18000 + $$ % 900))

# kv KEY LINE: the value of KEY=value in LINE.
kv()
{
	printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}

# echo_rt CMD...: "rtps us_per_rt" of a server started with CMD.
echo_rt()
{
	port=$((port + 1))
	# shellcheck disable=SC2086,SC2068 # split on purpose
	$pin0 "$@" -p "$port" 2>/tmp/before-after.$$ &
	pid=$!
	i=0
	while [ "$i" -lt 100 ] && ! grep -q listening /tmp/before-after.$$; do
		sleep 0.1
		i=$((i + 1))
	done
	line=$($pin1 "$load" -h 127.0.0.1 -p "$port" -c 100 -s 64 -d 3 \
		-w 0.5 -P "$pid" -t 60)
	kill -TERM "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	rm -f /tmp/before-after.$$
	printf '%s %s\n' "$(kv rtps "$line")" "$(kv srv_us_per_rt "$line")"
}

sleep_secs()
{
	# shellcheck disable=SC2086
	line=$($pin0 "$@")
	v=$(kv wall_s "$line")
	printf '%s\n' "${v:-$(kv secs "$line")}"
}

r=1
while [ "$r" -le "$rounds" ]; do
	for tree in "$old" "$new"; do
		which=new
		[ "$tree" = "$old" ] && which=old
		cd "$tree" || exit 2
		$pin0 bench/micro -r 5 | sed "s/^/round=$r build=$which /"
		set -- $(echo_rt examples/echo-server -h 127.0.0.1)
		c_rt=$1 c_us=$2
		set -- $(echo_rt bench/echo-uring)
		u_rt=$1 u_us=$2
		awk -v r="$r" -v w="$which" -v a="$c_rt" -v b="$u_rt" \
			-v c="$c_us" -v d="$u_us" 'BEGIN {
			printf "round=%s build=%s echo 100x64B corio_rtps=%s uring_rtps=%s ratio=%.2f cpu_ratio=%.2f\n",
				r, w, a, b, a / b, c / d }'
		s_c=$(sleep_secs bench/sleep-corio -n 100000)
		s_u=$(sleep_secs bench/sleep-uring -n 100000)
		s_f=$(sleep_secs bench/pagefault -n 100000 -s $((64 * 1024 + 4096)))
		awk -v r="$r" -v w="$which" -v c="$s_c" -v u="$s_u" -v f="$s_f" \
			'BEGIN {
			printf "round=%s build=%s sleep 100k corio_s=%s uring_s=%s floor_s=%s ratio_uring=%.2f ratio_floor=%.2f\n",
				r, w, c, u, f, c / u, c / (u + f) }'
	done
	r=$((r + 1))
done
