/* result.c: reading result sets from db-lib and decoding their values, every
 * length checked against its type before it is used (session_int.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "core/dmk.h"
#include "core/buf.h"
#include "core/secret.h"
#include "relay.h"
#include "session_int.h"

const struct sql_value *
sql_cell(const struct sql_result *r, size_t row, const char *col)
{
	size_t c;

	if (r == NULL || row >= r->nrows)
		return NULL;
	for (c = 0; c < r->ncols; c++)
		if (strcasecmp(r->cols[c], col) == 0)
			return &r->cells[row * r->ncols + c];
	return NULL;
}

void
sql_result_free(struct sql_result *r)
{
	size_t i;

	if (r == NULL)
		return;
	for (i = 0; i < r->ncols; i++)
		free(r->cols[i]);
	free(r->cols);
	for (i = 0; i < r->ncols * r->nrows; i++) {
		if (r->cells[i].s) {
			OPENSSL_cleanse(r->cells[i].s, r->cells[i].len);
			free(r->cells[i].s);
		}
		if (r->cells[i].bin) {
			OPENSSL_cleanse(r->cells[i].bin, r->cells[i].len);
			free(r->cells[i].bin);
		}
	}
	free(r->cells);
	free(r);
}

static char *
dup_n(const void *p, size_t n)
{
	char *s = malloc(n + 1);

	if (s == NULL)
		return NULL;
	if (n)
		memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

static int
set_str(struct sql_value *v, const char *p, size_t n)
{
	v->type = SQLT_STR;
	v->len = n;
	return (v->s = dup_n(p, n)) == NULL ? DMK_ERR_NOMEM : 0;
}

/*
 * Decoding a value the server sent.  db-lib hands us its type and length
 * (dbdatlen); FreeTDS took the length from the wire, so it is checked
 * against what the type allows before a byte is copied: fixed-size types
 * must have exactly their size, a GUID 16 bytes, a string no NUL in it.
 */
int
sql_cell_decode(int t, const unsigned char *data, long len, struct sql_value *v,
    const char **why)
{
	char tmp[40];
	long k;

	memset(v, 0, sizeof(*v));
	*why = NULL;
	if (data == NULL || len < 0)
		return 0;   /* NULL */
	switch (t) {
	case SYBINT1: case SYBBIT: case SYBBITN:
		if (len != 1)
			goto badlen;
		v->type = SQLT_INT;
		v->i = t == SYBINT1 ? data[0] : data[0] != 0;
		return 0;
	case SYBINT2: case SYBINT4: case SYBINT8: case SYBINTN:
		if ((t == SYBINT2 && len != 2) || (t == SYBINT4 && len != 4) ||
		    (t == SYBINT8 && len != 8) ||
		    (t == SYBINTN && len != 1 && len != 2 && len != 4 && len != 8))
			goto badlen;
		/* the host's order, as db-lib stores it; INT1 is unsigned */
		v->type = SQLT_INT;
		if (len == 1)
			v->i = data[0];
		else if (len == 2) {
			int16_t x;
			memcpy(&x, data, 2);
			v->i = x;
		} else if (len == 4) {
			int32_t x;
			memcpy(&x, data, 4);
			v->i = x;
		} else {
			int64_t x;
			memcpy(&x, data, 8);
			v->i = x;
		}
		return 0;
	case SYBBINARY: case SYBVARBINARY: case SYBIMAGE:
		v->type = SQLT_BIN;
		v->len = (size_t)len;
		return (v->bin = (unsigned char *)dup_n(data, (size_t)len)) == NULL ?
		    DMK_ERR_NOMEM : 0;
	case SYBCHAR: case SYBVARCHAR: case SYBTEXT: case SYBNVARCHAR: case SYBNTEXT:
		/* FreeTDS has converted it to the client charset, UTF-8.  Callers
		 * read it as a C string: a NUL inside would cut it silently. */
		for (k = 0; k < len; k++)
			if (data[k] == '\0') {
				*why = "a string with a NUL character in it";
				return DMK_ERR_PROTOCOL;
			}
		return set_str(v, (const char *)data, (size_t)len);
	case SYB_UNIQUE:
		if (len != 16)
			goto badlen;
		/* Data1..3 little-endian on the wire, Data4 bytes in order. */
		snprintf(tmp, sizeof(tmp), "%02X%02X%02X%02X-%02X%02X-%02X%02X-"
		    "%02X%02X-%02X%02X%02X%02X%02X%02X", data[3], data[2], data[1], data[0],
		    data[5], data[4], data[7], data[6], data[8], data[9], data[10], data[11],
		    data[12], data[13], data[14], data[15]);
		return set_str(v, tmp, strlen(tmp));
	}
	return 1;   /* not ours: db-lib converts it */
badlen:
	*why = "a value whose length does not fit its type";
	return DMK_ERR_PROTOCOL;
}

