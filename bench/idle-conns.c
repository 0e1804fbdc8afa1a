/*
 * idle-conns - what idle connections cost an echo server in memory.
 *
 *	idle-conns [-h HOST] -p PORT -P PID [-c CONNS] [-s SIZE] [-H SECS]
 *		   [-t SECS]
 *
 * Opens CONNS connections (default 10000) to the server, one after the
 * other.  With -s SIZE (default 0: none) each one first carries one
 * SIZE-byte message, echoed back and checked byte for byte before the next
 * connection opens; then nothing more is sent on any of them.  Without a
 * message, it waits until the server holds all of them (its open fds in
 * /proc/PID/fd), pacing the connects so that the listen backlog never
 * overflows.  Then, after 0.5 s for the server to settle, it reads VmRSS
 * from /proc/PID/status, holds the connections for -H SECS (default 0) and
 * exits, which closes them.  -t is a watchdog (default 120 s).
 *
 * The result is one line on stdout, e.g.
 *
 *	idle-conns conns=10000 size=16384 rss0_kib=3456 rss_kib=123456
 *	per_conn_b=12288 secs=1.234
 *
 * (one line): the server's VmRSS before the first connect and with all of
 * them idle, what each connection added, and how long the connects and
 * echoes took.  Any error, early EOF or wrong byte ends it with a message
 * and status 1.  It needs an fd limit above CONNS: it raises its soft
 * limit to the hard one.
 */
#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PACE	256	/* connects between looks at the server's fds */
#define AHEAD	2048	/* connects that may wait in its backlog */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2),
						    noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("idle-conns: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static void watchdog(int sig)
{
	static const char msg[] = "idle-conns: the watchdog (-t) ran out: "
				  "is the server stuck?\n";

	(void)sig;
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
		_exit(1);
	_exit(1);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* VmRSS of pid in KiB, or -1. */
static long rss_kib(int pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* How many fds pid has open, or -1. */
static long fds_open(int pid)
{
	char path[64];
	struct dirent *d;
	long n = 0;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	dir = opendir(path);
	if (!dir)
		return -1;
	while ((d = readdir(dir)))
		if (d->d_name[0] != '.')
			n++;
	closedir(dir);
	return n;
}

/* Waits until pid holds at least want fds. */
static void wait_fds(int pid, long want)
{
	struct timespec ts = { 0, 2000000 };
	long n;

	while ((n = fds_open(pid)) < want) {
		if (n < 0)
			die("/proc/%d/fd: %s", pid, strerror(errno));
		nanosleep(&ts, NULL);
	}
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

/* One message there and back, checked. */
static void echo(int fd, unsigned int id, const unsigned char *out,
		 unsigned char *in, size_t size)
{
	size_t done = 0;
	ssize_t n;

	while (done < size) {
		n = send(fd, out + done, size - done, MSG_NOSIGNAL);
		if (n < 0 && errno != EINTR)
			die("connection %u: send: %s", id, strerror(errno));
		if (n > 0)
			done += (size_t)n;
	}
	done = 0;
	while (done < size) {
		n = recv(fd, in + done, size - done, 0);
		if (n == 0)
			die("connection %u: the server closed it", id);
		if (n < 0 && errno != EINTR)
			die("connection %u: recv: %s", id, strerror(errno));
		if (n > 0)
			done += (size_t)n;
	}
	if (memcmp(in, out, size))
		die("connection %u: the echo differs from what was sent", id);
}

int main(int argc, char **argv)
{
	const char *host = "127.0.0.1";
	int port = -1, pid = 0, c, *fds;
	long conns = 10000, fd0, rss0, rss1, i;
	double hold = 0, timeout = 120, t0, t1;
	size_t size = 0, k;
	struct addrinfo hints, *ai;
	struct sigaction sa;
	struct rlimit rl;
	struct timespec settle = { 0, 500000000 };
	unsigned char *out, *in;
	char serv[16];

	while ((c = getopt(argc, argv, "h:p:P:c:s:H:t:")) != -1) {
		switch (c) {
		case 'h':
			host = optarg;
			break;
		case 'p':
			port = atoi(optarg);
			break;
		case 'P':
			pid = atoi(optarg);
			break;
		case 'c':
			conns = atol(optarg);
			break;
		case 's':
			size = (size_t)strtoul(optarg, NULL, 10);
			break;
		case 'H':
			hold = atof(optarg);
			break;
		case 't':
			timeout = atof(optarg);
			break;
		default:
			goto usage;
		}
	}
	if (port < 0 || pid <= 0 || conns <= 0 || hold < 0 || timeout < 1 ||
	    optind != argc)
		goto usage;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = watchdog;
	sigaction(SIGALRM, &sa, NULL);
	alarm((unsigned int)timeout);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	fds = calloc((size_t)conns, sizeof(*fds));
	out = malloc(size + 1);
	in = malloc(size + 1);
	if (!fds || !out || !in)
		die("out of memory");
	for (k = 0; k < size; k++)
		out[k] = (unsigned char)(k * 131 + 7);

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(serv, sizeof(serv), "%d", port);
	c = getaddrinfo(host, serv, &hints, &ai);
	if (c)
		die("%s: %s", host, gai_strerror(c));

	rss0 = rss_kib(pid);
	fd0 = fds_open(pid);
	if (rss0 < 0 || fd0 < 0)
		die("/proc/%d: %s", pid, strerror(errno));
	t0 = now_s();
	for (i = 0; i < conns; i++) {
		fds[i] = dial(ai);
		if (size) {
			out[0] = (unsigned char)i;	/* differs per conn */
			echo(fds[i], (unsigned int)i, out, in, size);
		} else if (i % PACE == PACE - 1 && i >= AHEAD) {
			wait_fds(pid, fd0 + i + 1 - AHEAD);
		}
	}
	wait_fds(pid, fd0 + conns);
	t1 = now_s();
	freeaddrinfo(ai);
	nanosleep(&settle, NULL);
	rss1 = rss_kib(pid);
	if (rss1 < 0)
		die("/proc/%d/status: %s", pid, strerror(errno));
	printf("idle-conns conns=%ld size=%zu rss0_kib=%ld rss_kib=%ld "
	       "per_conn_b=%.0f secs=%.3f\n", conns, size, rss0, rss1,
	       (double)(rss1 - rss0) * 1024 / (double)conns, t1 - t0);
	fflush(stdout);
	if (hold > 0) {
		struct timespec ts = { (time_t)hold,
				       (long)((hold - (double)(time_t)hold) *
					      1e9) };

		nanosleep(&ts, NULL);
	}
	return 0;
usage:
	fprintf(stderr, "usage: %s [-h HOST] -p PORT -P PID [-c CONNS] "
		"[-s SIZE] [-H SECS] [-t SECS]\n", argv[0]);
	return 2;
}
