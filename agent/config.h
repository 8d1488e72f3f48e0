/*
 * config.h: the configuration model.  The file names things and points at
 * secrets; it never holds one.  See dmkagent.conf(5) for the contract.
 *
 * Invariants after config_load() returns 0:
 *  - every [store], [ag] and [database] key is known and well-formed;
 *  - every key that carries a secret holds a parsed reference, never a
 *    literal, and every STORE: reference names a defined [store];
 *  - env: references appear only in [store] sections (bootstrap credentials);
 *  - every [database AG/DB] names a defined [ag];
 *  - line numbers are kept so later checks can name FILE:LINE.
 */
#ifndef DMK_CONFIG_H
#define DMK_CONFIG_H

#include <limits.h>
#include "core/dmk.h"
#include "core/ref.h"
#include "core/conf.h"

/* "replica NAME = host:port" and/or "tls_name NAME = name": host empty when
 * only the certificate name is configured. */
struct conf_replica {
	char name[CONF_NAME_BYTES];
	char host[256];
	int port;
	char tls_name[256];
	int line;
};

enum conf_encrypt { ENCRYPT_MANDATORY = 0, ENCRYPT_STRICT };

struct conf_ag {
	char label[CONF_NAME_BYTES];   /* as in [ag LABEL] */
	char name[CONF_NAME_BYTES];    /* the AG's name (name = ..., or LABEL) */
	char listener_host[256];
	int listener_port;
	char login[CONF_NAME_BYTES];   /* empty or "integrated": Kerberos */
	int has_login_password;
	struct secret_ref login_password;
	char ca_file[PATH_MAX];
	int has_smk_backup_password;
	struct secret_ref smk_backup_password;
	long long connect_timeout;     /* seconds */
	long long query_timeout;       /* seconds */
	char domain[256];              /* DNS suffix completing replica server names */
	char tls_name[256];            /* every certificate of this AG carries it */
	int browser_port;              /* SQL Server Browser's UDP port (1434) */
	int encrypt;                   /* enum conf_encrypt */
	struct conf_replica *replicas;
	size_t nreplicas;
	int line;
};

struct conf_db {
	char ag[CONF_NAME_BYTES];      /* ag LABEL */
	char label[CONF_NAME_BYTES];   /* DB part of [database AG/DB] */
	char name[CONF_NAME_BYTES];    /* the database name (name = ...) */
	struct secret_ref dmk_password;
	int has_cert_backup_password;
	struct secret_ref cert_backup_password;
	int has_dmk_backup_password;
	struct secret_ref dmk_backup_password;
	long long rotate_every;        /* seconds; 0: never due */
	long long backup_every;        /* seconds; 0: run takes no backups */
	long long restore_test_every;  /* seconds; 0: run makes no restore tests */
	char certificates[8][CONF_NAME_BYTES];
	size_t ncertificates;
	int line;
};

/* [hook]: dmkagent hook serve (cmd_hook.c). */
struct conf_hook {
	int present;
	char listen_host[256];
	int listen_port;               /* default 8443 */
	char tls_cert[PATH_MAX];       /* PEM chain */
	struct secret_ref tls_key;     /* the PEM private key */
	int has_key;
	struct secret_ref key;         /* the shared secret in ?code= */
	int entra;                     /* auth = entra: Entra ID bearer tokens */
	char audience[512];            /* entra: the token's aud */
	char tenant[64];               /* entra: the tenant id */
	char authority_host[512];      /* entra: default https://login.microsoftonline.com */
	char ca_file[PATH_MAX];        /* entra: CA for fetching the tenant's keys */
	int queue;                     /* bounded queue of events waiting (default 32) */
	int line;
};

struct config {
	char path[PATH_MAX];
	char state_dir[PATH_MAX];
	char audit_log[PATH_MAX];
	int has_audit_key;
	struct secret_ref audit_key;
	int has_audit_anchor;          /* the audit checkpoint, also in a store */
	int audit_anchor_line;
	struct secret_ref audit_anchor;
	int password_length;
	char password_avoid[128];
	long long lease_ttl;           /* seconds */
	char hook_command[PATH_MAX];   /* "" none: run after each change (deployhook.h) */
	long long hook_timeout;        /* seconds */
	char metrics_file[PATH_MAX];   /* "" none: Prometheus text after each run (metrics.h) */
	int require_ticket;            /* changing commands refuse without --ticket */
	char audit_syslog[512];        /* unix:PATH | udp:HOST:PORT | tcp+tls:HOST:PORT, or "" */
	char audit_syslog_ca[PATH_MAX]; /* tcp+tls: CA file ("": the system's) */
	struct conf_store *stores;
	size_t nstores;
	struct conf_ag *ags;
	size_t nags;
	struct conf_db *dbs;
	size_t ndbs;
	struct conf_hook hook;
};

#define CONF_DEFAULT_PATH "/etc/dmkagent/dmkagent.conf"

/* Load and validate; on error nothing is returned and err names FILE:LINE. */
int config_load(const char *path, struct config **out, struct dmk_err *err);
/* Parse from memory (path is only used in messages); no file-mode check. */
int config_parse_string(const char *text, const char *path,
    struct config **out, struct dmk_err *err);

/*
 * The same, reporting every error, not only the first: each is kept in errs
 * ("FILE:LINE: message", in the order found, up to CONFIG_ERRORS_MAX), and
 * the first is also in err.  The configuration is refused as a whole when
 * there is any.  An error that only follows from an earlier one (a key left
 * out makes its section lack it) is not repeated; a line inih cannot parse
 * is named once (the first such line).  errs->n 0 with an error: the file
 * could not be read at all (err says why).
 */
#define CONFIG_ERRORS_MAX 50
struct config_errors {
	size_t n;
	char msg[CONFIG_ERRORS_MAX][DMK_ERR_MSG_MAX];
};
int config_load_all(const char *path, struct config **out, struct config_errors *errs,
    struct dmk_err *err);
int config_parse_string_all(const char *text, const char *path, struct config **out,
    struct config_errors *errs, struct dmk_err *err);
void config_free(struct config *cfg);

const struct conf_store *config_store(const struct config *cfg, const char *name);
const struct conf_ag *config_ag(const struct config *cfg, const char *label);
/* Key lookup in a store section; NULL when absent. */
#endif
