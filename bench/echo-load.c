/*
 * echo-load - the echo benchmarks' load generator.  Plain liburing, not
 * corio, so that the client costs the same whatever the server is.
 *
 *	echo-load [-h HOST] -p PORT [-c CONNS] [-s SIZE]
 *		  [-d SECS [-w SECS] | -n MSGS] [-P PID] [-t SECS]
 *
 * CONNS connections (default 100) each send a SIZE-byte message (default
 * 64), wait until all of it has come back, check every byte, and send the
 * next one.  With -d (the default, 5 s) the run is measured for SECS seconds
 * after a warm-up of -w SECS (default 1) in which nothing is counted; with
 * -n every connection sends MSGS messages and the whole run is measured.
 * -P PID samples the server's CPU time (utime+stime in /proc/PID/stat, all
 * its threads) at both ends of the measured span.  -t is a watchdog
 * (default 120 s): past it, echo-load gives up with status 1.
 *
 * The result is one line of key=value pairs on stdout, e.g.
 *
 *	echo-load conns=100 size=64 secs=5.001 rt=812345 rtps=162436
 *	p50_us=612.3 p99_us=801.0 srv_cpu_s=4.990 srv_us_per_rt=6.143
 *	cli_us_per_rt=6.020 srv_busy=0.998 cli_busy=0.978 others=0.004
 *	steal=0.000 srv_runq=0.001 cli_runq=0.002
 *
 * (one line; "-" where a figure is unknown).  The last five are in CPUs
 * (CPU seconds per second): srv_busy and cli_busy are the CPU time of the
 * server and of echo-load, 1.0 being a saturated core.  others is the CPU
 * time that anything else used on the CPUs the two may run on (their busy
 * time in /proc/stat, minus the server's and echo-load's own), steal what
 * the hypervisor took from those CPUs: together, how much other tenants
 * disturbed the run.  srv_runq and cli_runq are the time each spent
 * runnable but not running (/proc/PID/schedstat, the server's main
 * thread); on a VM this includes waking an idle CPU, so it is high for a
 * side that often sleeps even on a quiet machine.
 * Latency is measured from the
 * turn that queued a message's send to the turn that saw its last byte
 * come back, in a log-linear histogram (within 0.8%).  Any error, early EOF
 * or wrong byte ends the run with a message and status 1.
 *
 * One ring, with the flags corio's loop uses, carries two ops per
 * connection: a send of the message and, queued beside it, a MSG_WAITALL
 * recv of the echo.  Each message is a window into one random pattern at an
 * offset that changes with every message, so a stale or misplaced byte is
 * caught.
 */
#include <errno.h>
#include <netdb.h>
#include <sched.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <liburing.h>

#define PAT_SPAN	251	/* message offsets into the pattern */
#define SUB_BITS	7	/* histogram: 128 buckets per power of two */
#define NR_BUCKETS	((64 - SUB_BITS) << SUB_BITS)

#define OP_RECV		0ull
#define OP_SEND		1ull

struct conn {
	int fd;
	unsigned int id;
	uint64_t seq;			/* messages completed */
	uint64_t start_ns;
	size_t sent, rcvd;
	const unsigned char *out;	/* this message: a window of pattern */
	unsigned char *in;
};

enum phase { WARM, MEASURE, DRAIN };

static struct io_uring ring;
static size_t size = 64;
static uint64_t msgs;			/* -n; 0: run for a duration */
static enum phase phase;
static unsigned char *pattern;
static uint64_t hist[NR_BUCKETS];
static uint64_t rt;			/* round trips completed while measuring */
static unsigned int active;		/* connections with a message out */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2),
						    noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("echo-load: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void watchdog(int sig)
{
	static const char msg[] = "echo-load: the watchdog (-t) ran out: "
				  "is the server stuck?\n";

	(void)sig;
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	_exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static unsigned int bucket(uint64_t v)
{
	unsigned int shift;

	if (v < (2u << SUB_BITS))
		return (unsigned int)v;
	shift = (unsigned int)(63 - __builtin_clzll(v)) - SUB_BITS;
	return (shift << SUB_BITS) + (unsigned int)(v >> shift);
}

/* The middle of bucket i. */
static double bucket_value(unsigned int i)
{
	unsigned int shift;

	if (i < (2u << SUB_BITS))
		return i;
	shift = (i >> SUB_BITS) - 1;
	return (double)((uint64_t)(i - (shift << SUB_BITS)) << shift) +
	       (double)(1ull << shift) / 2;
}

/* The latency below which a fraction q of the round trips fell, in us. */
static double percentile_us(double q)
{
	uint64_t rank = (uint64_t)(q * (double)rt + 0.999999), seen = 0;
	unsigned int i;

	if (!rt)
		return 0;
	if (rank < 1)
		rank = 1;
	for (i = 0; i < NR_BUCKETS; i++) {
		seen += hist[i];
		if (seen >= rank)
			return bucket_value(i) / 1e3;
	}
	return bucket_value(NR_BUCKETS - 1) / 1e3;
}

static struct io_uring_sqe *get_sqe(void)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);

	while (!sqe) {
		io_uring_submit(&ring);
		sqe = io_uring_get_sqe(&ring);
	}
	return sqe;
}

