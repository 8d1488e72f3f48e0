/* test_quote.c: the T-SQL quoting helpers (sql/quote.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "sql/sql.h"
#include "sql/sql_int.h"

static char *
rep(const char *unit, int n)
{
	size_t u = strlen(unit);
	char *s = malloc(u * (size_t)n + 1);
	int i;

	for (i = 0; i < n; i++)
		memcpy(s + u * (size_t)i, unit, u);
	s[u * (size_t)n] = '\0';
	return s;
}

static void
quote_ok(const char *name, const char *want)
{
	char out[1200];
	struct dmk_err err = { 0 };

	assert_int_equal(sql_quote_ident(name, out, sizeof(out), &err), 0);
	assert_string_equal(out, want);
}

static void
quote_bad(const char *name)
{
	char out[1200];
	struct dmk_err err = { 0 };

	assert_int_equal(sql_quote_ident(name, out, sizeof(out), &err), DMK_ERR_BADINPUT);
	assert_int_equal(err.code, DMK_ERR_BADINPUT);
	assert_true(err.msg[0] != '\0');
}

static void
test_ident_basic(void **state)
{
	(void)state;
	quote_ok("CM_P01", "[CM_P01]");
	quote_ok("a]b", "[a]]b]");
	quote_ok("]]", "[]]]]]");
	quote_ok("]", "[]]]");
	quote_ok("[x", "[[x]");
	quote_ok("it's", "[it's]");
	quote_ok("with space", "[with space]");
	quote_ok("Db\xc3\xa9\xe6\x97\xa5\xe6\x9c\xac", "[Db\xc3\xa9\xe6\x97\xa5\xe6\x9c\xac]");
	quote_ok("x; DROP DATABASE y --", "[x; DROP DATABASE y --]");
}

static void
test_ident_length(void **state)
{
	char *s;

	(void)state;
	s = rep("a", 128);
	assert_true(sql_valid_name(s));
	free(s);
	s = rep("a", 129);
	assert_false(sql_valid_name(s));
	quote_bad(s);
	free(s);
	/* 128 two-byte characters are 128 characters, not 256. */
	s = rep("\xc3\xa9", 128);
	assert_true(sql_valid_name(s));
	free(s);
	s = rep("\xc3\xa9", 129);
	assert_false(sql_valid_name(s));
	free(s);
	/* Outside the BMP a character is two UTF-16 units, as in nvarchar(128). */
	s = rep("\xf0\x9f\x98\x80", 64);
	assert_true(sql_valid_name(s));
	free(s);
	s = rep("\xf0\x9f\x98\x80", 65);
	assert_false(sql_valid_name(s));
	free(s);
	/* 128 brackets: valid, and the quoted form doubles each. */
	s = rep("]", 128);
	{
		char out[300];
		struct dmk_err err = { 0 };

		assert_int_equal(sql_quote_ident(s, out, sizeof(out), &err), 0);
		assert_int_equal(strlen(out), 258);
		/* Too small an output buffer is refused, not truncated. */
		assert_int_equal(sql_quote_ident(s, out, 100, &err), DMK_ERR_TOOBIG);
		assert_string_equal(out, "");
	}
	free(s);
}

static void
test_ident_invalid(void **state)
{
	(void)state;
	quote_bad("");
	quote_bad("\xff");
	quote_bad("a\xc3");               /* truncated sequence */
	quote_bad("\xc0\xaf");            /* overlong '/' */
	quote_bad("\xed\xa0\x80");        /* surrogate */
	quote_bad("\xf4\x90\x80\x80");    /* above U+10FFFF */
	assert_false(sql_valid_name(NULL));
	quote_bad(NULL);
}

static void
test_stmt_ident(void **state)
{
	struct sql_stmt *st = sql_stmt_new();
	struct dmk_err err = { 0 };

	(void)state;
	assert_non_null(st);
	assert_int_equal(sql_stmt_raw(st, "USE "), 0);
	assert_int_equal(sql_stmt_ident(st, "we]ird 'db'", &err), 0);
	assert_string_equal(sql_stmt_text(st), "USE [we]]ird 'db']");
	assert_false(sql_stmt_has_secret(st));
	sql_stmt_free(st);

	/* A refused name poisons the statement: it cannot be run half-built. */
	st = sql_stmt_new();
	assert_int_equal(sql_stmt_raw(st, "USE "), 0);
	assert_int_equal(sql_stmt_ident(st, "", &err), DMK_ERR_BADINPUT);
	assert_null(sql_stmt_text(st));
	sql_stmt_free(st);
}

