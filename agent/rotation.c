/*
 * rotation.c: the state machine under rotate and recover: a new DMK password for each
 * database, without a moment in which some replica could not open its DMK
 * with a password the store holds.
 *
 * The state machine (one database at a time, under the store lease and
 * the local lock; "fp" is the failpoint at each boundary, CMD:after-...):
 *   1 lease         take the store lease                       fp after-lease
 *   2 prove         the store's current password opens the DMK
 *                   on the primary (recover: the DMK opens by
 *                   itself there, through the node's SMK)       fp after-prove
 *     backup        certificates and DMK escrowed in the store
 *                   (backup.h), tagged with the rotation id;
 *                   refused without one unless --no-backup
 *                   (never for --regenerate)                   fp after-backup
 *   3 pending       a generated password written to the store
 *                   as a new version marked pending, with
 *                   check-and-set on the newest version        fp after-pending
 *   4 apply         ALTER MASTER KEY ADD ENCRYPTION BY PASSWORD
 *                   on the primary (skipped if it opens)       fp after-add
 *                   (regenerate: register first, then
 *                   REGENERATE WITH ENCRYPTION BY PASSWORD)    fp after-regenerate
 *   5 register      sp_control_dbmasterkey_password add on
 *                   every replica; the old credential stays    fp after-register
 *   6 verify+mark   every replica holds it (15594) and the DMK
 *                   opens where readable; new version marked
 *                   current, then the old one retiring          fp after-verify,
 *                                                   after-mark-current, after-verify-mark
 *   7 drop+retire   drop the old password on the primary (never
 *                   the last one), then the old credential on
 *                   every replica; old version marked retired   fp after-drop-primary,
 *                                          after-drop-replicas, after-retire
 *     release       the lease                                   fp after-release
 * Before every change (each SQL Server change, each store write, here and
 * in backup.c) the lease is checked: the doors rot_alter, rot_mark,
 * rot_write_pending, rot_each and backup.c's writes call agent_guard,
 * which reads the lease record (renewing it once a third of lease_ttl has
 * passed); a lease found taken over stops the run there (DMK_ERR_LOCKED),
 * before that change.
 * Resume: the store's markers say where a run stopped.  The newest version
 * marked pending is an unfinished rotation (its dmkagent-replaces marker
 * names the old version); SQL Server then says whether step 4 happened
 * (the new password opens the DMK on the primary).  A current version
 * whose replaced version is not yet retired, or a version marked
 * retiring, means step 7 is left.  The backup is found again by its
 * markers (dmkagent-rotation, and dmkagent-before: the newest password
 * version when it was taken), so a rerun does not take a second one: not
 * after a stop between backup and pending either, where the rerun takes
 * over that backup's rotation id.  A resumed rotation with no backup for
 * its id (--no-backup before, or an older agent) takes one before step 4.
 * The invariant at every boundary: the old password stays on the DMK and
 * registered everywhere until the new one is proven on the primary and
 * registered on every replica.
 */
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "cli.h"
#include "failpoint.h"
#include "genpass.h"
#include "lease.h"
#include "markers.h"
#include "backup.h"
#include "agcmd.h"
#include "deployhook.h"
#include "steps.h"
#include "rotation.h"

const char *const rot_step_names[] = { "", "prove the current password and write a new "
	"pending version", "put the new password on the DMK (primary)", "register it on every "
	"replica", "verify every replica and mark it current", "drop the old password and "
	"retire it", "nothing left" };


/* A step boundary: recorded for the report, then the failpoint. */
static void
rot_fp(struct rot *r, const char *boundary)
{
	char name[96];

	if (r->nsteps < ROT_MAX_STEPS)
		r->steps[r->nsteps++] = boundary + (strncmp(boundary, "after-", 6) == 0 ? 6 : 0);
	snprintf(name, sizeof(name), "%s:%s", r->cmd, boundary);
	failpoint(name);
}

static void
rot_audit(struct rot *r, const char *action, const char *replica, const char *version,
    const char *outcome, const char *error)
{
	struct audit_target t = { r->run->ag->name, replica, r->p->db->name };
	struct audit_keys k = { r->p->primary_keys.dmk_key_guid, NULL, r->p->store,
	    r->ref->text, version, r->p->primary_keys.family_guid, r->rid };
	char act[64];

	snprintf(act, sizeof(act), "%s-%s", r->cmd, action);
	agent_audit(r->a, act, &t, &k, outcome, error);
}

void
rot_free(struct rot *r)
{
	secret_free(r->oldpw);
	secret_free(r->newpw);
	r->oldpw = r->newpw = NULL;
	r->have_old = r->have_new = 0;
	r->ps = NULL;    /* the run's */
}

void
rot_reps_free(struct ag_run *run)
{
	size_t i;

	for (i = 0; i < run->nreps; i++)
		free(run->reps[i].dbs);
	free(run->reps);
	run->reps = NULL;
	run->nreps = 0;
}

static int rot_keep(struct rot *r, struct dmk_err *err);

/* ---- the store's side ---- */

static int
rot_mark(struct rot *r, const char *version, const char *state, struct dmk_err *err)
{
	struct prov_meta m;
	char by[300];
	int rc;

	memset(&m, 0, sizeof(m));
	markers_stamp(&m, state);
	if ((rc = rot_keep(r, err)) != 0)
		return rc;
	if ((rc = store_set_meta(r->st, r->ref, version, &m, err)) != 0)
		return dmk_err_prefix(err, "%s: marking version %s %s", r->ref->text, version, state);
	snprintf(by, sizeof(by), "mark-%s", state);
	rot_audit(r, by, NULL, version, state, NULL);
	if (r->have_old && strcmp(version, r->oldv.id) == 0)
		prov_meta_set(&r->oldv.meta, MARK_STATE, state);
	if (r->have_new && strcmp(version, r->newv.id) == 0)
		prov_meta_set(&r->newv.meta, MARK_STATE, state);
	return 0;
}

/*
 * Read the store's versions and markers: where does this database stand?
 * Fills mode, step, rid, latest and the old/new versions and passwords.
 */
int
rot_analyse(struct rot *r, struct dmk_err *err)
{
	struct prov_version *v = NULL;
	struct mk_plan mp;
	size_t n = 0;
	int rc;

	secret_free(r->oldpw);
	secret_free(r->newpw);
	r->oldpw = r->newpw = NULL;
	r->have_old = r->have_new = 0;
	r->latest[0] = r->rid[0] = '\0';
	r->old_opens = r->new_opens = r->new_fresh = 0;
	if (r->ref->kind != REF_STORE)
		return dmk_errf(err, DMK_ERR_UNSUPPORTED, "%s: %s is not in a store: rotation needs "
		    "a store with versions and markers", r->p->db->name, r->ref->text);
	if ((rc = agent_store(r->a, r->ref->store, &r->st, err)) != 0)
		return rc;
	if ((rc = store_require(r->st, PROV_CAP_VERSIONS | PROV_CAP_META, "rotation", err)) != 0)
		return dmk_err_prefix(err, "%s", r->ref->text);
	rc = store_list_versions(r->st, r->ref, &v, &n, err);
	r->missing = rc == DMK_ERR_NOTFOUND;
	if (rc == DMK_ERR_NOTFOUND)
		n = 0, rc = 0;
	else if (rc != 0) {
		dmk_err_prefix(err, "%s", r->ref->text);
		return agent_store_cred_hint(r->a, r->ref->store, err);
	}
	markers_plan(v, n, &mp);
	if (mp.latest >= 0)
		util_strlcpy(r->latest, v[mp.latest].id, sizeof(r->latest));
	util_strlcpy(r->rid, mp.rotation, sizeof(r->rid));
	if (mp.mode_known)
		r->mode = (int)mp.mode;
	r->resumed = mp.resumed;
	r->step = mp.start == MK_RESUME_PENDING ? STEP_APPLY :
	    mp.start == MK_RESUME_DROP ? STEP_DROP : STEP_PROVE;
	if (mp.start == MK_START_NEW && mp.current >= 0) {
		r->have_prev = mp.prev >= 0;
		if (r->have_prev)
			r->prevv = v[mp.prev];
	}
	if (mp.newv >= 0) {
		r->newv = v[mp.newv];
		r->have_new = 1;
	}
	if (mp.oldv >= 0) {
		r->oldv = v[mp.oldv];
		r->have_old = 1;
	}
	free(v);
	if (r->have_old && (rc = store_get(r->st, r->ref, r->oldv.id, &r->oldpw, NULL,
	    err)) != 0)
		return dmk_err_prefix(err, "%s version %s", r->ref->text, r->oldv.id);
	if (r->have_new && (rc = store_get(r->st, r->ref, r->newv.id, &r->newpw, NULL,
	    err)) != 0)
		return dmk_err_prefix(err, "%s version %s", r->ref->text, r->newv.id);
	return 0;
}

