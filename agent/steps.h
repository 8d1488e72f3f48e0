/*
 * steps.h: the commands' steps for one opened availability group, called
 * by their own command (cmd_register.c, cmd_rotate.c, cmd_backup.c, cmd_verify.c) and by
 * the ones that chain them in-process (cmd_run.c, cmd_watch.c).
 *
 * Each takes the runner's context (agcmd.h), reports its failures once
 * through agcmd_fail(), fires the deploy hook for each change
 * (deployhook.h), and fills jag (the step's JSON object) the way its own
 * command does.  None takes the lock or writes run records: the runner did.
 */
#ifndef DMK_STEPS_H
#define DMK_STEPS_H

#include <jansson.h>

#include "agcmd.h"

/* Which rotations rotate_database() may carry out. */
enum rot_when {
	ROT_ALWAYS = 0,     /* rotate: finish an unfinished one, else a new one */
	ROT_IF_DUE,         /* rotate --if-due: a new one only when rotate_every passed */
	ROT_RESUME_ONLY,    /* finish an unfinished one; never start one */
	ROT_ADOPT_ONLY,     /* a newest unmarked version written by someone else, on top
	                       of a current one: apply it (adopt_unmarked); never
	                       generate a password */
};

/*
 * One database (run->plans[j]) through the rotation state machine.  Its
 * entry goes into jdbs; *outcome (may be NULL) gets the report's outcome
 * word ("rotated", "finished", "unchanged", "not-due", "stopped", ...).
 * Returns the database's outcome (already reported).
 */
int rotate_database(struct agcmd_ctx *c, struct ag_run *run, size_t j, enum rot_when when,
    int regenerate, int no_backup, json_t *jdbs, const char **outcome);
/*
 * Databases run->plans[js[0..n-1]] together, step by step across them
 * (rotation.c, rot_batch: each step for all before the next, one replica
 * wave per step), each reported as rotate_database does; outcomes[k] (may
 * be NULL) gets each one's outcome word.
 */
#define ROT_BATCH_DEFAULT 100
#define ROT_BATCH_MAX 10000
void rotate_databases(struct agcmd_ctx *c, struct ag_run *run, const size_t *js, size_t n,
    enum rot_when when, int regenerate, int no_backup, json_t *jdbs, const char **outcomes);

/* register on every replica (--prune: prune); *changed += credentials added. */
int register_steps(struct agcmd_ctx *c, struct ag_run *run, json_t *jag, int prune,
    size_t *changed);

/*
 * backup: want[j] (parallel to run->plans) 0 skip, 1 escrow, 2 escrow and
 * restore-test.  *escrowed += backups escrowed.  A passed restore test is
 * marked on the DMK backup's escrow version (MARK_RESTORED).
 */
int backup_steps(struct agcmd_ctx *c, struct ag_run *run, const int *want, json_t *jag,
    size_t *escrowed);

/* verify; afterwards run->reps[i].dbs[j].outcome is OUT_OK where it passed. */
int verify_steps(struct agcmd_ctx *c, struct ag_run *run, json_t *jag);

#endif
