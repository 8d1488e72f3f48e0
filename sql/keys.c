/*
 * keys.c: the T-SQL about keys that the agent sends: database master keys
 * (proving, altering, opening, backing up, restoring), the certificates
 * under them, the service master key, the credentials that hold DMK
 * passwords, and the scratch databases of a restore test.  Each statement
 * is written once, here; the agent asks for it by name (sql.h), either as
 * a one-shot call or as a fragment it appends to a batch of its own.
 *
 * Every builder below chains quoting calls without checking each one: the
 * statement's error is sticky (quote.c), so the first failure is what
 * sql_stmt_error() and sql_exec() report.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "sql_int.h"

#define DMK_KEY_NAME "##MS_DatabaseMasterKey##"
#define SMK_KEY_NAME "##MS_ServiceMasterKey##"

int
sql_exec_once(struct sql_session *s, struct sql_stmt *st, const char *what,
    struct sql_result **res, struct dmk_err *err)
{
	int r;

	if (res != NULL)
		*res = NULL;
	if ((r = sql_stmt_error(st, err)) == 0 && (r = sql_exec(s, st, res, err)) != 0) {
		if (res != NULL) {
			sql_result_free(*res);
			*res = NULL;
		}
		if (what != NULL)
			dmk_err_prefix(err, "%s", what);
	}
	sql_stmt_free(st);
	return r;
}

/* ---- credentials ---- */

int
sql_credentials(struct sql_session *s, struct sql_result **out, struct dmk_err *err)
{
	return sql_query(s, SQL_CREDENTIALS_QUERY, out, err);
}

int
sql_add_credentials(struct sql_stmt *st, struct dmk_err *err)
{
	sql_stmt_raw(st, SQL_CREDENTIALS_QUERY ";\n");
	return sql_stmt_error(st, err);
}

/* ---- the facts of a database and its certificates ---- */

int
sql_add_db_list(struct sql_stmt *st, struct dmk_err *err)
{
	sql_stmt_raw(st, "SELECT d.name AS name, d.is_master_key_encrypted_by_server AS by_smk, "
	    "r.family_guid AS family_guid FROM sys.databases AS d JOIN "
	    "sys.database_recovery_status AS r ON r.database_id = d.database_id;\n");
	return sql_stmt_error(st, err);
}

int
sql_add_db_facts(struct sql_stmt *st, size_t i, const char *db, struct dmk_err *err)
{
	sql_stmt_raw(st, "SELECT ");
	sql_stmt_int(st, (long long)i);
	sql_stmt_raw(st, " AS i, key_guid AS key_guid FROM ");
	sql_stmt_ident(st, db, err);
	sql_stmt_raw(st, ".sys.symmetric_keys WHERE name = N'" DMK_KEY_NAME "';\nSELECT TOP 1 ");
	sql_stmt_int(st, (long long)i);
	sql_stmt_raw(st, " AS i, name AS cert FROM ");
	sql_stmt_ident(st, db, err);
	sql_stmt_raw(st, ".sys.certificates WHERE pvt_key_encryption_type = 'MK' "
	    "ORDER BY certificate_id;\n");
	return sql_stmt_error(st, err);
}

int
sql_find_dmk_cert(struct sql_session *s, const char *db, char *out, size_t outlen,
    struct dmk_err *err)
{
	struct sql_stmt *st = sql_stmt_new();
	struct sql_result *res = NULL;
	const struct sql_value *v;
	int r;

	sql_stmt_raw(st, "USE ");
	sql_stmt_ident(st, db, err);
	sql_stmt_raw(st, "; SELECT TOP 1 name FROM sys.certificates "
	    "WHERE pvt_key_encryption_type = 'MK' ORDER BY certificate_id");
	if ((r = sql_exec_once(s, st, NULL, &res, err)) == 0 && res != NULL && res->nrows > 0 &&
	    (v = sql_cell(res, 0, "name")) != NULL && v->type == SQLT_STR)
		util_strlcpy(out, v->s, outlen);
	sql_result_free(res);
	return r;
}

/*
 * DB_NAME() guards against a USE that failed (a secondary that does not
 * allow reads): the probe would otherwise run in the wrong database.
 */