/* Step 3: the new password, in the store, pending, before SQL Server knows it. */
static int
rot_write_pending(struct rot *r, struct dmk_err *err)
{
	struct pass_policy pp;
	struct prov_meta m;
	struct prov_version nv;
	int rc;

	memset(&pp, 0, sizeof(pp));
	pp.length = r->a->cfg->password_length;
	util_strlcpy(pp.avoid, r->a->cfg->password_avoid, sizeof(pp.avoid));
	if ((rc = rot_keep(r, err)) != 0 || (rc = genpass(&pp, &r->newpw, err)) != 0)
		return rc;
	r->new_opens = 0;
	r->new_fresh = 1;    /* SQL Server cannot know it before step 4 */
	if (r->rid[0] == '\0')    /* else the id the backup was tagged with */
		util_random_id(r->rid, sizeof(r->rid));
	memset(&m, 0, sizeof(m));
	markers_stamp(&m, "pending");
	prov_meta_set(&m, MARK_ROTATION, r->rid);
	prov_meta_set(&m, MARK_MODE, markers_mode_name((enum mk_mode)r->mode));
	markers_why(&m);
	if (r->have_old)
		prov_meta_set(&m, MARK_REPLACES, r->oldv.id);
	if (r->bkver[0])
		prov_meta_set(&m, MARK_BACKUP, r->bkver);
	memset(&nv, 0, sizeof(nv));
	rc = store_put(r->st, r->ref, r->newpw, r->latest[0] ? r->latest : "0", &m, &nv, err);
	if (rc != 0 && nv.id[0] != '\0') {
		/* the version landed but its markers did not: once more */
		struct dmk_err e2;
		if (store_set_meta(r->st, r->ref, nv.id, &m, &e2) == 0)
			rc = 0;
	}
	if (rc != 0) {
		rot_audit(r, "pending", NULL, nv.id[0] ? nv.id : NULL, "failed", err->msg);
		return dmk_err_prefix(err, "%s: writing the new pending version", r->p->db->name);
	}
	r->newv = nv;
	r->newv.meta = m;
	r->have_new = 1;
	util_strlcpy(r->latest, nv.id, sizeof(r->latest));
	rot_audit(r, "pending", NULL, nv.id, "written", NULL);
	return 0;
}

/* ---- the primary ---- */

/*
 * The primary, through the listener: the run's session (ag_open's), kept
 * for every database and step of the run; a lost one is replaced.  r->ps
 * is borrowed and set again here before each use.
 */
static int
rot_primary(struct rot *r, struct dmk_err *err)
{
	struct ag_run *run = r->run;
	struct sql_endpoint ep;
	int rc;

	if (!sql_alive(run->ls)) {
		sql_close(run->ls);
		run->ls = NULL;
		ag_listener_endpoint(run->ag, &ep);
		if ((rc = sql_connect(&ep, &run->login, &run->ls, err)) != 0) {
			r->ps = NULL;
			return rc;
		}
	}
	r->ps = run->ls;
	return 0;
}

/*
 * 0 opens, DMK_ERR_WRONGPASS does not, other: cannot tell (error set).
 * What this run has just proven or done (r->old_opens, new_opens,
 * new_fresh) is not asked again: a resumed run starts with none of it and
 * asks SQL Server every time.
 */
int
rot_probe(struct rot *r, const struct secret *pw, struct dmk_err *err)
{
	int rc;

	if (pw != NULL && ((pw == r->oldpw && r->old_opens) || (pw == r->newpw && r->new_opens)))
		return 0;
	if (pw != NULL && pw == r->newpw && r->new_fresh)
		return dmk_errf(err, DMK_ERR_WRONGPASS, "%s: the new password was generated in this "
		    "run and is not on the DMK yet", r->p->db->name);
	if ((rc = rot_primary(r, err)) != 0)
		return rc;
	rc = sql_dmk_probe(r->ps, r->p->db->name, pw, err);
	if (rc == 0 && pw != NULL && pw == r->oldpw)
		r->old_opens = 1;
	if (rc == 0 && pw != NULL && pw == r->newpw)
		r->new_opens = 1;
	return rc;
}

/* The passwords change (read again, swapped, regenerated): forget what was seen. */
static void
rot_forget(struct rot *r)
{
	r->old_opens = r->new_opens = r->new_fresh = 0;
}

/* Change the DMK's encryptions by password on the primary (op: sql.h).
 * Returns SQL Server's error number in *num (0 on success, -1 when the
 * lease check refused it before anything was sent). */
static int
rot_alter(struct rot *r, enum sql_mk_op op, const struct secret *pw, int *num,
    struct dmk_err *err)
{
	int rc;

	*num = -1;    /* nothing sent: the lease check stopped it (audited there) */
	if ((rc = rot_keep(r, err)) != 0)
		return rc;
	*num = 0;
	if ((rc = rot_primary(r, err)) != 0)
		return rc;
	return sql_alter_master_key(r->ps, r->p->db->name, op, pw, num, err);
}

/* Facts of the database from the primary when ag_open did not get them
 * (no usable store version: recover). */
int
rot_facts(struct rot *r, struct dmk_err *err)
{
	struct db_plan *p = r->p;
	int rc;

	if ((rc = rot_primary(r, err)) != 0 ||
	    (p->primary_keys.family_guid[0] && p->cert[0]))
		return rc;
	if (!p->primary_keys.family_guid[0] &&
	    (rc = sql_db_keys(r->ps, p->db->name, &p->primary_keys, err)) != 0)
		return rc;
	if (p->cert[0])
		return 0;
	if (p->db->ncertificates > 0) {
		util_strlcpy(p->cert, p->db->certificates[0], sizeof(p->cert));
		return 0;
	}
	return sql_find_dmk_cert(r->ps, p->db->name, p->cert, sizeof(p->cert), err);
}

/* ---- the lease, kept through a long run ---- */

/* Before a change: the lease still ours (one read), renewed when due.  A
 * lease taken over stops the run here, before the change; the caller
 * passes the error up.  backup.c reaches it through agent_guard. */
static int
rot_keep(struct rot *r, struct dmk_err *err)
{
	int rc;

	if (r->lease == NULL)
		return 0;
	if ((rc = lease_guard(r->a, r->lease, err)) == 1)
		rot_audit(r, "lease", NULL, r->lease->version, "renewed", NULL);
	if (rc >= 0)
		return 0;
	rot_audit(r, "lease", NULL, NULL, rc == DMK_ERR_LOCKED ? "lost" : "renewal failed", err->msg);
	return dmk_err_prefix(err, "%s", r->p->db->name);
}

static int
rot_guard(void *ctx, struct dmk_err *err)
{
	return rot_keep(ctx, err);
}

/* ---- the backup taken first ---- */

static void
rot_bk_audit(struct rot *r, const char *outcome, const char *error)
{
	struct audit_target t = { r->run->ag->name, NULL, r->p->db->name };
	struct audit_keys k = { r->p->primary_keys.dmk_key_guid, NULL, r->p->store,
	    r->ref->text, r->bkver[0] ? r->bkver : NULL, r->p->primary_keys.family_guid, r->rid };
	struct secret_ref ref;
	struct dmk_err e;
	char act[64];

	r->bk_outcome = outcome;
	if (escrow_ref(r->ref, "dmk", NULL, &ref, &e) == 0)
		k.reference = ref.text;
	snprintf(act, sizeof(act), "%s-backup", r->cmd);
	agent_audit(r->a, act, &t, &k, outcome, error);
}

/* The versions of the DMK backup's escrow (backup.h: <dmk ref>-backup-dmk). */
static int
bk_versions(struct rot *r, struct store **st, struct secret_ref *ref,
    struct prov_version **v, size_t *n, struct dmk_err *err)
{
	int rc;

	*v = NULL;
	*n = 0;
	if ((rc = escrow_ref(r->ref, "dmk", NULL, ref, err)) != 0 ||
	    (rc = agent_store(r->a, ref->store, st, err)) != 0)
		return rc;
	if ((rc = store_require(*st, PROV_CAP_VERSIONS | PROV_CAP_META, "a backup's rotation tag",
	    err)) != 0)
		return dmk_err_prefix(err, "%s", ref->text);
	rc = store_list_versions(*st, ref, v, n, err);
	if (rc == DMK_ERR_NOTFOUND)
		return 0;
	return rc ? dmk_err_prefix(err, "%s", ref->text) : 0;
}

/* Was this backup taken of the DMK as it is now? */
static int
bk_same_key(struct rot *r, const struct prov_version *v)
{
	const char *want = r->p->primary_keys.dmk_key_guid, *g;

	g = prov_meta_get(&v->meta, MARK_GUID);
	return want[0] == '\0' || (g != NULL && strcasecmp(g, want) == 0);
}

/*
 * A DMK backup already escrowed for this rotation, of the DMK as it is
 * now.  With r->rid: a version marked with that rotation id.  Without one
 * (a run stopped between backup and pending): the escrow's newest version,
 * when it was taken for a rotation while the store's newest password
 * version was the one it still is; that rotation id becomes ours.
 * 1 found (r->bkver set), 0 not, <0 error.
 */
