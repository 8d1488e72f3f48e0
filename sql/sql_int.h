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

#endif
