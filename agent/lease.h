/*
 * lease.h: one rotation at a time per database, across hosts.
 *
 * The local flock (agent_begin) stops two runs sharing a state directory;
 * the lease stops two agents on different hosts (or with different state
 * directories) from interleaving the steps of one database's rotation.
 * It is a small JSON record in the same store as the database's
 * dmk_password reference:
 *   {"state":"held"|"released","owner":"user@host","host":..,"pid":..,
 *    "machine_id":..,"boot_id":..,"pidns":..,"start":..,
 *    "nonce":..,"seq":..,"base":..,
 *    "run":RUN_ID,"command":..,"taken":RFC3339,"expires":RFC3339}
 * Taking it: create, or replace the version just read when that record is
 * released, expired (lease_ttl), or provably held by a dead process
 * (lease_decide below).  A lost race is DMK_ERR_LOCKED, never an
 * interleaving.  Release writes a released record.
 *
 * Stores with check-and-set (Vault) write with CAS on the version read.
 * Azure Key Vault has none: there every write is a new version carrying a
 * random nonce and the version it replaces ("base"); a claim then waits
 * LEASE_SETTLE_MS and lists the versions: of the claims on one base the
 * earliest (Azure's created time, then the nonce) wins, and a run's later
 * versions (same nonce, higher seq) carry its lease on.  See
 * man/dmkagent.conf.5, lease_ttl, for the race that remains.
 *
 * Before every change the holder calls lease_guard: one read of the
 * record, which must still name this run and be unexpired; once a third of
 * the TTL has passed since it last wrote the record it renews it.  Finding
 * another agent's record there means the lease was taken over: the holder
 * stops before that change and never writes over the other run's record.
 *
 * Ownership: a struct lease is the caller's (usually on its stack); it
 * borrows the agent's store (never closed here) and holds no secret: its
 * records carry identities and times only.  lease_release() is safe to call
 * on a lease not held.
 */
#ifndef DMK_LEASE_H
#define DMK_LEASE_H

#include "agent.h"
#include "providers/provider.h"

#define LEASE_SETTLE_MS 1500   /* non-CAS stores: between a claim and its count */

struct lease {
	struct store *st;
	struct secret_ref ref;        /* the lease record */
	char version[80];             /* the version we wrote last */
	char command[32];             /* written into each record */
	char nonce[33];               /* this run's claim, for stores without CAS */
	long long seq;                /* versions written under this nonce */
	long long written_ms;         /* util_now_ms() when we last wrote it */
	time_t since;                 /* created time of the version our claim replaced */
	int held;
	int renewals;                 /* how often this run renewed it */
};

/* Who a process is, as precisely as this machine can tell; have_* 0: unknown. */
struct lease_ident {
	char host[256];
	long long pid;
	char machine[65];             /* /etc/machine-id */
	char boot[65];                /* /proc/sys/kernel/random/boot_id */
	unsigned long long pidns;     /* inode of /proc/self/ns/pid */
	unsigned long long start;     /* field 22 of /proc/PID/stat, ticks since boot */
	time_t boot_time;             /* btime of /proc/stat (local identity only) */
	int have_machine, have_boot, have_pidns, have_start;
};

/* A lease record as read from the store; every field checked. */
struct lease_holder {
	int held;                     /* state "held" (else "released") */
	char run[65], owner[65], command[33], nonce[33], base[80];
	char expires_s[40];
	time_t expires, taken;        /* taken: when the record was written; 0 unknown */
	long long seq;                /* -1: none */
	struct lease_ident id;        /* host, pid, and the have_* fields present */
};

/* What /proc says of the holder's pid in our own namespace. */
enum lease_proc_state { LEASE_PROC_UNKNOWN = 0, LEASE_PROC_GONE, LEASE_PROC_ALIVE };
struct lease_proc {
	int state;
	unsigned long long start;     /* when ALIVE and have_start */
	int have_start;
};

enum lease_decision { LEASE_WAIT = 0, LEASE_TAKE = 1 };

/*
 * Parse a record (text of len bytes) read from ref.  0, or
 * DMK_ERR_PROTOCOL naming ref and the field when it is not a lease record
 * (wrong JSON, wrong type, out of range, too long).  Missing identity
 * fields (an older agent's record) are not an error: have_* stay 0.
 */
int lease_parse(const char *text, size_t len, const char *ref, struct lease_holder *h,
    struct dmk_err *err);
/*
 * May a record be replaced before anything else is known?  Pure: no
 * system calls.  LEASE_TAKE when released, ours (my_run), expired at now,
 * or provably dead: same host, machine id, and boot id, same PID
 * namespace, and no process with its pid or one with another start time;
 * or same machine id, another boot id, and written before this boot.
 * Anything not proven is LEASE_WAIT.  why gets the reason (either way).
 */
int lease_decide(const struct lease_holder *h, const char *my_run,
    const struct lease_ident *me, const struct lease_proc *proc, time_t now,
    char *why, size_t wl);
/* This process's identity; fields it cannot read stay unknown. */
void lease_self(struct lease_ident *me);
/* What /proc (in our PID namespace) says of pid. */
void lease_proc_of(long long pid, struct lease_proc *p);

/*
 * Take the lease of database db of AG ag, in the store of near (the
 * database's dmk_password reference), waiting up to a->wait_seconds.
 */
int lease_take(struct agent *a, const struct secret_ref *near, const char *ag,
    const char *db, const char *command, struct lease *l, struct dmk_err *err);
/*
 * The same for a whole AG (run --shard): record dmkagent/ag-leases/AG
 * (flat stores: dmkagent-aglease-AG) in the store of near.  Two processes
 * given the same shard, or shards counted with different N, never work on
 * one AG at once: the loser gets DMK_ERR_LOCKED.  Released as any lease.
 */
int lease_take_ag(struct agent *a, const struct secret_ref *near, const char *ag,
    const char *command, struct lease *l, struct dmk_err *err);
/*
 * Before a change: read the record and confirm it still names this run
 * and is unexpired; renew it once a third of lease_ttl has passed since it
 * was written (no-op when not held).  1 renewed, 0 still ours, or an
 * error: DMK_ERR_LOCKED when another agent holds it now (stop before the
 * change).  A store that cannot be asked while two thirds of the TTL are
 * still left is only a warning (no one else may take it before it
 * expires); later it is an error.
 */
int lease_guard(struct agent *a, struct lease *l, struct dmk_err *err);
/* Release (no-op when not held); failures are reported once and returned. */
int lease_release(struct agent *a, struct lease *l, struct dmk_err *err);

#endif
