#!/bin/sh
#
# bench/loops.sh - a loop per core (issue 13): calls and posts between
# loops, and the examples on 1 and 2 loops, each beside its baseline in the
# same run, as one table with ratios.
#
#   call    bench/loops -c call: a corio_call round trip from loop 0 to
#           loop 1 (corio_run_loops(2, ...), each loop pinned to its CPU)
#           beside a pthread mutex+condvar hand-off and an eventfd
#           ping-pong between two threads pinned the same way.
#   post    bench/loops -c post: posts per second from a task on loop 0 to
#           loop 1, a yield every BATCH posts, beside the same posts from a
#           plain pthread that runs no loop.
#   echo    examples/echo-server -t 1 against -t 2, loaded by bench/echo-load
#           (100 connections x 64 B, as bench/run.sh's first echo load) on
#           CPU 1.  -t 1 runs on CPU 0 (taskset); -t 2 pins its own loops
#           to CPUs 0 and 1, so its loop 1 shares CPU 1 with the load.
#   kv      examples/kv-server -t 1 against -t 2, loaded by redis-benchmark
#           -t get,set -q -P 16 -c 50 -n 200000 on CPU 1, placed as echo.
#
# bench/loops alternates its sides within one run (REPS each) and reports
# their median, best and worst; echo and kv alternate -t 1 and -t 2, RUNS
# runs each, and report the same.  Ratios are of medians (and of the bests,
# in the best column).  Targets are reported PASS or FAIL, never asserted:
# the exit status is 0 unless a program failed.  On 2 CPUs, echo and kv on
# 2 loops cannot scale (the load generator needs a core of its own); the
# server's CPU per round trip is the figure that says what the second loop
# costs.
#
# Environment: BENCH_QUICK=1 for a short run; LOOPS_ONLY='call post echo kv'
# to run some of the sections (default: all); LOOPS_CALLS and LOOPS_POSTS
# for the calls and posts per timed run; LOOPS_PORT (17960: ports
# 17960-17969 are used).  Run by bench/run.sh, or alone from the top of the
# tree after make bench (or make bench/loops).

cd "$(dirname "$0")/.." || exit 2
set -u

# A round trip costs 50-250 us on a 2-vCPU VM (two sleeping threads woken
# each time), hence few calls.  Posts: 2 million, not 10: until drain()
# stops walking its whole backlog for each batch it appends (src/loops.c),
# a run's cost grows with the square of its posts (see bench/README.md).
if [ "${BENCH_QUICK:-0}" = 1 ]; then
	reps=3
	runs=1
	calls=5000
	posts=1000000
	echo_secs=2
	echo_warm=0.5
	kv_n=100000
else
	reps=5
	runs=3
	calls=20000
	posts=2000000
	echo_secs=3
	echo_warm=0.5
	kv_n=200000
fi
calls=${LOOPS_CALLS:-$calls}
posts=${LOOPS_POSTS:-$posts}
batch=1000
sections=${LOOPS_ONLY:-call post echo kv}
port=${LOOPS_PORT:-17960}
port_last=$((port + 9))

tmp=$(mktemp -d "${TMPDIR:-/tmp}/corio-loops.XXXXXX") || exit 2
rows=$tmp/rows
: >"$rows"
server_pid=
failed=0
started=$(date +%s)

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

say()
{
	printf 'loops.sh: %s\n' "$*" >&2
}

# row CELL...: a table row, cells separated by |.
row()
{
	printf '%s\n' "$*" >>"$rows"
}

want()
{
	case " $sections " in
	*" $1 "*) return 0 ;;
	esac
	return 1
}

# kv KEY LINE: the value of KEY=value in LINE, or "-".
kv()
{
	v=$(printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s|^$1=||p" | head -n 1)
	printf '%s\n' "${v:--}"
}

# ratio A B: A/B to 2 decimals, or "-".
ratio()
{
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a == "-" || b == "-" || b + 0 == 0) print "-"
		else printf "%.2f\n", a / b }'
}

# target TEXT MORE VALUE OP LIMIT: a PASS or FAIL row.
target()
{
	if [ "$3" = - ]; then
		verdict='-'
	elif awk -v v="$3" -v l="$5" -v op="$4" 'BEGIN {
		exit !(op == "<=" ? v <= l : v >= l) }'; then
		verdict=PASS
	else
		verdict=FAIL
	fi
	row "target: $1 $2|$3|$verdict"
}

