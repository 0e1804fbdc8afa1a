/*
 * soak-client - churns connections against an echo server for a while.
 *
 *	soak-client -p PORT [-c CONNS] [-t SECONDS] [-s SEED]
 *
 * CONNS tasks each loop until the time is up: dial, exchange 1 to 20
 * messages of 1 to 4096 random bytes (each verified byte for byte), then
 * close, or one time in ten reset the connection (SO_LINGER 0) right after
 * a send, so the server sees a peer vanish mid-stream.  Prints what it did;
 * exits 1 on any mismatch or unexpected error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <corio.h>

struct soak {
	int port, conns, seconds;
	unsigned int seed;
	uint64_t end_ns;
	unsigned long dials, exchanges, resets, errors;
};

struct worker {
	struct soak *s;
	unsigned int rng;
};

static unsigned int next(unsigned int *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return *x;
}

static int fail(struct soak *s, const char *what, long ret)
{
	fprintf(stderr, "soak-client: %s: %s\n", what,
		ret < 0 ? strerror((int)-ret) : "short");
	s->errors++;
	return -1;
}

/* One connection's life; -1 on an error that must not happen. */
static int session(struct worker *w, unsigned char *out, unsigned char *in)
{
	struct soak *s = w->s;
	int fd = corio_dial("127.0.0.1", s->port);
	int i, n = 1 + (int)(next(&w->rng) % 20);

	if (fd < 0)
		return fail(s, "dial", fd);
	s->dials++;
	for (i = 0; i < n; i++) {
		size_t len = 1 + next(&w->rng) % 4096, j, done;

		for (j = 0; j < len; j++)
			out[j] = (unsigned char)next(&w->rng);
		for (done = 0; done < len;) {
			ssize_t r = corio_send(fd, out + done, len - done, 0);

			if (r <= 0) {
				corio_close(fd);
				return fail(s, "send", r);
			}
			done += (size_t)r;
		}
		if (next(&w->rng) % 100 < 2) {
			/* Reset with the echo in flight. */
			struct linger lg = { .l_onoff = 1, .l_linger = 0 };

			setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			s->resets++;
			corio_close(fd);
			return 0;
		}
		for (done = 0; done < len;) {
			ssize_t r = corio_recv(fd, in + done, len - done, 0);

			if (r <= 0) {
				corio_close(fd);
				return fail(s, "recv", r);
			}
			done += (size_t)r;
		}
		if (memcmp(in, out, len)) {
			corio_close(fd);
			return fail(s, "echo mismatch", 0);
		}
		s->exchanges++;
	}
	corio_close(fd);
	return 0;
}

static int worker(void *arg)
{
	struct worker *w = arg;
	unsigned char *out = malloc(4096), *in = malloc(4096);

	while (out && in && corio_now() < w->s->end_ns)
		if (session(w, out, in) < 0)
			break;
	free(out);
	free(in);
	return 0;
}

static int run(void *arg)
{
	struct soak *s = arg;
	struct worker *w = calloc((size_t)s->conns, sizeof(*w));
	corio_task **t = calloc((size_t)s->conns, sizeof(*t));
	int i;

	if (!w || !t)
		return 1;
	s->end_ns = corio_now() + CORIO_SEC(s->seconds);
	for (i = 0; i < s->conns; i++) {
		w[i].s = s;
		w[i].rng = s->seed * 2654435761u + (unsigned int)i + 1;
		t[i] = corio_spawn(worker, &w[i]);
	}
	for (i = 0; i < s->conns; i++)
		if (t[i])
			corio_join(t[i]);
	free(w);
	free(t);
	printf("soak-client: %lu connections, %lu exchanges, %lu resets, "
	       "%lu errors in %d s\n", s->dials, s->exchanges, s->resets,
	       s->errors, s->seconds);
	return s->errors ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct soak s = { .port = 7000, .conns = 1000, .seconds = 60,
			  .seed = 1 };
	int c;

	while ((c = getopt(argc, argv, "p:c:t:s:")) != -1) {
		switch (c) {
		case 'p':
			s.port = atoi(optarg);
			break;
		case 'c':
			s.conns = atoi(optarg);
			break;
		case 't':
			s.seconds = atoi(optarg);
			break;
		case 's':
			s.seed = (unsigned int)strtoul(optarg, NULL, 10);
			break;
		default:
			fprintf(stderr, "usage: %s -p PORT [-c CONNS] "
				"[-t SECONDS] [-s SEED]\n", argv[0]);
			return 2;
		}
	}
	return corio_run(run, &s) ? 1 : 0;
}
