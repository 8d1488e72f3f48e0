/*
 * lease.h: one rotation at a time per database, across hosts.
 *
 * The local flock (agent_begin) stops two runs sharing a state directory;
 * the lease stops two agents on different hosts (or with different state
 * directories) from interleaving the steps of one database's rotation.
 * It is a small JSON record in the same store as the database's
 * dmk_password reference, written only with check-and-set:
 *   {"state":"held"|"released","owner":"user@host","host":..,"pid":..,
 *    "run":RUN_ID,"command":..,"taken":RFC3339,"expires":RFC3339}
 * Taking it: create with expect "0", or replace the version just read when
 * that record is released, expired (lease_ttl), or held by a process of
 * this host that no longer exists (a crashed run: the local lock, which
 * the caller holds, proves no live run of ours is using it).  A lost race
 * is DMK_ERR_LOCKED, never an interleaving.  Release writes a released
 * record with check-and-set on the version we wrote.
 *
 * A run may outlast lease_ttl, so the holder renews: between steps, once a
 * third of the TTL has passed since it last wrote the record, it writes it
 * again with a new expiry, with check-and-set on its own version.  Finding
 * another agent's record there means the lease was taken over (this run
 * was stalled past its expiry): the holder stops before its next change.
 */
#ifndef DMK_LEASE_H
#define DMK_LEASE_H

#include "agent.h"
#include "providers/provider.h"

struct lease {
	struct store *st;
	struct secret_ref ref;        /* the lease record */
	char version[80];             /* the version we wrote */
	char command[32];             /* written into each record */
	long long written_ms;         /* util_now_ms() when we last wrote it */
	int held;
	int renewals;                 /* how often this run renewed it */
};

/*
 * Take the lease of database db of AG ag, in the store of near (the
 * database's dmk_password reference), waiting up to a->wait_seconds.
 */
int lease_take(struct agent *a, const struct secret_ref *near, const char *ag,
    const char *db, const char *command, struct lease *l, struct dmk_err *err);
/*
 * Renew the lease when more than a third of lease_ttl has passed since it
 * was written (no-op when not held).  1 renewed, 0 not due, or an error:
 * DMK_ERR_LOCKED when another agent holds it now (stop before the next
 * change).  A store that cannot be asked while two thirds of the TTL are
 * still left is only a warning (no one else may take it before it
 * expires); later it is an error.
 */
int lease_renew(struct agent *a, struct lease *l, struct dmk_err *err);
/* Release (no-op when not held); failures are reported once and returned. */
int lease_release(struct agent *a, struct lease *l, struct dmk_err *err);

#endif
