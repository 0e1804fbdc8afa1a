/*
 * kv-server - a key-value server that speaks the Redis protocol (RESP2).
 *
 *	kv-server [-c] [-h HOST] [-p PORT]	(default: every address, 7379)
 *
 * PING, ECHO, GET, SET (EX, PX, NX, XX), DEL, EXISTS, INCR, MGET, MSET,
 * plus what redis-cli and redis-benchmark ask on connect (COMMAND, CONFIG
 * GET, SELECT 0, QUIT).  One task per connection reads commands through a
 * corio_stream on the loop's shared buffer ring (CORIO_STREAM_BUFRING: an
 * idle connection holds no read buffer; -c gives each stream its own, the
 * classic path, for comparison); replies are buffered and flushed when no further request
 * is already buffered, so a pipelined batch costs one write.  Keys with a
 * time to live expire when they are looked up and, in the background, by
 * a sweeper task that wakes every 100 ms (corio_sleep).
 *
 * Malformed input gets a RESP error and the connection closed.  Memory is
 * bounded per request: at most MAX_ARGS arguments of MAX_BULK bytes each,
 * MAX_REQUEST bytes in all.
 *
 * Values are reference-counted blobs: a reply of a large value may suspend
 * halfway (a slow reader), and another connection may meanwhile delete or
 * replace it; the reply keeps its blob alive until it is written.
 */
#include <ctype.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <corio.h>

#define MAX_ARGS	4096
#define MAX_BULK	(8u * 1024u * 1024u)
#define MAX_INLINE	(4u * 1024u)
#define MAX_REQUEST	(64u * 1024u * 1024u)
#define SWEEP_EVERY	CORIO_MSEC(100)
#define SWEEP_BUCKETS	1024

struct blob {
	unsigned int refs;
	size_t len;
	char data[];
};

struct entry {
	struct entry *next;
	uint64_t hash;
	uint64_t expire_ns;	/* 0: never */
	size_t klen;
	struct blob *val;
	char key[];
};

static struct blob *blob_ref(struct blob *b)
{
	b->refs++;
	return b;
}

static void blob_unref(struct blob *b)
{
	if (b && --b->refs == 0)
		free(b);
}

static struct {
	struct entry **buckets;
	size_t nr_buckets, nr;
	size_t sweep_cursor;
} db;

static uint64_t hash(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;	/* FNV-1a */

	while (n--) {
		h ^= (unsigned char)*p++;
		h *= 0x100000001b3ull;
	}
	return h;
}

static int db_init(void)
{
	db.nr_buckets = 1024;
	db.buckets = calloc(db.nr_buckets, sizeof(*db.buckets));
	return db.buckets ? 0 : -ENOMEM;
}

static void entry_free(struct entry *e)
{
	blob_unref(e->val);
	free(e);
}

static void db_free(void)
{
	size_t i;

	for (i = 0; i < db.nr_buckets; i++) {
		struct entry *e = db.buckets[i], *next;

		for (; e; e = next) {
			next = e->next;
			entry_free(e);
		}
	}
	free(db.buckets);
}

/* Doubles the table when it is full: amortised O(1) inserts. */
static void db_grow(void)
{
	size_t n = db.nr_buckets * 2, i;
	struct entry **b = calloc(n, sizeof(*b));

	if (!b)
		return;	/* longer chains, still correct */
	for (i = 0; i < db.nr_buckets; i++) {
		struct entry *e = db.buckets[i], *next;

		for (; e; e = next) {
			next = e->next;
			e->next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	}
	free(db.buckets);
	db.buckets = b;
	db.nr_buckets = n;
}

static bool expired(const struct entry *e, uint64_t now)
{
	return e->expire_ns && e->expire_ns <= now;
}

/* The slot that points at key's entry (or at the NULL ending its chain). */
static struct entry **db_slot(const char *key, size_t klen, uint64_t h)
{
	struct entry **pp = &db.buckets[h & (db.nr_buckets - 1)];

	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == h && (*pp)->klen == klen &&
		    !memcmp((*pp)->key, key, klen))
			break;
	return pp;
}

