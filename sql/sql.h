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
 * T-SQL.  Every statement is written once, in sql/ (keys.c, ag.c,
 * calls.c, discover.c), and asked for here by name; agent/ holds no T-SQL.
 * Procedures go as RPCs with typed parameters (sql_rpc).  DDL that cannot
 * take parameters is built only with struct sql_stmt and the quoting
 * builders, which are private to sql/ (sql_int.h); a statement that holds
 * a password literal lives in wiped memory and is never echoed into an
 * error or a log.
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
/* Whether a session can still be used: not lost, not timed out (a kept
 * session is checked before each use and replaced when not). */
int sql_alive(const struct sql_session *s);
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

/*
 * ---- statements ----
 * A struct sql_stmt is a batch of T-SQL text in wiped memory.  Outside
 * sql/ it is only made, filled by the fragment builders below (sql_add_*)
 * and run: the text is written in sql/ alone, with the quoting builders of
 * sql_int.h.  A builder that fails makes the statement's error sticky:
 * every later builder call is a no-op returning that first error (with its
 * message in err), and sql_exec()/sql_exec_sets() refuse to run it,
 * reporting the same error.  A NULL statement (sql_stmt_new() failed)
 * behaves as one that failed with DMK_ERR_NOMEM.
 */
struct sql_stmt;
struct sql_stmt *sql_stmt_new(void);
void sql_stmt_free(struct sql_stmt *st);
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
 * then reads sql_credentials()'s set into *after (NULL if it could not).
 */
#define SQL_DMK_MANY_MAX 140   /* what fits in @params' 4000 bytes (calls.c) */
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

/*
 * ---- key statements (keys.c) ----
 *
 * Each statement the agent sends about keys is written once, in keys.c.
 * One-shot calls build, run and free their statement; *res, where there is
 * one, is the first result set, owned by the caller (sql_result_free), and
 * NULL after an error.  Errors are sql_exec()'s: DMK_ERR_SQL with the
 * server's message (read sql_last_error(s)->number), and the builder's
 * (DMK_ERR_BADINPUT for a name or text that cannot be quoted,
 * DMK_ERR_NOMEM); where a statement's name is given below in [brackets],
 * a failed run's message starts with it.  Passwords go only into the
 * statement (wiped memory), never into a message.
 *
 * Fragment builders append one statement (";\n"-terminated) to a batch the
 * caller owns (sql_stmt_new/sql_stmt_free) and runs with sql_exec() or
 * sql_exec_sets(): one round trip for many databases.  They return 0 or
 * the batch's sticky error (its first failure, message in err); a failed
 * batch cannot run.  i tags the fragment's rows (column "i") so that the
 * caller can tell which database a result set belongs to.
 */
/* Every DMK credential on the server: columns family_guid, name. */
int sql_credentials(struct sql_session *s, struct sql_result **res, struct dmk_err *err);
int sql_add_credentials(struct sql_stmt *st, struct dmk_err *err);
/* Every database: columns name, by_smk (is_master_key_encrypted_by_server),
 * family_guid. */
int sql_add_db_list(struct sql_stmt *st, struct dmk_err *err);
/* Two sets for db: (i, key_guid) of its DMK (no row: none), and (i, cert),
 * the first certificate whose private key the DMK protects (no row: none).
 * Three-part names: no USE, the batch stays where it is. */
int sql_add_db_facts(struct sql_stmt *st, size_t i, const char *db, struct dmk_err *err);
/* USE db and the name of the first certificate whose private key the DMK
 * protects into out; out is left as it is when there is none. */
int sql_find_dmk_cert(struct sql_session *s, const char *db, char *out, size_t outlen,
    struct dmk_err *err);
/* USE db; (i, opened): 1 when cert encrypts and decrypts, i.e. the DMK
 * opened by itself (service master key or credential), 0 when not, -1
 * when the USE did not take effect (DB_NAME() differs). */
int sql_add_cert_probe(struct sql_stmt *st, size_t i, const char *db, const char *cert,
    struct dmk_err *err);
/* The same probe alone: *opened 1, 0 or -1 (cannot tell).  The session
 * stays in db. */
int sql_cert_probe(struct sql_session *s, const char *db, const char *cert, int *opened,
    struct dmk_err *err);
/* USE db; OPEN MASTER KEY DECRYPTION BY PASSWORD = pw; CLOSE MASTER KEY. */
int sql_add_dmk_proof(struct sql_stmt *st, const char *db, const struct secret *pw,
    struct dmk_err *err);
/* USE db; ALTER MASTER KEY ADD ENCRYPTION BY PASSWORD, DROP ENCRYPTION BY
 * PASSWORD or REGENERATE WITH ENCRYPTION BY PASSWORD = pw.  *num gets SQL
 * Server's error number (0 if none).  The session stays in db. */
enum sql_mk_op { SQL_MK_ADD_PASSWORD = 1, SQL_MK_DROP_PASSWORD, SQL_MK_REGENERATE };
int sql_alter_master_key(struct sql_session *s, const char *db, enum sql_mk_op op,
    const struct secret *pw, int *num, struct dmk_err *err);
