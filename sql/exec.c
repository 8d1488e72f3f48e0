/* exec.c: running batches and RPCs on a session (session_int.h). */
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

/* A new call: its errors start afresh; the text sent, and db-lib's command
 * buffer (which may hold a password literal) emptied at once. */
static int
send_batch(struct sql_session *s, const char *text, struct dmk_err *err)
{
	s->first.number = 0;
	s->nerrnos = 0;
	s->dberr = 0;
	s->dberr_text[0] = '\0';
	if (dbcmd(s->dbproc, text) == FAIL || dbsqlsend(s->dbproc) == FAIL) {
		dbfreebuf(s->dbproc);
		return sess_error(s, err);
	}
	dbfreebuf(s->dbproc);
	return 0;
}

int
sql_exec_sets(struct sql_session *s, const struct sql_stmt *st, struct sql_result ***sets,
    size_t *nsets, struct dmk_err *err)
{
	const char *text = sql_stmt_text(st);
	size_t i;
	int rc;

	*sets = NULL;
	*nsets = 0;
	if ((rc = sql_stmt_error(st, err)) != 0)
		return rc;   /* the first failed builder call's error */
	if (text == NULL || *text == '\0')
		return dmk_errf(err, DMK_ERR_INTERNAL, "incomplete SQL statement");
	if ((rc = sess_usable(s, err)) != 0)
		return rc;
	if (!sql_stmt_has_secret(st))
		return sess_enc_fused(s, text, sets, nsets, err);
	if ((rc = sess_enc_gate(s, err)) != 0)
		return rc;
	if ((rc = send_batch(s, text, err)) != 0)
		return rc;
	if ((rc = sess_collect_all(s, sets, nsets)) != 0) {
		for (i = 0; i < *nsets; i++)
			sql_result_free((*sets)[i]);
		free(*sets);
		*sets = NULL;
		*nsets = 0;
		return rc == DMK_ERR_NOMEM ? dmk_errf(err, rc, "out of memory") : sess_error(s, err);
	}
	return 0;
}

int
sess_usable(struct sql_session *s, struct dmk_err *err)
{
	if (s == NULL || s->dbproc == NULL)
		return dmk_errf(err, DMK_ERR_INTERNAL, "no session");
	if (s->enc_refused[0])
		return dmk_errf(err, DMK_ERR_TLS, "%s; refusing to use it", s->enc_refused);
	if (s->bad_code != 0)
		return dmk_errf(err, DMK_ERR_PROTOCOL, "%s: the server sent %s earlier; refusing "
		    "to use the session", s->name, s->bad_value);
	if (s->dead || dbdead(s->dbproc))
		return dmk_errf(err, s->timed_out ? DMK_ERR_TIMEOUT : DMK_ERR_UNREACHABLE,
		    "%s: the connection is closed", s->name);
	return 0;
}

int
sess_run_batch(struct sql_session *s, const char *text, struct sql_result **res, struct dmk_err *err)
{
	int rc;

	if (res != NULL)
		*res = NULL;
	if ((rc = sess_usable(s, err)) != 0)
		return rc;
	if ((rc = send_batch(s, text, err)) != 0)
		return rc;
	if (sess_collect(s, res, NULL) != 0)
		return sess_error(s, err);
	return 0;
}

int
sql_exec(struct sql_session *s, const struct sql_stmt *st, struct sql_result **res,
    struct dmk_err *err)
{
	const char *text = sql_stmt_text(st);

	int rc;

	if ((rc = sql_stmt_error(st, err)) != 0)
		return rc;   /* the first failed builder call's error */
	if (text == NULL || *text == '\0')
		return dmk_errf(err, DMK_ERR_INTERNAL, "incomplete SQL statement");
	if ((rc = sess_usable(s, err)) != 0 || (rc = sess_enc_gate(s, err)) != 0)
		return rc;
	return sess_run_batch(s, text, res, err);
}

int
sql_query(struct sql_session *s, const char *fixed_sql, struct sql_result **res,
    struct dmk_err *err)
{
	struct sql_result **sets = NULL;
	size_t n = 0, i;
	int rc;

	if (fixed_sql == NULL || *fixed_sql == '\0')
		return dmk_errf(err, DMK_ERR_INTERNAL, "empty SQL query");
	if ((rc = sess_usable(s, err)) != 0)
		return rc;
	if (!s->enc_unchecked)
		return sess_run_batch(s, fixed_sql, res, err);
	/* The session's first call: the encryption check rides along. */
	if (res != NULL)
		*res = NULL;
	if ((rc = sess_enc_fused(s, fixed_sql, &sets, &n, err)) != 0)
		return rc;
	if (s->first.number != 0) {
		sql_sets_free(sets, n);
		return sess_error(s, err);
	}
	for (i = 0; i < n; i++)
		if (i == 0 && res != NULL)
			*res = sets[0];
		else
			sql_result_free(sets[i]);
	free(sets);
	return 0;
}

/* ---- RPC ---- */