static int
read_cell(DBPROCESS *d, int c, struct sql_value *v, const char **why)
{
	int t = dbcoltype(d, c), rc;
	BYTE *data = dbdata(d, c);
	DBINT len = dbdatlen(d, c);
	char tmp[128];
	DBDATEREC2 dr;
	DBINT n;

	if ((rc = sql_cell_decode(t, data, (long)len, v, why)) <= 0)
		return rc;
	switch (t) {
	case SYBDATETIME: case SYBDATETIME4: case SYBDATETIMN:
		/* DATETIMN is DATETIME4 or DATETIME by its length */
		if (len != 4 && len != 8)
			break;
		if ((t == SYBDATETIME && len != 8) || (t == SYBDATETIME4 && len != 4))
			break;
		if (t == SYBDATETIMN)
			t = len == 4 ? SYBDATETIME4 : SYBDATETIME;
		/* FALLTHROUGH */
	case SYBMSDATETIME2: case SYBMSDATE: case SYBMSDATETIMEOFFSET:
		/* db-lib keeps the MS types in a structure of its own making. */
		if (len == 0 || dbanydatecrack(d, &dr, t, data) != SUCCEED)
			break;
		snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d", (int)dr.dateyear,
		    (int)dr.datemonth + 1, (int)dr.datedmonth, (int)dr.datehour,
		    (int)dr.dateminute, (int)dr.datesecond);
		return set_str(v, tmp, strlen(tmp));
	default:
		n = dbconvert(d, t, data, len, SYBCHAR, (BYTE *)tmp, sizeof(tmp) - 1);
		if (n < 0 || (size_t)n >= sizeof(tmp))
			return set_str(v, "", 0);
		tmp[n] = '\0';
		return set_str(v, tmp, strlen(tmp));
	}
	*why = "a date whose length does not fit its type";
	return DMK_ERR_PROTOCOL;
}

/*
 * After read_set() failed.  Out of memory: cancel the rest as usual.  A
 * value we refused or a result over the limits: the server is not to be
 * trusted to end what it sends or to acknowledge a cancel, so the relay
 * cuts the connection (FreeTDS then sees it closed) and the session is
 * not used again.
 */
static void
drop_or_cancel(struct sql_session *s)
{
	if (s->bad_code == 0) {
		dbcancel(s->dbproc);
		return;
	}
	relay_abort(s->relay);
	s->dead = 1;
}

