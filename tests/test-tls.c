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
#if CORIO_HAVE_KTLS
#include <netinet/tcp.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <sys/syscall.h>
#endif

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

/* ---- where the ciphertext comes from ------------------------------------ */

static int duplex_main(void *arg);

/*
 * After the handshake a stream that OpenSSL decrypts receives through a
 * receiver on the loop's shared buffer ring (*arg true), or through
 * corio_recv with CORIO_DISABLE=bufring (false); an echo works either way.
 */
static int receiver_main(void *arg)
{
	bool want = *(const bool *)arg;
	struct ctxs x = ctxs_new();
	struct tls_pair p;
	char got[64];
	int i, ret;

	pair_open(&x, &p);
	assert_int_equal(corio__stream_tls_receiver(p.s[0]), want);
	assert_int_equal(corio__stream_tls_receiver(p.s[1]), want);
	for (i = 0; i < 20; i++) {
		assert_int_equal(corio_stream_write(p.s[1], "ping", 4), 4);
		assert_int_equal(corio_stream_flush(p.s[1]), 0);
		assert_int_equal(corio_stream_readexactly(p.s[0], got, 4), 4);
		assert_memory_equal(got, "ping", 4);
		assert_int_equal(corio_stream_write(p.s[0], got, 4), 4);
		assert_int_equal(corio_stream_flush(p.s[0]), 0);
		assert_int_equal(corio_stream_readexactly(p.s[1], got, 4), 4);
	}
	assert_int_equal(corio_stream_close(p.s[1]), 0);
	assert_int_equal(corio_stream_read(p.s[0], got, sizeof(got)), 0);
	ret = corio_stream_close(p.s[0]);	/* its close_notify: no one there */
	assert_true(ret == 0 || ret == -EPIPE);
	ctxs_free(&x);
	assert_loop_clean();
	return 0;
}

/*
 * The receiver is the default; without buffer rings the corio_recv
 * path takes over, and the tests of cancellation, big messages and a
 * reader beside a writer pass on it too.
 */
static void test_reads_with_and_without_buffer_rings(void **state)
{
	bool want = true;

	(void)state;
	need(true);
	run(receiver_main, &want);
	want = false;
	assert_int_equal(setenv("CORIO_DISABLE", "bufring", 1), 0);
	run(receiver_main, &want);
	run(cancel_read_main, NULL);
	run(big_main, NULL);
	run(duplex_main, NULL);
	assert_int_equal(unsetenv("CORIO_DISABLE"), 0);
}

/* ---- the ciphertext buffers --------------------------------------------- */

/*
 * The output buffer grows while a send reads it (a reader's answer comes
 * during a writer's send): the bytes the send reads stay where they are,
 * in the old buffer, until the send returns; a second growth meanwhile
 * frees only the copy no send reads.  Without a send it compacts first.
 */
static void test_ciphertext_buffer_grows_under_a_send(void **state)
{
	struct corio_tls_buf b = { 0 };
	char *old = NULL, *first, *p;
	size_t cap;

	(void)state;
	need(false);
	assert_int_equal(corio__tls_buf_room(&b, 100, false, &old), 0);
	assert_non_null(b.p);
	assert_null(old);
	memset(b.p, 'a', 100);
	b.len = 100;
	b.pos = 40;
	first = b.p;
	cap = b.cap;
	assert_int_equal(corio__tls_buf_room(&b, cap, true, &old), 0);
	assert_ptr_equal(old, first);
	assert_true(b.p != first && b.cap >= 100 + cap);
	assert_int_equal(b.pos, 40);
	assert_int_equal(b.len, 100);
	assert_memory_equal(b.p, first, 100);
	memset(b.p + 100, 'b', b.cap - 100);
	b.len = b.cap;
	assert_int_equal(corio__tls_buf_room(&b, 1, true, &old), 0);
	assert_ptr_equal(old, first);	/* the send still reads it */
	assert_int_equal(first[99], 'a');
	assert_int_equal(b.p[b.len - 1], 'b');
	assert_int_equal(b.p[40], 'a');
	free(old);

	/* No send: the unsent tail moves to the start, in place. */
	b.pos = b.len - 5;
	p = b.p;
	cap = b.cap;
	assert_int_equal(corio__tls_buf_room(&b, cap - 5, false, NULL), 0);
	assert_ptr_equal(b.p, p);
	assert_int_equal(b.pos, 0);
	assert_int_equal(b.len, 5);
	assert_memory_equal(b.p, "bbbbb", 5);
	assert_int_equal(b.cap, cap);
	free(b.p);
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

/* ---- kTLS: the keys handed to the kernel (gh15) -------------------------- */

#if CORIO_HAVE_KTLS

/*
 * The kernel a test runs on may have no tls ULP (the one these tests were
 * written on has no CONFIG_TLS), so most kTLS tests fake it: the tests
 * link libcorio.a, so the setsockopt below is the one corio calls.  For
 * fake.fd it takes the ULP and the keys, keeping a copy of what corio
 * gave, or refuses with the errno a test chose; for any other socket it is
 * the real system call.  A faked kernel encrypts nothing: after the
 * handover that socket carries plaintext, and the tests act as the
 * kernel, with EVP and the keys they got, to prove key, IV and sequence
 * numbers right against OpenSSL on the other end.
 */
static struct {
	int fd;			/* the socket whose kernel is faked, or -1 */
	int ulp_err, rx_err, tx_err;	/* errno for each step, 0: it works */
	int ulp_calls;		/* TCP_ULP asks, on any socket */
	int rx_calls, tx_calls;	/* TLS_RX and TLS_TX on fd */
	union corio_ktls_info rx, tx;
} fake = { .fd = -1 };

static int fake_ret(int err)
{
	if (!err)
		return 0;
	errno = err;
	return -1;
}

int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
	union corio_ktls_info *info;

	if (level == SOL_TCP && name == TCP_ULP) {
		fake.ulp_calls++;
		if (fd == fake.fd)
			return fake_ret(fake.ulp_err);
	} else if (level == SOL_TLS && fd == fake.fd &&
		   (name == TLS_RX || name == TLS_TX)) {
		info = name == TLS_RX ? &fake.rx : &fake.tx;
		memset(info, 0, sizeof(*info));
		memcpy(info, val, len < sizeof(*info) ? len : sizeof(*info));
		if (name == TLS_RX) {
			fake.rx_calls++;
			return fake_ret(fake.rx_err);
		}
		fake.tx_calls++;
		return fake_ret(fake.tx_err);
	}
	return (int)syscall(SYS_setsockopt, fd, level, name, val, len);
}

/* Every kTLS test starts from the real kernel, nothing cached. */
static void fake_reset(void)
{
	memset(&fake, 0, sizeof(fake));
	fake.fd = -1;
	corio__ktls_forget();
}

static int ktls_teardown(void **state)
{
	fake_reset();
	unsetenv("CORIO_DISABLE");
	return tls_teardown(state);
}

#define KTLS_TEST(f)	cmocka_unit_test_teardown(f, ktls_teardown)