static void db_unlink(struct entry **pp)
{
	struct entry *e = *pp;

	*pp = e->next;
	entry_free(e);
	db.nr--;
}

static struct entry *db_get(const char *key, size_t klen)
{
	struct entry **pp = db_slot(key, klen, hash(key, klen));

	if (*pp && expired(*pp, corio_now())) {
		db_unlink(pp);
		return NULL;
	}
	return *pp;
}

/* Stores a copy of val under key; the old value goes. */
static int db_set(const char *key, size_t klen, const char *val,
		  size_t vlen, uint64_t expire_ns)
{
	uint64_t h = hash(key, klen);
	struct entry **pp = db_slot(key, klen, h), *e = *pp;
	struct blob *v = malloc(sizeof(*v) + vlen);

	if (!v)
		return -ENOMEM;
	v->refs = 1;
	v->len = vlen;
	memcpy(v->data, val, vlen);
	if (!e) {
		e = malloc(sizeof(*e) + klen);
		if (!e) {
			free(v);
			return -ENOMEM;
		}
		e->hash = h;
		e->klen = klen;
		memcpy(e->key, key, klen);
		e->val = NULL;
		e->next = NULL;
		*pp = e;
		if (++db.nr > db.nr_buckets)
			db_grow();
	}
	blob_unref(e->val);
	e->val = v;
	e->expire_ns = expire_ns;
	return 0;
}

static bool db_del(const char *key, size_t klen)
{
	struct entry **pp = db_slot(key, klen, hash(key, klen));
	bool live;

	if (!*pp)
		return false;
	live = !expired(*pp, corio_now());
	db_unlink(pp);
	return live;
}

/* Active expiry: a slice of the table every SWEEP_EVERY. */
static int sweeper(void *arg)
{
	(void)arg;
	while (corio_sleep(SWEEP_EVERY) == 0) {
		uint64_t now = corio_now();
		size_t n;

		for (n = 0; n < SWEEP_BUCKETS; n++) {
			struct entry **pp;

			db.sweep_cursor = (db.sweep_cursor + 1) &
					  (db.nr_buckets - 1);
			pp = &db.buckets[db.sweep_cursor];
			while (*pp) {
				if (expired(*pp, now))
					db_unlink(pp);
				else
					pp = &(*pp)->next;
			}
		}
	}
	return 0;
}

/* One request: its arguments, each NUL-terminated for convenience. */
struct request {
	int argc;
	char *argv[MAX_ARGS];
	size_t len[MAX_ARGS];
};

static void request_clear(struct request *r)
{
	while (r->argc > 0)
		free(r->argv[--r->argc]);
}

struct conn {
	corio_stream *s;
	struct request req;
	size_t req_bytes;	/* of the request being read */
	int err;	/* the first write error */
	char line[MAX_INLINE];
};

static void out(struct conn *c, const void *p, size_t n)
{
	ssize_t ret;

	if (c->err)
		return;
	ret = corio_stream_write(c->s, p, n);
	if (ret < 0)
		c->err = (int)ret;
}

static void out_str(struct conn *c, const char *s)
{
	out(c, s, strlen(s));
}

static void out_int(struct conn *c, long long v)
{
	char b[32];
	int n = snprintf(b, sizeof(b), ":%lld\r\n", v);

	out(c, b, (size_t)n);
}

static void out_bulk(struct conn *c, const char *p, size_t n)
{
	char b[32];
	int h;

	if (!p) {
		out_str(c, "$-1\r\n");
		return;
	}
	h = snprintf(b, sizeof(b), "$%zu\r\n", n);
	out(c, b, (size_t)h);
	out(c, p, n);
	out(c, "\r\n", 2);
}

/* A stored value: held while the write may suspend. */
static void out_blob(struct conn *c, struct entry *e)
{
	struct blob *b;

	if (!e) {
		out_str(c, "$-1\r\n");
		return;
	}
	b = blob_ref(e->val);
	out_bulk(c, b->data, b->len);
	blob_unref(b);
}

