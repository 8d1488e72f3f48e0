/* Unit tests: secret, buf, util, genpass, lock, http retry policy. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include <jansson.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "core/buf.h"
#include "agent/genpass.h"
#include "agent/lock.h"
#include "agent/agent.h"
#include "agent/replicas.h"
#include "providers/http.h"

static void
test_secret_basics(void **st)
{
	struct secret *a = secret_from_str("Pa'ss wörd"), *b = secret_from_str("Pa'ss wörd"),
	    *c = secret_from_str("other");
	assert_non_null(a);
	assert_int_equal(secret_len(a), strlen("Pa'ss wörd"));
	assert_string_equal(secret_reveal(a), "Pa'ss wörd");
	assert_true(secret_equal(a, b));
	assert_false(secret_equal(a, c));
	assert_true(secret_occurs_in(a, "xxPa'ss wördyy", strlen("xxPa'ss wördyy")));
	assert_false(secret_occurs_in(a, "Pa'ss", 5));
	secret_free(a);
	secret_free(b);
	secret_free(c);
	secret_free(NULL);
}

static void
test_secret_grow_and_limits(void **st)
{
	struct secret *s = secret_new();
	char chunk[5000];
	int i;

	memset(chunk, 'k', sizeof(chunk));
	for (i = 0; i < 10; i++)
		assert_int_equal(secret_append(s, chunk, sizeof(chunk)), 0);
	assert_int_equal(secret_len(s), 50000);
	assert_int_equal(secret_reveal(s)[50000], '\0');
	assert_int_equal(secret_append(s, chunk, SECRET_MAX), DMK_ERR_TOOBIG);
	assert_int_equal(secret_len(s), 50000);
	secret_clear(s);
	assert_int_equal(secret_len(s), 0);
	assert_int_equal(secret_append(s, "ab\r\n", 4), 0);
	secret_trim_newline(s);
	assert_string_equal(secret_reveal(s), "ab");
	secret_free(s);
}

static void
test_wiping_allocator(void **st)
{
	char *p = wiping_malloc(32);
	assert_non_null(p);
	memcpy(p, "secret-bytes-here", 18);
	wiping_free(p);
	wiping_free(NULL);
}

static void
test_buf(void **st)
{
	struct buf b;

	buf_init(&b, 16);
	assert_int_equal(buf_puts(&b, "hello"), 0);
	assert_int_equal(buf_printf(&b, " %d", 42), 0);
	assert_string_equal(b.data, "hello 42");
	assert_int_equal(buf_puts(&b, "0123456789"), DMK_ERR_TOOBIG);
	assert_string_equal(b.data, "hello 42");   /* unchanged on failure */
	buf_reset(&b);
	assert_int_equal(b.len, 0);
	assert_string_equal(b.data, "");
	buf_free(&b);
	assert_null(b.data);
}

static void
test_util(void **st)
{
	long long v;
	time_t t;
	char buf[32];

	assert_int_equal(util_parse_duration("90d", &v), 0);
	assert_int_equal(v, 90 * 86400);
	assert_int_equal(util_parse_duration("45", &v), 0);
	assert_int_equal(v, 45);
	assert_int_equal(util_parse_duration("2w", &v), 0);
	assert_int_equal(v, 14 * 86400);
	assert_int_not_equal(util_parse_duration("-1d", &v), 0);
	assert_int_not_equal(util_parse_duration("1x", &v), 0);
	assert_int_not_equal(util_parse_duration("1dd", &v), 0);
	assert_int_not_equal(util_parse_duration("", &v), 0);
	assert_int_not_equal(util_parse_duration("99999999999999d", &v), 0);
	assert_int_equal(util_parse_rfc3339("2026-11-25T06:15:00Z", &t), 0);
	util_rfc3339(t, buf, sizeof(buf));
	assert_string_equal(buf, "2026-11-25T06:15:00Z");
	assert_int_equal(util_parse_rfc3339("2026-11-25T06:15:00.123456789Z", &t), 0);
	util_rfc3339(t, buf, sizeof(buf));
	assert_string_equal(buf, "2026-11-25T06:15:00Z");
	assert_int_equal(util_parse_rfc3339("2026-11-25T07:15:00+01:00", &t), 0);
	util_rfc3339(t, buf, sizeof(buf));
	assert_string_equal(buf, "2026-11-25T06:15:00Z");
	assert_int_not_equal(util_parse_rfc3339("yesterday", &t), 0);
	/* a short offset is refused, not read past its end (fuzz_state); the
	 * zeroed buffer would let the old code accept it */
	{
		char shortoff[40] = "2026-11-25T07:15:00+1:00";
		assert_int_not_equal(util_parse_rfc3339(shortoff, &t), 0);
		memcpy(shortoff, "2026-11-25T07:15:00+01:0", 25);
		assert_int_not_equal(util_parse_rfc3339(shortoff, &t), 0);
	}
	assert_int_not_equal(util_parse_rfc3339("2026-11-25T07:15:00+24:00", &t), 0);
	assert_int_equal(util_parse_rfc3339("2026-11-25T01:15:00-05:00", &t), 0);
	util_rfc3339(t, buf, sizeof(buf));
	assert_string_equal(buf, "2026-11-25T06:15:00Z");
	assert_true(util_utf8_valid("héllo", strlen("héllo")));
	assert_false(util_utf8_valid("\xc3", 1));
	assert_false(util_utf8_valid("\xc0\x80", 2));       /* overlong NUL */
	assert_false(util_utf8_valid("\xed\xa0\x80", 3));   /* surrogate */
	assert_false(util_utf8_valid("a\0b", 3));
	assert_int_equal(util_edit_distance("state_dirr", "state_dir"), 1);
}