static void
test_stmt_nstr(void **state)
{
	struct sql_stmt *st = sql_stmt_new();
	struct dmk_err err = { 0 };

	(void)state;
	assert_int_equal(sql_stmt_raw(st, "SELECT "), 0);
	assert_int_equal(sql_stmt_nstr(st, "O'Brien ''x'' \xc3\xa9", &err), 0);
	assert_string_equal(sql_stmt_text(st), "SELECT N'O''Brien ''''x'''' \xc3\xa9'");
	sql_stmt_free(st);

	st = sql_stmt_new();
	assert_int_equal(sql_stmt_nstr(st, "", &err), 0);
	assert_string_equal(sql_stmt_text(st), "N''");
	sql_stmt_free(st);

	st = sql_stmt_new();
	assert_int_equal(sql_stmt_nstr(st, "bad\xff", &err), DMK_ERR_BADINPUT);
	assert_null(sql_stmt_text(st));
	sql_stmt_free(st);
}

static void
test_stmt_secret(void **state)
{
	struct sql_stmt *st = sql_stmt_new();
	struct secret *pw = secret_from_str("p'w]\"\xc3\xa9--;");
	struct secret *nul = secret_from("a\0b", 3);
	struct secret *bad = secret_from_str("\xc3");
	struct dmk_err err = { 0 };

	(void)state;
	assert_int_equal(sql_stmt_raw(st, "OPEN MASTER KEY DECRYPTION BY PASSWORD = "), 0);
	assert_false(sql_stmt_has_secret(st));
	assert_int_equal(sql_stmt_secret(st, pw, &err), 0);
	assert_true(sql_stmt_has_secret(st));
	assert_string_equal(sql_stmt_text(st),
	    "OPEN MASTER KEY DECRYPTION BY PASSWORD = N'p''w]\"\xc3\xa9--;'");
	sql_stmt_free(st);

	/* Refusals never put the secret into the message. */
	st = sql_stmt_new();
	assert_int_equal(sql_stmt_secret(st, nul, &err), DMK_ERR_BADINPUT);
	assert_true(sql_stmt_has_secret(st));
	assert_null(sql_stmt_text(st));
	assert_false(secret_occurs_in(nul, err.msg, strlen(err.msg)));
	sql_stmt_free(st);

	st = sql_stmt_new();
	assert_int_equal(sql_stmt_secret(st, bad, &err), DMK_ERR_BADINPUT);
	sql_stmt_free(st);

	st = sql_stmt_new();
	secret_clear(pw);
	assert_int_equal(sql_stmt_secret(st, pw, &err), DMK_ERR_BADINPUT);
	sql_stmt_free(st);

	secret_free(pw);
	secret_free(nul);
	secret_free(bad);
}

static void
test_stmt_numbers(void **state)
{
	struct sql_stmt *st = sql_stmt_new();
	static const unsigned char b[] = { 0x00, 0xab, 0xff };

	(void)state;
	assert_int_equal(sql_stmt_raw(st, "SELECT "), 0);
	assert_int_equal(sql_stmt_int(st, 42), 0);
	assert_int_equal(sql_stmt_raw(st, ", "), 0);
	assert_int_equal(sql_stmt_int(st, -7), 0);
	assert_int_equal(sql_stmt_raw(st, ", "), 0);
	assert_int_equal(sql_stmt_bin(st, b, sizeof(b)), 0);
	assert_string_equal(sql_stmt_text(st), "SELECT 42, (-7), 0x00ABFF");
	sql_stmt_free(st);
}

/*
 * The builder's error is sticky: after the first failing call every later
 * call appends nothing and returns that error, with the first message, so
 * that a caller may chain calls and check once.
 */