/* Read the current result set into a new struct sql_result. */
static int
read_set(struct sql_session *s, struct sql_result **out, int *fetch_failed)
{
	DBPROCESS *d = s->dbproc;
	struct sql_result *r;
	struct sql_value *cells;
	size_t cap = 0, i, bytes = 0;
	int ncols = dbnumcols(d), c, rr, rc = 0, k;
	const char *nm, *why = NULL;

	if (ncols <= 0 || (size_t)ncols > SQL_RESULT_MAX_COLS) {
		snprintf(s->bad_value, sizeof(s->bad_value), "a result with %d columns", ncols);
		return DMK_ERR_PROTOCOL;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return DMK_ERR_NOMEM;
	r->ncols = (size_t)ncols;
	if ((r->cols = calloc((size_t)ncols, sizeof(char *))) == NULL) {
		free(r);
		return DMK_ERR_NOMEM;
	}
	for (c = 0; c < ncols; c++) {
		nm = dbcolname(d, c + 1);
		if ((r->cols[c] = dup_n(nm ? nm : "", nm ? strlen(nm) : 0)) == NULL) {
			rc = DMK_ERR_NOMEM;
			goto out;
		}
	}
	while ((rr = dbnextrow(d)) != NO_MORE_ROWS) {
		if (rr == FAIL) {
			*fetch_failed = 1;
			break;
		}
		if (rr != REG_ROW)
			continue;   /* COMPUTE rows: none from our queries */
		if (rc == DMK_ERR_NOMEM)
			continue;   /* drain after a failure */
		if (rc != 0)
			break;      /* not after a bad value: the rest may never end */
		if (r->nrows >= SQL_RESULT_MAX_CELLS / r->ncols) {
			snprintf(s->bad_value, sizeof(s->bad_value), "a result of more than %zu rows",
			    r->nrows);
			rc = DMK_ERR_TOOBIG;
			continue;
		}
		if ((r->nrows + 1) * r->ncols > cap) {
			size_t ncap = cap ? cap * 2 : (size_t)ncols * 16;

			if ((cells = realloc(r->cells, ncap * sizeof(*cells))) == NULL) {
				rc = DMK_ERR_NOMEM;
				continue;
			}
			r->cells = cells;
			cap = ncap;
		}
		for (c = 0; c < ncols; c++) {
			i = r->nrows * r->ncols + (size_t)c;
			if ((k = read_cell(d, c + 1, &r->cells[i], &why)) != 0 && rc == 0) {
				rc = k;
				if (k != DMK_ERR_NOMEM)
					snprintf(s->bad_value, sizeof(s->bad_value), "column %.128s: %s "
					    "(type %d, %ld bytes)", r->cols[c], why ? why : "bad value",
					    dbcoltype(d, c + 1), (long)dbdatlen(d, c + 1));
			}
			bytes += r->cells[i].len;
		}
		r->nrows++;   /* cells of a failed row are freed with the result */
		if (rc == 0 && bytes > SQL_RESULT_MAX_BYTES) {
			snprintf(s->bad_value, sizeof(s->bad_value), "a result larger than %d MiB",
			    SQL_RESULT_MAX_BYTES >> 20);
			rc = DMK_ERR_TOOBIG;
		}
	}
out:
	if (rc != 0) {
		if (rc != DMK_ERR_NOMEM)
			s->bad_code = rc;
		sql_result_free(r);
		return rc;
	}
	*out = r;
	return 0;
}

/*
 * After the request was sent: process every result, keep the first set
 * that has columns, drain the rest.  Returns 0 or a negative code; the
 * failure detail is in the session (first error, db-lib error).
 */
int
sess_collect(struct sql_session *s, struct sql_result **res, int *retstatus)
{
	DBPROCESS *d = s->dbproc;
	struct sql_result *got = NULL;
	int rc, failed = 0, r;

	if (dbsqlok(d) == FAIL) {
		failed = 1;
		goto done;
	}
	while ((rc = dbresults(d)) != NO_MORE_RESULTS) {
		if (rc == FAIL) {
			failed = 1;
			break;
		}
		if (dbnumcols(d) > 0 && res != NULL && got == NULL) {
			if ((r = read_set(s, &got, &failed)) != 0) {
				drop_or_cancel(s);
				return r;
			}
		} else {
			while ((r = dbnextrow(d)) != NO_MORE_ROWS)
				if (r == FAIL) {
					failed = 1;
					break;
				}
		}
		if (retstatus != NULL && dbhasretstat(d))
			*retstatus = dbretstatus(d);
		if (s->dead)
			break;
	}
done:
	if (retstatus != NULL && !s->dead && dbhasretstat(d))
		*retstatus = dbretstatus(d);
	if (failed && !s->dead)
		dbcancel(d);
	if (failed || s->first.number != 0 || s->dead) {
		sql_result_free(got);
		return DMK_ERR_SQL;
	}
	if (res != NULL)
		*res = got;
	else
		sql_result_free(got);
	return 0;
}


/*
 * Like sess_collect(), for a batch of independent statements: keep every result
 * set, in order.  Statement errors are not fatal here (the caller reads
 * sql_call_errors()); only a failed connection is.
 */
int
sess_collect_all(struct sql_session *s, struct sql_result ***sets, size_t *nsets)
{
	DBPROCESS *d = s->dbproc;
	struct sql_result *got, **v;
	int rc, r, failed = 0;

	*sets = NULL;
	*nsets = 0;
	if (dbsqlok(d) == FAIL && s->dead)
		return DMK_ERR_SQL;
	while ((rc = dbresults(d)) != NO_MORE_RESULTS) {
		if (rc == FAIL) {
			if (s->dead)
				break;
			continue;   /* a statement failed; the batch goes on */
		}
		if (dbnumcols(d) > 0) {
			got = NULL;
			if ((r = read_set(s, &got, &failed)) != 0) {
				drop_or_cancel(s);
				return r;
			}
			if ((v = realloc(*sets, (*nsets + 1) * sizeof(*v))) == NULL) {
				sql_result_free(got);
				dbcancel(d);
				return DMK_ERR_NOMEM;
			}
			*sets = v;
			v[(*nsets)++] = got;
		} else
			while ((r = dbnextrow(d)) != NO_MORE_ROWS)
				if (r == FAIL)
					break;
		if (s->dead)
			break;
	}
	return s->dead ? DMK_ERR_SQL : 0;
}

size_t
sql_call_errors(const struct sql_session *s, int *nums, size_t max)
{
	size_t i;

	for (i = 0; i < s->nerrnos && i < max && i < SQL_CALL_ERRORS_MAX; i++)
		nums[i] = s->errnos[i];
	return s->nerrnos;
}

void
sql_sets_free(struct sql_result **sets, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		sql_result_free(sets[i]);
	free(sets);
}