static void
test_genpass_policy(void **st)
{
	struct pass_policy p = { 32, "" };
	struct secret *s;
	struct dmk_err e;
	int i;

	for (i = 0; i < 200; i++) {
		assert_int_equal(genpass(&p, &s, &e), 0);
		assert_int_equal(secret_len(s), 32);
		assert_int_equal(pass_policy_check(s, &e), 0);
		secret_free(s);
	}
	p.length = 8;
	for (i = 0; i < 200; i++) {
		const char *c;
		int cls[4] = { 0 };
		assert_int_equal(genpass(&p, &s, &e), 0);
		for (c = secret_reveal(s); *c; c++) {
			if (*c >= 'A' && *c <= 'Z') cls[0] = 1;
			else if (*c >= 'a' && *c <= 'z') cls[1] = 1;
			else if (*c >= '0' && *c <= '9') cls[2] = 1;
			else cls[3] = 1;
		}
		assert_true(cls[0] && cls[1] && cls[2] && cls[3]);
		secret_free(s);
	}
	p.length = 7;
	assert_int_equal(genpass(&p, &s, &e), DMK_ERR_POLICY);
	p.length = 129;
	assert_int_equal(genpass(&p, &s, &e), DMK_ERR_POLICY);
	/* avoided characters never appear */
	p.length = 64;
	strcpy(p.avoid, "0O1lI|{}");
	for (i = 0; i < 100; i++) {
		assert_int_equal(genpass(&p, &s, &e), 0);
		assert_null(strpbrk(secret_reveal(s), "0O1lI|{}"));
		secret_free(s);
	}
	strcpy(p.avoid, "0123456789");
	assert_int_equal(genpass(&p, &s, &e), DMK_ERR_POLICY);
	assert_non_null(strstr(e.msg, "digit"));
}

static void
test_policy_check(void **st)
{
	struct dmk_err e;
	struct secret *s;

#define CHECK(pw, want, needle) do {                                   \
	s = secret_from_str(pw);                                       \
	assert_int_equal(pass_policy_check(s, &e), (want));            \
	if ((want) != 0) {                                             \
		assert_non_null(strstr(e.msg, (needle)));              \
		assert_null(strstr(e.msg, (pw)));                      \
	}                                                              \
	secret_free(s);                                                \
} while (0)
	CHECK("Abcdef1!", 0, "");
	CHECK("Abcdefg1", 0, "");          /* 3 of 4 classes */
	CHECK("Ab1!", DMK_ERR_POLICY, "too short");
	CHECK("abcdefgh1", DMK_ERR_POLICY, "not complex enough");
	CHECK("ÄÖÜäöüß1x", 0, "");
	{
		char big[200];
		memset(big, 'a', 129);
		strcpy(big + 129, "A1");
		CHECK(big, DMK_ERR_POLICY, "too long");
	}
#undef CHECK
}