int
sql_add_cert_probe(struct sql_stmt *st, size_t i, const char *db, const char *cert,
    struct dmk_err *err)
{
	sql_stmt_raw(st, "USE ");
	sql_stmt_ident(st, db, err);
	sql_stmt_raw(st, "; SELECT ");
	sql_stmt_int(st, (long long)i);
	sql_stmt_raw(st, " AS i, CASE WHEN DB_NAME() <> ");
	sql_stmt_nstr(st, db, err);
	sql_stmt_raw(st, " THEN -1 WHEN DECRYPTBYCERT(CERT_ID(");
	sql_stmt_nstr(st, cert, err);
	sql_stmt_raw(st, "), ENCRYPTBYCERT(CERT_ID(");
	sql_stmt_nstr(st, cert, err);
	sql_stmt_raw(st, "), N'dmkagent-probe')) IS NULL THEN 0 ELSE 1 END AS opened;\n");
	return sql_stmt_error(st, err);
}

int
sql_cert_probe(struct sql_session *s, const char *db, const char *cert, int *opened,
    struct dmk_err *err)
{
	struct sql_stmt *st = sql_stmt_new();
	struct sql_result *res = NULL;
	const struct sql_value *v;
	int r;

	*opened = -1;
	sql_add_cert_probe(st, 0, db, cert, err);
	if ((r = sql_exec_once(s, st, NULL, &res, err)) == 0 &&
	    (v = res ? sql_cell(res, 0, "opened") : NULL) != NULL && v->type == SQLT_INT)
		*opened = v->i < 0 ? -1 : v->i != 0;
	sql_result_free(res);
	return r;
}

/* ---- database master keys ---- */

int
sql_add_dmk_proof(struct sql_stmt *st, const char *db, const struct secret *pw,
    struct dmk_err *err)
{
	sql_stmt_raw(st, "USE ");
	sql_stmt_ident(st, db, err);
	sql_stmt_raw(st, "; OPEN MASTER KEY DECRYPTION BY PASSWORD = ");
	sql_stmt_secret(st, pw, err);
	sql_stmt_raw(st, "; CLOSE MASTER KEY;\n");
	return sql_stmt_error(st, err);
}

int
sql_add_alter_master_key(struct sql_stmt *st, const char *db, enum sql_mk_op op,
    const struct secret *pw, struct dmk_err *err)
{
	if (op != SQL_MK_ADD_PASSWORD && op != SQL_MK_DROP_PASSWORD)
		return dmk_errf(err, DMK_ERR_INTERNAL, "unknown master key change %d", (int)op);
	sql_stmt_raw(st, "USE ");
	sql_stmt_ident(st, db, err);
	if (op == SQL_MK_ADD_PASSWORD)
		sql_stmt_raw(st, "; ALTER MASTER KEY ADD ENCRYPTION BY PASSWORD = ");
	else
		sql_stmt_raw(st, "; ALTER MASTER KEY DROP ENCRYPTION BY PASSWORD = ");
	sql_stmt_secret(st, pw, err);
	sql_stmt_raw(st, ";\n");
	return sql_stmt_error(st, err);
}

int
sql_alter_master_key(struct sql_session *s, const char *db, enum sql_mk_op op,
    const struct secret *pw, int *num, struct dmk_err *err)
{
	struct sql_stmt *st;
	int r;

	*num = 0;
	if (op != SQL_MK_ADD_PASSWORD && op != SQL_MK_DROP_PASSWORD && op != SQL_MK_REGENERATE)
		return dmk_errf(err, DMK_ERR_INTERNAL, "unknown master key change %d", (int)op);
	st = sql_stmt_new();
	sql_stmt_raw(st, "USE ");
	sql_stmt_ident(st, db, err);
	sql_stmt_raw(st, "; ALTER MASTER KEY ");
	if (op == SQL_MK_ADD_PASSWORD)
		sql_stmt_raw(st, "ADD ENCRYPTION BY PASSWORD = ");
	else if (op == SQL_MK_DROP_PASSWORD)
		sql_stmt_raw(st, "DROP ENCRYPTION BY PASSWORD = ");
	else
		sql_stmt_raw(st, "REGENERATE WITH ENCRYPTION BY PASSWORD = ");
	sql_stmt_secret(st, pw, err);
	if ((r = sql_exec_once(s, st, NULL, NULL, err)) == DMK_ERR_SQL)
		*num = sql_last_error(s)->number;
	return r;
}

int
sql_dmk_open_facts(struct sql_session *s, const char *db, const struct secret *open_pw,
    struct sql_result **res, struct dmk_err *err)
{
	struct sql_stmt *st = sql_stmt_new();

