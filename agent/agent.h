/*
 * agent.h: one run of dmkagent: its configuration, the stores it has
 * opened, its audit trail, its lock, and how it reports.  The commands
 * (cmd_*.c) take a struct agent and nothing global.
 *
 * Ownership: struct agent owns its configuration, its opened stores, the
 * audit handle, the lock and the registration state; agent_free() closes and
 * frees them (stores revoke what they created).  A struct store * handed
 * out by agent_store() stays the agent's: never close or free it.  A secret
 * from agent_resolve() is the caller's to secret_free(); *ver is filled in
 * place.  Audit calls copy what they write and take no secret.
 */
#ifndef DMK_AGENT_H
#define DMK_AGENT_H

#include <stdio.h>

#include "core/dmk.h"
#include "config.h"
#include "audit.h"

struct secret;
struct store;
struct prov_version;
struct audit_ship;

enum output_mode { OUTPUT_TEXT = 0, OUTPUT_JSON };

struct agent {
	struct config *cfg;
	char config_path[4096];
	struct store *stores;        /* parallel to cfg->stores; opened lazily */
	int *store_state;            /* 0 closed, 1 open, -1 opening (cycle guard) */
	struct audit audit;
	int audit_open;
	const char *audit_reset_reason; /* audit reset-checkpoint: the operator's reason */
	const char *reason, *ticket;  /* --reason, --ticket: into records and markers */
	const char *trigger;          /* what started the run (schedule, event id), or NULL */
	struct audit_ship *ship;      /* audit_syslog: records shipped off the host; or NULL */
	struct store *anchor_store;  /* its own instance: written under the audit lock */
	char run_id[33];
	enum output_mode output;
	int verbose, quiet;
	long long wait_seconds;      /* --wait */
	const char *command;         /* the running command's name (hooks, metrics) */
	int lock_fd;
	FILE *out;                   /* stdout, or a test's stream */
	struct json_t *regstate;     /* state_dir/registered.json, read once (replicas.c) */
	int regstate_dirty;          /* changed since last written */
	/* Called before each change made under a store lease (rotate, recover,
	 * and the backup they take): 0 go on, else stop (DMK_ERR_LOCKED: the
	 * lease was lost).  NULL outside a lease. */
	int (*guard)(void *ctx, struct dmk_err *err);
	void *guard_ctx;
	/* An AG job of --jobs (agent_job_init): its own stores, output and
	 * guard; the audit trail and registration state are parent's. */
	struct agent *parent;
};

void agent_init(struct agent *a);
void agent_free(struct agent *a);
int agent_load_config(struct agent *a, const char *path, struct dmk_err *err);

/*
 * One AG job of --jobs N, run in its own thread: a copy of parent that
 * opens its own store handles (a store handle is used by one thread) and
 * writes its text to out; audit records and registered.json go to parent
 * (agent_audit, regstate_*), under their locks.  agent_job_free closes
 * the job's stores only; parent must outlive the job.
 */
int agent_job_init(struct agent *job, struct agent *parent, FILE *out, struct dmk_err *err);
void agent_job_free(struct agent *job);

/* The store named in a reference, opened (authenticated) on first use. */
int agent_store(struct agent *a, const char *name, struct store **out,
    struct dmk_err *err);
/*
 * An authentication or permission failure (DMK_ERR_AUTH, DMK_ERR_DENIED) of
 * store name: appends which credentials to fix (the [store] section's auth
 * and the references they come from, never a value).  Returns err->code.
 * A missing secret is "no such secret at REF" (agent_resolve).
 */
int agent_store_cred_hint(struct agent *a, const char *name, struct dmk_err *err);

/*
 * Resolve a reference to its secret.  ver (may be NULL) gets the store's
 * version for STORE: references.  allow_env: only for store bootstrap
 * credentials.
 */
int agent_resolve(struct agent *a, const struct secret_ref *ref, int allow_env,
    struct secret **out, struct prov_version *ver, struct dmk_err *err);

/* Before a change: a->guard, when set (0 when not). */
int agent_guard(struct agent *a, struct dmk_err *err);

/* Take the run lock and open the audit log (run start record). */
int agent_begin(struct agent *a, const char *command, struct dmk_err *err);
/* The checkpoint file in state_dir; into path. */
int agent_audit_checkpoint_path(struct agent *a, char *path, size_t len, struct dmk_err *err);
/* Read the audit anchor from its store: *found 0 when never written. */
int agent_audit_anchor_get(struct agent *a, const struct secret *key, struct audit_ckpt *c,
    int *found, struct dmk_err *err);
/* Run end record, release the lock. */
void agent_end(struct agent *a, const char *command, int result);
/* An audit record for one action; failures to audit are reported, once. */
int agent_audit(struct agent *a, const char *action, const struct audit_target *t,
    const struct audit_keys *k, const char *outcome, const char *error);
/* n records in one write and one fsync (a replica's batch). */
int agent_audit_many(struct agent *a, const struct audit_entry *e, size_t n);

#endif