/* ---- the kernel's side, played with EVP --------------------------------- */

/* One direction's keys as the kernel got them. */
struct keys {
	int version, cipher;
	const EVP_CIPHER *evp;
	unsigned char key[32];
	/* TLS 1.3 and ChaCha20: the IV; TLS 1.2 AES-GCM: the 4-byte salt,
	 * then the first record's explicit nonce. */
	unsigned char iv[12];
	uint64_t seq;		/* the first record's sequence number */
};

static uint64_t get_be64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static void put_be64(unsigned char *p, uint64_t v)
{
	int i;

	for (i = 7; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char)v;
}

static struct keys keys_of(const union corio_ktls_info *u)
{
	struct keys k = { .version = u->info.version,
			  .cipher = u->info.cipher_type };

	switch (k.cipher) {
	case TLS_CIPHER_AES_GCM_128:
		k.evp = EVP_aes_128_gcm();
		memcpy(k.key, u->gcm128.key, 16);
		memcpy(k.iv, u->gcm128.salt, 4);
		memcpy(k.iv + 4, u->gcm128.iv, 8);
		k.seq = get_be64(u->gcm128.rec_seq);
		break;
	case TLS_CIPHER_AES_GCM_256:
		k.evp = EVP_aes_256_gcm();
		memcpy(k.key, u->gcm256.key, 32);
		memcpy(k.iv, u->gcm256.salt, 4);
		memcpy(k.iv + 4, u->gcm256.iv, 8);
		k.seq = get_be64(u->gcm256.rec_seq);
		break;
	case TLS_CIPHER_CHACHA20_POLY1305:
		k.evp = EVP_chacha20_poly1305();
		memcpy(k.key, u->chacha.key, 32);
		memcpy(k.iv, u->chacha.iv, 12);
		k.seq = get_be64(u->chacha.rec_seq);
		break;
	default:
		fail_msg("cipher_type %d", k.cipher);
	}
	return k;
}

/* TLS 1.2 AES-GCM: an explicit nonce in each record (RFC 5288). */
static bool explicit_nonce(const struct keys *k)
{
	return k->version == TLS_1_2_VERSION &&
	       k->cipher != TLS_CIPHER_CHACHA20_POLY1305;
}

/* The nonce of record seq: RFC 8446 5.3, RFC 7905 2, RFC 5288 3. */
static void nonce_of(const struct keys *k, uint64_t seq,
		     const unsigned char *explicit, unsigned char nonce[12])
{
	int i;

	memcpy(nonce, k->iv, 12);
	if (explicit_nonce(k)) {
		memcpy(nonce + 4, explicit, 8);
		return;
	}
	for (i = 0; i < 8; i++)
		nonce[4 + i] ^= (unsigned char)(seq >> (56 - 8 * i));
}

/* The additional data of TLS 1.2 (RFC 5246 6.2.3.3), of TLS 1.3 (5.2). */
static size_t aad_of(const struct keys *k, uint64_t seq,
		     const unsigned char *hdr, int type, size_t plain_len,
		     unsigned char aad[13])
{
	if (k->version == TLS_1_3_VERSION) {
		memcpy(aad, hdr, 5);
		return 5;
	}
	put_be64(aad, seq);
	aad[8] = (unsigned char)type;
	aad[9] = 3;
	aad[10] = 3;
	aad[11] = (unsigned char)(plain_len >> 8);
	aad[12] = (unsigned char)plain_len;
	return 13;
}

/* AEAD in or out over n bytes; false if the tag does not check. */
static bool aead(const struct keys *k, int enc, const unsigned char *nonce,
		 const unsigned char *aad, size_t aad_len,
		 const unsigned char *in, size_t n, unsigned char *out,
		 unsigned char *tag)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	unsigned char fin[32];
	int l, ok;

	ok = c && EVP_CipherInit_ex(c, k->evp, NULL, NULL, NULL, enc) == 1 &&
	     EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) == 1 &&
	     EVP_CipherInit_ex(c, NULL, NULL, k->key, nonce, enc) == 1 &&
	     EVP_CipherUpdate(c, NULL, &l, aad, (int)aad_len) == 1 &&
	     (n == 0 || EVP_CipherUpdate(c, out, &l, in, (int)n) == 1) &&
	     (enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, 16,
					 tag) == 1) &&
	     EVP_CipherFinal_ex(c, fin, &l) == 1 &&
	     (!enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16,
					  tag) == 1);
	EVP_CIPHER_CTX_free(c);
	return ok;
}

/*
 * The plaintext of record rec[0, len) (its header too) decrypted as
 * record seq: its length and *type, its content type; -1 if it does not
 * decrypt.
 */
static int open_record(const struct keys *k, uint64_t seq,
		       unsigned char *rec, size_t len, unsigned char *out,
		       int *type)
{
	unsigned char nonce[12], aad[13];
	unsigned char *c = rec + 5;
	size_t n = len - 5, aad_len;

	nonce_of(k, seq, c, nonce);
	if (explicit_nonce(k)) {
		c += 8;
		n -= 8;
	}
	if (n < 16)
		return -1;
	n -= 16;
	aad_len = aad_of(k, seq, rec, rec[0], n, aad);
	if (!aead(k, 0, nonce, aad, aad_len, c, n, out, c + n))
		return -1;
	*type = rec[0];
	if (k->version == TLS_1_3_VERSION) {
		while (n > 0 && out[n - 1] == 0)
			n--;	/* padding */
		if (n == 0)
			return -1;
		*type = out[--n];
	}
	return (int)n;
}

/* Record seq of type with p[0, n), as the kernel would send it: its length. */
static size_t seal_record(const struct keys *k, uint64_t seq, int type,
			  const void *p, size_t n, unsigned char *out)
{
	unsigned char nonce[12], aad[13], plain[512], explicit[8] = { 0 };
	size_t hdr = 5, body, aad_len;

	assert_true(n < sizeof(plain));
	memcpy(plain, p, n);
	if (k->version == TLS_1_3_VERSION)
		plain[n++] = (unsigned char)type;	/* the inner type */
	if (explicit_nonce(k)) {
		/* The kernel's: the first one, plus one per record. */
		put_be64(explicit, get_be64(k->iv + 4) + (seq - k->seq));
		memcpy(out + 5, explicit, 8);
		hdr += 8;
	}
	nonce_of(k, seq, explicit, nonce);
	body = hdr - 5 + n + 16;
	out[0] = (unsigned char)(k->version == TLS_1_3_VERSION ? 23 : type);
	out[1] = 3;
	out[2] = 3;
	out[3] = (unsigned char)(body >> 8);
	out[4] = (unsigned char)body;
	aad_len = aad_of(k, seq, out, type, n, aad);
	assert_true(aead(k, 1, nonce, aad, aad_len, plain, n, out + hdr,
			 out + hdr + n));
	return hdr + n + 16;
}

