/*
 * session_int.h: what the three files of a session share (session.c:
 * freetds.conf, handlers, connecting, errors, the encryption gate;
 * result.c: reading and decoding result sets; exec.c: batches and RPCs).
 * Private to sql/: the session is opaque everywhere else (sql.h).
 */
#ifndef DMK_SESSION_INT_H
#define DMK_SESSION_INT_H

#include <sybfront.h>
#include <sybdb.h>

#include "core/dmk.h"
#include "sql_int.h"

#define SYB_UNIQUE 36          /* uniqueidentifier; sybdb.h has no name for it */
#define RPC_STR_MAX 4000       /* bytes: db-lib sends NVARCHAR up to this */
/* What one result set may hold: far above anything our queries return. */
#define SQL_RESULT_MAX_COLS 4096
#define SQL_RESULT_MAX_CELLS ((size_t)1 << 22)
#define SQL_RESULT_MAX_BYTES (256 << 20)


struct sql_session {
	DBPROCESS *dbproc;
	struct relay *relay;
	char name[520];
	unsigned section;
	long query_timeout;
	struct sql_error first;    /* first error (severity > 10) of the current call */
	struct sql_error last;     /* last error seen on the session */
	int dberr;                 /* last db-lib error of the current call */
	char dberr_text[256];
	int timed_out, dead;
	const char *perm_hint;     /* what permission the current call needs */
	int errnos[SQL_CALL_ERRORS_MAX]; /* error numbers (severity > 10) of the current call */
	size_t nerrnos;            /* how many there were (may exceed what errnos holds) */
	int enc_unchecked;         /* encrypt_option not read yet (see enc_gate) */
	char enc_refused[300];     /* why the session may not be used, or "" */
	long connect_timeout;
	int connecting;            /* in sql_connect(): name carries the address */
	int bad_code;              /* the server sent a value we refused: the session */
	char bad_value[300];       /* is not used again (this says why) */
};

/* session.c */
int sess_enc_fused(struct sql_session *s, const char *text, struct sql_result ***sets, size_t *nsets,
    struct dmk_err *err);
int sess_enc_gate(struct sql_session *s, struct dmk_err *err);
int sess_error(struct sql_session *s, struct dmk_err *err);
/* result.c */
int sess_collect_all(struct sql_session *s, struct sql_result ***sets, size_t *nsets);
int sess_collect(struct sql_session *s, struct sql_result **res, int *retstatus);
/* exec.c */
int sess_run_batch(struct sql_session *s, const char *text, struct sql_result **res, struct dmk_err *err);
int sess_usable(struct sql_session *s, struct dmk_err *err);

#endif
