/*
 * audit.h: the audit trail, hash-chained JSON lines.
 *
 * One record per run start and end and per state-changing action:
 *   seq, time, run_id, actor{user,uid,host,pid}, action,
 *   target{ag,replica,database}, keys{dmk_key_guid,cert_thumbprint,store,
 *   reference,version,rotation}, outcome, error, [note], [about_run],
 *   [why{reason,ticket,trigger}], [credential{store,sql}], prev, [mac]
 * why is the run's --reason, --ticket and trigger, in every record of the
 * run that has one; credential names what the store and SQL Server saw
 * (an AppRole mount, an Entra client id, a SQL login: never a secret).
 * prev is the SHA-256 (hex) of the previous line's bytes (64 zeros for the
 * first record); mac, when an audit key is configured, is HMAC-SHA-256 over
 * the line's bytes up to the mac member, and is always the last member.
 *
 * The API takes names, identifiers and outcomes only: there is no way to
 * hand it a struct secret.  Records are appended with O_APPEND under an
 * exclusive flock and fsync'd before the call returns (a batch: one write,
 * one fsync); the file is created 0600.  The path is opened anew for each
 * batch, so a log renamed away (logrotate create) is not written after.
 *
 * The checkpoint.  A chain shows changes inside the log but not a cut tail.
 * After every batch, still under the log's flock, the head (seq and hash of
 * the last record) is written to a checkpoint file (atomically: a 0600 temp
 * file made O_EXCL|O_NOFOLLOW, fsync, rename), MAC'd with the audit key when
 * there is one, and handed to an optional anchor (the agent puts it in the
 * secret store).  Before a batch the log must still hold the checkpoint's
 * head: the record at its seq hashes to its head (or the next record's prev
 * is it).  Otherwise the batch is refused.  Records the agent adds by itself,
 * first in a batch, each with a "note":
 *   log-continues       the file is empty but the checkpoint is not (the log
 *                       was rotated): seq and prev continue the previous head
 *   checkpoint-created  a log with records but no checkpoint (first run after
 *                       an upgrade, or the checkpoint was removed)
 *   checkpoint-reset    the operator accepted the log as it is (reset_reason)
 *   run-interrupted     the last record is not a run-end of another run: that
 *                       run was killed; "about_run" names it
 */
#ifndef DMK_AUDIT_H
#define DMK_AUDIT_H

#include <sys/types.h>

#include "core/dmk.h"
#include "core/buf.h"

struct secret;

struct audit_target {
	const char *ag;
	const char *replica;
	const char *database;
};

struct audit_keys {
	const char *dmk_key_guid;
	const char *cert_thumbprint;
	const char *store;
	const char *reference;
	const char *version;
	const char *family_guid;
	const char *rotation;      /* the rotation id (dmkagent-rotation), or NULL */
};

/* The head of the log as the agent last wrote it. */
struct audit_ckpt {
	long long seq;             /* 0: an empty log */
	char head[65];             /* hash of record seq (64 zeros when seq 0) */
	char log[4096];            /* the log's path when written (informational) */
	char last_run[33];         /* run_id of the last record */
	int run_open;              /* the last record is not a run-end */
	int keyed;                 /* carries a MAC */
	int mac_checked;           /* and it was checked with a key */
};

/*
 * Who a store and an AG's SQL Server see this run as: into store_id and
 * login ("" when unknown).  Names only: never a secret.
 */
typedef void (*audit_describe_fn)(void *ctx, const char *store, const char *ag,
    char *store_id, size_t slen, char *login, size_t llen);
/* After each batch is durable (and the log unlocked): shipping. */
typedef void (*audit_after_fn)(void *ctx);

/* Where the anchor goes: the agent puts text into the secret store. */
typedef int (*audit_anchor_fn)(void *ctx, const char *text, struct dmk_err *err);