static void
test_stmt_sticky(void **state)
{
	struct sql_stmt *st = sql_stmt_new();
	struct secret *pw = secret_from_str("pw");
	static const unsigned char b[] = { 1 };
	struct dmk_err err = { 0 }, first, later = { 0 };

	(void)state;
	assert_int_equal(sql_stmt_raw(st, "USE "), 0);
	assert_int_equal(sql_stmt_error(st, &err), 0);
	assert_int_equal(sql_stmt_ident(st, "bad\xff", &err), DMK_ERR_BADINPUT);
	first = err;
	assert_true(first.msg[0] != '\0');
	/* every builder now returns the same error and leaves the text alone */
	assert_int_equal(sql_stmt_raw(st, "; SELECT 1"), DMK_ERR_BADINPUT);
	assert_int_equal(sql_stmt_ident(st, "good", &later), DMK_ERR_BADINPUT);
	assert_int_equal(later.code, DMK_ERR_BADINPUT);
	assert_string_equal(later.msg, first.msg);
	memset(&later, 0, sizeof(later));
	assert_int_equal(sql_stmt_nstr(st, "good", &later), DMK_ERR_BADINPUT);
	assert_string_equal(later.msg, first.msg);
	assert_int_equal(sql_stmt_secret(st, pw, &later), DMK_ERR_BADINPUT);
	assert_int_equal(sql_stmt_int(st, 7), DMK_ERR_BADINPUT);
	assert_int_equal(sql_stmt_bin(st, b, sizeof(b)), DMK_ERR_BADINPUT);
	assert_null(sql_stmt_text(st));
	memset(&later, 0, sizeof(later));
	assert_int_equal(sql_stmt_error(st, &later), DMK_ERR_BADINPUT);
	assert_string_equal(later.msg, first.msg);
	/* a failed statement cannot be run: sql_exec reports the first error
	 * before it touches the session */
	memset(&later, 0, sizeof(later));
	assert_int_equal(sql_exec(NULL, st, NULL, &later), DMK_ERR_BADINPUT);
	assert_string_equal(later.msg, first.msg);
	sql_stmt_free(st);

	/* chained without checks, checked once */
	st = sql_stmt_new();
	memset(&err, 0, sizeof(err));
	sql_stmt_raw(st, "USE ");
	sql_stmt_ident(st, "db", &err);
	sql_stmt_raw(st, "; SELECT ");
	sql_stmt_nstr(st, "x", &err);
	assert_int_equal(sql_stmt_error(st, &err), 0);
	assert_string_equal(sql_stmt_text(st), "USE [db]; SELECT N'x'");
	sql_stmt_free(st);

	/* no statement at all (sql_stmt_new failed): out of memory throughout */
	memset(&err, 0, sizeof(err));
	assert_int_equal(sql_stmt_raw(NULL, "USE "), DMK_ERR_NOMEM);
	assert_int_equal(sql_stmt_ident(NULL, "db", &err), DMK_ERR_NOMEM);
	assert_int_equal(err.code, DMK_ERR_NOMEM);
	assert_int_equal(sql_stmt_error(NULL, &err), DMK_ERR_NOMEM);
	secret_free(pw);
}

static void
test_replica_address(void **state)
{
	struct sql_replica r;
	char host[256];
	int port = 0;

	(void)state;
	memset(&r, 0, sizeof(r));
	strcpy(r.name, "SQLNODE2");
	strcpy(r.routing_url, "TCP://sqlnode2.corp.example:41002");
	assert_int_equal(sql_replica_address(&r, host, sizeof(host), &port), 0);
	assert_string_equal(host, "sqlnode2.corp.example");
	assert_int_equal(port, 41002);

	strcpy(r.routing_url, "tcp://[::1]:1500");
	assert_int_equal(sql_replica_address(&r, host, sizeof(host), &port), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(port, 1500);

	strcpy(r.routing_url, "TCP://host:notaport");
	assert_true(sql_replica_address(&r, host, sizeof(host), &port) < 0);

	r.routing_url[0] = '\0';
	strcpy(r.name, "SQLNODE3\\INST1");
	assert_int_equal(sql_replica_address(&r, host, sizeof(host), &port), 0);
	assert_string_equal(host, "SQLNODE3");
	assert_int_equal(port, 1433);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ident_basic),
		cmocka_unit_test(test_ident_length),
		cmocka_unit_test(test_ident_invalid),
		cmocka_unit_test(test_stmt_ident),
		cmocka_unit_test(test_stmt_nstr),
		cmocka_unit_test(test_stmt_secret),
		cmocka_unit_test(test_stmt_numbers),
		cmocka_unit_test(test_stmt_sticky),
		cmocka_unit_test(test_replica_address),
	};

	return cmocka_run_group_tests_name("sql_quote", tests, NULL, NULL);
}
