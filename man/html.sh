#!/bin/sh
#
# man/html.sh - the man pages as HTML pages that link to each other, for
# make html and make check-html.  POSIX sh, sed and awk; needs mandoc.
#
#   sh man/html.sh build DIR   man/man*/*.N into DIR/NAME.N.html, plus
#                              DIR/index.html and DIR/corio.css
#   sh man/html.sh check DIR   fail on a broken local link or anchor, a
#                              man page without its HTML page, a page that
#                              DIR/index.html does not link, or a page in
#                              the index's "Other" group
#
# Run it from the top of the tree.
#
# Cross references: mandoc links .Xr in mdoc(7), but mandoc 1.14.6 leaves a
# man(7) ".BR corio_join (3)" as <b>corio_join</b>(3).  Such a reference
# becomes a link when man/ has that page; a reference to a .so stub links
# straight to the stub's target.  References to pages that are not ours
# (io_uring_enter(2), signalfd(2)) stay plain text: check cannot follow a
# link off this machine, and an unchecked link rots.
#
# A .so stub (a page whose one line is ".so man3/corio_read.3") becomes a
# small page that redirects to its target, so old links and bookmarks to
# NAME.3.html keep working without a second copy of the target.
#
# Groups in index.html come from include/corio.h: each of its section
# comments opens with a phrase ("Time: CLOCK_MONOTONIC nanoseconds.") and
# names pages ("corio_now(3)"), and the CORIO_API functions below it belong
# to it.  A page goes to the group of the first section that names it or one
# of its functions, so a new function lands in its group with no edit here.
# The table below merges sections into the groups of corio(7); a section it
# does not list is a group of its own, under its phrase.  The pages that
# the header's opening comment names ("Start with corio(7)") and the other
# section 7 pages come first, as Overview; a page no comment or function
# claims is in "Other", which check refuses.

set -eu

# Section phrase prefix, a tab, the group it belongs to.
GROUP_TABLE='The loop	The loop
Tasks	Tasks
Stacks	Tasks
Time	Time
Any io_uring operation	I/O operations
Operations	I/O operations
Networking	Networking
Blocking calls	Blocking calls and signals
Signals	Blocking calls and signals
Synchronisation	Synchronisation and groups
Task groups	Synchronisation and groups
Buffered streams	Streams and subprocesses
Subprocesses	Streams and subprocesses
Introspection	Introspection'

HEADER=include/corio.h
CSS=corio.css

die()
{
	printf 'html.sh: %s\n' "$*" >&2
	exit 1
}

usage()
{
	printf 'usage: sh man/html.sh build|check DIR\n' >&2
	exit 2
}

# pages: one line per man page, "ID KIND TARGET": ID is NAME.N, KIND is
# page or alias, TARGET is the page an alias leads to (itself for a page),
# with chains of stubs followed.
pages()
{
	for f in man/man*/*.*; do
		case $f in
		*.[1-9]) ;;
		*) continue ;;
		esac
		[ -f "$f" ] || continue
		awk -v id="${f##*/}" '
			NF { n++ }
			FNR == 1 && $1 == ".so" && NF == 2 { so = $2 }
			END {
				if (so != "" && n == 1) {
					sub(/.*\//, "", so)
					print id, "alias", so
				} else {
					print id, "page", id
				}
			}' "$f"
	done | awk '
		{ id[NR] = $1; kind[$1] = $2; to[$1] = $3 }
		END {
			for (i = 1; i <= NR; i++) {
				t = id[i]
				for (hop = 0; hop < 8 && kind[t] == "alias"; hop++)
					t = to[t]
				if (!(t in kind) || kind[t] != "page") {
					sect = id[i]
					sub(/.*\./, "", sect)
					printf "html.sh: man/man%s/%s: .so leads to %s, which is not a page\n", \
						sect, id[i], t | "cat >&2"
					bad = 1
					continue
				}
				print id[i], kind[id[i]], t
			}
			exit bad
		}'
}

