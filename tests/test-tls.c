/*
 * test-tls.c - src/tls.c: TLS streams over OpenSSL (corio_tls_accept,
 * corio_tls_connect, corio_tls_error), gh15.
 *
 * corio talks to itself (TLS 1.3 and 1.2), to the real `openssl s_client`
 * and `openssl s_server`, and to peers that present a wrong or untrusted
 * certificate, send garbage, vanish mid-handshake or never answer; reads
 * are cancelled at varied moments without losing a decrypted byte, 1 MiB
 * messages cross both ways intact, one task reads a stream while another
 * writes it, and a write cut short by its deadline resumes in order.
 * OpenSSL's allocations go through counting hooks
 * (CRYPTO_set_mem_functions), so that a leaked SSL object fails a test
 * even without valgrind, and so that they can be made to fail (-ENOMEM).
 *
 * The certificates are made by the group setup with `openssl req` in a
 * temporary directory, removed by the group teardown; none is committed.
 * Every test skips without TLS in the build (corio_tls_accept gives
 * -ENOTSUP), and those that need certificates skip without the openssl
 * command.
 */
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "helpers.h"

#if CORIO_HAVE_TLS

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>

#define MIB	(1u << 20)

extern char **environ;

/* What the group setup made; certs is 0 when it could not (no openssl). */
static struct {
	char dir[PATH_MAX / 2];
	char cert[PATH_MAX], key[PATH_MAX];		/* CN=localhost */
	char other[PATH_MAX], other_key[PATH_MAX];	/* an unrelated CA */
	char log[PATH_MAX];	/* the openssl children's stderr */
	char openssl[PATH_MAX];
	bool certs;
} env;

/* ---- OpenSSL's live allocations ----------------------------------------- */

static atomic_long ossl_live;
static bool ossl_counting;
static atomic_bool ossl_fail;	/* every allocation fails */

static void *count_malloc(size_t n, const char *file, int line)
{
	void *p = atomic_load(&ossl_fail) ? NULL : malloc(n);

	(void)file, (void)line;
	if (p)
		atomic_fetch_add(&ossl_live, 1);
	return p;
}

static void count_free(void *p, const char *file, int line)
{
	(void)file, (void)line;
	if (p)
		atomic_fetch_sub(&ossl_live, 1);
	free(p);
}

static void *count_realloc(void *p, size_t n, const char *file, int line)
{
	if (!p)
		return count_malloc(n, file, line);
	if (n == 0) {
		count_free(p, file, line);
		return NULL;
	}
	return atomic_load(&ossl_fail) ? NULL : realloc(p, n);
}

/* ---- the environment ---------------------------------------------------- */

static bool build_has_tls(void)
{
	corio_stream *s = NULL;

	/* Checked before anything else: -ENOTSUP without libssl. */
	return corio_tls_accept(-1, NULL, &s) != -ENOTSUP;
}

/* The skip of a test that needs TLS (and certificates, if certs). */
static void need(bool certs)
{
	if (!build_has_tls()) {
		fprintf(stderr, "test-tls: corio is built without TLS\n");
		skip();
	}
	if (certs && !env.certs) {
		fprintf(stderr, "test-tls: no openssl command to make the "
			"test certificates\n");
		skip();
	}
}

/* The path of cmd in PATH, into out; false if there is none. */
static bool find_in_path(const char *cmd, char *out, size_t len)
{
	const char *path = getenv("PATH"), *p, *end;

	for (p = path ? path : "/usr/bin:/bin"; *p; p = *end ? end + 1 : end) {
		end = strchr(p, ':');
		if (!end)
			end = p + strlen(p);
		if (end == p)
			continue;
		snprintf(out, len, "%.*s/%s", (int)(end - p), p, cmd);
		if (access(out, X_OK) == 0)
			return true;
	}
	return false;
}

static void dump_log(const char *what)
{
	char line[512];
	FILE *f = fopen(env.log, "r");

	fprintf(stderr, "test-tls: %s; its output:\n", what);
	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		fprintf(stderr, "    %s", line);
	fclose(f);
}

/* Runs argv (outside a loop), stdout and stderr to env.log: its status. */
static int run_quiet(char *const argv[])
{
	posix_spawn_file_actions_t fa;
	int status = -1;
	pid_t pid;

	if (posix_spawn_file_actions_init(&fa))
		return -1;
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, env.log,
					 O_WRONLY | O_CREAT | O_TRUNC, 0600);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) == 0)
		status = child_wait(pid);
	posix_spawn_file_actions_destroy(&fa);
	return status;
}

/* A self-signed certificate for cn (with SANs if san), and its key. */
static bool make_cert(const char *cert, const char *key, const char *cn,
		      const char *san)
{
	char subj[128];
	char *argv[] = {
		env.openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes",
		"-keyout", (char *)key, "-out", (char *)cert, "-days", "2",
		"-subj", subj, san ? "-addext" : NULL, (char *)san, NULL
	};

	snprintf(subj, sizeof(subj), "/CN=%s", cn);
	if (run_quiet(argv) == 0)
		return true;
	dump_log("openssl req failed");
	return false;
}

static int group_setup(void **state)
{
	const char *tmp = getenv("TMPDIR");

	(void)state;
	if (!build_has_tls() || !find_in_path("openssl", env.openssl,
					       sizeof(env.openssl)))
		return 0;
	snprintf(env.dir, sizeof(env.dir), "%s/corio-test-tls.XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(env.dir)) {
		fprintf(stderr, "test-tls: mkdtemp %s: %s\n", env.dir,
			strerror(errno));
		return -1;
	}
	snprintf(env.cert, sizeof(env.cert), "%s/cert.pem", env.dir);
	snprintf(env.key, sizeof(env.key), "%s/key.pem", env.dir);
	snprintf(env.other, sizeof(env.other), "%s/other-ca.pem", env.dir);
	snprintf(env.other_key, sizeof(env.other_key), "%s/other-key.pem",
		 env.dir);
	snprintf(env.log, sizeof(env.log), "%s/openssl.log", env.dir);
	env.certs = make_cert(env.cert, env.key, "localhost",
			      "subjectAltName=DNS:localhost,IP:127.0.0.1") &&
		    make_cert(env.other, env.other_key, "corio test other CA",
			      NULL);
	return 0;
}

static int group_teardown(void **state)
{
	const char *files[] = { env.cert, env.key, env.other, env.other_key,
				env.log };
	size_t i;

	(void)state;
	if (!env.dir[0])
		return 0;
	for (i = 0; i < ARRAY_SIZE(files); i++)
		unlink(files[i]);
	if (rmdir(env.dir) < 0) {
		fprintf(stderr, "test-tls: rmdir %s: %s\n", env.dir,
			strerror(errno));
		return -1;
	}
	return 0;
}

/* An openssl child not yet reaped, which a failed test's teardown kills. */
static pid_t live_child;

/* After each test: what a failure inside a task left behind. */
static int tls_teardown(void **state)
{
	if (live_child > 0) {
		kill(live_child, SIGKILL);
		waitpid(live_child, NULL, 0);
		live_child = 0;
	}
	return corio_test_teardown(state);
}

#define TLS_TEST(f)	cmocka_unit_test_teardown(f, tls_teardown)

/* ---- contexts ----------------------------------------------------------- */

/* The protocol version of each side's last handshake: [SSL_is_server]. */
static int done_version[2];

static void info_cb(const SSL *ssl, int where, int ret)
{
	(void)ret;
	if (where & SSL_CB_HANDSHAKE_DONE)
		done_version[SSL_is_server(ssl) ? 1 : 0] = SSL_version(ssl);
}

/* Only version v (0: any) for ctx. */
static void pin_version(SSL_CTX *ctx, int v)
{
	if (!v)
		return;
	assert_int_equal(SSL_CTX_set_min_proto_version(ctx, v), 1);
	assert_int_equal(SSL_CTX_set_max_proto_version(ctx, v), 1);
}

static SSL_CTX *server_ctx(const char *cert, const char *key)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_use_certificate_chain_file(ctx, cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, key,
						     SSL_FILETYPE_PEM), 1);
	assert_int_equal(SSL_CTX_check_private_key(ctx), 1);
	SSL_CTX_set_info_callback(ctx, info_cb);
	return ctx;
}

/* A client that verifies the server against ca (NULL: trusts nothing). */
static SSL_CTX *client_ctx(const char *ca)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	assert_non_null(ctx);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (ca)
		assert_int_equal(SSL_CTX_load_verify_locations(ctx, ca, NULL),
				 1);
	SSL_CTX_set_info_callback(ctx, info_cb);
	return ctx;
}

/* The usual pair: the localhost certificate, trusted by the client. */
struct ctxs {
	SSL_CTX *srv, *cli;
};

static struct ctxs ctxs_new(void)
{
	struct ctxs c = {
		.srv = server_ctx(env.cert, env.key),
		.cli = client_ctx(env.cert),
	};

	return c;
}

static void ctxs_free(struct ctxs *c)
{
	SSL_CTX_free(c->srv);
	SSL_CTX_free(c->cli);
}

/* corio_run, with a ring refused (seccomp, io_uring_disabled) a skip. */
static void run(corio_fn fn, void *arg)
{
	int ret = corio_run(fn, arg);

	if (ret == -ENOSYS || ret == -EPERM) {
		fprintf(stderr, "test-tls: io_uring is unavailable\n");
		skip();
	}
	assert_int_equal(ret, 0);
}

/* ---- sockets and small helpers ------------------------------------------ */

static void socketpair_or_fail(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
				    sv), 0);
}