# stats FORMAT HIGHER: median, best and worst of the numbers on stdin, as
# "median best worst" (best is the highest when HIGHER is 1, else the
# lowest); "- - -" without numbers.
stats()
{
	sort -g | awk -v f="$1" -v hi="$2" '
		{ v[++n] = $1 }
		END {
			if (!n) { print "- - -"; exit }
			m = n % 2 ? v[(n + 1) / 2] : \
				(v[n / 2] + v[n / 2 + 1]) / 2
			b = hi ? v[n] : v[1]; w = hi ? v[1] : v[n]
			printf f " " f " " f "\n", m, b, w }'
}

for prog in bench/loops examples/echo-server examples/kv-server \
	bench/echo-load; do
	if [ ! -x "$prog" ]; then
		say "$prog is not built: run make bench"
		exit 2
	fi
done

if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
	pin0='taskset -c 0'
	pin1='taskset -c 1'
else
	pin0=
	pin1=
	say "no taskset or fewer than 2 CPUs: servers and loads are not pinned"
fi

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
row "loops (issue 13): $(date -u '+%Y-%m-%d %H:%M UTC'); nproc $(nproc)," \
	"Linux $(uname -r), ${cpu:-unknown CPU}; load average" \
	"$(cut -d' ' -f1-3 /proc/loadavg) at the start"

# --- call and post: bench/loops -------------------------------------------

# cell SIDE LINE UNIT BEST WORST: "SIDE median [best-worst]" from bench/loops.
cell()
{
	printf '%s %s [%s-%s]\n' "$1" "$(kv "$1_$3" "$2")" \
		"$(kv "$4_$1_$3" "$2")" "$(kv "$5_$1_$3" "$2")"
}

# best_ratio A B LINE UNIT BEST: A's best over B's.
best_ratio()
{
	ratio "$(kv "$5_$1_$4" "$3")" "$(kv "$5_$2_$4" "$3")"
}

call_ratio=-
if want call; then
	say "call: $reps reps of $calls round trips per side"
	if line=$(bench/loops -c call -r "$reps" -n "$calls" \
		2>"$tmp/loops.err"); then
		c=$(kv corio_ns "$line")
		v=$(kv condvar_ns "$line")
		e=$(kv eventfd_ns "$line")
		row "call: ns per round trip from loop 0 to loop 1 (a trivial" \
			"fn), median of $reps reps [best-worst]; condvar = a" \
			"mutex+condvar hand-off, eventfd = an eventfd" \
			"ping-pong, both between two threads on the loops'" \
			"two CPUs; others = CPUs other processes took from" \
			"CPUs 0-1"
		row "call round trip (ns)|$(cell corio "$line" ns min max)" \
			"|$(cell condvar "$line" ns min max)" \
			"|$(cell eventfd "$line" ns min max)" \
			"|corio/condvar $(ratio "$c" "$v")" \
			"(best $(best_ratio corio condvar "$line" ns min))" \
			"|corio/eventfd $(ratio "$c" "$e")" \
			"(best $(best_ratio corio eventfd "$line" ns min))" \
			"|others $(kv others "$line") CPUs"
		call_ratio=$(ratio "$c" "$v")
	else
		say "call: bench/loops failed: $(tail -n 1 "$tmp/loops.err")"
		failed=1
	fi
fi

post_rate=-
if want post; then
	say "post: $reps reps of $posts posts per side"
	if line=$(bench/loops -c post -r "$reps" -m "$posts" -k "$batch" \
		2>"$tmp/loops.err"); then
		c=$(kv corio_mps "$line")
		t=$(kv thread_mps "$line")
		row "post: million posts per second to loop 1 (fn: an" \
			"increment), $posts per run, first post to the last" \
			"one's run on loop 1, median of $reps reps" \
			"[best-worst]; corio = a task on loop 0 yielding" \
			"every $batch posts, thread = a plain pthread on loop" \
			"0's CPU"
		row "post rate (M/s)|$(cell corio "$line" mps max min)" \
			"|$(cell thread "$line" mps max min)" \
			"|corio/thread $(ratio "$c" "$t")" \
			"(best $(best_ratio corio thread "$line" mps max))" \
			"|others $(kv others "$line") CPUs"
		post_rate=$c
	else
		say "post: bench/loops failed: $(tail -n 1 "$tmp/loops.err")"
		failed=1
	fi
fi

# --- echo and kv: the examples on 1 and 2 loops ----------------------------

