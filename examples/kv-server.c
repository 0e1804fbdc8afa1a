/*
 * kv-server - a key-value server that speaks the Redis protocol (RESP2).
 *
 *	kv-server [-c] [-h HOST] [-p PORT] [-t LOOPS]
 *			(default: every address, port 7379, one loop)
 *
 * PING, ECHO, GET, SET (EX, PX, NX, XX), DEL, EXISTS, INCR, MGET, MSET,
 * plus what redis-cli and redis-benchmark ask on connect (COMMAND, CONFIG
 * GET, SELECT 0, QUIT).  One task per connection reads commands through a
 * corio_stream on the loop's shared buffer ring (CORIO_STREAM_BUFRING: an
 * idle connection holds no read buffer; -c gives each stream its own, the
 * classic path, for comparison); replies are buffered and flushed when no
 * further request is already buffered, so a pipelined batch costs one
 * write.  Keys with a time to live expire when they are looked up and, in
 * the background, by a sweeper task that wakes every 100 ms (corio_sleep).
 *
 * Malformed input gets a RESP error and the connection closed.  Memory is
 * bounded per request: at most MAX_ARGS arguments of MAX_BULK bytes each,
 * MAX_REQUEST bytes in all.
 *
 * Values are reference-counted blobs: a reply of a large value may suspend
 * halfway (a slow reader), and another connection may meanwhile delete or
 * replace it; the reply keeps its blob alive until it is written.
 *
 * Loops and shards.  -t N runs N loops on N threads (corio_run_loops; 0:
 * one per CPU).  Each loop listens on the port with CORIO_REUSEPORT, so
 * the kernel spreads connections over N accept queues, and serves what it
 * accepts (a port already taken, even by another server with SO_REUSEPORT,
 * is "in use": probe_port).  The key space is cut in N shards: a key's
 * shard is its hash, mixed once more, modulo N (shard_of), and shard i's
 * table (with its own sweeper) lives on loop i and is only ever touched
 * there.  A command is parsed and answered by its connection's task; what
 * it does to the table is a struct op that run_op executes on the shard's
 * loop: a plain call when that is the connection's own loop, else a
 * corio_call, which the connection's task waits for.  run_op never
 * suspends, so each op is atomic on its shard, as a command is on a single
 * server.  -t 1 (the default) is corio_run, unpinned, one listener without
 * SO_REUSEPORT and one shard: every op is a plain call, nothing is copied,
 * no corio_call is made.
 *
 * Single-key commands (GET, SET, INCR, and DEL or EXISTS of one key) are
 * one op on the key's shard, so they keep their single-server meaning
 * exactly: INCR from any number of connections counts every increment,
 * SET NX is decided by the owner alone.  Multi-key commands (MGET, MSET,
 * DEL and EXISTS of several keys) are split by shard and run one shard
 * after the other, each shard's part one op, and their results combined
 * in the order of the keys: replies are the single server's, and each
 * shard's part is atomic, but the command as a whole is not: a concurrent
 * MGET may see part of an MSET (the shards it already reached), where
 * Redis's MSET is atomic.  Atomicity across shards would take locking
 * every shard a command touches (or a Redis Cluster's answer: refuse keys
 * of several shards in one command), which this example does not do.  An
 * MSET that fails with out of memory in one shard may have applied the
 * parts before, as the single server may have applied the keys before.
 *
 * Values across loops.  A blob's refcount is plain, not atomic: only the
 * loop that owns its shard may take or drop a reference.  So an op run
 * for another loop copies the values it returns (on the owner, inside the
 * call: the reply then holds a private blob, freed by the connection's
 * loop, which alone ever sees it); an op run for its own loop takes a
 * reference, as the single server does.  A SET's value is copied into
 * the shard by the owner, from the request the caller keeps until the
 * call returns.  malloc and free are thread-safe, so a blob may be freed
 * on another thread than made it.
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

/* A shard's table; shards[i] is loop i's, touched by loop i alone. */
struct db {
	struct entry **buckets;
	size_t nr_buckets, nr;
	size_t sweep_cursor;
};

static struct db *shards;
static unsigned int nr_shards = 1;	/* set by loop 0 before any loop runs */

static uint64_t hash(const char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;	/* FNV-1a */

	while (n--) {
		h ^= (unsigned char)*p++;
		h *= 0x100000001b3ull;
	}
	return h;
}