/* The same as a fragment (ADD or DROP only), for many databases in one batch. */
int sql_add_alter_master_key(struct sql_stmt *st, const char *db, enum sql_mk_op op,
    const struct secret *pw, struct dmk_err *err);
/* USE db; with open_pw, OPEN MASTER KEY for the session (the caller closes
 * it: sql_dmk_backup(close_key) or sql_close_master_key); *res: node
 * (@@SERVERNAME), dmk_key_guid (no row: no DMK). */
int sql_dmk_open_facts(struct sql_session *s, const char *db, const struct secret *open_pw,
    struct sql_result **res, struct dmk_err *err);
int sql_close_master_key(struct sql_session *s, struct dmk_err *err);
/* Every certificate of the current database under its DMK: name,
 * thumbprint, der (CERTENCODED), pvk (CERTPRIVATEKEY encrypted by
 * certpw; NULL when the DMK is not open). */
int sql_dmk_certs(struct sql_session *s, const struct secret *certpw,
    struct sql_result **res, struct dmk_err *err);
/* [BACKUP MASTER KEY] of the current database to file (server side),
 * encrypted by pw, read back: *res column dmk_backup; with close_key the
 * session's open DMK is closed in the same batch. */
int sql_dmk_backup(struct sql_session *s, const char *file, const struct secret *pw,
    int close_key, struct sql_result **res, struct dmk_err *err);
/* A file on the server (OPENROWSET BULK): *res column data. */
int sql_read_server_file(struct sql_session *s, const char *file, struct sql_result **res,
    struct dmk_err *err);
/* [RESTORE MASTER KEY] into the current database from file (encrypted by
 * pw), re-encrypted by new_pw and opened with it: *res column key_guid. */
int sql_restore_dmk(struct sql_session *s, const char *file, const struct secret *pw,
    const struct secret *new_pw, struct sql_result **res, struct dmk_err *err);
/* [CREATE MASTER KEY] in the current database, encrypted by pw, opened. */
int sql_create_master_key(struct sql_session *s, const struct secret *pw, struct dmk_err *err);
/* [CREATE CERTIFICATE FROM BINARY] name from der and pvk (decrypted by pw),
 * in the current database: *res columns thumbprint, key_ok (1 when its
 * private key decrypts what its public key encrypted). */
int sql_create_cert_from_binary(struct sql_session *s, const char *name,
    const unsigned char *der, size_t dlen, const unsigned char *pvk, size_t plen,
    const struct secret *pw, struct sql_result **res, struct dmk_err *err);
/* The service master key: node (@@SERVERNAME), smk_key_guid. */
int sql_smk_facts(struct sql_session *s, struct sql_result **res, struct dmk_err *err);
/* [BACKUP SERVICE MASTER KEY] to file, encrypted by pw, read back: *res
 * column smk_backup. */
int sql_smk_backup(struct sql_session *s, const char *file, const struct secret *pw,
    struct sql_result **res, struct dmk_err *err);
/* Databases whose name is LIKE pattern (a LIKE pattern: '_' and '%' are
 * wildcards): column name. */
int sql_databases_like(struct sql_session *s, const char *pattern, struct sql_result **res,
    struct dmk_err *err);
/* [CREATE DATABASE] name; USE name. */
int sql_create_database_use(struct sql_session *s, const char *name, struct dmk_err *err);
/* USE master; [DROP DATABASE] IF EXISTS name. */
int sql_drop_database(struct sql_session *s, const char *name, struct dmk_err *err);

/* ---- availability group statements (ag.c) ---- */
/* ALTER AVAILABILITY GROUP ag FAILOVER, on a session to the target
 * replica; returns once the target accepts (poll sql_local_role). */
int sql_ag_failover(struct sql_session *s, const char *ag, struct dmk_err *err);
/* The connected replica's role_desc (PRIMARY, SECONDARY, RESOLVING) into
 * out, "" when the replica does not say. */
int sql_local_role(struct sql_session *s, char *out, size_t outlen, struct dmk_err *err);

/* ---- permissions (perms.c) ---- */
/* One permission the login may hold: on the server itself (securable
 * NULL), or on securable of class cls ("DATABASE"). */
struct sql_perm {
	const char *securable;
	const char *cls;
	const char *permission;    /* "VIEW SERVER STATE", "CONTROL" */
	int have;                  /* out: 1 held, 0 not, -1 unknown (NULL: no
	                              such securable, or not visible to the login) */
};
/* HAS_PERMS_BY_NAME for each, in one round trip per 64: reads only. */
int sql_has_perms(struct sql_session *s, struct sql_perm *p, size_t n, struct dmk_err *err);

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
/*
 * The same discovery as the first statements of a batch the caller extends
 * (the primary's facts: one round trip for both).  sql_add_discovery() adds
 * the five catalog reads; after sql_exec_sets(), sql_discovery_from_sets()
 * reads the AG from the first five result sets (the caller's follow).
 */
int sql_add_discovery(struct sql_stmt *st, struct dmk_err *err);
int sql_discovery_from_sets(struct sql_session *s, const char *ag_name,
    struct sql_result *const *sets, size_t nsets, struct sql_ag *out, struct dmk_err *err);
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
