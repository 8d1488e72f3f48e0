/*
 * sql_int.h: what the files of sql/ share and nothing outside needs: the
 * statement text accessor, the session internals, the relay.
 */
#ifndef DMK_SQL_INT_H
#define DMK_SQL_INT_H

#include <stddef.h>

#include "sql.h"

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

#endif