static int
bk_find(struct rot *r, struct dmk_err *err)
{
	struct secret_ref ref;
	struct prov_version *v = NULL;
	struct store *st;
	const char *rid, *before;
	size_t n = 0, i;
	long hit = -1;
	int rc;

	if ((rc = bk_versions(r, &st, &ref, &v, &n, err)) != 0)
		return rc;
	for (i = n; i-- > 0 && hit < 0; ) {
		if (!markers_live(&v[i]))
			continue;
		rid = prov_meta_get(&v[i].meta, MARK_ROTATION);
		before = prov_meta_get(&v[i].meta, MARK_BEFORE);
		if (r->rid[0] != '\0') {
			if (rid != NULL && strcmp(rid, r->rid) == 0 && bk_same_key(r, &v[i]))
				hit = (long)i;
			continue;
		}
		if (rid != NULL && rid[0] != '\0' && strlen(rid) < sizeof(r->rid) &&
		    before != NULL && strcmp(before, r->latest[0] ? r->latest : "0") == 0 &&
		    bk_same_key(r, &v[i])) {
			util_strlcpy(r->rid, rid, sizeof(r->rid));
			hit = (long)i;
		}
		break;    /* without an id, only the newest backup can be ours */
	}
	if (hit >= 0)
		util_strlcpy(r->bkver, v[hit].id, sizeof(r->bkver));
	free(v);
	return hit >= 0;
}

/*
 * Mark the backup backup_database just escrowed (the escrow's newest
 * version, written at t0 or later) with this rotation's id and the newest
 * password version, so that a rerun finds it.
 */
static int
bk_tag(struct rot *r, time_t t0, struct dmk_err *err)
{
	struct secret_ref ref;
	struct prov_version *v = NULL;
	struct prov_meta m;
	struct store *st;
	const char *tm;
	time_t t;
	size_t n = 0;
	int rc;

	if ((rc = bk_versions(r, &st, &ref, &v, &n, err)) != 0)
		goto out;
	if (n == 0 || !markers_live(&v[n - 1]) ||
	    (tm = prov_meta_get(&v[n - 1].meta, MARK_TIME)) == NULL ||
	    util_parse_rfc3339(tm, &t) != 0 || t < t0) {
		rc = dmk_errf(err, DMK_ERR_NOTFOUND, "%s: the backup just written is not its newest "
		    "version", ref.text);
		goto out;
	}
	util_strlcpy(r->bkver, v[n - 1].id, sizeof(r->bkver));
	memset(&m, 0, sizeof(m));
	prov_meta_set(&m, MARK_ROTATION, r->rid);
	prov_meta_set(&m, MARK_BEFORE, r->latest[0] ? r->latest : "0");
	if ((rc = rot_keep(r, err)) != 0)
		goto out;
	if ((rc = store_set_meta(st, &ref, r->bkver, &m, err)) != 0)
		dmk_err_prefix(err, "%s: marking version %s with the rotation", ref.text, r->bkver);
out:
	free(v);
	return rc;
}

/*
 * The backup before anything changes: certificates and DMK escrowed in the
 * store (backup_database), once per rotation.  Without one the command is
 * refused, unless --no-backup (never for --regenerate, which makes new key
 * material).
 */
static int
rot_backup(struct rot *r, struct dmk_err *err)
{
	struct dmk_err e2;
	time_t t0;
	int rc;

	if (r->backed_up)
		return 0;
	if (r->no_backup && r->mode != MODE_REGENERATE) {
		log_warn("%s/%s: no backup taken first (--no-backup)", r->run->ag->name,
		    r->p->db->name);
		rot_bk_audit(r, "skipped", "--no-backup");
		r->backed_up = 1;
		return 0;
	}
	if ((rc = bk_find(r, err)) < 0)
		return dmk_err_prefix(err, "%s: looking for this rotation's backup", r->p->db->name);
	if (rc == 1) {
		r->backed_up = 1;
		rot_say(r, "a backup for rotation %s is already escrowed (DMK backup version %s): not "
		    "taking another", r->rid, r->bkver);
		rot_bk_audit(r, "already escrowed", NULL);
		return 0;
	}
	if ((rc = rot_primary(r, err)) != 0)
		return rc;
	if (r->rid[0] == '\0')
		util_random_id(r->rid, sizeof(r->rid));
	t0 = time(NULL);
	if ((rc = backup_database(r->run, r->p, r->ps, err)) != 0) {
		if (rc == DMK_ERR_LOCKED)
			return rc;    /* the lease was lost (agent_guard): said already */
		rot_bk_audit(r, "failed", err->msg);
		if (r->mode == MODE_REGENERATE)
			return dmk_err_prefix(err, "%s: rotate --regenerate refused: it makes new key "
			    "material and needs a fresh escrowed backup first, which failed",
			    r->p->db->name);
		return dmk_err_prefix(err, "%s: %s refused: the escrowed backup it takes first "
		    "failed; nothing was changed (--no-backup goes on without one)",
		    r->p->db->name, r->cmd);
	}
	if ((rc = bk_tag(r, t0, &e2)) == DMK_ERR_LOCKED) {
		*err = e2;
		return rc;
	} else if (rc != 0)
		log_warn("%s: %s (the backup is escrowed; a rerun would take another)",
		    r->p->db->name, e2.msg);
	r->backed_up = 1;
	rot_bk_audit(r, "escrowed", NULL);
	rot_fp(r, "after-backup");
	return 0;
}

/* ---- every replica ---- */

/* The credentials of this database's family on one replica. */
static int
fam_creds(struct sql_session *s, struct rot *r, char names[8][160], struct dmk_err *err)
{
	struct sql_result *all = NULL;
	int n, rc;

	memset(names, 0, 8 * 160);
	if ((rc = rep_credentials(s, &all, err)) != 0)
		return rc;
	n = creds_of(all, r->p->primary_keys.family_guid, names);
	sql_result_free(all);
	return n;
}

static int
in_names(char names[8][160], int n, const char *want)
{
	int i;

	for (i = 0; i < n && i < 8; i++)
		if (want[0] && strcmp(names[i], want) == 0)
			return 1;
	return 0;
}

/* Add the new password's credential; 1 added, 0 already there, <0 error. */
static int
ensure_new(struct rep_run *rr, struct sql_session *s, struct rot *r, struct dmk_err *err)
{
	char before[8][160], after[8][160];
	struct rep_db *d = &rr->dbs[r->pi];
	int nb, na, i, rc;

	if ((nb = fam_creds(s, r, before, err)) < 0)
		return nb;
	rc = sql_dmk_password(s, r->p->db->name, r->newpw, "add", err);
	if (rc != 0 && sql_last_error(s)->number == 15594)
		return 0;
	if (rc != 0)
		return rc;
	if ((na = fam_creds(s, r, after, err)) < 0)
		return 1;
	for (i = 0; i < na && i < 8; i++)
		if (!in_names(before, nb, after[i]))
			util_strlcpy(d->credential, after[i], sizeof(d->credential));
	return 1;
}

/* The databases of one replica wave (run->ctx while it runs). */
struct rot_wave {
	struct rot **rs;
	size_t n;
};

static int
register_one(struct rep_run *rr, struct sql_session *s, struct rot *r)
{
	struct rep_db *d = &rr->dbs[r->pi];
	struct dmk_err e;
	int rc = ensure_new(rr, s, r, &e);

	d->outcome = rc == 1 ? OUT_ADDED : rc == 0 ? OUT_PRESENT : OUT_FAILED;
	if (rc < 0)
		rep_note(rr, d, "%s", e.msg);
	rot_audit(r, "register", rr->rep->name, r->newv.id, rc == 1 ? "added" : rc == 0 ?
	    "unchanged" : "failed", rc < 0 ? e.msg : NULL);
	return rc < 0 ? DMK_ERR_INCOMPLETE : 0;
}

static int
verify_one(struct rep_run *rr, struct sql_session *s, struct rot *r)
{
	struct rep_db *d = &rr->dbs[r->pi];
	struct dmk_err e;
	int rc, o = -1;

	/* 15594 proves a credential with exactly this password is here. */
	rc = ensure_new(rr, s, r, &e);
	if (rc >= 0 && (rr->is_primary || rr->rep->secondary_allow != 0)) {
		o = probe_auto_open(s, r->p->db->name, r->p->cert, &e);
		if (o == 0) {
			rc = DMK_ERR_VERIFY;
			snprintf(e.msg, sizeof(e.msg), "%s: the DMK does not open by itself here",
			    rr->rep->name);
		}
	}
	d->outcome = rc >= 0 ? OUT_OK : OUT_GAP;
	d->auto_open = o;
	if (rc < 0)
		rep_note(rr, d, "%s", e.msg);
	rot_audit(r, "verify", rr->rep->name, r->newv.id, rc >= 0 ? "ok" : "gap",
	    rc < 0 ? e.msg : NULL);
	/* staged: the wave writes registered.json once (rot_wave) */
	if (rc >= 0)
		regstate_stage(r->a, r->run->ag->name, rr->rep->name,
		    r->p->primary_keys.family_guid, r->ref->text, r->newv.id, d->credential, 0);
	return rc < 0 ? DMK_ERR_INCOMPLETE : 0;
}

