#!/bin/sh
#
# tests/check-readme.sh - the README's sample of `make demo` is what the
# demo prints.
#
# The sample: the first fenced block after the README line that begins
# "`make demo` prints".  The output: `make demo` run here, less make's
# build lines ("  CC      src/loop.o", "  RUN     examples/greet"), which
# the README leaves out.  On both sides every number becomes N, since the
# figures, the port and the pid vary from run to run; then they must be
# the same lines in the same order.  Only shapes are compared, never
# values, so a slow or loaded machine passes as a fast one does.
#
# The demo starts and stops its own echo server (examples/echo-demo.sh
# kills it on every way out); an INT or TERM here is passed on to the
# make that runs it, so nothing is left running.  POSIX sh, awk, sed and
# diff; make check runs it as check-readme, once the examples are built.

cd "$(dirname "$0")/.." || exit 2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/corio-check-readme.XXXXXX") || exit 2
pid=
# shellcheck disable=SC2317 # run by the traps
stop()
{
	if [ -n "$pid" ]; then
		kill -TERM "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	fi
	exit "$1"
}
trap 'rm -rf "$tmp"' EXIT
trap 'stop 129' HUP
trap 'stop 130' INT
trap 'stop 143' TERM

awk '
	found == 0 && /^`make demo` prints/ { found = 1; next }
	found == 1 && /^```/ { found = 2; next }
	found == 2 && /^```/ { found = 3; exit }
	found == 2 { print }
	END { exit found == 3 ? 0 : 1 }
' README.md >"$tmp/sample" || {
	# shellcheck disable=SC2016 # the backquotes are the README's
	printf 'check-readme: README.md has no fenced block after a line "`make demo` prints"\n' >&2
	exit 1
}

# A make of its own: not the -j, jobserver or V=1 of the make check that
# runs this, which would add lines the README does not show.
MAKEFLAGS='' MFLAGS='' ${MAKE:-make} --no-print-directory V=0 demo \
	>"$tmp/output" 2>&1 &
pid=$!
wait "$pid"
rc=$?
pid=
if [ "$rc" -ne 0 ]; then
	sed 's/^/    /' "$tmp/output" >&2
	printf 'check-readme: make demo failed (exit %s)\n' "$rc" >&2
	exit 1
fi

# shape: the lines of standard input with every number as N.
shape()
{
	sed 's/[0-9][0-9]*/N/g'
}
shape <"$tmp/sample" >"$tmp/sample.shape"
grep -v '^  [A-Z][A-Z]* ' "$tmp/output" | shape >"$tmp/output.shape"
if ! diff -u "$tmp/sample.shape" "$tmp/output.shape" >"$tmp/diff"; then
	printf 'check-readme: make demo no longer prints what README.md shows (numbers as N; - README, + make demo):\n' >&2
	sed '1,2d; s/^/    /' "$tmp/diff" >&2
	printf 'check-readme: what make demo printed:\n' >&2
	sed 's/^/    /' "$tmp/output" >&2
	exit 1
fi
exit 0
