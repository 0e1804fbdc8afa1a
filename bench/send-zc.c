/*
 * send-zc - bulk sends over loopback TCP through corio: corio_send against
 * corio_send_zc, and corio_sendfile against corio_read + corio_send.
 *
 *	send-zc -m send|send_zc [-s SIZE] [-d SECS] [-w SECS] [-S CPU]
 *		[-R CPU] [-v]
 *	send-zc -m sendfile|readsend [-f FILE] [-F SIZE] [-d SECS] [-w SECS]
 *		[-S CPU] [-R CPU] [-v]
 *
 * The sender is a corio task on the main thread (pinned to -S CPU before
 * the loop starts, so io_uring's io-wq workers inherit the mask); the
 * reader is a plain thread (on -R CPU) draining the other end of one
 * 127.0.0.1 connection with blocking recv into a 256 KiB buffer.  Default
 * socket buffer sizes.
 *
 * send, send_zc: the task sends SIZE-byte messages (default 16384) of one
 * buffer, each with corio_send or corio_send_zc until all of it is out, for
 * -w SECS of warm-up (default 0.5) and then -d SECS (default 2).  The
 * throughput is what the reader received meanwhile.
 *
 * sendfile, readsend: FILE (default /tmp/corio-bench-sendfile.dat) is
 * written with a pattern when it is missing or not -F SIZE bytes (default
 * 50 MiB), and read once, so its pages are cached.  Then it is sent whole,
 * again and again, with one corio_sendfile(sock, file, &off, SIZE) or with
 * corio_read + corio_send through a 64 KiB buffer; each file's time runs
 * from its first byte's send to the reader's having all of it (the reader
 * tells the task through an eventfd).  Files sent during the -w warm-up do
 * not count; then files are sent for at least -d SECS and at least 3 of
 * them.
 *
 * -v checks every byte the reader gets (slower: not for timing).
 *
 * The result is one line of key=value pairs on stdout, e.g.
 *
 *	send-zc mode=send size=16384 secs=2.001 mb=4567.8 mbps=2283.0
 *	snd_cpu=0.998 rcv_cpu=0.710 snd_us_per_mb=437.1 rcv_us_per_mb=311.0
 *	file_ms=- others=0.012 zc_copied=-
 *
 * mb is 10^6 bytes; snd_cpu and rcv_cpu are CPU time over wall time (1.0 a
 * saturated core): the sender's is the whole process's but the reader
 * thread's, so it includes io-wq workers and the loopback's softirq work
 * done in the sender's context.  file_ms is the median time per file (file
 * modes).  others is the CPU time (in CPUs) that other processes took on
 * the CPUs the two threads may run on, from /proc/stat: how much other
 * tenants disturbed the run.  zc_copied is 1 if the kernel reported that a zero-copy send
 * copied after all (IORING_NOTIF_USAGE_ZC_COPIED: not visible through
 * corio_send_zc, so measured by one raw IORING_OP_SEND_ZC first), else 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <liburing.h>

#include <corio.h>

/* Linux 6.2; not in liburing 2.3's headers. */
#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE	(1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED	(1U << 31)
#endif

#define RECV_BUF	(256 * 1024)
#define COPY_BUF	(64 * 1024)
#define MAX_FILES	100000

enum mode { M_SEND, M_SEND_ZC, M_SENDFILE, M_READSEND };

static enum mode mode;
static size_t size;			/* a message's, or the file's */
static double dur = 2, warm = 0.5;
static const char *path = "/tmp/corio-bench-sendfile.dat";
static bool verify;
static int snd_cpu = -1, rcv_cpu = -1;