static int
drop_one(struct rep_run *rr, struct sql_session *s, struct rot *r)
{
	struct rep_db *d = &rr->dbs[r->pi];
	char names[8][160], ver[80], cred[160];
	const char *keep = "";
	struct dmk_err e;
	int rc, n, dropped = 0;

	/* Never drop the old credential unless the new one is here. */
	if ((rc = ensure_new(rr, s, r, &e)) < 0)
		goto out;
	rc = sql_dmk_password(s, r->p->db->name, r->oldpw, "drop", &e);
	if (rc != 0 && sql_last_error(s)->number == 15595)
		rc = 0;
	else if (rc == 0)
		dropped = 1;
	if (rc != 0)
		goto out;
	/* Which credential is ours now: the one this run added, the one
	 * recorded before if still there, or the only one left. */
	if ((n = fam_creds(s, r, names, &e)) < 0) {
		rc = n;
		goto out;
	}
	regstate_get(r->a, r->run->ag->name, rr->rep->name, r->p->primary_keys.family_guid,
	    ver, sizeof(ver), cred, sizeof(cred));
	if (in_names(names, n, d->credential))
		keep = d->credential;
	else if (in_names(names, n, cred))
		keep = cred;
	else if (n == 1)
		keep = names[0];
	regstate_stage(r->a, r->run->ag->name, rr->rep->name, r->p->primary_keys.family_guid,
	    r->ref->text, r->newv.id, keep, 1);
out:
	d->outcome = rc == 0 ? (dropped ? OUT_DROPPED : OUT_OK) : OUT_FAILED;
	if (rc != 0)
		rep_note(rr, d, "%s", e.msg);
	rot_audit(r, "drop-credential", rr->rep->name, r->oldv.id, rc != 0 ? "failed" :
	    dropped ? "dropped" : "already gone", rc != 0 ? e.msg : NULL);
	return rc != 0 ? DMK_ERR_INCOMPLETE : 0;
}

/*
 * The wave's databases in one request per SQL_DMK_MANY_MAX of them
 * (sql_dmk_password_many): the same action with each one's password.
 * ok[k] 1 where the request said nothing against database k: with
 * expect_all (verify, drop: the new credential must already be there) only
 * when every one answered 15594; without (register), when no other error
 * came back.  A chunk that cannot tell is left 0: the caller asks database
 * by database.  *after: the credentials read after the last chunk (NULL if
 * not read).  <0 only when the session is lost (errs in e).
 */
static int
many_password(struct sql_session *s, struct rot_wave *w, const char *action, int use_new,
    int expect_all, char *ok, struct sql_result **after, struct dmk_err *e)
{
	const char *dbs[SQL_DMK_MANY_MAX];
	const struct secret *pws[SQL_DMK_MANY_MAX];
	size_t k, c, n;
	int amb, nexp, rc;

	*after = NULL;
	for (k = 0; k < w->n; k += n) {
		n = w->n - k < SQL_DMK_MANY_MAX ? w->n - k : SQL_DMK_MANY_MAX;
		for (c = 0; c < n; c++) {
			dbs[c] = w->rs[k + c]->p->db->name;
			pws[c] = use_new ? w->rs[k + c]->newpw : w->rs[k + c]->oldpw;
		}
		sql_result_free(*after);
		*after = NULL;
		rc = sql_dmk_password_many(s, dbs, pws, n, action, &amb, &nexp,
		    k + n == w->n ? after : NULL, e);
		if (rc != 0 && !sql_alive(s))
			return rc;
		if (rc != 0 || amb || (expect_all && (size_t)nexp != n))
			continue;
		for (c = 0; c < n; c++)
			ok[k + c] = 1;
	}
	return 0;
}

/* How many credentials of r's family a credential set holds, and their names. */
static int
creds_in(const struct sql_result *all, struct rot *r, char names[8][160])
{
	memset(names, 0, 8 * 160);
	return all != NULL ? creds_of(all, r->p->primary_keys.family_guid, names) : -1;
}

/* register: credentials before, then every add (the last request reads them after). */
static int
work_register(struct rep_run *rr, struct sql_session *s)
{
	struct rot_wave *w = rr->run->ctx;
	struct sql_result *before = NULL, *after = NULL;
	char *ok = calloc(w->n + 1, 1), nb[8][160], na[8][160];
	struct dmk_err e;
	size_t k;
	int bad = 0, i, n1, n2;

	/* one database: its own RPC, as rot_db always sent it */
	if (ok != NULL && (w->n < 2 || rep_credentials(s, &before, &e) != 0 ||
	    many_password(s, w, "add", 1, 0, ok, &after, &e) != 0))
		memset(ok, 0, w->n);
	if (after == NULL && ok != NULL && memchr(ok, 1, w->n) != NULL &&
	    rep_credentials(s, &after, &e) != 0)
		memset(ok, 0, w->n);
	for (k = 0; k < w->n; k++) {
		struct rot *r = w->rs[k];
		struct rep_db *d = &rr->dbs[r->pi];
		if (ok == NULL || !ok[k]) {
			bad |= register_one(rr, s, r) != 0;
			continue;
		}
		n1 = creds_in(before, r, nb);
		n2 = creds_in(after, r, na);
		d->outcome = OUT_PRESENT;
		for (i = 0; i < n2 && i < 8; i++)
			if (!in_names(nb, n1, na[i])) {
				util_strlcpy(d->credential, na[i], sizeof(d->credential));
				d->outcome = OUT_ADDED;
			}
		rot_audit(r, "register", rr->rep->name, r->newv.id, d->outcome == OUT_ADDED ?
		    "added" : "unchanged", NULL);
	}
	sql_result_free(before);
	sql_result_free(after);
	free(ok);
	return bad ? DMK_ERR_INCOMPLETE : 0;
}

/* verify: every new credential proven here (15594) in one request per
 * chunk, then every auto-open probe in one more. */
static int
work_verify(struct rep_run *rr, struct sql_session *s)
{
	struct rot_wave *w = rr->run->ctx;
	struct sql_result *after = NULL, **sets = NULL;
	struct sql_stmt *st = NULL;
	char *ok = calloc(w->n + 1, 1);
	int *opened = calloc(w->n + 1, sizeof(int));
	int probing = rr->is_primary || rr->rep->secondary_allow != 0, bad = 0, r0 = 0;
	struct dmk_err e;
	size_t k, j, nsets = 0;

	if (ok != NULL && (w->n < 2 || many_password(s, w, "add", 1, 1, ok, &after, &e) != 0))
		memset(ok, 0, w->n);
	sql_result_free(after);
	for (k = 0; k < w->n && opened; k++)
		opened[k] = -1;
	if (ok != NULL && opened != NULL && probing && memchr(ok, 1, w->n) != NULL &&
	    (st = sql_stmt_new()) != NULL) {
		for (k = 0; k < w->n && r0 == 0; k++)
			if (ok[k] && w->rs[k]->p->cert[0] != '\0')
				r0 = sql_add_cert_probe(st, k, w->rs[k]->p->db->name,
				    w->rs[k]->p->cert, &e);
		if (r0 != 0 || sql_exec_sets(s, st, &sets, &nsets, &e) != 0)
			memset(ok, 0, w->n);    /* database by database below */
		for (j = 0; j < nsets; j++) {
			const struct sql_value *iv = sql_cell(sets[j], 0, "i");
			const struct sql_value *ov = sql_cell(sets[j], 0, "opened");
			if (iv && ov && iv->type == SQLT_INT && ov->type == SQLT_INT && iv->i >= 0 &&
			    (size_t)iv->i < w->n)
				opened[iv->i] = ov->i < 0 ? -1 : ov->i != 0;
		}
		sql_sets_free(sets, nsets);
		sql_stmt_free(st);
	}
	for (k = 0; k < w->n; k++) {
		struct rot *r = w->rs[k];
		struct rep_db *d = &rr->dbs[r->pi];
		if (ok == NULL || opened == NULL || !ok[k]) {
			bad |= verify_one(rr, s, r) != 0;
			continue;
		}
		d->auto_open = opened[k];
		if (opened[k] == 0) {
			d->outcome = OUT_GAP;
			rep_note(rr, d, "%s: the DMK does not open by itself here", rr->rep->name);
			bad = 1;
		} else
			d->outcome = OUT_OK;
		rot_audit(r, "verify", rr->rep->name, r->newv.id, d->outcome == OUT_OK ? "ok" : "gap",
		    d->outcome == OUT_OK ? NULL : rep_note_text(d));
		if (d->outcome == OUT_OK)
			regstate_stage(r->a, r->run->ag->name, rr->rep->name,
			    r->p->primary_keys.family_guid, r->ref->text, r->newv.id, d->credential, 0);
	}
	free(ok);
	free(opened);
	return bad ? DMK_ERR_INCOMPLETE : 0;
}

/* drop: the new credentials proven here (15594), then every old one
 * dropped; the credentials before and after tell which were dropped. */
