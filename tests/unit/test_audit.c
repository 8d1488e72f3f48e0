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
#include "core/buf.h"
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
	struct audit_keys k = { "6f1a", NULL, "hcv", "hcv:sql/ag1/cm_p01/dmk#password", "3", "fam", NULL };
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

/* ---- the checkpoint: a cut tail, rotation, runs ---- */

static char ckpath[160];

static void
ck_init(void)
{
	snprintf(ckpath, sizeof(ckpath), "%s/audit-checkpoint.json", dir);
	unlink(ckpath);
}

/* One run through the agent's path: run-start, n actions, run-end (or not). */
static int
run_with_ckpt(const struct secret *key, const char *run_id, int n, int end, char *msg,
    size_t msglen)
{
	struct audit a;
	struct dmk_err e;
	struct audit_target t = { "AG1", "SQLNODE1", "CM_P01" };
	int i, r;

	assert_int_equal(audit_open(&a, path, key, run_id, &e), 0);
	assert_int_equal(audit_use_checkpoint(&a, ckpath, &e), 0);
	r = audit_record(&a, "run-start", NULL, NULL, "register", NULL, &e);
	for (i = 0; r == 0 && i < n; i++)
		r = audit_record(&a, "register", &t, NULL, "ok", NULL, &e);
	if (r == 0 && end)
		r = audit_record(&a, "run-end", NULL, NULL, "ok", NULL, &e);
	audit_close(&a);
	if (msg)
		snprintf(msg, msglen, "%s", r ? e.msg : "");
	return r;
}

/* Verify files as one log against the checkpoint file (when it exists). */
static int
verify_ck(const char *const *files, size_t nfiles, const struct secret *key, char *msg,
    size_t msglen, struct audit_report *rep)
{
	struct audit_ckpt c;
	struct audit_check chk = { ckpath, &c };
	struct dmk_err e;
	int found, r;

	if (audit_ckpt_read(ckpath, key, &c, &found, &e) != 0) {
		snprintf(msg, msglen, "%s", e.msg);
		return DMK_ERR_VERIFY;
	}
	buf_init(&rep->notes, 65536);
	r = audit_verify_files(files, nfiles, key, &chk, found ? 1 : 0, rep, &e);
	snprintf(msg, msglen, "%s", r ? e.msg : "");
	return r;
}

static void
cut_to_lines(int keep)
{
	size_t len;
	char *b = slurp(&len), *p = b;
	int i;

	for (i = 0; i < keep; i++)
		p = strchr(p, '\n') + 1;
	spit(b, (size_t)(p - b));
	free(b);
}

static off_t
file_size(const char *p)
{
	struct stat sb;
	return stat(p, &sb) == 0 ? sb.st_size : -1;
}

