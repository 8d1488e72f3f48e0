/*
 * sql.h: sessions with SQL Server replicas (FreeTDS db-lib), the one door
 * for T-SQL, and availability-group discovery.
 *
 * Sessions.  Every session is TLS end to end and cannot be downgraded:
 * FreeTDS talks to an in-process relay (relay.c) that makes its own TLS
 * connection to the server with OpenSSL, verifies the certificate against
 * the configured CA and the host name, and refuses any PRELOGIN answer but
 * ENCRYPT_ON/ENCRYPT_REQ before a single byte of the login is sent (with
 * login->strict, TDS 8.0: TLS before any TDS byte).  See dmkagent(1),
 * SECURITY.
 *
 * T-SQL.  Procedures go as RPCs with typed parameters (sql_rpc).  DDL that
 * cannot take parameters is built only with struct sql_stmt and its
 * quoting helpers; a statement that holds a password literal lives in
 * wiped memory and is never echoed into an error or a log.
 *
 * Errors.  SQL Server's error number, state, severity and text are
 * captured (struct sql_error) and returned as DMK_ERR_SQL (or a more
 * specific code), with the server's message in the dmk_err; parameter
 * values are never part of a message.
 */
#ifndef DMK_SQL_H
#define DMK_SQL_H

#include "core/dmk.h"

struct secret;

struct sql_endpoint {
	char name[520];            /* replica name, for messages */
	char host[256];            /* connect here */
	int port;
	char tls_name[256];        /* name the certificate must carry (default host) */
};

struct sql_login {
	const char *user;          /* SQL login, or NULL with integrated */
	const struct secret *password;
	int integrated;            /* Kerberos via FreeTDS */
	const char *ca_file;       /* PEM bundle; NULL: system store */
	long connect_timeout;      /* seconds */
	long query_timeout;        /* seconds */
	const char *database;      /* initial database, or NULL for the login's default */
	int strict;                /* TDS 8.0 strict encryption: TLS before PRELOGIN */
};

struct sql_error {
	int number;                /* e.g. 15313 */
	int state;
	int severity;
	char message[1024];        /* the server's text */
	char server[256];
	char proc[256];
	int line;
};

struct sql_session;

int sql_connect(const struct sql_endpoint *ep, const struct sql_login *login,
    struct sql_session **out, struct dmk_err *err);
/*
 * sql_connect() errors: DMK_ERR_TLS (PRELOGIN not ON/REQ, certificate not
 * vouched for by the CA or not for tls_name; nothing was sent), DMK_ERR_AUTH
 * (18456; or integrated login without a Kerberos ticket), DMK_ERR_DENIED
 * (4060: the login cannot open its database), DMK_ERR_UNREACHABLE,
 * DMK_ERR_TIMEOUT, DMK_ERR_CONFIG (unreadable CA file; TDSDUMP set, which
 * would make FreeTDS write the session to a file).  With integrated, the
 * Kerberos service name is MSSQLSvc/<host>:<port> from the endpoint as
 * given: use the FQDN the SPN was registered with.  Sessions may be used
 * from different threads, one thread per session at a time.
 */
void sql_close(struct sql_session *s);
/* The last SQL Server error seen on this session (number 0 if none): the
 * first error (severity > 10) of the most recent call that had one. */
const struct sql_error *sql_last_error(const struct sql_session *s);

/* ---- results ---- */
enum sql_type { SQLT_NULL = 0, SQLT_INT, SQLT_STR, SQLT_BIN };
struct sql_value {
	enum sql_type type;
	long long i;               /* SQLT_INT (bit, int, bigint) */
	char *s;                   /* SQLT_STR: UTF-8, NUL-terminated; also GUIDs and dates as text */
	unsigned char *bin;        /* SQLT_BIN */
	size_t len;                /* bytes in s or bin */
};
struct sql_result {
	size_t ncols, nrows;
	char **cols;               /* column names */
	struct sql_value *cells;   /* nrows * ncols, row-major */
};
const struct sql_value *sql_cell(const struct sql_result *r, size_t row, const char *col);
void sql_result_free(struct sql_result *r);