# free_port: sets port to one in our range that nothing listens on.
free_port()
{
	tries=0
	while [ "$tries" -lt 10 ]; do
		port=$((port + 1))
		[ "$port" -gt "$port_last" ] && port=$((port_last - 9))
		if ! ss -Htln "sport = :$port" 2>/dev/null | grep -q .; then
			return 0
		fi
		tries=$((tries + 1))
	done
	say "no free port in $((port_last - 9))-$port_last"
	return 1
}

# start PROG LOOPS: examples/PROG with -t LOOPS on a free port, until it
# says "listening"; sets server_pid.  -t 1 runs on CPU 0; -t 2 on every
# CPU, so that corio_run_loops pins loop i to CPU i.
start()
{
	free_port || return 1
	rm -f "$tmp/server.err"
	if [ "$2" = 1 ]; then
		$pin0 "examples/$1" -t 1 -h 127.0.0.1 -p "$port" \
			>/dev/null 2>"$tmp/server.err" &
	else
		"examples/$1" -t "$2" -h 127.0.0.1 -p "$port" \
			>/dev/null 2>"$tmp/server.err" &
	fi
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
	say "$1 -t $2 did not start: $(tail -n 1 "$tmp/server.err" 2>/dev/null)"
	stop "$1"
	return 1
}

stop()
{
	kill -TERM "$server_pid" 2>/dev/null
	wait "$server_pid"
	rc=$?
	server_pid=
	if [ "$rc" != 0 ] && [ "$rc" != 143 ]; then
		say "$1 exited with status $rc on SIGTERM"
	fi
}

# has_loops PROG: whether examples/PROG takes -t 2 and runs 2 loop threads.
has_loops()
{
	start "$1" 2 2>/dev/null || return 1
	n=$(find "/proc/$server_pid/task" -mindepth 1 -maxdepth 1 2>/dev/null |
		wc -l)
	stop "$1"
	[ "$n" -ge 2 ]
}

# shellcheck disable=SC2317 # called by alternate
# echo_one LOOPS: one echo-load run against echo-server -t LOOPS; appends
# "LOOPS rt/s cpu/rt server-busy client-busy others" to $tmp/echo.
echo_one()
{
	start echo-server "$1" || return 1
	line=$($pin1 bench/echo-load -p "$port" -c 100 -s 64 \
		-d "$echo_secs" -w "$echo_warm" -P "$server_pid" \
		-t $((echo_secs + 60)) 2>"$tmp/load.err")
	rc=$?
	stop echo-server
	if [ "$rc" != 0 ]; then
		say "echo -t $1: echo-load failed: $(tail -n 1 "$tmp/load.err")"
		return 1
	fi
	printf '%s %s %s %s %s %s\n' "$1" "$(kv rtps "$line")" \
		"$(kv srv_us_per_rt "$line")" "$(kv srv_busy "$line")" \
		"$(kv cli_busy "$line")" "$(kv others "$line")" >>"$tmp/echo"
	say "echo -t $1: $(kv rtps "$line") rt/s," \
		"$(kv srv_us_per_rt "$line") us server CPU per rt"
}

# shellcheck disable=SC2317 # called by alternate
# kv_one LOOPS: one redis-benchmark run against kv-server -t LOOPS;
# appends "LOOPS GET-rps SET-rps" to $tmp/kv.
kv_one()
{
	start kv-server "$1" || return 1
	$pin1 redis-benchmark -p "$port" -t get,set -q -P 16 -c 50 \
		-n "$kv_n" 2>/dev/null | tr '\r' '\n' |
		awk -F'[: ]+' -v t="$1" '
		/requests per second/ { v[$1] = $2 }
		END { printf "%s %s %s\n", t, ("GET" in v) ? v["GET"] : "-",
			("SET" in v) ? v["SET"] : "-" }' >"$tmp/kv.one"
	stop kv-server
	cat "$tmp/kv.one" >>"$tmp/kv"
	say "kv -t $1: GET and SET rps $(cut -d' ' -f2- "$tmp/kv.one")"
	if grep -q -- ' -' "$tmp/kv.one"; then
		say "kv -t $1: redis-benchmark gave no figure"
		return 1
	fi
}

# alternate FN: FN 1 and FN 2, $runs times each, the first of a pair
# changing with each run.
alternate()
{
	r=1
	while [ "$r" -le "$runs" ]; do
		if [ $((r % 2)) = 1 ]; then order='1 2'; else order='2 1'; fi
		for t in $order; do
			"$1" "$t" || failed=1
		done
		r=$((r + 1))
	done
}