static int sock_snd, sock_rcv, file_fd, ack_fd;
static pthread_t reader;
static _Atomic uint64_t received;
static int zc_copied = -1;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2),
						    noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("send-zc: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

/* The byte at offset i of a message or of the file. */
static unsigned char pattern(uint64_t i)
{
	return (unsigned char)((i ^ (i >> 8) ^ (i >> 17)) * 131 + 7);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double clock_s(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pin(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) < 0)
		die("sched_setaffinity %d: %s", cpu, strerror(errno));
}

/* Drains the connection; in the file modes, tells the sender of each
 * whole file through ack_fd. */
static void *reader_main(void *arg)
{
	unsigned char *buf = malloc(RECV_BUF);
	uint64_t total = 0, next_ack = size;
	ssize_t n, i;

	(void)arg;
	pin(rcv_cpu);
	if (!buf)
		die("out of memory");
	for (;;) {
		n = recv(sock_rcv, buf, RECV_BUF, 0);
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("recv: %s", strerror(errno));
		}
		if (verify)
			for (i = 0; i < n; i++)
				if (buf[i] != pattern((total + (uint64_t)i) %
						      size))
					die("byte %llu came as %#x, not %#x",
					    (unsigned long long)(total +
								 (uint64_t)i),
					    buf[i], pattern((total +
							     (uint64_t)i) %
							    size));
		total += (uint64_t)n;
		atomic_store_explicit(&received, total, memory_order_relaxed);
		if (mode >= M_SENDFILE && total >= next_ack) {
			uint64_t one = 1;

			next_ack += size;
			if (write(ack_fd, &one, sizeof(one)) < 0)
				die("eventfd: %s", strerror(errno));
		}
	}
	free(buf);
	return NULL;
}

/*
 * The busy time (user, nice, system, irq, softirq) of the CPUs this
 * process may run on, from /proc/stat, in s; -1 if unknown.
 */
static double cpus_busy_s(void)
{
	FILE *f = fopen("/proc/stat", "r");
	unsigned long long v[8], b = 0;
	char line[512];
	cpu_set_t mine, srv;
	int cpu, found = 0;

	if (!f)
		return -1;
	CPU_ZERO(&mine);
	if (sched_getaffinity(0, sizeof(mine), &mine) == 0 &&
	    pthread_getaffinity_np(reader, sizeof(srv), &srv) == 0)
		CPU_OR(&mine, &mine, &srv);
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu",
			   &cpu, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
			   &v[6], &v[7]) != 9 || cpu < 0 || cpu >= CPU_SETSIZE ||
		    !CPU_ISSET(cpu, &mine))
			continue;
		b += v[0] + v[1] + v[2] + v[5] + v[6];
		found = 1;
	}
	fclose(f);
	return found ? (double)b / (double)sysconf(_SC_CLK_TCK) : -1;
}

/* The process's CPU time but the reader thread's, the reader's, and the
 * busy time of the CPUs both may run on. */
static void cpu_sample(double *snd, double *rcv, double *busy)
{
	clockid_t id;

	*rcv = 0;
	if (pthread_getcpuclockid(reader, &id) == 0)
		*rcv = clock_s(id);
	*snd = clock_s(CLOCK_PROCESS_CPUTIME_ID) - *rcv;
	*busy = cpus_busy_s();
}

