#!/bin/sh
#
# bench/tls.sh - TLS echo (issue 15): examples/echo-server --tls against
# bench/echo-tls-openssl (OpenSSL on socket BIOs under epoll, nginx's way)
# and bench/echo-tls-asyncio.py (asyncio.start_server with ssl=), all
# loaded by examples/echo-client --tls.
#
#   sh bench/tls.sh          after make bench (or make and
#                            make bench/echo-tls-openssl)
#
# It makes a throwaway certificate (openssl req, RSA 2048, CN localhost,
# subjectAltName localhost and 127.0.0.1) in a temporary directory that it
# removes on the way out; the client verifies the servers against it
# (--ca).  Two loads, connections x message size: 100 x 64 B and
# 10 x 16 KiB.  The server runs on CPU 0 (taskset -c 0), the client on
# CPU 1, as in bench/run.sh.  For each load the servers take turns, in an
# order that rotates with each run; every run gets a fresh server and
# goes:
#
#   warm-up   echo-client -n WARM (also sizes the measured run: its rate
#             picks the message count for about TLS_SECS seconds; the
#             count is fixed at the first run of each server and load)
#   hs        echo-client -n 1: CONNS handshakes and one round trip each
#   measured  echo-client -n N: CONNS handshakes and N round trips each
#
# The server's CPU time is bench/run.sh's, utime+stime over each client
# run, read at nanosecond resolution: the sum of its threads' run time in
# /proc/PID/task/*/schedstat (the total that the kernel splits into utime
# and stime; /proc/PID/stat counts it in 10 ms ticks, too coarse for a
# handshake run), or /proc/PID/stat where schedstat is missing.  Handshakes (an RSA-2048 signature
# each, on the server) are taken out: cpu/rt = (cpu(measured) - cpu(hs)) /
# (round trips(measured) - round trips(hs)), and rt/s the same difference
# of round trips over the difference of the client's elapsed times.  What
# the hs run cost per connection is a row of its own.  busy = the
# server's CPU time over the measured run's wall time (1.00 = a saturated
# core; the client, with TLS at both ends, often saturates its core first,
# and then rt/s measures the client).  lost = CPU other processes took on
# CPUs 0 and 1 during the measured run (their busy time in /proc/stat less
# the server's and the client's), plus steal; a run that lost more than
# TLS_LOST_MAX CPUs is run again, at most twice each and TLS_RETRIES
# times in all, and the least disturbed attempt counts.
#
# Each cell is the median over the runs with the best and the worst in
# brackets (best: highest rt/s, lowest CPU); ratios and targets use the
# medians, with the ratio of the bests beside.  Targets, reported PASS or
# FAIL and never asserted: server CPU per round trip <= 1.10x the OpenSSL
# baseline's, round trips/s >= 4x asyncio's (issue 15), and, as
# bench/run.sh also checks, CPU per round trip >= 4x better than
# asyncio's.  The client does TLS too, at about the cost of a corio
# server, so it saturates its core before corio's server does: then rt/s
# measures the client, and corio/asyncio by rt/s cannot exceed asyncio's
# CPU per round trip over the client's.
#
# The corio row needs examples/echo-server --tls CERT KEY; while its usage
# does not mention --tls the row is skipped with a line saying so.  The
# asyncio row needs python3 (or PYTHON).  Built without libssl (HAVE_TLS = 0
# in config.mk), the whole script says so and exits 0.
#
# Environment: TLS_CORIO_SERVER a command to run as the corio row instead
# of echo-server (@PORT@, @CERT@ and @KEY@ are replaced; it must print
# "listening" on stderr), TLS_REPS runs per figure (default 3; 1 with BENCH_QUICK=1),
# TLS_SECS seconds per measured run (default 3; 1.5 quick), TLS_LOST_MAX
# (default 0.10), TLS_RETRIES (default 12; 3 quick), PYTHON.  Ports
# 18000-18999.  Progress goes to stderr, the table to stdout; the exit
# status is 0 unless a program failed.

cd "$(dirname "$0")/.." || exit 2

if [ "${BENCH_QUICK:-0}" = 1 ]; then
	reps=${TLS_REPS:-1}
	secs=${TLS_SECS:-1.5}
	retries=${TLS_RETRIES:-3}
else
	reps=${TLS_REPS:-3}
	secs=${TLS_SECS:-3}
	retries=${TLS_RETRIES:-12}
fi
lost_max=${TLS_LOST_MAX:-0.10}
retries_per_run=2
loads='100x64 10x16384'

say()
{
	printf '%s\n' "$*" >&2
}

