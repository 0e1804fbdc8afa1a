#!/bin/sh
#
# tests/check-deb.sh - make check-deb: the packages of make deb, installed.
#
# First, without privileges, the three .debs of build/deb/ are read with
# dpkg-deb: the files are where they belong (libcorio.so.0 in libcorio0;
# corio.h, libcorio.a, libcorio.so, corio.pc and every man page of man/ in
# libcorio-dev; the four example programs in corio-examples) and the
# dependencies are those a user needs (libcorio-dev on libcorio0 of the same
# version, liburing-dev and libboost-context-dev; the library on liburing
# and Boost.Context's runtime).
#
# Then, as root, a fresh Debian root (debootstrap --variant=minbase of this
# machine's release, plus gcc, libc6-dev and pkg-config) gets the .debs with
# apt-get install, which must find every dependency on the mirror.  In it,
# examples/greet.c is built with pkg-config twice, against libcorio.so and
# against libcorio.a, and each build must print "Hello..." and, a second
# later, "...Asyncio World!"; the packaged examples run too (greet and
# echo-demo.sh), and apt-get purge must take the packages away again.
#
# The minbase root is made once and kept as build/check-deb/base.tar; each
# run starts from a fresh copy of it in build/check-deb/root, which is
# removed afterwards (kept on failure, to look into).  Downloaded .debs are
# kept in build/check-deb/archives.  CHECK_DEB_MIRROR overrides the mirror
# (http://deb.debian.org/debian).
#
# Exit 0 on success, 1 on a failure, 77 (a skip) when it cannot run: not
# root, no debootstrap or no mirror.

cd "$(dirname "$0")/.." || exit 2

fail()
{
	printf 'check-deb: FAIL: %s\n' "$*" >&2
	exit 1
}

skip()
{
	printf 'check-deb: SKIP: %s\n' "$*"
	exit 77
}

say()
{
	printf 'check-deb: %s\n' "$*"
}

version=$(sed -n 's/^VERSION=//p' configure)
[ -n "$version" ] || fail "no VERSION= line in configure"
command -v dpkg-deb >/dev/null 2>&1 || skip "dpkg-deb is missing: not a Debian system?"
arch=$(dpkg --print-architecture) || fail "dpkg --print-architecture failed"
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null) ||
	multiarch=$(gcc -print-multiarch 2>/dev/null)
[ -n "$multiarch" ] || fail "cannot tell the multiarch triplet (dpkg-dev is missing?)"

debdir=build/deb
lib_deb=$debdir/libcorio0_${version}_$arch.deb
dev_deb=$debdir/libcorio-dev_${version}_$arch.deb
ex_deb=$debdir/corio-examples_${version}_$arch.deb
for deb in "$lib_deb" "$dev_deb" "$ex_deb"; do
	[ -f "$deb" ] || fail "$deb is missing: run make deb first"
done

# ---- what the packages hold ------------------------------------------------

# has DEB PATH...: each PATH (./usr/...) is in DEB.
has()
{
	deb=$1
	shift
	list=$(dpkg-deb -c "$deb" | awk '{ print $6 }') ||
		fail "dpkg-deb -c $deb failed"
	for path in "$@"; do
		printf '%s\n' "$list" | grep -qxF "$path" ||
			fail "$deb lacks $path (dpkg-deb -c lists what it holds; if the tree changed since make deb, rerun make deb)"
	done
}

# field DEB FIELD: a control field of DEB.
field()
{
	dpkg-deb -f "$1" "$2" || fail "dpkg-deb -f $1 $2 failed"
}

# depends_on DEB REGEX: DEB's Depends has an entry matching REGEX.
depends_on()
{
	field "$1" Depends | tr ',' '\n' | sed 's/^ *//' | grep -qE "$2" ||
		fail "$1: Depends ($(field "$1" Depends)) has nothing like $2"
}

say "the files and dependencies of the packages in $debdir"
libdir=./usr/lib/$multiarch
has "$lib_deb" "$libdir/libcorio.so.$version" "$libdir/libcorio.so.0"
depends_on "$lib_deb" '^liburing2( |$)'
depends_on "$lib_deb" '^libboost-context[0-9.]+( |$)'
depends_on "$lib_deb" '^libc6( |$)'
dpkg-deb -I "$lib_deb" shlibs >/dev/null 2>&1 || fail "$lib_deb has no shlibs file"
dpkg-deb -I "$lib_deb" symbols >/dev/null 2>&1 || fail "$lib_deb has no symbols file"

has "$dev_deb" ./usr/include/corio.h "$libdir/libcorio.a" \
	"$libdir/libcorio.so" "$libdir/pkgconfig/corio.pc" \
	./usr/share/man/man7/corio.7.gz