/* No bias: over many draws each index of 90 is seen about equally often. */
static void
test_random_index_uniform(void **st)
{
	enum { N = 90, DRAWS = 90000 };
	int count[N] = { 0 };
	double chi = 0, expect = (double)DRAWS / N;
	size_t idx;
	int i;

	for (i = 0; i < DRAWS; i++) {
		assert_int_equal(pass_random_index(N, &idx), 0);
		assert_true(idx < N);
		count[idx]++;
	}
	for (i = 0; i < N; i++)
		chi += (count[i] - expect) * (count[i] - expect) / expect;
	/* 89 degrees of freedom: p = 1e-6 at about 160. A modulo-biased draw
	 * (256 % 90 = 76 values twice as likely) gives chi-square in the thousands. */
	if (chi > 160)
		fail_msg("chi-square %.1f: the draw is biased", chi);
	assert_int_equal(pass_random_index(0, &idx), DMK_ERR_BADINPUT);
	assert_int_equal(pass_random_index(257, &idx), DMK_ERR_BADINPUT);
}

static void
test_lock(void **st)
{
	char dir[] = "/tmp/dmklockXXXXXX";
	struct dmk_err e;
	int fd1, fd2;
	pid_t pid;
	int status;

	assert_non_null(mkdtemp(dir));
	assert_int_equal(lock_acquire(dir, 0, &fd1, &e), 0);
	/* flock is per open file description: a child process must be refused */
	pid = fork();
	if (pid == 0) {
		int fdc, r = lock_acquire(dir, 0, &fdc, &e);
		_exit(r == DMK_ERR_LOCKED && strstr(e.msg, "another dmkagent run") ? 0 : 1);
	}
	waitpid(pid, &status, 0);
	assert_int_equal(WEXITSTATUS(status), 0);
	lock_release(fd1);
	assert_int_equal(lock_acquire(dir, 0, &fd2, &e), 0);
	lock_release(fd2);
}

/* state_dir: private, and files in it created without following links. */
static void
test_private_files(void **st)
{
	char dir[] = "/tmp/dmkpriv-XXXXXX", victim[] = "/tmp/dmkvictim-XXXXXX", p[256],
	    buf[64];
	struct dmk_err e;
	struct stat sb;
	ssize_t n;
	int fd, lfd;

	(void)st;
	assert_non_null(mkdtemp(dir));
	assert_true((fd = mkstemp(victim)) >= 0);
	assert_int_equal(write(fd, "untouched", 9), 9);
	close(fd);
	/* A link planted at the temporary name is removed, never followed. */
	snprintf(p, sizeof(p), "%s/registered.json.tmp", dir);
	assert_int_equal(symlink(victim, p), 0);
	assert_int_equal(util_write_file_atomic(dir, "registered.json", "{}\n", 3, &e), 0);
	fd = open(victim, O_RDONLY);
	n = read(fd, buf, sizeof(buf));
	close(fd);
	assert_int_equal(n, 9);
	assert_memory_equal(buf, "untouched", 9);
	assert_int_equal(lstat(p, &sb), -1);
	snprintf(p, sizeof(p), "%s/registered.json", dir);
	assert_int_equal(lstat(p, &sb), 0);
	assert_true(S_ISREG(sb.st_mode));
	assert_int_equal(sb.st_mode & 0777, 0600);
	/* Group- or other-writable: refused, by the check and by the lock. */
	chmod(dir, 0770);
	assert_int_equal(util_check_private_dir(dir, &e), DMK_ERR_CONFIG);
	assert_non_null(strstr(e.msg, dir));
	assert_non_null(strstr(e.msg, "writable by group or others"));
	assert_int_equal(util_write_file_atomic(dir, "registered.json", "{}\n", 3, &e),
	    DMK_ERR_CONFIG);
	assert_int_equal(lock_acquire(dir, 0, &lfd, &e), DMK_ERR_CONFIG);
	assert_non_null(strstr(e.msg, dir));
	chmod(dir, 0700);
	assert_int_equal(util_check_private_dir(dir, &e), 0);
	/* A symbolic link as the directory itself: refused. */
	snprintf(p, sizeof(p), "%s/link", dir);
	assert_int_equal(symlink(dir, p), 0);
	assert_int_equal(util_check_private_dir(p, &e), DMK_ERR_CONFIG);
	unlink(p);
	if (geteuid() == 0) {
		assert_int_equal(chown(dir, 65534, 65534), 0);
		assert_int_equal(util_check_private_dir(dir, &e), DMK_ERR_CONFIG);
		assert_non_null(strstr(e.msg, "owned by uid 65534"));
		assert_int_equal(chown(dir, 0, 0), 0);
	}
	snprintf(p, sizeof(p), "%s/registered.json", dir);
	unlink(p);
	rmdir(dir);
	unlink(victim);
}