static void queue_send(struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe();

	io_uring_prep_send(sqe, c->fd, c->out + c->sent, size - c->sent,
			   MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | OP_SEND);
}

static void queue_recv(struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe();

	io_uring_prep_recv(sqe, c->fd, c->in + c->rcvd, size - c->rcvd,
			   MSG_WAITALL);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)c | OP_RECV);
}

static void start_msg(struct conn *c, uint64_t now)
{
	c->out = pattern + (c->id * 31u + c->seq) % PAT_SPAN;
	c->sent = c->rcvd = 0;
	c->start_ns = now;
	queue_send(c);
	queue_recv(c);
}

static void end_msg(struct conn *c, uint64_t now)
{
	if (memcmp(c->in, c->out, size)) {
		size_t i = 0;

		while (c->in[i] == c->out[i])
			i++;
		die("connection %u, message %llu: byte %zu of %zu came back "
		    "as %#x, not %#x", c->id, (unsigned long long)c->seq, i,
		    size, c->in[i], c->out[i]);
	}
	if (phase == MEASURE) {
		hist[bucket(now - c->start_ns)]++;
		rt++;
	}
	c->seq++;
	if (phase != DRAIN && (!msgs || c->seq < msgs))
		start_msg(c, now);
	else
		active--;
}

static void on_cqe(const struct io_uring_cqe *cqe, uint64_t now)
{
	struct conn *c = (struct conn *)(uintptr_t)(cqe->user_data & ~1ull);

	if ((cqe->user_data & 1) == OP_SEND) {
		if (cqe->res < 0)
			die("connection %u: send: %s", c->id,
			    strerror(-cqe->res));
		c->sent += (size_t)cqe->res;
		if (c->sent < size) {
			queue_send(c);
			return;
		}
	} else {
		if (cqe->res <= 0)
			die("connection %u: recv: %s", c->id, cqe->res ?
			    strerror(-cqe->res) : "the server closed it");
		c->rcvd += (size_t)cqe->res;
		if (c->rcvd < size) {
			queue_recv(c);
			return;
		}
	}
	if (c->sent == size && c->rcvd == size)
		end_msg(c, now);
}

/* utime+stime of every thread of pid, in seconds; -1 if unknown. */
static double proc_cpu_s(int pid)
{
	char path[64], buf[1024], *p;
	unsigned long utime, stime;
	FILE *f;
	size_t n;

	if (pid <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: skip past it. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
			 "%lu %lu", &utime, &stime) != 2)
		return -1;
	return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* Run-queue wait of pid's main thread (0: this process), in s; -1. */
static double runq_wait_s(int pid)
{
	char path[64];
	unsigned long long run, wait;
	FILE *f;
	int n;

	if (pid < 0)
		return -1;
	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/schedstat", pid);
	else
		snprintf(path, sizeof(path), "/proc/self/schedstat");
	f = fopen(path, "r");
	if (!f)
		return -1;
	n = fscanf(f, "%llu %llu", &run, &wait);
	fclose(f);
	return n == 2 ? (double)wait / 1e9 : -1;
}

/* The CPUs that the server or echo-load may run on. */
static cpu_set_t cpus;

static void cpus_init(int pid)
{
	cpu_set_t srv;

	if (sched_getaffinity(0, sizeof(cpus), &cpus) < 0) {
		CPU_ZERO(&cpus);
		return;
	}
	if (pid > 0 && sched_getaffinity(pid, sizeof(srv), &srv) == 0)
		CPU_OR(&cpus, &cpus, &srv);
}

