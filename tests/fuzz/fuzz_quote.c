/*
 * fuzz_quote.c: arbitrary bytes through the quoting helpers.  Whatever the
 * input, a quoted identifier is [..] with every ] doubled and nothing else
 * changed, a literal is N'..' with every ' doubled, and refusals leave no
 * runnable statement.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "sql/sql.h"
#include "sql/sql_int.h"

static void
check_quoted(const char *in, const char *q, char open, char close, char dbl, size_t prefix)
{
	size_t i = prefix, j = 0, n = strlen(q);

	if (n < prefix + 1 || q[n - 1] != close || q[prefix - 1] != open)
		abort();
	while (i < n - 1) {
		if (q[i] == dbl) {
			if (q[i + 1] != dbl || in[j] != dbl)
				abort();
			i += 2;
		} else {
			if (q[i] != in[j])
				abort();
			i++;
		}
		j++;
	}
	if (in[j] != '\0')
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s, out[1200];
	struct dmk_err err;
	struct sql_stmt *st;
	struct secret *sec;
	const char *t;

	if (size > 2048)
		return 0;
	if ((s = malloc(size + 1)) == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';

	if (sql_quote_ident(s, out, sizeof(out), &err) == 0) {
		if (!sql_valid_name(s))
			abort();
		check_quoted(s, out, '[', ']', ']', 1);
	} else if (sql_valid_name(s) && strlen(s) * 2 + 3 <= sizeof(out)) {
		abort();
	}

	st = sql_stmt_new();
	if (st != NULL) {
		if (sql_stmt_nstr(st, s, &err) == 0) {
			t = sql_stmt_text(st);
			if (t == NULL || t[0] != 'N')
				abort();
			check_quoted(s, t, '\'', '\'', '\'', 2);
		} else if (sql_stmt_text(st) != NULL) {
			abort();
		}
		sql_stmt_free(st);
	}

	st = sql_stmt_new();
	sec = secret_from(data, size);
	if (st != NULL && sec != NULL) {
		if (sql_stmt_secret(st, sec, &err) == 0) {
			if (!sql_stmt_has_secret(st) || memchr(data, 0, size) != NULL)
				abort();
		} else {
			if (sql_stmt_text(st) != NULL || (size > 0 &&
			    secret_occurs_in(sec, err.msg, strlen(err.msg)) && size > 3))
				abort();
		}
	}
	sql_stmt_free(st);
	secret_free(sec);
	free(s);
	return 0;
}