/* ---- statements: the quoting helpers ---- */
struct sql_stmt;               /* text in wiped memory */
struct sql_stmt *sql_stmt_new(void);
void sql_stmt_free(struct sql_stmt *st);
/* Fixed SQL text written by us (keywords, punctuation); never data. */
int sql_stmt_raw(struct sql_stmt *st, const char *sql);
/* [name] with ]] doubling; refuses empty, > 128 characters, NUL, bad UTF-8. */
int sql_stmt_ident(struct sql_stmt *st, const char *name, struct dmk_err *err);
/* N'text' with '' doubling; refuses NUL and bad UTF-8. */
int sql_stmt_nstr(struct sql_stmt *st, const char *text, struct dmk_err *err);
/* N'secret' with '' doubling, for DDL that takes a password literal. */
int sql_stmt_secret(struct sql_stmt *st, const struct secret *pw, struct dmk_err *err);
/* 0x... binary literal. */
int sql_stmt_bin(struct sql_stmt *st, const unsigned char *b, size_t n);
int sql_stmt_int(struct sql_stmt *st, long long v);
/* Whether the statement holds a secret (then it is never logged). */
int sql_stmt_has_secret(const struct sql_stmt *st);

/* Standalone quoting for tests and for names shown to users. */
int sql_quote_ident(const char *name, char *out, size_t outlen, struct dmk_err *err);
int sql_valid_name(const char *name);   /* sysname: 1..128 chars, UTF-8, no NUL */

/*
 * Run a statement (one batch).  If it returns rows, *res gets the first
 * result set (res may be NULL to discard).  A SQL Server error gives
 * DMK_ERR_SQL with "SERVER: Msg N, Level L, State S: text".
 */
int sql_exec(struct sql_session *s, const struct sql_stmt *st, struct sql_result **res,
    struct dmk_err *err);
/*
 * A batch of independent statements: every result set, in order.  A failing
 * statement does not stop the batch (XACT_ABORT OFF) and does not make this
 * fail: read sql_call_errors().  Only a lost connection is an error.
 */
int sql_exec_sets(struct sql_session *s, const struct sql_stmt *st, struct sql_result ***sets,
    size_t *nsets, struct dmk_err *err);
void sql_sets_free(struct sql_result **sets, size_t n);
/* Every SQL Server error number of the last call (up to max and to
 * SQL_CALL_ERRORS_MAX); returns how many there were, which may be more. */
#define SQL_CALL_ERRORS_MAX 512
size_t sql_call_errors(const struct sql_session *s, int *nums, size_t max);

/* A fixed query with no data in it (catalog reads). */
int sql_query(struct sql_session *s, const char *fixed_sql, struct sql_result **res,
    struct dmk_err *err);

/* ---- RPC ---- */
enum sql_param_type { SQLP_NVARCHAR = 1, SQLP_INT, SQLP_VARBINARY };
struct sql_param {
	const char *name;          /* "@db_name" */
	enum sql_param_type type;
	const char *str;           /* SQLP_NVARCHAR (UTF-8) */
	const struct secret *secret; /* SQLP_NVARCHAR from a secret, instead of str */
	long long i;
	const unsigned char *bin;
	size_t len;
	int is_null;
};
/* One procedure call; *retstatus gets RETURN's value.  NVARCHAR values are
 * 1..4000 bytes of UTF-8 (db-lib sends an empty string as NULL: refused). */
int sql_rpc(struct sql_session *s, const char *proc, const struct sql_param *p, size_t n,
    int *retstatus, struct dmk_err *err);
/* The same, keeping every result set; statement errors do not fail it (read
 * sql_call_errors()): only a lost connection does. */
int sql_rpc_sets(struct sql_session *s, const char *proc, const struct sql_param *p, size_t n,
    struct sql_result ***sets, size_t *nsets, struct dmk_err *err);

/* Every DMK credential on the server: columns family_guid, name. */
#define SQL_CREDENTIALS_QUERY \
	"SELECT m.family_guid AS family_guid, c.name AS name " \
	"FROM sys.master_key_passwords AS m JOIN sys.credentials AS c " \
	"ON c.credential_id = m.credential_id ORDER BY c.name"

/* ---- the calls the agent makes ---- */
/* sp_control_dbmasterkey_password @db_name, @password, @action = add|drop.
 * Already provisioned (15594) and not provisioned (15595) come back as
 * DMK_ERR_SQL: read sql_last_error(s)->number.  No CONTROL: DMK_ERR_DENIED. */
