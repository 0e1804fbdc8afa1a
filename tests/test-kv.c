/*
 * test-kv.c - examples/kv-server end to end: redis-cli against it, the
 * RESP2 protocol byte for byte over plain sockets, malformed input, many
 * connections, clients that vanish mid-request, and SIGTERM; then with
 * -t 2 and -t 3 (several loops, the keys sharded over them): keys seen
 * across connections, multi-key commands over every shard, INCR and SET
 * NX raced from 8 connections (pthreads) at once, expiry, SIGTERM under
 * load, and a selection of the one-loop tests again (named test/tN).
 *
 * Each test forks and execs its own examples/kv-server on a free port
 * (bound to 0, closed, reused; another port on EADDRINUSE), waits for its
 * "listening on port N" line on a pipe, talks to it with blocking sockets
 * whose receive and send timeouts are 5 s (scaled), and ends it with
 * SIGTERM, which must make it exit 0 within 1 s (scaled).  A failed test's
 * server is killed by the teardown, and its stderr shown.  Timing bounds
 * scale with CORIO_TEST_TIMEOUT_MULT; nothing asserts speed.  The redis-cli
 * tests skip when redis-cli (Debian's redis-tools) is not on PATH; the
 * whole binary exits 77 when io_uring is unavailable.
 */
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "helpers.h"

#define IO_TIMEOUT_MS	5000	/* a socket's receive/send timeout, scaled */
#define NR_MANY		500	/* connections open at once */
#define NR_IDLE		100	/* idle connections at SIGTERM */
#define MIB		(1024u * 1024u)

static const char *argv0;
static const char *expect_ctx;	/* named by expect_ on a failure */

static struct {
	pid_t pid;
	int port;
	int err_fd;	/* the server's stderr */
	int base_fds;	/* its fds with no client connected */
	int loops;	/* -t: 0 runs it without (one loop) */
} srv = { .pid = -1, .err_fd = -1 };

/* ---- growing byte buffers ------------------------------------------------ */

struct sbuf {
	char *p;
	size_t len, cap;
};

static void sb_add(struct sbuf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;

		while (cap < b->len + n + 1)
			cap *= 2;
		b->p = realloc(b->p, cap);
		assert_non_null(b->p);
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < sizeof(tmp));
	sb_add(b, tmp, (size_t)n);
}

/* A RESP bulk string: "$len\r\n<bytes>\r\n". */
static void sb_bulk(struct sbuf *b, const void *p, size_t n)
{
	sb_printf(b, "$%zu\r\n", n);
	sb_add(b, p, n);
	sb_add(b, "\r\n", 2);
}

/* A RESP command of argc binary arguments. */
static void sb_cmdn(struct sbuf *b, int argc, const void *const *argv,
		    const size_t *lens)
{
	int i;

	sb_printf(b, "*%d\r\n", argc);
	for (i = 0; i < argc; i++)
		sb_bulk(b, argv[i], lens[i]);
}

/* A RESP command from '|'-separated words: "SET|k|v", "ECHO|" (empty). */
static void sb_cmd(struct sbuf *b, const char *words)
{
	const void *argv[64];
	size_t lens[64];
	const char *p = words;
	int argc = 0;

	for (;;) {
		const char *bar = strchr(p, '|');
		size_t n = bar ? (size_t)(bar - p) : strlen(p);

		assert_true(argc < 64);
		argv[argc] = p;
		lens[argc++] = n;
		if (!bar)
			break;
		p = bar + 1;
	}
	sb_cmdn(b, argc, argv, lens);
}

static void sb_free(struct sbuf *b)
{
	free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
}

/*
 * What a test allocates or opens is also released by its teardown: a
 * failed test leaves by a longjmp, and must not leak under valgrind.
 */
static void *owned[16];
static struct sbuf *owned_sb[16];
static bool client_fd[4096];

/* malloc, freed by the teardown (not by the test). */
static void *own(size_t n)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(owned) && owned[i]; i++)
		;
	assert_true(i < ARRAY_SIZE(owned));
	owned[i] = malloc(n);
	assert_non_null(owned[i]);
	return owned[i];
}

/* A test's static sbuf, emptied by the teardown. */
static void sb_own(struct sbuf *b)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(owned_sb); i++) {
		if (owned_sb[i] == b)
			return;
		if (!owned_sb[i]) {
			owned_sb[i] = b;
			return;
		}
	}
	fail();
}

static void kv_close(int fd)
{
	if (fd >= 0 && (size_t)fd < ARRAY_SIZE(client_fd))
		client_fd[fd] = false;
	close(fd);
}

static void release_all(void)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(owned); i++) {
		free(owned[i]);
		owned[i] = NULL;
	}
	for (i = 0; i < ARRAY_SIZE(owned_sb); i++) {
		if (owned_sb[i])
			sb_free(owned_sb[i]);
		owned_sb[i] = NULL;
	}
	for (i = 0; i < ARRAY_SIZE(client_fd); i++)
		if (client_fd[i])
			kv_close((int)i);
}

static void fill(unsigned char *buf, size_t n, unsigned int seed)
{
	size_t i;

	for (i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		buf[i] = (unsigned char)(seed >> 16);
	}
}

/* Prints at most 160 bytes of p, escaped, after what. */
static void show(const char *what, const void *p, size_t n)
{
	const unsigned char *s = p;
	size_t i;

	fprintf(stderr, "%s (%zu bytes): \"", what, n);
	for (i = 0; i < n && i < 160; i++) {
		if (s[i] == '\r')
			fputs("\\r", stderr);
		else if (s[i] == '\n')
			fputs("\\n", stderr);
		else if (s[i] < 32 || s[i] >= 127 || s[i] == '"' ||
			 s[i] == '\\')
			fprintf(stderr, "\\x%02x", s[i]);
		else
			fputc(s[i], stderr);
	}
	fprintf(stderr, "\"%s\n", n > 160 ? "..." : "");
}

/* ---- the server ---------------------------------------------------------- */

static int scaled_ms(int ms)
{
	return (int)((double)ms * test_mult());
}

/* Waits until the server holds want fds (5 s, scaled); the last count. */
static int wait_server_fds(int want)
{
	uint64_t end = mono_ns() + test_slack_ns(CORIO_SEC(5));
	int n;

	while ((n = pid_fd_count(srv.pid)) != want && mono_ns() < end)
		usleep(2000);
	return n;
}

static int free_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sin);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;

	if (s < 0)
		return -1;
	if (bind(s, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
	    getsockname(s, (struct sockaddr *)&sin, &len) == 0)
		port = ntohs(sin.sin_port);
	close(s);
	return port;
}

/* examples/kv-server from the top of the tree or beside tests/. */
static bool find_server(char *path, size_t len)
{
	const char *slash = argv0 ? strrchr(argv0, '/') : NULL;

	snprintf(path, len, "examples/kv-server");
	if (access(path, X_OK) == 0)
		return true;
	if (!slash)
		return false;
	snprintf(path, len, "%.*s/../examples/kv-server",
		 (int)(slash - argv0), argv0);
	return access(path, X_OK) == 0;
}

/* Whatever the server wrote on stderr and we have not read yet. */
static void dump_server_stderr(void)
{
	char buf[4096];
	ssize_t n;

	if (srv.err_fd < 0)
		return;
	while ((n = read(srv.err_fd, buf, sizeof(buf) - 1)) > 0) {
		buf[n] = '\0';
		fprintf(stderr, "kv-server said: %s", buf);
	}
}

static void reap_server(void)
{
	if (srv.pid > 0) {
		kill(srv.pid, SIGKILL);
		waitpid(srv.pid, NULL, 0);
		srv.pid = -1;
	}
	if (srv.err_fd >= 0) {
		dump_server_stderr();
		close(srv.err_fd);
		srv.err_fd = -1;
	}
}

/*
 * Starts path on port: 0 once it printed its listening line, -EADDRINUSE
 * to try another port, or -EIO.
 */
static int spawn_server(const char *path, int port)
{
	char arg[16], want[64], buf[1024];
	uint64_t end = mono_ns() + test_slack_ns(CORIO_SEC(10));
	size_t have = 0;
	int p[2];

	snprintf(arg, sizeof(arg), "%d", port);
	snprintf(want, sizeof(want), "kv-server: listening on port %d\n", port);
	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	fflush(NULL);
	srv.pid = fork();
	if (srv.pid < 0)
		return -errno;
	if (srv.pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(null, 0);
		dup2(null, 1);
		dup2(p[1], 2);
		if (srv.loops) {
			char t[16];

			snprintf(t, sizeof(t), "%d", srv.loops);
			execl(path, path, "-h", "127.0.0.1", "-p", arg, "-t", t,
			      (char *)NULL);
		} else {
			execl(path, path, "-h", "127.0.0.1", "-p", arg,
			      (char *)NULL);
		}
		_exit(127);
	}
	close(p[1]);
	srv.port = port;
	srv.err_fd = p[0];
	buf[0] = '\0';
	while (!strstr(buf, want)) {
		struct pollfd pf = { .fd = p[0], .events = POLLIN };
		uint64_t now = mono_ns();
		ssize_t n;

		if (now >= end ||
		    poll(&pf, 1, (int)((end - now) / 1000000) + 1) != 1)
			break;
		n = read(p[0], buf + have, sizeof(buf) - 1 - have);
		if (n <= 0)
			break;
		have += (size_t)n;
		buf[have] = '\0';
	}
	if (strstr(buf, want)) {
		fcntl(p[0], F_SETFL, O_NONBLOCK);
		return 0;
	}
	close(srv.err_fd);
	srv.err_fd = -1;
	kill(srv.pid, SIGKILL);
	waitpid(srv.pid, NULL, 0);
	srv.pid = -1;
	if (strstr(buf, "in use"))
		return -EADDRINUSE;
	fprintf(stderr, "kv-server did not start; it said: %s\n", buf);
	return -EIO;
}

/*
 * Whether the server holds its signalfd yet: its main task makes it just
 * after the listening line, and with -t N another loop may serve the
 * first client before that.
 */
static bool server_has_signalfd(void)
{
	char dir[64], link[64];
	struct dirent *de;
	bool found = false;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)srv.pid);
	d = opendir(dir);
	if (!d)
		return false;
	while (!found && (de = readdir(d))) {
		ssize_t n = readlinkat(dirfd(d), de->d_name, link,
				       sizeof(link) - 1);

		if (n > 0) {
			link[n] = '\0';
			found = strstr(link, "signalfd") != NULL;
		}
	}
	closedir(d);
	return found;
}