for page in man/man3/*.3; do
	has "$dev_deb" "./usr/share/$page.gz"
done
depends_on "$dev_deb" "^libcorio0 \\(= $version\\)"
depends_on "$dev_deb" '^liburing-dev( |$)'
depends_on "$dev_deb" '^libboost-context-dev( |$)'
pc=$(dpkg-deb --fsys-tarfile "$dev_deb" | tar -xOf - "$libdir/pkgconfig/corio.pc") ||
	fail "cannot read corio.pc out of $dev_deb"
printf '%s\n' "$pc" | grep -qx "libdir=/usr/lib/$multiarch" ||
	fail "corio.pc in $dev_deb does not say libdir=/usr/lib/$multiarch:
$pc"
printf '%s\n' "$pc" | grep -qx "Version: $version" ||
	fail "corio.pc in $dev_deb does not say Version: $version"

exdir=./usr/lib/corio/examples
has "$ex_deb" "$exdir/greet" "$exdir/echo-server" "$exdir/echo-client" \
	"$exdir/kv-server" "$exdir/echo-demo.sh" \
	./usr/share/doc/corio-examples/examples/greet.c
depends_on "$ex_deb" '^liburing2( |$)'

# symbols: every symbol libcorio.so.0 exports is listed.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-deb.XXXXXX") || fail "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$lib_deb" "$tmp/x" || fail "dpkg-deb -x $lib_deb failed"
dpkg-deb -e "$lib_deb" "$tmp/ctl" || fail "dpkg-deb -e $lib_deb failed"
if command -v nm >/dev/null 2>&1; then
	nm -D --defined-only "$tmp/x/usr/lib/$multiarch/libcorio.so.0" |
		awk '$2 != "A" { sub("@@", "@", $3); print $3 }' | sort >"$tmp/nm"
	awk '/^ / { print $1 }' "$tmp/ctl/symbols" | grep -v '^CORIO_[0-9.]*@' |
		sort >"$tmp/sym"
	cmp -s "$tmp/nm" "$tmp/sym" ||
		fail "the symbols file of $lib_deb differs from what libcorio.so.0 exports (< exported, > listed):
$(diff "$tmp/nm" "$tmp/sym")"
fi
say "ok: files, Depends, shlibs and symbols"

# ---- a fresh Debian root -----------------------------------------------------

[ "$(id -u)" = 0 ] || skip "not root: debootstrap and chroot need root (the file checks above passed)"
if ! command -v debootstrap >/dev/null 2>&1; then
	if command -v apt-get >/dev/null 2>&1; then
		say "installing debootstrap"
		DEBIAN_FRONTEND=noninteractive apt-get install -y \
			--no-install-recommends debootstrap >/dev/null ||
			skip "debootstrap is missing and apt-get install debootstrap failed"
	else
		skip "debootstrap is missing"
	fi
fi

work=build/check-deb
root=$work/root
base=$work/base.tar
archives=$work/archives
mirror=${CHECK_DEB_MIRROR:-http://deb.debian.org/debian}
# shellcheck disable=SC1091 # the system's, not ours
suite=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
[ -n "$suite" ] || skip "no VERSION_CODENAME in /etc/os-release: which Debian is this?"

umount_all()
{
	if mountpoint -q "$root/proc" 2>/dev/null; then
		umount "$root/proc" || umount -l "$root/proc"
	fi
}
trap 'umount_all; rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$work" "$archives" || fail "cannot create $work"
umount_all
rm -rf "$root" || fail "cannot remove the old $root"

if [ ! -f "$base" ]; then
	say "debootstrap --variant=minbase $suite from $mirror into $work/base (once; kept as $base)"
	rm -rf "$work/base"
	start=$(date +%s)
	if ! debootstrap --variant=minbase --include=gcc,libc6-dev,pkg-config \
			"$suite" "$work/base" "$mirror" >"$work/debootstrap.log" 2>&1; then
		tail -n 20 "$work/debootstrap.log" | sed 's/^/    /'
		rm -rf "$work/base"
		skip "debootstrap $suite from $mirror failed (no network or mirror?): see $work/debootstrap.log"
	fi
	# Not the downloaded .debs: the archives cache keeps what a run needs.
	rm -f "$work/base/var/cache/apt/archives/"*.deb
	tar -C "$work/base" -cf "$base.new" . || fail "cannot write $base"
	mv "$base.new" "$base" || fail "cannot write $base"
	rm -rf "$work/base"
	say "debootstrap took $(($(date +%s) - start)) s"
fi

say "a fresh root in $root from $base"
mkdir "$root" || fail "cannot create $root"
tar -C "$root" -xf "$base" || fail "cannot unpack $base into $root"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || :
mount -t proc proc "$root/proc" || fail "cannot mount /proc in $root"
mkdir -p "$root/tmp/debs" "$root/tmp/greet" || fail "cannot write into $root"
cp "$lib_deb" "$dev_deb" "$ex_deb" "$root/tmp/debs/" || fail "cannot copy the .debs"
cp examples/greet.c "$root/tmp/greet/" || fail "cannot copy examples/greet.c"
for deb in "$archives"/*.deb; do
	[ -f "$deb" ] && cp "$deb" "$root/var/cache/apt/archives/"
done

# in_root CMD: CMD run by sh in the root, from /tmp/greet, with a plain
# environment.
in_root()
{
	chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
		/bin/sh -c "cd /tmp/greet && $1"
}

say "apt-get install the three packages (and what they depend on) in the root"
in_root 'apt-get update -q' >"$work/apt.log" 2>&1 ||
	{ tail -n 20 "$work/apt.log" | sed 's/^/    /'
	  skip "apt-get update in the root failed (no network or mirror?): see $work/apt.log"; }
if ! in_root "apt-get install -y --no-install-recommends \
		/tmp/debs/libcorio0_${version}_$arch.deb \
		/tmp/debs/libcorio-dev_${version}_$arch.deb \
		/tmp/debs/corio-examples_${version}_$arch.deb" >>"$work/apt.log" 2>&1; then
	tail -n 30 "$work/apt.log" | sed 's/^/    /'
	fail "apt-get install of the packages in the root failed: see $work/apt.log; the root is $root"
fi
cp "$root/var/cache/apt/archives/"*.deb "$archives/" 2>/dev/null || :

# check_greet PROG: PROG (in the root's /tmp/greet) prints greet's two lines,
# the second at least a second after the first.
check_greet()
{
	start=$(date +%s%N)
	out=$(in_root "timeout 20 $1" 2>&1) ||
		fail "$1 in the root failed: $out"
	ms=$((($(date +%s%N) - start) / 1000000))
	want=$(printf 'Hello...\n...Asyncio World!')
	[ "$out" = "$want" ] ||
		fail "$1 in the root printed:
$out
instead of:
$want"
	[ "$ms" -ge 1000 ] || fail "$1 took $ms ms, less than its 1 s sleep"
	say "ok: $1 printed Hello... and ...Asyncio World! ($ms ms)"
}

say "gcc greet.c \$(pkg-config --cflags --libs corio) in the root"
cflags="-Wall -Wextra -Werror"
out=$(in_root "gcc $cflags -o greet greet.c \$(pkg-config --cflags --libs corio)" 2>&1) ||
	fail "building greet.c against the packages failed:
$out"
needed=$(in_root 'LC_ALL=C ldd ./greet' 2>&1) || fail "ldd ./greet failed: $needed"
# /lib is /usr/lib in a merged-/usr root.
printf '%s\n' "$needed" |
	grep -qE "libcorio\.so\.0 => (/usr)?/lib/$multiarch/libcorio\.so\.0 " ||
	fail "greet does not load the packaged libcorio.so.0:
$needed"
if printf '%s\n' "$needed" | grep -q 'not found'; then
	fail "greet misses a shared library:
$needed"
fi
check_greet ./greet

say "gcc greet.c libcorio.a \$(pkg-config --static --libs corio) in the root"
out=$(in_root "gcc $cflags -o greet-static greet.c \$(pkg-config --cflags corio) \
	\$(pkg-config --variable=libdir corio)/libcorio.a \
	\$(pkg-config --static --libs corio | sed 's/-lcorio//')" 2>&1) ||
	fail "building greet.c against libcorio.a failed:
$out"
if in_root 'ldd ./greet-static' 2>&1 | grep -q libcorio; then
	fail "greet-static loads libcorio.so: it was to link libcorio.a"
fi
check_greet ./greet-static

check_greet /usr/lib/corio/examples/greet
out=$(in_root 'timeout 120 /usr/lib/corio/examples/echo-demo.sh' 2>&1) ||
	fail "/usr/lib/corio/examples/echo-demo.sh in the root failed:
$out"
say "ok: /usr/lib/corio/examples/echo-demo.sh"

out=$(in_root 'apt-get purge -y libcorio0 libcorio-dev corio-examples' 2>&1) ||
	fail "apt-get purge of the packages failed:
$out"
left=$(find "$root/usr/lib/$multiarch" "$root/usr/include" "$root/usr/lib/corio" \
	-name '*corio*' 2>/dev/null)
[ -z "$left" ] || fail "files left after apt-get purge:
$left"
say "ok: apt-get purge leaves nothing behind"

umount_all
rm -rf "$root"
say "passed"
