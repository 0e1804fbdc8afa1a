#!/bin/sh
#
# debian/make-deb.sh - make deb: corio's Debian packages in build/deb/.
#
# Copies the working tree (git ls-files -co --exclude-standard: tracked and
# untracked files, not ignored ones; the whole tree less build/ and .git
# outside git) to build/deb/corio-VERSION, runs dpkg-buildpackage -us -uc -b
# there (which configures, builds, runs make check and packages) and leaves
# the .deb, .changes and .buildinfo files in build/deb/.  The tree itself
# stays configured and built as it was.  Then lintian checks the .changes;
# any error or warning fails.  As root, missing build tools and build
# dependencies are installed with apt-get; otherwise they are named.
#
# DEB_BUILD_OPTIONS=nocheck skips make check, as for any Debian package.

cd "$(dirname "$0")/.." || exit 2

out=build/deb

die()
{
	printf 'make deb: %s\n' "$*" >&2
	exit 1
}

# Build tools: a command each, and the Debian package that has it.
missing=
for pair in dpkg-buildpackage:dpkg-dev dh:debhelper lintian:lintian \
		fakeroot:fakeroot; do
	command -v "${pair%%:*}" >/dev/null 2>&1 || missing="$missing ${pair#*:}"
done
if [ -n "$missing" ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		printf 'make deb: installing the build tools:%s\n' "$missing"
		# shellcheck disable=SC2086 # a list of package names
		DEBIAN_FRONTEND=noninteractive apt-get install -y \
			--no-install-recommends $missing ||
			die "apt-get install$missing failed (apt-get update first?)"
	else
		die "missing build tools: install them as root with: apt-get install --no-install-recommends$missing"
	fi
fi

version=$(sed -n 's/^VERSION=//p' configure)
[ -n "$version" ] || die "no VERSION= line in configure"
debversion=$(dpkg-parsechangelog -S Version) || die "cannot read debian/changelog"
[ "$debversion" = "$version" ] ||
	die "debian/changelog is at $debversion but configure's VERSION is $version: add a changelog entry (dch -v $version)"

# The build dependencies (debian/control), installed as root if missing.
if ! dpkg-checkbuilddeps 2>/dev/null; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		printf 'make deb: installing the build dependencies of debian/control\n'
		DEBIAN_FRONTEND=noninteractive apt-get build-dep -y \
			--no-install-recommends ./ ||
			die "apt-get build-dep ./ failed (apt-get update first?)"
	else
		dpkg-checkbuilddeps
		die "install the build dependencies above as root (apt-get build-dep ./), then rerun make deb"
	fi
fi

src=$out/corio-$version
rm -rf "$out" || die "cannot remove $out"
mkdir -p "$src" || die "cannot create $src"

printf 'make deb: copying the tree to %s\n' "$src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	# Files deleted from the work tree but not from the index are left out.
	git ls-files -co --exclude-standard | while IFS= read -r f; do
		if [ -e "$f" ] || [ -L "$f" ]; then
			printf '%s\n' "$f"
		fi
	done | tar -cf - -T - | tar -xf - -C "$src" ||
		die "cannot copy the tree to $src"
else
	# No git: everything; debian/rules clean (make distclean) tidies up.
	tar -cf - --exclude=./build --exclude=./.git . | tar -xf - -C "$src" ||
		die "cannot copy the tree to $src"
fi

printf 'make deb: dpkg-buildpackage -us -uc -b in %s (log: %s/build.log)\n' \
	"$src" "$out"
# Not the outer make's jobserver: dh runs make with -j from -Jauto.
status=$out/build.status
{
	(cd "$src" && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
		dpkg-buildpackage -us -uc -b -Jauto) 2>&1
	echo $? >"$status"
} | tee "$out/build.log"
rc=$(cat "$status" 2>/dev/null)
rm -f "$status"
if [ "$rc" != 0 ]; then
	if grep -q '^dpkg-gensymbols: error: some new symbols appeared' \
			"$out/build.log"; then
		printf 'make deb: libcorio.so.0 exports symbols that debian/libcorio0.symbols does not list (+ above); to list them all:\n    cp %s debian/libcorio0.symbols\n' \
			"$src/debian/libcorio0/DEBIAN/symbols" >&2
	fi
	die "dpkg-buildpackage failed (exit ${rc:-?}): see $out/build.log; the tree it ran in is $src"
fi
rm -rf "$src"

arch=$(dpkg-architecture -qDEB_HOST_ARCH) || die "dpkg-architecture failed"
changes=$out/corio_${version}_$arch.changes
[ -f "$changes" ] || die "dpkg-buildpackage made no $changes"

printf 'make deb: lintian %s\n' "$changes"
lintian --fail-on error,warning "$changes" >"$out/lintian.log" 2>&1
lrc=$?
cat "$out/lintian.log"
if [ "$lrc" != 0 ] || grep -q '^[EW]: ' "$out/lintian.log"; then
	die "lintian reports errors or warnings (exit $lrc): see above, also in $out/lintian.log"
fi
printf 'make deb: lintian-clean packages in %s/:\n' "$out"
for f in "$out"/*.deb; do
	printf '    %s\n' "$f"
done