/*
 * The busy time (user, nice, system, irq, softirq) and the stolen time of
 * those CPUs, from /proc/stat, in s; -1 if unknown.
 */
static void cpus_busy_s(double *busy, double *steal)
{
	FILE *f = fopen("/proc/stat", "r");
	unsigned long long v[8], b = 0, st = 0;
	double hz = (double)sysconf(_SC_CLK_TCK);
	char line[512];
	int cpu, found = 0;

	*busy = *steal = -1;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu",
			   &cpu, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
			   &v[6], &v[7]) != 9 || cpu < 0 || cpu >= CPU_SETSIZE ||
		    !CPU_ISSET(cpu, &cpus))
			continue;
		b += v[0] + v[1] + v[2] + v[5] + v[6];
		st += v[7];
		found = 1;
	}
	fclose(f);
	if (found) {
		*busy = (double)b / hz;
		*steal = (double)st / hz;
	}
}

/* The figures sampled at both ends of the measured span. */
struct sample {
	double srv_cpu, cli_cpu, srv_runq, cli_runq, busy, steal;
};

static double self_cpu_s(void);

static void sample(struct sample *s, int pid)
{
	s->srv_cpu = pid > 0 ? proc_cpu_s(pid) : -1;
	s->srv_runq = pid > 0 ? runq_wait_s(pid) : -1;
	s->cli_cpu = self_cpu_s();
	s->cli_runq = runq_wait_s(0);
	cpus_busy_s(&s->busy, &s->steal);
}

/* (b - a) / secs into buf, or "-". */
static void per_sec(char *buf, size_t len, double a, double b, double secs)
{
	if (a < 0 || b < 0)
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.3f", (b - a) / secs);
}

static double self_cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int dial(const struct addrinfo *ai)
{
	int fd, one = 1;

	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket: %s", strerror(errno));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	while (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0)
		if (errno != EINTR)
			die("connect: %s", strerror(errno));
	return fd;
}

