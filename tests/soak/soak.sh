#!/bin/sh
# soak.sh - make soak: examples/echo-server under churning connections.
#
# Starts the echo server, runs tests/soak/soak-client with 1000 tasks for
# SOAK_SECONDS (default 60), samples the server's open fds and RSS every
# 5 s, and fails on a client error, on fds left open after the clients
# leave, on RSS that grows after the warm-up by more than a quarter, or on
# a server that does not exit 0 on SIGTERM.
set -u
secs=${SOAK_SECONDS:-60}
conns=${SOAK_CONNS:-1000}
port=${SOAK_PORT:-17990}
log=$(mktemp)
ulimit -n 20000 2>/dev/null || true

examples/echo-server -h 127.0.0.1 -p "$port" 2>"$log" &
pid=$!
i=0
until grep -q listening "$log"; do
	i=$((i + 1))
	[ "$i" -gt 50 ] && { echo "soak: the server did not start"; cat "$log"; exit 1; }
	sleep 0.1
done
fds() { ls /proc/"$pid"/fd | wc -l; }
rss() { awk '/^VmRSS/ { print $2 }' /proc/"$pid"/status; }
fd0=$(fds)
echo "soak: echo-server pid $pid: $fd0 fds, $(rss) KiB RSS before; $conns tasks for $secs s"

tests/soak/soak-client -p "$port" -c "$conns" -t "$secs" &
cpid=$!
t=0
warm=""
peak=0
while kill -0 "$cpid" 2>/dev/null; do
	sleep 5
	t=$((t + 5))
	r=$(rss)
	[ -n "$r" ] || break
	echo "soak: t=${t}s fds=$(fds) rss=${r}KiB"
	[ "$t" -eq 10 ] && warm=$r
	[ -n "$warm" ] && [ "$r" -gt "$peak" ] && peak=$r
done
wait "$cpid"
cstatus=$?
sleep 1
fd1=$(fds)
r1=$(rss)
echo "soak: after the clients left: $fd1 fds (before: $fd0), $r1 KiB RSS (after warm-up: ${warm:-?}, peak since: $peak)"
kill -TERM "$pid"
wait "$pid"
sstatus=$?
rm -f "$log"
status=0
[ "$cstatus" -eq 0 ] || { echo "soak: FAIL: the client saw errors"; status=1; }
[ "$fd1" -le "$fd0" ] || { echo "soak: FAIL: fds grew from $fd0 to $fd1"; status=1; }
if [ -n "$warm" ] && [ "$peak" -gt $((warm + warm / 4)) ]; then
	echo "soak: FAIL: RSS grew after the warm-up ($warm -> $peak KiB)"
	status=1
fi
[ "$sstatus" -eq 0 ] || { echo "soak: FAIL: the server exited $sstatus"; status=1; }
[ "$status" -eq 0 ] && echo "soak: PASS"
exit "$status"
