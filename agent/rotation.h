/*
 * rotation.h: the rotation state machine (rotation.c) as the commands that
 * drive it (cmd_rotate.c: rotate, recover, and run's rotate_database) see it.
 * Private to those two files.  struct rot is one database's rotation: it
 * owns its passwords (rot_free wipes them) and its primary session; the
 * AG run, plan and store are borrowed.
 */
#ifndef DMK_ROTATION_H
#define DMK_ROTATION_H

#include "core/dmk.h"
#include "core/secret.h"
#include "lease.h"
#include "markers.h"
#include "replicas.h"
#include "steps.h"

#define ROT_MAX_STEPS 24

enum rot_mode {
	MODE_ROTATE = MK_MODE_ROTATE, MODE_REGENERATE = MK_MODE_REGENERATE,
	MODE_RECOVER = MK_MODE_RECOVER,
};

enum rot_step {
	STEP_PROVE = 1, STEP_APPLY, STEP_REGISTER, STEP_VERIFY, STEP_DROP, STEP_DONE,
};
extern const char *const rot_step_names[];   /* by enum rot_step */

struct rot {
	struct agent *a;
	struct ag_run *run;
	size_t pi;
	struct db_plan *p;
	const char *cmd;              /* "rotate" or "recover": failpoints and audit */
	struct store *st;
	const struct secret_ref *ref;
	struct sql_session *ps;       /* the primary, through the listener */
	int mode, step, resumed, dry;
	int recover_ok;               /* recover: this primary's SMK opens the DMK */
	char rid[33];
	char latest[80];              /* the newest version, for check-and-set */
	int have_old, have_new;
	int missing;                    /* the store has no secret at ref (a typo?) */
	struct secret *oldpw, *newpw;
	struct prov_version oldv, newv;
	int have_prev;                /* an older version marked current, behind an unmarked one */
	struct prov_version prevv;
	char note[256];               /* why a step was skipped, for the report */
	struct lease *lease;          /* NULL: none (dry run, or a file: reference); else &l */
	struct lease l;
	int no_end;                   /* the lease was refused: nothing to release */
	int was_resumed;              /* this round's step came from the store's markers */
	int wave;                     /* the step's part before asks for a replica wave */
	/* What this run saw or did on the primary, so as not to ask twice
	 * (rot_probe); reset whenever the passwords are read again. */
	int old_opens;                /* oldpw opened the DMK in this run */
	int new_opens;                /* newpw opened it, or this run added it */
	int new_fresh;                /* newpw generated in this run: not on the DMK */
	int added_bulk;               /* step 4 done for it by the batch (rot_add_many) */
	int dropped_bulk;             /* step 7's drop on the primary done by the batch */
	const char *what;             /* that wave, for messages */
	int no_backup;                /* --no-backup */
	enum rot_when when;           /* which rotations this run may carry out */
	int backed_up;                /* a backup for r->rid is in the store */
	char bkver[80];               /* its version of the DMK backup escrow */
	/* for the report (--output json) */
	const char *outcome;
	char msg[512];                /* the last thing said */
	char rep_old[80], rep_new[80], rep_rid[33];
	int rep_resumed;
	int renewals;                 /* of the lease, in this run */
	const char *bk_outcome;       /* escrowed, already escrowed, skipped, failed */
	const char *steps[ROT_MAX_STEPS];  /* boundaries passed in this run */
	size_t nsteps;
};

void rot_reps_free(struct ag_run *run);
int rot_analyse(struct rot *r, struct dmk_err *err);
int rot_db(struct rot *r, int if_due, struct dmk_err *err);
/* Databases of one AG run together, step by step (rotation.c); each gets
 * its own result in rcs[k], errs[k]. */
void rot_batch(struct rot **rs, size_t n, int if_due, int *rcs, struct dmk_err *errs);
int rot_facts(struct rot *r, struct dmk_err *err);
void rot_free(struct rot *r);
int rot_probe(struct rot *r, const struct secret *pw, struct dmk_err *err);
void rot_versions(struct rot *r);
int rot_where(struct rot *r, struct dmk_err *err);
void rot_say(struct rot *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
