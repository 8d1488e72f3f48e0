/* Unit tests: the audit chain catches every kind of tampering. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "agent/audit.h"

static char dir[64], path[128];

static int
setup(void **st)
{
	strcpy(dir, "/tmp/dmkauditXXXXXX");
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(path, sizeof(path), "%s/audit.jsonl", dir);
	return 0;
}

static int
teardown(void **st)
{
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static void
write_log(const struct secret *key, int n)
{
	struct audit a;
	struct dmk_err e;
	struct audit_target t = { "AG1", "SQLNODE1", "CM_P01" };
	struct audit_keys k = { "6f1a", NULL, "hcv", "hcv:sql/ag1/cm_p01/dmk#password", "3", "fam" };
	int i;

	unlink(path);
	assert_int_equal(audit_open(&a, path, key, "0123456789abcdef0123456789abcdef", &e), 0);
	for (i = 0; i < n; i++)
		assert_int_equal(audit_record(&a, "register", &t, &k, "ok", NULL, &e), 0);
	audit_close(&a);
}

static char *
slurp(size_t *len)
{
	FILE *f = fopen(path, "r");
	char *b = calloc(1, 1 << 20);
	*len = fread(b, 1, (1 << 20) - 1, f);
	fclose(f);
	return b;
}

static void
spit(const char *b, size_t len)
{
	FILE *f = fopen(path, "w");
	fwrite(b, 1, len, f);
	fclose(f);
}

static int
verify(const struct secret *key, char *msg, size_t msglen)
{
	struct dmk_err e;
	long long n;
	int macs, r = audit_verify(path, key, &n, &macs, &e);
	if (msg)
		snprintf(msg, msglen, "%s", r ? e.msg : "");
	return r;
}

static void
test_intact_and_mode(void **st)
{
	struct stat sb;
	char m[1100];

	write_log(NULL, 5);
	assert_int_equal(verify(NULL, m, sizeof(m)), 0);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	/* appending later continues the chain */
	{
		struct audit a;
		struct dmk_err e;
		assert_int_equal(audit_open(&a, path, NULL, "ffffffffffffffffffffffffffffffff", &e), 0);
		assert_int_equal(audit_record(&a, "run-end", NULL, NULL, "ok", NULL, &e), 0);
		audit_close(&a);
	}
	assert_int_equal(verify(NULL, m, sizeof(m)), 0);
}

static void
test_flip_byte(void **st)
{
	size_t len;
	char *b, m[1100], *p;

	write_log(NULL, 5);
	b = slurp(&len);
	p = strstr(b + 10, "SQLNODE1");     /* in the first record */
	p[7] = '2';
	spit(b, len);
	assert_int_equal(verify(NULL, m, sizeof(m)), DMK_ERR_VERIFY);
	assert_non_null(strstr(m, "audit.jsonl:2: hash chain broken"));
	free(b);
}

static void
test_delete_line(void **st)
{
	size_t len;
	char *b, m[1100], *l2, *l3;

	write_log(NULL, 5);
	b = slurp(&len);
	l2 = strchr(b, '\n') + 1;
	l3 = strchr(l2, '\n') + 1;
	memmove(l2, l3, len - (size_t)(l3 - b) + 1);
	spit(b, strlen(b));
	assert_int_equal(verify(NULL, m, sizeof(m)), DMK_ERR_VERIFY);
	assert_non_null(strstr(m, "audit.jsonl:2:"));
	free(b);
}

static void
test_swap_lines(void **st)
{
	size_t len, n1, n2;
	char *b, m[1100], *l2, *l3, *l4, tmp[8192];

	write_log(NULL, 5);
	b = slurp(&len);
	l2 = strchr(b, '\n') + 1;
	l3 = strchr(l2, '\n') + 1;
	l4 = strchr(l3, '\n') + 1;
	n1 = (size_t)(l3 - l2);
	n2 = (size_t)(l4 - l3);
	memcpy(tmp, l2, n1);
	memmove(l2, l3, n2);
	memcpy(l2 + n2, tmp, n1);
	spit(b, len);
	assert_int_equal(verify(NULL, m, sizeof(m)), DMK_ERR_VERIFY);
	assert_non_null(strstr(m, "audit.jsonl:2:"));
	free(b);
}

