/*
 * replicas.h: walking an availability group.  ag_open() asks the AG itself
 * (through the listener) which replicas exist, reads each configured
 * database's DMK password from its store and proves on the primary that it
 * opens the DMK; ag_each_replica() then runs one job per replica, one
 * session each, in parallel.  "Every replica" is the AG's own list: a
 * replica that cannot be reached is reported by name and makes the run
 * incomplete.
 *
 * Ownership: struct ag_run owns everything it points to (plans and their
 * secrets, replica runs and their per-database arrays, the login password)
 * and ag_close() wipes and frees it all, also after a failed ag_open();
 * conf_* pointers are the configuration's and outlive the run.  Results
 * handed out (dmk_password_current's *out, rep_credentials' *out) are the
 * caller's: secret_free() and sql_result_free().  Strings passed in are
 * copied where kept.
 */
#ifndef DMK_REPLICAS_H
#define DMK_REPLICAS_H

#include <pthread.h>

#include "agent.h"
#include "providers/provider.h"
#include "sql/sql.h"

struct secret;

/* One configured database, as this run found it. */
struct db_plan {
	const struct conf_db *db;
	struct secret *pw;              /* the store's current DMK password */
	struct {                        /* its version: the id alone (a struct prov_version */
		char id[80];            /* with its markers is 10 KiB a database) */
	} ver;
	char store[64];
	int in_ag;                      /* the AG lists it */
	int usable;                     /* the password opens the DMK on the primary */
	int code;                       /* why not usable */
	char error[DMK_ERR_MSG_MAX];
	struct sql_dbkeys primary_keys;
	char cert[CONF_NAME_BYTES];     /* a certificate under the DMK, for probes */
	/* --prune: older store versions whose password no longer opens the DMK */
	struct secret *stale[16];
	char stale_ver[16][80];
	size_t nstale;
};

enum rep_outcome {
	OUT_NONE = 0, OUT_ADDED, OUT_PRESENT, OUT_WOULD_ADD, OUT_OK, OUT_GAP, OUT_FAILED,
	OUT_SKIPPED, OUT_DROPPED,
};

/* One database on one replica. */
struct rep_db {
	int outcome;
	const char *note;               /* what to say about it: rep_note(), read with
	                                 * rep_note_text(); the run owns it (1 KiB of
	                                 * buffer per replica and database before) */
	struct sql_dbkeys keys;
	int have_keys;
	int auto_open;                  /* -1 unknown, 0 no, 1 yes */
	char credential[160];           /* the credential this run added */
};

struct ag_run;

/* A replica's session kept from one ag_each_replica() to the next
 * (run->keep_sessions), with the address it was reached at. */
struct rep_slot {
	struct sql_session *s;
	struct sql_endpoint ep;
	char how[96];
};

struct rep_run {
	struct ag_run *run;
	struct sql_replica *rep;
	struct sql_endpoint ep;
	char how[96];                   /* how its address was found (status) */
	int is_primary;
	int reached;
	int code;
	char error[DMK_ERR_MSG_MAX];
	struct rep_db *dbs;             /* parallel to run->plans */
	pthread_t th;
};

struct ag_run {
	struct agent *a;
	const struct conf_ag *ag;
	struct secret *login_pw;
	struct sql_login login;
	struct sql_ag info;
	struct db_plan *plans;
	size_t nplans;
	struct rep_run *reps;
	size_t nreps;
	int dry_run;
	int prune;
	void *ctx;                      /* the command's own data */
	struct note_block *notes;       /* rep_note()'s texts, freed by ag_close() */
	pthread_mutex_t notes_mu;
	int (*work)(struct rep_run *rr, struct sql_session *s);
	/*
	 * Sessions kept for the whole run, closed by ag_close(): ls, the
	 * listener's (the primary's) from ag_open; with keep_sessions set, one
	 * per replica (slots, by index in info.replicas) reused by every
	 * ag_each_replica() and replaced when lost.
	 */
	struct sql_session *ls;
	struct rep_slot *slots;
	int keep_sessions;
};

