#!/bin/sh
#
# examples/echo-demo.sh - the echo server and client together (make demo).
#
# Starts examples/echo-server on 127.0.0.1, port $ECHO_PORT (default 7000;
# the next few ports if that one is taken), runs examples/echo-client twice
# against it (100 connections x 1000 messages of 64 B, then 10 x 100 of
# 16 KiB, every byte checked), then stops the server with SIGTERM and checks
# that it exits 0.  Exits non-zero on any failure.  Run it from anywhere
# after make.

cd "$(dirname "$0")/.." || exit 2

server=examples/echo-server
client=examples/echo-client
for prog in "$server" "$client"; do
	if [ ! -x "$prog" ]; then
		printf 'echo-demo: %s is missing: run make first\n' "$prog" >&2
		exit 2
	fi
done

port=${ECHO_PORT:-7000}
case $port in
'' | *[!0-9]*)
	printf 'echo-demo: ECHO_PORT must be a port number, not "%s"\n' \
		"$port" >&2
	exit 2
	;;
esac

log=$(mktemp "${TMPDIR:-/tmp}/echo-demo.XXXXXX") || exit 2
pid=
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup()
{
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	fi
	rm -f "$log"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 141' PIPE
trap 'exit 143' TERM

# nap: a tenth of a second where sleep takes fractions, else a second.
nap()
{
	sleep 0.1 2>/dev/null || sleep 1
}

# start PORT: 0 once the server listens on PORT, 1 if the port is taken,
# 2 on any other failure (the server's words are in $log).
start()
{
	: >"$log"
	"$server" -h 127.0.0.1 -p "$1" 2>"$log" &
	pid=$!
	tries=0
	while [ "$tries" -lt 100 ]; do
		if grep -q 'listening on' "$log"; then
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid" 2>/dev/null
			pid=
			grep -q 'in use' "$log" && return 1
			return 2
		fi
		nap
		tries=$((tries + 1))
	done
	return 2
}

last=$((port + 9))
while :; do
	start "$port"
	case $? in
	0)
		break
		;;
	1)
		if [ "$port" -ge "$last" ] || [ "$port" -ge 65535 ]; then
			printf '%s: ports %s to %s are all taken: %s\n' \
				echo-demo "${ECHO_PORT:-7000}" "$port" \
				'set ECHO_PORT' >&2
			exit 1
		fi
		port=$((port + 1))
		;;
	*)
		printf 'echo-demo: %s did not start:\n' "$server" >&2
		sed 's/^/    /' "$log" >&2
		exit 1
		;;
	esac
done

printf 'echo-demo: %s listening on 127.0.0.1:%s (pid %s); running %s twice\n' \
	"$server" "$port" "$pid" "$client"

fail=0
for args in "-c 100 -n 1000 -s 64" "-c 10 -n 100 -s 16384"; do
	printf '  %s %s: ' "$client" "$args"
	# shellcheck disable=SC2086 # $args is a list of options: split it
	if ! "$client" -h 127.0.0.1 -p "$port" $args; then
		printf 'echo-demo: %s %s failed\n' "$client" "$args" >&2
		fail=1
	fi
done

# A server that ignores SIGTERM gets SIGKILL 5 s later, and fails the demo.
kill -TERM "$pid"
(
	sleep 5
	kill -KILL "$pid"
) >/dev/null 2>&1 &
watchdog=$!
wait "$pid"
rc=$?
kill "$watchdog" 2>/dev/null
pid=
if [ "$rc" -ne 0 ]; then
	printf 'echo-demo: %s exited %s after SIGTERM, not 0:\n' "$server" \
		"$rc" >&2
	sed 's/^/    /' "$log" >&2
	exit 1
fi
if [ "$fail" -ne 0 ]; then
	exit 1
fi
printf 'echo-demo: SIGTERM: the server shut down cleanly (exit 0)\n'
exit 0