static void ring_init(void)
{
	struct io_uring_params p;
	int ret;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG |
		  IORING_SETUP_SUBMIT_ALL | IORING_SETUP_CQSIZE;
	p.cq_entries = 16384;
	ret = io_uring_queue_init_params(4096, &ring, &p);
	if (ret < 0)
		die("io_uring_queue_init: %s", strerror(-ret));
	io_uring_register_ring_fd(&ring);
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1";
	int port = -1, conns_nr = 100, pid = 0, c;
	double dur = 5, warm = 1, timeout = 120;
	struct sample s0, s1;
	double secs;
	uint64_t t_start, t0 = 0, t1 = 0, now;
	struct addrinfo hints, *ai;
	struct conn *conns;
	struct sigaction sa;
	unsigned char *in;
	unsigned int seed = 12345, i;
	char serv[16], srv_s[32] = "-", srv_rt[32] = "-", srv_busy[32] = "-";
	char srv_runq[32], cli_runq[32], steal[32], others[32] = "-";
	size_t k;

	while ((c = getopt(argc, argv, "h:p:c:s:d:w:n:P:t:")) != -1) {
		switch (c) {
		case 'h':
			host = optarg;
			break;
		case 'p':
			port = atoi(optarg);
			break;
		case 'c':
			conns_nr = atoi(optarg);
			break;
		case 's':
			size = (size_t)strtoul(optarg, NULL, 10);
			break;
		case 'd':
			dur = atof(optarg);
			break;
		case 'w':
			warm = atof(optarg);
			break;
		case 'n':
			msgs = strtoull(optarg, NULL, 10);
			break;
		case 'P':
			pid = atoi(optarg);
			break;
		case 't':
			timeout = atof(optarg);
			break;
		default:
			goto usage;
		}
	}
	if (port < 0 || conns_nr <= 0 || size == 0 || dur <= 0 || warm < 0 ||
	    timeout < 1 || optind != argc)
		goto usage;
	if (msgs)
		warm = 0;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = watchdog;
	sigaction(SIGALRM, &sa, NULL);
	alarm((unsigned int)timeout);

	pattern = malloc(size + PAT_SPAN);
	conns = calloc((size_t)conns_nr, sizeof(*conns));
	in = malloc((size_t)conns_nr * size);
	if (!pattern || !conns || !in)
		die("out of memory");
	for (k = 0; k < size + PAT_SPAN; k++) {
		seed = seed * 1103515245u + 12345u;
		pattern[k] = (unsigned char)(seed >> 16);
	}

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(serv, sizeof(serv), "%d", port);
	c = getaddrinfo(host, serv, &hints, &ai);
	if (c)
		die("%s: %s", host, gai_strerror(c));
	for (i = 0; i < (unsigned int)conns_nr; i++) {
		conns[i].fd = dial(ai);
		conns[i].id = i;
		conns[i].in = in + (size_t)i * size;
	}
	freeaddrinfo(ai);
	ring_init();
	cpus_init(pid);

	t_start = now_ns();
	phase = warm > 0 ? WARM : MEASURE;
	if (phase == MEASURE) {
		t0 = t_start;
		sample(&s0, pid);
	}
	for (i = 0; i < (unsigned int)conns_nr; i++)
		start_msg(&conns[i], t_start);
	active = (unsigned int)conns_nr;

	while (active) {
		struct io_uring_cqe *cqe;
		unsigned int head, n = 0;
		int ret = io_uring_submit_and_wait(&ring, 1);

		if (ret < 0 && ret != -EINTR && ret != -EAGAIN &&
		    ret != -EBUSY)
			die("io_uring_enter: %s", strerror(-ret));
		now = now_ns();
		if (phase == WARM && now - t_start >= (uint64_t)(warm * 1e9)) {
			phase = MEASURE;
			t0 = now;
			sample(&s0, pid);
		} else if (phase == MEASURE && !msgs &&
			   now - t0 >= (uint64_t)(dur * 1e9)) {
			phase = DRAIN;
			t1 = now;
			sample(&s1, pid);
		}
		io_uring_for_each_cqe(&ring, head, cqe) {
			n++;
			on_cqe(cqe, now);
		}
		io_uring_cq_advance(&ring, n);
	}
	if (phase == MEASURE) {		/* -n: the run ended with the last */
		t1 = now;
		sample(&s1, pid);
	}
	for (i = 0; i < (unsigned int)conns_nr; i++)
		close(conns[i].fd);
	if (!rt)
		die("no round trip completed while measuring");
	secs = (double)(t1 - t0) / 1e9;
	if (s0.srv_cpu >= 0 && s1.srv_cpu >= 0) {
		snprintf(srv_s, sizeof(srv_s), "%.3f", s1.srv_cpu - s0.srv_cpu);
		snprintf(srv_rt, sizeof(srv_rt), "%.3f",
			 (s1.srv_cpu - s0.srv_cpu) * 1e6 / (double)rt);
		per_sec(srv_busy, sizeof(srv_busy), s0.srv_cpu, s1.srv_cpu,
			secs);
	}
	per_sec(srv_runq, sizeof(srv_runq), s0.srv_runq, s1.srv_runq, secs);
	per_sec(cli_runq, sizeof(cli_runq), s0.cli_runq, s1.cli_runq, secs);
	per_sec(steal, sizeof(steal), s0.steal, s1.steal, secs);
	if (s0.busy >= 0 && s1.busy >= 0 && s0.srv_cpu >= 0 &&
	    s1.srv_cpu >= 0) {
		double o = (s1.busy - s0.busy) - (s1.srv_cpu - s0.srv_cpu) -
			   (s1.cli_cpu - s0.cli_cpu);

		/* Ticks and exact times differ by a tick or two. */
		snprintf(others, sizeof(others), "%.3f",
			 o > 0 ? o / secs : 0.0);
	}
	printf("echo-load conns=%d size=%zu secs=%.3f rt=%llu rtps=%.0f "
	       "p50_us=%.1f p99_us=%.1f srv_cpu_s=%s srv_us_per_rt=%s "
	       "cli_us_per_rt=%.3f srv_busy=%s cli_busy=%.3f others=%s "
	       "steal=%s srv_runq=%s cli_runq=%s\n", conns_nr, size, secs,
	       (unsigned long long)rt, (double)rt / secs, percentile_us(0.50),
	       percentile_us(0.99), srv_s, srv_rt,
	       (s1.cli_cpu - s0.cli_cpu) * 1e6 / (double)rt, srv_busy,
	       (s1.cli_cpu - s0.cli_cpu) / secs, others, steal, srv_runq,
	       cli_runq);
	return 0;
usage:
	fprintf(stderr, "usage: %s [-h HOST] -p PORT [-c CONNS] [-s SIZE] "
		"[-d SECS [-w SECS] | -n MSGS] [-P PID] [-t SECS]\n", argv[0]);
	return 2;
}
