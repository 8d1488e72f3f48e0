/* Unit tests: the escrow helpers of dmkagent backup (agent/escrow.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/dmk.h"
#include "core/buf.h"
#include "agent/config.h"
#include "agent/backup.h"

static void
b64_roundtrip(const char *in, size_t n, const char *want)
{
	struct buf b;
	unsigned char *out = NULL;
	size_t len = 0;

	buf_init(&b, 0);
	assert_int_equal(escrow_b64_encode((const unsigned char *)in, n, &b), 0);
	assert_int_equal(b.len, strlen(want));
	assert_memory_equal(b.data ? b.data : "", want, strlen(want));
	assert_int_equal(escrow_b64_decode(b.data ? b.data : "", b.len, &out, &len), 0);
	assert_int_equal(len, n);
	if (n > 0)
		assert_memory_equal(out, in, n);
	free(out);
	buf_free(&b);
}

static void
test_b64_rfc4648(void **st)
{
	/* RFC 4648, section 10 */
	b64_roundtrip("", 0, "");
	b64_roundtrip("f", 1, "Zg==");
	b64_roundtrip("fo", 2, "Zm8=");
	b64_roundtrip("foo", 3, "Zm9v");
	b64_roundtrip("foob", 4, "Zm9vYg==");
	b64_roundtrip("fooba", 5, "Zm9vYmE=");
	b64_roundtrip("foobar", 6, "Zm9vYmFy");
	b64_roundtrip("\xff\xfe\x00\x01\x80", 5, "//4AAYA=");
}

static void
test_b64_all_bytes(void **st)
{
	unsigned char in[256], *out = NULL;
	struct buf b;
	size_t i, len;

	for (i = 0; i < sizeof(in); i++)
		in[i] = (unsigned char)i;
	for (i = 0; i <= sizeof(in); i++) {
		buf_init(&b, 0);
		assert_int_equal(escrow_b64_encode(in, i, &b), 0);
		assert_int_equal(escrow_b64_decode(b.data ? b.data : "", b.len, &out, &len), 0);
		assert_int_equal(len, i);
		if (i)
			assert_memory_equal(out, in, i);
		free(out);
		buf_free(&b);
	}
}

static void
test_b64_rejects(void **st)
{
	static const char *const bad[] = { "Zg=", "Z===", "Zg==Zg==", "Zm9v\n", "Zm 9",
	    "Zm9=v", "Zm9*", "=Zm9" };
	unsigned char *out = (unsigned char *)1;
	size_t i, len = 7;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(escrow_b64_decode(bad[i], strlen(bad[i]), &out, &len),
		    DMK_ERR_BADINPUT);
		assert_null(out);
		assert_int_equal(len, 0);
	}
}

static void
test_slug(void **st)
{
	char s[64];

	escrow_slug("BitLockerManagement_CERT", 40, s, sizeof(s));
	assert_string_equal(s, "bitlockermanagement-cert");
	escrow_slug("  a]]b''c  ", 40, s, sizeof(s));
	assert_string_equal(s, "a-b-c");
	escrow_slug("Zertifikat für Schlüssel", 40, s, sizeof(s));
	assert_string_equal(s, "zertifikat-f-r-schl-ssel");
	escrow_slug("]]]", 40, s, sizeof(s));
	assert_string_equal(s, "");
	escrow_slug("abcdefghij", 4, s, sizeof(s));
	assert_string_equal(s, "abcd");
	escrow_slug("abc-", 4, s, sizeof(s));
	assert_string_equal(s, "abc");
	escrow_slug("SQLNODE1", 40, s, sizeof(s));
	assert_string_equal(s, "sqlnode1");
}

static int
azure_name(const char *s)
{
	size_t i, n = strlen(s);

	if (n < 1 || n > 127)
		return 0;
	for (i = 0; i < n; i++)
		if (!(s[i] >= '0' && s[i] <= '9') && !(s[i] >= 'a' && s[i] <= 'z') &&
		    !(s[i] >= 'A' && s[i] <= 'Z') && s[i] != '-')
			return 0;
	return 1;
}

static void
test_ref_vault(void **st)
{
	struct secret_ref base, out;
	struct dmk_err err;

	assert_int_equal(ref_parse("hcv:sql/ag1/cm_p01/dmk#password", &base, &err), 0);
	assert_int_equal(escrow_ref(&base, "dmk", NULL, &out, &err), 0);
	assert_string_equal(out.text, "hcv:sql/ag1/cm_p01/dmk-backup-dmk#password");
	assert_string_equal(out.store, "hcv");
	assert_string_equal(out.field, "password");
	/* sha256("BitLockerManagement_CERT")[:4] = 7b5465ae */
	assert_int_equal(escrow_ref(&base, "cert", "BitLockerManagement_CERT", &out, &err), 0);
	assert_string_equal(out.path,
	    "sql/ag1/cm_p01/dmk-backup-cert-bitlockermanagement-cert-7b5465ae");
	assert_int_equal(escrow_ref(&base, "password-cert", NULL, &out, &err), 0);
	assert_string_equal(out.path, "sql/ag1/cm_p01/dmk-backup-password-cert");
}

static void
test_ref_azure(void **st)
{
	struct secret_ref base, a, b;
	struct dmk_err err;
	char longname[128];

	assert_int_equal(ref_parse("akv:ag1-cm-p01-dmk", &base, &err), 0);
	assert_int_equal(escrow_ref(&base, "cert", "BitLockerManagement_CERT", &a, &err), 0);
	assert_string_equal(a.text, "akv:ag1-cm-p01-dmk-backup-cert-bitlockermanagement-cert-7b5465ae");
	assert_true(azure_name(a.path));
	assert_string_equal(a.field, "");
	/* names that differ only in case or punctuation stay apart */
	assert_int_equal(escrow_ref(&base, "cert", "bitlockermanagement cert", &b, &err), 0);
	assert_string_not_equal(a.path, b.path);
	/* a name with nothing readable in it: only the hash */
	assert_int_equal(escrow_ref(&base, "cert", "]]]", &b, &err), 0);
	assert_true(azure_name(b.path));
	assert_int_equal(strlen(b.path), strlen("ag1-cm-p01-dmk-backup-cert-") + 8);
	/* a long base: the slug shrinks so the name stays within 127 characters */
	memset(longname, 'x', 100);
	memcpy(longname, "akv:", 4);
	longname[100] = '\0';
	assert_int_equal(ref_parse(longname, &base, &err), 0);
	assert_int_equal(escrow_ref(&base, "cert", "A very long certificate name indeed, "
	    "longer than anything", &b, &err), 0);
	assert_true(azure_name(b.path));
	assert_true(strlen(b.path) <= 127);
	assert_int_equal(escrow_ref(&base, "smk", "SQLNODE1", &b, &err), 0);
	assert_true(azure_name(b.path));
}

static void
test_ref_refuses_files(void **st)
{
	struct secret_ref base, out;
	struct dmk_err err;

	assert_int_equal(ref_parse("file:/etc/dmkagent/dmk", &base, &err), 0);
	assert_int_equal(escrow_ref(&base, "dmk", NULL, &out, &err), DMK_ERR_CONFIG);
	assert_non_null(strstr(err.msg, "not a store reference"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_b64_rfc4648),
		cmocka_unit_test(test_b64_all_bytes),
		cmocka_unit_test(test_b64_rejects),
		cmocka_unit_test(test_slug),
		cmocka_unit_test(test_ref_vault),
		cmocka_unit_test(test_ref_azure),
		cmocka_unit_test(test_ref_refuses_files),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