static int
rpc_call(struct sql_session *s, const char *proc, const struct sql_param *p, size_t n,
    int *retstatus, struct sql_result ***sets, size_t *nsets, struct dmk_err *err)
{
	DBBIGINT i8;
	DBINT i4;
	size_t k, len;
	const char *str;
	int rc, ret = 0;
	/* Integer values must stay put until dbrpcsend(). */
	DBBIGINT *ints = NULL;

	if ((rc = sess_usable(s, err)) != 0 || (rc = sess_enc_gate(s, err)) != 0)
		return rc;
	s->first.number = 0;
	s->nerrnos = 0;
	s->dberr = 0;
	s->dberr_text[0] = '\0';
	if (proc == NULL || !sql_valid_name(proc))
		return dmk_errf(err, DMK_ERR_BADINPUT, "bad procedure name");
	if (n > 0 && (ints = calloc(n, sizeof(*ints))) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	if (dbrpcinit(s->dbproc, proc, 0) == FAIL) {
		rc = sess_error(s, err);
		goto out;
	}
	for (k = 0; k < n; k++) {
		const struct sql_param *q = &p[k];
		int ok;

		if (q->name == NULL || q->name[0] != '@' || !sql_valid_name(q->name)) {
			rc = dmk_errf(err, DMK_ERR_BADINPUT, "bad parameter name for %s", proc);
			goto cancel;
		}
		switch (q->type) {
		case SQLP_NVARCHAR:
			str = q->secret ? secret_reveal(q->secret) : q->str;
			len = q->secret ? secret_len(q->secret) : (str ? strlen(str) : 0);
			if (q->is_null || str == NULL) {
				ok = dbrpcparam(s->dbproc, q->name, 0, SYBVARCHAR, -1, 0, NULL);
				break;
			}
			if (len == 0 || len > RPC_STR_MAX || sql_utf16_units(str, len) < 0) {
				/* db-lib sends a zero length as NULL, and more than 4000
				 * bytes not as NVARCHAR: refuse rather than change the value. */
				rc = dmk_errf(err, DMK_ERR_BADINPUT, "parameter %s of %s: %s", q->name,
				    proc, len == 0 ? "empty strings cannot be sent" :
				    len > RPC_STR_MAX ? "longer than 4000 bytes" :
				    "not valid UTF-8");
				goto cancel;
			}
			ok = dbrpcparam(s->dbproc, q->name, 0, SYBVARCHAR, -1, (DBINT)len,
			    (BYTE *)str);
			break;
		case SQLP_INT:
			if (q->is_null) {
				ok = dbrpcparam(s->dbproc, q->name, 0, SYBINTN, -1, 0, NULL);
				break;
			}
			if (q->i >= INT32_MIN && q->i <= INT32_MAX) {
				i4 = (DBINT)q->i;
				memcpy(&ints[k], &i4, sizeof(i4));
				ok = dbrpcparam(s->dbproc, q->name, 0, SYBINT4, -1, -1, (BYTE *)&ints[k]);
			} else {
				i8 = q->i;
				ints[k] = i8;
				ok = dbrpcparam(s->dbproc, q->name, 0, SYBINT8, -1, -1, (BYTE *)&ints[k]);
			}
			break;
		case SQLP_VARBINARY:
			if (q->is_null || q->bin == NULL) {
				ok = dbrpcparam(s->dbproc, q->name, 0, SYBVARBINARY, -1, 0, NULL);
				break;
			}
			if (q->len == 0 || q->len > 8000) {
				rc = dmk_errf(err, DMK_ERR_BADINPUT, "parameter %s of %s: binary length %zu "
				    "not supported", q->name, proc, q->len);
				goto cancel;
			}
			ok = dbrpcparam(s->dbproc, q->name, 0, SYBVARBINARY, -1, (DBINT)q->len,
			    (BYTE *)q->bin);
			break;
		default:
			rc = dmk_errf(err, DMK_ERR_INTERNAL, "bad parameter type");
			goto cancel;
		}
		if (ok == FAIL) {
			rc = sess_error(s, err);
			goto cancel;
		}
	}
	if (dbrpcsend(s->dbproc) == FAIL) {
		rc = sess_error(s, err);
		goto out;
	}
	if (sets != NULL) {
		/* every result set; statement errors are the caller's to read */
		if ((rc = sess_collect_all(s, sets, nsets)) != 0) {
			sql_sets_free(*sets, *nsets);
			*sets = NULL;
			*nsets = 0;
			rc = rc == DMK_ERR_NOMEM ? dmk_errf(err, rc, "out of memory") :
			    sess_error(s, err);
			goto out;
		}
		if (s->first.number != 0)
			(void)sess_error(s, err);
	} else if (sess_collect(s, NULL, &ret) != 0) {
		rc = sess_error(s, err);
		goto out;
	}
	if (retstatus != NULL)
		*retstatus = ret;
	rc = 0;
	goto out;
cancel:
	dbrpcinit(s->dbproc, "", DBRPCRESET);   /* drop the parameters we queued */
out:
	if (ints != NULL) {
		OPENSSL_cleanse(ints, n * sizeof(*ints));
		free(ints);
	}
	return rc;
}

int
sql_rpc(struct sql_session *s, const char *proc, const struct sql_param *p, size_t n,
    int *retstatus, struct dmk_err *err)
{
	return rpc_call(s, proc, p, n, retstatus, NULL, NULL, err);
}

int
sql_rpc_sets(struct sql_session *s, const char *proc, const struct sql_param *p, size_t n,
    struct sql_result ***sets, size_t *nsets, struct dmk_err *err)
{
	*sets = NULL;
	*nsets = 0;
	return rpc_call(s, proc, p, n, NULL, sets, nsets, err);
}