static int send_all(const unsigned char *p, size_t n, bool zc)
{
	while (n > 0) {
		ssize_t w = zc ? corio_send_zc(sock_snd, p, n, 0) :
				 corio_send(sock_snd, p, n, 0);

		if (w <= 0)
			return w < 0 ? (int)w : -EIO;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/*
 * One raw IORING_OP_SEND_ZC of the message, to see whether the kernel
 * copied it after all: its notification says so in res.  The reader
 * drains it like any other.
 */
static void probe_zc_copied(const unsigned char *buf)
{
	struct io_uring_sqe *sqe;
	struct io_uring ring;
	struct io_uring_cqe *cqe;
	int got = 0;

	/* corio_await returns only the first CQE's res: the notification's
	 * is read on a ring of our own, waited on (blocking the loop) once. */
	if (io_uring_queue_init(4, &ring, 0) < 0)
		return;
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_send_zc(sqe, sock_snd, buf, size, MSG_NOSIGNAL,
			      IORING_SEND_ZC_REPORT_USAGE);
	io_uring_submit(&ring);
	while (got < 2 && io_uring_wait_cqe(&ring, &cqe) == 0) {
		/* The notification's res is a bit mask, not a count. */
		if (cqe->flags & IORING_CQE_F_NOTIF) {
			zc_copied = ((uint32_t)cqe->res &
				     IORING_NOTIF_USAGE_ZC_COPIED) ? 1 : 0;
			got = 2;
		} else if (cqe->res < 0 || !(cqe->flags & IORING_CQE_F_MORE)) {
			got = 2;	/* refused: no notification coming */
		} else {
			if ((size_t)cqe->res < size)
				die("the probe's send was short");
			got = 1;
		}
		io_uring_cqe_seen(&ring, cqe);
	}
	io_uring_queue_exit(&ring);
}

struct result {
	double secs, mb, snd_cpu, rcv_cpu, busy, file_ms;
};

static int send_loop(struct result *res)
{
	unsigned char *buf = malloc(size);
	bool zc = mode == M_SEND_ZC;
	double t0 = 0, t1, start = now_s(), s0 = 0, r0 = 0, c0 = 0, s1, r1;
	double c1;
	uint64_t b0 = 0, b1;
	bool measuring = false;
	size_t i;
	int ret;

	if (!buf)
		return -ENOMEM;
	for (i = 0; i < size; i++)
		buf[i] = pattern(i);
	if (zc)
		probe_zc_copied(buf);
	for (;;) {
		ret = send_all(buf, size, zc);
		if (ret < 0)
			return ret;
		t1 = now_s();
		if (!measuring && t1 - start >= warm) {
			measuring = true;
			t0 = t1;
			b0 = atomic_load(&received);
			cpu_sample(&s0, &r0, &c0);
		} else if (measuring && t1 - t0 >= dur) {
			break;
		}
	}
	b1 = atomic_load(&received);
	cpu_sample(&s1, &r1, &c1);
	res->secs = t1 - t0;
	res->mb = (double)(b1 - b0) / 1e6;
	res->snd_cpu = s1 - s0;
	res->rcv_cpu = r1 - r0;
	res->busy = c0 < 0 || c1 < 0 ? -1 : c1 - c0;
	res->file_ms = -1;
	free(buf);
	return 0;
}

static int file_once(unsigned char *buf)
{
	uint64_t off = 0, got;
	ssize_t n;
	int ret;

	if (mode == M_SENDFILE) {
		while (off < size) {
			n = corio_sendfile(sock_snd, file_fd, &off,
					   size - (size_t)off);
			if (n <= 0)
				return n < 0 ? (int)n : -EIO;
		}
	} else {
		while (off < size) {
			n = corio_read(file_fd, buf, COPY_BUF, off);
			if (n <= 0)
				return n < 0 ? (int)n : -EIO;
			ret = send_all(buf, (size_t)n, false);
			if (ret < 0)
				return ret;
			off += (uint64_t)n;
		}
	}
	/* Until the reader has all of it. */
	n = corio_read(ack_fd, &got, sizeof(got), (uint64_t)-1);
	if (n != sizeof(got))
		return n < 0 ? (int)n : -EIO;
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int file_loop(struct result *res)
{
	unsigned char *buf = malloc(COPY_BUF);
	double *ms = malloc(MAX_FILES * sizeof(*ms));
	double start = now_s(), t0 = 0, t, s0 = 0, r0 = 0, c0, s1, r1, c1;
	unsigned int nr = 0;
	int ret;

	if (!buf || !ms)
		return -ENOMEM;
	/* At least one file of warm-up, then -d SECS and 3 files. */
	do {
		ret = file_once(buf);
		if (ret < 0)
			return ret;
	} while (now_s() - start < warm);
	t0 = now_s();
	cpu_sample(&s0, &r0, &c0);
	do {
		t = now_s();
		ret = file_once(buf);
		if (ret < 0)
			return ret;
		ms[nr++] = (now_s() - t) * 1e3;
	} while (nr < MAX_FILES && (nr < 3 || now_s() - t0 < dur));
	t = now_s();
	cpu_sample(&s1, &r1, &c1);
	qsort(ms, nr, sizeof(*ms), cmp_double);
	res->secs = t - t0;
	res->mb = (double)size * nr / 1e6;
	res->snd_cpu = s1 - s0;
	res->rcv_cpu = r1 - r0;
	res->busy = c0 < 0 || c1 < 0 ? -1 : c1 - c0;
	res->file_ms = nr % 2 ? ms[nr / 2] : (ms[nr / 2 - 1] + ms[nr / 2]) / 2;
	free(ms);
	free(buf);
	return 0;
}

static int sender(void *arg)
{
	struct result *res = arg;
	int ret = mode >= M_SENDFILE ? file_loop(res) : send_loop(res);

	if (ret < 0)
		fprintf(stderr, "send-zc: %s\n", strerror(-ret));
	return ret < 0 ? 1 : 0;
}

/* The file, written if missing or of another size, then read once. */
static void file_prepare(void)
{
	struct stat st;
	unsigned char *buf = malloc(COPY_BUF);
	uint64_t off;
	size_t i, n;

	if (!buf)
		die("out of memory");
	if (stat(path, &st) < 0 || (size_t)st.st_size != size) {
		int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			      0644);

		if (fd < 0)
			die("%s: %s", path, strerror(errno));
		for (off = 0; off < size; off += n) {
			n = size - off < COPY_BUF ? size - off : COPY_BUF;
			for (i = 0; i < n; i++)
				buf[i] = pattern(off + i);
			if (write(fd, buf, n) != (ssize_t)n)
				die("%s: %s", path, strerror(errno));
		}
		close(fd);
	}
	file_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (file_fd < 0)
		die("%s: %s", path, strerror(errno));
	while (read(file_fd, buf, COPY_BUF) > 0)
		;
	free(buf);
}

static void connect_pair(void)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int lfd, one = 1;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
	    listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sin, &len) < 0)
		die("listen: %s", strerror(errno));
	sock_rcv = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock_rcv < 0 ||
	    connect(sock_rcv, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		die("connect: %s", strerror(errno));
	sock_snd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (sock_snd < 0)
		die("accept: %s", strerror(errno));
	setsockopt(sock_snd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	close(lfd);
}

int main(int argc, char **argv)
{
	static const char *names[] = { "send", "send_zc", "sendfile",
				       "readsend" };
	struct result res;
	const char *m = NULL;
	size_t msg_size = 16384, file_size = 50u << 20;
	int c, ret;

	while ((c = getopt(argc, argv, "m:s:f:F:d:w:S:R:v")) != -1) {
		switch (c) {
		case 'm':
			m = optarg;
			break;
		case 's':
			msg_size = (size_t)strtoull(optarg, NULL, 10);
			break;
		case 'F':
			file_size = (size_t)strtoull(optarg, NULL, 10);
			break;
		case 'f':
			path = optarg;
			break;
		case 'd':
			dur = atof(optarg);
			break;
		case 'w':
			warm = atof(optarg);
			break;
		case 'S':
			snd_cpu = atoi(optarg);
			break;
		case 'R':
			rcv_cpu = atoi(optarg);
			break;
		case 'v':
			verify = true;
			break;
		default:
			goto usage;
		}
	}
	if (!m || optind != argc || dur <= 0 || warm < 0)
		goto usage;
	for (c = 0; c < 4 && strcmp(m, names[c]); c++)
		;
	if (c == 4)
		goto usage;
	mode = (enum mode)c;
	size = mode >= M_SENDFILE ? file_size : msg_size;
	if (size == 0)
		goto usage;
	if (mode >= M_SENDFILE)
		file_prepare();
	pin(snd_cpu);
	connect_pair();
	ack_fd = eventfd(0, EFD_CLOEXEC);
	if (ack_fd < 0)
		die("eventfd: %s", strerror(errno));
	if (pthread_create(&reader, NULL, reader_main, NULL))
		die("pthread_create failed");
	ret = corio_run(sender, &res);
	if (ret < 0)
		die("corio_run: %s", strerror(-ret));
	if (ret)
		return 1;
	shutdown(sock_snd, SHUT_WR);
	pthread_join(reader, NULL);
	printf("send-zc mode=%s size=%zu secs=%.3f mb=%.1f mbps=%.1f "
	       "snd_cpu=%.3f rcv_cpu=%.3f snd_us_per_mb=%.1f "
	       "rcv_us_per_mb=%.1f", names[mode], size, res.secs, res.mb,
	       res.mb / res.secs, res.snd_cpu / res.secs,
	       res.rcv_cpu / res.secs, res.snd_cpu * 1e6 / res.mb,
	       res.rcv_cpu * 1e6 / res.mb);
	if (res.file_ms >= 0)
		printf(" file_ms=%.2f", res.file_ms);
	else
		printf(" file_ms=-");
	if (res.busy >= 0) {
		double o = res.busy - res.snd_cpu - res.rcv_cpu;

		/* Ticks and exact times differ by a tick or two. */
		printf(" others=%.3f", o > 0 ? o / res.secs : 0.0);
	} else {
		printf(" others=-");
	}
	if (zc_copied >= 0)
		printf(" zc_copied=%d\n", zc_copied);
	else
		printf(" zc_copied=-\n");
	return 0;
usage:
	fprintf(stderr, "usage: %s -m send|send_zc [-s SIZE] [-d SECS] "
		"[-w SECS] [-S CPU] [-R CPU] [-v]\n"
		"       %s -m sendfile|readsend [-f FILE] [-F SIZE] [-d SECS] "
		"[-w SECS] [-S CPU] [-R CPU] [-v]\n", argv[0], argv[0]);
	return 2;
}