/* Inside a task: the next whole record on fd into rec: its length. */
static size_t recv_record(int fd, unsigned char *rec, size_t cap)
{
	uint64_t old = corio_timeout(test_slack_ns(CORIO_SEC(5)));
	size_t len;

	assert_int_equal(recv_all(fd, rec, 5), 5);
	len = 5 + ((size_t)rec[3] << 8 | rec[4]);
	assert_true(len <= cap);
	assert_int_equal(recv_all(fd, rec + 5, len - 5), (ssize_t)(len - 5));
	corio_deadline(old);
	return len;
}

/* ---- the peer: plain OpenSSL that the test moves ------------------------ */

/*
 * OpenSSL over memory BIOs, its ciphertext moved by the test, so that a
 * test chooses what goes out in one send: the last flight of the
 * handshake together with records, a record cut in two.
 */
struct mpeer {
	SSL *ssl;
	BIO *rb, *wb;
	int fd;
};

static void mpeer_new(struct mpeer *m, SSL_CTX *ctx, int fd, bool server)
{
	m->ssl = SSL_new(ctx);
	m->rb = BIO_new(BIO_s_mem());
	m->wb = BIO_new(BIO_s_mem());
	assert_true(m->ssl && m->rb && m->wb);
	SSL_set_bio(m->ssl, m->rb, m->wb);
	m->fd = fd;
	if (server) {
		SSL_set_accept_state(m->ssl);
	} else {
		SSL_set_connect_state(m->ssl);
		assert_int_equal(SSL_set_tlsext_host_name(m->ssl, "localhost"),
				 1);
	}
}

/* What OpenSSL wrote and the test has not sent: into buf, its length. */
static size_t mpeer_take(struct mpeer *m, unsigned char *buf, size_t cap)
{
	int n = BIO_read(m->wb, buf, (int)cap);

	assert_true(BIO_ctrl_pending(m->wb) == 0);
	return n > 0 ? (size_t)n : 0;
}

/* Inside a task: all of it, in one send. */
static void mpeer_flush(struct mpeer *m)
{
	char *p;
	long n = BIO_get_mem_data(m->wb, &p);

	if (n > 0)
		assert_int_equal(send_all(m->fd, p, (size_t)n), n);
	assert_int_equal(BIO_reset(m->wb), 1);
}

static void mpeer_fill(struct mpeer *m)
{
	uint64_t old = corio_timeout(test_slack_ns(CORIO_SEC(5)));
	static char buf[16384];	/* task stacks are small */
	ssize_t n = corio_recv(m->fd, buf, sizeof(buf), 0);

	corio_deadline(old);
	assert_true(n > 0);
	BIO_write(m->rb, buf, (int)n);
}

/* The handshake; its last flight stays unsent, for mpeer_take or flush. */
static void mpeer_handshake(struct mpeer *m)
{
	int r;

	while ((r = SSL_do_handshake(m->ssl)) != 1) {
		assert_int_equal(SSL_get_error(m->ssl, r), SSL_ERROR_WANT_READ);
		mpeer_flush(m);
		mpeer_fill(m);
	}
}

static void mpeer_write(struct mpeer *m, const void *p, size_t n)
{
	assert_int_equal(SSL_write(m->ssl, p, (int)n), (int)n);
}

/* Plaintext: its length, 0 at close_notify. */
static int mpeer_read(struct mpeer *m, void *buf, size_t n)
{
	int r, e;

	while ((r = SSL_read(m->ssl, buf, (int)n)) <= 0) {
		e = SSL_get_error(m->ssl, r);
		if (e == SSL_ERROR_ZERO_RETURN)
			return 0;
		assert_int_equal(e, SSL_ERROR_WANT_READ);
		mpeer_flush(m);
		mpeer_fill(m);
	}
	return r;
}

/* ---- a corio side A under the faked kernel, and the peer B -------------- */

struct kpair {
	struct ctxs x;
	int fa, fb;		/* A's socket and B's, connected */
	struct hs a;		/* corio */
	struct mpeer b;
	corio_task *t;		/* A's handshake */
	struct keys rx, tx;	/* what A gave the kernel */
};

/* Contexts for version with only suite (a TLS 1.3 suite or a 1.2 list). */
static struct ctxs kctxs(int version, const char *suite, int tickets)
{
	struct ctxs x = ctxs_new();
	SSL_CTX *both[2] = { x.srv, x.cli };
	int i;

	for (i = 0; i < 2; i++) {
		pin_version(both[i], version);
		if (suite && version == TLS1_3_VERSION)
			assert_int_equal(SSL_CTX_set_ciphersuites(both[i],
								  suite), 1);
		else if (suite)
			assert_int_equal(SSL_CTX_set_cipher_list(both[i],
								 suite), 1);
	}
	if (tickets >= 0)
		assert_int_equal(SSL_CTX_set_num_tickets(x.srv,
							 (size_t)tickets), 1);
	return x;
}

/* A's handshake started, B's done but for its last flight, unsent. */
static void kpair_start(struct kpair *p, bool a_server)
{
	assert_int_equal(tcp_pair(&p->fa, &p->fb), 0);
	fake.fd = p->fa;
	memset(&p->a, 0, sizeof(p->a));
	p->a.ctx = a_server ? p->x.srv : p->x.cli;
	p->a.fd = p->fa;
	p->a.server = a_server;
	p->t = corio_spawn(handshake_fn, &p->a);
	assert_non_null(p->t);
	mpeer_new(&p->b, a_server ? p->x.cli : p->x.srv, p->fb, !a_server);
	mpeer_handshake(&p->b);
}

/* A's handshake done; the keys A gave the faked kernel, if it did. */
static void kpair_join(struct kpair *p)
{
	assert_int_equal(corio_join(p->t), 0);
	assert_int_equal(p->a.ret, 0);
	assert_non_null(p->a.s);
	if (fake.rx_calls)
		p->rx = keys_of(&fake.rx);
	if (fake.tx_calls)
		p->tx = keys_of(&fake.tx);
}

static void kpair_open(struct kpair *p, bool a_server)
{
	kpair_start(p, a_server);
	mpeer_flush(&p->b);
	kpair_join(p);
}

/* Freed, not closed: a close would send a plaintext alert, faked. */
static void kpair_close(struct kpair *p)
{
	corio_stream_free(p->a.s);
	SSL_free(p->b.ssl);
	assert_int_equal(corio_close(p->fa), 0);
	assert_int_equal(corio_close(p->fb), 0);
	fake.fd = -1;
	fake.rx_calls = fake.tx_calls = 0;
}

static int ktls_dirs(const corio_stream *s, const char **why)
{
	const char *w;
	int d = corio__stream_ktls(s, &w);

	if (why)
		*why = w;
	return d;
}

/* The records B sends next, as A's kernel reads them from A's socket. */
static void expect_rx(struct kpair *p, uint64_t *seq, int tickets,
		      const char *want)
{
	static unsigned char rec[17000], plain[17000];
	int type, n;

	for (;;) {
		n = open_record(&p->rx, *seq, rec,
				recv_record(p->fa, rec, sizeof(rec)), plain,
				&type);
		if (n < 0)
			fail_msg("record %" PRIu64 " does not decrypt", *seq);
		(*seq)++;
		if (type != 22)
			break;
		/* A session ticket: a TLS 1.3 NewSessionTicket message. */
		assert_int_equal(plain[0], 4);
		tickets--;
	}
	assert_int_equal(tickets, 0);
	assert_int_equal(type, 23);
	assert_int_equal(n, (int)strlen(want));
	assert_memory_equal(plain, want, strlen(want));
}

