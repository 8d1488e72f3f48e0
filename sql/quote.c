/*
 * quote.c: the one door for T-SQL text.  Statements are built only from
 * fixed text written by us (sql_stmt_raw) and values that pass through a
 * quoting helper: identifiers as QUOTENAME does it ([..] with ]] doubling),
 * string literals as N'..' with '' doubling.  The text lives in a struct
 * secret, so a statement that carries a password literal is wiped when it
 * is freed, and a statement that ever held a secret says so
 * (sql_stmt_has_secret) and is never logged.
 *
 * Names are sysname: nvarchar(128), so "128 characters" counts UTF-16 code
 * units as SQL Server does (a character outside the BMP counts twice).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "sql_int.h"

#define SQL_SYSNAME_MAX 128

/*
 * Invariant: once error is set (the first failing call), the text is
 * incomplete, never grows again, and first holds that call's message;
 * every later call returns error without appending (sticky error).
 */
struct sql_stmt {
	struct secret *text;
	int has_secret;
	int error;             /* 0, or the first failure's DMK_ERR_* */
	struct dmk_err first;  /* its message (never holds a value) */
};

long
sql_utf16_units(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s, *e = p + len;
	long units = 0;

	while (p < e) {
		unsigned c = *p, cp;
		size_t n, i;

		if (c == 0)
			return -1;
		if (c < 0x80) {
			p++;
			units++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) { n = 1; cp = c & 0x1f; }
		else if (c >= 0xe0 && c <= 0xef) { n = 2; cp = c & 0x0f; }
		else if (c >= 0xf0 && c <= 0xf4) { n = 3; cp = c & 0x07; }
		else return -1;
		if ((size_t)(e - p) <= n)
			return -1;
		for (i = 1; i <= n; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return -1;
			cp = (cp << 6) | (p[i] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return -1;
		units += cp >= 0x10000 ? 2 : 1;
		p += n + 1;
	}
	return units;
}

int
sql_valid_name(const char *name)
{
	long n;

	if (name == NULL)
		return 0;
	n = sql_utf16_units(name, strlen(name));
	return n >= 1 && n <= SQL_SYSNAME_MAX;
}

static int
name_error(const char *name, struct dmk_err *err)
{
	long n;

	if (name == NULL || *name == '\0')
		return dmk_errf(err, DMK_ERR_BADINPUT, "empty SQL name");
	n = sql_utf16_units(name, strlen(name));
	if (n < 0)
		return dmk_errf(err, DMK_ERR_BADINPUT, "SQL name is not valid UTF-8");
	return dmk_errf(err, DMK_ERR_BADINPUT,
	    "SQL name is %ld characters long; SQL Server allows at most %d", n, SQL_SYSNAME_MAX);
}

int
sql_quote_ident(const char *name, char *out, size_t outlen, struct dmk_err *err)
{
	size_t i, o = 0;

	if (!sql_valid_name(name))
		return name_error(name, err);
	if (outlen < 1)
		return dmk_errf(err, DMK_ERR_TOOBIG, "no room for the quoted name");
#define PUT(ch) do { if (o + 1 >= outlen) goto toobig; out[o++] = (ch); } while (0)
	PUT('[');
	for (i = 0; name[i] != '\0'; i++) {
		PUT(name[i]);
		if (name[i] == ']')
			PUT(']');
	}
	PUT(']');
#undef PUT
	out[o] = '\0';
	return 0;
toobig:
	out[0] = '\0';
	return dmk_errf(err, DMK_ERR_TOOBIG, "no room for the quoted name");
}

struct sql_stmt *
sql_stmt_new(void)
{
	struct sql_stmt *st;

	if ((st = calloc(1, sizeof(*st))) == NULL)
		return NULL;
	if ((st->text = secret_new()) == NULL) {
		free(st);
		return NULL;
	}
	return st;
}

void
sql_stmt_free(struct sql_stmt *st)
{
	if (st == NULL)
		return;
	secret_free(st->text);
	free(st);
}

const char *
sql_stmt_text(const struct sql_stmt *st)
{
	if (st == NULL || st->error)
		return NULL;
	return secret_reveal(st->text);
}

int
sql_stmt_has_secret(const struct sql_stmt *st)
{
	return st != NULL && st->has_secret;
}

int
sql_stmt_error(const struct sql_stmt *st, struct dmk_err *err)
{
	if (st == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	if (st->error != 0 && err != NULL)
		*err = st->first;
	return st->error;
}

/*
 * The gate of every builder: a statement that failed already (or none at
 * all) returns its first error again, message included, and is left as it
 * is.
 */
static int
stuck(const struct sql_stmt *st, struct dmk_err *err)
{
	if (st != NULL && st->error == 0)
		return 0;
	return sql_stmt_error(st, err);
}

/* Record the first failure; the text is incomplete from now on. */
static int
fail(struct sql_stmt *st, struct dmk_err *err, int code, const char *msg)
{
	st->error = code;
	dmk_errf(&st->first, code, "%s", msg);
	if (err != NULL)
		*err = st->first;
	return code;
}

static int
put(struct sql_stmt *st, const void *p, size_t n, struct dmk_err *err)
{
	int r;

	if (st->error != 0)
		return st->error;
	if ((r = secret_append(st->text, p, n)) != 0)
		return fail(st, err, r, r == DMK_ERR_NOMEM ? "cannot build SQL statement: out of "
		    "memory" : "cannot build SQL statement: it is too long");
	return 0;
}

int
sql_stmt_raw_(struct sql_stmt *st, const char *sql)
{
	int r;

	if ((r = stuck(st, NULL)) != 0)
		return r;
	return put(st, sql, strlen(sql), NULL);
}

int
sql_stmt_ident(struct sql_stmt *st, const char *name, struct dmk_err *err)
{
	struct dmk_err e;
	const char *p;
	int r;

	if ((r = stuck(st, err)) != 0)
		return r;
	if (!sql_valid_name(name)) {
		r = name_error(name, &e);
		return fail(st, err, r, e.msg);
	}
	if ((r = put(st, "[", 1, err)) != 0)
		return r;
	for (p = name; *p; p++)
		if ((r = put(st, p, 1, err)) != 0 || (*p == ']' && (r = put(st, "]", 1, err)) != 0))
			return r;
	return put(st, "]", 1, err);
}

/* N'..' around len bytes of UTF-8, doubling quotes. */
static int
put_nliteral(struct sql_stmt *st, const char *s, size_t len, const char *bad,
    struct dmk_err *err)
{
	size_t i, start;
	int r;

	if (memchr(s, '\0', len) != NULL || sql_utf16_units(s, len) < 0)
		return fail(st, err, DMK_ERR_BADINPUT, bad);
	if ((r = put(st, "N'", 2, err)) != 0)
		return r;
	for (i = start = 0; i < len; i++) {
		if (s[i] != '\'')
			continue;
		if ((r = put(st, s + start, i - start, err)) != 0 || (r = put(st, "''", 2, err)) != 0)
			return r;
		start = i + 1;
	}
	if ((r = put(st, s + start, len - start, err)) != 0)
		return r;
	return put(st, "'", 1, err);
}

int
sql_stmt_nstr(struct sql_stmt *st, const char *text, struct dmk_err *err)
{
	int r;

	if ((r = stuck(st, err)) != 0)
		return r;
	if (text == NULL)
		return fail(st, err, DMK_ERR_BADINPUT, "no text for a SQL literal");
	return put_nliteral(st, text, strlen(text), "text for a SQL literal is not valid UTF-8 "
	    "or holds a NUL", err);
}

int
sql_stmt_secret(struct sql_stmt *st, const struct secret *pw, struct dmk_err *err)
{
	int r;

	if ((r = stuck(st, err)) != 0)
		return r;
	/* Flag first: even a half-built statement may hold part of it. */
	st->has_secret = 1;
	if (pw == NULL || secret_len(pw) == 0)
		return fail(st, err, DMK_ERR_BADINPUT, "empty password for a SQL literal");
	return put_nliteral(st, secret_reveal(pw), secret_len(pw),
	    "the password is not valid UTF-8 or holds a NUL", err);
}

int
sql_stmt_bin(struct sql_stmt *st, const unsigned char *b, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	char pair[2];
	size_t i;
	int r;

	if ((r = stuck(st, NULL)) != 0 || (r = put(st, "0x", 2, NULL)) != 0)
		return r;
	for (i = 0; i < n; i++) {
		pair[0] = hex[b[i] >> 4];
		pair[1] = hex[b[i] & 15];
		if ((r = put(st, pair, 2, NULL)) != 0)
			return r;
	}
	return 0;
}

int
sql_stmt_int(struct sql_stmt *st, long long v)
{
	char tmp[32];
	int n, r;

	if ((r = stuck(st, NULL)) != 0)
		return r;
	n = snprintf(tmp, sizeof(tmp), "%lld", v);
	/* A negative number after "-" or "--" context must not form a comment. */
	if (v < 0) {
		(void)put(st, "(", 1, NULL);
		(void)put(st, tmp, (size_t)n, NULL);
		return put(st, ")", 1, NULL);
	}
	return put(st, tmp, (size_t)n, NULL);
}