static void out_array(struct conn *c, long long n)
{
	char b[32];
	int h = snprintf(b, sizeof(b), "*%lld\r\n", n);

	out(c, b, (size_t)h);
}

/*
 * A decimal integer that is exactly the n bytes at s (which need not end
 * in a NUL), as Redis reads one: an optional '-', no leading zeros, no
 * '+', no spaces, no overflow.
 */
static bool parse_ll(const char *s, size_t n, long long *v)
{
	char tmp[24], *end;
	size_t digits = n && s[0] == '-' ? n - 1 : n;
	const char *d = s + (n - digits);
	size_t i;

	if (!digits || n >= sizeof(tmp) || (d[0] == '0' && digits > 1))
		return false;
	for (i = 0; i < digits; i++)
		if (d[i] < '0' || d[i] > '9')
			return false;
	if (d[0] == '0' && s[0] == '-')
		return false;	/* "-0" */
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	errno = 0;
	*v = strtoll(tmp, &end, 10);
	return !errno && end == tmp + n;
}

static void wrong_args(struct conn *c, const char *cmd)
{
	char b[128];

	snprintf(b, sizeof(b), "-ERR wrong number of arguments for '%s' "
		 "command\r\n", cmd);
	out_str(c, b);
}

static void cmd_set(struct conn *c, struct request *r)
{
	uint64_t expire = 0;
	bool nx = false, xx = false;
	struct entry *e;
	int i;

	for (i = 3; i < r->argc; i++) {
		long long v;

		if (!strcasecmp(r->argv[i], "NX")) {
			nx = true;
		} else if (!strcasecmp(r->argv[i], "XX")) {
			xx = true;
		} else if ((!strcasecmp(r->argv[i], "EX") ||
			    !strcasecmp(r->argv[i], "PX")) && i + 1 < r->argc) {
			bool ex = toupper((unsigned char)r->argv[i][0]) == 'E';

			if (!parse_ll(r->argv[i + 1], r->len[i + 1], &v) ||
			    v <= 0 || v > (ex ? 1000000000ll : 1000000000000ll)) {
				out_str(c, "-ERR invalid expire time in 'set' "
					"command\r\n");
				return;
			}
			expire = corio_now() + (ex ? CORIO_SEC(v) :
						CORIO_MSEC(v));
			i++;
		} else {
			out_str(c, "-ERR syntax error\r\n");
			return;
		}
	}
	if (nx && xx) {
		out_str(c, "-ERR syntax error\r\n");
		return;
	}
	e = db_get(r->argv[1], r->len[1]);
	if ((nx && e) || (xx && !e)) {
		out_str(c, "$-1\r\n");
		return;
	}
	if (db_set(r->argv[1], r->len[1], r->argv[2], r->len[2], expire) < 0)
		out_str(c, "-ERR out of memory\r\n");
	else
		out_str(c, "+OK\r\n");
}

static void cmd_incr(struct conn *c, struct request *r)
{
	struct entry *e = db_get(r->argv[1], r->len[1]);
	long long v = 0;
	char b[32];
	int n;

	if (e && !parse_ll(e->val->data, e->val->len, &v)) {
		out_str(c, "-ERR value is not an integer or out of range\r\n");
		return;
	}
	if (v == LLONG_MAX) {
		out_str(c, "-ERR increment or decrement would overflow\r\n");
		return;
	}
	v++;
	n = snprintf(b, sizeof(b), "%lld", v);
	if (db_set(r->argv[1], r->len[1], b, (size_t)n,
		   e ? e->expire_ns : 0) < 0) {
		out_str(c, "-ERR out of memory\r\n");
		return;
	}
	out_int(c, v);
}