static int local_port(int fd)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	return ntohs(sin.sin_port);
}

/* A port of 127.0.0.1 that nothing listens on (at the moment). */
static int free_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port;

	assert_true(fd >= 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	port = local_port(fd);
	close(fd);
	return port;
}

/* Inside a task: a listener on 127.0.0.1, an ephemeral port. */
static int listen_local(int *port)
{
	int lfd = corio_listen("127.0.0.1", 0, 16, 0);

	assert_true(lfd >= 0);
	*port = local_port(lfd);
	return lfd;
}

static int accept_one(int lfd)
{
	int fd = corio_accept(lfd, NULL, NULL, SOCK_CLOEXEC);

	assert_true(fd >= 0);
	return fd;
}

/* The text corio_tls_error gives for s (NULL: the last failed handshake). */
static const char *tls_error(const corio_stream *s)
{
	static char buf[512];
	int n = corio_tls_error(s, buf, sizeof(buf));

	assert_true(n >= 0);
	assert_int_equal((size_t)n, strlen(buf));
	return buf;
}

/* Bytes of a message: a function of the round and the byte's offset. */
static void pattern(unsigned char *p, size_t len, uint32_t seed)
{
	uint32_t x = seed * 2654435761u + 1;
	size_t i;

	for (i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		p[i] = (unsigned char)x;
	}
}

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t get_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

/* ---- a corio echo server ------------------------------------------------ */

struct server {
	SSL_CTX *ctx;
	int fd;			/* connected, or -1: accept on lfd */
	int lfd;
	int accept_ret;		/* of corio_tls_accept */
	int read_ret;		/* readline's last: 0 at close_notify */
	int close_ret;
	int lines;
	bool once;		/* one line echoed, then close */
	char err[256];		/* corio_tls_error just after a failure */
};

static int echo_server_fn(void *arg)
{
	struct server *e = arg;
	corio_stream *s = NULL;
	char line[8192];
	ssize_t n;

	if (e->fd < 0)
		e->fd = accept_one(e->lfd);
	e->accept_ret = corio_tls_accept(e->fd, e->ctx, &s);
	if (e->accept_ret < 0) {
		/* Before any other await: the thread's last failure. */
		snprintf(e->err, sizeof(e->err), "%s", tls_error(NULL));
		assert_null(s);
		assert_true(fd_is_open(e->fd));	/* still the caller's */
		assert_int_equal(corio_close(e->fd), 0);
		return 0;
	}
	assert_non_null(s);
	assert_int_equal(corio_stream_fd(s), e->fd);
	while ((n = corio_stream_readline(s, line, sizeof(line))) > 0) {
		e->lines++;
		assert_int_equal(corio_stream_write(s, line, (size_t)n), n);
		if (e->once || corio_stream_buffered(s) == 0)
			assert_int_equal(corio_stream_flush(s), 0);
		if (e->once)
			break;
	}
	e->read_ret = (int)n;
	e->close_ret = corio_stream_close(s);
	return 0;
}

static corio_task *serve(struct server *e)
{
	corio_task *t = corio_spawn(echo_server_fn, e);

	assert_non_null(t);
	return t;
}

/* ---- corio on both ends ------------------------------------------------- */

struct echo_case {
	int srv_version, cli_version;	/* pinned, or 0 */
	int srv_max;			/* the server's maximum, or 0 */
	int expect;			/* the version negotiated */
	bool tcp;			/* loopback TCP, else a socketpair */
};

/* Line i of the echo test: 1 to 20 bytes, then up to 3862. */
static size_t line_len(int i)
{
	return i < 20 ? 1 + (size_t)i : 1 + (size_t)i * 99;
}

static void line_of(char *buf, int i)
{
	size_t len = line_len(i), j;

	for (j = 0; j + 1 < len; j++)
		buf[j] = (char)('a' + (i + (int)j) % 26);
	buf[len - 1] = '\n';
}

static int echo_main(void *arg)
{
	const struct echo_case *c = arg;
	struct ctxs x = ctxs_new();
	struct server e = { .fd = -1, .read_ret = 1, .close_ret = 1 };
	corio_stream *s = NULL;
	char line[8192], want[8192];
	int sv[2], port, fd, i;
	corio_task *t;

	pin_version(x.srv, c->srv_version);
	pin_version(x.cli, c->cli_version);
	if (c->srv_max)
		assert_int_equal(SSL_CTX_set_max_proto_version(x.srv,
							       c->srv_max), 1);
	e.ctx = x.srv;
	if (c->tcp) {
		e.lfd = listen_local(&port);
		fd = corio_dial("127.0.0.1", port);
		assert_true(fd >= 0);
	} else {
		socketpair_or_fail(sv);
		e.fd = sv[0];
		fd = sv[1];
	}
	done_version[0] = done_version[1] = 0;
	t = serve(&e);

	assert_int_equal(corio_tls_connect(fd, x.cli, "localhost", &s), 0);
	assert_non_null(s);
	assert_int_equal(corio_stream_fd(s), fd);
	assert_int_equal(done_version[0], c->expect);
	/* After a handshake that worked there is no reason to give. */
	assert_string_equal(tls_error(s), "");

	/* One line at a time, then 20 pipelined, up to 4 KiB each. */
	for (i = 0; i < 40; i++) {
		line_of(want, i);
		assert_int_equal(corio_stream_write(s, want, line_len(i)),
				 (ssize_t)line_len(i));
		if (i >= 20 && i < 39)
			continue;
		assert_int_equal(corio_stream_flush(s), 0);
		if (i < 20) {
			assert_int_equal(corio_stream_readline(s, line,
							       sizeof(line)),
					 (ssize_t)line_len(i));
			assert_memory_equal(line, want, line_len(i));
		}
	}
	for (i = 20; i < 40; i++) {
		line_of(want, i);
		assert_int_equal(corio_stream_readline(s, line, sizeof(line)),
				 (ssize_t)line_len(i));
		assert_memory_equal(line, want, line_len(i));
	}
	assert_int_equal(done_version[1], c->expect);

	/* close sends close_notify: the server reads a clean EOF. */
	assert_int_equal(corio_stream_close(s), 0);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(e.accept_ret, 0);
	assert_int_equal(e.lines, 40);
	assert_int_equal(e.read_ret, 0);
	/* Its own close_notify finds the peer gone: best effort. */
	assert_true(e.close_ret == 0 || e.close_ret == -EPIPE ||
		    e.close_ret == -ECONNRESET);
	if (c->tcp)
		assert_int_equal(corio_close(e.lfd), 0);
	ctxs_free(&x);
	assert_loop_clean();
	return 0;
}

static void test_echo_corio_both_ends_tls13(void **state)
{
	struct echo_case c = { .expect = TLS1_3_VERSION, .tcp = true };

	(void)state;
	need(true);
	run(echo_main, &c);
	c.tcp = false;
	run(echo_main, &c);
}

static void test_echo_corio_both_ends_tls12(void **state)
{
	/* Pinned on both ends, then capped by the server alone. */
	struct echo_case c = {
		.srv_version = TLS1_2_VERSION, .cli_version = TLS1_2_VERSION,
		.expect = TLS1_2_VERSION,
	};
	struct echo_case capped = {
		.srv_max = TLS1_2_VERSION, .expect = TLS1_2_VERSION,
		.tcp = true,
	};

	(void)state;
	need(true);
	run(echo_main, &c);
	run(echo_main, &capped);
}

/* ---- the real openssl s_client and s_server ----------------------------- */

