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
 * The AG named ag_name (or the only one when ag_name is NULL or "") from the
 * five catalog reads of discovery (discover.c), none of them NULL; who names
 * the server in messages.  Pure: no I/O (a fuzz target calls it).
 */
int sql_ag_from_rows(const char *who, const char *ag_name, const struct sql_result *ags,
    const struct sql_result *reps, const struct sql_result *states,
    const struct sql_result *gstates, const struct sql_result *dbs, struct sql_ag *out,
    struct dmk_err *err);

#endif