# groups PAGES: "ID<tab>GROUP" for every page (not alias), in index order.
groups()
{
	printf '%s\n' "$GROUP_TABLE" >"$tmp/table"
	awk -v table="$tmp/table" -v pagelist="$1" '
		BEGIN {
			FS = "\t"
			while ((getline line < table) > 0) {
				split(line, f, "\t")
				nt++
				pre[nt] = f[1]
				grp[nt] = f[2]
			}
			FS = " "
			while ((getline line < pagelist) > 0) {
				split(line, f, " ")
				to[f[1]] = f[3]
				if (f[2] == "page")
					order[++np] = f[1]
			}
		}
		function title(phrase,    i) {
			for (i = 1; i <= nt; i++)
				if (index(phrase, pre[i]) == 1)
					return grp[i]
			return phrase
		}
		function claim(ref) {
			if (!(ref in to) || cur == "")
				return
			ref = to[ref]
			if (!(ref in group)) {
				group[ref] = cur
				seq[++ns] = ref
			}
		}
		# The file header comment ("Start with corio(7)") opens the
		# overview; each later one, a section.
		/^\/\*$/ { incomment = 1; text = ""; next }
		incomment && /^ \*\/$/ {
			incomment = 0
			if (++blocks == 1) {
				cur = "Overview"
			} else {
				phrase = text
				sub(/^[ \t]+/, "", phrase)
				sub(/[.:].*/, "", phrase)
				cur = title(phrase)
			}
			s = text
			while (match(s, /[A-Za-z_][A-Za-z0-9_]*\([1-9]\)/)) {
				r = substr(s, RSTART, RLENGTH)
				s = substr(s, RSTART + RLENGTH)
				n = index(r, "(")
				claim(substr(r, 1, n - 1) "." substr(r, n + 1, 1))
			}
			next
		}
		incomment { sub(/^ \*/, ""); text = text " " $0; next }
		/CORIO_API/ && match($0, /[A-Za-z_][A-Za-z0-9_]*[ \t]*\(/) {
			r = substr($0, RSTART, RLENGTH)
			sub(/[ \t]*\($/, "", r)
			claim(r ".3")
		}
		END {
			for (i = 1; i <= ns; i++)
				if (group[seq[i]] == "Overview")
					print seq[i] "\tOverview"
			for (i = 1; i <= np; i++)
				if (order[i] ~ /\.7$/ && !(order[i] in group))
					print order[i] "\tOverview"
			for (i = 1; i <= ns; i++)
				if (group[seq[i]] != "Overview")
					print seq[i] "\t" group[seq[i]]
			for (i = 1; i <= np; i++)
				if (order[i] !~ /\.7$/ && !(order[i] in group))
					print order[i] "\tOther"
		}' "$HEADER"
}

# name_line FILE: the text of the NAME section of mandoc's HTML, as HTML.
name_line()
{
	awk '
		/id="NAME"/ { on = 1; next }
		on && /<\/section>/ { exit }
		on { s = s " " $0 }
		END {
			gsub(/<[^>]*>/, "", s)
			gsub(/[ \t]+/, " ", s)
			sub(/^ /, "", s)
			sub(/ $/, "", s)
			print s
		}' "$1"
}

# link PAGES ID <RAW >HTML: link the cross references of one page, and put
# a link to the index at its top.
link()
{
	awk -v pagelist="$1" -v self="$2" '
		BEGIN {
			while ((getline line < pagelist) > 0) {
				split(line, f, " ")
				to[f[1]] = f[3]
			}
		}
		# Opened minus closed <a> elements in s.
		function depth(s,    n) {
			n = gsub(/<a /, "&", s)
			return n - gsub(/<\/a>/, "&", s)
		}
		{
			out = ""
			s = $0
			re = "<b>[A-Za-z0-9_.+:-]+</b>\\([1-9][a-z]*\\)"
			while (match(s, re)) {
				pre = substr(s, 1, RSTART - 1)
				ref = substr(s, RSTART, RLENGTH)
				s = substr(s, RSTART + RLENGTH)
				out = out pre
				name = ref
				sub(/^<b>/, "", name)
				sub(/<\/b>.*/, "", name)
				sect = ref
				sub(/.*\(/, "", sect)
				sub(/\)$/, "", sect)
				id = name "." sect
				if ((id in to) && to[id] != self && depth(out) == 0)
					out = out "<a class=\"Xr\" href=\"" to[id] ".html\">" ref "</a>"
				else
					out = out ref
			}
			print out s
		}
		/^<body>$/ {
			print "<p class=\"corio-nav\"><a href=\"index.html\">corio manual pages</a></p>"
		}'
}

stylesheet()
{
	cat <<'EOF'
/* corio.css - for the pages that man/html.sh makes with mandoc -Thtml. */
body { max-width: 52em; margin: 1em auto; padding: 0 1em;
	font-family: sans-serif; line-height: 1.4; color: #222; }
table.head, table.foot { width: 100%; border-collapse: collapse;
	color: #666; font-size: smaller; }
td.head-vol { text-align: center; }
td.head-rtitle, td.foot-os { text-align: right; }
h1.Sh { font-size: 1.15em; margin: 1.4em 0 0.4em; }
h2.Ss { font-size: 1.05em; margin: 1.2em 0 0.3em; }
h1.Sh, h2.Ss { color: #333; }
.Pp { margin: 0.6em 0; }
a { color: #0645ad; }
a.permalink { color: inherit; text-decoration: none; }
a.permalink:hover { text-decoration: underline; }
pre { background: #f5f5f5; padding: 0.5em; overflow-x: auto; }
dl.Bl-tag > dt { margin-top: 0.5em; }
dl.Bl-tag > dd { margin-left: 2.5em; }
.Bd-indent { margin-left: 2.5em; }
p.corio-nav { font-size: smaller; margin: 0 0 0.5em; }
dl.corio-index > dt { margin-top: 0.6em; }
dl.corio-index > dd { margin-left: 2.5em; }
.corio-names { font-size: smaller; color: #555; }
ul.corio-toc { columns: 2; }
EOF
}

# alias_page ID TARGET: a page that sends the browser on to TARGET.
alias_page()
{
	name=${1%.*} sect=${1##*.} tname=${2%.*} tsect=${2##*.}
	cat <<EOF
<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8"/>
  <meta http-equiv="refresh" content="0; url=$2.html"/>
  <link rel="canonical" href="$2.html"/>
  <link rel="stylesheet" href="$CSS" type="text/css" media="all"/>
  <title>$name($sect)</title>
</head>
<body>
<p class="corio-nav"><a href="index.html">corio manual pages</a></p>
<p><b>$name</b>($sect) is documented in
  <a class="Xr" href="$2.html"><b>$tname</b>($tsect)</a>.</p>
</body>
</html>
EOF
}

# index_page PAGES GROUPS: index.html.
index_page()
{
	ver=$(awk '/^#define CORIO_VERSION_(MAJOR|MINOR|PATCH) / {
			v = v (v == "" ? "" : ".") $3 } END { print v }' "$HEADER")
	cat <<EOF
<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8"/>
  <meta name="viewport" content="width=device-width, initial-scale=1.0"/>
  <link rel="stylesheet" href="$CSS" type="text/css" media="all"/>
  <title>corio $ver manual pages</title>
</head>
<body>
<div class="manual-text">
<h1>corio $ver manual pages</h1>
EOF
	# One entry per page: its link, its NAME description, and the other
	# names it documents (the NAME line's, then any stub missing from it).
	awk -v pagelist="$1" -v tmp="$tmp" '
		BEGIN {
			FS = " "
			while ((getline line < pagelist) > 0) {
				split(line, f, " ")
				if (f[2] == "alias")
					aliases[f[3]] = aliases[f[3]] " " f[1]
			}
			FS = "\t"
		}
		function slug(s) {
			s = tolower(s)
			gsub(/[^a-z0-9]+/, "-", s)
			return s
		}
		function entry(id,    name, sect, line, names, desc, n, i, a, seen, k, list) {
			name = id
			sub(/\.[^.]*$/, "", name)
			sect = substr(id, length(name) + 2)
			getline line < (tmp "/" id ".name")
			close(tmp "/" id ".name")
			k = index(line, " - ")
			if (k) {
				names = substr(line, 1, k - 1)
				desc = substr(line, k + 3)
			} else {
				names = ""
				desc = line
			}
			list = ""
			seen[name] = 1
			n = split(names, a, /, */)
			for (i = 1; i <= n; i++)
				if (a[i] != "" && !(a[i] in seen)) {
					seen[a[i]] = 1
					list = list (list == "" ? "" : ", ") \
						"<a href=\"" id ".html\">" a[i] "</a>"
				}
			n = split(aliases[id], a, " ")
			for (i = 1; i <= n; i++) {
				k = a[i]
				sub(/\.[^.]*$/, "", k)
				if (!(k in seen)) {
					seen[k] = 1
					list = list (list == "" ? "" : ", ") \
						"<a href=\"" id ".html\">" k "</a>"
				}
			}
			print "<dt><a class=\"Xr\" href=\"" id ".html\"><b>" name "</b>(" sect ")</a></dt>"
			print "<dd>" desc (list == "" ? "" : \
				"<br/>\n  <span class=\"corio-names\">" list "</span>") "</dd>"
		}
		{
			if (!($2 in gseen)) {
				gseen[$2] = 1
				gorder[++ng] = $2
			}
			members[$2] = members[$2] " " $1
		}
		END {
			print "<ul class=\"corio-toc\">"
			for (g = 1; g <= ng; g++)
				print "  <li><a href=\"#" slug(gorder[g]) "\">" gorder[g] "</a></li>"
			print "</ul>"
			for (g = 1; g <= ng; g++) {
				s = slug(gorder[g])
				print "<section class=\"Sh\">"
				print "<h1 class=\"Sh\" id=\"" s "\"><a class=\"permalink\" href=\"#" s "\">" gorder[g] "</a></h1>"
				print "<dl class=\"corio-index\">"
				n = split(members[gorder[g]], m, " ")
				for (i = 1; i <= n; i++)
					entry(m[i])
				print "</dl>"
				print "</section>"
			}
		}' "$2"
	cat <<'EOF'
</div>
</body>
</html>
EOF
}

build()
{
	out=$1
	command -v mandoc >/dev/null 2>&1 ||
		die 'mandoc is not installed (Debian package: mandoc)'
	[ -f "$HEADER" ] || die "no $HEADER: run me from the top of the tree"
	new=$out.new
	rm -rf "$new"
	mkdir -p "$new"
	pages >"$tmp/pages"
	# link only reads the list that the loop reads.
	# shellcheck disable=SC2094
	while read -r id kind target; do
		if [ "$kind" = alias ]; then
			alias_page "$id" "$target" >"$new/$id.html"
			continue
		fi
		# From man/, so that a .so inside a page resolves.
		(cd man && mandoc -Thtml -W error \
			-Ostyle="$CSS",man=%N.%S.html "man${id##*.}/$id") \
			>"$tmp/$id.raw" || die "mandoc -Thtml man/man${id##*.}/$id failed"
		name_line "$tmp/$id.raw" >"$tmp/$id.name"
		link "$tmp/pages" "$id" <"$tmp/$id.raw" >"$new/$id.html"
	done <"$tmp/pages"
	groups "$tmp/pages" >"$tmp/groups"
	index_page "$tmp/pages" "$tmp/groups" >"$new/index.html"
	stylesheet >"$new/$CSS"
	rm -rf "$out"
	mv "$new" "$out"
}

# hrefs FILE...: "FILE<tab>TARGET" for every href and refresh url.
hrefs()
{
	awk '
		{
			s = $0
			while (match(s, /(href="[^"]*"|url=[^"]*")/)) {
				r = substr(s, RSTART, RLENGTH)
				s = substr(s, RSTART + RLENGTH)
				sub(/^(href="|url=)/, "", r)
				sub(/"$/, "", r)
				print FILENAME "\t" r
			}
		}' "$@"
}

check()
{
	out=$1
	[ -d "$out" ] || die "no $out/: run make html first"
	pages >"$tmp/pages"
	: >"$tmp/bad"
	# Every man page has its HTML page, and the index links it: a page
	# under its own name, an alias under its name, to its target.
	while read -r id kind target; do
		[ -f "$out/$id.html" ] ||
			printf '%s: no HTML page for man/man%s/%s\n' \
				"$out/$id.html" "${id##*.}" "$id" >>"$tmp/bad"
		if [ "$kind" = page ]; then
			want="<a class=\"Xr\" href=\"$id.html\"><b>${id%.*}</b>"
		else
			want="<a href=\"$target.html\">${id%.*}</a>"
		fi
		grep -F "$want" "$out/index.html" >/dev/null 2>&1 ||
			printf '%s: no link to %s (%s)\n' "$out/index.html" \
				"$id" "$want" >>"$tmp/bad"
	done <"$tmp/pages"
	# The index's "Other" group: pages no section of corio.h claims.
	awk '/id="other"/ { on = 1 } on && /<\/section>/ { exit }
		on && /<dt>/ { sub(/.*<b>/, ""); sub(/<\/b>.*/, "")
			print FILENAME ": " $0 " is in no section of corio.h: name it in a section comment there" }' \
		"$out/index.html" >>"$tmp/bad"
	# Every local href and refresh url names a file in DIR, and an anchor
	# names an id in that file.
	ids="$tmp/ids"
	awk '
		{
			s = $0
			while (match(s, /id="[^"]*"/)) {
				r = substr(s, RSTART + 4, RLENGTH - 5)
				s = substr(s, RSTART + RLENGTH)
				f = FILENAME
				sub(/.*\//, "", f)
				print f "#" r
			}
		}' "$out"/*.html >"$ids"
	hrefs "$out"/*.html | awk -F '\t' -v ids="$ids" -v out="$out" '
		BEGIN {
			while ((getline line < ids) > 0)
				id[line] = 1
		}
		$2 ~ /^[A-Za-z][A-Za-z0-9+.-]*:/ { next }
		{
			from = $1
			sub(/.*\//, "", from)
			file = $2
			frag = ""
			if ((k = index(file, "#"))) {
				frag = substr(file, k + 1)
				file = substr(file, 1, k - 1)
			}
			if (file == "")
				file = from
			if (!(file in exists)) {
				exists[file] = (getline junk < (out "/" file)) >= 0
				close(out "/" file)
			}
			if (seen[$0]++)
				next
			if (!exists[file])
				print $1 ": broken link to " $2 " (no " out "/" file ")"
			else if (frag != "" && !((file "#" frag) in id))
				print $1 ": broken link to " $2 " (no id=\"" frag "\" in " out "/" file ")"
		}' >>"$tmp/bad"
	if [ -s "$tmp/bad" ]; then
		n=$(wc -l <"$tmp/bad")
		head -n 20 "$tmp/bad" >&2
		[ "$n" -le 20 ] || printf '... and %s more\n' $((n - 20)) >&2
		printf 'check-html: %s problem(s) in %s/\n' "$n" "$out" >&2
		exit 1
	fi
}

[ $# = 2 ] || usage
tmp=$(mktemp -d "${TMPDIR:-/tmp}/corio-html.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
case $1 in
build) build "$2" ;;
check) check "$2" ;;
*) usage ;;
esac