/* Inside a task: reads fd to EOF into buf (NUL-terminated). */
static size_t read_to_eof(int fd, char *buf, size_t cap)
{
	size_t len = 0;
	ssize_t n;

	for (;;) {
		assert_true(len < cap - 1);
		n = corio_read(fd, buf + len, cap - 1 - len, (uint64_t)-1);
		assert_true(n >= 0);
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = 0;
	return len;
}

/*
 * An openssl child: stdin and stdout pipes when asked for (else
 * /dev/null and env.log), stderr to env.log.  posix_spawn and waitpid,
 * not corio_process: valgrind does not know pidfd_open and says so.
 */
struct child {
	pid_t pid;
	int in, out;		/* our ends of its stdin and stdout or -1 */
};

static struct child spawn_openssl(const char *const args[], bool pipes)
{
	char *argv[40] = { env.openssl };
	struct child c = { .in = -1, .out = -1 };
	posix_spawn_file_actions_t fa;
	int in[2], out[2];
	size_t i, n = 1;

	for (i = 0; args[i]; i++) {
		assert_true(n < ARRAY_SIZE(argv) - 1);
		argv[n++] = (char *)args[i];
	}
	argv[n] = NULL;
	assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
	posix_spawn_file_actions_addopen(&fa, 2, env.log,
					 O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (pipes) {
		assert_int_equal(pipe2(in, O_CLOEXEC), 0);
		assert_int_equal(pipe2(out, O_CLOEXEC), 0);
		posix_spawn_file_actions_adddup2(&fa, in[0], 0);
		posix_spawn_file_actions_adddup2(&fa, out[1], 1);
	} else {
		posix_spawn_file_actions_addopen(&fa, 0, "/dev/null",
						 O_RDONLY, 0);
		posix_spawn_file_actions_adddup2(&fa, 2, 1);
	}
	assert_int_equal(posix_spawn(&c.pid, env.openssl, &fa, NULL, argv,
				     environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	live_child = c.pid;
	if (pipes) {
		close(in[0]);
		close(out[1]);
		c.in = in[1];
		c.out = out[0];
	}
	return c;
}

/* Inside a task: waits for c up to ns (then kills it); its status. */
static int reap(struct child *c, uint64_t ns)
{
	uint64_t end = corio_now() + test_slack_ns(ns);
	int status = -1;
	pid_t r;

	while ((r = waitpid(c->pid, &status, WNOHANG)) == 0 &&
	       corio_now() < end)
		assert_int_equal(corio_sleep(CORIO_MSEC(2)), 0);
	if (r == 0) {
		kill(c->pid, SIGKILL);
		r = waitpid(c->pid, &status, 0);
	}
	assert_int_equal(r, c->pid);
	live_child = 0;
	return status;
}

static int s_client_main(void *arg)
{
	static const char hello[] = "hello from openssl s_client\n";
	struct ctxs x = ctxs_new();
	struct server e = { .fd = -1, .read_ret = 1, .once = true };
	char port_arg[32], out[4096];
	const char *args[] = {
		"s_client", "-connect", port_arg, "-CAfile", env.cert,
		"-servername", "localhost", "-verify_hostname", "localhost",
		"-verify_return_error", "-quiet", NULL, NULL, NULL,
	};
	int port, status, version = *(const int *)arg;
	uint64_t old;
	struct child p;
	corio_task *t;

	if (version == TLS1_2_VERSION)
		args[11] = "-tls1_2";
	e.ctx = x.srv;
	e.lfd = listen_local(&port);
	snprintf(port_arg, sizeof(port_arg), "127.0.0.1:%d", port);
	done_version[1] = 0;
	t = serve(&e);
	p = spawn_openssl(args, true);

	old = corio_timeout(test_slack_ns(CORIO_SEC(10)));
	assert_int_equal(corio_write(p.in, hello,
				     strlen(hello), (uint64_t)-1),
			 (ssize_t)strlen(hello));
	/* -quiet implies -ign_eof: s_client stays until the server
	 * closes, which it does after one echo. */
	assert_int_equal(corio_close(p.in), 0);
	read_to_eof(p.out, out, sizeof(out));
	corio_deadline(old);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(corio_close(p.out), 0);
	status = reap(&p, CORIO_SEC(5));
	if (e.accept_ret != 0 || strcmp(out, hello) != 0)
		dump_log("s_client did not get its echo");
	assert_int_equal(e.accept_ret, 0);
	assert_string_equal(out, hello);
	assert_int_equal(e.lines, 1);
	assert_int_equal(done_version[1], version);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(corio_close(e.lfd), 0);
	ctxs_free(&x);
	assert_loop_clean();
	return 0;
}

static void test_server_against_openssl_s_client(void **state)
{
	int v13 = TLS1_3_VERSION, v12 = TLS1_2_VERSION;

	(void)state;
	need(true);
	run(s_client_main, &v13);
	run(s_client_main, &v12);
}

static int s_server_main(void *arg)
{
	struct ctxs x = ctxs_new();
	char port_arg[32], line[256];
	const char *args[] = {
		"s_server", "-accept", port_arg, "-cert", env.cert,
		"-key", env.key, "-rev", "-naccept", "1", NULL, NULL,
	};
	int fd, port = free_port(), version = *(const int *)arg;
	corio_stream *s = NULL;
	struct child p;
	uint64_t end;

	if (version == TLS1_2_VERSION)
		args[10] = "-tls1_2";
	snprintf(port_arg, sizeof(port_arg), "127.0.0.1:%d", port);
	p = spawn_openssl(args, false);

	/* Until it listens: connection refused before that. */
	end = corio_now() + test_slack_ns(CORIO_SEC(10));
	while ((fd = corio_dial("127.0.0.1", port)) == -ECONNREFUSED &&
	       corio_now() < end)
		assert_int_equal(corio_sleep(CORIO_MSEC(10)), 0);
	if (fd < 0)
		dump_log("s_server did not listen");
	assert_true(fd >= 0);

	done_version[0] = 0;
	if (corio_tls_connect(fd, x.cli, "localhost", &s) != 0)
		dump_log("the handshake with s_server failed");
	assert_non_null(s);
	assert_int_equal(done_version[0], version);
	/* -rev: each line comes back reversed. */
	assert_int_equal(corio_stream_write(s, "hello\n", 6), 6);
	assert_int_equal(corio_stream_flush(s), 0);
	assert_int_equal(corio_stream_readline(s, line, sizeof(line)), 6);
	assert_memory_equal(line, "olleh\n", 6);
	assert_int_equal(corio_stream_write(s, "corio on io_uring\n", 18), 18);
	assert_int_equal(corio_stream_flush(s), 0);
	assert_int_equal(corio_stream_readline(s, line, sizeof(line)), 18);
	assert_memory_equal(line, "gniru_oi no oiroc\n", 18);
	assert_int_equal(corio_stream_close(s), 0);

	kill(p.pid, SIGTERM);	/* if -naccept 1 has not ended it */
	reap(&p, CORIO_SEC(5));
	ctxs_free(&x);
	assert_loop_clean();
	return 0;
}

static void test_client_against_openssl_s_server(void **state)
{
	int v13 = TLS1_3_VERSION, v12 = TLS1_2_VERSION;

	(void)state;
	need(true);
	run(s_server_main, &v13);
	run(s_server_main, &v12);
}

/* ---- wrong and untrusted certificates ----------------------------------- */

struct bad_cert {
	const char *ca;		/* what the client trusts */
	const char *name;	/* the name it asks for */
	const char *reason;	/* in corio_tls_error's text */
};

static int bad_cert_main(void *arg)
{
	const struct bad_cert *b = arg;
	SSL_CTX *srv = server_ctx(env.cert, env.key), *cli = client_ctx(b->ca);
	struct server e = { .ctx = srv, .read_ret = 1 };
	corio_stream *s = (corio_stream *)&e;	/* NULL after a failure */
	char small[8];
	const char *why;
	corio_task *t;
	int sv[2], n;

	socketpair_or_fail(sv);
	e.fd = sv[0];
	t = serve(&e);
	/* errors: corio_tls.3 EPROTO */
	assert_int_equal(corio_tls_connect(sv[1], cli, b->name, &s), -EPROTO);
	/* Right after, before any other await: why. */
	why = tls_error(NULL);
	assert_true(strlen(why) > 0);
	if (!strstr(why, "verify") || !strstr(why, b->reason))
		fail_msg("corio_tls_error: \"%s\", not about \"%s\"", why,
			 b->reason);
	/* Truncated as snprintf does: the length it needed. */
	n = corio_tls_error(NULL, small, sizeof(small));
	assert_int_equal(n, (int)strlen(why));
	assert_int_equal(strlen(small), sizeof(small) - 1);
	assert_null(s);
	/* The fd stays the caller's. */
	assert_true(fd_is_open(sv[1]));
	assert_int_equal(corio_close(sv[1]), 0);

	/* The server got the client's alert. */
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(e.accept_ret, -EPROTO);
	assert_true(strlen(e.err) > 0);
	SSL_CTX_free(srv);
	SSL_CTX_free(cli);
	assert_loop_clean();
	return 0;
}

static void test_wrong_certificate_eproto(void **state)
{
	/* A certificate for localhost, asked for wrong.example. */
	struct bad_cert b = {
		.name = "wrong.example", .reason = "hostname mismatch",
	};

	(void)state;
	need(true);
	b.ca = env.cert;
	run(bad_cert_main, &b);
}

static void test_untrusted_certificate_eproto(void **state)
{
	/* The client trusts only an unrelated CA. */
	struct bad_cert b = { .name = "localhost", .reason = "self" };

	(void)state;
	need(true);
	b.ca = env.other;
	run(bad_cert_main, &b);
}

/* ---- garbage and peers that vanish -------------------------------------- */

/* A ClientHello as OpenSSL makes it: its length, the bytes in buf. */
static size_t client_hello(SSL_CTX *cli, char *buf, size_t cap)
{
	SSL *ssl = SSL_new(cli);
	BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
	int n;

	assert_non_null(ssl);
	assert_non_null(rb);
	assert_non_null(wb);
	SSL_set_bio(ssl, rb, wb);
	SSL_set_connect_state(ssl);
	assert_int_equal(SSL_do_handshake(ssl), -1);
	assert_int_equal(SSL_get_error(ssl, -1), SSL_ERROR_WANT_READ);
	n = BIO_read(wb, buf, (int)cap);
	assert_true(n > 100);
	SSL_free(ssl);
	return (size_t)n;
}

/*
 * corio_tls_accept on a socketpair whose other end sends feed[0, len) and
 * shuts down: the accept's result, and corio_tls_error's text in err.
 */
static int accept_against(SSL_CTX *srv, const void *feed, size_t len,
			  char *err, size_t errlen)
{
	struct server e = { .ctx = srv, .read_ret = 1 };
	corio_task *t;
	int sv[2];

	socketpair_or_fail(sv);
	e.fd = sv[0];
	t = serve(&e);
	if (len)
		assert_int_equal(send_all(sv[1], feed, len), (ssize_t)len);
	assert_int_equal(corio_shutdown(sv[1], SHUT_WR), 0);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(corio_close(sv[1]), 0);
	snprintf(err, errlen, "%s", e.err);
	return e.accept_ret;
}

static int garbage_main(void *arg)
{
	static const char http[] = "GET / HTTP/1.0\r\n\r\n";
	struct ctxs x = ctxs_new();
	char hello[4096], err[256];
	size_t len;
	int ret;

	(void)arg;
	/* Plain HTTP to a TLS port. */
	ret = accept_against(x.srv, http, strlen(http), err, sizeof(err));
	/* errors: corio_tls.3 EPROTO */
	assert_int_equal(ret, -EPROTO);
	assert_true(strlen(err) > 0);

	/* A record header that no TLS peer sends. */
	ret = accept_against(x.srv, "\x16\x03\x01\xff\xff" "zzzzzzzzzzzz", 17,
			     err, sizeof(err));
	assert_int_equal(ret, -EPROTO);

	/* Nothing at all, then the peer closes. */
	ret = accept_against(x.srv, NULL, 0, err, sizeof(err));
	/* errors: corio_tls.3 ECONNRESET */
	assert_int_equal(ret, -ECONNRESET);
	assert_true(strlen(err) > 0);

	/* Half a ClientHello, then the peer closes. */
	len = client_hello(x.cli, hello, sizeof(hello));
	ret = accept_against(x.srv, hello, len / 2, err, sizeof(err));
	assert_int_equal(ret, -ECONNRESET);
	ret = accept_against(x.srv, hello, 3, err, sizeof(err));
	assert_int_equal(ret, -ECONNRESET);

	ctxs_free(&x);
	assert_loop_clean();
	return 0;
}

static void test_garbage_and_close_mid_handshake(void **state)
{
	(void)state;
	need(true);
	run(garbage_main, NULL);
}

/* A server that reads the ClientHello, answers nothing and goes. */
static int vanish_fn(void *arg)
{
	int fd = *(int *)arg;
	char buf[512];

	assert_true(corio_recv(fd, buf, sizeof(buf), 0) > 0);
	assert_int_equal(corio_close(fd), 0);
	return 0;
}

/* A client against a server that vanishes (FIN, then RST). */
static int client_vanish_main(void *arg)
{
	struct ctxs x = ctxs_new();
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	corio_stream *s = NULL;
	int sv[2], lfd, port, fd;
	corio_task *t;

	(void)arg;
	socketpair_or_fail(sv);
	t = corio_spawn(vanish_fn, &sv[0]);
	assert_non_null(t);
	assert_int_equal(corio_tls_connect(sv[1], x.cli, "localhost", &s),
			 -ECONNRESET);
	assert_true(strlen(tls_error(NULL)) > 0);
	assert_null(s);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(corio_close(sv[1]), 0);

	/* Over TCP with SO_LINGER 0: a reset, not a FIN. */
	lfd = listen_local(&port);
	fd = corio_dial("127.0.0.1", port);
	assert_true(fd >= 0);
	sv[0] = accept_one(lfd);
	assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_LINGER, &lg,
				    sizeof(lg)), 0);
	t = corio_spawn(vanish_fn, &sv[0]);
	assert_non_null(t);
	assert_int_equal(corio_tls_connect(fd, x.cli, "localhost", &s),
			 -ECONNRESET);
	assert_null(s);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(corio_close(fd), 0);
	assert_int_equal(corio_close(lfd), 0);
	ctxs_free(&x);
	assert_loop_clean();
	return 0;
}

static void test_server_vanishes_mid_handshake(void **state)
{
	(void)state;
	need(true);
	run(client_vanish_main, NULL);
}

/* A connected pair of TLS streams over a socketpair: [0] the server's. */
struct tls_pair {
	SSL_CTX *ctx;
	int fd[2];
	int accept_ret;
	corio_stream *s[2];
};

static int pair_accept_fn(void *arg)
{
	struct tls_pair *p = arg;

	p->accept_ret = corio_tls_accept(p->fd[0], p->ctx, &p->s[0]);
	return 0;
}

static void pair_open(struct ctxs *x, struct tls_pair *p)
{
	corio_task *t;

	memset(p, 0, sizeof(*p));
	p->ctx = x->srv;
	socketpair_or_fail(p->fd);
	t = corio_spawn(pair_accept_fn, p);
	assert_non_null(t);
	assert_int_equal(corio_tls_connect(p->fd[1], x->cli, "localhost",
					   &p->s[1]), 0);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(p->accept_ret, 0);
	assert_non_null(p->s[0]);
}

/* Closes stream arg in a task already cancelled: close's result. */
static int cancelled_close_fn(void *arg)
{
	assert_int_equal(corio_cancel(corio_self()), 0);
	return corio_stream_close(arg);
}

/*
 * After the handshake: garbage in a record, peers that go with and
 * without close_notify, a write to a closed peer, a cancelled close.
 */
static int after_handshake_main(void *arg)
{
	struct ctxs x = ctxs_new();
	struct tls_pair p;
	char buf[256];
	corio_task *t;

	(void)arg;
	pair_open(&x, &p);
	/* Raw bytes under the client's TLS: the server cannot decrypt. */
	assert_int_equal(send_all(p.fd[1], "\x17\x03\x03\x00\x20"
				  "0123456789" "0123456789012345678901", 37),
			 37);
	/* errors: corio_tls.3 EPROTO */
	assert_int_equal(corio_stream_readline(p.s[0], buf, sizeof(buf)),
			 -EPROTO);
	assert_true(strlen(tls_error(p.s[0])) > 0);
	/* Free hands the fds back. */
	corio_stream_free(p.s[0]);
	corio_stream_free(p.s[1]);
	assert_int_equal(corio_close(p.fd[0]), 0);
	assert_int_equal(corio_close(p.fd[1]), 0);

	/* The peer ends its side of the socket without close_notify. */
	pair_open(&x, &p);
	assert_int_equal(corio_stream_write(p.s[1], "half", 4), 4);
	assert_int_equal(corio_stream_flush(p.s[1]), 0);
	corio_stream_free(p.s[1]);
	assert_int_equal(corio_shutdown(p.fd[1], SHUT_WR), 0);
	assert_int_equal(corio_stream_read(p.s[0], buf, sizeof(buf)), 4);
	assert_memory_equal(buf, "half", 4);
	/* errors: corio_tls.3 ECONNRESET */
	assert_int_equal(corio_stream_read(p.s[0], buf, sizeof(buf)),
			 -ECONNRESET);
	assert_non_null(strstr(tls_error(p.s[0]), "close_notify"));
	assert_int_equal(corio_stream_read(p.s[0], buf, sizeof(buf)),
			 -ECONNRESET);
	corio_stream_free(p.s[0]);
	assert_int_equal(corio_close(p.fd[0]), 0);
	assert_int_equal(corio_close(p.fd[1]), 0);

	/* The peer closes with data unread (the server's session tickets):
	 * the kernel resets the connection. */
	pair_open(&x, &p);
	corio_stream_free(p.s[1]);
	assert_int_equal(corio_close(p.fd[1]), 0);
	assert_int_equal(corio_stream_read(p.s[0], buf, sizeof(buf)),
			 -ECONNRESET);
	corio_stream_free(p.s[0]);
	assert_int_equal(corio_close(p.fd[0]), 0);

	/* A client that verifies nothing (SSL_VERIFY_NONE) against a
	 * certificate it does not trust: its verify result stays bad, and
	 * a later error must not be blamed on it. */
	{
		struct ctxs lax = { .srv = x.srv,
				    .cli = SSL_CTX_new(TLS_client_method()) };

		assert_non_null(lax.cli);
		pair_open(&lax, &p);
		assert_int_equal(send_all(p.fd[0], "\x17\x03\x03\x00\x20"
					  "0123456789"
					  "0123456789012345678901", 37), 37);
		assert_int_equal(corio_stream_read(p.s[1], buf, sizeof(buf)),
				 -EPROTO);
		assert_true(strlen(tls_error(p.s[1])) > 0);
		if (strstr(tls_error(p.s[1]), "verify"))
			fail_msg("a read's error blamed on the certificate: "
				 "\"%s\"", tls_error(p.s[1]));
		corio_stream_free(p.s[0]);
		corio_stream_free(p.s[1]);
		assert_int_equal(corio_close(p.fd[0]), 0);
		assert_int_equal(corio_close(p.fd[1]), 0);
		SSL_CTX_free(lax.cli);
	}

	/* A write to a peer whose socket is closed. */
	pair_open(&x, &p);
	corio_stream_free(p.s[0]);
	assert_int_equal(corio_close(p.fd[0]), 0);
	assert_int_equal(corio_stream_write(p.s[1], "x", 1), 1);
	/* errors: corio_tls.3 EPIPE */
	assert_int_equal(corio_stream_flush(p.s[1]), -EPIPE);
	assert_int_equal(corio_stream_close(p.s[1]), -EPIPE);
	assert_false(fd_is_open(p.fd[1]));

	/* A close in a cancelled task sends no close_notify, and still
	 * closes. */
	pair_open(&x, &p);
	t = corio_spawn(cancelled_close_fn, p.s[1]);
	assert_non_null(t);
	assert_int_equal(corio_join(t), -ECANCELED);
	assert_false(fd_is_open(p.fd[1]));
	assert_int_equal(corio_stream_read(p.s[0], buf, sizeof(buf)),
			 -ECONNRESET);
	corio_stream_free(p.s[0]);
	assert_int_equal(corio_close(p.fd[0]), 0);

	/* And with close_notify: a clean EOF, every time it is asked. */
	pair_open(&x, &p);
	assert_int_equal(corio_stream_write(p.s[1], "last", 4), 4);
	assert_int_equal(corio_stream_close(p.s[1]), 0);
	assert_int_equal(corio_stream_read(p.s[0], buf, sizeof(buf)), 4);
	assert_int_equal(corio_stream_read(p.s[0], buf, sizeof(buf)), 0);
	assert_int_equal(corio_stream_read(p.s[0], buf, sizeof(buf)), 0);
	corio_stream_free(p.s[0]);
	assert_int_equal(corio_close(p.fd[0]), 0);

	ctxs_free(&x);
	assert_loop_clean();
	return 0;
}

static void test_garbage_and_vanishing_peer_after_handshake(void **state)
{
	(void)state;
	need(true);
	run(after_handshake_main, NULL);
}

/* ---- deadlines and cancellation ----------------------------------------- */

#define SILENT_MS	100

/* A handshake under a deadline of SILENT_MS: its result, checked. */
static int silent_handshake(int fd, SSL_CTX *ctx, bool server)
{
	corio_stream *s = NULL;
	uint64_t t0, took, old;
	int ret;

	t0 = corio_now();
	old = corio_timeout(CORIO_MSEC(SILENT_MS));
	ret = server ? corio_tls_accept(fd, ctx, &s) :
	      corio_tls_connect(fd, ctx, "localhost", &s);
	took = corio_now() - t0;
	corio_deadline(old);
	assert_null(s);
	assert_true(took >= CORIO_MSEC(SILENT_MS));
	assert_true(took < CORIO_MSEC(SILENT_MS) +
			   test_slack_ns(CORIO_SEC(1)));
	return ret;
}

static int deadline_main(void *arg)
{
	struct ctxs x = ctxs_new();
	corio_stream *s = NULL;
	uint64_t old;
	int sv[2], ret;

	(void)arg;
	/* A server that never reads nor writes. */
	socketpair_or_fail(sv);
	ret = silent_handshake(sv[0], x.cli, false);
	/* errors: corio_tls.3 ETIMEDOUT */
	assert_int_equal(ret, -ETIMEDOUT);
	assert_true(strlen(tls_error(NULL)) > 0);
	assert_true(fd_is_open(sv[0]));

	/* A deadline already past: at once. */
	old = corio_deadline(corio_now());
	assert_int_equal(corio_tls_connect(sv[0], x.cli, "localhost", &s),
			 -ETIMEDOUT);
	corio_deadline(old);
	assert_null(s);
	assert_int_equal(corio_close(sv[0]), 0);
	assert_int_equal(corio_close(sv[1]), 0);

	/* A client that connects and says nothing. */
	socketpair_or_fail(sv);
	assert_int_equal(silent_handshake(sv[0], x.srv, true), -ETIMEDOUT);
	assert_int_equal(corio_close(sv[0]), 0);
	assert_int_equal(corio_close(sv[1]), 0);

	/* A client that stops after its ClientHello (the server waits for
	 * its Finished). */
	socketpair_or_fail(sv);
	{
		char hello[4096];
		size_t len = client_hello(x.cli, hello, sizeof(hello));

		assert_int_equal(send_all(sv[1], hello, len), (ssize_t)len);
	}
	assert_int_equal(silent_handshake(sv[0], x.srv, true), -ETIMEDOUT);
	assert_int_equal(corio_close(sv[0]), 0);
	assert_int_equal(corio_close(sv[1]), 0);
	ctxs_free(&x);
	assert_loop_clean();
	return 0;
}

static void test_handshake_deadline_silent_peer(void **state)
{
	(void)state;
	need(true);
	run(deadline_main, NULL);
}

struct hs {
	SSL_CTX *ctx;
	int fd;
	bool server;
	bool self_cancel;
	int started;
	int ret;
	corio_stream *s;
};

static int handshake_fn(void *arg)
{
	struct hs *h = arg;

	if (h->self_cancel)
		assert_int_equal(corio_cancel(corio_self()), 0);
	h->started = 1;
	h->ret = h->server ? corio_tls_accept(h->fd, h->ctx, &h->s) :
		 corio_tls_connect(h->fd, h->ctx, "localhost", &h->s);
	return 0;
}

/* Client, server, and a task cancelled before it begins. */
static int cancel_main(void *arg)
{
	struct ctxs x = ctxs_new();
	struct hs h;
	corio_task *t;
	uint64_t t0;
	int sv[2], i;

	(void)arg;
	for (i = 0; i < 3; i++) {
		socketpair_or_fail(sv);
		memset(&h, 0, sizeof(h));
		h.server = i == 1;
		h.ctx = h.server ? x.srv : x.cli;
		h.fd = sv[0];
		h.self_cancel = i == 2;
		h.ret = 1;
		t = corio_spawn(handshake_fn, &h);
		assert_non_null(t);
		if (!h.self_cancel) {
			yield_until(&h.started);
			/* Parked in its receive by now. */
			assert_int_equal(corio_sleep(CORIO_MSEC(5)), 0);
			assert_int_equal(h.ret, 1);
			assert_int_equal(corio_cancel(t), 0);
		}
		t0 = corio_now();
		assert_int_equal(corio_join(t), 0);
		assert_true(corio_now() - t0 < test_slack_ns(CORIO_SEC(1)));
		/* errors: corio_tls.3 ECANCELED */
		assert_int_equal(h.ret, -ECANCELED);
		assert_null(h.s);
		assert_true(fd_is_open(h.fd));
		assert_int_equal(corio_close(sv[0]), 0);
		assert_int_equal(corio_close(sv[1]), 0);
	}
	ctxs_free(&x);
	assert_loop_clean();
	return 0;
}

static void test_cancelled_handshake_ecanceled(void **state)
{
	(void)state;
	need(true);
	run(cancel_main, NULL);
}

/* ---- cancellation mid-read loses no decrypted byte ---------------------- */

struct numbers {
	SSL_CTX *ctx;
	int fd;
	uint32_t count;
	int ret;
};

/*
 * The numbers 0..count-1 as 4-byte big-endian, flushed in pieces of 1 to
 * 97 bytes (one TLS record each, so numbers straddle records), and every
 * 50th piece 17 to 25 KB (two records, bigger than one receive takes, so
 * that a cancelled reader leaves part of a record undecrypted), in bursts
 * with small sleeps between them.
 */
static size_t piece_len(unsigned int k)
{
	if (k % 50 == 49)
		return 17000 + (k * 7919u) % 8000u;
	return 1 + (k * 37u + k / 7u) % 97u;
}

/* The numbers that pieces pieces hold (whole ones). */
static uint32_t numbers_in(unsigned int pieces)
{
	size_t total = 0;
	unsigned int k;

	for (k = 0; k < pieces; k++)
		total += piece_len(k);
	return (uint32_t)(total / 4);
}

static int numbers_server_fn(void *arg)
{
	struct numbers *nb = arg;
	size_t total = (size_t)nb->count * 4, off = 0, i, part;
	static unsigned char chunk[25000];
	unsigned char num[4];
	corio_stream *s = NULL;
	unsigned int k;

	nb->ret = corio_tls_accept(nb->fd, nb->ctx, &s);
	assert_int_equal(nb->ret, 0);
	for (k = 0; off < total; k++) {
		part = piece_len(k);
		if (part > total - off)
			part = total - off;
		for (i = 0; i < part; i++) {
			put_be32(num, (uint32_t)((off + i) / 4));
			chunk[i] = num[(off + i) % 4];
		}
		assert_int_equal(corio_stream_write(s, chunk, part),
				 (ssize_t)part);
		assert_int_equal(corio_stream_flush(s), 0);
		off += part;
		if (k % 16 == 15)
			assert_int_equal(corio_sleep(CORIO_USEC(50 +
							(k / 16) % 5 * 100)),
					 0);
		else if (k % 3 == 0)
			assert_int_equal(corio_yield(), 0);
	}
	nb->ret = corio_stream_close(s);
	return 0;
}

struct reader {
	corio_stream *s;
	uint32_t next;		/* the number expected next */
	uint32_t bad, got;	/* a number out of place, and what came */
	ssize_t ret;
};

static int reader_fn(void *arg)
{
	struct reader *r = arg;
	unsigned char b[4];
	uint32_t v;

	for (;;) {
		r->ret = corio_stream_readexactly(r->s, b, 4);
		if (r->ret < 0)
			return 0;	/* cancelled: no further use */
		v = get_be32(b);
		if (v != r->next) {
			r->bad++;
			r->got = v;
			return 0;
		}
		r->next++;
	}
}

static int cancel_read_main(void *arg)
{
	struct ctxs x = ctxs_new();
	struct numbers nb = { .ctx = x.srv };
	struct reader r = { .ret = 1 };
	unsigned int i, cancelled = 0, partial = 0, j;
	corio_task *srv, *t;
	int sv[2], ret;

	(void)arg;
	nb.count = numbers_in(UNDER_VALGRIND() ? 600 : 2500);
	socketpair_or_fail(sv);
	nb.fd = sv[0];
	srv = corio_spawn(numbers_server_fn, &nb);
	assert_non_null(srv);
	assert_int_equal(corio_tls_connect(sv[1], x.cli, "localhost", &r.s),
			 0);

	for (i = 0; r.next < nb.count && !r.bad; i++) {
		t = corio_spawn(reader_fn, &r);
		assert_non_null(t);
		/* Cancel at varied moments: before it runs, after a few
		 * turns, in the middle of a burst or of a sleep. */
		switch (i % 6) {
		case 0:
			break;
		case 1:
		case 2:
		case 3:
			for (j = 0; j < i % 7; j++)
				assert_int_equal(corio_yield(), 0);
			break;
		case 4:
			assert_int_equal(corio_sleep(CORIO_USEC(20)), 0);
			break;
		default:
			assert_int_equal(corio_sleep(CORIO_USEC(150 +
								 i % 5 * 60)),
					 0);
			break;
		}
		/* -ESRCH: it returned already (at the end, or a bad one). */
		ret = corio_cancel(t);
		assert_true(ret == 0 || ret == -ESRCH);
		assert_int_equal(corio_join(t), 0);
		if (r.ret == -ECANCELED) {
			cancelled++;
			/* Part of a number held over to the next reader. */
			if (corio_stream_buffered(r.s) % 4)
				partial++;
		} else if (!r.bad) {
			assert_int_equal(r.ret, -ENODATA);	/* the end */
		}
	}
	if (r.bad)
		fail_msg("reader %u: got %u where %u was due", i, r.got,
			 r.next);
	assert_int_equal(r.next, nb.count);
	assert_true(cancelled > 10);
	assert_true(partial > 0);
	/* Nothing after the last number: close_notify, a clean EOF. */
	{
		unsigned char b[4];

		assert_int_equal(corio_stream_readexactly(r.s, b, 4),
				 -ENODATA);
	}
	assert_int_equal(corio_join(srv), 0);
	assert_int_equal(nb.ret, 0);
	/* Its close_notify finds the peer gone: best effort. */
	ret = corio_stream_close(r.s);
	assert_true(ret == 0 || ret == -EPIPE);
	ctxs_free(&x);
	assert_loop_clean();
	return 0;
}

static void test_cancel_mid_read_loses_no_byte(void **state)
{
	(void)state;
	need(true);
	run(cancel_read_main, NULL);
}

/* ---- 1 MiB messages, both ways ------------------------------------------ */

struct big {
	SSL_CTX *ctx;
	int fd;
	unsigned int rounds;
	int ret;
	unsigned char *in, *want;
};

/* Writes a 1 MiB message: whole, or in odd pieces, then a flush. */
static void write_mib(corio_stream *s, const unsigned char *p, bool pieces)
{
	size_t off = 0, part;
	unsigned int k = 0;

	while (off < MIB) {
		part = pieces ? 1 + (k++ * 7919u) % 70000u : MIB;
		if (part > MIB - off)
			part = MIB - off;
		assert_int_equal(corio_stream_write(s, p + off, part),
				 (ssize_t)part);
		off += part;
	}
	assert_int_equal(corio_stream_flush(s), 0);
}

static int big_server_fn(void *arg)
{
	struct big *b = arg;
	corio_stream *s = NULL;
	unsigned int r;

	assert_int_equal(corio_tls_accept(b->fd, b->ctx, &s), 0);
	for (r = 0; r < b->rounds; r++) {
		memset(b->in, 0, MIB);
		assert_int_equal(corio_stream_readexactly(s, b->in, MIB),
				 (ssize_t)MIB);
		pattern(b->want, MIB, 2 * r);
		assert_true(memcmp(b->in, b->want, MIB) == 0);
		pattern(b->want, MIB, 2 * r + 1);
		write_mib(s, b->want, r % 2 == 0);
	}
	b->ret = corio_stream_close(s);
	return 0;
}

static int big_main(void *arg)
{
	struct ctxs x = ctxs_new();
	struct big b = { .ctx = x.srv };
	unsigned char *out = malloc(MIB), *in = malloc(MIB);
	unsigned char *want = malloc(MIB);
	corio_stream *s = NULL;
	corio_task *t;
	unsigned int r;
	int sv[2], ret;

	(void)arg;
	b.in = malloc(MIB);
	b.want = malloc(MIB);
	assert_true(out && in && want && b.in && b.want);
	b.rounds = UNDER_VALGRIND() ? 2 : 4;
	socketpair_or_fail(sv);
	b.fd = sv[0];
	t = corio_spawn(big_server_fn, &b);
	assert_non_null(t);
	assert_int_equal(corio_tls_connect(sv[1], x.cli, "localhost", &s), 0);
	for (r = 0; r < b.rounds; r++) {
		pattern(out, MIB, 2 * r);
		write_mib(s, out, r % 2 == 1);
		memset(in, 0, MIB);
		/* Odd rounds: through the stream's buffer, 64 KiB at a time. */
		if (r % 2) {
			size_t off;

			for (off = 0; off < MIB; off += 65536)
				assert_int_equal(
					corio_stream_readexactly(s, in + off,
								 65536),
					65536);
		} else {
			assert_int_equal(corio_stream_readexactly(s, in, MIB),
					 (ssize_t)MIB);
		}
		pattern(want, MIB, 2 * r + 1);
		assert_true(memcmp(in, want, MIB) == 0);
	}
	assert_int_equal(corio_stream_read(s, in, 1), 0);	/* EOF */
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(b.ret, 0);
	/* Its close_notify finds the peer gone: best effort. */
	ret = corio_stream_close(s);
	assert_true(ret == 0 || ret == -EPIPE);
	free(out);
	free(in);
	free(want);
	free(b.in);
	free(b.want);
	ctxs_free(&x);
	assert_loop_clean();
	return 0;
}

static void test_mib_messages_exact_both_ways(void **state)
{
	(void)state;
	need(true);
	run(big_main, NULL);
}

/* ---- one reader and one writer at once; a write cut short --------------- */

#define DUPLEX_BYTES	(3u * MIB / 2)

/* Echoes every byte back as it comes, until close_notify. */
static int byte_echo_fn(void *arg)
{
	corio_stream *s = arg;
	static char buf[20000];
	ssize_t n;

	while ((n = corio_stream_read(s, buf, sizeof(buf))) > 0) {
		assert_int_equal(corio_stream_write(s, buf, (size_t)n), n);
		assert_int_equal(corio_stream_flush(s), 0);
	}
	assert_int_equal(n, 0);
	return corio_stream_close(s);
}

struct duplex {
	corio_stream *s;
	const unsigned char *data;
	unsigned char *got;
};

static int duplex_writer_fn(void *arg)
{
	struct duplex *d = arg;
	size_t off = 0, part;
	unsigned int k = 0;

	while (off < DUPLEX_BYTES) {
		part = 1 + (k++ * 104729u) % 30000u;
		if (part > DUPLEX_BYTES - off)
			part = DUPLEX_BYTES - off;
		assert_int_equal(corio_stream_write(d->s, d->data + off, part),
				 (ssize_t)part);
		if (k % 3 == 0)
			assert_int_equal(corio_stream_flush(d->s), 0);
		off += part;
	}
	assert_int_equal(corio_stream_flush(d->s), 0);
	return 0;
}

static int duplex_reader_fn(void *arg)
{
	struct duplex *d = arg;
	size_t off = 0;
	ssize_t n;

	while (off < DUPLEX_BYTES) {
		n = corio_stream_read(d->s, d->got + off, DUPLEX_BYTES - off);
		assert_true(n > 0);
		off += (size_t)n;
	}
	return 0;
}

/*
 * As on a plain stream, one task reads a TLS stream while another
 * writes it: 1.5 MiB out in odd pieces, echoed back, read meanwhile.
 * The contexts are freed first: the streams hold references.
 */
static int duplex_main(void *arg)
{
	struct ctxs x = ctxs_new();
	struct duplex d;
	struct tls_pair p;
	corio_task *echo, *w, *r;
	unsigned char *data = malloc(DUPLEX_BYTES);
	int ret;

	(void)arg;
	assert_non_null(data);
	pattern(data, DUPLEX_BYTES, 77);
	d.data = data;
	d.got = calloc(1, DUPLEX_BYTES);
	assert_non_null(d.got);
	pair_open(&x, &p);
	ctxs_free(&x);
	d.s = p.s[1];
	echo = corio_spawn(byte_echo_fn, p.s[0]);
	r = corio_spawn(duplex_reader_fn, &d);
	w = corio_spawn(duplex_writer_fn, &d);
	assert_true(echo && r && w);
	assert_int_equal(corio_join(w), 0);
	assert_int_equal(corio_join(r), 0);
	assert_true(memcmp(d.got, data, DUPLEX_BYTES) == 0);
	assert_int_equal(corio_stream_close(p.s[1]), 0);
	ret = corio_join(echo);
	assert_true(ret == 0 || ret == -EPIPE);
	free(data);
	free(d.got);
	assert_loop_clean();
	return 0;
}

static void test_one_reader_one_writer_at_once(void **state)
{
	(void)state;
	need(true);
	run(duplex_main, NULL);
}

struct drain {
	corio_stream *s;
	const unsigned char *data;
	size_t accepted;	/* the writes that succeeded: must arrive */
	size_t cap;
	int go, done;
	size_t got;
	ssize_t ret;
};

/* Waits for go, reads accepted bytes under a deadline, then to EOF. */
static int drain_fn(void *arg)
{
	struct drain *d = arg;
	unsigned char *buf = malloc(d->cap);
	uint64_t old;
	ssize_t n;

	assert_non_null(buf);
	yield_until(&d->go);
	old = corio_timeout(test_slack_ns(CORIO_SEC(5)));
	d->ret = corio_stream_readexactly(d->s, buf, d->accepted);
	corio_deadline(old);
	if (d->ret == (ssize_t)d->accepted) {
		d->got = d->accepted;
		d->done = 1;
		while ((n = corio_stream_read(d->s, buf + d->got,
					      d->cap - d->got)) > 0)
			d->got += (size_t)n;
		d->ret = n;
	}
	assert_true(memcmp(buf, d->data, d->got) == 0);
	free(buf);
	return 0;
}

/*
 * Writes to a peer that does not read, until the deadline cuts one: the
 * ciphertext that the failed send left must go out in order with the
 * next flush (no bad record MAC at the peer), and that flush must send
 * it although the stream's own buffer is empty.
 */
static int cut_write_main(void *arg)
{
	struct ctxs x = ctxs_new();
	struct drain d = { .cap = 16 * MIB };
	unsigned char *data = malloc(d.cap);
	struct tls_pair p;
	corio_task *t;
	uint64_t old;
	ssize_t n = 0;

	(void)arg;
	assert_non_null(data);
	pattern(data, d.cap, 5);
	d.data = data;
	pair_open(&x, &p);
	d.s = p.s[0];
	t = corio_spawn(drain_fn, &d);
	assert_non_null(t);

	old = corio_timeout(CORIO_MSEC(50));
	while (d.accepted + 8192 <= d.cap) {
		n = corio_stream_write(p.s[1], data + d.accepted, 8192);
		if (n < 0)
			break;
		d.accepted += (size_t)n;
	}
	corio_deadline(old);
	assert_int_equal(n, -ETIMEDOUT);
	assert_true(d.accepted > 0);

	d.go = 1;
	assert_int_equal(corio_stream_flush(p.s[1]), 0);
	yield_until(&d.done);
	assert_int_equal(d.got, d.accepted);	/* without another write */
	assert_int_equal(corio_stream_close(p.s[1]), 0);
	assert_int_equal(corio_join(t), 0);
	/* A clean EOF; at most the failed write's bytes came too. */
	assert_int_equal(d.ret, 0);
	assert_true(d.got == d.accepted || d.got == d.accepted + 8192);
	corio_stream_free(p.s[0]);
	assert_int_equal(corio_close(p.fd[0]), 0);
	free(data);
	ctxs_free(&x);
	assert_loop_clean();
	return 0;
}

static void test_write_cut_by_deadline_resumes_in_order(void **state)
{
	(void)state;
	need(true);
	run(cut_write_main, NULL);
}

/* ---- arguments and where the calls may run ------------------------------ */

static int invalid_main(void *arg)
{
	SSL_CTX *ctx = arg;
	corio_stream *s = NULL, *plain;
	char buf[64], name[257];
	int sv[2];

	socketpair_or_fail(sv);
	/* errors: corio_tls.3 EINVAL */
	assert_int_equal(corio_tls_accept(sv[0], NULL, &s), -EINVAL);
	assert_int_equal(corio_tls_accept(sv[0], ctx, NULL), -EINVAL);
	assert_int_equal(corio_tls_accept(-1, ctx, &s), -EINVAL);
	assert_int_equal(corio_tls_connect(sv[0], NULL, "localhost", &s),
			 -EINVAL);
	assert_int_equal(corio_tls_connect(sv[0], ctx, "localhost", NULL),
			 -EINVAL);
	assert_int_equal(corio_tls_connect(-1, ctx, "localhost", &s),
			 -EINVAL);
	/* No DNS name is empty or longer than 255 bytes. */
	assert_int_equal(corio_tls_connect(sv[0], ctx, "", &s), -EINVAL);
	memset(name, 'a', sizeof(name) - 1);
	name[sizeof(name) - 1] = 0;
	assert_int_equal(corio_tls_connect(sv[0], ctx, name, &s), -EINVAL);
	assert_null(s);

	/* corio_tls_error: a plain stream has no TLS, a buffer is needed. */
	assert_int_equal(corio_stream_new(sv[0], 0, &plain), 0);
	assert_int_equal(corio_tls_error(plain, buf, sizeof(buf)), -EINVAL);
	assert_int_equal(corio_tls_error(NULL, NULL, 8), -EINVAL);
	assert_int_equal(corio_tls_error(NULL, buf, 0), -EINVAL);
	assert_int_equal(corio_stream_close(plain), 0);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_loop_clean();
	return 0;
}

static void test_invalid_arguments_and_outside_a_task(void **state)
{
	SSL_CTX *ctx;
	corio_stream *s = (corio_stream *)&s;
	int sv[2];

	(void)state;
	need(false);
	ctx = client_ctx(NULL);
	run(invalid_main, ctx);

	/* Outside a task: a handshake needs awaits. */
	socketpair_or_fail(sv);
	/* errors: corio_tls.3 EPERM */
	assert_int_equal(corio_tls_accept(sv[0], ctx, &s), -EPERM);
	assert_null(s);
	s = (corio_stream *)&s;
	assert_int_equal(corio_tls_connect(sv[0], ctx, "localhost", &s),
			 -EPERM);
	assert_null(s);
	close(sv[0]);
	close(sv[1]);
	SSL_CTX_free(ctx);
}

/* ---- OpenSSL out of memory ---------------------------------------------- */

static int enomem_main(void *arg)
{
	struct ctxs *x = arg;
	corio_stream *s = (corio_stream *)x;
	char buf[16];
	int sv[2];

	socketpair_or_fail(sv);
	/* SSL_new fails: nothing made, nothing sent. */
	atomic_store(&ossl_fail, true);
	/* errors: corio_tls.3 ENOMEM */
	assert_int_equal(corio_tls_connect(sv[0], x->cli, "localhost", &s),
			 -ENOMEM);
	assert_int_equal(corio_tls_accept(sv[1], x->srv, &s), -ENOMEM);
	atomic_store(&ossl_fail, false);
	assert_null(s);
	assert_true(fd_is_open(sv[0]));
	assert_int_equal(recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(corio_close(sv[0]), 0);
	assert_int_equal(corio_close(sv[1]), 0);

	/* And the contexts still work. */
	{
		struct tls_pair p;

		pair_open(x, &p);
		assert_int_equal(corio_stream_close(p.s[1]), 0);
		corio_stream_free(p.s[0]);
		assert_int_equal(corio_close(p.fd[0]), 0);
	}
	assert_loop_clean();
	return 0;
}

static void test_openssl_out_of_memory_enomem(void **state)
{
	struct ctxs x;

	(void)state;
	need(true);
	if (!ossl_counting) {
		fprintf(stderr, "test-tls: OpenSSL's allocator is not ours\n");
		skip();
	}
	x = ctxs_new();
	run(enomem_main, &x);
	ctxs_free(&x);
}

/* ---- kTLS: control records (gh15) ------------------------------------- */

static int rec(struct corio_ktls_rx *rx, int type, const char *p, size_t n)
{
	return corio__ktls_record(rx, type, (const unsigned char *)p, n);
}

static void test_ktls_control_records_gh15(void **state)
{
	static const char nst[] = "\x04\x00\x00\x05" "abcde";
	struct corio_ktls_rx rx = { .version = TLS1_3_VERSION };
	int i;

	(void)state;
	need(false);
	assert_int_equal(rec(&rx, 23, "abc", 3), CORIO_KTLS_DATA);
	assert_int_equal(rec(&rx, 23, "", 0), CORIO_KTLS_SKIP);
	/* Session tickets: skipped, whole, two in a record, or in pieces. */
	assert_int_equal(rec(&rx, 22, nst, 9), CORIO_KTLS_SKIP);
	assert_int_equal(rec(&rx, 22, "\x04\x00\x00\x01" "a"
			     "\x04\x00\x00\x00", 9), CORIO_KTLS_SKIP);
	for (i = 0; i < 9; i++)
		assert_int_equal(rec(&rx, 22, nst + i, 1), CORIO_KTLS_SKIP);
	assert_int_equal(rec(&rx, 23, "abc", 3), CORIO_KTLS_DATA);
	/* errors: corio_tls.3 EPROTO */
	assert_int_equal(rec(&rx, 22, "\x18\x00\x00\x01\x00", 5), -EPROTO);
	assert_non_null(strstr(rx.why, "KeyUpdate"));

	/* A ticket cut by data is an error. */
	rx = (struct corio_ktls_rx){ .version = TLS1_3_VERSION };
	assert_int_equal(rec(&rx, 22, nst, 6), CORIO_KTLS_SKIP);
	assert_int_equal(rec(&rx, 23, "x", 1), -EPROTO);

	/* close_notify, whole or in two reads: end of file. */
	rx = (struct corio_ktls_rx){ .version = TLS1_3_VERSION };
	assert_int_equal(rec(&rx, 21, "\x01\x00", 2), 0);
	assert_true(rx.closed);
	rx = (struct corio_ktls_rx){ .version = TLS1_3_VERSION };
	assert_int_equal(rec(&rx, 21, "\x01", 1), CORIO_KTLS_SKIP);
	assert_int_equal(rec(&rx, 21, "\x00", 1), 0);
	/* user_canceled comes before a close_notify; anything else ends. */
	rx = (struct corio_ktls_rx){ .version = TLS1_3_VERSION };
	assert_int_equal(rec(&rx, 21, "\x01\x5a", 2), CORIO_KTLS_SKIP);
	assert_int_equal(rec(&rx, 21, "\x02\x14", 2), -EPROTO);
	assert_string_equal(rx.why, "read: fatal alert from the peer: bad "
			    "record mac");
	rx = (struct corio_ktls_rx){ .version = TLS1_3_VERSION };
	assert_int_equal(rec(&rx, 21, "\x01\x64", 2), -EPROTO);
	/* Other record types. */
	rx = (struct corio_ktls_rx){ .version = TLS1_3_VERSION };
	assert_int_equal(rec(&rx, 20, "\x01", 1), -EPROTO);
	assert_int_equal(rec(&rx, 24, "\x01", 1), -EPROTO);

	/* TLS 1.2: warnings pass, a few in a row; HelloRequest is ignored,
	 * a renegotiation and a ticket are errors. */
	rx = (struct corio_ktls_rx){ .version = TLS1_2_VERSION };
	for (i = 0; i < 3; i++)
		assert_int_equal(rec(&rx, 21, "\x01\x64", 2), CORIO_KTLS_SKIP);
	assert_int_equal(rec(&rx, 23, "x", 1), CORIO_KTLS_DATA);
	for (i = 0; i < 4; i++)
		assert_int_equal(rec(&rx, 21, "\x01\x64", 2), CORIO_KTLS_SKIP);
	assert_int_equal(rec(&rx, 21, "\x01\x64", 2), -EPROTO);
	rx = (struct corio_ktls_rx){ .version = TLS1_2_VERSION };
	assert_int_equal(rec(&rx, 22, "\x00\x00\x00\x00", 4), CORIO_KTLS_SKIP);
	assert_int_equal(rec(&rx, 22, "\x01\x00\x00\x00", 4), -EPROTO);
	assert_non_null(strstr(rx.why, "renegotiation"));
	rx = (struct corio_ktls_rx){ .version = TLS1_2_VERSION };
	assert_int_equal(rec(&rx, 22, nst, 9), -EPROTO);
}


/* ---- no leaked SSL object ----------------------------------------------- */


/* A bit of everything: a handshake and echo, failures, a cancellation. */
static int churn_main(void *arg)
{
	struct ctxs x = ctxs_new();
	SSL_CTX *untrusting = client_ctx(env.other);
	struct server e = { .ctx = x.srv, .read_ret = 1 };
	struct hs h = { .ctx = x.cli, .ret = 1 };
	corio_stream *s = NULL;
	char buf[64], err[256];
	corio_task *t;
	uint64_t old;
	int sv[2];

	(void)arg;
	/* Echo, closed with close_notify. */
	socketpair_or_fail(sv);
	e.fd = sv[0];
	t = serve(&e);
	assert_int_equal(corio_tls_connect(sv[1], x.cli, "localhost", &s), 0);
	assert_int_equal(corio_stream_write(s, "ping\n", 5), 5);
	assert_int_equal(corio_stream_flush(s), 0);
	assert_int_equal(corio_stream_readline(s, buf, sizeof(buf)), 5);
	assert_int_equal(corio_stream_close(s), 0);
	assert_int_equal(corio_join(t), 0);

	/* Verification failure on both sides. */
	socketpair_or_fail(sv);
	e.fd = sv[0];
	t = serve(&e);
	assert_int_equal(corio_tls_connect(sv[1], untrusting, "localhost", &s),
			 -EPROTO);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_int_equal(corio_join(t), 0);

	/* Garbage, and half a handshake. */
	assert_int_equal(accept_against(x.srv, "GET / HTTP/1.0\r\n\r\n", 18,
					err, sizeof(err)), -EPROTO);
	assert_int_equal(accept_against(x.srv, "\x16\x03\x01\x00", 4,
					err, sizeof(err)), -ECONNRESET);

	/* A stream freed (not closed) mid-conversation. */
	socketpair_or_fail(sv);
	e.fd = sv[0];
	t = serve(&e);
	assert_int_equal(corio_tls_connect(sv[1], x.cli, "localhost", &s), 0);
	assert_int_equal(corio_stream_write(s, "unfinished", 10), 10);
	corio_stream_free(s);
	assert_int_equal(corio_close(sv[1]), 0);
	assert_int_equal(corio_join(t), 0);

	/* A handshake cancelled, and one timed out. */
	socketpair_or_fail(sv);
	h.fd = sv[0];
	t = corio_spawn(handshake_fn, &h);
	assert_non_null(t);
	yield_until(&h.started);
	assert_int_equal(corio_sleep(CORIO_MSEC(1)), 0);
	assert_int_equal(corio_cancel(t), 0);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(h.ret, -ECANCELED);
	old = corio_timeout(CORIO_MSEC(5));
	assert_int_equal(corio_tls_accept(sv[1], x.srv, &s), -ETIMEDOUT);
	corio_deadline(old);
	assert_int_equal(corio_close(sv[0]), 0);
	assert_int_equal(corio_close(sv[1]), 0);

	SSL_CTX_free(untrusting);
	ctxs_free(&x);
	assert_loop_clean();
	return 0;
}

static void test_no_leaked_ssl_objects(void **state)
{
	long base;
	int i;

	(void)state;
	need(true);
	if (!ossl_counting) {
		fprintf(stderr, "test-tls: OpenSSL allocated before main: "
			"its allocations are not counted\n");
		skip();
	}
	run(churn_main, NULL);	/* OpenSSL's one-time state, made */
	base = atomic_load(&ossl_live);
	for (i = 0; i < 3; i++) {
		run(churn_main, NULL);
		if (atomic_load(&ossl_live) != base)
			fail_msg("round %d: OpenSSL holds %ld allocations, "
				 "%ld before", i, atomic_load(&ossl_live),
				 base);
	}
}

/*
 * examples/echo-server --tls CERT KEY, driven by examples/echo-client
 * --tls --ca CERT (which checks every byte it gets back): both exit 0.
 */
static pid_t spawn_example(char *const argv[])
{
	posix_spawn_file_actions_t fa;
	pid_t pid;

	assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
	posix_spawn_file_actions_addopen(&fa, 2, env.log,
					 O_WRONLY | O_CREAT | O_APPEND, 0600);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	assert_int_equal(posix_spawn(&pid, argv[0], &fa, NULL, argv, environ),
			 0);
	posix_spawn_file_actions_destroy(&fa);
	return pid;
}

static int examples_main(void *arg)
{
	char port[16];
	char *server[] = { "examples/echo-server", "-h", "127.0.0.1", "-p",
			   port, "--tls", env.cert, env.key, NULL };
	char *client[] = { "examples/echo-client", "--tls", "--ca", env.cert,
			   "-h", "localhost", "-p", port, "-c", "4", "-n", "50",
			   "-s", "1000", NULL };
	struct child srv, cli;
	uint64_t end;
	int fd, p = free_port();

	(void)arg;
	snprintf(port, sizeof(port), "%d", p);
	srv.pid = spawn_example(server);
	end = corio_now() + test_slack_ns(CORIO_SEC(10));
	while ((fd = corio_dial("127.0.0.1", p)) == -ECONNREFUSED &&
	       corio_now() < end)
		assert_int_equal(corio_sleep(CORIO_MSEC(10)), 0);
	assert_true(fd >= 0);
	assert_int_equal(corio_close(fd), 0);
	cli.pid = spawn_example(client);
	if (reap(&cli, CORIO_SEC(30)) != 0)
		dump_log("echo-client --tls failed");
	kill(srv.pid, SIGTERM);
	assert_int_equal(reap(&srv, CORIO_SEC(10)), 0);
	return 0;
}

static void test_echo_examples_over_tls(void **state)
{
	(void)state;
	need(true);
	if (access("examples/echo-server", X_OK) ||
	    access("examples/echo-client", X_OK))
		skip();
	run(examples_main, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		TLS_TEST(test_echo_corio_both_ends_tls13),
		TLS_TEST(test_echo_corio_both_ends_tls12),
		TLS_TEST(test_server_against_openssl_s_client),
		TLS_TEST(test_client_against_openssl_s_server),
		TLS_TEST(test_wrong_certificate_eproto),
		TLS_TEST(test_untrusted_certificate_eproto),
		TLS_TEST(test_garbage_and_close_mid_handshake),
		TLS_TEST(test_server_vanishes_mid_handshake),
		TLS_TEST(test_garbage_and_vanishing_peer_after_handshake),
		TLS_TEST(test_handshake_deadline_silent_peer),
		TLS_TEST(test_cancelled_handshake_ecanceled),
		TLS_TEST(test_cancel_mid_read_loses_no_byte),
		TLS_TEST(test_mib_messages_exact_both_ways),
		TLS_TEST(test_one_reader_one_writer_at_once),
		TLS_TEST(test_write_cut_by_deadline_resumes_in_order),
		TLS_TEST(test_invalid_arguments_and_outside_a_task),
		TLS_TEST(test_openssl_out_of_memory_enomem),
		TLS_TEST(test_no_leaked_ssl_objects),
		TLS_TEST(test_echo_examples_over_tls),
		TLS_TEST(test_ktls_control_records_gh15),
	};

	/* Before OpenSSL's first allocation, or it refuses. */
	ossl_counting = CRYPTO_set_mem_functions(count_malloc, count_realloc,
						 count_free) == 1;
	int failed;

	if (getenv("CORIO_TEST_FILTER"))
		cmocka_set_test_filter(getenv("CORIO_TEST_FILTER"));
	failed = cmocka_run_group_tests(tests, group_setup, group_teardown);
	if (failed || env.certs)
		return failed;
	/* Nearly all skipped: tests/run.sh says SKIP, with this line. */
	fflush(stdout);
	fprintf(stderr, "test-tls: skipped: %s\n", !build_has_tls() ?
		"corio is built without TLS" :
		"no openssl command to make the test certificates");
	return 77;
}

#else	/* !CORIO_HAVE_TLS */

/* Built without libssl: the calls say so, and every test is a skip. */
static void test_tls_not_supported(void **state)
{
	corio_stream *s = (corio_stream *)&s;

	(void)state;
	/* ENOTSUP, "before it looks at their arguments" (corio_tls(3)). */
	assert_int_equal(corio_tls_accept(0, NULL, &s), -ENOTSUP);
	assert_null(s);
	assert_int_equal(corio_tls_connect(0, NULL, "localhost", &s),
			 -ENOTSUP);
	skip();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tls_not_supported),
	};

	if (cmocka_run_group_tests(tests, NULL, NULL))
		return 1;
	fflush(stdout);
	fprintf(stderr, "test-tls: skipped: corio is built without TLS\n");
	return 77;
}

#endif