# field FILE LOOPS COLUMN FORMAT HIGHER: "median best worst" of a column.
field()
{
	awk -v t="$2" -v f="$3" '$1 == t && $f != "-" { print $f }' "$1" |
		stats "$4" "$5"
}

# pair LABEL FILE COLUMN FORMAT HIGHER: a row of -t 1 beside -t 2.
pair()
{
	# shellcheck disable=SC2046 # three words each, on purpose
	set -- "$1" $(field "$2" 1 "$3" "$4" "$5") \
		$(field "$2" 2 "$3" "$4" "$5")
	row "$1|-t 1 $2 [$3-$4]|-t 2 $5 [$6-$7]" \
		"|t2/t1 $(ratio "$5" "$2") (best $(ratio "$6" "$3"))"
}

# single LABEL FILE COLUMN: the medians only.
single()
{
	a=$(field "$2" 1 "$3" '%.2f' 1 | cut -d' ' -f1)
	b=$(field "$2" 2 "$3" '%.2f' 1 | cut -d' ' -f1)
	row "$1|-t 1 $a|-t 2 $b"
}

if want echo; then
	if ! has_loops echo-server; then
		row "echo: examples/echo-server has no working -t 2 yet:" \
			"skipped"
		say "echo: echo-server -t 2 does not run 2 loops: skipping"
	else
		: >"$tmp/echo"
		alternate echo_one
		row "echo: examples/echo-server -t 1 (CPU 0) and -t 2" \
			"(loops on CPUs 0 and 1), bench/echo-load 100 x 64 B" \
			"on CPU 1," \
			"${echo_secs} s after ${echo_warm} s, median of $runs" \
			"run(s) [best-worst]; cpu/rt = the server's CPU (all" \
			"its threads) per round trip"
		pair 'echo 100x64B rt/s' "$tmp/echo" 2 '%.0f' 1
		pair 'echo 100x64B cpu/rt (us)' "$tmp/echo" 3 '%.2f' 0
		single 'echo 100x64B server busy (CPUs)' "$tmp/echo" 4
		single 'echo 100x64B client busy (CPUs)' "$tmp/echo" 5
		single "echo 100x64B others' CPU on CPUs 0-1" "$tmp/echo" 6
	fi
fi

if want kv; then
	if ! command -v redis-benchmark >/dev/null 2>&1; then
		row "kv: no redis-benchmark: skipped"
		say "kv: no redis-benchmark (Debian's redis-tools): skipping"
	elif ! has_loops kv-server; then
		row "kv: examples/kv-server has no working -t 2 yet: skipped"
		say "kv: kv-server -t 2 does not run 2 loops: skipping"
	else
		: >"$tmp/kv"
		alternate kv_one
		row "kv: examples/kv-server -t 1 (CPU 0) and -t 2 (loops on" \
			"CPUs 0 and 1), redis-benchmark -t get,set -q -P 16" \
			"-c 50 -n $kv_n on CPU 1, median of $runs run(s)" \
			"[best-worst]"
		pair 'kv GET -P 16 (requests/s)' "$tmp/kv" 2 '%.0f' 1
		pair 'kv SET -P 16 (requests/s)' "$tmp/kv" 3 '%.0f' 1
	fi
fi

if want call; then
	target "corio_call round trip <= 0.5x a condvar hand-off" \
		"(corio/condvar)" "$call_ratio" '<=' 0.5
fi
if want post; then
	target "posts from loop 0 to loop 1 >= 5 M/s" "(M/s)" \
		"$post_rate" '>=' 5
fi
row "loops.sh took $(($(date +%s) - started)) s; load average" \
	"$(cut -d' ' -f1-3 /proc/loadavg) at the end"

# One table: every column as wide as its widest cell (as bench/run.sh).
printf '\n'
awk -F'|' '
	function trim(s) { gsub(/^ +| +$/, "", s); return s }
	{ line[NR] = $0; n = split($0, f, "|")
	  if (n > 1)
		for (i = 1; i <= n; i++)
			if (length(trim(f[i])) > w[i]) w[i] = length(trim(f[i])) }
	END {
		for (r = 1; r <= NR; r++) {
			n = split(line[r], f, "|"); out = ""
			for (i = 1; i <= n; i++)
				out = out (i < n ? sprintf("%-*s | ", w[i], trim(f[i])) : trim(f[i]))
			print out
		}
	}' "$rows"

exit "$failed"