static void
test_cut_then_extend(void **st)
{
	struct secret *key = secret_from_str("audit-key-0123456789");
	const char *files[1] = { path };
	struct audit_report *rep = calloc(1, sizeof(*rep));
	struct audit a;
	struct dmk_err e;
	char m[1100];
	off_t sz;

	unlink(path);
	ck_init();
	assert_int_equal(run_with_ckpt(key, "11111111111111111111111111111111", 2, 1, m, sizeof(m)), 0);
	assert_int_equal(verify_ck(files, 1, key, m, sizeof(m), rep), 0);
	buf_free(&rep->notes);
	assert_int_equal(rep->head_seq, 4);
	assert_true(rep->macs_checked);
	/* cut down to the first record: the agent refuses to chain onto it */
	cut_to_lines(1);
	sz = file_size(path);
	assert_int_equal(run_with_ckpt(key, "22222222222222222222222222222222", 1, 1, m, sizeof(m)),
	    DMK_ERR_VERIFY);
	assert_non_null(strstr(m, "audit.jsonl: the log ends at seq 1"));
	assert_non_null(strstr(m, "missing at the end"));
	assert_non_null(strstr(m, "refusing to append"));
	assert_int_equal(file_size(path), sz);      /* nothing appended */
	assert_int_equal(verify_ck(files, 1, key, m, sizeof(m), rep), DMK_ERR_VERIFY);
	buf_free(&rep->notes);
	assert_non_null(strstr(m, "audit.jsonl:1: the log ends here at seq 1"));
	assert_non_null(strstr(m, "truncated"));
	/* someone with the key extends it past the checkpoint's seq (no checkpoint in
	 * their hands): the hash at the checkpoint's seq differs */
	assert_int_equal(audit_open(&a, path, key, "33333333333333333333333333333333", &e), 0);
	assert_int_equal(audit_record(&a, "register", NULL, NULL, "ok", NULL, &e), 0);
	assert_int_equal(audit_record(&a, "register", NULL, NULL, "ok", NULL, &e), 0);
	assert_int_equal(audit_record(&a, "register", NULL, NULL, "ok", NULL, &e), 0);
	audit_close(&a);
	assert_int_equal(verify_ck(files, 1, key, m, sizeof(m), rep), DMK_ERR_VERIFY);
	buf_free(&rep->notes);
	assert_non_null(strstr(m, "audit.jsonl:4: the record at seq 4 is not the one the checkpoint"));
	free(rep);
	secret_free(key);
}

static void
test_empty_with_checkpoint(void **st)
{
	const char *files[1] = { path };
	struct audit_report *rep = calloc(1, sizeof(*rep));
	char m[1100];

	unlink(path);
	ck_init();
	assert_int_equal(run_with_ckpt(NULL, "11111111111111111111111111111111", 1, 1, m, sizeof(m)), 0);
	spit("", 0);
	assert_int_equal(verify_ck(files, 1, NULL, m, sizeof(m), rep), DMK_ERR_VERIFY);
	buf_free(&rep->notes);
	assert_non_null(strstr(m, "audit.jsonl: empty, but the checkpoint"));
	assert_non_null(strstr(m, "says seq 3"));
	free(rep);
}

static void
test_macs_without_key(void **st)
{
	struct secret *key = secret_from_str("audit-key-0123456789");
	const char *files[1] = { path };
	struct audit_report *rep = calloc(1, sizeof(*rep));
	char m[1100];

	unlink(path);
	ck_init();
	assert_int_equal(run_with_ckpt(key, "11111111111111111111111111111111", 1, 1, m, sizeof(m)), 0);
	assert_int_equal(verify_ck(files, 1, NULL, m, sizeof(m), rep), 0);
	buf_free(&rep->notes);
	assert_true(rep->macs_seen);
	assert_false(rep->macs_checked);
	/* an empty file checks no MAC either */
	unlink(ckpath);
	spit("", 0);
	assert_int_equal(verify_ck(files, 1, key, m, sizeof(m), rep), 0);
	buf_free(&rep->notes);
	assert_false(rep->macs_checked);
	free(rep);
	secret_free(key);
}

