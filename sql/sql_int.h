/*
 * sql_int.h: what the files of sql/ share and nothing outside needs: the
 * quoting builders that write T-SQL text, the statement text accessor, the
 * session internals, the relay.  Only sql/ (and its tests) are compiled with
 * DMK_SQL_INTERNAL (meson.build): anywhere else this header does not
 * compile, so agent/ cannot write T-SQL.
 */
#ifndef DMK_SQL_INT_H
#define DMK_SQL_INT_H

#ifndef DMK_SQL_INTERNAL
#error "sql/sql_int.h is private to sql/ and its tests: use sql/sql.h"
#endif

#include <stddef.h>

#include "sql.h"

/*
 * ---- the quoting builders: the only way T-SQL text is written ----
 * Each appends to st.  The error is sticky: once a call fails, the text is
 * incomplete and every later call on st appends nothing and returns that
 * first error (copying its message into err, where the call takes one),
 * so a statement may be built by a chain of unchecked calls and checked
 * once, with sql_stmt_error() or by sql_exec(), which refuses a failed
 * statement with the same error.  st NULL (sql_stmt_new() failed) gives
 * DMK_ERR_NOMEM throughout.
 */
/* Fixed SQL text written by us (keywords, punctuation); never data: a
 * string literal only (a non-literal does not compile). */
#define sql_stmt_raw(st, lit) sql_stmt_raw_((st), "" lit "")
int sql_stmt_raw_(struct sql_stmt *st, const char *sql);
/* [name] with ]] doubling; refuses empty, > 128 characters, NUL, bad UTF-8. */
int sql_stmt_ident(struct sql_stmt *st, const char *name, struct dmk_err *err);
/* N'text' with '' doubling; refuses NUL and bad UTF-8. */
int sql_stmt_nstr(struct sql_stmt *st, const char *text, struct dmk_err *err);
/* N'secret' with '' doubling, for DDL that takes a password literal. */
int sql_stmt_secret(struct sql_stmt *st, const struct secret *pw, struct dmk_err *err);
/* 0x... binary literal. */
int sql_stmt_bin(struct sql_stmt *st, const unsigned char *b, size_t n);
/* A decimal number; negative ones in parentheses. */
int sql_stmt_int(struct sql_stmt *st, long long v);

/* A fixed query with no data in it (catalog reads). */
int sql_query(struct sql_session *s, const char *fixed_sql, struct sql_result **res,
    struct dmk_err *err);

/* Every DMK credential on the server: columns family_guid, name. */
#define SQL_CREDENTIALS_QUERY \
	"SELECT m.family_guid AS family_guid, c.name AS name " \
	"FROM sys.master_key_passwords AS m JOIN sys.credentials AS c " \
	"ON c.credential_id = m.credential_id ORDER BY c.name"

/* The statement text (NUL-terminated), or NULL if building it failed. */
const char *sql_stmt_text(const struct sql_stmt *st);
/* 0, or the statement's sticky error with its first message copied into
 * err (st NULL: DMK_ERR_NOMEM, as from a failed sql_stmt_new()). */
int sql_stmt_error(const struct sql_stmt *st, struct dmk_err *err);
/*
 * Run st (one batch, built with the sticky builders) and free it: a failed
 * build reports its first error, a failed run frees *res and prefixes the
 * message with what (if not NULL).  *res (res may be NULL) gets the first
 * result set.
 */
int sql_exec_once(struct sql_session *s, struct sql_stmt *st, const char *what,
    struct sql_result **res, struct dmk_err *err);
/* Count UTF-16 code units of valid UTF-8 (no NUL); -1 if invalid. */
long sql_utf16_units(const char *s, size_t len);

/* Run a statement and map errors; the session's name goes into messages. */
const char *sql_session_name(const struct sql_session *s);

/* What a permission error on the next call should say is needed (static
 * text), or NULL. */
void sql_session_perm_hint(struct sql_session *s, const char *hint);
/* Plaintext bytes the relay forwarded each way (tests, diagnostics). */
int sql_session_stats(struct sql_session *s, unsigned long long *to_server,
    unsigned long long *to_client);

/*
 * Decode one result value of db-lib type t (data NULL or len < 0: SQL
 * NULL) into v, its length checked against the type first.  0 decoded,
 * 1 not a type decoded here (db-lib converts it), DMK_ERR_NOMEM, or
 * DMK_ERR_PROTOCOL with *why (static text).  Free v's s/bin on success.
 */
struct sql_value;
int sql_cell_decode(int t, const unsigned char *data, long len, struct sql_value *v,
    const char **why);

/*
 * The AG named ag_name (or the only one when ag_name is NULL or "") from the
 * five catalog reads of discovery (discover.c), none of them NULL; who names
 * the server in messages.  Pure: no I/O (a fuzz target calls it).
 */
int sql_ag_from_rows(const char *who, const char *ag_name, const struct sql_result *ags,
    const struct sql_result *reps, const struct sql_result *states,
    const struct sql_result *gstates, const struct sql_result *dbs, struct sql_ag *out,
    struct dmk_err *err);

#endif
