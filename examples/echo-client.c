/*
 * echo-client - the echo server's demo partner and load generator.
 *
 *	echo-client [-h HOST] [-p PORT] [-c CONNS] [-n MSGS] [-s SIZE]
 *
 * CONNS tasks each send SIZE bytes, await them back and verify every byte,
 * MSGS times.  Prints round trips per second and p50/p99 latency; exits 1
 * on any error or mismatch.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <corio.h>

struct options {
	const char *host;
	int port, conns, msgs;
	size_t size;
	uint64_t *lat;		/* conns * msgs round-trip times, ns */
	int failed;
};

struct conn {
	struct options *o;
	int id;
};

static void fill(unsigned char *buf, size_t n, unsigned int seed)
{
	size_t i;

	for (i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		buf[i] = (unsigned char)(seed >> 16);
	}
}

static int client(void *arg)
{
	struct conn *c = arg;
	struct options *o = c->o;
	unsigned char *out = malloc(o->size), *in = malloc(o->size);
	int fd = -1, i, ret = -ENOMEM;

	if (!out || !in)
		goto out;
	fd = corio_dial(o->host, o->port);
	if (fd < 0) {
		ret = fd;
		goto out;
	}
	for (i = 0; i < o->msgs; i++) {
		uint64_t start = corio_now();
		size_t done = 0;

		fill(out, o->size, (unsigned int)(c->id * 7919 + i));
		while (done < o->size) {
			ssize_t n = corio_send(fd, out + done, o->size - done,
					       0);

			if (n < 0) {
				ret = (int)n;
				goto out;
			}
			done += (size_t)n;
		}
		for (done = 0; done < o->size;) {
			ssize_t n = corio_recv(fd, in + done, o->size - done,
					       0);

			if (n <= 0) {
				ret = n ? (int)n : -ECONNRESET;
				goto out;
			}
			done += (size_t)n;
		}
		if (memcmp(in, out, o->size)) {
			fprintf(stderr, "echo-client: conn %d msg %d: "
				"mismatch\n", c->id, i);
			ret = -EPROTO;
			goto out;
		}
		o->lat[(size_t)c->id * (size_t)o->msgs + (size_t)i] =
			corio_now() - start;
	}
	ret = 0;
out:
	if (ret < 0) {
		if (ret != -EPROTO)
			fprintf(stderr, "echo-client: conn %d: %s\n", c->id,
				strerror(-ret));
		o->failed++;
	}
	if (fd >= 0)
		corio_close(fd);
	free(out);
	free(in);
	return ret;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int run(void *arg)
{
	struct options *o = arg;
	struct conn *conns = calloc((size_t)o->conns, sizeof(*conns));
	corio_task **tasks = calloc((size_t)o->conns, sizeof(*tasks));
	uint64_t start, elapsed;
	size_t total = (size_t)o->conns * (size_t)o->msgs;
	int i;

	if (!conns || !tasks)
		return 1;
	start = corio_now();
	for (i = 0; i < o->conns; i++) {
		conns[i].o = o;
		conns[i].id = i;
		tasks[i] = corio_spawn(client, &conns[i]);
		if (!tasks[i]) {
			o->failed++;
			break;
		}
	}
	while (i-- > 0)
		corio_join(tasks[i]);
	elapsed = corio_now() - start;
	free(conns);
	free(tasks);
	if (o->failed) {
		fprintf(stderr, "echo-client: %d connection(s) failed\n",
			o->failed);
		return 1;
	}
	qsort(o->lat, total, sizeof(*o->lat), cmp_u64);
	printf("%zu round trips of %zu B over %d connections in %.3f s: "
	       "%.0f round trips/s, p50 %.1f us, p99 %.1f us\n", total,
	       o->size, o->conns, (double)elapsed / 1e9,
	       (double)total * 1e9 / (double)elapsed,
	       (double)o->lat[total / 2] / 1e3,
	       (double)o->lat[total * 99 / 100] / 1e3);
	return 0;
}

int main(int argc, char **argv)
{
	struct options o = { .host = "127.0.0.1", .port = 7000, .conns = 10,
			     .msgs = 1000, .size = 64 };
	int c, ret;

	while ((c = getopt(argc, argv, "h:p:c:n:s:")) != -1) {
		switch (c) {
		case 'h':
			o.host = optarg;
			break;
		case 'p':
			o.port = atoi(optarg);
			break;
		case 'c':
			o.conns = atoi(optarg);
			break;
		case 'n':
			o.msgs = atoi(optarg);
			break;
		case 's':
			o.size = (size_t)strtoul(optarg, NULL, 10);
			break;
		default:
			goto usage;
		}
	}
	if (o.conns <= 0 || o.msgs <= 0 || o.size == 0)
		goto usage;
	o.lat = calloc((size_t)o.conns * (size_t)o.msgs, sizeof(*o.lat));
	if (!o.lat)
		return 1;
	ret = corio_run(run, &o);
	free(o.lat);
	if (ret < 0) {
		fprintf(stderr, "echo-client: %s\n", strerror(-ret));
		return 1;
	}
	return ret;
usage:
	fprintf(stderr, "usage: %s [-h HOST] [-p PORT] [-c CONNS] [-n MSGS] "
		"[-s SIZE]\n", argv[0]);
	return 2;
}