/*
 * The hash mixed again (murmur3's finalizer) before the modulo: FNV-1a's
 * low bits pick the bucket, so the shard must not depend on them alone,
 * and its middle bits barely change with a key's last byte ("ctr:0" to
 * "ctr:7" share bit 32).
 */
static unsigned int shard_of(const char *key, size_t klen)
{
	uint64_t h;

	if (nr_shards == 1)
		return 0;
	h = hash(key, klen);
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return (unsigned int)(h % nr_shards);
}

static int db_init(struct db *db)
{
	db->nr_buckets = 1024;
	db->buckets = calloc(db->nr_buckets, sizeof(*db->buckets));
	return db->buckets ? 0 : -ENOMEM;
}

static void entry_free(struct entry *e)
{
	blob_unref(e->val);
	free(e);
}

static void db_free(struct db *db)
{
	size_t i;

	for (i = 0; db->buckets && i < db->nr_buckets; i++) {
		struct entry *e = db->buckets[i], *next;

		for (; e; e = next) {
			next = e->next;
			entry_free(e);
		}
	}
	free(db->buckets);
}

/* Doubles the table when it is full: amortised O(1) inserts. */
static void db_grow(struct db *db)
{
	size_t n = db->nr_buckets * 2, i;
	struct entry **b = calloc(n, sizeof(*b));

	if (!b)
		return;	/* longer chains, still correct */
	for (i = 0; i < db->nr_buckets; i++) {
		struct entry *e = db->buckets[i], *next;

		for (; e; e = next) {
			next = e->next;
			e->next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	}
	free(db->buckets);
	db->buckets = b;
	db->nr_buckets = n;
}

static bool expired(const struct entry *e, uint64_t now)
{
	return e->expire_ns && e->expire_ns <= now;
}

/* The slot that points at key's entry (or at the NULL ending its chain). */
static struct entry **db_slot(struct db *db, const char *key, size_t klen,
			      uint64_t h)
{
	struct entry **pp = &db->buckets[h & (db->nr_buckets - 1)];

	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == h && (*pp)->klen == klen &&
		    !memcmp((*pp)->key, key, klen))
			break;
	return pp;
}

static void db_unlink(struct db *db, struct entry **pp)
{
	struct entry *e = *pp;

	*pp = e->next;
	entry_free(e);
	db->nr--;
}

static struct entry *db_get(struct db *db, const char *key, size_t klen)
{
	struct entry **pp = db_slot(db, key, klen, hash(key, klen));

	if (*pp && expired(*pp, corio_now())) {
		db_unlink(db, pp);
		return NULL;
	}
	return *pp;
}

/* Stores a copy of val under key; the old value goes. */
static int db_set(struct db *db, const char *key, size_t klen,
		  const char *val, size_t vlen, uint64_t expire_ns)
{
	uint64_t h = hash(key, klen);
	struct entry **pp = db_slot(db, key, klen, h), *e = *pp;
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
		if (++db->nr > db->nr_buckets)
			db_grow(db);
	}
	blob_unref(e->val);
	e->val = v;
	e->expire_ns = expire_ns;
	return 0;
}

static bool db_del(struct db *db, const char *key, size_t klen)
{
	struct entry **pp = db_slot(db, key, klen, hash(key, klen));
	bool live;

	if (!*pp)
		return false;
	live = !expired(*pp, corio_now());
	db_unlink(db, pp);
	return live;
}