static void
test_checkpoint_forged(void **st)
{
	struct secret *key = secret_from_str("audit-key-0123456789");
	char m[1100];
	size_t len;
	char *b;
	FILE *f;

	unlink(path);
	ck_init();
	assert_int_equal(run_with_ckpt(key, "11111111111111111111111111111111", 1, 1, m, sizeof(m)), 0);
	/* cut the log and move the checkpoint back without the key: refused */
	cut_to_lines(1);
	f = fopen(ckpath, "r");
	b = calloc(1, 4096);
	len = fread(b, 1, 4095, f);
	fclose(f);
	assert_non_null(strstr(b, "\"seq\":3"));
	memcpy(strstr(b, "\"seq\":3") + 6, "1", 1);
	f = fopen(ckpath, "w");
	fwrite(b, 1, len, f);
	fclose(f);
	assert_int_equal(run_with_ckpt(key, "22222222222222222222222222222222", 1, 1, m, sizeof(m)),
	    DMK_ERR_VERIFY);
	assert_non_null(strstr(m, "checkpoint MAC does not match"));
	/* or with the MAC removed */
	*strstr(b, ",\"mac\"") = '\0';
	f = fopen(ckpath, "w");
	fprintf(f, "%s}\n", b);
	fclose(f);
	assert_int_equal(run_with_ckpt(key, "22222222222222222222222222222222", 1, 1, m, sizeof(m)),
	    DMK_ERR_VERIFY);
	assert_non_null(strstr(m, "no MAC although an audit key"));
	/* the operator's reset replaces it, on the record */
	{
		struct audit a;
		struct dmk_err e;
		const char *files[1] = { path };
		struct audit_report *rep = calloc(1, sizeof(*rep));
		assert_int_equal(audit_open(&a, path, key, "44444444444444444444444444444444", &e), 0);
		assert_int_equal(audit_use_checkpoint(&a, ckpath, &e), 0);
		a.reset_reason = "restored from backup";
		assert_int_equal(audit_record(&a, "run-start", NULL, NULL, "x", NULL, &e), 0);
		assert_int_equal(audit_record(&a, "run-end", NULL, NULL, "ok", NULL, &e), 0);
		audit_close(&a);
		assert_int_equal(verify_ck(files, 1, key, m, sizeof(m), rep), 0);
		assert_non_null(strstr(rep->notes.data, "audit.jsonl:2: checkpoint-reset (reason: "
		    "restored from backup; the checkpoint was not usable"));
		assert_non_null(strstr(rep->notes.data, "was interrupted"));
		buf_free(&rep->notes);
		free(rep);
	}
	free(b);
	secret_free(key);
}

static void
test_run_without_end(void **st)
{
	const char *files[1] = { path };
	struct audit_report *rep = calloc(1, sizeof(*rep));
	char m[1100];

	/* killed run, then the next: it records run-interrupted; verify notes it */
	unlink(path);
	ck_init();
	assert_int_equal(run_with_ckpt(NULL, "11111111111111111111111111111111", 1, 0, m, sizeof(m)), 0);
	assert_int_equal(verify_ck(files, 1, NULL, m, sizeof(m), rep), 0);
	assert_non_null(strstr(rep->notes.data, "audit.jsonl:1: run 1111"));
	assert_non_null(strstr(rep->notes.data, "has no run-end yet"));
	buf_free(&rep->notes);
	assert_int_equal(run_with_ckpt(NULL, "22222222222222222222222222222222", 1, 1, m, sizeof(m)), 0);
	assert_int_equal(verify_ck(files, 1, NULL, m, sizeof(m), rep), 0);
	assert_non_null(strstr(rep->notes.data, "was interrupted"));
	buf_free(&rep->notes);
	{
		size_t len;
		char *b = slurp(&len);
		assert_non_null(strstr(b, "\"action\":\"run-interrupted\""));
		assert_non_null(strstr(b, "\"about_run\":\"11111111111111111111111111111111\""));
		free(b);
	}
	/* a run-start with no end and nothing saying why before the next run-start:
	 * its tail was removed (the same run id keeps the agent from noticing) */
	unlink(path);
	ck_init();
	assert_int_equal(run_with_ckpt(NULL, "33333333333333333333333333333333", 1, 0, m, sizeof(m)), 0);
	assert_int_equal(run_with_ckpt(NULL, "33333333333333333333333333333333", 1, 1, m, sizeof(m)), 0);
	assert_int_equal(verify_ck(files, 1, NULL, m, sizeof(m), rep), DMK_ERR_VERIFY);
	buf_free(&rep->notes);
	assert_non_null(strstr(m, "audit.jsonl:1: run 3333"));
	assert_non_null(strstr(m, "has no run-end"));
	assert_non_null(strstr(m, "audit.jsonl:3"));
	free(rep);
}