/* Records sealed as A's kernel would, read by B's OpenSSL. */
static void expect_tx(struct kpair *p, uint64_t seq)
{
	unsigned char rec[600];
	char buf[64];

	assert_true(send_all(p->fa, rec, seal_record(&p->tx, seq, 23,
						     "first", 5, rec)) > 0);
	assert_true(send_all(p->fa, rec, seal_record(&p->tx, seq + 1, 23,
						     "second", 6, rec)) > 0);
	assert_int_equal(mpeer_read(&p->b, buf, 5), 5);
	assert_memory_equal(buf, "first", 5);
	assert_int_equal(mpeer_read(&p->b, buf, sizeof(buf)), 6);
	assert_memory_equal(buf, "second", 6);
	/* And the close_notify the kernel would send for corio's close. */
	assert_true(send_all(p->fa, rec, seal_record(&p->tx, seq + 2, 21,
						     "\x01\x00", 2, rec)) > 0);
	assert_int_equal(mpeer_read(&p->b, buf, sizeof(buf)), 0);
}

struct kcase {
	int version;
	const char *suite;
	int cipher;		/* the TLS_CIPHER_* the kernel must get */
};

/* Both ways, A the client and then the server. */
static int keys_main(void *arg)
{
	const struct kcase *c = arg;
	struct kpair p;
	int tickets = 2;	/* OpenSSL's default */
	uint64_t seq;
	bool a_server;
	int i;

	for (i = 0; i < 2; i++) {
		a_server = i == 1;
		memset(&p, 0, sizeof(p));
		p.x = kctxs(c->version, c->suite, -1);
		kpair_open(&p, a_server);
		assert_int_equal(ktls_dirs(p.a.s, NULL),
				 CORIO_KTLS_RX | CORIO_KTLS_TX);
		assert_int_equal(fake.rx_calls, 1);
		assert_int_equal(fake.tx_calls, 1);
		assert_int_equal(p.rx.version, c->version);
		assert_int_equal(p.tx.version, c->version);
		assert_int_equal(p.rx.cipher, c->cipher);
		assert_int_equal(p.tx.cipher, c->cipher);
		if (c->version == TLS1_2_VERSION) {
			/* Each side's Finished, under the new keys. */
			assert_int_equal(p.rx.seq, 1);
			assert_int_equal(p.tx.seq, 1);
		} else {
			/* The server's session tickets went out already. */
			assert_int_equal(p.rx.seq, 0);
			assert_int_equal(p.tx.seq, a_server ? tickets : 0);
		}
		mpeer_write(&p.b, "from the peer", 13);
		mpeer_flush(&p.b);
		seq = p.rx.seq;
		expect_rx(&p, &seq, c->version == TLS1_3_VERSION && !a_server ?
			  tickets : 0, "from the peer");
		/* The next record too: the sequence goes on. */
		mpeer_write(&p.b, "and more", 8);
		mpeer_flush(&p.b);
		expect_rx(&p, &seq, 0, "and more");
		expect_tx(&p, p.tx.seq);
		kpair_close(&p);
		ctxs_free(&p.x);
	}
	assert_loop_clean();
	return 0;
}

static void keys_test(int version, const char *suite, int cipher)
{
	struct kcase c = { version, suite, cipher };

	need(true);
	fake_reset();
	run(keys_main, &c);
}

static void test_ktls_keys_tls13_aes128_gcm_gh15(void **state)
{
	(void)state;
	keys_test(TLS1_3_VERSION, "TLS_AES_128_GCM_SHA256",
		  TLS_CIPHER_AES_GCM_128);
}

static void test_ktls_keys_tls13_aes256_gcm_gh15(void **state)
{
	(void)state;
	keys_test(TLS1_3_VERSION, "TLS_AES_256_GCM_SHA384",
		  TLS_CIPHER_AES_GCM_256);
}

static void test_ktls_keys_tls13_chacha20_poly1305_gh15(void **state)
{
	(void)state;
	keys_test(TLS1_3_VERSION, "TLS_CHACHA20_POLY1305_SHA256",
		  TLS_CIPHER_CHACHA20_POLY1305);
}

static void test_ktls_keys_tls12_aes128_gcm_gh15(void **state)
{
	(void)state;
	keys_test(TLS1_2_VERSION, "ECDHE-RSA-AES128-GCM-SHA256",
		  TLS_CIPHER_AES_GCM_128);
}

static void test_ktls_keys_tls12_aes256_gcm_gh15(void **state)
{
	(void)state;
	keys_test(TLS1_2_VERSION, "ECDHE-RSA-AES256-GCM-SHA384",
		  TLS_CIPHER_AES_GCM_256);
}

static void test_ktls_keys_tls12_chacha20_poly1305_gh15(void **state)
{
	(void)state;
	keys_test(TLS1_2_VERSION, "ECDHE-RSA-CHACHA20-POLY1305",
		  TLS_CIPHER_CHACHA20_POLY1305);
}

/* ---- sequence numbers: session tickets, records with the handshake ------ */

/* A server's tickets take its first sequence numbers; a client reads them. */
static int tickets_main(void *arg)
{
	static const int counts[] = { 0, 1, 5 };
	struct kpair p;
	uint64_t seq;
	size_t i;
	int a_server;

	(void)arg;
	for (i = 0; i < ARRAY_SIZE(counts); i++) {
		for (a_server = 0; a_server < 2; a_server++) {
			memset(&p, 0, sizeof(p));
			p.x = kctxs(TLS1_3_VERSION, NULL, counts[i]);
			kpair_open(&p, a_server);
			assert_int_equal(ktls_dirs(p.a.s, NULL),
					 CORIO_KTLS_RX | CORIO_KTLS_TX);
			assert_int_equal(p.tx.seq, a_server ? counts[i] : 0);
			assert_int_equal(p.rx.seq, 0);
			if (a_server) {
				/* B reads the tickets, then A's records. */
				expect_tx(&p, p.tx.seq);
			} else {
				mpeer_write(&p.b, "after tickets", 13);
				mpeer_flush(&p.b);
				seq = p.rx.seq;
				expect_rx(&p, &seq, counts[i],
					  "after tickets");
			}
			kpair_close(&p);
			ctxs_free(&p.x);
		}
	}
	assert_loop_clean();
	return 0;
}

static void test_ktls_seq_counts_session_tickets_gh15(void **state)
{
	(void)state;
	need(true);
	fake_reset();
	run(tickets_main, NULL);
}

/* The offsets of the records in buf[0, len): their number. */
static size_t records_in(const unsigned char *buf, size_t len, size_t *off,
			 size_t cap)
{
	size_t n = 0, o = 0;

	while (o + 5 <= len) {
		assert_true(n < cap);
		off[n++] = o;
		o += 5 + ((size_t)buf[o + 3] << 8 | buf[o + 4]);
	}
	assert_true(o == len);
	return n;
}