if ! grep -q '^HAVE_TLS = 1' config.mk 2>/dev/null; then
	say "tls.sh: corio was configured without libssl (config.mk): no TLS rows"
	exit 0
fi
for prog in examples/echo-client examples/echo-server bench/echo-tls-openssl; do
	if [ ! -x "$prog" ]; then
		say "tls.sh: $prog is not built: run make bench"
		exit 2
	fi
done
if ! command -v openssl >/dev/null 2>&1; then
	say "tls.sh: no openssl command to make a certificate with: no TLS rows"
	exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/corio-tls.XXXXXX") || exit 2
raw=$tmp/raw		# one line per kept run
rows=$tmp/rows		# the table, cells separated by |
notes=$tmp/notes
: >"$raw"
: >"$rows"
: >"$notes"
server_pid=
failed=0

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup()
{
	if [ -n "$server_pid" ]; then
		kill -TERM "$server_pid" 2>/dev/null
		wait "$server_pid" 2>/dev/null
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

note()
{
	printf '%s\n' "$*" >>"$notes"
	say "tls.sh: $*"
}

cert=$tmp/cert.pem
key=$tmp/key.pem
if ! openssl req -x509 -newkey rsa:2048 -nodes -days 1 -keyout "$key" \
	-out "$cert" -subj /CN=localhost \
	-addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' \
	>"$tmp/req.log" 2>&1; then
	say "tls.sh: openssl req failed: $(tail -n 1 "$tmp/req.log")"
	exit 2
fi

if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
	pin_server='taskset -c 0'
	pin_load='taskset -c 1'
	cpus='cpu0 cpu1'
else
	pin_server=
	pin_load=
	cpus='cpu'
	note "no taskset or fewer than 2 CPUs: server and client are not pinned"
fi

impls=
# The corio row, once echo-server has --tls (its usage says so), or
# TLS_CORIO_SERVER's command instead.
if [ -n "${TLS_CORIO_SERVER:-}" ]; then
	impls=corio
	note "corio: the server is TLS_CORIO_SERVER ($TLS_CORIO_SERVER), not examples/echo-server"
elif timeout 2 examples/echo-server --help 2>&1 | grep -q -- '--tls'; then
	impls=corio
else
	note "corio: examples/echo-server has no --tls yet: skipping its row"
fi
impls="$impls openssl"
# The real interpreter, not a wrapper script, so that $! is the server.
python=
py=${PYTHON:-python3}
if command -v "$py" >/dev/null 2>&1; then
	python=$("$py" -c 'import sys; print(sys.executable)' 2>/dev/null)
fi
if [ -n "$python" ]; then
	impls="$impls asyncio"
else
	note "asyncio: no $py found: skipping its row"
fi

# rotate K WORD...: the words, starting from the Kth (0-based), wrapping.
rotate()
{
	k=$1
	shift
	while [ "$k" -gt 0 ]; do
		first=$1
		shift
		set -- "$@" "$first"
		k=$((k - 1))
	done
	printf '%s\n' "$*"
}

port=$((18000 + $$ % 900))
next_port()
{
	port=$((port + 1))
	if [ "$port" -gt 18999 ]; then
		port=18000
	fi
}

server_cmd()
{
	case $1 in
	corio)
		if [ -n "${TLS_CORIO_SERVER:-}" ]; then
			printf '%s\n' "$TLS_CORIO_SERVER" | sed "s|@PORT@|$port|g; s|@CERT@|$cert|g; s|@KEY@|$key|g"
		else
			printf '%s\n' "examples/echo-server --tls $cert $key -h 127.0.0.1 -p $port"
		fi ;;
	openssl) printf '%s\n' "bench/echo-tls-openssl -p $port --cert $cert --key $key" ;;
	asyncio) printf '%s\n' "$python bench/echo-tls-asyncio.py -p $port --cert $cert --key $key" ;;
	esac
}

# start_server IMPL: sets server_pid and port once it prints "listening".
start_server()
{
	tries=0
	while [ "$tries" -lt 3 ]; do
		next_port
		rm -f "$tmp/server.err"
		# shellcheck disable=SC2046 # the command is split on purpose
		$pin_server $(server_cmd "$1") 2>"$tmp/server.err" &
		server_pid=$!
		i=0
		while [ "$i" -lt 100 ]; do
			if grep -q listening "$tmp/server.err" 2>/dev/null; then
				return 0
			fi
			kill -0 "$server_pid" 2>/dev/null || break
			sleep 0.1
			i=$((i + 1))
		done
		kill -TERM "$server_pid" 2>/dev/null
		wait "$server_pid" 2>/dev/null
		server_pid=
		tries=$((tries + 1))
	done
	note "$1 did not start: $(tail -n 1 "$tmp/server.err" 2>/dev/null)"
	return 1
}