/* A registered.json with a non-object where an AG's or a replica's record
 * belongs (hand-edited, truncated): recording replaces it, and what was
 * recorded reads back (fuzz_state: the record was written after free). */
static void
test_regstate_corrupt(void **st)
{
	static const char *const bodies[] = { "{\"ag1\":{\"SQL1\":[]}}", "{\"ag1\":\"x\"}",
		"{\"ag1\":{\"SQL1\":5,\"SQL2\":{\"fam1\":{\"version\":\"1\"}}}}" };
	char dir[] = "/tmp/dmkstateXXXXXX", path[300], ver[80], cred[160];
	struct config *cfg;
	struct agent a;
	struct dmk_err e;
	size_t i;
	FILE *f;

	assert_non_null(mkdtemp(dir));
	assert_non_null(cfg = calloc(1, sizeof(*cfg)));
	snprintf(cfg->state_dir, sizeof(cfg->state_dir), "%s", dir);
	snprintf(path, sizeof(path), "%s/registered.json", dir);
	for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		assert_non_null(f = fopen(path, "w"));
		fputs(bodies[i], f);
		fclose(f);
		memset(&a, 0, sizeof(a));
		a.cfg = cfg;
		assert_int_equal(regstate_set(&a, "ag1", "SQL1", "fam1", "hcv:sql/db1", "3", "c1",
		    &e), 0);
		json_decref(a.regstate);
		a.regstate = NULL;   /* read back from the file */
		assert_int_equal(regstate_get(&a, "ag1", "SQL1", "fam1", ver, sizeof(ver), cred,
		    sizeof(cred)), 0);
		assert_string_equal(ver, "3");
		assert_string_equal(cred, "c1");
		json_decref(a.regstate);
	}
	unlink(path);
	rmdir(dir);
	free(cfg);
}