struct later {
	int fd;
	const unsigned char *p;
	size_t len;
};

/* Sends the rest of what was cut, a moment later. */
static int send_later_fn(void *arg)
{
	struct later *l = arg;

	assert_int_equal(corio_sleep(CORIO_MSEC(20)), 0);
	assert_int_equal(send_all(l->fd, l->p, l->len), (ssize_t)l->len);
	return 0;
}

static unsigned char early_big[16000], early_wire[32768];

/*
 * B sends its last flight and four records at once, the third cut in
 * two, its rest (with the fourth) a moment later: A drains three records
 * in user space, completing the third from the socket without taking a
 * byte of the fourth, which A's kernel then reads as the next record.
 * Then one record cut in its body, small and big.
 */
static int early_main(void *arg)
{
	static const char *const msgs[] = { "one", "two", "three", "four" };
	int version = *(const int *)arg;
	/* TLS 1.2: a client's Finished comes first, so only a client (A)
	 * can get records with the server's last flight. */
	bool a_server = version == TLS1_3_VERSION;
	unsigned char buf[8192];
	size_t off[16], n, nrec, cut, i;
	struct later l;
	struct kpair p;
	corio_task *t;
	char got[64];
	uint64_t seq;

	memset(&p, 0, sizeof(p));
	p.x = kctxs(version, NULL, 0);
	kpair_start(&p, a_server);
	for (i = 0; i < ARRAY_SIZE(msgs); i++)
		mpeer_write(&p.b, msgs[i], strlen(msgs[i]));
	n = mpeer_take(&p.b, buf, sizeof(buf));
	nrec = records_in(buf, n, off, ARRAY_SIZE(off));
	assert_true(nrec > 4);
	cut = off[nrec - 2] + 3;	/* the third: 3 bytes of its header */
	assert_int_equal(send_all(p.fb, buf, cut), (ssize_t)cut);
	l = (struct later){ .fd = p.fb, .p = buf + cut, .len = n - cut };
	t = corio_spawn(send_later_fn, &l);
	assert_non_null(t);
	kpair_join(&p);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(ktls_dirs(p.a.s, NULL), CORIO_KTLS_RX | CORIO_KTLS_TX);
	/* Three records drained: the next one's number. */
	assert_int_equal(p.rx.seq, (version == TLS1_2_VERSION ? 1 : 0) + 3);
	assert_int_equal(corio_stream_read(p.a.s, got, sizeof(got)), 11);
	assert_memory_equal(got, "onetwothree", 11);
	seq = p.rx.seq;
	expect_rx(&p, &seq, 0, "four");
	kpair_close(&p);
	ctxs_free(&p.x);

	/* Cut inside the body this time, and in the same send the rest. */
	memset(&p, 0, sizeof(p));
	p.x = kctxs(version, NULL, 0);
	kpair_start(&p, a_server);
	for (i = 0; i < 2; i++)
		mpeer_write(&p.b, msgs[i], strlen(msgs[i]));
	n = mpeer_take(&p.b, buf, sizeof(buf));
	nrec = records_in(buf, n, off, ARRAY_SIZE(off));
	cut = off[nrec - 1] + 9;
	assert_int_equal(send_all(p.fb, buf, cut), (ssize_t)cut);
	l = (struct later){ .fd = p.fb, .p = buf + cut, .len = n - cut };
	t = corio_spawn(send_later_fn, &l);
	assert_non_null(t);
	kpair_join(&p);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(ktls_dirs(p.a.s, NULL), CORIO_KTLS_RX | CORIO_KTLS_TX);
	assert_int_equal(p.rx.seq, (version == TLS1_2_VERSION ? 1 : 0) + 2);
	/* Served as the reader asks: the stream buffers the rest. */
	assert_int_equal(corio_stream_readexactly(p.a.s, got, 4), 4);
	assert_memory_equal(got, "onet", 4);
	assert_int_equal(corio_stream_read(p.a.s, got, sizeof(got)), 2);
	assert_memory_equal(got, "wo", 2);
	kpair_close(&p);
	ctxs_free(&p.x);

	/* A big record cut in its body: its plaintext is far more than the
	 * ciphertext there was when the drain began. */
	memset(&p, 0, sizeof(p));
	p.x = kctxs(version, NULL, 0);
	kpair_start(&p, a_server);
	for (i = 0; i < sizeof(early_big); i++)
		early_big[i] = (unsigned char)(i * 7 + 1);
	mpeer_write(&p.b, early_big, sizeof(early_big));
	n = mpeer_take(&p.b, early_wire, sizeof(early_wire));
	nrec = records_in(early_wire, n, off, ARRAY_SIZE(off));
	cut = off[nrec - 1] + 9;
	assert_int_equal(send_all(p.fb, early_wire, cut), (ssize_t)cut);
	l = (struct later){ .fd = p.fb, .p = early_wire + cut,
			    .len = n - cut };
	t = corio_spawn(send_later_fn, &l);
	assert_non_null(t);
	kpair_join(&p);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(ktls_dirs(p.a.s, NULL), CORIO_KTLS_RX | CORIO_KTLS_TX);
	assert_int_equal(p.rx.seq, (version == TLS1_2_VERSION ? 1 : 0) + 1);
	memset(early_wire, 0, sizeof(early_big));
	assert_int_equal(corio_stream_readexactly(p.a.s, early_wire,
						  sizeof(early_big)),
			 (ssize_t)sizeof(early_big));
	assert_memory_equal(early_wire, early_big, sizeof(early_big));
	kpair_close(&p);
	ctxs_free(&p.x);
	assert_loop_clean();
	return 0;
}

static void test_ktls_drains_records_that_came_with_the_handshake_gh15(
	void **state)
{
	int v;

	(void)state;
	need(true);
	fake_reset();
	v = TLS1_3_VERSION;
	run(early_main, &v);
	v = TLS1_2_VERSION;
	run(early_main, &v);
}

/*
 * Records with the handshake that are more than data keep the stream in
 * user space: a KeyUpdate (OpenSSL's read key moves; asked to, it
 * answers), a close_notify.  The ULP is on, with no keys: it passes
 * everything through.
 */