/* Runs one request; false when the connection should end. */
static bool execute(struct conn *c, struct request *r)
{
	const char *cmd = r->argv[0];
	struct entry *e;
	long long n;
	int i;

	if (strlen(cmd) != r->len[0])
		cmd = "";	/* a NUL inside: no command's name */

	if (!strcasecmp(cmd, "PING")) {
		if (r->argc == 1)
			out_str(c, "+PONG\r\n");
		else if (r->argc == 2)
			out_bulk(c, r->argv[1], r->len[1]);
		else
			wrong_args(c, "ping");
	} else if (!strcasecmp(cmd, "ECHO")) {
		if (r->argc != 2)
			wrong_args(c, "echo");
		else
			out_bulk(c, r->argv[1], r->len[1]);
	} else if (!strcasecmp(cmd, "GET")) {
		if (r->argc != 2) {
			wrong_args(c, "get");
		} else {
			out_blob(c, db_get(r->argv[1], r->len[1]));
		}
	} else if (!strcasecmp(cmd, "SET")) {
		if (r->argc < 3)
			wrong_args(c, "set");
		else
			cmd_set(c, r);
	} else if (!strcasecmp(cmd, "DEL") || !strcasecmp(cmd, "EXISTS")) {
		bool del = toupper((unsigned char)cmd[0]) == 'D';

		if (r->argc < 2) {
			wrong_args(c, del ? "del" : "exists");
			return true;
		}
		for (n = 0, i = 1; i < r->argc; i++)
			n += del ? db_del(r->argv[i], r->len[i]) :
				   db_get(r->argv[i], r->len[i]) != NULL;
		out_int(c, n);
	} else if (!strcasecmp(cmd, "INCR")) {
		if (r->argc != 2)
			wrong_args(c, "incr");
		else
			cmd_incr(c, r);
	} else if (!strcasecmp(cmd, "MGET")) {
		if (r->argc < 2) {
			wrong_args(c, "mget");
			return true;
		}
		struct blob **vals = calloc((size_t)r->argc, sizeof(*vals));

		if (!vals) {
			out_str(c, "-ERR out of memory\r\n");
			return true;
		}
		/* Take every value first: the writes below may suspend. */
		for (i = 1; i < r->argc; i++) {
			e = db_get(r->argv[i], r->len[i]);
			vals[i] = e ? blob_ref(e->val) : NULL;
		}
		out_array(c, r->argc - 1);
		for (i = 1; i < r->argc; i++) {
			if (vals[i])
				out_bulk(c, vals[i]->data, vals[i]->len);
			else
				out_str(c, "$-1\r\n");
			blob_unref(vals[i]);
		}
		free(vals);
	} else if (!strcasecmp(cmd, "MSET")) {
		if (r->argc < 3 || r->argc % 2 == 0) {
			wrong_args(c, "mset");
			return true;
		}
		for (i = 1; i < r->argc; i += 2)
			if (db_set(r->argv[i], r->len[i], r->argv[i + 1],
				   r->len[i + 1], 0) < 0)
				break;
		out_str(c, i < r->argc ? "-ERR out of memory\r\n" : "+OK\r\n");
	} else if (!strcasecmp(cmd, "CONFIG") && r->argc == 3 &&
		   !strcasecmp(r->argv[1], "GET")) {
		/* redis-benchmark asks for "save" and "appendonly". */
		out_array(c, 2);
		out_bulk(c, r->argv[2], r->len[2]);
		out_str(c, !strcasecmp(r->argv[2], "appendonly") ?
			"$2\r\nno\r\n" : "$0\r\n\r\n");
	} else if (!strcasecmp(cmd, "COMMAND")) {
		out_str(c, "*0\r\n");	/* redis-cli asks on connect */
	} else if (!strcasecmp(cmd, "SELECT")) {
		if (r->argc != 2)
			wrong_args(c, "select");
		else
			out_str(c, !strcmp(r->argv[1], "0") ? "+OK\r\n" :
				"-ERR DB index is out of range\r\n");
	} else if (!strcasecmp(cmd, "QUIT")) {
		out_str(c, "+OK\r\n");
		return false;
	} else {
		char b[128];
		int n = snprintf(b, sizeof(b), "-ERR unknown command '%.64s'",
				 cmd), j;

		/* An error is one line: a name with CR or LF must not split
		 * it into two replies. */
		for (j = 5; j < n; j++)
			if (b[j] == '\r' || b[j] == '\n')
				b[j] = ' ';
		out_str(c, b);
		out_str(c, "\r\n");
	}
	return true;
}