/* Active expiry of this loop's shard: a slice of it every SWEEP_EVERY. */
static int sweeper(void *arg)
{
	struct db *db = arg;

	while (corio_sleep(SWEEP_EVERY) == 0) {
		uint64_t now = corio_now();
		size_t n;

		for (n = 0; n < SWEEP_BUCKETS; n++) {
			struct entry **pp;

			db->sweep_cursor = (db->sweep_cursor + 1) &
					   (db->nr_buckets - 1);
			pp = &db->buckets[db->sweep_cursor];
			while (*pp) {
				if (expired(*pp, now))
					db_unlink(db, pp);
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
	unsigned int self;	/* the loop it is served on */
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

/* ---- ops: what a command does to one shard ----------------------------- */

enum op_kind { OP_GET, OP_SET, OP_INCR, OP_DEL, OP_EXISTS, OP_MSET };
enum op_res { RES_OK, RES_NIL, RES_OOM, RES_NOTINT, RES_OVERFLOW };

/*
 * One command's part on one shard, run by run_op on the shard's loop.  Its
 * keys are r->argv[op_key(op, j)] for j < nr: the argv indexes in idx, or
 * without idx (the whole command on one shard) 1, 1 + step, ...  The
 * request belongs to the caller, which waits while the op runs.
 */
struct op {
	enum op_kind kind;
	unsigned int from;	/* the connection's loop */
	const struct request *r;
	const int *idx;
	int nr, step;
	uint64_t expire_ns;	/* SET */
	bool nx, xx;
	/* Results, added to by each shard's part. */
	enum op_res res;	/* the first failure */
	long long n;		/* DEL, EXISTS: a count; INCR: the value */
	struct blob **vals;	/* GET: by argv index; the caller's to drop */
};

static int op_key(const struct op *op, int j)
{
	return op->idx ? op->idx[j] : 1 + j * op->step;
}

static void op_fail(struct op *op, enum op_res res)
{
	if (op->res == RES_OK)
		op->res = res;
}

/* A value for a reply: a reference here, a private copy for another loop. */
static struct blob *blob_out(struct blob *b, bool copy)
{
	struct blob *c;

	if (!copy)
		return blob_ref(b);
	c = malloc(sizeof(*c) + b->len);
	if (!c)
		return NULL;
	c->refs = 1;
	c->len = b->len;
	memcpy(c->data, b->data, b->len);
	return c;
}

static void op_set(struct db *db, struct op *op)
{
	const struct request *r = op->r;
	struct entry *e = db_get(db, r->argv[1], r->len[1]);

	if ((op->nx && e) || (op->xx && !e))
		op->res = RES_NIL;
	else if (db_set(db, r->argv[1], r->len[1], r->argv[2], r->len[2],
			op->expire_ns) < 0)
		op->res = RES_OOM;
}

static void op_incr(struct db *db, struct op *op)
{
	const struct request *r = op->r;
	struct entry *e = db_get(db, r->argv[1], r->len[1]);
	long long v = 0;
	char b[32];
	int n;

	if (e && !parse_ll(e->val->data, e->val->len, &v)) {
		op->res = RES_NOTINT;
		return;
	}
	if (v == LLONG_MAX) {
		op->res = RES_OVERFLOW;
		return;
	}
	v++;
	n = snprintf(b, sizeof(b), "%lld", v);
	if (db_set(db, r->argv[1], r->len[1], b, (size_t)n,
		   e ? e->expire_ns : 0) < 0) {
		op->res = RES_OOM;
		return;
	}
	op->n = v;
}

/*
 * Runs on the loop that owns the shard, and never suspends: each op is
 * atomic on its shard.  Returns 0 (a corio_call's result; <0 from one
 * means the op never ran).
 */
static int run_op(void *arg)
{
	struct op *op = arg;
	struct db *db = &shards[corio_loop_index()];
	const struct request *r = op->r;
	bool copy = corio_loop_index() != op->from;
	struct entry *e;
	int j, i;

	switch (op->kind) {
	case OP_SET:
		op_set(db, op);
		break;
	case OP_INCR:
		op_incr(db, op);
		break;
	case OP_GET:
		for (j = 0; j < op->nr; j++) {
			i = op_key(op, j);
			e = db_get(db, r->argv[i], r->len[i]);
			if (!e)
				continue;
			op->vals[i] = blob_out(e->val, copy);
			if (!op->vals[i])
				op_fail(op, RES_OOM);
		}
		break;
	case OP_DEL:
	case OP_EXISTS:
		for (j = 0; j < op->nr; j++) {
			i = op_key(op, j);
			op->n += op->kind == OP_DEL ?
				 db_del(db, r->argv[i], r->len[i]) :
				 db_get(db, r->argv[i], r->len[i]) != NULL;
		}
		break;
	case OP_MSET:
		for (j = 0; j < op->nr; j++) {
			i = op_key(op, j);
			if (db_set(db, r->argv[i], r->len[i], r->argv[i + 1],
				   r->len[i + 1], 0) < 0) {
				op_fail(op, RES_OOM);
				break;
			}
		}
		break;
	}
	return 0;
}

/* op's part on shard s: here, or on s's loop while this task waits. */
static int run_on(struct conn *c, struct op *op, unsigned int s)
{
	if (s == c->self)
		return run_op(op);
	return corio_call(s, run_op, op);
}

/* An op on argv[1]'s shard. */
static int run_one(struct conn *c, struct op *op)
{
	op->from = c->self;
	op->idx = NULL;
	op->nr = 1;
	op->step = 1;
	return run_on(c, op, shard_of(op->r->argv[1], op->r->len[1]));
}

/*
 * An op on every key from argv[1] on, step apart (2 for MSET's pairs):
 * split by shard, one shard after the other in the order their first keys
 * come.  Stops at the first call that fails (<0, the part not run).
 */
static int run_split(struct conn *c, struct op *op, int step)
{
	const struct request *r = op->r;
	int nkeys = (r->argc - 1) / step, *sh, *idx, j, k, ret = 0;

	op->from = c->self;
	op->idx = NULL;
	op->nr = nkeys;
	op->step = step;
	if (nr_shards == 1)
		return run_op(op);
	sh = malloc(2 * (size_t)nkeys * sizeof(*sh));
	if (!sh)
		return -ENOMEM;
	idx = sh + nkeys;
	for (j = 0; j < nkeys; j++)
		sh[j] = (int)shard_of(r->argv[1 + j * step],
				      r->len[1 + j * step]);
	/* O(keys x shards touched): fine for a request's 4096 arguments. */
	for (j = 0; j < nkeys && ret >= 0; j++) {
		int s = sh[j];

		if (s < 0)
			continue;
		op->idx = idx;
		op->nr = 0;
		for (k = j; k < nkeys; k++) {
			if (sh[k] == s) {
				idx[op->nr++] = 1 + k * step;
				sh[k] = -1;
			}
		}
		ret = run_on(c, op, (unsigned int)s);
	}
	free(sh);
	return ret;
}

/* The reply to a command whose op could not run (teardown, no memory). */
static void out_call_error(struct conn *c, int err)
{
	out_str(c, err == -ENOMEM ? "-ERR out of memory\r\n" :
		"-ERR server is shutting down\r\n");
}

static void cmd_get(struct conn *c, struct request *r)
{
	struct blob *v[2] = { NULL, NULL };
	struct op op = { .kind = OP_GET, .r = r, .vals = v };
	int ret = run_one(c, &op);

	if (ret < 0)
		out_call_error(c, ret);
	else if (op.res == RES_OOM)
		out_str(c, "-ERR out of memory\r\n");
	else if (!v[1])
		out_str(c, "$-1\r\n");
	else
		out_bulk(c, v[1]->data, v[1]->len);
	/* Held while the write may suspend. */
	blob_unref(v[1]);
}

static void cmd_set(struct conn *c, struct request *r)
{
	struct op op = { .kind = OP_SET, .r = r };
	int i, ret;

	for (i = 3; i < r->argc; i++) {
		long long v;

		if (!strcasecmp(r->argv[i], "NX")) {
			op.nx = true;
		} else if (!strcasecmp(r->argv[i], "XX")) {
			op.xx = true;
		} else if ((!strcasecmp(r->argv[i], "EX") ||
			    !strcasecmp(r->argv[i], "PX")) && i + 1 < r->argc) {
			bool ex = toupper((unsigned char)r->argv[i][0]) == 'E';

			if (!parse_ll(r->argv[i + 1], r->len[i + 1], &v) ||
			    v <= 0 || v > (ex ? 1000000000ll : 1000000000000ll)) {
				out_str(c, "-ERR invalid expire time in 'set' "
					"command\r\n");
				return;
			}
			op.expire_ns = corio_now() + (ex ? CORIO_SEC(v) :
						      CORIO_MSEC(v));
			i++;
		} else {
			out_str(c, "-ERR syntax error\r\n");
			return;
		}
	}
	if (op.nx && op.xx) {
		out_str(c, "-ERR syntax error\r\n");
		return;
	}
	ret = run_one(c, &op);
	if (ret < 0)
		out_call_error(c, ret);
	else if (op.res == RES_NIL)
		out_str(c, "$-1\r\n");
	else if (op.res == RES_OOM)
		out_str(c, "-ERR out of memory\r\n");
	else
		out_str(c, "+OK\r\n");
}

static void cmd_incr(struct conn *c, struct request *r)
{
	struct op op = { .kind = OP_INCR, .r = r };
	int ret = run_one(c, &op);

	if (ret < 0)
		out_call_error(c, ret);
	else if (op.res == RES_NOTINT)
		out_str(c, "-ERR value is not an integer or out of range\r\n");
	else if (op.res == RES_OVERFLOW)
		out_str(c, "-ERR increment or decrement would overflow\r\n");
	else if (op.res == RES_OOM)
		out_str(c, "-ERR out of memory\r\n");
	else
		out_int(c, op.n);
}

/* DEL and EXISTS: the keys that were there, counted over the shards. */
static void cmd_count(struct conn *c, struct request *r, bool del)
{
	struct op op = { .kind = del ? OP_DEL : OP_EXISTS, .r = r };
	int ret = r->argc == 2 ? run_one(c, &op) : run_split(c, &op, 1);

	if (ret < 0)
		out_call_error(c, ret);
	else
		out_int(c, op.n);
}

static void cmd_mget(struct conn *c, struct request *r)
{
	struct blob **vals = calloc((size_t)r->argc, sizeof(*vals));
	struct op op = { .kind = OP_GET, .r = r, .vals = vals };
	int i, ret;

	if (!vals) {
		out_str(c, "-ERR out of memory\r\n");
		return;
	}
	/* Take every value first: the writes below may suspend. */
	ret = run_split(c, &op, 1);
	if (ret < 0) {
		out_call_error(c, ret);
	} else if (op.res == RES_OOM) {
		out_str(c, "-ERR out of memory\r\n");
	} else {
		out_array(c, r->argc - 1);
		for (i = 1; i < r->argc; i++) {
			if (vals[i])
				out_bulk(c, vals[i]->data, vals[i]->len);
			else
				out_str(c, "$-1\r\n");
		}
	}
	for (i = 1; i < r->argc; i++)
		blob_unref(vals[i]);
	free(vals);
}

static void cmd_mset(struct conn *c, struct request *r)
{
	struct op op = { .kind = OP_MSET, .r = r };
	int ret = run_split(c, &op, 2);

	if (ret < 0)
		out_call_error(c, ret);
	else
		out_str(c, op.res == RES_OOM ? "-ERR out of memory\r\n" :
			"+OK\r\n");
}

/* Runs one request; false when the connection should end. */
static bool execute(struct conn *c, struct request *r)
{
	const char *cmd = r->argv[0];

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
		if (r->argc != 2)
			wrong_args(c, "get");
		else
			cmd_get(c, r);
	} else if (!strcasecmp(cmd, "SET")) {
		if (r->argc < 3)
			wrong_args(c, "set");
		else
			cmd_set(c, r);
	} else if (!strcasecmp(cmd, "DEL") || !strcasecmp(cmd, "EXISTS")) {
		bool del = toupper((unsigned char)cmd[0]) == 'D';

		if (r->argc < 2)
			wrong_args(c, del ? "del" : "exists");
		else
			cmd_count(c, r, del);
	} else if (!strcasecmp(cmd, "INCR")) {
		if (r->argc != 2)
			wrong_args(c, "incr");
		else
			cmd_incr(c, r);
	} else if (!strcasecmp(cmd, "MGET")) {
		if (r->argc < 2)
			wrong_args(c, "mget");
		else
			cmd_mget(c, r);
	} else if (!strcasecmp(cmd, "MSET")) {
		if (r->argc < 3 || r->argc % 2 == 0)
			wrong_args(c, "mset");
		else
			cmd_mset(c, r);
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

	/* No bytes may come as p NULL: memchr must not see it. */
	if (n ? len >= n : len && memchr(p, '\n', len))
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
	c->self = corio_loop_index();
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
	unsigned int loops;	/* -t: 0 is one per CPU */
};

/* What each loop serves with, touched only by that loop once set up. */
struct loop_state {
	struct options *o;
	int lfd;
	corio_acceptor *acc;
	corio_task *acceptor, *sweep;
};

static struct loop_state *loops;	/* [nr_shards] */

/* Runs on loop i: its shard, its sweeper, its listener and acceptor. */
static int loop_start(void *arg)
{
	struct loop_state *ls = arg;
	struct options *o = ls->o;
	int flags = nr_shards > 1 ? CORIO_REUSEPORT : 0;

	if (db_init(&shards[corio_loop_index()]) < 0)
		return 1;
	ls->lfd = corio_listen(o->host, o->port, 4096, flags);
	if (ls->lfd < 0) {
		fprintf(stderr, "kv-server: listen: %s\n", strerror(-ls->lfd));
		return 1;
	}
	if (corio_acceptor_new(ls->lfd, &ls->acc) < 0)
		goto err_close;
	ls->acceptor = corio_spawn(accept_loop, ls->acc);
	if (!ls->acceptor)
		goto err_free_acc;
	ls->sweep = corio_spawn(sweeper, &shards[corio_loop_index()]);
	if (!ls->sweep)
		goto err_stop_acceptor;
	return 0;

err_stop_acceptor:
	corio_close(ls->lfd);
	corio_join(ls->acceptor);
	ls->acceptor = NULL;
	ls->lfd = -1;
err_free_acc:
	corio_acceptor_free(ls->acc);
	ls->acc = NULL;
err_close:
	if (ls->lfd >= 0)
		corio_close(ls->lfd);
	ls->lfd = -1;
	return 1;
}

/* Runs on loop i: stop accepting and sweeping; the connections go with
 * the loops. */
static int loop_stop(void *arg)
{
	struct loop_state *ls = arg;

	if (!ls->acceptor)
		return 0;
	corio_close(ls->lfd);
	corio_join(ls->acceptor);
	corio_acceptor_free(ls->acc);
	corio_cancel(ls->sweep);
	corio_join(ls->sweep);
	ls->acceptor = ls->sweep = NULL;
	return 0;
}

/* fn(arg) on loop i: a call to another loop, a plain call on this one. */
static int on_loop(unsigned int i, corio_fn fn, void *arg)
{
	return i == corio_loop_index() ? fn(arg) : corio_call(i, fn, arg);
}

/*
 * With SO_REUSEPORT, a listener shares the port with any other that has
 * it, of the same user: two servers would split the clients between them.
 * A listener without it first fails on a port that is taken, as with one
 * loop, and then goes again.
 */
static int probe_port(struct options *o)
{
	int fd;

	if (corio_loop_count() == 1 || o->port == 0)
		return 0;
	fd = corio_listen(o->host, o->port, 1, 0);
	if (fd < 0) {
		fprintf(stderr, "kv-server: listen: %s\n", strerror(-fd));
		return fd;
	}
	return corio_close(fd);
}

static int server(void *arg)
{
	struct options *o = arg;
	sigset_t set;
	unsigned int i;
	int sig, ret;

	/* Before the first call: every loop reads them from then on. */
	nr_shards = corio_loop_count();
	shards = calloc(nr_shards, sizeof(*shards));
	loops = calloc(nr_shards, sizeof(*loops));
	if (!shards || !loops || probe_port(o) < 0)
		return 1;
	for (i = 0; i < nr_shards; i++) {
		loops[i].o = o;
		loops[i].lfd = -1;
		ret = on_loop(i, loop_start, &loops[i]);
		if (ret != 0) {
			if (ret < 0)
				fprintf(stderr, "kv-server: loop %u: %s\n", i,
					strerror(-ret));
			while (i-- > 0)
				on_loop(i, loop_stop, &loops[i]);
			return 1;
		}
		if (i == 0) {
			struct sockaddr_in6 sa;
			socklen_t len = sizeof(sa);

			/* -p 0: the other loops take the port loop 0 got. */
			if (getsockname(loops[0].lfd, (struct sockaddr *)&sa,
					&len) == 0)
				o->port = ntohs(sa.sin6_port);	/* as in v4 */
		}
	}
	fprintf(stderr, "kv-server: listening on port %d\n", o->port);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sig = corio_signal_wait(&set);
	if (sig > 0)
		fprintf(stderr, "kv-server: %s, shutting down\n",
			strsignal(sig));
	for (i = 0; i < nr_shards; i++)
		on_loop(i, loop_stop, &loops[i]);
	return 0;
}

int main(int argc, char **argv)
{
	struct options o = { .host = NULL, .port = 7379, .loops = 1 };
	sigset_t set;
	unsigned int i;
	char *end;
	long n;
	int c, ret;

	while ((c = getopt(argc, argv, "ch:p:t:")) != -1) {
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
		case 't':
			n = strtol(optarg, &end, 10);
			if (*optarg && !*end && n >= 0 && n <= 1024) {
				o.loops = (unsigned int)n;
				break;
			}
			fprintf(stderr, "kv-server: -t takes a number of "
				"loops from 0 (one per CPU) to 1024\n");
			return 2;
		default:
			fprintf(stderr, "usage: %s [-c] [-h HOST] [-p PORT] "
				"[-t LOOPS]\n", argv[0]);
			return 2;
		}
	}
	/* Blocked before any thread exists, so every thread inherits it. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	/* One loop: corio_run, unpinned, one shard, as before -t. */
	if (o.loops == 1)
		ret = corio_run(server, &o);
	else
		ret = corio_run_loops(o.loops, server, &o);
	for (i = 0; shards && i < nr_shards; i++)
		db_free(&shards[i]);
	free(shards);
	free(loops);
	if (ret < 0) {
		fprintf(stderr, "kv-server: %s\n", strerror(-ret));
		return 1;
	}
	return ret;
}