static int spoiled_main(void *arg)
{
	struct kpair p;
	const char *why;
	char got[64];
	int kind;

	(void)arg;
	for (kind = 0; kind < 3; kind++) {
		fake.ulp_calls = 0;
		memset(&p, 0, sizeof(p));
		p.x = kctxs(TLS1_3_VERSION, NULL, 0);
		kpair_start(&p, true);
		if (kind < 2) {
			assert_int_equal(SSL_key_update(p.b.ssl, kind ?
						SSL_KEY_UPDATE_REQUESTED :
						SSL_KEY_UPDATE_NOT_REQUESTED),
					 1);
			mpeer_write(&p.b, "after", 5);
		} else {
			assert_true(SSL_shutdown(p.b.ssl) >= 0);
		}
		mpeer_flush(&p.b);
		kpair_join(&p);
		assert_int_equal(ktls_dirs(p.a.s, &why), 0);
		assert_non_null(strstr(why, "early records"));
		assert_int_equal(fake.ulp_calls, 1);
		assert_int_equal(fake.rx_calls, 0);
		assert_int_equal(fake.tx_calls, 0);
		if (kind == 2) {
			assert_int_equal(corio_stream_read(p.a.s, got,
							   sizeof(got)), 0);
		} else {
			assert_int_equal(corio_stream_read(p.a.s, got,
							   sizeof(got)), 5);
			assert_memory_equal(got, "after", 5);
		}
		/* OpenSSL writes on, after its own KeyUpdate if asked. */
		assert_int_equal(corio_stream_write(p.a.s, "reply", 5), 5);
		assert_int_equal(corio_stream_flush(p.a.s), 0);
		assert_int_equal(mpeer_read(&p.b, got, sizeof(got)), 5);
		assert_memory_equal(got, "reply", 5);
		kpair_close(&p);
		ctxs_free(&p.x);
	}
	assert_loop_clean();
	return 0;
}

static void test_ktls_key_update_or_close_early_stays_in_user_space_gh15(
	void **state)
{
	(void)state;
	need(true);
	fake_reset();
	run(spoiled_main, NULL);
}

/* ---- after the handover: plaintext on the socket ------------------------ */

/*
 * With the kernel (faked) doing both directions, A's stream writes and
 * reads plaintext with plain awaits, and its close sends a close_notify
 * alert through sendmsg (the record type in a cmsg, which plain TCP
 * ignores: the alert's two bytes are what shows).
 */
static int plain_main(void *arg)
{
	size_t big = 3 * CORIO_STREAM_BUF_DEFAULT / 2;
	unsigned char *msg = malloc(big), *in = malloc(big);
	struct kpair p;
	char buf[64];

	(void)arg;
	assert_true(msg && in);
	memset(&p, 0, sizeof(p));
	p.x = kctxs(TLS1_3_VERSION, NULL, 0);
	kpair_open(&p, false);
	assert_int_equal(ktls_dirs(p.a.s, NULL), CORIO_KTLS_RX | CORIO_KTLS_TX);
	assert_int_equal(corio_stream_write(p.a.s, "plain text", 10), 10);
	assert_int_equal(corio_stream_flush(p.a.s), 0);
	assert_int_equal(recv_all(p.fb, buf, 10), 10);
	assert_memory_equal(buf, "plain text", 10);
	/* Past the stream's buffer: straight out, in order. */
	pattern(msg, big, 7);
	assert_int_equal(corio_stream_write(p.a.s, "<", 1), 1);
	assert_int_equal(corio_stream_write(p.a.s, msg, big), (ssize_t)big);
	assert_int_equal(corio_stream_flush(p.a.s), 0);
	assert_int_equal(recv_all(p.fb, buf, 1), 1);
	assert_int_equal(buf[0], '<');
	assert_int_equal(recv_all(p.fb, in, big), (ssize_t)big);
	assert_memory_equal(in, msg, big);
	/* What the kernel decrypted, no cmsg on plain TCP: data. */
	assert_int_equal(send_all(p.fb, "to A\n", 5), 5);
	assert_int_equal(corio_stream_readline(p.a.s, buf, sizeof(buf)), 5);
	assert_memory_equal(buf, "to A\n", 5);
	assert_int_equal(corio_stream_close(p.a.s), 0);
	p.a.s = NULL;
	assert_int_equal(recv_all(p.fb, buf, 2), 2);
	assert_memory_equal(buf, "\x01\x00", 2);
	assert_int_equal(corio_recv(p.fb, buf, sizeof(buf), 0), 0);
	SSL_free(p.b.ssl);
	assert_int_equal(corio_close(p.fb), 0);
	ctxs_free(&p.x);
	free(msg);
	free(in);
	assert_loop_clean();
	return 0;
}

static void test_ktls_kernel_path_moves_plaintext_gh15(void **state)
{
	(void)state;
	need(true);
	fake_reset();
	run(plain_main, NULL);
}

/* ---- what the kernel refuses -------------------------------------------- */

/*
 * RX refused: TX is not tried, both directions stay with OpenSSL (over
 * the ULP, which passes bytes through).  TX refused after RX: the kernel
 * decrypts (faked: plaintext comes in), OpenSSL encrypts and closes.
 */
static int refused_main(void *arg)
{
	struct kpair p;
	const char *why;
	char buf[64];

	(void)arg;
	memset(&p, 0, sizeof(p));
	p.x = kctxs(0, NULL, 0);
	fake.rx_err = EINVAL;
	kpair_open(&p, false);
	assert_int_equal(ktls_dirs(p.a.s, &why), 0);
	assert_string_equal(why, "TLS_RX: Invalid argument");
	assert_int_equal(fake.rx_calls, 1);
	assert_int_equal(fake.tx_calls, 0);
	assert_int_equal(corio_stream_write(p.a.s, "enc\n", 4), 4);
	assert_int_equal(corio_stream_flush(p.a.s), 0);
	assert_int_equal(mpeer_read(&p.b, buf, sizeof(buf)), 4);
	mpeer_write(&p.b, "dec\n", 4);
	mpeer_flush(&p.b);
	assert_int_equal(corio_stream_readline(p.a.s, buf, sizeof(buf)), 4);
	assert_memory_equal(buf, "dec\n", 4);
	assert_int_equal(corio_stream_close(p.a.s), 0);
	p.a.s = NULL;
	assert_int_equal(mpeer_read(&p.b, buf, sizeof(buf)), 0);
	SSL_free(p.b.ssl);
	assert_int_equal(corio_close(p.fb), 0);
	fake.rx_err = 0;
	fake.rx_calls = fake.tx_calls = 0;

	fake.tx_err = ENOPROTOOPT;
	kpair_open(&p, false);
	assert_int_equal(ktls_dirs(p.a.s, &why), CORIO_KTLS_RX);
	assert_non_null(strstr(why, "TLS_TX: "));
	assert_int_equal(fake.tx_calls, 1);
	assert_int_equal(corio_stream_write(p.a.s, "enc\n", 4), 4);
	assert_int_equal(corio_stream_flush(p.a.s), 0);
	assert_int_equal(mpeer_read(&p.b, buf, sizeof(buf)), 4);
	assert_memory_equal(buf, "enc\n", 4);
	assert_int_equal(send_all(p.fb, "plain\n", 6), 6);
	assert_int_equal(corio_stream_readline(p.a.s, buf, sizeof(buf)), 6);
	assert_int_equal(corio_stream_close(p.a.s), 0);
	p.a.s = NULL;
	assert_int_equal(mpeer_read(&p.b, buf, sizeof(buf)), 0);
	SSL_free(p.b.ssl);
	assert_int_equal(corio_close(p.fb), 0);
	ctxs_free(&p.x);
	assert_loop_clean();
	return 0;
}

