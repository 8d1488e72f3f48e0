/*
 * auditrep.h: audit records turned into rollovers, for `audit report`.
 *
 * Pure: records in (a JSON array of parsed audit records, in log order,
 * already verified by the caller), a JSON model out; no I/O, no clock (the
 * caller passes now).  The model is what `audit report --output json`
 * prints (dmkagent(1) documents it); the text, CSV and HTML renderings in
 * cmd_audit_report.c read nothing else.
 *
 * A rollover is one rotation id of one database: the records of every run
 * that worked on it (rotate-* or recover-*, keys.rotation), so a rotation
 * that was interrupted and finished by a later run appears once, with both
 * runs.  Records of a run that have no rotation id yet (lease, prove, the
 * backup taken first) belong to the rotation the same run goes on to write;
 * a run that stopped before it had one is a rollover of its own whose
 * rotation is "" (it changed nothing but the backup).  The backup-* and
 * restore-test records of that run and database are its backup evidence.
 */
#ifndef DMK_AUDITREP_H
#define DMK_AUDITREP_H

#include <time.h>

#include <jansson.h>

struct arep_filter {
	time_t since, until;       /* 0: open */
	const char *ag;            /* AG name, or NULL */
	const char *database;      /* database name, or NULL */
};

/* A configured database, for the policy section. */
struct arep_db {
	const char *ag;            /* the AG's name */
	const char *database;
	long long rotate_every;    /* seconds; 0: no schedule */
	long long backup_every;    /* seconds; 0: no schedule */
};

/*
 * The rollovers, oldest first, filtered: a new JSON array (the caller's),
 * or NULL when out of memory.  Each element:
 *   {ag, database, rotation, command, mode, start, end, outcome, step,
 *    old_version, new_version, reason, ticket, trigger, who[],
 *    credential{store,sql}, backup{reference,version,escrowed[],
 *    restore_test}, runs[{run_id, command, start, end, user, host, reason,
 *    ticket, trigger, outcome, interrupted, resumed}], replicas[{name,
 *    registered, verified, old_revoked}], primary{added, old_dropped},
 *    errors[]}
 * outcome: completed | stopped | interrupted | in progress | incomplete.
 */
json_t *arep_rollovers(json_t *records, const struct arep_filter *f);

/*
 * Password and backup age per configured database against its schedule:
 * a new array, overdue first (then the oldest first).  Each element:
 *   {ag, database, rotate_every, last_rollover, password_age, last_backup,
 *    backup_every, backup_age, overdue, status}
 * ages in seconds (null when the logs hold none), status a short sentence.
 * all is arep_rollovers() of every record, unfiltered by time.
 */
json_t *arep_policy(json_t *all, json_t *records, const struct arep_db *dbs, size_t ndbs,
    time_t now);

#endif
