#!/bin/sh
#
# share/seccomp-io_uring.sh - remakes share/seccomp-io_uring.json.
#
#   sh share/seccomp-io_uring.sh [BASE] >share/seccomp-io_uring.json
#
# BASE (default /usr/share/containers/seccomp.json, from Debian's package
# golang-github-containers-common) is a default seccomp profile of the
# container runtimes, in the JSON format that docker, podman and cri-o
# take; its last rule must close its "syscalls" list, as in that file.
# The output is BASE, unchanged, plus one rule at the end of "syscalls"
# that allows io_uring_setup, io_uring_enter and io_uring_register.
# share/seccomp-io_uring.txt says where the shipped file comes from.

base=${1:-/usr/share/containers/seccomp.json}
if [ ! -r "$base" ]; then
	printf 'seccomp-io_uring.sh: cannot read %s (Debian package: golang-github-containers-common)\n' \
		"$base" >&2
	exit 1
fi
if grep -q io_uring "$base"; then
	printf 'seccomp-io_uring.sh: %s already names io_uring: check it by hand\n' \
		"$base" >&2
	exit 1
fi

# The base ends with "\t\t}" (the last rule), "\t]" (syscalls) and "}".
awk '
{ line[NR] = $0 }
END {
	for (end = NR; end > 0 && line[end] != "\t]"; end--)
		;
	if (end < 2 || line[end - 1] != "\t\t}") {
		print "seccomp-io_uring.sh: no \"\\t]\" closing the syscalls list" \
			> "/dev/stderr"
		exit 1
	}
	for (i = 1; i < end - 1; i++)
		print line[i]
	print "\t\t},"
	print "\t\t{"
	print "\t\t\t\"names\": ["
	print "\t\t\t\t\"io_uring_enter\","
	print "\t\t\t\t\"io_uring_register\","
	print "\t\t\t\t\"io_uring_setup\""
	print "\t\t\t],"
	print "\t\t\t\"action\": \"SCMP_ACT_ALLOW\","
	print "\t\t\t\"args\": [],"
	print "\t\t\t\"comment\": \"corio: io_uring, which the base profile refuses\","
	print "\t\t\t\"includes\": {},"
	print "\t\t\t\"excludes\": {}"
	print "\t\t}"
	for (i = end; i <= NR; i++)
		print line[i]
}' "$base"
