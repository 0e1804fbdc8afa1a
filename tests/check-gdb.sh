#!/bin/sh
#
# tests/check-gdb.sh - contrib/corio-gdb.py on a live process and on a core.
#
#	sh tests/check-gdb.sh PROG [SOPROG SOLIB]
#
# PROG is tests/gdb/parked (linked with libcorio.a): its tasks park in
# corio_recv, corio_sleep, corio_event_wait and corio_join, then main's
# task calls corio_gdb_checkpoint().  gdb stops there and runs "corio
# tasks" and "corio bt N" for each task, then writes a core with "corio
# gcore", on which the same commands run again.  SOPROG is the same program
# linked with SOLIB (libcorio.so.VERSION): gdb must auto-load the script
# for it from an auto-load directory, named as make install names it.
#
# Skips (exit 0, saying so) without gdb, without gdb's Python, without
# io_uring or where ptrace is not permitted.  With CORIO_ASAN=1 (an
# --enable-asan build) the core is left out: ASan's shadow makes gcore
# write tens of gigabytes.  Each gdb runs under a timeout of 60 s.

cd "$(dirname "$0")/.." || exit 2

script=${CORIO_GDB_SCRIPT:-contrib/corio-gdb.py}
prog=${1:-tests/gdb/parked}
soprog=${2:-}
solib=${3:-}

skip()
{
	printf 'check-gdb: %s: skipped\n' "$1"
	exit 0
}

command -v gdb >/dev/null 2>&1 ||
	skip 'gdb is not installed (Debian package: gdb)'
case $(gdb -batch -nx -ex 'python print("py" "thon-ok")' 2>&1) in
*python-ok*) ;;
*) skip 'this gdb has no Python' ;;
esac

tmp=$(mktemp -d "${TMPDIR:-/tmp}/corio-check-gdb.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$prog" >"$tmp/run" 2>&1
rc=$?
if [ "$rc" = 77 ]; then
	skip "$prog cannot set up io_uring here"
elif [ "$rc" != 0 ]; then
	printf 'check-gdb: %s exits %s on its own:\n' "$prog" "$rc" >&2
	sed 's/^/    /' "$tmp/run" >&2
	exit 1
fi

fail=0
checks=0

# gdbrun OUT ARGS...: gdb in batch mode, the script loaded, output in OUT.
gdbrun()
{
	out=$1
	shift
	timeout 60 gdb -batch -nx -iex 'set pagination off' -iex 'set width 0' \
		-iex 'set disable-randomization off' \
		-iex 'set confirm off' "$@" >"$out" 2>&1
}

# section OUT NAME: the lines that "echo ==NAME\n" put before the next "==".
section()
{
	awk -v name="==$2" '
		$0 == name { on = 1; next }
		/^==/ { on = 0 }
		on' "$1"
}

# expect WHAT OUT NAME ERE...: each ERE matches a line of section NAME.
expect()
{
	what=$1
	out=$2
	name=$3
	shift 3
	section "$out" "$name" >"$tmp/section"
	for re in "$@"; do
		checks=$((checks + 1))
		if ! grep -Eq -- "$re" "$tmp/section"; then
			printf 'check-gdb: %s: "%s" printed no line matching /%s/\n' \
				"$what" "$name" "$re" >&2
			failed_out=$out
			fail=1
		fi
	done
}

# reject WHAT OUT NAME ERE: no line of section NAME matches ERE.
reject()
{
	section "$2" "$3" >"$tmp/section"
	checks=$((checks + 1))
	if grep -Eq -- "$4" "$tmp/section"; then
		printf 'check-gdb: %s: "%s" printed a line matching /%s/\n' \
			"$1" "$3" "$4" >&2
		failed_out=$2
		fail=1
	fi
}

# check_tasks WHAT OUT: "corio tasks" and "corio bt N" of the parked tasks.
check_tasks()
{
	ms='[0-9]+\.[0-9]ms'
	expect "$1" "$2" tasks \
		'^ID +STATE +WAITED +WAITS ON +TASK$' \
		'^1 +running +- +- +\(main_task\) main$' \
		"^2 +parked +$ms +recv fd [0-9]+ +\\(parked_in_recv\\)\$" \
		"^3 +parked +$ms +sleep +\\(parked_in_sleep\\)\$" \
		"^4 +parked +$ms +sync wait +\\(parked_in_event\\)\$" \
		"^5 +parked +$ms +join task 3 +\\(parked_in_join\\)\$"
	expect "$1" "$2" bt1 '^task 1 is running' \
		'^#0 +corio_gdb_checkpoint \(' ' main_task \('
	for n in 2 3 4 5; do
		case $n in
		2) fns='corio_recv parked_in_recv' ;;
		3) fns='corio_sleep parked_in_sleep' ;;
		4) fns='corio_event_wait parked_in_event' ;;
		5) fns='corio_join parked_in_join' ;;
		esac
		expect "$1" "$2" "bt$n" '^#0 .*corio__task_park|^#0 .*switch_out|^#0 .*switch_to' \
			'^#1 ' ' trampoline \('
		for fn in $fns; do
			expect "$1" "$2" "bt$n" "^#[0-9]+ .*[ ]$fn \\("
		done
		# Only the task's frames: not the thread's, not past the
		# bottom of the task's stack.
		reject "$1" "$2" "bt$n" 'corio_gdb_checkpoint|main_task|\?\? \('
	done
}