/*
 * Before a read that would wait for the peer, send the replies already
 * made: a client may wait for them before it sends more.  The read will
 * not wait if its bytes are buffered: n of them, or a line when n is 0.
 */
static bool wait_ok(struct conn *c, size_t n)
{
	size_t len;
	const char *p = corio_stream_peek(c->s, &len);

	if (n ? len >= n : memchr(p, '\n', len) != NULL)
		return true;
	if (corio_stream_flush(c->s) < 0 && !c->err)
		c->err = -EPIPE;
	return !c->err;
}

/* A protocol error: say so and end the connection. */
static int proto_error(struct conn *c, const char *what)
{
	char b[128];

	snprintf(b, sizeof(b), "-ERR Protocol error: %s\r\n", what);
	out_str(c, b);
	return -EPROTO;
}

static int arg_add(struct request *r, const char *p, size_t n)
{
	char *a = malloc(n + 1);

	if (!a)
		return -ENOMEM;
	memcpy(a, p, n);
	a[n] = '\0';
	r->argv[r->argc] = a;
	r->len[r->argc++] = n;
	return 0;
}

/* "PING\r\n" typed by hand: space-separated words. */
static int read_inline(struct conn *c, char *line, size_t n)
{
	struct request *r = &c->req;
	size_t i = 0;

	while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		n--;
	while (i < n) {
		size_t start;

		while (i < n && isspace((unsigned char)line[i]))
			i++;
		start = i;
		while (i < n && !isspace((unsigned char)line[i]))
			i++;
		if (i > start) {
			if (r->argc == MAX_ARGS)
				return proto_error(c, "too many arguments");
			if (arg_add(r, line + start, i - start) < 0)
				return -ENOMEM;
		}
	}
	return 0;
}

/* One "$len\r\n<bytes>\r\n" argument. */
static int read_bulk(struct conn *c)
{
	struct request *r = &c->req;
	char line[32];
	ssize_t n;
	long long len;
	char *a;

	if (!wait_ok(c, 0))
		return c->err;
	n = corio_stream_readline(c->s, line, sizeof(line));
	if (n <= 0)
		return n == -EMSGSIZE ? proto_error(c, "invalid bulk length") :
		       n == 0 ? -ENODATA : (int)n;
	if (line[0] != '$' || n < 3 || line[n - 2] != '\r' ||
	    !parse_ll(line + 1, (size_t)n - 3, &len) || len < 0)
		return proto_error(c, "expected '$'");
	if (len > MAX_BULK || c->req_bytes + (size_t)len > MAX_REQUEST)
		return proto_error(c, "invalid bulk length");
	if (!wait_ok(c, (size_t)len + 2))
		return c->err;
	c->req_bytes += (size_t)len;
	a = malloc((size_t)len + 2);
	if (!a)
		return -ENOMEM;
	n = corio_stream_readexactly(c->s, a, (size_t)len + 2);
	if (n < 0 || a[len] != '\r' || a[len + 1] != '\n') {
		free(a);
		return n < 0 ? (int)n : proto_error(c, "bad bulk terminator");
	}
	a[len] = '\0';
	r->argv[r->argc] = a;
	r->len[r->argc++] = (size_t)len;
	return 0;
}