	sql_stmt_raw(st, "USE ");
	sql_stmt_ident(st, db, err);
	sql_stmt_raw(st, ";\n");
	if (open_pw != NULL) {
		sql_stmt_raw(st, "OPEN MASTER KEY DECRYPTION BY PASSWORD = ");
		sql_stmt_secret(st, open_pw, err);
		sql_stmt_raw(st, ";\n");
	}
	sql_stmt_raw(st, "SELECT @@SERVERNAME AS node, key_guid AS dmk_key_guid "
	    "FROM sys.symmetric_keys WHERE name = N'" DMK_KEY_NAME "'");
	return sql_exec_once(s, st, NULL, res, err);
}

int
sql_close_master_key(struct sql_session *s, struct dmk_err *err)
{
	struct sql_stmt *st = sql_stmt_new();

	sql_stmt_raw(st, "CLOSE MASTER KEY");
	return sql_exec_once(s, st, NULL, NULL, err);
}

int
sql_dmk_certs(struct sql_session *s, const struct secret *certpw, struct sql_result **res,
    struct dmk_err *err)
{
	struct sql_stmt *st = sql_stmt_new();

	sql_stmt_raw(st, "SELECT name AS name, thumbprint AS thumbprint, "
	    "CERTENCODED(certificate_id) AS der, CERTPRIVATEKEY(certificate_id, ");
	sql_stmt_secret(st, certpw, err);
	sql_stmt_raw(st, ") AS pvk FROM sys.certificates WHERE pvt_key_encryption_type = "
	    "'MK' ORDER BY certificate_id");
	return sql_exec_once(s, st, NULL, res, err);
}

int
sql_dmk_backup(struct sql_session *s, const char *file, const struct secret *pw,
    int close_key, struct sql_result **res, struct dmk_err *err)
{
	struct sql_stmt *st = sql_stmt_new();

	sql_stmt_raw(st, "BACKUP MASTER KEY TO FILE = ");
	sql_stmt_nstr(st, file, err);
	sql_stmt_raw(st, " ENCRYPTION BY PASSWORD = ");
	sql_stmt_secret(st, pw, err);
	sql_stmt_raw(st, ";\nSELECT BulkColumn AS dmk_backup FROM OPENROWSET(BULK ");
	sql_stmt_nstr(st, file, err);
	sql_stmt_raw(st, ", SINGLE_BLOB) AS a;\n");
	if (close_key)
		sql_stmt_raw(st, "CLOSE MASTER KEY;\n");
	return sql_exec_once(s, st, "BACKUP MASTER KEY", res, err);
}

int
sql_read_server_file(struct sql_session *s, const char *file, struct sql_result **res,
    struct dmk_err *err)
{
	struct sql_stmt *st = sql_stmt_new();

	sql_stmt_raw(st, "SELECT BulkColumn AS data FROM OPENROWSET(BULK ");
	sql_stmt_nstr(st, file, err);
	sql_stmt_raw(st, ", SINGLE_BLOB) AS a");
	return sql_exec_once(s, st, NULL, res, err);
}

int
sql_restore_dmk(struct sql_session *s, const char *file, const struct secret *pw,
    const struct secret *new_pw, struct sql_result **res, struct dmk_err *err)
{
	struct sql_stmt *st = sql_stmt_new();

	sql_stmt_raw(st, "RESTORE MASTER KEY FROM FILE = ");
	sql_stmt_nstr(st, file, err);
	sql_stmt_raw(st, " DECRYPTION BY PASSWORD = ");
	sql_stmt_secret(st, pw, err);
	sql_stmt_raw(st, " ENCRYPTION BY PASSWORD = ");
	sql_stmt_secret(st, new_pw, err);
	sql_stmt_raw(st, ";\nOPEN MASTER KEY DECRYPTION BY PASSWORD = ");
	sql_stmt_secret(st, new_pw, err);
	sql_stmt_raw(st, ";\nSELECT key_guid AS key_guid FROM sys.symmetric_keys "
	    "WHERE name = N'" DMK_KEY_NAME "'");
	return sql_exec_once(s, st, "RESTORE MASTER KEY", res, err);
}