struct audit {
	int fd;
	char path[4096];
	char run_id[33];
	struct secret *key;        /* HMAC key, or NULL; owned */
	char user[64];
	uid_t uid;
	char host[256];
	pid_t pid;
	char ckpt_path[4096];      /* "": no checkpoint kept */
	const char *reset_reason;  /* next batch: accept the log, checkpoint-reset */
	struct audit_ckpt expect;  /* a checkpoint from elsewhere (the anchor) */
	int has_expect;            /* compared before the first batch only */
	int started;               /* a batch was written */
	audit_anchor_fn anchor;    /* NULL: none */
	void *anchor_ctx;
	char anchor_err[512];      /* the last anchor failure, audited next batch */
	const char *reason;        /* why: --reason, --ticket, the trigger; NULL none */
	const char *ticket;
	const char *trigger;
	audit_describe_fn describe; /* NULL: no credential member */
	void *describe_ctx;
	audit_after_fn after;      /* NULL: none */
	void *after_ctx;
};

/* The highest seq an append continues from (a forged one is refused). */
#define AUDIT_SEQ_MAX 1000000000000000LL

/* One record to append: what audit_record takes, as a value. */
struct audit_entry {
	const char *action;
	const struct audit_target *target;
	const struct audit_keys *keys;
	const char *outcome;
	const char *error;
	const char *note;          /* optional */
	const char *about_run;     /* optional: another run's run_id */
};

/* key may be NULL; it is copied. */
int audit_open(struct audit *a, const char *path, const struct secret *key,
    const char *run_id, struct dmk_err *err);
int audit_record(struct audit *a, const char *action, const struct audit_target *t,
    const struct audit_keys *k, const char *outcome, const char *error,
    struct dmk_err *err);
/* n records chained in order, one write and one fsync: all or none. */
int audit_record_many(struct audit *a, const struct audit_entry *e, size_t n,
    struct dmk_err *err);
void audit_close(struct audit *a);
/* Keep a checkpoint at path (state_dir/audit-checkpoint.json) from now on. */
int audit_use_checkpoint(struct audit *a, const char *path, struct dmk_err *err);

/*
 * Checkpoints as text: one JSON line, the MAC (when key) last as in records.
 * parse: src names the text in messages; with a key a missing or wrong MAC
 * is an error.  read: *found 0 when the file does not exist.
 */
int audit_ckpt_encode(const struct audit_ckpt *c, const struct secret *key,
    struct buf *out, struct dmk_err *err);
int audit_ckpt_parse(const char *text, size_t len, const struct secret *key,
    const char *src, struct audit_ckpt *c, struct dmk_err *err);
int audit_ckpt_read(const char *path, const struct secret *key, struct audit_ckpt *c,
    int *found, struct dmk_err *err);

/*
 * Check the chain (and each MAC when key is given).  Returns 0 when intact,
 * DMK_ERR_VERIFY naming the first bad line otherwise.  *nrecords gets the
 * number of good records read.
 */
int audit_verify(const char *path, const struct secret *key, long long *nrecords,
    int *macs_seen, struct dmk_err *err);

/*
 * Verify several files as one log, in the order given: the chain must run
 * across each boundary (the next file opens with log-continues at the
 * previous head), then the head is compared with each checkpoint.
 * Runs: a run-start whose run has no run-end and is not named by a later
 * run-interrupted, before another run-start, is an error (its tail was
 * removed); one still open at the end is a note (running now, or killed).
 * Notes (one per line) go to rep->notes.  Errors name FILE:LINE.
 */
#define AUDIT_VERIFY_FILES_MAX 64

struct audit_check {
	const char *name;          /* the checkpoint's file or reference */
	const struct audit_ckpt *ckpt;
};

struct audit_file_report {
	long long nrecords;
	long long first_seq;       /* 0: no records */
	int continues;             /* opens with log-continues */
	int macs_seen, macs_checked;
};

struct audit_report {
	long long nrecords, head_seq;
	char head[65];
	int macs_seen, macs_checked;
	struct audit_file_report file[AUDIT_VERIFY_FILES_MAX];
	struct buf notes;          /* initialised and freed by the caller */
};

int audit_verify_files(const char *const *paths, size_t npaths, const struct secret *key,
    const struct audit_check *chk, size_t nchk, struct audit_report *rep,
    struct dmk_err *err);

#endif
