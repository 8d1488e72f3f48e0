/*
 * markers.h: what the agent's markers on store versions mean.
 *
 * Every `dmkagent-*` key the agent writes on a store version is named here,
 * and the rules that read them are here too, as pure functions over a list
 * of versions (oldest first, as prov_ops.list_versions returns them): which
 * version is in force, and where an unfinished rotation stopped.  No store
 * I/O happens in this module, so every resume case is a table-driven unit
 * test (tests/unit/test_markers.c) as well as a cell of the fault matrix.
 *
 * States (MARK_STATE): pending (written before SQL Server knows it),
 * current (in force), retiring (replaced; its password is being dropped),
 * retired (dropped everywhere).  A version with no state is an operator's
 * or an older agent's write and counts as current.
 */
#ifndef DMK_MARKERS_H
#define DMK_MARKERS_H

#include <stddef.h>

#include "providers/provider.h"

/* Every version the agent writes. */
#define MARK_STATE     "dmkagent-state"     /* pending|current|retiring|retired */
#define MARK_ROTATION  "dmkagent-rotation"  /* the rotation id that wrote or tagged it */
#define MARK_BY        "dmkagent-by"        /* user@host */
#define MARK_TIME      "dmkagent-time"      /* RFC 3339 */
/* Why, on the versions a changing command writes (--reason, --ticket). */
#define MARK_REASON    "dmkagent-reason"    /* 1 to MARK_REASON_MAX bytes of UTF-8 */
#define MARK_TICKET    "dmkagent-ticket"    /* 1 to MARK_TICKET_MAX of [A-Za-z0-9._:/#-] */
/* A pending password version. */
#define MARK_MODE      "dmkagent-mode"      /* rotate|regenerate|recover */
#define MARK_REPLACES  "dmkagent-replaces"  /* the version it replaces */
#define MARK_BACKUP    "dmkagent-backup"    /* the DMK backup escrow version taken first */
/* An escrowed backup (backup.h). */
#define MARK_BEFORE    "dmkagent-before"    /* the newest password version when taken */
#define MARK_KIND      "dmkagent-kind"      /* certificate|dmk|smk|backup-password */
#define MARK_THUMB     "dmkagent-thumbprint"
#define MARK_GUID      "dmkagent-key-guid"
#define MARK_NODE      "dmkagent-node"
#define MARK_PWVER     "dmkagent-password-version"
#define MARK_RESTORED  "dmkagent-restore-tested" /* RFC 3339: a restore test passed */

/* Azure Key Vault takes 256 characters per tag value (Vault 512 bytes). */
#define MARK_REASON_MAX 256
#define MARK_TICKET_MAX 64

enum mk_mode { MK_MODE_ROTATE = 0, MK_MODE_REGENERATE, MK_MODE_RECOVER };

/* Where a rotation starts, from the store's side alone. */
enum mk_start {
	MK_START_NEW = 1,   /* nothing unfinished: a new rotation may begin */
	MK_RESUME_PENDING,  /* a pending version: SQL Server says whether it was applied */
	MK_RESUME_DROP,     /* the new version is current; the old one is left to drop */
};

/*
 * The plan: indices into the version list, -1 for none.  Pointers (rotation)
 * point into the list, which the caller keeps alive.
 */
struct mk_plan {
	enum mk_start start;
	int resumed;              /* an unfinished rotation was found */
	int mode_known;           /* mode came from a pending version's marker */
	enum mk_mode mode;
	long latest;              /* the newest version, live or not (check-and-set) */
	long pending;             /* the newest live version, when it is pending */
	long current;             /* the newest live version marked current or unmarked */
	long retiring;            /* the newest live version marked retiring */
	long oldv;                /* the version being replaced */
	long newv;                /* the version replacing it (resume only) */
	long prev;                /* start NEW on an unmarked current version: the older
	                             live one behind it, marked current or unmarked
	                             (an operator's write on top of it) */
	const char *rotation;     /* rotation id of the unfinished rotation, or "" */
};

/* Not deleted, destroyed or disabled. */
int markers_live(const struct prov_version *v);
/* The version's MARK_STATE, or "" when it has none. */
const char *markers_state(const struct prov_version *v);
/* Where things stand; never fails (an empty list plans MK_START_NEW with nothing). */
void markers_plan(const struct prov_version *v, size_t n, struct mk_plan *out);
/* The version in force: the newest live one that is current or unmarked; -1 none. */
long markers_in_force(const struct prov_version *v, size_t n);
/*
 * Must version i stay in the store (struct store's keep)?  The version in
 * force, and every live pending, current or retiring one: dropping one of
 * them could lose the password that opens a DMK.
 */
int markers_keep(const struct prov_version *v, size_t n, size_t i);
/* Stamp m with state (may be NULL: none), MARK_BY (this user@host) and MARK_TIME (now). */
void markers_stamp(struct prov_meta *m, const char *state);
const char *markers_mode_name(enum mk_mode mode);
/*
 * The run's reason and ticket (NULL: none), kept for markers_why(); the
 * strings must outlive the run (argv).  markers_why() adds MARK_REASON and
 * MARK_TICKET to m for each that is set: on the versions a run writes, not
 * on the later state changes of versions another run wrote.
 */
void markers_set_why(const char *reason, const char *ticket);
void markers_why(struct prov_meta *m);
/* 0 when acceptable as a marker value; else DMK_ERR_USAGE with a message. */
int markers_check_reason(const char *s, struct dmk_err *err);
int markers_check_ticket(const char *s, struct dmk_err *err);

#endif