static void
test_retry_after(void **st)
{
	assert_int_equal(http_parse_retry_after("3", 0), 3000);
	assert_int_equal(http_parse_retry_after("", 0), -1);
	assert_int_equal(http_parse_retry_after("soon", 0), -1);
	assert_int_equal(http_parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", 1445412480), 10000);
	/* a huge value is held to the bound, not overflowed (fuzz_hcvault_http) */
	assert_true(http_parse_retry_after("99999999999999999999", 0) == HTTP_RETRY_AFTER_MAX * 1000);
	assert_true(http_parse_retry_after("9223372036854775807", 0) == HTTP_RETRY_AFTER_MAX * 1000);
}

static void
test_http_retry(void **st)
{
	static const struct http_replay_entry e1[] = {
		{ 503, "{\"errors\":[\"Vault is sealed\"]}", NULL },
		{ 0, NULL, NULL },
		{ 429, "{}", "Retry-After: 2\n" },
		{ 200, "{\"ok\":true}", "Content-Type: application/json\n" },
	};
	static const struct http_replay_entry e2[] = {
		{ 404, "{\"errors\":[]}", NULL },
	};
	static const struct http_replay_entry e3[] = {
		{ 500, "", NULL }, { 500, "", NULL }, { 500, "", NULL }, { 500, "", NULL },
		{ 500, "", NULL }, { 200, "", NULL },
	};
	struct http_replay rp;
	struct http_client c;
	struct http_request req;
	struct http_response resp;
	struct dmk_err err;

	memset(&rp, 0, sizeof(rp));
	rp.entries = e1;
	rp.n = 4;
	http_client_replay(&c, &rp);
	memset(&req, 0, sizeof(req));
	req.method = "GET";
	req.url = "https://v/x";
	http_response_init(&resp);
	assert_int_equal(http_do(&c, &req, &resp, &err), 0);
	assert_int_equal(resp.status, 200);
	assert_int_equal(resp.attempts, 4);
	assert_string_equal(resp.body.data, "{\"ok\":true}");
	assert_string_equal(resp.content_type, "application/json");
	assert_true(c.slept_ms >= 2000);   /* Retry-After honoured */
	http_response_free(&resp);
	http_replay_free(&rp);

	/* a 404 is an answer: never retried */
	memset(&rp, 0, sizeof(rp));
	rp.entries = e2;
	rp.n = 1;
	http_client_replay(&c, &rp);
	http_response_init(&resp);
	assert_int_equal(http_do(&c, &req, &resp, &err), 0);
	assert_int_equal(resp.status, 404);
	assert_int_equal(resp.attempts, 1);
	http_response_free(&resp);
	http_replay_free(&rp);

	/* bounded by count: the last 500 stands */
	memset(&rp, 0, sizeof(rp));
	rp.entries = e3;
	rp.n = 6;
	http_client_replay(&c, &rp);
	http_response_init(&resp);
	assert_int_equal(http_do(&c, &req, &resp, &err), 0);
	assert_int_equal(resp.status, 500);
	assert_int_equal(resp.attempts, 5);
	assert_int_equal(rp.next, 5);
	http_response_free(&resp);
	http_replay_free(&rp);

	/* no_retry: a non-idempotent call is tried once */
	memset(&rp, 0, sizeof(rp));
	rp.entries = e3;
	rp.n = 6;
	http_client_replay(&c, &rp);
	req.no_retry = 1;
	http_response_init(&resp);
	assert_int_equal(http_do(&c, &req, &resp, &err), 0);
	assert_int_equal(resp.attempts, 1);
	http_response_free(&resp);
	http_replay_free(&rp);
}

/* The real transport refuses plain HTTP, except the link-local IMDS address. */
static void
test_http_https_only(void **st)
{
	struct http_client c;
	struct http_request req;
	struct http_response resp;
	struct dmk_err err;

	assert_int_equal(http_client_curl(&c, NULL, 500, 1000, &err), 0);
	c.retry.max_attempts = 1;
	memset(&req, 0, sizeof(req));
	req.method = "GET";
	req.url = "http://127.0.0.1:1/x";
	http_response_init(&resp);
	assert_int_equal(http_do(&c, &req, &resp, &err), DMK_ERR_CONFIG);
	req.allow_imds_http = 1;   /* the flag does not open other addresses */
	assert_int_equal(http_do(&c, &req, &resp, &err), DMK_ERR_CONFIG);
	http_response_free(&resp);
	http_client_close(&c);
}

static void
test_errors(void **st)
{
	struct dmk_err e;

	assert_int_equal(dmk_exit_code(0), 0);
	assert_int_equal(dmk_exit_code(DMK_ERR_CONFIG), 2);
	assert_int_equal(dmk_exit_code(DMK_ERR_USAGE), 2);
	assert_int_equal(dmk_exit_code(DMK_ERR_INCOMPLETE), 3);
	assert_int_equal(dmk_exit_code(DMK_ERR_LOCKED), 4);
	assert_int_equal(dmk_exit_code(DMK_ERR_UNREACHABLE), 5);
	assert_int_equal(dmk_exit_code(DMK_ERR_TIMEOUT), 5);
	assert_int_equal(dmk_exit_code(DMK_ERR_SQL), 1);
	assert_int_equal(dmk_errf(&e, DMK_ERR_IO, "a %d", 1), DMK_ERR_IO);
	assert_int_equal(dmk_err_prefix(&e, "ctx"), DMK_ERR_IO);
	assert_string_equal(e.msg, "ctx: a 1");
	assert_string_equal(dmk_strerror(DMK_ERR_LOCKED), "another run holds the lock");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_secret_basics),
		cmocka_unit_test(test_secret_grow_and_limits),
		cmocka_unit_test(test_wiping_allocator),
		cmocka_unit_test(test_buf),
		cmocka_unit_test(test_util),
		cmocka_unit_test(test_genpass_policy),
		cmocka_unit_test(test_policy_check),
		cmocka_unit_test(test_random_index_uniform),
		cmocka_unit_test(test_lock),
		cmocka_unit_test(test_regstate_corrupt),
		cmocka_unit_test(test_retry_after),
		cmocka_unit_test(test_http_retry),
		cmocka_unit_test(test_http_https_only),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_private_files),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