static int
work_drop(struct rep_run *rr, struct sql_session *s)
{
	struct rot_wave *w = rr->run->ctx;
	struct sql_result *before = NULL, *after = NULL;
	char *ok = calloc(w->n + 1, 1), *ok2 = calloc(w->n + 1, 1);
	char nb[8][160], na[8][160], ver[80], cred[160];
	struct rot_wave w2;
	struct rot **sub = calloc(w->n + 1, sizeof(*sub));
	struct dmk_err e;
	size_t k, m = 0;
	int bad = 0, n1, n2;

	if (ok != NULL && (ok2 == NULL || sub == NULL || w->n < 2 ||
	    many_password(s, w, "add", 1, 1, ok, &before, &e) != 0))
		memset(ok, 0, w->n);
	/* the old passwords of those whose new credential is proven */
	for (k = 0; ok != NULL && sub != NULL && k < w->n; k++)
		if (ok[k])
			sub[m++] = w->rs[k];
	w2.rs = sub;
	w2.n = m;
	if (m > 0 && (before == NULL || many_password(s, &w2, "drop", 0, 0, ok2, &after, &e) != 0 ||
	    after == NULL))
		memset(ok2, 0, m);
	for (k = 0, m = 0; k < w->n; k++) {
		struct rot *r = w->rs[k];
		struct rep_db *d = &rr->dbs[r->pi];
		const char *keep = "";
		int done = ok != NULL && ok[k] && ok2[m++];
		if (!done) {
			bad |= drop_one(rr, s, r) != 0;
			continue;
		}
		n1 = creds_in(before, r, nb);
		n2 = creds_in(after, r, na);
		regstate_get(r->a, r->run->ag->name, rr->rep->name, r->p->primary_keys.family_guid,
		    ver, sizeof(ver), cred, sizeof(cred));
		if (in_names(na, n2, d->credential))
			keep = d->credential;
		else if (in_names(na, n2, cred))
			keep = cred;
		else if (n2 == 1)
			keep = na[0];
		regstate_stage(r->a, r->run->ag->name, rr->rep->name, r->p->primary_keys.family_guid,
		    r->ref->text, r->newv.id, keep, 1);
		d->outcome = n2 < n1 ? OUT_DROPPED : OUT_OK;
		rot_audit(r, "drop-credential", rr->rep->name, r->oldv.id, d->outcome == OUT_DROPPED ?
		    "dropped" : "already gone", NULL);
	}
	sql_result_free(before);
	sql_result_free(after);
	free(ok);
	free(ok2);
	free(sub);
	return bad ? DMK_ERR_INCOMPLETE : 0;
}

/* Make r the database the lease checks of backup.c (agent_guard) are for. */
static void
rot_current(struct rot *r)
{
	r->a->guard = r->lease != NULL ? rot_guard : NULL;
	r->a->guard_ctx = r->lease != NULL ? r : NULL;
}

/*
 * One job on every replica for the databases rs[k] with mask[k] set and
 * rcs[k] == 0, in one wave: each replica's kept session runs it for all of
 * them.  A database whose lease check fails is left out; after the wave,
 * rcs[k] gets DMK_ERR_INCOMPLETE naming the first replica where the job
 * did not succeed for that database (errs[k] says which and why).
 */
static void
rot_wave(struct rot **rs, size_t n, const char *mask,
    int (*work)(struct rep_run *, struct sql_session *), const char *what, int *rcs,
    struct dmk_err *errs)
{
	struct rot_wave w;
	struct rot **in;
	struct ag_run *run;
	struct dmk_err e;
	size_t k, i;
	int rc;

	if (n == 0 || (in = calloc(n, sizeof(*in))) == NULL) {
		for (k = 0; k < n; k++)
			if (rcs[k] == 0 && mask[k])
				rcs[k] = dmk_errf(&errs[k], DMK_ERR_NOMEM, "out of memory");
		return;
	}
	w.rs = in;
	w.n = 0;
	/* One lease check per database for the wave: the replicas change in parallel. */
	for (k = 0; k < n; k++) {
		if (rcs[k] != 0 || !mask[k])
			continue;
		rot_current(rs[k]);
		if ((rcs[k] = rot_keep(rs[k], &errs[k])) == 0)
			in[w.n++] = rs[k];
	}
	if (w.n == 0)
		goto out;
	run = rs[0]->run;
	rot_reps_free(run);
	run->ctx = &w;
	run->keep_sessions = 1;    /* one session per replica for the whole run */
	rc = ag_each_replica(run, work);
	if (regstate_flush(rs[0]->a, &e) != 0)
		log_warn("%s", e.msg);
	for (k = 0; k < n; k++) {
		struct rot *r = rs[k];
		if (rcs[k] != 0 || !mask[k])
			continue;
		if (rc == DMK_ERR_NOMEM) {
			rcs[k] = dmk_errf(&errs[k], rc, "%s: %s: out of memory", r->p->db->name, what);
			continue;
		}
		for (i = 0; i < run->nreps && rcs[k] == 0; i++) {
			struct rep_run *rr = &run->reps[i];
			struct rep_db *d = rr->dbs ? &rr->dbs[r->pi] : NULL;
			if (!rr->reached)
				rcs[k] = dmk_errf(&errs[k], DMK_ERR_INCOMPLETE, "%s: %s: replica %s "
				    "not reached: %s", r->p->db->name, what, rr->rep->name, rr->error);
			else if (d == NULL || d->outcome == OUT_NONE || d->outcome == OUT_FAILED ||
			    d->outcome == OUT_GAP)
				rcs[k] = dmk_errf(&errs[k], DMK_ERR_INCOMPLETE, "%s: %s: replica %s: %s",
				    r->p->db->name, what, rr->rep->name, d && rep_note_text(d)[0] ?
				    rep_note_text(d) : rr->error);
		}
	}
out:
	free(in);
}

/* ---- the steps ---- */

/*
 * The newest version has no markers and does not open the DMK, while an
 * older one marked current does: a pending write whose markers never
 * landed (the store failed between the two requests), or a password put
 * into the store behind dmkagent's back.  Either way it is what the store
 * says the password should be: continue it as a pending rotation.
 * 0 adopted (r->step is then STEP_APPLY), 1 not adopted, <0 error.
 */
static int
adopt_unmarked(struct rot *r, struct dmk_err *err)
{
	struct secret *prevpw = NULL;
	struct prov_meta m;
	int rc;

	if ((rc = store_get(r->st, r->ref, r->prevv.id, &prevpw, NULL, err)) != 0)
		return rc;
	if ((rc = rot_probe(r, prevpw, err)) != 0) {
		secret_free(prevpw);
		return rc == DMK_ERR_WRONGPASS ? 1 : rc;
	}
	util_random_id(r->rid, sizeof(r->rid));
	memset(&m, 0, sizeof(m));
	markers_stamp(&m, "pending");
	prov_meta_set(&m, MARK_ROTATION, r->rid);
	prov_meta_set(&m, MARK_MODE, markers_mode_name(MK_MODE_ROTATE));
	prov_meta_set(&m, MARK_REPLACES, r->prevv.id);
	if ((rc = rot_keep(r, err)) != 0 ||
	    (rc = store_set_meta(r->st, r->ref, r->oldv.id, &m, err)) != 0) {
		secret_free(prevpw);
		return dmk_err_prefix(err, "%s: marking unmarked version %s pending", r->ref->text,
		    r->oldv.id);
	}
	rot_audit(r, "adopt", NULL, r->oldv.id, "pending", NULL);
	rot_say(r, "store version %s has no markers and does not open the DMK; version %s does: "
	    "continuing %s as a pending rotation", r->oldv.id, r->prevv.id, r->oldv.id);
	secret_free(r->newpw);
	r->newpw = r->oldpw;
	r->newv = r->oldv;
	r->newv.meta = m;
	r->have_new = 1;
	r->oldpw = prevpw;
	r->oldv = r->prevv;
	rot_forget(r);
	r->have_prev = 0;
	r->mode = MODE_ROTATE;
	r->resumed = 1;
	r->step = STEP_APPLY;
	return 0;
}

static int
step_prove(struct rot *r, struct dmk_err *err)
{
	int rc;

	/* A missing secret is most likely a typo in the reference: recover would
	 * give the DMK a second password and credential, so it is not advised. */
	if (r->missing)
		return dmk_errf(err, DMK_ERR_NOTFOUND, "%s: no such secret at %s (check "
		    "dmk_password in [database %s/%s]); nothing was changed", r->p->db->name,
		    r->ref->text, r->p->db->ag, r->p->db->label);
	if (!r->have_old)
		return dmk_errf(err, DMK_ERR_NOTFOUND, "%s: %s holds no current password: use "
		    "dmkagent recover", r->p->db->name, r->ref->text);
	rc = rot_probe(r, r->oldpw, err);
	rot_audit(r, "prove", NULL, r->oldv.id, rc == 0 ? "opens" : "failed", rc ? err->msg : NULL);
	if (rc == DMK_ERR_WRONGPASS && r->have_prev) {
		if ((rc = adopt_unmarked(r, err)) < 0)
			return rc;
		if (rc == 0)
			return 0;    /* a pending rotation now: step 4 takes the backup */
		rc = DMK_ERR_WRONGPASS;
	}
	if (rc == DMK_ERR_WRONGPASS)
		return dmk_errf(err, rc, "%s: the store's current password (%s version %s) does not "
		    "open the DMK on the primary; nothing was changed (dmkagent recover gives a DMK "
		    "whose password nobody knows a new one)", r->p->db->name, r->ref->text,
		    r->oldv.id);
	if (rc != 0)
		return rc;
	rot_fp(r, "after-prove");
	if ((rc = rot_backup(r, err)) != 0 || (rc = rot_write_pending(r, err)) != 0)
		return rc;
	rot_fp(r, "after-pending");
	return 0;
}

