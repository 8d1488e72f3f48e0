/*
 * calls.c: the statements the agent runs against a replica: registering a
 * DMK password (sp_control_dbmasterkey_password, as an RPC), probing a
 * password (OPEN MASTER KEY), switching database, and reading the key
 * facts of one database.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "sql_int.h"

#define DMK_KEY_NAME "##MS_DatabaseMasterKey##"

int
sql_use(struct sql_session *s, const char *db, struct dmk_err *err)
{
	struct sql_stmt *st = sql_stmt_new();
	int rc;

	sql_stmt_raw(st, "USE ");
	if ((rc = sql_stmt_ident(st, db, err)) != 0) {
		sql_stmt_free(st);
		return rc;
	}
	sql_session_perm_hint(s, "the login needs a user in this database (or a server "
	    "permission that grants access to it)");
	rc = sql_exec_once(s, st, NULL, NULL, err);
	sql_session_perm_hint(s, NULL);
	return rc;
}

int
sql_dmk_password(struct sql_session *s, const char *db, const struct secret *pw,
    const char *action, struct dmk_err *err)
{
	struct sql_param p[3];
	int rc, ret = 0;

	if (!sql_valid_name(db))
		return dmk_errf(err, DMK_ERR_BADINPUT, "bad database name");
	if (action == NULL || (strcmp(action, "add") != 0 && strcmp(action, "drop") != 0))
		return dmk_errf(err, DMK_ERR_BADINPUT, "sp_control_dbmasterkey_password: action "
		    "must be add or drop");
	if (pw == NULL || secret_len(pw) == 0)
		return dmk_errf(err, DMK_ERR_BADINPUT, "empty DMK password");
	memset(p, 0, sizeof(p));
	p[0].name = "@db_name";
	p[0].type = SQLP_NVARCHAR;
	p[0].str = db;
	p[1].name = "@password";
	p[1].type = SQLP_NVARCHAR;
	p[1].secret = pw;
	p[2].name = "@action";
	p[2].type = SQLP_NVARCHAR;
	p[2].str = action;
	sql_session_perm_hint(s, "sp_control_dbmasterkey_password needs CONTROL on the "
	    "database; grant it to the agent's login, e.g. as db_owner");
	rc = sql_rpc(s, "sp_control_dbmasterkey_password", p, 3, &ret, err);
	sql_session_perm_hint(s, NULL);
	if (rc == 0 && ret != 0)
		rc = dmk_errf(err, DMK_ERR_SQL, "%s: sp_control_dbmasterkey_password returned %d "
		    "without an error message", sql_session_name(s), ret);
	return rc;
}

int
sql_dmk_probe(struct sql_session *s, const char *db, const struct secret *pw,
    struct dmk_err *err)
{
	struct sql_result *res = NULL;
	const struct sql_value *v;
	struct sql_stmt *st = NULL;
	int rc, n;

	if ((rc = sql_use(s, db, err)) != 0)
		return rc;
	if ((rc = sql_query(s, "SELECT COUNT(*) AS n FROM sys.symmetric_keys "
	    "WHERE name = N'" DMK_KEY_NAME "'", &res, err)) != 0)
		return rc;
	v = sql_cell(res, 0, "n");
	n = v && v->type == SQLT_INT ? (int)v->i : -1;
	sql_result_free(res);
	if (n == 0)
		return dmk_errf(err, DMK_ERR_NOTFOUND, "%s: database [%s] has no database master key",
		    sql_session_name(s), db);

	st = sql_stmt_new();
	sql_stmt_raw(st, "OPEN MASTER KEY DECRYPTION BY PASSWORD = ");
	sql_stmt_secret(st, pw, err);
	sql_stmt_raw(st, "; CLOSE MASTER KEY;");
	if ((rc = sql_stmt_error(st, err)) != 0)
		goto out;
	sql_session_perm_hint(s, "OPEN MASTER KEY needs CONTROL on the database");
	rc = sql_exec(s, st, NULL, err);
	sql_session_perm_hint(s, NULL);
	if (rc == DMK_ERR_SQL) {
		switch (sql_last_error(s)->number) {
		case 15313:
			rc = dmk_errf(err, DMK_ERR_WRONGPASS, "%s: the password does not open the "
			    "database master key of [%s] (Msg 15313)", sql_session_name(s), db);
			break;
		case 15581:
			rc = dmk_errf(err, DMK_ERR_NOTFOUND, "%s: database [%s] has no database master "
			    "key (Msg 15581)", sql_session_name(s), db);
			break;
		}
	}
out:
	sql_stmt_free(st);
	return rc;
}

static int
cell_int(const struct sql_result *r, size_t row, const char *col, long long *out)
{
	const struct sql_value *v = sql_cell(r, row, col);

	if (v == NULL || v->type != SQLT_INT)
		return -1;
	*out = v->i;
	return 0;
}

static void
cell_str(const struct sql_result *r, size_t row, const char *col, char *out, size_t len)
{
	const struct sql_value *v = sql_cell(r, row, col);

	out[0] = '\0';
	if (v != NULL && v->type == SQLT_STR)
		util_strlcpy(out, v->s, len);
}

int
sql_db_keys(struct sql_session *s, const char *db, struct sql_dbkeys *out, struct dmk_err *err)
{
	struct sql_result *res = NULL;
	struct sql_stmt *st = NULL;
	struct dmk_err e2 = { 0 };
	long long dbid = 0, keyid = 0, v;
	size_t i;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!sql_valid_name(db))
		return dmk_errf(err, DMK_ERR_BADINPUT, "bad database name");

	/* sys.databases: the database and whether the SMK protects its DMK. */
	st = sql_stmt_new();
	sql_stmt_raw(st, "SELECT database_id, is_master_key_encrypted_by_server "
	    "FROM sys.databases WHERE name = ");
	if ((rc = sql_stmt_nstr(st, db, err)) != 0)
		goto out;
	sql_session_perm_hint(s, "reading key facts needs VIEW ANY DEFINITION");
	if ((rc = sql_exec(s, st, &res, err)) != 0)
		goto out;
	if (res->nrows == 0) {
		rc = dmk_errf(err, DMK_ERR_NOTFOUND, "%s: no database [%s]", sql_session_name(s), db);
		goto out;
	}
	if (cell_int(res, 0, "database_id", &dbid) != 0) {
		rc = dmk_errf(err, DMK_ERR_PROTOCOL, "%s: sys.databases gave no database_id",
		    sql_session_name(s));
		goto out;
	}
	if (cell_int(res, 0, "is_master_key_encrypted_by_server", &v) == 0)
		out->dmk_by_smk = v != 0;
	sql_result_free(res);
	res = NULL;
	sql_stmt_free(st);

	/* family_guid: what sys.master_key_passwords is keyed on. */
	st = sql_stmt_new();
	sql_stmt_raw(st, "SELECT family_guid FROM sys.database_recovery_status "
	    "WHERE database_id = ");
	sql_stmt_int(st, dbid);
	if ((rc = sql_exec(s, st, &res, err)) != 0)
		goto out;
	if (res->nrows > 0)
		cell_str(res, 0, "family_guid", out->family_guid, sizeof(out->family_guid));
	sql_result_free(res);
	res = NULL;

	/* The DMK itself, through a three-part name: no USE needed. */
	out->readable = 1;
	sql_stmt_free(st);
	st = sql_stmt_new();
	sql_stmt_raw(st, "SELECT symmetric_key_id, key_guid FROM ");
	sql_stmt_ident(st, db, &e2);
	sql_stmt_raw(st, ".sys.symmetric_keys WHERE name = N'" DMK_KEY_NAME "'");
	rc = sql_exec(s, st, &res, &e2);
	if (rc != 0) {
		int n = sql_last_error(s)->number;

		if (rc == DMK_ERR_SQL && (n == 976 || n == 978 || n == 979 || n == 983 || n == 942 || n == 952)) {
			out->readable = 0;   /* a secondary that does not allow reads */
			rc = 0;
		} else {
			*err = e2;
			goto out;
		}
	} else {
		if (res->nrows > 0) {
			cell_str(res, 0, "key_guid", out->dmk_key_guid, sizeof(out->dmk_key_guid));
			(void)cell_int(res, 0, "symmetric_key_id", &keyid);
		}
		sql_result_free(res);
		res = NULL;
	}

	if (out->readable && out->dmk_key_guid[0] != '\0') {
		sql_stmt_free(st);
		st = sql_stmt_new();
		sql_stmt_raw(st, "SELECT COUNT(*) AS n FROM ");
		sql_stmt_ident(st, db, err);
		sql_stmt_raw(st, ".sys.key_encryptions WHERE key_id = ");
		sql_stmt_int(st, keyid);
		sql_stmt_raw(st, " AND crypt_type_desc LIKE N'ENCRYPTION BY PASSWORD%'");
		if ((rc = sql_exec(s, st, &res, err)) != 0)
			goto out;
		if (cell_int(res, 0, "n", &v) == 0)
			out->npassword_encryptions = (int)v;
		sql_result_free(res);
		res = NULL;
	}

	/* Credentials for this family: names only, never a secret. */
	if (out->family_guid[0] != '\0') {
		sql_stmt_free(st);
		st = sql_stmt_new();
		sql_stmt_raw(st, "SELECT c.name AS name FROM sys.master_key_passwords AS m "
		    "JOIN sys.credentials AS c ON c.credential_id = m.credential_id "
		    "WHERE m.family_guid = ");
		sql_stmt_nstr(st, out->family_guid, err);
		sql_stmt_raw(st, " ORDER BY c.name");
		if ((rc = sql_stmt_error(st, err)) != 0)
			goto out;
		sql_session_perm_hint(s, "reading sys.credentials needs VIEW ANY DEFINITION or "
		    "ALTER ANY CREDENTIAL");
		if ((rc = sql_exec(s, st, &res, err)) != 0)
			goto out;
		out->ncredentials = (int)res->nrows;
		for (i = 0; i < res->nrows && i < 8; i++)
			cell_str(res, i, "name", out->credential_names[i],
			    sizeof(out->credential_names[i]));
	}
	rc = 0;