static int kv_connect(void);
static void expect_(int fd, const void *want, size_t n, int line);
#define EXPECT(fd, lit)	expect_((fd), (lit), sizeof(lit) - 1, __LINE__)

/* Starts a server for this test; skips when there is none (run make). */
static void server_start(void)
{
	char path[PATH_MAX];
	int i, ret = -EADDRINUSE, probe;
	uint64_t end;

	if (!find_server(path, sizeof(path))) {
		print_message("no examples/kv-server (run make): skipped\n");
		skip();
	}
	for (i = 0; i < 10 && ret == -EADDRINUSE; i++) {
		int port = free_port();

		assert_true(port > 0);
		ret = spawn_server(path, port);
	}
	assert_int_equal(ret, 0);

	/* The baseline: the fds with one served client, less that one,
	 * once the server is all up. */
	end = mono_ns() + test_slack_ns(CORIO_SEC(5));
	while (!server_has_signalfd() && mono_ns() < end)
		usleep(1000);
	assert_true(server_has_signalfd());
	probe = kv_connect();
	assert_int_equal(send(probe, "PING\r\n", 6, MSG_NOSIGNAL), 6);
	EXPECT(probe, "+PONG\r\n");
	srv.base_fds = pid_fd_count(srv.pid) - 1;
	assert_true(srv.base_fds > 0);
	kv_close(probe);
	assert_int_equal(wait_server_fds(srv.base_fds), srv.base_fds);
}

/* SIGTERM: the server must exit 0 within 1 s (scaled); the ms it took. */
static unsigned int server_stop(void)
{
	uint64_t start = mono_ns(), end = start + test_slack_ns(CORIO_SEC(1));
	int status = 0;
	pid_t r;

	assert_true(srv.pid > 0);
	assert_int_equal(kill(srv.pid, SIGTERM), 0);
	while ((r = waitpid(srv.pid, &status, WNOHANG)) == 0 &&
	       mono_ns() < end)
		usleep(1000);
	if (r != srv.pid) {
		fprintf(stderr, "kv-server did not exit within %d ms of "
			"SIGTERM\n", scaled_ms(1000));
		assert_int_equal(r, srv.pid);
	}
	srv.pid = -1;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		dump_server_stderr();
		if (WIFSIGNALED(status))
			fprintf(stderr, "kv-server was killed by signal %d\n",
				WTERMSIG(status));
	}
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	close(srv.err_fd);
	srv.err_fd = -1;
	return (unsigned int)((mono_ns() - start) / 1000000);
}

/* The server is alive and answers a fresh connection. */
static void assert_server_alive(void)
{
	int fd;

	assert_int_equal(waitpid(srv.pid, NULL, WNOHANG), 0);
	fd = kv_connect();
	assert_int_equal(send(fd, "*1\r\n$4\r\nPING\r\n", 14, MSG_NOSIGNAL),
			 14);
	EXPECT(fd, "+PONG\r\n");
	kv_close(fd);
}

static int teardown_server(void **state)
{
	(void)state;
	expect_ctx = NULL;
	release_all();
	reap_server();
	srv.loops = 0;
	return 0;
}

/* A test of the server with -t N, N the test's initial state. */
static int setup_loops(void **state)
{
	srv.loops = (int)(intptr_t)*state;
	return 0;
}

/* ---- a client ------------------------------------------------------------ */

static void set_timeouts(int fd, int ms)
{
	struct timeval tv = { .tv_sec = ms / 1000,
			      .tv_usec = (ms % 1000) * 1000 };

	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv,
				    sizeof(tv)), 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv,
				    sizeof(tv)), 0);
}

/* A blocking socket to the server; rcvbuf > 0 shrinks its receive buffer. */
static int kv_connect_rcvbuf(int rcvbuf)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				   .sin_port = htons((uint16_t)srv.port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	assert_true(fd >= 0);
	if (rcvbuf > 0)
		assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf,
					    sizeof(rcvbuf)), 0);
	set_timeouts(fd, scaled_ms(IO_TIMEOUT_MS));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
		fprintf(stderr, "connect to port %d: %s\n", srv.port,
			strerror(errno));
		fail();
	}
	if ((size_t)fd < ARRAY_SIZE(client_fd))
		client_fd[fd] = true;
	return fd;
}

static int kv_connect(void)
{
	return kv_connect_rcvbuf(0);
}

static void send_buf(int fd, const void *p, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = send(fd, (const char *)p + done, n - done,
				 MSG_NOSIGNAL);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			fprintf(stderr, "send: %s\n", strerror(errno));
			fail();
		}
		done += (size_t)r;
	}
}

static void send_str(int fd, const char *s)
{
	send_buf(fd, s, strlen(s));
}