static void test_ktls_refused_per_direction_falls_back_gh15(void **state)
{
	(void)state;
	need(true);
	fake_reset();
	run(refused_main, NULL);
}

/*
 * corio on both ends over loopback TCP: an echo, both ways, then close.
 * What the kernel took of each end, and why not all: [0] the client's.
 */
static void echo_pair(struct ctxs *x, int dirs[2], char why[2][128])
{
	const char *w;
	struct hs srv = { .ctx = x->srv, .server = true };
	struct hs cli = { .ctx = x->cli };
	char buf[64];
	corio_task *t;
	int i;

	assert_int_equal(tcp_pair(&cli.fd, &srv.fd), 0);
	t = corio_spawn(handshake_fn, &srv);
	assert_non_null(t);
	handshake_fn(&cli);
	assert_int_equal(corio_join(t), 0);
	assert_int_equal(cli.ret, 0);
	assert_int_equal(srv.ret, 0);
	dirs[0] = ktls_dirs(cli.s, &w);
	snprintf(why[0], sizeof(why[0]), "%s", w);
	dirs[1] = ktls_dirs(srv.s, &w);
	snprintf(why[1], sizeof(why[1]), "%s", w);
	for (i = 0; i < 3; i++) {
		assert_int_equal(corio_stream_write(cli.s, "ping\n", 5), 5);
		assert_int_equal(corio_stream_flush(cli.s), 0);
		assert_int_equal(corio_stream_readline(srv.s, buf, sizeof(buf)),
				 5);
		assert_int_equal(corio_stream_write(srv.s, "pong\n", 5), 5);
		assert_int_equal(corio_stream_flush(srv.s), 0);
		assert_int_equal(corio_stream_readline(cli.s, buf, sizeof(buf)),
				 5);
		assert_memory_equal(buf, "pong\n", 5);
	}
	assert_int_equal(corio_stream_close(cli.s), 0);
	assert_int_equal(corio_stream_read(srv.s, buf, sizeof(buf)), 0);
	assert_int_equal(corio_stream_read(srv.s, buf, sizeof(buf)), 0);
	assert_true(corio_stream_close(srv.s) <= 0);
}

/*
 * The real kernel: without the tls ULP (this machine), ENOENT, cached for
 * the process, and the streams work in user space; with it, the kernel
 * takes both directions of both ends and they work the same.  Then a
 * faked ENOENT is cached, a faked EOPNOTSUPP (not a TCP ULP socket, say)
 * is not, and a socketpair is not even tried.
 */
static int ulp_main(void *arg)
{
	struct ctxs x = ctxs_new();
	char why[2][128];
	const char *w;
	int dirs[2], calls, i, sv[2];
	struct hs h = { .ctx = x.cli };
	struct kpair p;
	char buf[16];

	(void)arg;
	echo_pair(&x, dirs, why);
	assert_int_equal(dirs[0], dirs[1]);
	if (dirs[0] == 0) {
		/* No tls ULP: the first end to finish asked, the other saw
		 * the answer. */
		assert_int_equal(fake.ulp_calls, 1);
		for (i = 0; i < 2; i++)
			assert_non_null(strstr(why[i], "TCP_ULP tls: No such "
					       "file or directory"));
		calls = fake.ulp_calls;
		echo_pair(&x, dirs, why);
		assert_int_equal(fake.ulp_calls, calls);
		assert_non_null(strstr(why[0], "not tried again"));
	} else {
		fprintf(stderr, "test-tls: this kernel has kTLS: it took "
			"both ends\n");
		assert_int_equal(dirs[0], CORIO_KTLS_RX | CORIO_KTLS_TX);
	}

	corio__ktls_forget();
	fake.ulp_calls = 0;
	for (i = 0; i < 2; i++) {
		memset(&p, 0, sizeof(p));
		p.x = x;
		fake.ulp_err = i ? ENOENT : EOPNOTSUPP;
		kpair_open(&p, i);
		assert_int_equal(ktls_dirs(p.a.s, &w), 0);
		assert_non_null(strstr(w, "TCP_ULP tls: "));
		mpeer_write(&p.b, "still TLS", 9);
		mpeer_flush(&p.b);
		assert_int_equal(corio_stream_read(p.a.s, buf, sizeof(buf)),
				 9);
		kpair_close(&p);
		fake.ulp_err = 0;
		kpair_open(&p, i);
		if (i) {
			/* ENOENT: not asked again. */
			assert_int_equal(fake.ulp_calls, 1);
			assert_int_equal(ktls_dirs(p.a.s, &w), 0);
			assert_non_null(strstr(w, "not tried again"));
		} else {
			assert_int_equal(fake.ulp_calls, 2);
			assert_int_equal(ktls_dirs(p.a.s, NULL),
					 CORIO_KTLS_RX | CORIO_KTLS_TX);
		}
		kpair_close(&p);
		corio__ktls_forget();
		fake.ulp_calls = 0;
	}

	/* Not TCP: nothing asked. */
	socketpair_or_fail(sv);
	h.fd = sv[1];
	{
		struct server e = { .ctx = x.srv, .fd = sv[0], .once = true };
		corio_task *t = serve(&e);

		handshake_fn(&h);
		assert_int_equal(h.ret, 0);
		assert_int_equal(ktls_dirs(h.s, &w), 0);
		assert_string_equal(w, "not a TCP socket");
		assert_int_equal(fake.ulp_calls, 0);
		assert_int_equal(corio_stream_close(h.s), 0);
		assert_int_equal(corio_join(t), 0);
	}
	ctxs_free(&x);
	assert_loop_clean();
	return 0;
}

static void test_ktls_ulp_refused_stays_in_user_space_gh15(void **state)
{
	(void)state;
	need(true);
	fake_reset();
	run(ulp_main, NULL);
}

/* CORIO_DISABLE=ktls: no ULP asked, the SSL_CTX left as it was. */
static int disabled_main(void *arg)
{
	struct ctxs x = ctxs_new();
	char why[2][128];
	int dirs[2];

	(void)arg;
	fake.fd = -2;	/* nothing to fake, but count */
	echo_pair(&x, dirs, why);
	assert_int_equal(dirs[0], 0);
	assert_int_equal(dirs[1], 0);
	assert_string_equal(why[0], "CORIO_DISABLE=ktls");
	assert_string_equal(why[1], "CORIO_DISABLE=ktls");
	assert_int_equal(fake.ulp_calls, 0);
	assert_null(SSL_CTX_get_keylog_callback(x.srv));
	assert_null(SSL_CTX_get_keylog_callback(x.cli));
	ctxs_free(&x);
	assert_loop_clean();
	return 0;
}

static void test_ktls_disabled_by_corio_disable_gh15(void **state)
{
	(void)state;
	need(true);
	fake_reset();
	assert_int_equal(setenv("CORIO_DISABLE", "ktls", 1), 0);
	run(disabled_main, NULL);
}

/* ---- the keylog callback ------------------------------------------------ */

static struct {
	int lines;
	unsigned char server_secret[64];	/* SERVER_TRAFFIC_SECRET_0 */
	size_t len;
} logged;