static int
step_apply(struct rot *r, struct dmk_err *err)
{
	int rc, num = 0, o;

	if (r->added_bulk) {    /* rot_alter_many did it, after the lease check */
		r->added_bulk = 0;
		rot_audit(r, "add", NULL, r->newv.id, "added", NULL);
		rot_fp(r, "after-add");
		return 0;
	}

	rc = rot_probe(r, r->newpw, err);
	if (rc == 0) {
		snprintf(r->note, sizeof(r->note), "the new password already opened the DMK");
		return 0;
	}
	if (rc != DMK_ERR_WRONGPASS)
		return rc;
	if (r->mode == MODE_RECOVER) {
		if ((rc = rot_primary(r, err)) != 0)
			return rc;
		if ((o = probe_auto_open(r->ps, r->p->db->name, r->p->cert, err)) != 1)
			return o < -1 ? o : dmk_errf(err, DMK_ERR_WRONGPASS, "%s: the DMK does not "
			    "open by itself on the primary; recover needs a node whose service master "
			    "key opens it", r->p->db->name);
	} else {
		/* Only on top of a password that still opens it. */
		if (!r->have_old || (rc = rot_probe(r, r->oldpw, err)) == DMK_ERR_WRONGPASS)
			return dmk_errf(err, DMK_ERR_WRONGPASS, "%s: neither the pending password "
			    "(version %s) nor the one it replaces opens the DMK on the primary; "
			    "nothing was changed", r->p->db->name, r->newv.id);
		if (rc != 0)
			return rc;
	}
	/* A resumed rotation without a backup for its id takes one now, before
	 * SQL Server changes (a fresh run took it before step 3). */
	if ((rc = rot_backup(r, err)) != 0)
		return rc;
	if (r->mode == MODE_REGENERATE) {
		/* The new credential everywhere first: after REGENERATE only the new
		 * password (and the SMK) opens the DMK.  The wave, then apply_after. */
		r->wave = 1;
		r->what = "registering before REGENERATE";
		return 0;
	}
	rc = rot_alter(r, SQL_MK_ADD_PASSWORD, r->newpw, &num, err);
	if (rc != 0 && num == 15579)
		rc = 0;    /* already added */
	if (rc == 0) {
		r->new_fresh = 0;
		r->new_opens = 1;
	}
	if (num != -1)
		rot_audit(r, "add", NULL, r->newv.id, rc == 0 ? "added" : "failed",
		    rc ? err->msg : NULL);
	if (rc != 0)
		return rc;
	rot_fp(r, "after-add");
	return 0;
}

/* After the wave of a regenerate: REGENERATE on the primary. */
static int
apply_after(struct rot *r, struct dmk_err *err)
{
	int rc, num = 0;

	rot_fp(r, "after-register");
	rc = rot_alter(r, SQL_MK_REGENERATE, r->newpw, &num, err);
	if (num != -1)
		rot_audit(r, "regenerate", NULL, r->newv.id, rc == 0 ? "regenerated" : "failed",
		    rc ? err->msg : NULL);
	if (rc != 0)
		return rc;
	rot_forget(r);
	r->new_opens = 1;    /* REGENERATE took it; the old one no longer opens */
	rot_fp(r, "after-regenerate");
	return 0;
}

static int
register_before(struct rot *r, struct dmk_err *err)
{
	(void)err;
	r->wave = 1;
	r->what = "registering";
	return 0;
}

static int
register_after(struct rot *r, struct dmk_err *err)
{
	(void)err;
	if (r->mode != MODE_REGENERATE)
		rot_fp(r, "after-register");
	return 0;
}

static int
verify_before(struct rot *r, struct dmk_err *err)
{
	int rc;

	if ((rc = rot_probe(r, r->newpw, err)) != 0)
		return rc == DMK_ERR_WRONGPASS ? dmk_errf(err, DMK_ERR_VERIFY, "%s: the new "
		    "password does not open the DMK on the primary", r->p->db->name) : rc;
	r->wave = 1;
	r->what = "verifying";
	return 0;
}

/* After the verify wave: mark the new version current, the old retiring. */
static int
verify_after(struct rot *r, struct dmk_err *err)
{
	int rc;

	rot_fp(r, "after-verify");
	if ((rc = rot_mark(r, r->newv.id, "current", err)) != 0)
		return rc;
	rot_fp(r, "after-mark-current");
	if (r->have_old) {
		if ((rc = rot_mark(r, r->oldv.id, "retiring", err)) != 0)
			return rc;
		rot_fp(r, "after-verify-mark");
	}
	return 0;
}

static int
drop_before(struct rot *r, struct dmk_err *err)
{
	int rc, num = 0;
	const char *how;

	if (!r->have_old)
		return 0;
	if (strcmp(markers_state(&r->oldv), "retiring") != 0 &&
	    (rc = rot_mark(r, r->oldv.id, "retiring", err)) != 0)
		return rc;
	/* Never drop the old one unless the new one opens the DMK. */
	if ((rc = rot_probe(r, r->newpw, err)) != 0)
		return rc == DMK_ERR_WRONGPASS ? dmk_errf(err, DMK_ERR_VERIFY, "%s: the current "
		    "password (version %s) does not open the DMK on the primary; the old one is "
		    "kept", r->p->db->name, r->newv.id) : rc;
	rc = r->dropped_bulk ? 0 : rot_probe(r, r->oldpw, err);
	if (r->dropped_bulk) {    /* rot_alter_many did it, after the lease check */
		r->dropped_bulk = 0;
		how = "dropped";
	} else if (rc == DMK_ERR_WRONGPASS) {
		how = "already gone";
		rc = 0;
	} else if (rc != 0)
		return rc;
	else {
		rc = rot_alter(r, SQL_MK_DROP_PASSWORD, r->oldpw, &num, err);
		how = "dropped";
		if (rc != 0 && num == 15313) {
			how = "already gone";
			rc = 0;
		} else if (rc != 0 && num == 15558)
			dmk_err_prefix(err, "%s: refusing: the old password is the DMK's last one",
			    r->p->db->name);
	}
	if (num != -1)
		rot_audit(r, "drop", NULL, r->oldv.id, rc == 0 ? how : "failed",
		    rc ? err->msg : NULL);
	if (rc != 0)
		return rc;
	r->old_opens = 0;
	rot_fp(r, "after-drop-primary");
	r->wave = 1;
	r->what = "dropping the old credential";
	return 0;
}

/* After the drop wave: the old version retired. */
static int
drop_after(struct rot *r, struct dmk_err *err)
{
	int rc;

	rot_fp(r, "after-drop-replicas");
	if ((rc = rot_mark(r, r->oldv.id, "retired", err)) != 0)
		return rc;
	rot_fp(r, "after-retire");
	return 0;
}

/*
 * Each step in three parts: before (on the primary and the store, database
 * by database), the replicas' wave when before asked for one (r->wave: one
 * wave for every database at this step), after (the same databases, once
 * the wave succeeded for them).
 */
static int
prove_before(struct rot *r, struct dmk_err *err)
{
	return step_prove(r, err);
}

static const struct rot_part {
	int (*before)(struct rot *, struct dmk_err *);
	int (*work)(struct rep_run *, struct sql_session *);
	int (*after)(struct rot *, struct dmk_err *);
} rot_parts[] = {
	[STEP_PROVE] = { prove_before, NULL, NULL },
	[STEP_APPLY] = { step_apply, work_register, apply_after },
	[STEP_REGISTER] = { register_before, work_register, register_after },
	[STEP_VERIFY] = { verify_before, work_verify, verify_after },
	[STEP_DROP] = { drop_before, work_drop, drop_after },
};

/*
 * Step 2 for the databases at it (at[k]), in one round trip: every store
 * password proven on the primary in one batch.  When every one opened,
 * step_prove needs no probe of its own (r->old_opens); on any error each
 * database asks again alone and gets its own verdict.
 */
static void
rot_prove_many(struct rot **rs, size_t n, const char *at, int *rcs, struct dmk_err *errs)
{
	struct sql_stmt *st;
	struct rot *first = NULL;
	struct dmk_err e;
	size_t k, m = 0;
	int rc = 0;

	for (k = 0; k < n; k++)
		if (at[k] && rs[k]->have_old && rs[k]->oldpw != NULL && !rs[k]->old_opens) {
			if (first == NULL)
				first = rs[k];
			m++;
		}
	/* one database: its own probe, as rot_db always sent it */
	if (m < 2 || rot_primary(first, &e) != 0 || (st = sql_stmt_new()) == NULL)
		return;
	for (k = 0; k < n && rc == 0; k++)
		if (at[k] && rs[k]->have_old && rs[k]->oldpw != NULL && !rs[k]->old_opens)
			rc = sql_add_dmk_proof(st, rs[k]->p->db->name, rs[k]->oldpw, &e);
	if (rc == 0 && sql_exec(first->ps, st, NULL, &e) == 0 &&
	    sql_call_errors(first->ps, NULL, 0) == 0)
		for (k = 0; k < n; k++)
			if (at[k] && rs[k]->have_old && rs[k]->oldpw != NULL)
				rs[k]->old_opens = 1;
	sql_stmt_free(st);
	/* The session lost under the proof: every database of it stops here, as
	 * its own probe would have (the next step of the run connects again). */
	if (!sql_alive(first->ps))
		for (k = 0; k < n; k++)
			if (at[k] && rcs[k] == 0 && rs[k]->have_old && !rs[k]->old_opens)
				rcs[k] = dmk_errf(&errs[k], e.code < 0 ? e.code : DMK_ERR_UNREACHABLE, "%s: proving "
				    "the store's password on the primary: %s", rs[k]->p->db->name, e.msg);
}

