#!/bin/sh
#
# bench/tls-instr.sh - TLS echo servers' user-space instructions per round
# trip, counted by callgrind: examples/echo-server --tls against
# bench/echo-tls-openssl (the nginx-style baseline of bench/tls.sh).
#
#   sh bench/tls-instr.sh    after make bench (bench/run.sh runs it in
#                            its tls section)
#
# Why beside tls.sh: on a shared VM, CPU time per round trip moves by
# 10-20% from one run to the next, more than the differences worth
# measuring between two TLS servers; an instruction count does not move.
# It sees user space only: the kernel's share (the loopback TCP, io_uring
# or epoll) is what tls.sh's cpu/rt adds.  callgrind counts a rep movsb
# by its iterations here (valgrind's CPU has no ERMS), so a copy counts
# by its size, as its time does.
#
# Each server runs under valgrind --tool=callgrind twice per load, with a
# fresh process each time: a client run of CONNS connections and 1 round
# trip each, and one of CONNS x N; instructions per round trip = the
# difference of their totals over the difference of round trips, which
# takes the handshakes, start-up and exit out.  Loads: 20 x 64 B (300
# round trips each) and 10 x 16 KiB (100 each), loaded by
# examples/echo-client --tls (not under valgrind).  The corio/openssl
# ratio is reported beside; no target (tls.sh has them).
#
# Environment: TLS_INSTR_SCALE multiplies the round trips (default 1).
# Without valgrind, or built without libssl, it says so and exits 0.
# Ports 19000-19999.

cd "$(dirname "$0")/.." || exit 2

say()
{
	printf '%s\n' "$*" >&2
}

if ! grep -q '^HAVE_TLS = 1' config.mk 2>/dev/null; then
	say "tls-instr.sh: corio was configured without libssl: no rows"
	exit 0
fi
if ! command -v valgrind >/dev/null 2>&1 ||
   ! command -v callgrind_annotate >/dev/null 2>&1; then
	say "tls-instr.sh: no valgrind (callgrind): no rows"
	exit 0
fi
for prog in examples/echo-client examples/echo-server bench/echo-tls-openssl; do
	if [ ! -x "$prog" ]; then
		say "tls-instr.sh: $prog is missing: run make bench first"
		exit 2
	fi
done

scale=${TLS_INSTR_SCALE:-1}
tmp=$(mktemp -d) || exit 2
server_pid=
cleanup()
{
	[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 2' INT TERM

cert=$tmp/cert.pem
key=$tmp/key.pem
if ! openssl req -x509 -newkey rsa:2048 -nodes -days 1 -keyout "$key" \
	-out "$cert" -subj /CN=localhost \
	-addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' \
	>"$tmp/req.log" 2>&1; then
	say "tls-instr.sh: openssl req failed: $(tail -n 1 "$tmp/req.log")"
	exit 2
fi

port=$((19000 + $$ % 900))

# count IMPL CONNS SIZE ROUNDS: the server's instruction total over one
# client run, or nothing if it failed.
count()
{
	port=$((port + 1))
	[ "$port" -ge 20000 ] && port=19000
	out=$tmp/cg.out
	rm -f "$out"
	impl=$1
	case $1 in
	corio) set -- "$@" examples/echo-server --tls "$cert" "$key" \
		-h 127.0.0.1 -p "$port" ;;
	openssl) set -- "$@" bench/echo-tls-openssl -p "$port" \
		--cert "$cert" --key "$key" ;;
	esac
	conns=$2 size=$3 rounds=$4
	shift 4
	valgrind --tool=callgrind --callgrind-out-file="$out" "$@" \
		>"$tmp/server.log" 2>&1 &
	server_pid=$!
	# Up once a one-byte round trip goes through (valgrind starts slowly).
	i=0
	until examples/echo-client --tls --ca "$cert" -h 127.0.0.1 \
		-p "$port" -c 1 -s 1 -n 1 >/dev/null 2>&1; do
		i=$((i + 1))
		if [ "$i" -ge 100 ] || ! kill -0 "$server_pid" 2>/dev/null; then
			say "tls-instr.sh: the server did not come up: $(tail -n 1 "$tmp/server.log")"
			kill "$server_pid" 2>/dev/null
			wait "$server_pid" 2>/dev/null
			server_pid=
			return 1
		fi
		sleep 0.2
	done
	examples/echo-client --tls --ca "$cert" -h 127.0.0.1 -p "$port" \
		-c "$conns" -s "$size" -n "$rounds" >"$tmp/client.log" 2>&1
	rc=$?
	kill "$server_pid" 2>/dev/null	# SIGTERM: both servers exit cleanly
	wait "$server_pid" 2>/dev/null
	server_pid=
	if [ "$rc" -ne 0 ] || [ ! -s "$out" ]; then
		say "tls-instr.sh: $impl run failed: $(tail -n 1 "$tmp/client.log")"
		return 1
	fi
	callgrind_annotate "$out" 2>/dev/null |
		awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }'
}

# per_rt IMPL CONNS SIZE ROUNDS: instructions per round trip.
per_rt()
{
	one=$(count "$1" "$2" "$3" 1) || return 1
	many=$(count "$1" "$2" "$3" "$4") || return 1
	[ -n "$one" ] && [ -n "$many" ] || return 1
	awk -v a="$one" -v b="$many" -v n="$(($2 * ($4 - 1)))" \
		'BEGIN { printf "%.0f\n", (b - a) / n }'
}

failed=0
printf '%s\n' "tls-instr: user-space instructions per round trip (callgrind), handshakes, start-up and exit taken out; $(date -u '+%Y-%m-%d %H:%M UTC'); $(openssl version | cut -d' ' -f1-2)"
for load in 20x64x300 10x16384x100; do
	conns=${load%%x*}
	rest=${load#*x}
	size=${rest%%x*}
	rounds=$(( ${rest#*x} * scale + 1 ))
	label=${conns}x${size}B
	[ "$size" = 16384 ] && label=${conns}x16KiB
	say "tls-instr $label: corio"
	c=$(per_rt corio "$conns" "$size" "$rounds") || { failed=1; continue; }
	say "tls-instr $label: openssl"
	o=$(per_rt openssl "$conns" "$size" "$rounds") || { failed=1; continue; }
	printf 'tls %-10s instructions/rt (user space) | corio %s | openssl %s | corio/openssl %s\n' \
		"$label" "$c" "$o" "$(awk -v c="$c" -v o="$o" 'BEGIN { printf "%.2f", c / o }')"
done
exit "$failed"