static void user_keylog(const SSL *ssl, const char *line)
{
	static const char label[] = "SERVER_TRAFFIC_SECRET_0 ";
	const char *hex = strrchr(line, ' ') + 1;
	unsigned int b;

	(void)ssl;
	logged.lines++;
	if (strncmp(line, label, sizeof(label) - 1))
		return;
	for (logged.len = 0; logged.len < sizeof(logged.server_secret) &&
	     sscanf(hex, "%2x", &b) == 1; hex += 2)
		logged.server_secret[logged.len++] = (unsigned char)b;
}

/*
 * The user's keylog callback sees every line while corio's is set; and
 * the key corio derived from that secret is TLS13-KDF's (OpenSSL's own
 * HKDF-Expand-Label, not the code corio uses).  A callback the user sets
 * later is chained as well.
 */
static int keylog_main(void *arg)
{
	struct kpair p;
	unsigned char key[16];
	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
	EVP_KDF *kdf;
	EVP_KDF_CTX *kctx;
	OSSL_PARAM params[6];
	int round;

	(void)arg;
	memset(&p, 0, sizeof(p));
	p.x = kctxs(TLS1_3_VERSION, "TLS_AES_128_GCM_SHA256", 0);
	SSL_CTX_set_keylog_callback(p.x.cli, user_keylog);
	for (round = 0; round < 2; round++) {
		memset(&logged, 0, sizeof(logged));
		kpair_open(&p, false);
		assert_int_equal(ktls_dirs(p.a.s, NULL),
				 CORIO_KTLS_RX | CORIO_KTLS_TX);
		assert_ptr_not_equal(SSL_CTX_get_keylog_callback(p.x.cli),
				     user_keylog);
		/* Both handshake secrets, the exporter, both traffic. */
		assert_int_equal(logged.lines, 5);
		assert_int_equal(logged.len, 32);
		kdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_TLS1_3_KDF, NULL);
		kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
		assert_non_null(kctx);
		params[0] = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
		params[1] = OSSL_PARAM_construct_utf8_string(
			OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
		params[2] = OSSL_PARAM_construct_octet_string(
			OSSL_KDF_PARAM_KEY, logged.server_secret, logged.len);
		params[3] = OSSL_PARAM_construct_octet_string(
			OSSL_KDF_PARAM_PREFIX, (char *)"tls13 ", 6);
		params[4] = OSSL_PARAM_construct_octet_string(
			OSSL_KDF_PARAM_LABEL, (char *)"key", 3);
		params[5] = OSSL_PARAM_construct_end();
		assert_int_equal(EVP_KDF_derive(kctx, key, sizeof(key), params),
				 1);
		EVP_KDF_CTX_free(kctx);
		EVP_KDF_free(kdf);
		/* The client reads what the server writes. */
		assert_memory_equal(key, p.rx.key, sizeof(key));
		kpair_close(&p);
		/* Set again by the user: corio's goes on top of it. */
		SSL_CTX_set_keylog_callback(p.x.cli, user_keylog);
	}
	ctxs_free(&p.x);
	assert_loop_clean();
	return 0;
}

static void test_ktls_keylog_callback_chained_gh15(void **state)
{
	(void)state;
	need(true);
	fake_reset();
	run(keylog_main, NULL);
}

/* ---- control records after the handover --------------------------------- */

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

#endif	/* CORIO_HAVE_KTLS */

/* ---- no leaked SSL object ----------------------------------------------- */

#if CORIO_HAVE_KTLS
/*
 * The kTLS paths: handed over (faked) with a record drained first, TX
 * refused after RX, and a handshake that fails while its secrets are
 * kept for the handover.
 */
static void ktls_churn(SSL_CTX *untrusting)
{
	struct server e = { .read_ret = 1 };
	struct kpair p;
	corio_stream *s = NULL;
	char buf[16];
	corio_task *t;
	int i, fd;

	for (i = 0; i < 2; i++) {
		fake_reset();
		memset(&p, 0, sizeof(p));
		p.x = kctxs(TLS1_3_VERSION, NULL, -1);
		fake.tx_err = i ? EINVAL : 0;
		kpair_start(&p, true);
		mpeer_write(&p.b, "early", 5);
		mpeer_flush(&p.b);
		kpair_join(&p);
		assert_int_equal(ktls_dirs(p.a.s, NULL), i ? CORIO_KTLS_RX :
				 CORIO_KTLS_RX | CORIO_KTLS_TX);
		assert_int_equal(corio_stream_read(p.a.s, buf, sizeof(buf)), 5);
		kpair_close(&p);
		e.ctx = p.x.srv;
		assert_int_equal(tcp_pair(&fd, &e.fd), 0);
		t = serve(&e);
		assert_int_equal(corio_tls_connect(fd, untrusting, "localhost",
						   &s), -EPROTO);
		assert_int_equal(corio_close(fd), 0);
		assert_int_equal(corio_join(t), 0);
		ctxs_free(&p.x);
	}
	fake_reset();
}
#endif

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

#if CORIO_HAVE_KTLS
	ktls_churn(untrusting);
#endif
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
		TLS_TEST(test_reads_with_and_without_buffer_rings),
		TLS_TEST(test_ciphertext_buffer_grows_under_a_send),
		TLS_TEST(test_one_reader_one_writer_at_once),
		TLS_TEST(test_write_cut_by_deadline_resumes_in_order),
		TLS_TEST(test_invalid_arguments_and_outside_a_task),
		TLS_TEST(test_openssl_out_of_memory_enomem),
		TLS_TEST(test_no_leaked_ssl_objects),
		TLS_TEST(test_echo_examples_over_tls),
#if CORIO_HAVE_KTLS
		KTLS_TEST(test_ktls_keys_tls13_aes128_gcm_gh15),
		KTLS_TEST(test_ktls_keys_tls13_aes256_gcm_gh15),
		KTLS_TEST(test_ktls_keys_tls13_chacha20_poly1305_gh15),
		KTLS_TEST(test_ktls_keys_tls12_aes128_gcm_gh15),
		KTLS_TEST(test_ktls_keys_tls12_aes256_gcm_gh15),
		KTLS_TEST(test_ktls_keys_tls12_chacha20_poly1305_gh15),
		KTLS_TEST(test_ktls_seq_counts_session_tickets_gh15),
		KTLS_TEST(test_ktls_drains_records_that_came_with_the_handshake_gh15),
		KTLS_TEST(test_ktls_key_update_or_close_early_stays_in_user_space_gh15),
		KTLS_TEST(test_ktls_kernel_path_moves_plaintext_gh15),
		KTLS_TEST(test_ktls_refused_per_direction_falls_back_gh15),
		KTLS_TEST(test_ktls_ulp_refused_stays_in_user_space_gh15),
		KTLS_TEST(test_ktls_disabled_by_corio_disable_gh15),
		KTLS_TEST(test_ktls_keylog_callback_chained_gh15),
		KTLS_TEST(test_ktls_control_records_gh15),
#endif
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