/* A fresh rotation's step 4 can go in the batch: new password generated
 * here, the old one proven, the backup taken. */
static int
add_batchable(struct rot *r)
{
	return r->mode == MODE_ROTATE && r->have_new && r->new_fresh && r->old_opens &&
	    r->backed_up;
}

/* Step 7's drop on the primary can go in the batch: the old version marked
 * retiring already, both passwords seen opening the DMK in this run. */
static int
drop_batchable(struct rot *r)
{
	return r->have_old && r->have_new && r->old_opens && r->new_opens &&
	    strcmp(markers_state(&r->oldv), "retiring") == 0;
}

/*
 * Step 4's ALTER MASTER KEY ADD (op SQL_MK_ADD_PASSWORD: the fresh
 * rotations at it, at[k]) or step 7's DROP (SQL_MK_DROP_PASSWORD) for the
 * batch, in one round trip: every ALTER in one batch, each after its own
 * lease check.  When every one succeeded, the step only records it
 * (r->added_bulk, r->dropped_bulk: audit, failpoint); on any error each
 * database does its own step, asking SQL Server first (ADD: 15579, already
 * added; DROP: its probes, 15313 or a probe that no longer opens is
 * "already gone", 15558, the last password, is refused there).  A session
 * lost under the batch stops its databases, as their own ALTER would have.
 */
static void
rot_alter_many(struct rot **rs, size_t n, const char *at, enum sql_mk_op op, int *rcs,
    struct dmk_err *errs)
{
	int add = op == SQL_MK_ADD_PASSWORD;
	int (*batchable)(struct rot *) = add ? add_batchable : drop_batchable;
	struct sql_stmt *st = NULL;
	struct rot *first = NULL;
	struct dmk_err e;
	char *in;
	size_t k, m = 0;
	int rc = 0, ok = 0;

	for (k = 0; k < n; k++)
		if (at[k] && rcs[k] == 0 && batchable(rs[k]))
			m++;
	if (m < 2 || (in = calloc(n + 1, 1)) == NULL)
		return;
	for (k = 0; k < n; k++) {
		if (!at[k] || rcs[k] != 0 || !batchable(rs[k]))
			continue;
		rot_current(rs[k]);
		if ((rcs[k] = rot_keep(rs[k], &errs[k])) != 0)
			continue;
		in[k] = 1;
		if (first == NULL)
			first = rs[k];
	}
	if (first == NULL || rot_primary(first, &e) != 0 || (st = sql_stmt_new()) == NULL)
		goto out;
	for (k = 0; k < n && rc == 0; k++)
		if (in[k])
			rc = sql_add_alter_master_key(st, rs[k]->p->db->name, op,
			    add ? rs[k]->newpw : rs[k]->oldpw, &e);
	ok = rc == 0 && sql_exec(first->ps, st, NULL, &e) == 0 &&
	    sql_call_errors(first->ps, NULL, 0) == 0;
	for (k = 0; k < n; k++) {
		if (!in[k])
			continue;
		if (ok && add) {
			rs[k]->added_bulk = 1;
			rs[k]->new_fresh = 0;
			rs[k]->new_opens = 1;
		} else if (ok)
			rs[k]->dropped_bulk = 1;
		else if (!sql_alive(first->ps))
			rcs[k] = dmk_errf(&errs[k], e.code < 0 ? e.code : DMK_ERR_UNREACHABLE, "%s: "
			    "%s on the primary: %s", rs[k]->p->db->name, add ? "adding the new "
			    "password" : "dropping the old password", e.msg);
		else if (add)
			rs[k]->new_fresh = 0;    /* some ADDs may have run: ask SQL Server */
		else
			rot_forget(rs[k]);       /* some DROPs may have run: ask SQL Server */
	}
out:
	sql_stmt_free(st);
	free(in);
}

/*
 * The databases rs[k] with go[k] set (and rcs[k] == 0), from each one's
 * r->step to the end, step by step across the batch: every database at the
 * lowest step left takes that step before any goes on to the next, so that
 * each replica wave carries all of them.  Each database's own order of
 * steps and boundaries is rot_db's; a failure stops that database only (its
 * step stays in r->step, its error in rcs[k] and errs[k]).  The lease is
 * checked before each change (rot_keep, at the doors).
 */
static void
rot_steps_many(struct rot **rs, size_t n, const char *go, int *rcs, struct dmk_err *errs)
{
	char where[512], *at = NULL;
	size_t k;
	int step, any;

	if ((at = calloc(n + 1, 1)) == NULL) {
		for (k = 0; k < n; k++)
			if (go[k] && rcs[k] == 0)
				rcs[k] = dmk_errf(&errs[k], DMK_ERR_NOMEM, "out of memory");
		return;
	}
	for (;;) {
		step = STEP_DONE;
		for (k = 0; k < n; k++)
			if (go[k] && rcs[k] == 0 && rs[k]->step >= STEP_PROVE && rs[k]->step < step)
				step = rs[k]->step;
		if (step == STEP_DONE)
			break;
		/* SIGINT/SIGTERM: stop here, between two steps, never inside one. */
		if (dmk_interrupted()) {
			for (k = 0; k < n; k++) {
				if (!go[k] || rcs[k] != 0 || rs[k]->step >= STEP_DONE)
					continue;
				snprintf(where, sizeof(where), "at %s/%s, before the step \"%s\"",
				    rs[k]->run->ag->name, rs[k]->p->db->name,
				    rot_step_names[rs[k]->step]);
				rcs[k] = dmk_err_interrupted(&errs[k], where);
			}
			break;
		}
		any = 0;
		for (k = 0; k < n; k++)
			at[k] = go[k] && rcs[k] == 0 && rs[k]->step == step;
		if (step == STEP_PROVE)
			rot_prove_many(rs, n, at, rcs, errs);
		if (step == STEP_APPLY)
			rot_alter_many(rs, n, at, SQL_MK_ADD_PASSWORD, rcs, errs);
		if (step == STEP_DROP)
			rot_alter_many(rs, n, at, SQL_MK_DROP_PASSWORD, rcs, errs);
		for (k = 0; k < n; k++) {
			if (!at[k] || rcs[k] != 0)    /* stopped by a batch's part above */
				continue;
			rot_current(rs[k]);
			rs[k]->wave = 0;
			rcs[k] = rot_parts[step].before(rs[k], &errs[k]);
			if (rcs[k] == 0 && rs[k]->wave)
				any = 1;
		}
		if (any) {
			char *w = calloc(n + 1, 1);
			if (w == NULL) {
				for (k = 0; k < n; k++)
					if (at[k] && rcs[k] == 0)
						rcs[k] = dmk_errf(&errs[k], DMK_ERR_NOMEM, "out of memory");
			} else {
				for (k = 0; k < n; k++)
					w[k] = at[k] && rcs[k] == 0 && rs[k]->wave;
				/* what: the first's (every database at one step says the same) */
				for (k = 0; k < n && !w[k]; k++)
					;
				rot_wave(rs, n, w, rot_parts[step].work, rs[k]->what, rcs, errs);
				for (k = 0; k < n; k++) {
					if (!w[k] || rcs[k] != 0)
						continue;
					rot_current(rs[k]);
					rcs[k] = rot_parts[step].after(rs[k], &errs[k]);
				}
				free(w);
			}
		}
		for (k = 0; k < n; k++)
			/* a step may say where to go on (adopt: to apply) */
			if (at[k] && rcs[k] == 0 && rs[k]->step == step)
				rs[k]->step++;
	}
	free(at);
}

/* Where a resumed rotation stands, by asking the primary (read only). */
int
rot_where(struct rot *r, struct dmk_err *err)
{
	int rc;

	if (r->step != STEP_APPLY)
		return 0;
	rc = rot_probe(r, r->newpw, err);
	if (rc == 0)
		r->step = STEP_REGISTER;
	return rc == 0 || rc == DMK_ERR_WRONGPASS ? 0 : rc;
}

void
rot_say(struct rot *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
	va_end(ap);
	if (r->a->quiet)
		return;
	fprintf(agcmd_textout(r->a), "%s/%s: %s\n", r->run->ag->name, r->p->db->name, r->msg);
}

/* The versions this database's run is about, for the report. */
void
rot_versions(struct rot *r)
{
	util_strlcpy(r->rep_old, r->have_old ? r->oldv.id : "", sizeof(r->rep_old));
	util_strlcpy(r->rep_new, r->have_new ? r->newv.id : "", sizeof(r->rep_new));
	if (r->rid[0] != '\0')
		util_strlcpy(r->rep_rid, r->rid, sizeof(r->rep_rid));
}

/* The lease, then where the database stands.  A refused lease ends it
 * there (r->no_end: nothing to release, no stopped record). */