/* Up to n bytes, stopping early at EOF, an error or the timeout. */
static size_t recv_upto(int fd, void *buf, size_t n)
{
	size_t done = 0;

	while (done < n) {
		ssize_t r = recv(fd, (char *)buf + done, n - done, 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		done += (size_t)r;
	}
	return done;
}

/* Reads exactly the reply want, byte for byte, or fails the test. */
static void expect_(int fd, const void *want, size_t n, int line)
{
	char *got = malloc(n ? n : 1);
	size_t have;

	assert_non_null(got);
	have = recv_upto(fd, got, n);
	if (have != n || memcmp(got, want, n) != 0) {
		fprintf(stderr, "test-kv.c:%d: wrong reply\n", line);
		if (expect_ctx)
			fprintf(stderr, "  to %s\n", expect_ctx);
		show("  expected", want, n);
		show("  received", got, have);
		if (have < n)
			fprintf(stderr, "  (then %s)\n", errno == EAGAIN ?
				"nothing more within the timeout" :
				"end of stream or an error");
		free(got);
		fail();
	}
	free(got);
}

/* One "\r\n"-terminated line (at most cap - 1 bytes), NUL-terminated. */
static size_t recv_line(int fd, char *buf, size_t cap)
{
	size_t n = 0;

	while (n + 1 < cap) {
		ssize_t r = recv(fd, buf + n, 1, 0);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (buf[n++] == '\n')
			break;
	}
	buf[n] = '\0';
	return n;
}

/* The peer closed: EOF or a reset, not a timeout. */
static bool peer_closed(int fd)
{
	char c;
	ssize_t r;

	do
		r = recv(fd, &c, 1, 0);
	while (r < 0 && errno == EINTR);
	return r == 0 || (r < 0 && errno == ECONNRESET);
}

/*
 * Sends out while receiving, so that neither side stalls on a full
 * socket buffer, until all of out is sent and inlen bytes are in (or EOF,
 * an error, the deadline).  Stops sending on a send error (the server
 * may close first).  Returns the bytes received.
 */
static size_t duplex(int fd, const void *out, size_t outlen, void *in,
		     size_t inlen)
{
	uint64_t end = mono_ns() + test_slack_ns(CORIO_SEC(10));
	size_t sent = 0, got = 0;
	bool send_ok = true;

	while ((send_ok && sent < outlen) || got < inlen) {
		struct pollfd pf = { .fd = fd, .events = 0 };
		uint64_t now = mono_ns();
		ssize_t r;

		if (now >= end)
			break;
		if (send_ok && sent < outlen)
			pf.events |= POLLOUT;
		if (got < inlen)
			pf.events |= POLLIN;
		if (poll(&pf, 1, (int)((end - now) / 1000000) + 1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if ((pf.revents & (POLLOUT | POLLERR | POLLHUP)) && send_ok &&
		    sent < outlen) {
			r = send(fd, (const char *)out + sent, outlen - sent,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
			if (r > 0)
				sent += (size_t)r;
			else if (r < 0 && errno != EAGAIN && errno != EINTR)
				send_ok = false;
		}
		if ((pf.revents & (POLLIN | POLLERR | POLLHUP)) &&
		    got < inlen) {
			r = recv(fd, (char *)in + got, inlen - got,
				 MSG_DONTWAIT);
			if (r > 0)
				got += (size_t)r;
			else if (r == 0 ||
				 (errno != EAGAIN && errno != EINTR))
				break;
		}
	}
	return got;
}

/* Sends req and expects reply, exactly, both sent and read at once. */
static void exchange_(int fd, const struct sbuf *req, const struct sbuf *reply,
		      int line)
{
	char *got = malloc(reply->len ? reply->len : 1);
	size_t have;

	assert_non_null(got);
	have = duplex(fd, req->p, req->len, got, reply->len);
	if (have != reply->len || memcmp(got, reply->p, have) != 0) {
		size_t i = 0;

		while (i < have && got[i] == reply->p[i])
			i++;
		fprintf(stderr, "test-kv.c:%d: wrong reply: %zu of %zu bytes "
			"received, the first difference at byte %zu\n", line,
			have, reply->len, i);
		show("  expected from there", reply->p + i, reply->len - i);
		show("  received from there", got + i, have - i);
		free(got);
		fail();
	}
	free(got);
}
#define EXCHANGE(fd, req, reply)	exchange_((fd), (req), (reply), __LINE__)

/* ---- redis-cli ----------------------------------------------------------- */

static bool have_redis_cli(void)
{
	const char *path = getenv("PATH");
	char dir[PATH_MAX];

	if (!path)
		return false;
	while (*path) {
		size_t n = strcspn(path, ":");

		snprintf(dir, sizeof(dir), "%.*s/redis-cli",
			 n ? (int)n : 1, n ? path : ".");
		if (access(dir, X_OK) == 0)
			return true;
		path += n;
		if (*path == ':')
			path++;
	}
	return false;
}

static void need_redis_cli(void)
{
	if (!have_redis_cli()) {
		print_message("redis-cli is not on PATH (Debian: apt-get "
			      "install redis-tools): skipped\n");
		skip();
	}
}

/*
 * Runs redis-cli -h 127.0.0.1 -p PORT args... (up to a NULL) and returns
 * its standard output and error, NUL-terminated, in buf; fails the test
 * if it does not exit 0 within 5 s (scaled).
 */
static void cli_run(char *buf, size_t cap, const char *arg, ...)
{
	char *argv[32], port[16];
	uint64_t end = mono_ns() + test_slack_ns(CORIO_SEC(5));
	size_t have = 0;
	int argc = 0, p[2], status;
	va_list ap;
	pid_t pid;

	snprintf(port, sizeof(port), "%d", srv.port);
	argv[argc++] = "redis-cli";
	argv[argc++] = "-h";
	argv[argc++] = "127.0.0.1";
	argv[argc++] = "-p";
	argv[argc++] = port;
	va_start(ap, arg);
	for (; arg; arg = va_arg(ap, const char *)) {
		assert_true(argc < 31);
		argv[argc++] = (char *)arg;
	}
	va_end(ap);
	argv[argc] = NULL;

	assert_int_equal(pipe2(p, O_CLOEXEC), 0);
	fflush(NULL);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		dup2(null, 0);
		dup2(p[1], 1);
		dup2(p[1], 2);
		execvp("redis-cli", argv);
		_exit(127);
	}
	close(p[1]);
	for (;;) {
		struct pollfd pf = { .fd = p[0], .events = POLLIN };
		uint64_t now = mono_ns();
		ssize_t n;

		if (now >= end ||
		    poll(&pf, 1, (int)((end - now) / 1000000) + 1) != 1)
			break;
		n = read(p[0], buf + have, cap - 1 - have);
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	buf[have] = '\0';
	close(p[0]);
	if (mono_ns() >= end) {
		fprintf(stderr, "redis-cli %s ... did not finish\n", argv[5]);
		kill(pid, SIGKILL);
	}
	status = child_wait(pid);
	if (status != 0)
		fprintf(stderr, "redis-cli %s ...: exit %d, output: %s\n",
			argv[5], status, buf);
	assert_int_equal(status, 0);
}

/* redis-cli's whole output must be want. */
#define CLI(want, ...)							\
	do {								\
		char out_[4096];					\
		cli_run(out_, sizeof(out_), __VA_ARGS__, (char *)NULL);	\
		if (strcmp(out_, (want)) != 0) {			\
			fprintf(stderr, "test-kv.c:%d: redis-cli\n",	\
				__LINE__);				\
			show("  expected", (want), strlen(want));	\
			show("  received", out_, strlen(out_));		\
			fail();						\
		}							\
	} while (0)

/* redis-cli's output must start with want (its errors end in "\n\n"). */
#define CLI_PREFIX(want, ...)						\
	do {								\
		char out_[4096];					\
		cli_run(out_, sizeof(out_), __VA_ARGS__, (char *)NULL);	\
		if (strncmp(out_, (want), strlen(want)) != 0) {		\
			fprintf(stderr, "test-kv.c:%d: redis-cli\n",	\
				__LINE__);				\
			show("  expected a start", (want), strlen(want)); \
			show("  received", out_, strlen(out_));		\
			fail();						\
		}							\
	} while (0)

static void test_cli_ping_echo(void **state)
{
	(void)state;
	need_redis_cli();
	server_start();
	CLI("PONG\n", "PING");
	CLI("hello\n", "PING", "hello");
	CLI("hello world\n", "ECHO", "hello world");
	CLI("\n", "ECHO", "");
	server_stop();
}

static void test_cli_set_get(void **state)
{
	(void)state;
	need_redis_cli();
	server_start();
	CLI("OK\n", "SET", "greeting", "hello world");
	CLI("hello world\n", "GET", "greeting");
	CLI("OK\n", "SET", "greeting", "bye");
	CLI("bye\n", "GET", "greeting");
	/* A missing key: a nil reply, which redis-cli prints as nothing. */
	CLI("\n", "GET", "missing");
	/* NX and XX. */
	CLI("\n", "SET", "greeting", "x", "NX");
	CLI("bye\n", "GET", "greeting");
	CLI("\n", "SET", "other", "x", "XX");
	CLI("\n", "GET", "other");
	CLI("OK\n", "SET", "other", "y", "NX");
	CLI("y\n", "GET", "other");
	server_stop();
}

static void test_cli_expire(void **state)
{
	unsigned int ex_s = (unsigned int)test_mult();
	unsigned int px_ms = (unsigned int)scaled_ms(500);
	char ex[16], px[16];

	(void)state;
	need_redis_cli();
	server_start();
	snprintf(ex, sizeof(ex), "%u", ex_s);
	snprintf(px, sizeof(px), "%u", px_ms);
	CLI("OK\n", "SET", "ex", "v1", "EX", ex);
	CLI("OK\n", "SET", "px", "v2", "PX", px);
	CLI("OK\n", "SET", "forever", "v3");
	CLI("v1\n", "GET", "ex");
	CLI("v2\n", "GET", "px");
	/* PX: gone 500 ms (scaled) and a margin later. */
	usleep((useconds_t)px_ms * 1000 + (useconds_t)scaled_ms(200) * 1000);
	CLI("\n", "GET", "px");
	CLI("0\n", "EXISTS", "px");
	/* EX 1: gone after 1.2 s (both scaled). */
	usleep((useconds_t)scaled_ms(1200) * 1000 -
	       (useconds_t)scaled_ms(700) * 1000);
	CLI("\n", "GET", "ex");
	CLI("0\n", "EXISTS", "ex");
	CLI("0\n", "DEL", "ex");
	CLI("v3\n", "GET", "forever");
	server_stop();
}

static void test_cli_incr(void **state)
{
	(void)state;
	need_redis_cli();
	server_start();
	CLI("1\n", "INCR", "counter");
	CLI("2\n", "INCR", "counter");
	CLI("2\n", "GET", "counter");
	CLI("OK\n", "SET", "n", "41");
	CLI("42\n", "INCR", "n");
	CLI("OK\n", "SET", "word", "abc");
	CLI_PREFIX("ERR value is not an integer or out of range\n", "INCR",
		   "word");
	CLI("abc\n", "GET", "word");
	server_stop();
}

static void test_cli_mset_mget_del_exists(void **state)
{
	(void)state;
	need_redis_cli();
	server_start();
	CLI("OK\n", "MSET", "a", "1", "b", "2", "c", "3");
	CLI("1\n2\n\n3\n", "MGET", "a", "b", "missing", "c");
	CLI("3\n", "EXISTS", "a", "b", "c", "missing");
	CLI("2\n", "EXISTS", "a", "a");
	CLI("2\n", "DEL", "a", "b", "missing");
	CLI("0\n", "DEL", "a");
	CLI("1\n", "EXISTS", "a", "b", "c");
	CLI("\n\n3\n", "MGET", "a", "b", "c");
	CLI_PREFIX("ERR unknown command", "FLUSHALL");
	CLI_PREFIX("ERR wrong number of arguments", "GET", "a", "b");
	server_stop();
}

/* ---- the protocol, byte for byte ------------------------------------------ */

struct pair {
	const char *req;	/* '|'-separated words */
	const char *reply;
};

static void test_resp_replies(void **state)
{
	static const struct pair pairs[] = {
		{ "PING", "+PONG\r\n" },
		{ "ping", "+PONG\r\n" },
		{ "PING|hello", "$5\r\nhello\r\n" },
		{ "ECHO|hello world", "$11\r\nhello world\r\n" },
		{ "ECHO|", "$0\r\n\r\n" },
		{ "GET|missing", "$-1\r\n" },
		{ "SET|k|v", "+OK\r\n" },
		{ "GET|k", "$1\r\nv\r\n" },
		{ "get|k", "$1\r\nv\r\n" },
		{ "SET|k|", "+OK\r\n" },
		{ "GET|k", "$0\r\n\r\n" },
		{ "SET|k|v", "+OK\r\n" },
		/* NX and XX. */
		{ "SET|k|w|NX", "$-1\r\n" },
		{ "GET|k", "$1\r\nv\r\n" },
		{ "SET|k2|w|XX", "$-1\r\n" },
		{ "GET|k2", "$-1\r\n" },
		{ "SET|k|w|xx", "+OK\r\n" },
		{ "GET|k", "$1\r\nw\r\n" },
		{ "SET|k2|w|nx", "+OK\r\n" },
		{ "GET|k2", "$1\r\nw\r\n" },
		{ "SET|k|v|NX|XX", "-ERR syntax error\r\n" },
		{ "SET|k|v|BOGUS", "-ERR syntax error\r\n" },
		{ "SET|k|v|EX", "-ERR syntax error\r\n" },
		{ "SET|k|v|EX|0",
		  "-ERR invalid expire time in 'set' command\r\n" },
		{ "SET|k|v|EX|abc",
		  "-ERR invalid expire time in 'set' command\r\n" },
		{ "SET|k|v|PX|-1",
		  "-ERR invalid expire time in 'set' command\r\n" },
		{ "GET|k", "$1\r\nw\r\n" },
		{ "SET|k|v|ex|100", "+OK\r\n" },
		{ "SET|k|v|PX|100000", "+OK\r\n" },
		{ "GET|k", "$1\r\nv\r\n" },
		/* INCR. */
		{ "INCR|c", ":1\r\n" },
		{ "INCR|c", ":2\r\n" },
		{ "GET|c", "$1\r\n2\r\n" },
		{ "SET|neg|-5", "+OK\r\n" },
		{ "INCR|neg", ":-4\r\n" },
		{ "INCR|k",
		  "-ERR value is not an integer or out of range\r\n" },
		{ "SET|big|9223372036854775807", "+OK\r\n" },
		{ "INCR|big",
		  "-ERR increment or decrement would overflow\r\n" },
		{ "SET|huge|99999999999999999999", "+OK\r\n" },
		{ "INCR|huge",
		  "-ERR value is not an integer or out of range\r\n" },
		/* DEL and EXISTS count; MSET and MGET. */
		{ "EXISTS|k|c|missing", ":2\r\n" },
		{ "EXISTS|k|k", ":2\r\n" },
		{ "DEL|k|c|missing", ":2\r\n" },
		{ "DEL|k", ":0\r\n" },
		{ "EXISTS|k", ":0\r\n" },
		{ "MSET|a|1|b|2", "+OK\r\n" },
		{ "MGET|a|missing|b",
		  "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n" },
		{ "MSET|a|3|a|4", "+OK\r\n" },
		{ "MGET|a", "*1\r\n$1\r\n4\r\n" },
		/* What redis-cli and redis-benchmark ask. */
		{ "COMMAND", "*0\r\n" },
		{ "COMMAND|DOCS", "*0\r\n" },
		{ "CONFIG|GET|save", "*2\r\n$4\r\nsave\r\n$0\r\n\r\n" },
		{ "CONFIG|GET|appendonly",
		  "*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n" },
		{ "SELECT|0", "+OK\r\n" },
		{ "SELECT|1", "-ERR DB index is out of range\r\n" },
		/* Unknown commands and wrong arities: an error, no close. */
		{ "FLUSHALL", "-ERR unknown command 'FLUSHALL'\r\n" },
		{ "", "-ERR unknown command ''\r\n" },
		{ "GET", "-ERR wrong number of arguments for 'get' "
			 "command\r\n" },
		{ "GET|a|b", "-ERR wrong number of arguments for 'get' "
			     "command\r\n" },
		{ "SET|a", "-ERR wrong number of arguments for 'set' "
			   "command\r\n" },
		{ "DEL", "-ERR wrong number of arguments for 'del' "
			 "command\r\n" },
		{ "EXISTS", "-ERR wrong number of arguments for 'exists' "
			    "command\r\n" },
		{ "INCR", "-ERR wrong number of arguments for 'incr' "
			  "command\r\n" },
		{ "INCR|a|b", "-ERR wrong number of arguments for 'incr' "
			      "command\r\n" },
		{ "MGET", "-ERR wrong number of arguments for 'mget' "
			  "command\r\n" },
		{ "MSET|a", "-ERR wrong number of arguments for 'mset' "
			    "command\r\n" },
		{ "MSET|a|1|b", "-ERR wrong number of arguments for 'mset' "
				"command\r\n" },
		{ "ECHO", "-ERR wrong number of arguments for 'echo' "
			  "command\r\n" },
		{ "PING|a|b", "-ERR wrong number of arguments for 'ping' "
			      "command\r\n" },
		{ "PING", "+PONG\r\n" },
	};
	static struct sbuf req;
	size_t i;
	int fd;

	(void)state;
	sb_own(&req);
	server_start();
	fd = kv_connect();

	/* The framing spelled out once. */
	send_str(fd, "*1\r\n$4\r\nPING\r\n");
	EXPECT(fd, "+PONG\r\n");
	send_str(fd, "*2\r\n$3\r\nGET\r\n$7\r\nmissing\r\n");
	EXPECT(fd, "$-1\r\n");
	send_str(fd, "*2\r\n$4\r\nINCR\r\n$3\r\nctr\r\n");
	EXPECT(fd, ":1\r\n");

	for (i = 0; i < ARRAY_SIZE(pairs); i++) {
		req.len = 0;
		sb_cmd(&req, pairs[i].req);
		send_buf(fd, req.p, req.len);
		expect_ctx = pairs[i].req;
		expect_(fd, pairs[i].reply, strlen(pairs[i].reply), __LINE__);
	}
	expect_ctx = NULL;

	/* An empty multibulk is no request: no reply. */
	send_str(fd, "*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n");
	EXPECT(fd, "+PONG\r\n");

	/* QUIT: +OK, then the server closes. */
	send_str(fd, "*1\r\n$4\r\nQUIT\r\n");
	EXPECT(fd, "+OK\r\n");
	assert_true(peer_closed(fd));
	kv_close(fd);
	sb_free(&req);

	assert_server_alive();
	assert_int_equal(wait_server_fds(srv.base_fds), srv.base_fds);
	server_stop();
}

static void test_inline_commands(void **state)
{
	int fd;

	(void)state;
	server_start();
	fd = kv_connect();
	send_str(fd, "PING\r\n");
	EXPECT(fd, "+PONG\r\n");
	send_str(fd, "PING\n");
	EXPECT(fd, "+PONG\r\n");
	send_str(fd, "  set \t il   val  \r\n");
	EXPECT(fd, "+OK\r\n");
	send_str(fd, "get il\r\n");
	EXPECT(fd, "$3\r\nval\r\n");
	/* Blank lines are skipped. */
	send_str(fd, "\r\n\r\n\nPING\r\n");
	EXPECT(fd, "+PONG\r\n");
	send_str(fd, "ECHO hello\r\nECHO world\r\nINCR n\r\nINCR n\r\n");
	EXPECT(fd, "$5\r\nhello\r\n$5\r\nworld\r\n:1\r\n:2\r\n");
	/* Inline and multibulk mixed in one write. */
	send_str(fd, "SET m 7\r\n*2\r\n$4\r\nINCR\r\n$1\r\nm\r\nGET m\r\n");
	EXPECT(fd, "+OK\r\n:8\r\n$1\r\n8\r\n");
	send_str(fd, "FOO bar\r\n");
	EXPECT(fd, "-ERR unknown command 'FOO'\r\n");
	send_str(fd, "GET\r\n");
	EXPECT(fd, "-ERR wrong number of arguments for 'get' command\r\n");
	send_str(fd, "MGET il nope\r\n");
	EXPECT(fd, "*2\r\n$3\r\nval\r\n$-1\r\n");
	/* A last line without its newline, then EOF: still run. */
	send_str(fd, "ECHO last");
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	EXPECT(fd, "$4\r\nlast\r\n");
	assert_true(peer_closed(fd));
	kv_close(fd);
	assert_server_alive();
	server_stop();
}

#define NR_PIPELINED	1000

static void test_pipelining(void **state)
{
	static struct sbuf req, reply;
	char key[32], val[64];
	int fd, i;

	(void)state;
	sb_own(&req);
	sb_own(&reply);
	server_start();
	for (i = 0; i < NR_PIPELINED; i++) {
		const void *argv[3];
		size_t lens[3];
		int kn = snprintf(key, sizeof(key), "key:%d", i);
		int vn = snprintf(val, sizeof(val), "value-%d-%0*d", i,
				  i % 40, 0);

		argv[0] = "SET";
		lens[0] = 3;
		argv[1] = key;
		lens[1] = (size_t)kn;
		argv[2] = val;
		lens[2] = (size_t)vn;
		sb_cmdn(&req, 3, argv, lens);
		argv[0] = "GET";
		sb_cmdn(&req, 2, argv, lens);
		sb_str(&reply, "+OK\r\n");
		sb_bulk(&reply, val, (size_t)vn);
	}
	fd = kv_connect();
	/* One send of all 2000 commands (duplex reads while it writes). */
	EXCHANGE(fd, &req, &reply);
	/* Then again, with every reply a GET: the same keys, in order. */
	req.len = reply.len = 0;
	sb_str(&req, "*");
	sb_printf(&req, "%d\r\n$4\r\nMGET\r\n", NR_PIPELINED + 1);
	sb_printf(&reply, "*%d\r\n", NR_PIPELINED);
	for (i = 0; i < NR_PIPELINED; i++) {
		int kn = snprintf(key, sizeof(key), "key:%d", i);
		int vn = snprintf(val, sizeof(val), "value-%d-%0*d", i,
				  i % 40, 0);

		sb_bulk(&req, key, (size_t)kn);
		sb_bulk(&reply, val, (size_t)vn);
	}
	EXCHANGE(fd, &req, &reply);
	kv_close(fd);
	sb_free(&req);
	sb_free(&reply);
	server_stop();
}

static void test_binary_safe(void **state)
{
	unsigned char val[4 * 256 + 32], key[16];
	const void *argv[3];
	size_t lens[3], n = 0;
	static struct sbuf req, reply;
	int i, fd;

	(void)state;
	sb_own(&req);
	sb_own(&reply);
	for (i = 0; i < 4 * 256; i++)
		val[n++] = (unsigned char)i;
	memcpy(val + n, "\r\n$-1\r\n*1\r\n\r\n\0\n\r", 16);
	n += 16;
	memcpy(key, "k\0\r\n \xff\x01y", 8);

	server_start();
	fd = kv_connect();
	argv[0] = "SET";
	lens[0] = 3;
	argv[1] = key;
	lens[1] = 8;
	argv[2] = val;
	lens[2] = n;
	sb_cmdn(&req, 3, argv, lens);
	sb_str(&reply, "+OK\r\n");
	argv[0] = "GET";
	sb_cmdn(&req, 2, argv, lens);
	sb_bulk(&reply, val, n);
	/* The key is binary too: "k" alone is another key. */
	sb_cmd(&req, "GET|k");
	sb_str(&reply, "$-1\r\n");
	argv[0] = "EXISTS";
	lens[0] = 6;
	sb_cmdn(&req, 2, argv, lens);
	sb_str(&reply, ":1\r\n");
	argv[0] = "ECHO";
	lens[0] = 4;
	argv[1] = val;
	lens[1] = n;
	sb_cmdn(&req, 2, argv, lens);
	sb_bulk(&reply, val, n);
	argv[0] = "MGET";
	lens[0] = 4;
	argv[1] = key;
	lens[1] = 8;
	argv[2] = "k";
	lens[2] = 1;
	sb_cmdn(&req, 3, argv, lens);
	sb_str(&reply, "*2\r\n");
	sb_bulk(&reply, val, n);
	sb_str(&reply, "$-1\r\n");
	EXCHANGE(fd, &req, &reply);
	kv_close(fd);
	sb_free(&req);
	sb_free(&reply);
	server_stop();
}

static void test_value_1mib(void **state)
{
	unsigned char *val = own(MIB);
	static struct sbuf req, reply;
	const void *argv[3] = { "SET", "big", val };
	size_t lens[3] = { 3, 3, MIB };
	int fd;

	(void)state;
	sb_own(&req);
	sb_own(&reply);
	fill(val, MIB, 4242);
	server_start();
	fd = kv_connect();
	sb_cmdn(&req, 3, argv, lens);
	sb_str(&reply, "+OK\r\n");
	EXCHANGE(fd, &req, &reply);

	req.len = reply.len = 0;
	sb_cmd(&req, "GET|big");
	sb_bulk(&reply, val, MIB);
	EXCHANGE(fd, &req, &reply);

	/* Set, read back twice and echoed, in one pipelined write. */
	req.len = reply.len = 0;
	val[0] ^= 0xff;
	sb_cmdn(&req, 3, argv, lens);
	sb_str(&reply, "+OK\r\n");
	sb_cmd(&req, "GET|big");
	sb_bulk(&reply, val, MIB);
	sb_cmd(&req, "MGET|big|big");
	sb_str(&reply, "*2\r\n");
	sb_bulk(&reply, val, MIB);
	sb_bulk(&reply, val, MIB);
	argv[0] = "ECHO";
	lens[0] = 4;
	argv[1] = val;
	lens[1] = MIB;
	sb_cmdn(&req, 2, argv, lens);
	sb_bulk(&reply, val, MIB);
	EXCHANGE(fd, &req, &reply);
	kv_close(fd);
	sb_free(&req);
	sb_free(&reply);
	server_stop();
}

/* ---- malformed input ----------------------------------------------------- */

struct bad {
	const char *name;
	const char *input;
	size_t len;		/* 0: strlen(input) */
};

/* Sends input; expects one "-ERR Protocol error" line, then a close. */
static void expect_protocol_error(const char *name, const void *input,
				  size_t len)
{
	char got[4096];
	size_t have;
	int fd = kv_connect();
	bool closed;

	have = duplex(fd, input, len, got, sizeof(got) - 1);
	got[have] = '\0';
	/* duplex stops at EOF or a reset: the server must have closed. */
	closed = have < sizeof(got) - 1 && peer_closed(fd);
	if (strncmp(got, "-ERR Protocol error", 19) != 0 ||
	    have < 2 || memcmp(got + have - 2, "\r\n", 2) != 0 ||
	    memchr(got, '\n', have - 1) || !closed) {
		fprintf(stderr, "malformed input \"%s\":\n", name);
		show("  sent", input, len);
		show("  received", got, have);
		fprintf(stderr, "  connection %s\n",
			closed ? "closed" : "NOT closed");
		fail();
	}
	print_message("%-28s -> %.*s\n", name, (int)have - 2, got);
	kv_close(fd);
	assert_server_alive();
}

static void test_malformed_input(void **state)
{
	static const struct bad bad[] = {
		{ "*abc", "*abc\r\n", 0 },
		{ "* without a count", "*\r\n", 0 },
		{ "*- ", "*-\r\n", 0 },
		{ "*1 without \\r", "*1\n", 0 },
		{ "multibulk count over 4096", "*100000\r\n", 0 },
		{ "multibulk count overflows", "*99999999999999999999999\r\n",
		  0 },
		{ "missing $", "*2\r\n$3\r\nGET\r\nfoo\r\n", 0 },
		{ "$-5", "*1\r\n$-5\r\n", 0 },
		{ "$-1 as an argument", "*1\r\n$-1\r\n", 0 },
		{ "$abc", "*1\r\n$abc\r\n", 0 },
		{ "bulk over the cap", "*1\r\n$999999999\r\n", 0 },
		{ "bulk length overflows",
		  "*1\r\n$99999999999999999999\r\n", 0 },
		{ "bulk header too long",
		  "*1\r\n$00000000000000000000000000000000000000000004\r\n"
		  "PING\r\n", 0 },
		{ "bad bulk terminator", "*1\r\n$4\r\nPINGxx\r\n", 0 },
		{ "garbage after *", "*\xff\xfe\x01\r\n", 0 },
		{ "NUL after *", "*1\0\r\n", 5 },
	};
	size_t i, n;
	char *big;

	(void)state;
	server_start();
	for (i = 0; i < ARRAY_SIZE(bad); i++)
		expect_protocol_error(bad[i].name, bad[i].input,
				      bad[i].len ? bad[i].len :
						   strlen(bad[i].input));

	/* An inline line of 100 KiB without a newline. */
	n = 100 * 1024;
	big = own(n);
	memset(big, 'a', n);
	memcpy(big, "SET k ", 6);
	expect_protocol_error("100 KiB inline, no newline", big, n);
	/* 100 KiB of garbage that never ends a line (nor starts with *). */
	fill((unsigned char *)big, n, 77);
	for (i = 0; i < n; i++)
		if (big[i] == '\n' || big[i] == '\r' || big[i] == '*')
			big[i] = 'x';
	expect_protocol_error("100 KiB garbage, no newline", big, n);

	/* A valid request, then a bad one: the first is answered. */
	{
		int fd = kv_connect();
		char line[256];

		send_str(fd, "*1\r\n$4\r\nPING\r\n*x\r\n");
		EXPECT(fd, "+PONG\r\n");
		recv_line(fd, line, sizeof(line));
		assert_true(strncmp(line, "-ERR Protocol error", 19) == 0);
		assert_true(peer_closed(fd));
		kv_close(fd);
	}
	assert_int_equal(wait_server_fds(srv.base_fds), srv.base_fds);
	server_stop();
}

/*
 * Garbage lines (pseudo-random bytes, never a '*' first) are inline
 * commands: each gets an "-ERR unknown command" and the connection goes on.
 */
static void test_garbage_lines(void **state)
{
	unsigned char buf[8192];
	char line[512];
	int fd, lines = 0, errs = 0;
	size_t i;

	(void)state;
	fill(buf, sizeof(buf), 99);
	for (i = 0; i < sizeof(buf); i++) {
		if (buf[i] == '*' || buf[i] == '\r')
			buf[i] = 'z';
		/* Short lines of 3 to 66 bytes, each starting with '!'. */
		if (i % 64 == 63 || buf[i] == '\n') {
			buf[i] = '\n';
			if (i + 1 < sizeof(buf))
				buf[i + 1] = '!';
			lines++;
		}
	}
	buf[0] = '!';
	buf[sizeof(buf) - 1] = '\n';
	server_start();
	fd = kv_connect();
	send_buf(fd, buf, sizeof(buf));
	send_str(fd, "PING\r\n");
	/* Every line is one word or more: one error each, then PONG. */
	for (;;) {
		size_t n = recv_line(fd, line, sizeof(line));

		if (n == 0) {
			fprintf(stderr, "no +PONG after %d errors\n", errs);
			fail();
		}
		if (!strcmp(line, "+PONG\r\n"))
			break;
		if (strncmp(line, "-ERR unknown command '", 22) != 0 ||
		    n < 2 || line[n - 2] != '\r') {
			show("not an unknown-command error", line, n);
			fail();
		}
		errs++;
	}
	assert_true(errs > 0 && errs <= lines + 1);
	kv_close(fd);
	assert_server_alive();
	server_stop();
}

/* ---- connections --------------------------------------------------------- */

static void test_many_connections(void **state)
{
	static int fds[NR_MANY];
	char buf[128], want[128];
	int i, n;

	(void)state;
	/* The server inherits the limit: raise it before it starts. */
	if (!nofile_at_least(2 * NR_MANY + 100)) {
		print_message("RLIMIT_NOFILE's hard limit is under %d: "
			      "skipped\n", 2 * NR_MANY + 100);
		skip();
	}
	server_start();
	for (i = 0; i < NR_MANY; i++)
		fds[i] = kv_connect();
	/* Every connection SETs its own key, all at once; then GETs it. */
	for (i = 0; i < NR_MANY; i++) {
		snprintf(buf, sizeof(buf), "SET key:%d value:%d:%0*d\r\n", i,
			 i, i % 50, 7);
		send_str(fds[i], buf);
	}
	for (i = 0; i < NR_MANY; i++)
		EXPECT(fds[i], "+OK\r\n");
	n = wait_server_fds(srv.base_fds + NR_MANY);
	assert_int_equal(n, srv.base_fds + NR_MANY);
	for (i = 0; i < NR_MANY; i++) {
		snprintf(buf, sizeof(buf), "*2\r\n$3\r\nGET\r\n$%d\r\nkey:%d\r\n",
			 snprintf(want, sizeof(want), "key:%d", i), i);
		send_str(fds[i], buf);
	}
	for (i = 0; i < NR_MANY; i++) {
		char v[96];
		int vn = snprintf(v, sizeof(v), "value:%d:%0*d", i, i % 50, 7);

		n = snprintf(want, sizeof(want), "$%d\r\n%s\r\n", vn, v);
		expect_(fds[i], want, (size_t)n, __LINE__);
	}
	/* Everyone sees everyone's keys. */
	snprintf(buf, sizeof(buf), "MGET key:0 key:%d nokey\r\n", NR_MANY - 1);
	send_str(fds[0], buf);
	{
		char v[96];
		int vn = snprintf(v, sizeof(v), "value:%d:%0*d", NR_MANY - 1,
				  (NR_MANY - 1) % 50, 7);

		n = snprintf(want, sizeof(want), "*3\r\n$9\r\nvalue:0:7\r\n"
			     "$%d\r\n%s\r\n$-1\r\n", vn, v);
		expect_(fds[0], want, (size_t)n, __LINE__);
	}

	for (i = 0; i < NR_MANY; i++)
		kv_close(fds[i]);
	n = wait_server_fds(srv.base_fds);
	assert_int_equal(n, srv.base_fds);
	assert_server_alive();
	server_stop();
}

/* The bystander's conversation goes on: ECHO still-N. */
static void bystander_echo(int fd, int n)
{
	char req[64], want[64];
	int len;

	snprintf(req, sizeof(req), "ECHO still-%d\r\n", n);
	send_str(fd, req);
	len = snprintf(want, sizeof(want), "still-%d", n);
	len = snprintf(want, sizeof(want), "$%d\r\nstill-%d\r\n", len, n);
	expect_(fd, want, (size_t)len, __LINE__);
}

static void test_disconnect_mid_request(void **state)
{
	static const char *const partial[] = {
		"*3\r\n$3\r\nSET\r\n",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$10\r\nabc",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nabc\r",
		"*3",
		"SET k v",	/* inline, no newline: run at EOF */
	};
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	size_t i;
	int other, fd, rst, n = 0;

	(void)state;
	server_start();
	/* A bystander mid-conversation. */
	other = kv_connect();
	send_str(other, "SET bystander 1\r\n");
	EXPECT(other, "+OK\r\n");
	for (rst = 0; rst < 2; rst++) {
		for (i = 0; i < ARRAY_SIZE(partial); i++) {
			fd = kv_connect();
			send_str(fd, partial[i]);
			bystander_echo(other, n++);
			/* Accepted: the server holds its fd. */
			assert_int_equal(wait_server_fds(srv.base_fds + 2),
					 srv.base_fds + 2);
			/* Then a close, or a reset (SO_LINGER 0). */
			if (rst)
				assert_int_equal(setsockopt(fd, SOL_SOCKET,
							    SO_LINGER, &lg,
							    sizeof(lg)), 0);
			kv_close(fd);
			/* Its task has ended: its fd is gone. */
			assert_int_equal(wait_server_fds(srv.base_fds + 1),
					 srv.base_fds + 1);
			bystander_echo(other, n++);
		}
	}
	send_str(other, "GET bystander\r\n");
	EXPECT(other, "$1\r\n1\r\n");
	/* Only the inline "SET k v", complete at EOF, took effect. */
	send_str(other, "GET k\r\n");
	EXPECT(other, "$1\r\nv\r\n");
	kv_close(other);
	assert_int_equal(wait_server_fds(srv.base_fds), srv.base_fds);
	assert_server_alive();
	server_stop();
}

static void test_sigterm_with_idle_connections(void **state)
{
	int fds[NR_IDLE], i;
	unsigned int ms;

	(void)state;
	server_start();
	for (i = 0; i < NR_IDLE; i++) {
		fds[i] = kv_connect();
		send_str(fds[i], "PING\r\n");
	}
	for (i = 0; i < NR_IDLE; i++)
		EXPECT(fds[i], "+PONG\r\n");
	/* One more, mid-request. */
	send_str(fds[0], "*2\r\n$3\r\nGET\r\n");
	assert_int_equal(wait_server_fds(srv.base_fds + NR_IDLE),
			 srv.base_fds + NR_IDLE);
	ms = server_stop();
	print_message("kv-server exited %u ms after SIGTERM with %d idle "
		      "connections\n", ms, NR_IDLE);
	for (i = 0; i < NR_IDLE; i++) {
		assert_true(peer_closed(fds[i]));
		kv_close(fds[i]);
	}
}

/* ---- several loops: kv-server -t N --------------------------------------- */

/*
 * With -t N the server has N loops, each accepting on the port
 * (SO_REUSEPORT: the kernel hashes each connection to one of them) and
 * each owning a shard of the keys.  Each test opens several connections
 * so that they land on several loops (all of 16 on one loop is a 1 in
 * N^15 chance), and uses keys of every shard (checked once by hand for
 * each key family below, N = 2 and 3): a connection's command then runs
 * on its own loop for some keys and through a call to another for the
 * rest, and every answer must be the single server's.
 */
#define NR_SPREAD	16	/* connections */
#define NR_SPREAD_KEYS	8	/* keys set through each */
#define NR_MK		64	/* keys of one MSET */
#define NR_RACERS	8	/* connections racing on the same keys */
#define NR_INCRS	1000	/* INCRs per racer */
#define NR_COUNTERS	8	/* the keys they INCR */
#define NR_NX		100	/* the keys they SET NX */

/* "$len\r\n<s>\r\n" for a printf-made s. */
static void sb_bulkf(struct sbuf *b, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < sizeof(tmp));
	sb_bulk(b, tmp, (size_t)n);
}

static void test_loops_keys_across_connections(void **state)
{
	static struct sbuf req, reply;
	int fds[NR_SPREAD], i, j, k;

	(void)state;
	sb_own(&req);
	sb_own(&reply);
	server_start();
	for (i = 0; i < NR_SPREAD; i++)
		fds[i] = kv_connect();
	/* Every connection sets its keys, all of them at once. */
	for (i = 0; i < NR_SPREAD; i++) {
		req.len = 0;
		for (j = 0; j < NR_SPREAD_KEYS; j++)
			sb_printf(&req, "SET spread:%d:%d v%d.%d\r\n", i, j, i,
				  j);
		send_buf(fds[i], req.p, req.len);
	}
	for (i = 0; i < NR_SPREAD; i++)
		for (j = 0; j < NR_SPREAD_KEYS; j++)
			EXPECT(fds[i], "+OK\r\n");
	/* Each reads everyone's keys: GET, EXISTS, then one MGET. */
	for (i = 0; i < NR_SPREAD; i++) {
		req.len = reply.len = 0;
		for (k = 0; k < NR_SPREAD; k++) {
			for (j = 0; j < NR_SPREAD_KEYS; j++) {
				sb_printf(&req, "GET spread:%d:%d\r\n", k, j);
				sb_bulkf(&reply, "v%d.%d", k, j);
			}
			sb_printf(&req, "EXISTS spread:%d:0 spread:%d:%d "
				  "nokey:%d\r\n", k, k, NR_SPREAD_KEYS - 1, k);
			sb_str(&reply, ":2\r\n");
		}
		sb_printf(&req, "*%d\r\n$4\r\nMGET\r\n",
			  NR_SPREAD * NR_SPREAD_KEYS + 2);
		sb_printf(&reply, "*%d\r\n", NR_SPREAD * NR_SPREAD_KEYS + 1);
		for (k = 0; k < NR_SPREAD; k++) {
			for (j = 0; j < NR_SPREAD_KEYS; j++) {
				sb_bulkf(&req, "spread:%d:%d", k, j);
				sb_bulkf(&reply, "v%d.%d", k, j);
			}
		}
		sb_bulkf(&req, "nokey:%d", i);
		sb_str(&reply, "$-1\r\n");
		EXCHANGE(fds[i], &req, &reply);
	}
	/* A change through one is seen through all the others. */
	send_str(fds[3], "SET spread:0:0 changed\r\n");
	EXPECT(fds[3], "+OK\r\n");
	for (i = 0; i < NR_SPREAD; i++) {
		send_str(fds[i], "GET spread:0:0\r\n");
		EXPECT(fds[i], "$7\r\nchanged\r\n");
	}
	for (i = 0; i < NR_SPREAD; i++)
		kv_close(fds[i]);
	sb_free(&req);
	sb_free(&reply);
	assert_int_equal(wait_server_fds(srv.base_fds), srv.base_fds);
	server_stop();
}

/* MGET, MSET, DEL and EXISTS over keys of every shard, through 8
 * connections: the single server's answers, key for key. */
static void test_loops_multi_key(void **state)
{
	static struct sbuf req, reply;
	int fds[8], a, b, c, i;

	(void)state;
	sb_own(&req);
	sb_own(&reply);
	server_start();
	for (i = 0; i < 8; i++)
		fds[i] = kv_connect();
	a = fds[0];
	b = fds[1];
	c = fds[2];

	/* MSET of 64 keys, the first one twice: the last value wins. */
	sb_printf(&req, "*%d\r\n$4\r\nMSET\r\n", 2 * NR_MK + 3);
	for (i = 0; i < NR_MK; i++) {
		sb_bulkf(&req, "mk:%d", i);
		sb_bulkf(&req, "a%d", i);
	}
	sb_bulkf(&req, "mk:0");
	sb_bulkf(&req, "last");
	sb_str(&reply, "+OK\r\n");
	EXCHANGE(a, &req, &reply);

	/* MGET through another, a missing key after each. */
	req.len = reply.len = 0;
	sb_printf(&req, "*%d\r\n$4\r\nMGET\r\n", 2 * NR_MK + 1);
	sb_printf(&reply, "*%d\r\n", 2 * NR_MK);
	for (i = 0; i < NR_MK; i++) {
		sb_bulkf(&req, "mk:%d", i);
		sb_bulkf(&req, "nokey:%d", i);
		if (i == 0)
			sb_bulkf(&reply, "last");
		else
			sb_bulkf(&reply, "a%d", i);
		sb_str(&reply, "$-1\r\n");
	}
	for (i = 1; i < 8; i++)
		EXCHANGE(fds[i], &req, &reply);

	/* EXISTS counts every argument, repeats too: 64 + 2. */
	req.len = reply.len = 0;
	sb_printf(&req, "*%d\r\n$6\r\nEXISTS\r\n", NR_MK + 10 + 2 + 1);
	for (i = 0; i < NR_MK; i++)
		sb_bulkf(&req, "mk:%d", i);
	for (i = 0; i < 10; i++)
		sb_bulkf(&req, "nokey:%d", i);
	sb_bulkf(&req, "mk:0");
	sb_bulkf(&req, "mk:5");
	sb_printf(&reply, ":%d\r\n", NR_MK + 2);
	EXCHANGE(c, &req, &reply);

	/* DEL of the even keys, one of them twice: it counts once. */
	req.len = reply.len = 0;
	sb_printf(&req, "*%d\r\n$3\r\nDEL\r\n", NR_MK / 2 + 2 + 1);
	for (i = 0; i < NR_MK; i += 2)
		sb_bulkf(&req, "mk:%d", i);
	sb_bulkf(&req, "nokey:0");
	sb_bulkf(&req, "mk:0");
	sb_printf(&reply, ":%d\r\n", NR_MK / 2);
	EXCHANGE(b, &req, &reply);

	/* What is left, seen through each connection. */
	req.len = reply.len = 0;
	sb_printf(&req, "*%d\r\n$6\r\nEXISTS\r\n", NR_MK + 1);
	for (i = 0; i < NR_MK; i++)
		sb_bulkf(&req, "mk:%d", i);
	sb_printf(&reply, ":%d\r\n", NR_MK / 2);
	sb_printf(&req, "*%d\r\n$4\r\nMGET\r\n", NR_MK + 1);
	sb_printf(&reply, "*%d\r\n", NR_MK);
	for (i = 0; i < NR_MK; i++) {
		sb_bulkf(&req, "mk:%d", i);
		if (i % 2)
			sb_bulkf(&reply, "a%d", i);
		else
			sb_str(&reply, "$-1\r\n");
	}
	for (i = 0; i < 8; i++)
		EXCHANGE(fds[i], &req, &reply);

	/* One key at a time, and MSET's order within a command. */
	send_str(c, "DEL mk:1\r\nEXISTS mk:1\r\nDEL mk:1\r\n"
		    "MSET mk:1 x mk:2 y mk:1 z\r\nMGET mk:1 mk:2 mk:3\r\n");
	EXPECT(c, ":1\r\n:0\r\n:0\r\n+OK\r\n"
		  "*3\r\n$1\r\nz\r\n$1\r\ny\r\n$2\r\na3\r\n");
	for (i = 0; i < 8; i++) {
		send_str(fds[i], "MGET mk:1 mk:2\r\n");
		EXPECT(fds[i], "*2\r\n$1\r\nz\r\n$1\r\ny\r\n");
		kv_close(fds[i]);
	}
	sb_free(&req);
	sb_free(&reply);
	server_stop();
}

/* A racer: sends its whole pipeline, then reads nr_lines reply lines. */
struct racer {
	int fd;
	struct sbuf req;
	char *in;
	size_t cap, got;
	int nr_lines, lines;
	int err;	/* errno of a failed send or recv, 0 */
};

static void *racer_run(void *arg)
{
	struct racer *r = arg;
	size_t sent = 0;

	while (sent < r->req.len) {
		ssize_t n = send(r->fd, r->req.p + sent, r->req.len - sent,
				 MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r->err = n < 0 ? errno : EPIPE;
			return NULL;
		}
		sent += (size_t)n;
	}
	while (r->lines < r->nr_lines && r->got < r->cap) {
		ssize_t n = recv(r->fd, r->in + r->got, r->cap - r->got, 0);
		ssize_t i;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r->err = n < 0 ? errno : ECONNRESET;
			return NULL;
		}
		for (i = 0; i < n; i++)
			r->lines += r->in[r->got + i] == '\n';
		r->got += (size_t)n;
	}
	return NULL;
}

/* Runs the racers' pipelines at once, one thread each, and checks that
 * each got its lines. */
static void race(struct racer *rs, int nr)
{
	pthread_t th[NR_RACERS];
	int i;

	assert_true(nr <= NR_RACERS);
	for (i = 0; i < nr; i++)
		assert_int_equal(pthread_create(&th[i], NULL, racer_run,
						&rs[i]), 0);
	for (i = 0; i < nr; i++)
		pthread_join(th[i], NULL);
	for (i = 0; i < nr; i++) {
		if (rs[i].err || rs[i].lines != rs[i].nr_lines)
			fprintf(stderr, "racer %d: %d of %d replies (%s)\n", i,
				rs[i].lines, rs[i].nr_lines,
				rs[i].err ? strerror(rs[i].err) : "no error");
		assert_int_equal(rs[i].err, 0);
		assert_int_equal(rs[i].lines, rs[i].nr_lines);
	}
}

static struct racer racers[NR_RACERS];

static void racers_free(void)
{
	int i;

	for (i = 0; i < NR_RACERS; i++) {
		sb_free(&racers[i].req);
		racers[i].in = NULL;	/* own()ed */
	}
}

/* The next "\r\n"-ended line of a racer's replies, NUL-terminated. */
static char *racer_line(struct racer *r, size_t *pos)
{
	char *line = r->in + *pos, *nl = memchr(line, '\n', r->got - *pos);

	assert_non_null(nl);
	assert_true(nl > line && nl[-1] == '\r');
	nl[-1] = '\0';
	*pos = (size_t)(nl + 1 - r->in);
	return line;
}

/*
 * INCR of the same keys from 8 connections at once, 1000 each: every
 * increment counts, each connection sees its own values of a key rise,
 * and all of them together saw each value of each key exactly once.
 */
static void test_loops_incr_contended(void **state)
{
	static bool seen[NR_COUNTERS][NR_RACERS * NR_INCRS / NR_COUNTERS + 1];
	const int per_counter = NR_RACERS * NR_INCRS / NR_COUNTERS;
	char want[64];
	int i, n, k, fd;

	(void)state;
	memset(seen, 0, sizeof(seen));
	server_start();
	for (i = 0; i < NR_RACERS; i++) {
		struct racer *r = &racers[i];

		memset(r, 0, sizeof(*r));
		sb_own(&r->req);
		r->fd = kv_connect();
		for (n = 0; n < NR_INCRS; n++)
			sb_printf(&r->req, "INCR ctr:%d\r\n", n % NR_COUNTERS);
		r->nr_lines = NR_INCRS;
		r->cap = (size_t)NR_INCRS * 16;
		r->in = own(r->cap);
	}
	race(racers, NR_RACERS);
	for (i = 0; i < NR_RACERS; i++) {
		long long last[NR_COUNTERS] = { 0 };
		size_t pos = 0;

		for (n = 0; n < NR_INCRS; n++) {
			char *line = racer_line(&racers[i], &pos), *end;
			long long v;

			k = n % NR_COUNTERS;
			assert_true(line[0] == ':');
			v = strtoll(line + 1, &end, 10);
			assert_true(*end == '\0');
			if (v <= last[k] || v > per_counter || seen[k][v]) {
				fprintf(stderr, "connection %d: INCR ctr:%d "
					"number %d gave %lld (its last: %lld; "
					"%s)\n", i, k, n, v, last[k],
					v > per_counter ? "too big" :
					seen[k][v] ? "seen before" :
					"not rising");
				fail();
			}
			seen[k][v] = true;
			last[k] = v;
		}
	}
	/* 8 x 125 on each key, every value once: so 1 to 1000 each. */
	fd = kv_connect();
	for (k = 0; k < NR_COUNTERS; k++) {
		char cmd[32];

		snprintf(cmd, sizeof(cmd), "GET ctr:%d\r\n", k);
		send_str(fd, cmd);
		n = snprintf(want, sizeof(want), "$%d\r\n%d\r\n",
			     snprintf(NULL, 0, "%d", per_counter), per_counter);
		expect_(fd, want, (size_t)n, __LINE__);
	}
	kv_close(fd);
	for (i = 0; i < NR_RACERS; i++)
		kv_close(racers[i].fd);
	racers_free();
	server_stop();
}

/*
 * SET NX of the same 100 keys from 8 connections at once: each key is
 * won by exactly one of them, and holds the winner's value.
 */
static void test_loops_set_nx_race(void **state)
{
	int winner[NR_NX], i, n, fd;
	char cmd[64], want[64];

	(void)state;
	server_start();
	for (i = 0; i < NR_RACERS; i++) {
		struct racer *r = &racers[i];

		memset(r, 0, sizeof(*r));
		sb_own(&r->req);
		r->fd = kv_connect();
		for (n = 0; n < NR_NX; n++)
			sb_printf(&r->req, "SET nx:%d c%d NX\r\n", n, i);
		r->nr_lines = NR_NX;
		r->cap = (size_t)NR_NX * 8;
		r->in = own(r->cap);
	}
	race(racers, NR_RACERS);
	for (n = 0; n < NR_NX; n++)
		winner[n] = -1;
	for (i = 0; i < NR_RACERS; i++) {
		size_t pos = 0;

		for (n = 0; n < NR_NX; n++) {
			char *line = racer_line(&racers[i], &pos);

			if (!strcmp(line, "$-1"))
				continue;
			assert_string_equal(line, "+OK");
			if (winner[n] >= 0) {
				fprintf(stderr, "SET nx:%d NX: won by "
					"connections %d and %d\n", n,
					winner[n], i);
				fail();
			}
			winner[n] = i;
		}
	}
	fd = kv_connect();
	for (n = 0; n < NR_NX; n++) {
		assert_true(winner[n] >= 0);
		snprintf(cmd, sizeof(cmd), "GET nx:%d\r\n", n);
		send_str(fd, cmd);
		snprintf(want, sizeof(want), "$2\r\nc%d\r\n", winner[n]);
		expect_(fd, want, strlen(want), __LINE__);
	}
	kv_close(fd);
	for (i = 0; i < NR_RACERS; i++)
		kv_close(racers[i].fd);
	racers_free();
	server_stop();
}

/* Keys with a time to live on every shard: seen by every connection
 * until they expire, by none after. */
static void test_loops_expire(void **state)
{
	static struct sbuf req, reply;
	int px_ms = scaled_ms(300), fds[4], i, k;

	(void)state;
	sb_own(&req);
	sb_own(&reply);
	server_start();
	for (i = 0; i < 4; i++)
		fds[i] = kv_connect();
	for (k = 0; k < 8; k++) {
		sb_printf(&req, "SET ttl:%d v%d PX %d\r\n", k, k, px_ms);
		sb_printf(&req, "SET keep:%d v%d\r\n", k, k);
		sb_str(&reply, "+OK\r\n+OK\r\n");
	}
	EXCHANGE(fds[0], &req, &reply);
	req.len = reply.len = 0;
	for (k = 0; k < 8; k++) {
		sb_printf(&req, "GET ttl:%d\r\n", k);
		sb_bulkf(&reply, "v%d", k);
	}
	sb_str(&req, "EXISTS ttl:0 ttl:1 ttl:2 ttl:3 ttl:4 ttl:5 ttl:6 "
		     "ttl:7\r\n");
	sb_str(&reply, ":8\r\n");
	for (i = 0; i < 4; i++)
		EXCHANGE(fds[i], &req, &reply);

	/* Gone 300 ms (scaled) and a margin later, for everyone. */
	usleep((useconds_t)(px_ms + scaled_ms(200)) * 1000);
	req.len = reply.len = 0;
	for (k = 0; k < 8; k++) {
		sb_printf(&req, "GET ttl:%d\r\n", k);
		sb_str(&reply, "$-1\r\n");
	}
	sb_str(&req, "EXISTS ttl:0 ttl:1 ttl:2 ttl:3 ttl:4 ttl:5 ttl:6 "
		     "ttl:7 keep:0 keep:7\r\n");
	sb_str(&reply, ":2\r\n");
	sb_str(&req, "MGET ttl:0 keep:0 ttl:7 keep:7\r\n");
	sb_str(&reply, "*4\r\n$-1\r\n$2\r\nv0\r\n$-1\r\n$2\r\nv7\r\n");
	for (i = 0; i < 4; i++)
		EXCHANGE(fds[i], &req, &reply);
	/* An expired key is no key: DEL finds none, INCR starts at 1. */
	send_str(fds[1], "DEL ttl:0 ttl:1 ttl:2 ttl:3 ttl:4 ttl:5 ttl:6 "
			 "ttl:7\r\nINCR ttl:3\r\n");
	EXPECT(fds[1], ":0\r\n:1\r\n");
	for (i = 0; i < 4; i++)
		kv_close(fds[i]);
	sb_free(&req);
	sb_free(&reply);
	server_stop();
}

/* Reads until the peer closes; false if it stays open (the timeout). */
static bool drained_to_close(int fd)
{
	char buf[4096];
	ssize_t r;

	for (;;) {
		r = recv(fd, buf, sizeof(buf), 0);
		if (r > 0 || (r < 0 && errno == EINTR))
			continue;
		return r == 0 || errno == ECONNRESET;
	}
}

/*
 * SIGTERM while every connection has a pipeline of commands on all
 * shards in the works (calls between the loops in flight): the server
 * still exits 0 within a second (scaled), and closes every connection.
 */
static void test_loops_sigterm_under_load(void **state)
{
	static struct sbuf req;
	int fds[NR_RACERS], i, n;
	unsigned int ms;

	(void)state;
	sb_own(&req);
	for (n = 0; n < 1000; n++)
		sb_printf(&req, "INCR load:%d\r\nMGET load:0 load:1 load:2 "
			  "load:3 load:4 load:5 load:6 load:7\r\n", n % 8);
	server_start();
	for (i = 0; i < NR_RACERS; i++)
		fds[i] = kv_connect();
	/* As much of it as each socket takes without waiting. */
	for (i = 0; i < NR_RACERS; i++)
		assert_true(send(fds[i], req.p, req.len,
				 MSG_NOSIGNAL | MSG_DONTWAIT) > 0);
	ms = server_stop();
	print_message("kv-server -t %d exited %u ms after SIGTERM with %d "
		      "busy connections\n", srv.loops, ms, NR_RACERS);
	for (i = 0; i < NR_RACERS; i++) {
		assert_true(drained_to_close(fds[i]));
		kv_close(fds[i]);
	}
	sb_free(&req);
}

/* ---- bugs found while writing these tests --------------------------------- */

/*
 * A reply must not wait for the rest of a request that has only partly
 * arrived: a client that sent "PING\r\nPI" and waits for +PONG before
 * sending "NG\r\n" must get it.  (Replies are held while request bytes
 * are buffered, complete request or not.)
 */
static void test_reply_not_held_behind_partial_request(void **state)
{
	char got[16];
	size_t n;
	int fd;

	(void)state;
	server_start();
	fd = kv_connect();
	set_timeouts(fd, scaled_ms(1000));
	send_str(fd, "PING\r\nPI");
	n = recv_upto(fd, got, 7);
	if (n != 7 || memcmp(got, "+PONG\r\n", 7) != 0) {
		fprintf(stderr, "after \"PING\\r\\nPI\", no +PONG within "
			"%d ms: the reply waits for the next request\n",
			scaled_ms(1000));
		show("  received", got, n);
	}
	assert_int_equal(n, 7);
	assert_memory_equal(got, "+PONG\r\n", 7);
	send_str(fd, "NG\r\n");
	EXPECT(fd, "+PONG\r\n");

	/* The same with multibulk requests. */
	send_str(fd, "*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPI");
	n = recv_upto(fd, got, 7);
	assert_int_equal(n, 7);
	assert_memory_equal(got, "+PONG\r\n", 7);
	send_str(fd, "NG\r\n");
	EXPECT(fd, "+PONG\r\n");
	kv_close(fd);
	server_stop();
}

/*
 * An error naming a command must stay one line whatever bytes the name
 * holds: a multibulk command name "A\r\n+HACK" must not turn into the
 * replies "-ERR unknown command 'A" and "+HACK'", which would shift every
 * later reply by one.
 */
static void test_unknown_command_with_crlf(void **state)
{
	char line[256];
	size_t n;
	int fd;

	(void)state;
	server_start();
	fd = kv_connect();
	send_str(fd, "*1\r\n$8\r\nA\r\n+HACK\r\n*1\r\n$4\r\nPING\r\n");
	n = recv_line(fd, line, sizeof(line));
	assert_true(n > 0);
	assert_true(strncmp(line, "-ERR unknown command", 20) == 0);
	n = recv_line(fd, line, sizeof(line));
	if (strcmp(line, "+PONG\r\n") != 0) {
		fprintf(stderr, "the reply after the error is not +PONG: the "
			"error's CRLF made two replies\n");
		show("  received", line, n);
	}
	assert_string_equal(line, "+PONG\r\n");
	kv_close(fd);
	server_stop();
}

/*
 * INCR must read only the value's bytes.  Values are stored without a
 * terminating NUL, and INCR parses them with strtoll, which reads on past
 * the end while it sees digits: a heap over-read, and an integer value
 * refused when the bytes after it in its heap chunk happen to be digits.
 * Storing a 22-digit value first leaves such digits behind in a freed
 * chunk of the size class that the next 19-digit value gets (glibc).
 * Until this is fixed, the INCRs of other tests (test_resp_replies,
 * test_inline_commands, test_cli_incr) fail now and then as well, the
 * bytes after a short value being heap metadata that varies with ASLR.
 */
static void test_incr_reads_only_the_value(void **state)
{
	static const char key[] = "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkk";	/* 30 */
	static struct sbuf req;
	int fd, round;

	(void)state;
	sb_own(&req);
	server_start();
	fd = kv_connect();
	for (round = 0; round < 20; round++) {
		req.len = 0;
		sb_cmd(&req, "SET|x|9999999999999999999999");
		send_buf(fd, req.p, req.len);
		EXPECT(fd, "+OK\r\n");
		req.len = 0;
		sb_printf(&req, "*3\r\n$3\r\nSET\r\n$30\r\n%s\r\n$19\r\n"
			  "1111111111111111111\r\n", key);
		send_buf(fd, req.p, req.len);
		EXPECT(fd, "+OK\r\n");
		req.len = 0;
		sb_printf(&req, "*2\r\n$4\r\nINCR\r\n$30\r\n%s\r\n", key);
		send_buf(fd, req.p, req.len);
		EXPECT(fd, ":1111111111111111112\r\n");
	}
	sb_free(&req);
	kv_close(fd);
	server_stop();
}

/*
 * A big reply to a slow reader must carry the value as it was when the
 * command ran, even if another client deletes or replaces the key while
 * the reply is still being written.  The server writes a value bigger
 * than its stream buffer straight from the stored entry, across awaits:
 * a DEL meanwhile frees that memory under the write (a use after free;
 * the reader gets other bytes or a truncated reply).  The write stalls
 * because 8 MiB exceeds what the socket buffers hold (the reader's
 * SO_RCVBUF is 4 KiB, tcp_wmem's maximum is 4 MiB by default); with
 * bigger buffers the test passes without exercising this.
 */
static void test_slow_reader_reply_survives_del(void **state)
{
	const size_t n = 8 * MIB;	/* kv-server's largest bulk */
	unsigned char *a = own(n), *b = own(n), *got;
	static struct sbuf req, reply;
	const void *argv[3] = { "SET", "big", a };
	size_t lens[3] = { 3, 3, n }, have, i, bad = 0;
	struct pollfd pf;
	int writer, reader, avail = 0;

	(void)state;
	sb_own(&req);
	sb_own(&reply);
	memset(a, 'A', n);
	memset(b, 'B', n);
	server_start();
	writer = kv_connect();
	sb_cmdn(&req, 3, argv, lens);
	sb_str(&reply, "+OK\r\n");
	EXCHANGE(writer, &req, &reply);

	/* The reader asks, then reads nothing: the server's write stalls. */
	reader = kv_connect_rcvbuf(4096);
	send_str(reader, "GET big\r\n");
	pf = (struct pollfd){ .fd = reader, .events = POLLIN };
	assert_int_equal(poll(&pf, 1, scaled_ms(IO_TIMEOUT_MS)), 1);
	assert_int_equal(ioctl(reader, FIONREAD, &avail), 0);
	assert_true(avail > 0);

	/* Meanwhile: the key goes, and another value takes the memory. */
	send_str(writer, "DEL big\r\n");
	EXPECT(writer, ":1\r\n");
	req.len = reply.len = 0;
	argv[1] = "bbb";
	argv[2] = b;
	sb_cmdn(&req, 3, argv, lens);
	sb_str(&reply, "+OK\r\n");
	EXCHANGE(writer, &req, &reply);

	/* The reader's reply is still 8 MiB of 'A'. */
	reply.len = 0;
	sb_bulk(&reply, a, n);
	got = own(reply.len);
	have = recv_upto(reader, got, reply.len);
	for (i = 0; i < have; i++)
		bad += got[i] != (unsigned char)reply.p[i];
	if (have != reply.len || bad) {
		fprintf(stderr, "GET big to a slow reader, with DEL big "
			"meanwhile: %zu of %zu bytes received, %zu of them "
			"wrong ('B': the other value's bytes)\n", have,
			reply.len, bad);
		for (i = 0; i < have && got[i] == (unsigned char)reply.p[i];
		     i++)
			;
		show("  received from the first wrong byte", got + i,
		     have - i);
	}
	assert_int_equal(have, reply.len);
	assert_int_equal(bad, 0);
	kv_close(reader);
	kv_close(writer);
	sb_free(&req);
	sb_free(&reply);
	server_stop();
}

static int noop_main(void *arg)
{
	(void)arg;
	return 0;
}

#define KV_TEST(f)	cmocka_unit_test_teardown(f, teardown_server)
/* The test against kv-server -t n, named f/tn. */
#define KV_TEST_T(f, n)							\
	{ #f "/t" #n, f, setup_loops, teardown_server, (void *)(intptr_t)(n) }

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		KV_TEST(test_cli_ping_echo),
		KV_TEST(test_cli_set_get),
		KV_TEST(test_cli_expire),
		KV_TEST(test_cli_incr),
		KV_TEST(test_cli_mset_mget_del_exists),
		KV_TEST(test_resp_replies),
		KV_TEST(test_inline_commands),
		KV_TEST(test_pipelining),
		KV_TEST(test_binary_safe),
		KV_TEST(test_value_1mib),
		KV_TEST(test_malformed_input),
		KV_TEST(test_garbage_lines),
		KV_TEST(test_many_connections),
		KV_TEST(test_disconnect_mid_request),
		KV_TEST(test_sigterm_with_idle_connections),
		KV_TEST(test_reply_not_held_behind_partial_request),
		KV_TEST(test_unknown_command_with_crlf),
		KV_TEST(test_incr_reads_only_the_value),
		KV_TEST(test_slow_reader_reply_survives_del),
		/* Several loops, sharded keys: the single server's answers. */
		KV_TEST_T(test_loops_keys_across_connections, 2),
		KV_TEST_T(test_loops_multi_key, 2),
		KV_TEST_T(test_loops_incr_contended, 2),
		KV_TEST_T(test_loops_set_nx_race, 2),
		KV_TEST_T(test_loops_expire, 2),
		KV_TEST_T(test_loops_sigterm_under_load, 2),
		KV_TEST_T(test_loops_keys_across_connections, 3),
		KV_TEST_T(test_loops_multi_key, 3),
		KV_TEST_T(test_loops_incr_contended, 3),
		KV_TEST_T(test_loops_set_nx_race, 3),
		KV_TEST_T(test_loops_expire, 3),
		KV_TEST_T(test_loops_sigterm_under_load, 3),
		/* And the one-loop tests again, with two loops or three. */
		KV_TEST_T(test_cli_set_get, 2),
		KV_TEST_T(test_cli_expire, 2),
		KV_TEST_T(test_cli_incr, 2),
		KV_TEST_T(test_cli_mset_mget_del_exists, 2),
		KV_TEST_T(test_resp_replies, 2),
		KV_TEST_T(test_inline_commands, 2),
		KV_TEST_T(test_pipelining, 2),
		KV_TEST_T(test_binary_safe, 2),
		KV_TEST_T(test_value_1mib, 2),
		KV_TEST_T(test_many_connections, 2),
		KV_TEST_T(test_disconnect_mid_request, 2),
		KV_TEST_T(test_sigterm_with_idle_connections, 2),
		KV_TEST_T(test_incr_reads_only_the_value, 2),
		KV_TEST_T(test_slow_reader_reply_survives_del, 2),
		KV_TEST_T(test_resp_replies, 3),
		KV_TEST_T(test_pipelining, 3),
		KV_TEST_T(test_many_connections, 3),
		KV_TEST_T(test_slow_reader_reply_survives_del, 3),
	};
	int ret;

	(void)argc;
	argv0 = argv[0];
	signal(SIGPIPE, SIG_IGN);
	ret = corio_run(noop_main, NULL);
	if (ret == -ENOSYS || ret == -EPERM) {
		printf("test-kv: io_uring is unavailable (%s): skipped\n",
		       strerror(-ret));
		return 77;
	}
	return RUN_GROUP(tests);
}