static void
test_rotation(void **st)
{
	struct secret *key = secret_from_str("audit-key-0123456789");
	struct audit_report *rep = calloc(1, sizeof(*rep));
	char old[200], m[1100];
	const char *both[2] = { old, path }, *rev[2] = { path, old }, *one[1] = { path };
	size_t len;
	char *b;

	unlink(path);
	ck_init();
	snprintf(old, sizeof(old), "%s.1", path);
	assert_int_equal(run_with_ckpt(key, "11111111111111111111111111111111", 2, 1, m, sizeof(m)), 0);
	assert_int_equal(rename(path, old), 0);
	spit("", 0);                                /* logrotate create */
	assert_int_equal(verify_ck(both, 2, key, m, sizeof(m), rep), 0);
	buf_free(&rep->notes);
	assert_int_equal(run_with_ckpt(key, "22222222222222222222222222222222", 1, 1, m, sizeof(m)), 0);
	b = slurp(&len);
	assert_true(strncmp(b, "{\"seq\":5,", 9) == 0);
	assert_non_null(strstr(b, "\"action\":\"log-continues\""));
	free(b);
	assert_int_equal(verify_ck(both, 2, key, m, sizeof(m), rep), 0);
	assert_int_equal(rep->head_seq, 8);
	assert_true(rep->file[1].continues);
	assert_int_equal(rep->file[1].nrecords, 4);
	buf_free(&rep->notes);
	/* the new file alone: passes, saying it continues a file not given */
	assert_int_equal(verify_ck(one, 1, key, m, sizeof(m), rep), 0);
	assert_true(rep->file[0].continues);
	assert_non_null(strstr(rep->notes.data, "continues a previous log file at seq 5"));
	buf_free(&rep->notes);
	/* the wrong order does not chain */
	assert_int_equal(verify_ck(rev, 2, key, m, sizeof(m), rep), DMK_ERR_VERIFY);
	buf_free(&rep->notes);
	assert_non_null(strstr(m, ".1:1: does not continue"));
	/* a continuation into a file whose previous file was cut: the chain breaks */
	cut_to_lines(0);
	spit("", 0);
	{
		size_t olen;
		FILE *f = fopen(old, "r");
		char *ob = calloc(1, 1 << 20), *p;
		olen = fread(ob, 1, (1 << 20) - 1, f);
		fclose(f);
		(void)olen;
		p = strchr(ob, '\n') + 1;
		f = fopen(old, "w");
		fwrite(ob, 1, (size_t)(p - ob), f);
		fclose(f);
		free(ob);
	}
	assert_int_equal(verify_ck(both, 2, key, m, sizeof(m), rep), DMK_ERR_VERIFY);
	buf_free(&rep->notes);
	assert_non_null(strstr(m, "missing at the end"));
	unlink(old);
	free(rep);
	secret_free(key);
}

static void
test_rotation_mid_run(void **st)
{
	struct audit_report *rep = calloc(1, sizeof(*rep));
	char old[200], m[1100];
	const char *both[2] = { old, path };
	struct audit a;
	struct dmk_err e;
	size_t len;
	char *b;

	/* logrotate renames the log while a run is writing: the run goes on in the new file */
	unlink(path);
	ck_init();
	snprintf(old, sizeof(old), "%s.1", path);
	assert_int_equal(audit_open(&a, path, NULL, "55555555555555555555555555555555", &e), 0);
	assert_int_equal(audit_use_checkpoint(&a, ckpath, &e), 0);
	assert_int_equal(audit_record(&a, "run-start", NULL, NULL, "x", NULL, &e), 0);
	assert_int_equal(rename(path, old), 0);
	spit("", 0);
	assert_int_equal(audit_record(&a, "register", NULL, NULL, "ok", NULL, &e), 0);
	assert_int_equal(audit_record(&a, "run-end", NULL, NULL, "ok", NULL, &e), 0);
	audit_close(&a);
	b = slurp(&len);
	assert_true(strncmp(b, "{\"seq\":2,", 9) == 0);
	assert_null(strstr(b, "run-interrupted"));
	free(b);
	assert_int_equal(verify_ck(both, 2, NULL, m, sizeof(m), rep), 0);
	assert_int_equal(rep->head_seq, 4);
	assert_null(strstr(rep->notes.data ? rep->notes.data : "", "no run-end"));
	buf_free(&rep->notes);
	unlink(old);
	free(rep);
}

