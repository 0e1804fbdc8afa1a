#!/bin/sh
#
# tests/run.sh - run every tests/test-* binary, each in its own process.
#
# Each binary runs from the top of the tree under timeout (60 s times
# CORIO_TEST_TIMEOUT_MULT, an integer, default 1), prefixed by
# $CORIO_TEST_WRAPPER when set (make check-valgrind sets it).  Exit status 0
# is a pass, 77 a skip, anything else a failure.  A failing binary's output
# is shown (every binary's with CORIO_TEST_VERBOSE=1).  The last line is
# "N passed, N failed"; the script exits 1 if any binary failed.

cd "$(dirname "$0")/.." || exit 2

mult=${CORIO_TEST_TIMEOUT_MULT:-1}
case $mult in
'' | *[!0-9]*)
	printf 'run.sh: CORIO_TEST_TIMEOUT_MULT must be a whole number, not "%s"\n' \
		"$mult" >&2
	exit 2
	;;
esac
if [ "$mult" -lt 1 ]; then
	mult=1
fi
# Tests scale their timing tolerances by the same factor.
CORIO_TEST_TIMEOUT_MULT=$mult
export CORIO_TEST_TIMEOUT_MULT
limit=$((60 * mult))

case ${CI:-} in
1 | true)
	CMOCKA_MESSAGE_OUTPUT=TAP
	export CMOCKA_MESSAGE_OUTPUT
	;;
esac
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
export UBSAN_OPTIONS

out=$(mktemp "${TMPDIR:-/tmp}/corio-test.XXXXXX") || exit 2
trap 'rm -f "$out"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# show FILE: a binary's output, indented, at most its last 200 lines.
show()
{
	lines=$(wc -l <"$1")
	if [ "$lines" -gt 200 ]; then
		printf '    [... %s lines, the last 200 follow]\n' "$lines"
	fi
	tail -n 200 "$1" | sed 's/^/    /'
}

passed=0
failed=0
skipped=0
for t in tests/test-*; do
	case $t in
	*.c | *.h | *.o | *.d) continue ;;
	esac
	if [ ! -f "$t" ] || [ ! -x "$t" ]; then
		continue
	fi

	start=$(date +%s)
	# shellcheck disable=SC2086 # the wrapper is a command line: split it
	timeout -k 10 "$limit" ${CORIO_TEST_WRAPPER:-} "./$t" \
		</dev/null >"$out" 2>&1
	rc=$?
	# A binary that ignores timeout's SIGTERM gets SIGKILL 10 s later.
	if [ "$rc" = 137 ] && [ $(($(date +%s) - start)) -ge "$limit" ]; then
		rc=124
	fi

	case $rc in
	0)
		passed=$((passed + 1))
		printf 'PASS %s\n' "$t"
		[ "${CORIO_TEST_VERBOSE:-0}" = 1 ] && show "$out"
		;;
	77)
		skipped=$((skipped + 1))
		printf 'SKIP %s\n' "$t"
		# The reason, if the binary printed one.
		tail -n 1 "$out" | sed 's/^/    /'
		;;
	124)
		failed=$((failed + 1))
		printf 'FAIL %s (exit 124: timed out after %s s)\n' "$t" "$limit"
		show "$out"
		;;
	*)
		failed=$((failed + 1))
		why=
		if [ "$rc" = 99 ] && [ -n "${CORIO_TEST_WRAPPER:-}" ]; then
			why=": the wrapper found errors"
		elif [ "$rc" -gt 128 ] && [ "$rc" -lt 160 ]; then
			why=": killed by signal $((rc - 128))"
		fi
		printf 'FAIL %s (exit %s%s)\n' "$t" "$rc" "$why"
		show "$out"
		;;
	esac
done

if [ $((passed + failed + skipped)) = 0 ]; then
	printf 'run.sh: no test binaries in tests/\n' >&2
fi
printf '%s skipped\n' "$skipped"
printf '%s passed, %s failed\n' "$passed" "$failed"
[ "$failed" = 0 ] || exit 1
exit 0
