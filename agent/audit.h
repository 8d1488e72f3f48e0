/*
 * audit.h: the audit trail, hash-chained JSON lines.
 *
 * One record per run start and end and per state-changing action:
 *   seq, time, run_id, actor{user,uid,host,pid}, action,
 *   target{ag,replica,database}, keys{dmk_key_guid,cert_thumbprint,store,
 *   reference,version}, outcome, error, prev, [mac]
 * prev is the SHA-256 (hex) of the previous line's bytes (64 zeros for the
 * first record); mac, when an audit key is configured, is HMAC-SHA-256 over
 * the line's bytes up to the mac member, and is always the last member.
 *
 * The API takes names, identifiers and outcomes only: there is no way to
 * hand it a struct secret.  Records are appended with O_APPEND under an
 * exclusive flock and fsync'd before the call returns (a batch: one write,
 * one fsync); the file is created 0600.
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
};

struct audit {
	int fd;
	char path[4096];
	char run_id[33];
	struct secret *key;        /* HMAC key, or NULL; owned */
	char user[64];
	uid_t uid;
	char host[256];
	pid_t pid;
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

/*
 * Check the chain (and each MAC when key is given).  Returns 0 when intact,
 * DMK_ERR_VERIFY naming the first bad line otherwise.  *nrecords gets the
 * number of good records read.
 */
int audit_verify(const char *path, const struct secret *key, long long *nrecords,
    int *macs_seen, struct dmk_err *err);

#endif