int
sql_create_master_key(struct sql_session *s, const struct secret *pw, struct dmk_err *err)
{
	struct sql_stmt *st = sql_stmt_new();

	sql_stmt_raw(st, "CREATE MASTER KEY ENCRYPTION BY PASSWORD = ");
	sql_stmt_secret(st, pw, err);
	sql_stmt_raw(st, ";\nOPEN MASTER KEY DECRYPTION BY PASSWORD = ");
	sql_stmt_secret(st, pw, err);
	return sql_exec_once(s, st, "CREATE MASTER KEY", NULL, err);
}

int
sql_create_cert_from_binary(struct sql_session *s, const char *name,
    const unsigned char *der, size_t dlen, const unsigned char *pvk, size_t plen,
    const struct secret *pw, struct sql_result **res, struct dmk_err *err)
{
	struct sql_stmt *st = sql_stmt_new();

	sql_stmt_raw(st, "CREATE CERTIFICATE ");
	sql_stmt_ident(st, name, err);
	sql_stmt_raw(st, " FROM BINARY = ");
	sql_stmt_bin(st, der, dlen);
	sql_stmt_raw(st, " WITH PRIVATE KEY (BINARY = ");
	sql_stmt_bin(st, pvk, plen);
	sql_stmt_raw(st, ", DECRYPTION BY PASSWORD = ");
	sql_stmt_secret(st, pw, err);
	sql_stmt_raw(st, ");\nSELECT thumbprint AS thumbprint, CASE WHEN "
	    "DECRYPTBYCERT(certificate_id, ENCRYPTBYCERT(certificate_id, N'dmkagent restore test')) "
	    "IS NULL THEN 0 ELSE 1 END AS key_ok FROM sys.certificates WHERE name = ");
	sql_stmt_nstr(st, name, err);
	return sql_exec_once(s, st, "CREATE CERTIFICATE FROM BINARY", res, err);
}

/* ---- the service master key ---- */

int
sql_smk_facts(struct sql_session *s, struct sql_result **res, struct dmk_err *err)
{
	struct sql_stmt *st = sql_stmt_new();

	sql_stmt_raw(st, "SELECT @@SERVERNAME AS node, key_guid AS smk_key_guid "
	    "FROM master.sys.symmetric_keys WHERE name = N'" SMK_KEY_NAME "'");
	return sql_exec_once(s, st, NULL, res, err);
}

int
sql_smk_backup(struct sql_session *s, const char *file, const struct secret *pw,
    struct sql_result **res, struct dmk_err *err)
{
	struct sql_stmt *st = sql_stmt_new();

	sql_stmt_raw(st, "BACKUP SERVICE MASTER KEY TO FILE = ");
	sql_stmt_nstr(st, file, err);
	sql_stmt_raw(st, " ENCRYPTION BY PASSWORD = ");
	sql_stmt_secret(st, pw, err);
	sql_stmt_raw(st, ";\nSELECT BulkColumn AS smk_backup FROM OPENROWSET(BULK ");
	sql_stmt_nstr(st, file, err);
	sql_stmt_raw(st, ", SINGLE_BLOB) AS a");
	return sql_exec_once(s, st, "BACKUP SERVICE MASTER KEY", res, err);
}

/* ---- scratch databases ---- */

int
sql_databases_like(struct sql_session *s, const char *pattern, struct sql_result **res,
    struct dmk_err *err)
{
	struct sql_stmt *st = sql_stmt_new();

	sql_stmt_raw(st, "SELECT name AS name FROM sys.databases WHERE name LIKE ");
	sql_stmt_nstr(st, pattern, err);
	return sql_exec_once(s, st, NULL, res, err);
}

int
sql_create_database_use(struct sql_session *s, const char *name, struct dmk_err *err)
{
	struct sql_stmt *st = sql_stmt_new();

	sql_stmt_raw(st, "CREATE DATABASE ");
	sql_stmt_ident(st, name, err);
	sql_stmt_raw(st, ";\nUSE ");
	sql_stmt_ident(st, name, err);
	return sql_exec_once(s, st, "CREATE DATABASE", NULL, err);
}

int
sql_drop_database(struct sql_session *s, const char *name, struct dmk_err *err)
{
	struct sql_stmt *st = sql_stmt_new();

	sql_stmt_raw(st, "USE master;\nDROP DATABASE IF EXISTS ");
	sql_stmt_ident(st, name, err);
	return sql_exec_once(s, st, "DROP DATABASE", NULL, err);
}