out:
	sql_session_perm_hint(s, NULL);
	sql_result_free(res);
	sql_stmt_free(st);
	return rc;
}

/* A set with SQL_CREDENTIALS_QUERY's columns. */
static int
is_credentials(const struct sql_result *r)
{
	return r != NULL && r->ncols == 2 && strcmp(r->cols[0], "family_guid") == 0 &&
	    strcmp(r->cols[1], "name") == 0;
}

int
sql_dmk_password_many(struct sql_session *s, const char *const *dbs,
    const struct secret *const *pws, size_t n, const char *action, int *ambiguous,
    int *n_expected, struct sql_result **after, struct dmk_err *err)
{
	struct sql_result **sets = NULL;
	size_t nsets = 0;
	struct sql_param p[3 + 2 * SQL_DMK_MANY_MAX];
	char names[2 * SQL_DMK_MANY_MAX][16];
	struct sql_stmt *text = NULL, *decl = NULL;
	int errs[SQL_CALL_ERRORS_MAX], expect, r = 0;
	size_t i, k = 0, ne;

	*ambiguous = 0;
	*n_expected = 0;
	if (after != NULL)
		*after = NULL;
	if (n == 0 || n > SQL_DMK_MANY_MAX)
		return dmk_errf(err, DMK_ERR_BADINPUT, "bad number of databases");
	if (strcmp(action, "add") != 0 && strcmp(action, "drop") != 0)
		return dmk_errf(err, DMK_ERR_BADINPUT, "action must be add or drop");
	expect = action[0] == 'a' ? 15594 : 15595;
	if ((text = sql_stmt_new()) == NULL || (decl = sql_stmt_new()) == NULL) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	memset(p, 0, sizeof(p));
	p[k].name = "@stmt";
	p[k++].type = SQLP_NVARCHAR;
	p[k].name = "@params";
	p[k++].type = SQLP_NVARCHAR;
	/*
	 * Positional arguments, one @a for the action and the procedure's name
	 * in @s (EXEC @module_name_var) keep each statement short: @stmt and
	 * @params travel as nvarchar(4000) (db-lib's limit), and the chunk size
	 * is what fits (the declarations: 28 bytes a database at 3 digits).
	 */
	sql_stmt_raw(decl, "@a nvarchar(8)");
	sql_stmt_raw(text, "DECLARE @s sysname = N'sp_control_dbmasterkey_password';\n");
	for (i = 0; i < n; i++) {
		if (!sql_valid_name(dbs[i])) {
			r = dmk_errf(err, DMK_ERR_BADINPUT, "bad database name");
			goto out;
		}
		snprintf(names[2 * i], sizeof(names[0]), "@d%zu", i);
		snprintf(names[2 * i + 1], sizeof(names[0]), "@p%zu", i);
		/* Parameter names (@d<i>, @p<i>) and keywords only: the values
		 * travel as parameters. */
		sql_stmt_raw(text, "EXEC @s @d");
		sql_stmt_int(text, (long long)i);
		sql_stmt_raw(text, ",@p");
		sql_stmt_int(text, (long long)i);
		sql_stmt_raw(text, ",@a;\n");
		sql_stmt_raw(decl, ",@d");
		sql_stmt_int(decl, (long long)i);
		sql_stmt_raw(decl, " sysname,@p");
		sql_stmt_int(decl, (long long)i);
		sql_stmt_raw(decl, " sysname");
		p[k].name = names[2 * i];
		p[k].type = SQLP_NVARCHAR;
		p[k++].str = dbs[i];
		p[k].name = names[2 * i + 1];
		p[k].type = SQLP_NVARCHAR;
		p[k++].secret = pws[i];
	}
	p[k].name = "@a";
	p[k].type = SQLP_NVARCHAR;
	p[k++].str = action;
	if (after != NULL)
		sql_stmt_raw(text, SQL_CREDENTIALS_QUERY ";\n");
	if ((r = sql_stmt_error(text, NULL)) != 0 || (r = sql_stmt_error(decl, NULL)) != 0) {
		r = dmk_errf(err, r == DMK_ERR_NOMEM ? r : DMK_ERR_INTERNAL, "cannot build the request");
		goto out;
	}
	p[0].str = sql_stmt_text(text);
	p[1].str = sql_stmt_text(decl);
	if (after != NULL) {
		r = sql_rpc_sets(s, "sp_executesql", p, k, &sets, &nsets, err);
		/* the credentials are the last set, and only if that statement ran */
		if (r == 0 && nsets > 0 && is_credentials(sets[nsets - 1])) {
			*after = sets[nsets - 1];
			sets[nsets - 1] = NULL;
		}
		sql_sets_free(sets, nsets);
	} else
		r = sql_rpc(s, "sp_executesql", p, k, NULL, err);
	ne = sql_call_errors(s, errs, SQL_CALL_ERRORS_MAX);
	for (i = 0; i < ne && i < SQL_CALL_ERRORS_MAX; i++) {
		if (errs[i] == expect)
			(*n_expected)++;
		else
			*ambiguous = 1;
	}
	if (ne > SQL_CALL_ERRORS_MAX || ne > n)
		*ambiguous = 1;
	if (r == DMK_ERR_SQL && ne > 0)
		r = 0;   /* statement errors: the caller reads the credentials */
out:
	sql_stmt_free(text);
	sql_stmt_free(decl);
	return r;
}