# The commands after the checkpoint, each output under an "==NAME" line.
set -- -ex 'echo ==tasks\n' -ex 'corio tasks'
for n in 1 2 3 4 5; do
	set -- "$@" -ex "echo ==bt$n\\n" -ex "corio bt $n"
done

# A live process, then its core.
if [ "${CORIO_ASAN:-0}" = 1 ]; then
	gcore=
else
	gcore="corio gcore $tmp/core"
fi
gdbrun "$tmp/live" -ex "source $script" -ex 'break corio_gdb_checkpoint' \
	-ex run "$@" -ex 'echo ==after\n' -ex 'bt' \
	-ex 'echo ==gcore\n' -ex "$gcore" -ex 'echo ==end\n' -ex kill "$prog"
if ! grep -q '^Breakpoint 1, corio_gdb_checkpoint' "$tmp/live"; then
	if grep -Eqi 'ptrace|operation not permitted|could not trace' \
			"$tmp/live"; then
		sed 's/^/    /' "$tmp/live"
		skip 'gdb cannot trace a process here (ptrace not permitted)'
	fi
	printf 'check-gdb: gdb never stopped at corio_gdb_checkpoint:\n' >&2
	sed 's/^/    /' "$tmp/live" >&2
	exit 1
fi
check_tasks 'live process' "$tmp/live"
# corio bt leaves the thread's own frames as they were.
expect 'live process' "$tmp/live" after '^#0 +corio_gdb_checkpoint \(' \
	'^#1 .* main_task \('
parts='live process'

if [ "${CORIO_ASAN:-0}" = 1 ]; then
	printf 'check-gdb: an ASan build: skipping the core file\n'
else
	expect 'corio gcore' "$tmp/live" gcore '^corio gcore: copied '
	if [ -s "$tmp/core" ]; then
		gdbrun "$tmp/corefile" -ex "source $script" "$@" "$prog" \
			"$tmp/core"
		expect 'core file' "$tmp/corefile" tasks \
			'^\(a core file or a remote process: WAITED'
		check_tasks 'core file' "$tmp/corefile"
		parts="$parts, core file"
	else
		printf 'check-gdb: corio gcore wrote no %s\n' "$tmp/core" >&2
		fail=1
	fi
	rm -f "$tmp/core"
fi

# Auto-loaded for libcorio.so, from where make install puts it.
if [ -n "$soprog" ]; then
	real=$(readlink -f "$solib")
	mkdir -p "$tmp/auto-load${real%/*}"
	cp "$script" "$tmp/auto-load$real-gdb.py"
	gdbrun "$tmp/so" -iex "add-auto-load-safe-path $tmp/auto-load" \
		-iex "add-auto-load-scripts-directory $tmp/auto-load" \
		-ex 'break corio_gdb_checkpoint' -ex run "$@" -ex kill \
		"$soprog"
	check_tasks 'auto-loaded for libcorio.so' "$tmp/so"
	parts="$parts, auto-loaded for libcorio.so"
fi

if [ "$fail" != 0 ]; then
	printf 'check-gdb: the output of that gdb run:\n' >&2
	sed 's/^/    /' "${failed_out:-/dev/null}" >&2
	exit 1
fi
printf 'check-gdb: corio tasks and corio bt: %s checks passed (%s)\n' \
	"$checks" "$parts"
