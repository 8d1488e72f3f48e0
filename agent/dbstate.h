/*
 * dbstate.h: what the store says about one database, for status and
 * verify: the version in force, an unfinished rotation (markers.h), when
 * the password was last changed and is next due, the version headroom
 * (Vault drops a key's oldest versions beyond max_versions), the last DMK
 * backup escrowed and its last passed restore test.  Reads only.
 */
#ifndef DMK_DBSTATE_H
#define DMK_DBSTATE_H

#include <time.h>

#include "agent.h"
#include "config.h"

struct db_state_view {
	int known;                    /* the store was read */
	char error[DMK_ERR_MSG_MAX];  /* why not (known == 0), or "" */
	char in_force[80];            /* the version in force, "" none */
	time_t changed;               /* when it was written (last rotation) */
	time_t next_due;              /* changed + rotate_every; 0: never due */
	/* an unfinished rotation */
	int unfinished;
	const char *step;             /* "apply" or "drop" */
	char mode[16];                /* rotate|regenerate|recover */
	char rotation[80];            /* its id */
	char new_version[80], old_version[80];
	time_t since;                 /* when its new version was written */
	/* headroom */
	long long limit;              /* versions the key keeps; 0: all */
	size_t nversions;             /* versions it holds (deleted ones too) */
	long long headroom;           /* writes before a needed one is dropped; -1: never */
	char oldest_kept[80];         /* the oldest version still needed */
	/* the DMK backup's escrow */
	time_t backup;                /* 0: none */
	char backup_version[80];
	time_t restore_test;          /* 0: none */
};

/* Fill v for db (backups: the escrow's too, one more store read); never
 * fails (v->known = 0 and v->error say why not). */
void db_state_read(struct agent *a, const struct conf_db *db, int backups,
    struct db_state_view *v);
/* The step of an unfinished rotation, for people. */
const char *db_state_step_text(const char *step);

#endif