static int
rot_begin(struct rot *r, struct dmk_err *err)
{
	int rc;

	memset(&r->l, 0, sizeof(r->l));
	r->lease = NULL;
	if (!r->dry) {
		if ((rc = lease_take(r->a, r->ref, r->run->ag->name, r->p->db->name, r->cmd, &r->l,
		    err)) != 0) {
			rot_audit(r, "lease", NULL, NULL, "refused", err->msg);
			/* locked only when another holder has it; a store that failed is not */
			r->outcome = rc == DMK_ERR_LOCKED ? "locked" : "failed";
			r->no_end = 1;
			return rc;
		}
		if (r->l.held)
			r->lease = &r->l;
		rot_current(r);
		rot_audit(r, "lease", NULL, r->l.version, "taken", NULL);
		rot_fp(r, "after-lease");
	}
	rot_current(r);
	if ((rc = rot_analyse(r, err)) != 0 || (rc = rot_facts(r, err)) != 0)
		return rc;
	return 0;
}

/*
 * Round rounds of a database: what it is to do now.  1: the steps from
 * r->step (the caller runs them), 0: nothing more (the outcome is said),
 * <0: an error.
 */
static int
rot_prelude(struct rot *r, int rounds, int if_due, struct dmk_err *err)
{
	int rc;

	r->was_resumed = r->resumed;
	if (r->step == STEP_PROVE) {
		if (rounds > 0)
			return 0;    /* finished what was unfinished: that is this run's rotation */
		if (r->mode == MODE_RECOVER) {
			if (!r->recover_ok || r->dry)
				return 0;
			/* Nothing in the store opens it: a backup (the DMK opens by
			 * itself here), then a new password, pending, replacing
			 * nothing (wrong versions stay as they are). */
			secret_free(r->oldpw);
			r->oldpw = NULL;
			r->have_old = 0;
			if ((rc = rot_backup(r, err)) != 0 || (rc = rot_write_pending(r, err)) != 0)
				return rc;
			rot_fp(r, "after-pending");
			r->step = STEP_APPLY;
		}
		if (r->when == ROT_RESUME_ONLY) {
			rot_versions(r);
			r->outcome = "unchanged";
			rot_say(r, "no unfinished rotation");
			return 0;
		}
		if (r->when == ROT_ADOPT_ONLY) {
			rot_versions(r);
			r->outcome = "unchanged";
			if (!r->have_prev || !r->have_old) {
				rot_say(r, "no new version written outside dmkagent");
				return 0;
			}
			if ((rc = rot_probe(r, r->oldpw, err)) == 0) {
				/* in force already (added by hand): say so in the store */
				if (!r->dry && (rc = rot_mark(r, r->oldv.id, "current", err)) != 0)
					return rc;
				rot_say(r, "store version %s already opens the DMK: nothing to apply%s",
				    r->oldv.id, r->dry ? "" : "; marked current");
				return 0;
			}
			if (rc != DMK_ERR_WRONGPASS)
				return rc;
			if (r->dry) {
				r->outcome = "planned";
				rot_say(r, "would apply store version %s (written outside dmkagent) in "
				    "place of version %s", r->oldv.id, r->prevv.id);
				return 0;
			}
			if ((rc = adopt_unmarked(r, err)) < 0)
				return rc;
			if (rc == 1)
				return dmk_errf(err, DMK_ERR_WRONGPASS, "%s: neither store version %s "
				    "nor version %s opens the DMK on the primary; nothing was changed "
				    "(dmkagent recover)", r->p->db->name, r->oldv.id, r->prevv.id);
			r->outcome = NULL;
		}
		if (if_due) {
			time_t due = r->oldv.created + (time_t)r->p->db->rotate_every;
			char t[32];
			rot_versions(r);
			r->outcome = "not-due";
			if (r->p->db->rotate_every <= 0) {
				rot_say(r, "not due (no rotate_every)");
				return 0;
			}
			if (r->oldv.created != 0 && due > time(NULL)) {
				util_rfc3339(due, t, sizeof(t));
				rot_say(r, "not due until %s (version %s)", t, r->oldv.id);
				return 0;
			}
			r->outcome = NULL;
		}
	}
	if (r->dry) {
		if ((rc = rot_where(r, err)) != 0)
			return rc;
		rot_versions(r);
		r->outcome = "planned";
		if (r->step == STEP_PROVE)
			rot_say(r, "would %s: prove store version %s, %s, write a new version "
			    "pending, %s on the primary, register it on %zu replica(s), verify, "
			    "mark it current, drop version %s's password and retire it",
			    markers_mode_name((enum mk_mode)r->mode), r->oldv.id, r->no_backup && r->mode !=
			    MODE_REGENERATE ? "take no backup (--no-backup)" : "escrow a backup of "
			    "the certificates and the DMK", r->mode == MODE_REGENERATE ?
			    "REGENERATE" : "ADD ENCRYPTION BY PASSWORD", r->run->info.nreplicas,
			    r->oldv.id);
		else
			rot_say(r, "would resume %s %s (version %s replacing %s) at step: %s",
			    markers_mode_name((enum mk_mode)r->mode), r->rid[0] ? r->rid : "-", r->newv.id,
			    r->have_old ? r->oldv.id : "-", rot_step_names[r->step]);
		return 0;
	}
	r->rep_resumed |= r->was_resumed;
	if (r->was_resumed)
		rot_say(r, "resuming %s %s (version %s replacing %s) at step: %s",
		    markers_mode_name((enum mk_mode)r->mode), r->rid[0] ? r->rid : "-", r->newv.id,
		    r->have_old ? r->oldv.id : "-", rot_step_names[r->step]);
	r->note[0] = '\0';
	return 1;
}

/* After the steps succeeded: say so, and read the store again (another
 * unfinished rotation behind this one is the next round's). */
static int
rot_postlude(struct rot *r, struct dmk_err *err)
{
	int was = r->was_resumed;

	r->outcome = was ? "finished" : r->mode == MODE_REGENERATE ? "regenerated" :
	    r->mode == MODE_RECOVER ? "recovered" : "rotated";
	rot_say(r, "%s: store version %s is current%s%s%s", was ? "finished" :
	    r->mode == MODE_REGENERATE ? "regenerated" : "rotated", r->newv.id,
	    r->have_old ? ", version " : "", r->have_old ? r->oldv.id : "",
	    r->have_old ? " retired" : "");
	return rot_analyse(r, err);
}

/* The end of a database's run: the stopped record, the lease released. */
static int
rot_end(struct rot *r, int rc, struct dmk_err *err)
{
	struct dmk_err e2;
	int held;

	if (r->no_end)
		return rc;
	if (rc != 0) {
		r->outcome = rc == DMK_ERR_LOCKED ? "locked" : "stopped";
		if (r->rep_old[0] == '\0' && r->rep_new[0] == '\0')
			rot_versions(r);
		rot_audit(r, "stopped", NULL, r->have_new ? r->newv.id : NULL, rot_step_names[r->step],
		    err->msg);
	}
	r->lease = NULL;
	r->a->guard = NULL;
	r->a->guard_ctx = NULL;
	r->renewals = r->l.renewals;
	held = r->l.held;
	if (lease_release(r->a, &r->l, &e2) != 0)
		log_warn("%s", e2.msg);
	else if (held)
		rot_audit(r, "release", NULL, NULL, "released", NULL);
	if (rc == 0)
		rot_fp(r, "after-release");
	return rc;
}

/*
 * A batch of databases of one AG run, together: every lease first, then
 * each step for all of them before the next (rot_steps_many), then every
 * release.  rcs[k] and errs[k] get each database's result: one database's
 * failure stops that database only.  A finished resumed rotation does not
 * start another one.
 */
void
rot_batch(struct rot **rs, size_t n, int if_due, int *rcs, struct dmk_err *errs)
{
	char *go, *live;
	size_t k;
	int rounds, any, p;

	go = calloc(n + 1, 1);
	live = calloc(n + 1, 1);
	for (k = 0; k < n; k++) {
		dmk_err_clear(&errs[k]);
		rcs[k] = go && live ? 0 : dmk_errf(&errs[k], DMK_ERR_NOMEM, "out of memory");
	}
	if (go == NULL || live == NULL)
		goto out;
	for (k = 0; k < n; k++)
		live[k] = (rcs[k] = rot_begin(rs[k], &errs[k])) == 0;
	for (rounds = 0; rounds < 4; rounds++) {
		any = 0;
		for (k = 0; k < n; k++) {
			go[k] = 0;
			if (!live[k] || rcs[k] != 0)
				continue;
			rot_current(rs[k]);
			if ((p = rot_prelude(rs[k], rounds, if_due, &errs[k])) < 0)
				rcs[k] = p;
			else if (p == 0)
				live[k] = 0;
			else
				go[k] = any = 1;
		}
		if (!any)
			break;
		rot_steps_many(rs, n, go, rcs, errs);
		for (k = 0; k < n; k++) {
			if (!go[k])
				continue;
			rot_versions(rs[k]);
			if (rcs[k] == 0) {
				rot_current(rs[k]);
				rcs[k] = rot_postlude(rs[k], &errs[k]);
			}
		}
	}
out:
	for (k = 0; k < n; k++)
		rcs[k] = rot_end(rs[k], rcs[k], &errs[k]);
	free(go);
	free(live);
}

/* One database: rot_batch of one.  Returns 0, or an error. */
int
rot_db(struct rot *r, int if_due, struct dmk_err *err)
{
	int rc;

	rot_batch(&r, 1, if_due, &rc, err);
	return rc;
}