static void
test_truncate(void **st)
{
	size_t len;
	char *b, m[1100];

	write_log(NULL, 5);
	b = slurp(&len);
	spit(b, len - 20);
	assert_int_equal(verify(NULL, m, sizeof(m)), DMK_ERR_VERIFY);
	assert_non_null(strstr(m, "audit.jsonl:5: record is truncated"));
	/* and a new run refuses to append to a truncated log */
	{
		struct audit a;
		struct dmk_err e;
		assert_int_equal(audit_open(&a, path, NULL, "ffffffffffffffffffffffffffffffff", &e), 0);
		assert_int_equal(audit_record(&a, "x", NULL, NULL, "ok", NULL, &e), DMK_ERR_VERIFY);
		audit_close(&a);
	}
	free(b);
}

/* A last record with a huge or negative seq: appending refuses it instead
 * of overflowing seq + 1 (fuzz_audit). */
static void
test_append_seq_out_of_range(void **st)
{
	static const char *const lines[] = {
		"{\"seq\":9223372036854775807,\"prev\":\"x\"}\n", "{\"seq\":-5}\n" };
	struct audit a;
	struct dmk_err e;
	size_t i;
	FILE *f;

	for (i = 0; i < 2; i++) {
		unlink(path);
		assert_non_null(f = fopen(path, "w"));
		fputs(lines[i], f);
		fclose(f);
		assert_int_equal(audit_open(&a, path, NULL, "ffffffffffffffffffffffffffffffff", &e), 0);
		assert_int_equal(audit_record(&a, "x", NULL, NULL, "ok", NULL, &e), DMK_ERR_VERIFY);
		assert_non_null(strstr(e.msg, "out of range"));
		audit_close(&a);
	}
}

static void
test_forged_append_with_mac(void **st)
{
	struct secret *key = secret_from_str("audit-key-0123456789");
	struct secret *wrong = secret_from_str("not-the-key");
	char m[1100];
	struct audit a;
	struct dmk_err e;

	write_log(key, 3);
	assert_int_equal(verify(key, m, sizeof(m)), 0);
	assert_int_equal(verify(wrong, m, sizeof(m)), DMK_ERR_VERIFY);
	/* a forger without the key appends a well-chained record */
	assert_int_equal(audit_open(&a, path, wrong, "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", &e), 0);
	assert_int_equal(audit_record(&a, "register", NULL, NULL, "ok", NULL, &e), 0);
	audit_close(&a);
	assert_int_equal(verify(key, m, sizeof(m)), DMK_ERR_VERIFY);
	assert_non_null(strstr(m, "audit.jsonl:4: MAC does not match"));
	/* without a MAC at all */
	write_log(key, 2);
	assert_int_equal(audit_open(&a, path, NULL, "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", &e), 0);
	assert_int_equal(audit_record(&a, "register", NULL, NULL, "ok", NULL, &e), 0);
	audit_close(&a);
	assert_int_equal(verify(key, m, sizeof(m)), DMK_ERR_VERIFY);
	assert_non_null(strstr(m, "audit.jsonl:3: record has no MAC"));
	secret_free(key);
	secret_free(wrong);
}

static void
test_forged_append_without_key_chain(void **st)
{
	char m[1100];
	FILE *f;

	write_log(NULL, 2);
	f = fopen(path, "a");
	fprintf(f, "{\"seq\":3,\"action\":\"register\",\"prev\":\"%064d\"}\n", 0);
	fclose(f);
	assert_int_equal(verify(NULL, m, sizeof(m)), DMK_ERR_VERIFY);
	assert_non_null(strstr(m, "audit.jsonl:3: hash chain broken"));
}

static void
test_no_secret_in_record(void **st)
{
	/* The API has no secret parameter; the canary never reaches the file
	 * even when an error text is recorded. */
	struct secret *canary = secret_from_str("CANARY-7f3e9a1c");
	struct audit a;
	struct dmk_err e;
	size_t len;
	char *b;

	unlink(path);
	assert_int_equal(audit_open(&a, path, canary, "dddddddddddddddddddddddddddddddd", &e), 0);
	assert_int_equal(audit_record(&a, "register", NULL, NULL, "failed", "Msg 15313", &e), 0);
	audit_close(&a);
	b = slurp(&len);
	assert_false(secret_occurs_in(canary, b, len));
	free(b);
	secret_free(canary);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_intact_and_mode),
		cmocka_unit_test(test_flip_byte),
		cmocka_unit_test(test_delete_line),
		cmocka_unit_test(test_swap_lines),
		cmocka_unit_test(test_truncate),
		cmocka_unit_test(test_append_seq_out_of_range),
		cmocka_unit_test(test_forged_append_with_mac),
		cmocka_unit_test(test_forged_append_without_key_chain),
		cmocka_unit_test(test_no_secret_in_record),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