int sql_dmk_password(struct sql_session *s, const char *db, const struct secret *pw,
    const char *action, struct dmk_err *err);
/*
 * The same for up to SQL_DMK_MANY_MAX databases in one round trip: one
 * sp_executesql RPC running the procedure once per database, names and
 * passwords as typed parameters.  Statement errors do not fail the call:
 * *n_expected counts the 15594 (add) or 15595 (drop) answers, and
 * *ambiguous is set when any other error occurred (which database it
 * belonged to is not known: ask database by database).  Only a failed
 * connection or bad input is an error.  With after != NULL the same request
 * then reads SQL_CREDENTIALS_QUERY into *after (NULL if it could not).
 */
#define SQL_DMK_MANY_MAX 70    /* what fits in @stmt's 4000 bytes (calls.c) */
int sql_dmk_password_many(struct sql_session *s, const char *const *dbs,
    const struct secret *const *pws, size_t n, const char *action, int *ambiguous,
    int *n_expected, struct sql_result **after, struct dmk_err *err);
/* USE db; OPEN MASTER KEY DECRYPTION BY PASSWORD; CLOSE MASTER KEY.
 * DMK_ERR_WRONGPASS for 15313, DMK_ERR_NOTFOUND when there is no DMK.
 * The session stays in db afterwards.  On a secondary that does not allow
 * reads: DMK_ERR_SQL "database not accessible on this secondary" (976). */
int sql_dmk_probe(struct sql_session *s, const char *db, const struct secret *pw,
    struct dmk_err *err);
/* USE [db] */
int sql_use(struct sql_session *s, const char *db, struct dmk_err *err);

/* ---- availability group discovery ---- */
struct sql_replica {
	char name[520];            /* replica_server_name */
	char role[32];             /* PRIMARY, SECONDARY, RESOLVING, or "" if unknown */
	char routing_url[256];     /* read_only_routing_url */
	char endpoint_url[256];
	int secondary_allow;       /* secondary_role_allow_connections: 0 NO, 1 READ_ONLY, 2 ALL */
	char sync_health[64];
	int connected;
};
struct sql_ag {
	char name[520];
	char group_id[40];
	char primary[520];         /* primary replica name */
	struct sql_replica *replicas;
	size_t nreplicas;
	char (*databases)[520];    /* databases in the AG */
	size_t ndatabases;
};
/* Ask the AG itself (through a session to the listener/primary). */
int sql_discover_ag(struct sql_session *s, const char *ag_name, struct sql_ag *out,
    struct dmk_err *err);
void sql_ag_free(struct sql_ag *ag);
/*
 * SQL Server Browser (SSRP, [MC-SQLR]): the TCP port of named instance
 * `instance` on host, asked on UDP udp_port (1434 in production) within
 * timeout_ms.  DMK_ERR_UNREACHABLE (no answer), DMK_ERR_PROTOCOL (an answer
 * that does not parse, or names no TCP port for the instance).
 */
int sql_browser_port(const char *host, int udp_port, const char *instance, long timeout_ms,
    int *port, struct dmk_err *err);
/* The SVR_RESP parser alone (n bytes from the network): 0 and *port, or a
 * negative DMK_ERR_* with *why set.  For tests and the fuzzer. */
int sql_ssrp_parse(const unsigned char *p, size_t n, const char *instance, int *port,
    const char **why);
/* A SQL Server instance name as the Browser can be asked about it. */
int sql_instance_name_ok(const char *s);
/* Address of a replica: routing URL TCP://host:port, else name:1433. */
int sql_replica_address(const struct sql_replica *r, char *host, size_t hostlen, int *port);

/* Per-database key facts on one replica. */
struct sql_dbkeys {
	char family_guid[40];
	char dmk_key_guid[40];     /* "" when there is no DMK */
	int dmk_by_smk;            /* is_master_key_encrypted_by_server */
	int npassword_encryptions; /* rows in sys.key_encryptions by password */
	int ncredentials;          /* sys.master_key_passwords rows for family_guid */
	char credential_names[8][160];
	int readable;              /* database readable on this replica */
};
/* On a secondary that does not allow reads, readable = 0 and the DMK
 * fields stay empty: that is not an error. */
int sql_db_keys(struct sql_session *s, const char *db, struct sql_dbkeys *out,
    struct dmk_err *err);

#endif