static char anchored[4096];
static int anchor_fail;

static int
anchor_cb(void *ctx, const char *text, struct dmk_err *err)
{
	(void)ctx;
	if (anchor_fail)
		return dmk_errf(err, DMK_ERR_UNREACHABLE, "store unreachable");
	snprintf(anchored, sizeof(anchored), "%s", text);
	return 0;
}

static void
test_anchor(void **st)
{
	struct secret *key = secret_from_str("audit-key-0123456789");
	struct audit a;
	struct dmk_err e;
	struct audit_ckpt anc, local;
	char saved[4096], m[1100];
	size_t len;
	int found;
	FILE *f;
	char *b;

	unlink(path);
	ck_init();
	anchored[0] = '\0';
	anchor_fail = 0;
	assert_int_equal(audit_open(&a, path, key, "11111111111111111111111111111111", &e), 0);
	assert_int_equal(audit_use_checkpoint(&a, ckpath, &e), 0);
	a.anchor = anchor_cb;
	assert_int_equal(audit_record(&a, "run-start", NULL, NULL, "x", NULL, &e), 0);
	/* the anchor holds what the checkpoint holds */
	f = fopen(ckpath, "r");
	len = fread(saved, 1, sizeof(saved) - 1, f);
	saved[len] = '\0';
	fclose(f);
	assert_string_equal(anchored, saved);
	/* a failing store does not stop the append; the failure is audited next time */
	anchor_fail = 1;
	assert_int_equal(audit_record(&a, "register", NULL, NULL, "ok", NULL, &e), 0);
	anchor_fail = 0;
	assert_int_equal(audit_record(&a, "register", NULL, NULL, "ok", NULL, &e), 0);
	assert_int_equal(audit_record(&a, "run-end", NULL, NULL, "ok", NULL, &e), 0);
	audit_close(&a);
	b = slurp(&len);
	assert_non_null(strstr(b, "\"action\":\"audit-anchor\",\"target\":{\"ag\":null,\"replica\":null,"
	    "\"database\":null},\"keys\":{},\"outcome\":\"failed\",\"error\":\"store unreachable\""));
	free(b);
	assert_int_equal(audit_ckpt_parse(anchored, strlen(anchored), key, "anchor", &anc, &e), 0);
	assert_int_equal(anc.seq, 5);
	/* cut the log and roll the local checkpoint back with it: the anchor catches it */
	assert_int_equal(audit_ckpt_read(ckpath, key, &local, &found, &e), 0);
	cut_to_lines(1);
	f = fopen(ckpath, "w");
	fputs(saved, f);                            /* the MAC'd checkpoint of seq 1 */
	fclose(f);
	assert_int_equal(audit_open(&a, path, key, "22222222222222222222222222222222", &e), 0);
	assert_int_equal(audit_use_checkpoint(&a, ckpath, &e), 0);
	a.anchor = anchor_cb;
	a.expect = anc;
	a.has_expect = 1;
	assert_int_equal(audit_record(&a, "run-start", NULL, NULL, "x", NULL, &e), DMK_ERR_VERIFY);
	snprintf(m, sizeof(m), "%s", e.msg);
	assert_non_null(strstr(m, "the audit anchor says seq 5"));
	audit_close(&a);
	secret_free(key);
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
		cmocka_unit_test(test_cut_then_extend),
		cmocka_unit_test(test_empty_with_checkpoint),
		cmocka_unit_test(test_macs_without_key),
		cmocka_unit_test(test_checkpoint_forged),
		cmocka_unit_test(test_run_without_end),
		cmocka_unit_test(test_rotation),
		cmocka_unit_test(test_rotation_mid_run),
		cmocka_unit_test(test_anchor),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