# stop_server IMPL: SIGTERM, which must end it with status 0.
stop_server()
{
	kill -TERM "$server_pid" 2>/dev/null
	wait "$server_pid"
	rc=$?
	server_pid=
	if [ "$rc" != 0 ]; then
		note "$1 exited with status $rc on SIGTERM"
	fi
}

# The protocol and cipher each server negotiates, once, from s_client.
cipher_note()
{
	c=$(openssl s_client -brief -connect "127.0.0.1:$port" </dev/null 2>&1 |
		sed -n 's/^Protocol version: //p; s/^Ciphersuite: //p' |
		tr '\n' ' ')
	note "$1 negotiates ${c:-(s_client said nothing)}"
}

# snap FILE: "server-cpu-s client-cpu-s busy-cpu-s steal-s wall-s" now,
# appended to FILE.  The client's CPU is this shell's children's, which a
# client run adds to when it exits: times must run in this shell, not in a
# subshell (a pipeline's or a $(...)'s), whose children's times start at 0.
hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
snap()
{
	# shellcheck disable=SC2086 # the glob is meant
	srv=$(cat /proc/$server_pid/task/*/schedstat 2>/dev/null |
		awk '{ s += $1 } END { if (NR) printf "%.6f", s / 1e9 }')
	if [ -z "$srv" ]; then
		srv=$(sed 's/^.*) //' "/proc/$server_pid/stat" 2>/dev/null |
			awk -v hz="$hz" '{ printf "%.4f", ($12 + $13) / hz }')
	fi
	times >"$tmp/times"
	kids=$(awk 'NR == 2 {
		s = 0
		for (i = 1; i <= 2; i++) {
			split($i, a, "m"); sub("s", "", a[2]); s += a[1] * 60 + a[2]
		}
		printf "%.4f", s }' "$tmp/times")
	stat=$(awk -v cpus=" $cpus " -v hz="$hz" '
		index(cpus, " " $1 " ") {
			b += $2 + $3 + $4 + $7 + $8; st += $9
		}
		END { printf "%.4f %.4f", b / hz, st / hz }' /proc/stat)
	printf '%s %s %s %s\n' "${srv:--1}" "${kids:-0}" "$stat" \
		"$(date +%s.%N)" >>"$1"
}

# client CONNS SIZE MSGS: one echo-client run against the server; sets
# out (its line) and span (the difference of snaps around it).
client()
{
	: >"$tmp/snaps"
	snap "$tmp/snaps"
	# shellcheck disable=SC2086 # $pin_load is a list of words
	out=$($pin_load examples/echo-client --tls --ca "$cert" -h 127.0.0.1 \
		-p "$port" -c "$1" -s "$2" -n "$3" 2>"$tmp/client.err")
	rc=$?
	snap "$tmp/snaps"
	span=$(awk '
		NR == 1 { for (i = 1; i <= 5; i++) a[i] = $i }
		NR == 2 { for (i = 1; i <= 5; i++) printf "%.4f ", $i - a[i] }' \
		"$tmp/snaps")
	if [ "$rc" != 0 ]; then
		note "${1}x$2 -n $3 against $impl failed: $(tail -n 1 "$tmp/client.err")"
		failed=1
		return 1
	fi
}

# field N LINE: the Nth word of the client's line (1 round trips, 11
# seconds, 13 round trips/s, 17 p50 us, 20 p99 us).
field()
{
	printf '%s\n' "$2" | awk -v n="$1" '{ print $n }'
}

# run_once IMPL CONNS SIZE: warm-up, hs and measured runs against a fresh
# server; sets line (the figures) and lost.
run_once()
{
	impl=$1
	if ! start_server "$1"; then
		failed=1
		return 1
	fi
	if ! grep -q "^$1 negotiates" "$notes"; then
		cipher_note "$1"
	fi
	nvar="msgs_$1_$2_$3"
	eval "n=\${$nvar:-}"
	if [ "$3" -ge 4096 ]; then warm=100; else warm=50; fi
	client "$2" "$3" "$warm" || { stop_server "$1"; return 1; }
	if [ -z "$n" ]; then
		# About $secs seconds at the warm-up's rate (at least 2 x warm).
		n=$(awk -v r="$(field 13 "$out")" -v s="$secs" -v c="$2" \
			-v w="$warm" 'BEGIN {
			n = int(r * s / c); print n < 2 * w ? 2 * w : n }')
		eval "$nvar=$n"
	fi
	client "$2" "$3" 1 || { stop_server "$1"; return 1; }
	hs_out=$out
	hs_span=$span
	client "$2" "$3" "$n" || { stop_server "$1"; return 1; }
	stop_server "$1"
	# Fields of line: 1 rt/s, 2 server us/rt, 3 server us per handshake,
	# 4 p50 us, 5 p99 us, 6 server busy, 7 client us/rt, 8 lost CPUs.
	line=$(printf '%s\n%s\n%s\n%s\n' "$hs_out" "$hs_span" "$out" "$span" |
		awk -v c="$2" '
		NR == 1 { hrt = $1; ht = $11 }
		NR == 2 { hsrv = $1; hcli = $2 }
		NR == 3 { rt = $1; t = $11; p50 = $17; p99 = $20 }
		NR == 4 { srv = $1; cli = $2; busy = $3; st = $4; wall = $5 }
		END {
			d = rt - hrt; dt = t - ht
			if (srv < 0 || hsrv < 0 || d <= 0 || dt <= 0) {
				print "-"; exit
			}
			others = busy - srv - cli
			if (others < 0) others = 0
			printf "%.0f %.3f %.1f %s %s %.3f %.3f %.3f\n",
				d / dt, (srv - hsrv) / d * 1e6, hsrv / c * 1e6,
				p50, p99, srv / wall, (cli - hcli) / d * 1e6,
				(others + st) / wall
		}')
	if [ "$line" = - ]; then
		note "${2}x$3 $1: could not read the server's CPU time"
		failed=1
		return 1
	fi
	lost=$(printf '%s\n' "$line" | awk '{ print $8 }')
}

# tls_run IMPL CONNS SIZE REP: a kept run (again, within the budgets, if
# other tenants took more than $lost_max CPUs from it).
tls_run()
{
	best=
	best_lost=
	again=0
	while run_once "$1" "$2" "$3"; do
		if [ -z "$best" ] ||
		   awk -v a="$lost" -v b="$best_lost" 'BEGIN { exit !(a < b) }'; then
			best=$line
			best_lost=$lost
		fi
		if awk -v a="$lost" -v m="$lost_max" 'BEGIN { exit !(a <= m) }' ||
		   [ "$retries" -le 0 ] || [ "$again" -ge "$retries_per_run" ]; then
			break
		fi
		retries=$((retries - 1))
		again=$((again + 1))
		say "tls ${2}x$3 $1 run $4/$reps: disturbed (other tenants took $lost CPUs), running it again"
	done
	if [ -z "$best" ]; then
		return
	fi
	printf '%s %s %s\n' "${2}x$3" "$1" "$best" >>"$raw"
	# shellcheck disable=SC2086 # split into its fields on purpose
	set -- "$@" $best
	say "tls ${2}x$3 $1 run $4/$reps: $5 rt/s, $6 us server CPU per rt, $7 us server CPU per handshake, server busy ${10}, lost $best_lost CPUs"
}

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
machine="nproc $(nproc), Linux $(uname -r), ${cpu_model:-unknown CPU}, $(openssl version | cut -d' ' -f1-2)"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date +%s)
say "tls.sh: $reps run(s) per figure of about $secs s each; servers: $impls"

for load in $loads; do
	conns=${load%x*}
	size=${load#*x}
	r=0
	while [ "$r" -lt "$reps" ]; do
		# shellcheck disable=SC2086 # a list of words
		for impl in $(rotate $((r % $(echo $impls | wc -w))) $impls); do
			tls_run "$impl" "$conns" "$size" $((r + 1))
		done
		r=$((r + 1))
	done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# stats LOAD IMPL FIELD HI: "median best worst" of FIELD over the kept
# runs (HI 1: higher is better), or "-".
stats()
{
	awk -v l="$1" -v i="$2" -v f=$(($3 + 2)) '$1 == l && $2 == i { print $f }' \
		"$raw" | sort -g | awk -v hi="$4" '
		{ v[NR] = $1 }
		END {
			if (NR == 0) { print "-"; exit }
			m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			if (hi) print m, v[NR], v[1]; else print m, v[1], v[NR]
		}'
}

# cell STAT FORMAT: "median (best..worst)"
cell()
{
	printf '%s\n' "$1" | awk -v f="$2" '
		$1 == "-" { print "-"; exit }
		{ printf f " (" f ".." f ")\n", $1, $2, $3 }'
}

# ratio A B: A/B of the first words (medians) and of the second (bests).
ratio()
{
	printf '%s\n%s\n' "$1" "$2" | awk '
		NR == 1 { a = $1; ab = $2 } NR == 2 { b = $1; bb = $2 }
		END {
			if (a == "-" || b == "-" || b + 0 == 0 || bb + 0 == 0)
				print "-"
			else
				printf "%.2f (best %.2f)\n", a / b, ab / bb
		}'
}

row()
{
	printf '%s\n' "$*" >>"$rows"
}

has()
{
	case " $impls " in
	*" $1 "*) return 0 ;;
	esac
	return 1
}

row "tls bench: median of $reps run(s) per figure, (best..worst) beside it; $(date -u '+%Y-%m-%d %H:%M UTC'); $machine; load average $load_start at the start, $load_end at the end"
row "tls: server on CPU 0, examples/echo-client --tls --ca on CPU 1, about $secs s per measured run after a warm-up run; RSA-2048 certificate; handshakes taken out of rt/s and cpu/rt (a -n 1 run subtracted); cpu/rt = the server's utime+stime per round trip; busy = server CPU time / wall time; lost = CPU used by other processes on CPUs 0 and 1 plus steal"
targets=
for load in $loads; do
	lbl=$(printf '%s\n' "$load" | sed 's/x16384$/x16KiB/; s/x64$/x64B/')
	for m in '1:rt/s (round trips/s):%.0f:1' '2:cpu/rt (us):%.2f:0' \
		'3:handshake cpu/conn (us):%.0f:0' '4:p50 (us):%.1f:0' \
		'5:p99 (us):%.1f:0' '7:client-cpu/rt (us):%.2f:0' \
		'6:server busy (CPUs):%.2f:1' '8:lost to other tenants (CPUs):%.2f:0'; do
		f=${m%%:*}
		rest=${m#*:}
		name=${rest%%:*}
		rest=${rest#*:}
		form=${rest%%:*}
		hi=${rest#*:}
		r="tls $lbl $name"
		for impl in $impls; do
			r="$r | $impl $(cell "$(stats "$load" "$impl" "$f" "$hi")" "$form")"
		done
		if [ "$f" -le 2 ] && has corio; then
			r="$r | corio/openssl $(ratio "$(stats "$load" corio "$f" "$hi")" "$(stats "$load" openssl "$f" "$hi")")"
			if has asyncio; then
				r="$r | corio/asyncio $(ratio "$(stats "$load" corio "$f" "$hi")" "$(stats "$load" asyncio "$f" "$hi")")"
			fi
		fi
		row "$r"
	done
	if has corio; then
		v=$(ratio "$(stats "$load" corio 2 0)" "$(stats "$load" openssl 2 0)")
		targets="$targets
target: tls $lbl cpu/rt <= 1.10x openssl (corio/openssl) | $v | $(printf '%s\n' "$v" | awk '$1 == "-" { print "-"; exit } { print ($1 <= 1.10 ? "PASS" : "FAIL") }')"
		if has asyncio; then
			v=$(ratio "$(stats "$load" corio 1 1)" "$(stats "$load" asyncio 1 1)")
			targets="$targets
target: tls $lbl rt/s >= 4x asyncio (corio/asyncio) | $v | $(printf '%s\n' "$v" | awk '$1 == "-" { print "-"; exit } { print ($1 >= 4 ? "PASS" : "FAIL") }')"
			v=$(ratio "$(stats "$load" asyncio 2 0)" "$(stats "$load" corio 2 0)")
			targets="$targets
target: tls $lbl cpu/rt >= 4x better than asyncio (asyncio/corio) | $v | $(printf '%s\n' "$v" | awk '$1 == "-" { print "-"; exit } { print ($1 >= 4 ? "PASS" : "FAIL") }')"
		fi
	fi
done
if [ -n "$targets" ]; then
	printf '%s\n' "$targets" | sed '1d' >>"$rows"
else
	row "target: none checked: no corio row (examples/echo-server has no --tls)"
fi
while IFS= read -r n; do
	row "note: $n"
done <"$notes"
row "took $(($(date +%s) - started)) s"

# The table: cells padded to their column's width, as bench/run.sh does.
awk -F' [|] ' '
	{ line[NR] = $0; n[NR] = NF
	  for (i = 1; i <= NF; i++) { c[NR, i] = $i
		if (NF > 1 && length($i) > w[i]) w[i] = length($i) } }
	END {
		for (r = 1; r <= NR; r++) {
			if (n[r] == 1) { print line[r]; continue }
			s = ""
			for (i = 1; i <= n[r]; i++)
				s = s (i > 1 ? " | " : "") \
				    (i < n[r] ? sprintf("%-" w[i] "s", c[r, i]) : c[r, i])
			print s
		}
	}' "$rows"
exit "$failed"
