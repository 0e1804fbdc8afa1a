#!/bin/sh
#
# tests/check-errors.sh - every error that a man page lists has a test that
# provokes it.
#
# The documented errors: in the ERRORS section of each man/man3/*.3 page,
# the tag line of every .TP entry (the line after the .TP) names one or
# more errno values, as \-EBADF or EBADF: each is a (page, errno) pair.
# Errors named only in running text ("Other errors of close(2) ... such as
# \-EIO") are examples of what passes through, not entries.
#
# The proof: a comment on the line of the assertion that proves a pair, or
# on a line just above it, in one of tests/*.c:
#
#	/* errors: corio_read.3 EBADF */
#	/* errors: corio_queue.3 EPIPE EAGAIN */
#
# The script fails, naming each documented pair that no tag covers and
# each tag that names a pair no page documents (a typo, or an error that
# left its page); otherwise it prints one line of summary.  POSIX sh, awk,
# sed, sort and comm; make check runs it.

cd "$(dirname "$0")/.." || exit 2

tmp=$(mktemp -d "${TMPDIR:-/tmp}/corio-check-errors.XXXXXX") || exit 2
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# "page errno" for every entry of every ERRORS section.
for page in man/man3/*.3; do
	[ -f "$page" ] || continue
	awk -v page="${page##*/}" '
		/^\.SH/ {
			in_errors = ($0 ~ /^\.SH[ \t]+"?ERRORS"?[ \t]*$/)
			tag = 0
			next
		}
		!in_errors { next }
		tag {
			n = split($0, w, /[^A-Za-z0-9_]+/)
			for (i = 1; i <= n; i++)
				if (w[i] ~ /^E[A-Z0-9]+$/)
					print page, w[i]
			tag = 0
			next
		}
		/^\.TP/ { tag = 1 }
	' "$page"
done | sort -u >"$tmp/documented"

# "page errno" for every errno of every tag in tests/*.c; a tag without
# both is reported as "! file:line: text".
for src in tests/*.c; do
	[ -f "$src" ] || continue
	awk -v src="$src" '
		{
			line = $0
			while (match(line, /\/\*[ \t]*errors:[^*]*\*\//)) {
				tag = substr(line, RSTART, RLENGTH)
				line = substr(line, RSTART + RLENGTH)
				body = tag
				sub(/^\/\*[ \t]*errors:/, "", body)
				sub(/\*\/$/, "", body)
				n = split(body, w)
				if (n < 2 || w[1] !~ /^[a-z0-9_]+\.3$/) {
					print "! " src ":" FNR ": " tag
					continue
				}
				for (i = 2; i <= n; i++)
					print w[1], w[i]
			}
		}
	' "$src"
done >"$tmp/tags"
grep '^!' "$tmp/tags" >"$tmp/malformed"
grep -v '^!' "$tmp/tags" | sort -u >"$tmp/tagged"

comm -23 "$tmp/documented" "$tmp/tagged" >"$tmp/missing"
comm -13 "$tmp/documented" "$tmp/tagged" >"$tmp/stray"

while read -r page err; do
	printf 'check-errors: man/man3/%s lists %s, but no test is tagged /* errors: %s %s */\n' \
		"$page" "$err" "$page" "$err" >&2
done <"$tmp/missing"
while read -r page err; do
	printf 'check-errors: a test is tagged /* errors: %s %s */, but the ERRORS of man/man3/%s do not list %s\n' \
		"$page" "$err" "$page" "$err" >&2
done <"$tmp/stray"
sed 's/^! \(.*\)/check-errors: \1: a tag names one page (corio_x.3), then errno values/' \
	"$tmp/malformed" >&2

total=$(wc -l <"$tmp/documented")
total=$((total + 0))
missing=$(wc -l <"$tmp/missing")
missing=$((missing + 0))
if [ "$total" = 0 ]; then
	printf 'check-errors: no ERRORS entries found in man/man3/*.3\n' >&2
	exit 1
fi
if [ "$missing" != 0 ] || [ -s "$tmp/stray" ] || [ -s "$tmp/malformed" ]; then
	printf 'check-errors: %s of %s documented errors have no test\n' \
		"$missing" "$total" >&2
	exit 1
fi
printf 'check-errors: %s documented errors, each provoked by a test\n' "$total"