/* The next request into c->req: 0, or <0 when the connection must end. */
static int read_request(struct conn *c)
{
	char *line = c->line;
	ssize_t n;
	long long argc;
	int ret;

	c->req_bytes = 0;
	do {
		if (!wait_ok(c, 0))
			return c->err;
		n = corio_stream_readline(c->s, line, MAX_INLINE);
		if (n == -EMSGSIZE)
			return proto_error(c, "too big inline request");
		if (n <= 0)
			return n ? (int)n : -ENODATA;
	} while (n <= 2 && (line[0] == '\r' || line[0] == '\n'));
	if (line[0] != '*')
		return read_inline(c, line, (size_t)n);
	if (n < 3 || line[n - 2] != '\r' ||
	    !parse_ll(line + 1, (size_t)n - 3, &argc))
		return proto_error(c, "invalid multibulk length");
	if (argc > MAX_ARGS)
		return proto_error(c, "invalid multibulk length");
	while (c->req.argc < argc) {
		ret = read_bulk(c);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static size_t stream_flags = CORIO_STREAM_BUFRING;	/* 0 with -c */

static int serve(void *arg)
{
	struct conn *c = calloc(1, sizeof(*c));
	int fd = (int)(intptr_t)arg;
	int ret;

	if (!c || corio_stream_new(fd, stream_flags, &c->s) < 0) {
		free(c);
		corio_close(fd);
		return 0;
	}
	for (;;) {
		bool more;

		ret = read_request(c);
		if (ret < 0)
			break;
		more = c->req.argc == 0 || execute(c, &c->req);
		request_clear(&c->req);
		/* Replies go out before the next read that must wait
		 * (wait_ok), so pipelined requests share one write. */
		if (!more || c->err)
			break;
	}
	request_clear(&c->req);
	corio_stream_close(c->s);	/* flushes: QUIT's +OK, an error */
	free(c);
	return 0;
}

/* Takes connections off the listener's multishot accept. */
static int accept_loop(void *arg)
{
	corio_acceptor *acc = arg;

	for (;;) {
		int one = 1;
		int fd = corio_acceptor_accept(acc);
		corio_task *t;

		if (fd < 0)
			return fd == -ECANCELED || fd == -EBADF ? 0 : fd;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		t = corio_spawn(serve, (void *)(intptr_t)fd);
		if (!t) {
			corio_close(fd);	/* out of memory: shed it */
			continue;
		}
		corio_detach(t);
	}
}

struct options {
	const char *host;
	int port;
};

static int server(void *arg)
{
	struct options *o = arg;
	corio_task *acceptor, *sweep;
	corio_acceptor *acc;
	sigset_t set;
	int lfd, sig;

	if (db_init() < 0)
		return 1;
	lfd = corio_listen(o->host, o->port, 4096, 0);
	if (lfd < 0) {
		fprintf(stderr, "kv-server: listen: %s\n", strerror(-lfd));
		return 1;
	}
	{
		struct sockaddr_in6 sa;
		socklen_t len = sizeof(sa);

		if (getsockname(lfd, (struct sockaddr *)&sa, &len) == 0)
			o->port = ntohs(sa.sin6_port);	/* same offset in v4 */
	}
	fprintf(stderr, "kv-server: listening on port %d\n", o->port);
	if (corio_acceptor_new(lfd, &acc) < 0)
		return 1;
	acceptor = corio_spawn(accept_loop, acc);
	sweep = corio_spawn(sweeper, NULL);
	if (!acceptor || !sweep)
		return 1;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sig = corio_signal_wait(&set);
	if (sig > 0)
		fprintf(stderr, "kv-server: %s, shutting down\n",
			strsignal(sig));
	corio_close(lfd);
	corio_join(acceptor);
	corio_acceptor_free(acc);
	corio_cancel(sweep);
	corio_join(sweep);
	return 0;
}

int main(int argc, char **argv)
{
	struct options o = { .host = NULL, .port = 7379 };
	sigset_t set;
	int c, ret;

	while ((c = getopt(argc, argv, "ch:p:")) != -1) {
		switch (c) {
		case 'c':
			stream_flags = 0;
			break;
		case 'h':
			o.host = optarg;
			break;
		case 'p':
			o.port = atoi(optarg);
			break;
		default:
			fprintf(stderr, "usage: %s [-c] [-h HOST] [-p PORT]\n",
				argv[0]);
			return 2;
		}
	}
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	ret = corio_run(server, &o);
	db_free();
	if (ret < 0) {
		fprintf(stderr, "kv-server: %s\n", strerror(-ret));
		return 1;
	}
	return ret;
}