/*
 * What an unusable plan makes of a command's outcome: its own error when
 * that is lasting (the store refused the credentials, the secret or the
 * database is missing: exit 1) or temporary (the store unreachable: exit
 * 5); a password that does not open the DMK is a gap (DMK_ERR_INCOMPLETE).
 * 0 for a usable plan.
 */
int plan_outcome(const struct db_plan *p);
/* A login SQL Server refused (DMK_ERR_AUTH): append where its password
 * comes from (login_password's reference) or that it is integrated. */
void ag_login_hint(const struct conf_ag *ag, struct dmk_err *err);

/* Filters: NULL for all. */
int ag_open(struct agent *a, const struct conf_ag *ag, const char *dbfilter,
    int probe, struct ag_run *run, struct dmk_err *err);
/* Run work on every replica in parallel; 0, or DMK_ERR_INCOMPLETE. */
int ag_each_replica(struct ag_run *run, int (*work)(struct rep_run *, struct sql_session *));
void ag_close(struct ag_run *run);

/* The AGs this command touches (by --ag filter); DMK_ERR_USAGE if none match. */
int ag_select(struct agent *a, const char *agfilter, const char *dbfilter,
    const struct conf_ag ***out, size_t *n, struct dmk_err *err);

const char *rep_outcome_name(int o);

/* The note of one database on one replica (any thread of the run); its
 * text, "" when none. */
void rep_note(struct rep_run *rr, struct rep_db *d, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *rep_note_text(const struct rep_db *d);

/*
 * The DMK password currently in force: the store's newest version unless
 * it is marked pending (a rotation not yet finished: SQL Server may not
 * know it), then the newest version marked current, or unmarked.
 */
int dmk_password_current(struct agent *a, const struct secret_ref *ref, struct secret **out,
    struct prov_version *ver, struct dmk_err *err);

/*
 * Every DMK credential on a replica, in one round trip: rows of
 * (family_guid, name).  creds_of() picks one family's names.
 */
int rep_credentials(struct sql_session *s, struct sql_result **out, struct dmk_err *err);
int creds_of(const struct sql_result *all, const char *family, char names[8][160]);

/* The AG listener's endpoint: listener = HOST:PORT, certificate name
 * tls_name (the AG's) or HOST. */
void ag_listener_endpoint(const struct conf_ag *ag, struct sql_endpoint *ep);

/* Connect to one replica, as the run's login. */
int rep_connect(struct rep_run *rr, struct sql_session **s, struct dmk_err *err);

/* Does the DMK open automatically (no password) here?  Uses a certificate
 * under the DMK: 1 yes, 0 no, -1 cannot tell (no certificate / unreadable). */
int probe_auto_open(struct sql_session *s, const char *db, const char *cert,
    struct dmk_err *err);

/* ALTER AVAILABILITY GROUP [AG] FAILOVER, run on target (as the docs say),
 * then wait until target reports itself PRIMARY. */
int ag_failover_to(struct ag_run *run, struct rep_run *target, struct dmk_err *err);

/* Registration records kept in state_dir: which store version and which
 * credential this agent registered per AG, replica and database family. */
int regstate_set(struct agent *a, const char *ag, const char *replica,
    const char *family, const char *reference, const char *version,
    const char *credential, struct dmk_err *err);
/* The same, but the credential is exactly this one (NULL or "": none known),
 * where regstate_set keeps the previous name when given none. */
int regstate_set_exact(struct agent *a, const char *ag, const char *replica,
    const char *family, const char *reference, const char *version,
    const char *credential, struct dmk_err *err);
/* regstate_set without writing (exact as above); regstate_flush writes what
 * was staged.  For batches: one write per replica, not per record. */
int regstate_stage(struct agent *a, const char *ag, const char *replica,
    const char *family, const char *reference, const char *version,
    const char *credential, int exact);
int regstate_flush(struct agent *a, struct dmk_err *err);
int regstate_get(struct agent *a, const char *ag, const char *replica,
    const char *family, char *version, size_t vlen, char *credential, size_t clen);

#endif
