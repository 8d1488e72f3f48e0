/*
 * cmd_rotate.c: dmkagent rotate and recover, and run's rotate_database: their
 * options, the loop over databases, the JSON report; the state machine they
 * drive is rotation.c.
 */
#include <errno.h>
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

/* ---- commands ---- */

struct opts {
	const char *ag, *db;
	int if_due, dry, regenerate, no_backup;
	int password_unknown;         /* recover: no secret at the reference is really so */
	long batch;                   /* --batch: databases per batch (rot_batch) */
};

static void
rot_init(struct rot *r, struct agent *a, struct ag_run *run, size_t j, const char *cmd,
    int mode, const struct opts *o)
{
	memset(r, 0, sizeof(*r));
	r->a = a;
	r->run = run;
	r->pi = j;
	r->p = &run->plans[j];
	r->ref = &r->p->db->dmk_password;
	r->cmd = cmd;
	r->dry = o->dry;
	r->no_backup = o->no_backup;
	r->mode = mode;
}

static json_t *
jstr(const char *s)
{
	return s != NULL && s[0] != '\0' ? json_string(s) : json_null();
}

/*
 * One database's part of the --output json report: the store versions, the
 * step boundaries passed in this run, the outcome and the error text.  No
 * password is ever in it (nothing here reads one).
 */
static json_t *
rot_json(const struct rot *r, int rc, const struct dmk_err *e)
{
	json_t *o = json_object(), *steps = json_array(), *bk = json_null();
	struct secret_ref ref;
	struct dmk_err e2;
	size_t i;

	for (i = 0; i < r->nsteps; i++)
		json_array_append_new(steps, json_string(r->steps[i]));
	if (r->bk_outcome != NULL) {
		bk = json_object();
		json_object_set_new(bk, "outcome", json_string(r->bk_outcome));
		json_object_set_new(bk, "reference", escrow_ref(r->ref, "dmk", NULL, &ref, &e2) == 0 ?
		    json_string(ref.text) : json_null());
		json_object_set_new(bk, "version", jstr(r->bkver));
	}
	json_object_set_new(o, "database", json_string(r->p->db->name));
	json_object_set_new(o, "reference", json_string(r->ref->text));
	json_object_set_new(o, "mode", json_string(markers_mode_name((enum mk_mode)r->mode)));
	json_object_set_new(o, "rotation", jstr(r->rep_rid));
	json_object_set_new(o, "resumed", json_boolean(r->rep_resumed));
	json_object_set_new(o, "old_version", jstr(r->rep_old));
	json_object_set_new(o, "new_version", jstr(r->rep_new));
	json_object_set_new(o, "backup", bk);
	json_object_set_new(o, "steps", steps);
	json_object_set_new(o, "lease_renewals", json_integer(r->renewals));
	json_object_set_new(o, "outcome", json_string(r->outcome ? r->outcome :
	    rc != 0 ? "stopped" : "unchanged"));
	json_object_set_new(o, "stopped_at", rc != 0 && r->step >= STEP_PROVE &&
	    r->step <= STEP_DONE ? json_string(rot_step_names[r->step]) : json_null());
	json_object_set_new(o, "message", jstr(r->msg));
	json_object_set_new(o, "note", jstr(r->note));
	json_object_set_new(o, "error", rc != 0 ? json_string(e->msg) : json_null());
	return o;
}

/* A database not in its AG (or an AG not reached): the report's entry. */
static json_t *
plan_json(const char *name, const char *outcome, const char *error)
{
	json_t *o = json_object();

	json_object_set_new(o, "database", json_string(name));
	json_object_set_new(o, "outcome", json_string(outcome));
	json_object_set_new(o, "error", jstr(error));
	return o;
}

/* Add or replace (recover asks again after a failover) a database's entry. */
static void
jdb_put(json_t *jdbs, json_t *o)
{
	const char *name = json_string_value(json_object_get(o, "database"));
	size_t i;
	json_t *x;

	json_array_foreach(jdbs, i, x)
		if (name && strcmp(name, json_string_value(json_object_get(x, "database"))) == 0) {
			json_array_set_new(jdbs, i, o);
			return;
		}
	json_array_append_new(jdbs, o);
}

enum { OPT_BATCH = 0x200 };

static int
rot_option(struct agcmd_ctx *c, int ch, const char *arg, struct dmk_err *err)
{
	struct opts *o = c->data;

	switch (ch) {
	case 'i':
		o->if_due = 1;
		c->a->trigger = "schedule (--if-due)";   /* the audit records' why.trigger */
		return 0;
	case 'r': o->regenerate = 1; return 0;
	case 'B': o->no_backup = 1; return 0;
	case 'U': o->password_unknown = 1; return 0;
	case OPT_BATCH: {
		char *end;
		errno = 0;
		o->batch = strtol(arg, &end, 10);
		if (errno == 0 && end != arg && *end == '\0' && o->batch >= 1 &&
		    o->batch <= ROT_BATCH_MAX)
			return 0;
		return dmk_errf(err, DMK_ERR_USAGE, "%s --batch: a number of databases from 1 "
			    "to %d, not '%s'", c->cmd->name, ROT_BATCH_MAX, arg);
	}
	}
	return dmk_errf(err, DMK_ERR_USAGE, "%s: unknown option", c->cmd->name);
}

static int
rot_check(struct agcmd_ctx *c, struct dmk_err *err)
{
	struct opts *o = c->data;

	o->ag = c->ag_filter;
	o->db = c->db_filter;
	o->dry = c->dry_run;
	if (o->regenerate && o->no_backup)
		return dmk_errf(err, DMK_ERR_USAGE, "rotate --regenerate makes new key material and "
		    "always takes a backup first: --no-backup is refused with it");
	return 0;
}

static json_t *
jdbs_of(json_t *jag)
{
	json_t *jdbs = json_object_get(jag, "databases");

	if (jdbs == NULL) {
		jdbs = json_array();
		json_object_set_new(jag, "databases", jdbs);
	}
	return jdbs;
}

/* The hook's event for a finished rotation, or NULL. */
static const char *
rot_event(const char *outcome)
{
	if (outcome == NULL)
		return NULL;
	if (strcmp(outcome, "recovered") == 0)
		return "recovered";
	if (strcmp(outcome, "rotated") == 0 || strcmp(outcome, "finished") == 0 ||
	    strcmp(outcome, "regenerated") == 0)
		return "rotated";
	return NULL;
}

static void
rot_hook(struct agcmd_ctx *c, const struct rot *r, int rc)
{
	const char *ev = rc != 0 ? "failed" : rot_event(r->outcome);

	if (ev != NULL && !r->dry)
		deployhook_fire(c->a, ev, r->run->ag->name, r->p->db->name,
		    r->rep_new[0] ? r->rep_new : NULL, rc);
}

/*
 * Databases js[0..n-1] of run, together: rot_batch takes every step for all
 * of them before the next, over the run's kept sessions.  Each is reported
 * on its own afterwards, in order, as rotate_database says; outcomes (may
 * be NULL) gets each one's outcome word.
 */
static void
rotate_some(struct agcmd_ctx *c, struct ag_run *run, const size_t *js, size_t n,
    enum rot_when when, int regenerate, int no_backup, json_t *jdbs, const char **outcomes,
    int *rc1)
{
	struct opts o;
	struct rot *rots = NULL, **rs = NULL;
	struct dmk_err *errs = NULL, e;
	int *rcs = NULL;
	size_t k, m = 0;

	for (k = 0; k < n; k++)
		if (outcomes != NULL)
			outcomes[k] = "failed";
	if ((rots = calloc(n + 1, sizeof(*rots))) == NULL ||
	    (rs = calloc(n + 1, sizeof(*rs))) == NULL ||
	    (errs = calloc(n + 1, sizeof(*errs))) == NULL ||
	    (rcs = calloc(n + 1, sizeof(*rcs))) == NULL) {
		dmk_errf(&e, DMK_ERR_NOMEM, "out of memory");
		agcmd_fail(c, DMK_ERR_NOMEM, &e);
		goto out;
	}
	memset(&o, 0, sizeof(o));
	o.dry = c->dry_run;
	o.no_backup = no_backup;
	for (k = 0; k < n; k++) {
		if (!run->plans[js[k]].in_ag)
			continue;
		rot_init(&rots[k], c->a, run, js[k], "rotate", regenerate ? MODE_REGENERATE :
		    MODE_ROTATE, &o);
		rots[k].when = when;
		rs[m++] = &rots[k];
	}
	rot_batch(rs, m, when == ROT_IF_DUE, rcs, errs);
	for (k = 0, m = 0; k < n; k++) {
		struct rot *r = &rots[k];
		int rc;

		if (!run->plans[js[k]].in_ag) {
			jdb_put(jdbs, plan_json(run->plans[js[k]].db->name, "failed",
			    run->plans[js[k]].error));
			/* lasting: no rerun adds it to the AG */
			dmk_errf(&e, DMK_ERR_NOTFOUND, "%s", run->plans[js[k]].error);
			agcmd_fail(c, DMK_ERR_NOTFOUND, &e);
			c->lasting = 1;
			if (rc1 != NULL)
				*rc1 = DMK_ERR_NOTFOUND;
			continue;
		}
		rc = rcs[m];
		if (rc1 != NULL)
			*rc1 = rc;
		if (rc == 0 && r->resumed == 0 && regenerate && r->mode != MODE_REGENERATE)
			rot_say(r, "finished an unfinished rotation first; run rotate --regenerate "
			    "again to regenerate");
		jdb_put(jdbs, rot_json(r, rc, &errs[m]));
		if (outcomes != NULL)
			outcomes[k] = r->outcome ? r->outcome : rc != 0 ? "stopped" : "unchanged";
		rot_hook(c, r, rc);
		rot_free(r);
		agcmd_fail(c, rc, &errs[m]);
		m++;
	}
out:
	free(rots);
	free(rs);
	free(errs);
	free(rcs);
}

void
rotate_databases(struct agcmd_ctx *c, struct ag_run *run, const size_t *js, size_t n,
    enum rot_when when, int regenerate, int no_backup, json_t *jdbs, const char **outcomes)
{
	rotate_some(c, run, js, n, when, regenerate, no_backup, jdbs, outcomes, NULL);
}

int
rotate_database(struct agcmd_ctx *c, struct ag_run *run, size_t j, enum rot_when when,
    int regenerate, int no_backup, json_t *jdbs, const char **outcome)
{
	const char *oc = "failed";
	int rc = DMK_ERR_NOMEM;

	rotate_some(c, run, &j, 1, when, regenerate, no_backup, jdbs, &oc, &rc);
	if (outcome != NULL)
		*outcome = oc;
	return rc;
}

static int
rot_ag(struct agcmd_ctx *c, struct ag_run *run, json_t *jag)
{
	struct opts *o = c->data;
	json_t *jdbs = jdbs_of(jag);
	size_t batch = o->batch > 0 ? (size_t)o->batch : ROT_BATCH_DEFAULT;
	size_t *js, j, n;

	if ((js = calloc(batch, sizeof(*js))) == NULL)
		return DMK_ERR_NOMEM;
	for (j = 0; j < run->nplans; j += n) {
		if (agcmd_stopping(c, run->plans[j].db->name))
			break;
		for (n = 0; n < batch && j + n < run->nplans; n++)
			js[n] = j + n;
		rotate_databases(c, run, js, n, o->if_due ? ROT_IF_DUE : ROT_ALWAYS, o->regenerate,
		    o->no_backup, jdbs, NULL);
	}
	free(js);
	return 0;
}

static void
rot_finish(struct agcmd_ctx *c, json_t *root)
{
	struct opts *o = c->data;

	if (strcmp(c->cmd->name, "rotate") == 0)
		json_object_set_new(root, "regenerate", json_boolean(o->regenerate));
	json_object_set_new(root, "backup", json_boolean(!o->no_backup));
}

static const struct option rot_options[] = {
	{ "if-due", no_argument, NULL, 'i' },
	{ "regenerate", no_argument, NULL, 'r' },
	{ "no-backup", no_argument, NULL, 'B' },
	{ "batch", required_argument, NULL, OPT_BATCH },
	{ NULL, 0, NULL, 0 },
};

static const struct agcmd rotate_cmd = {
	.name = "rotate",
	.flags = AGCMD_CHANGES | AGCMD_DRY_RUN | AGCMD_PARALLEL,
	.options = rot_options,
	.shortopts = "irB",
	.option = rot_option,
	.check = rot_check,
	.run_ag = rot_ag,
	.finish = rot_finish,
};

int
cmd_rotate(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	struct opts o;

	memset(&o, 0, sizeof(o));
	return agcmd_main(a, &rotate_cmd, &o, argc, argv, err);
}

/* ---- recover ---- */

static int
noop_work(struct rep_run *rr, struct sql_session *s)
{
	(void)rr;
	(void)s;
	return 0;
}

/* Does the DMK of plan p open by itself on the current primary? */
static int
auto_opens(struct rot *r, struct dmk_err *err)
{
	int rc;

	if ((rc = rot_facts(r, err)) != 0)
		return rc;
	if (r->p->cert[0] == '\0')
		return dmk_errf(err, DMK_ERR_NOTFOUND, "%s: no certificate under the DMK to test it "
		    "with", r->p->db->name);
	return probe_auto_open(r->ps, r->p->db->name, r->p->cert, err);
}

static void
runbook_help(struct agent *a, const char *db)
{
	fprintf(agcmd_textout(a), "%s: no replica's service master key opens the DMK, and no password "
	    "in the store does.  dmkagent will not drop a DMK or a certificate.  The runbook's "
	    "way out (Microsoft, ConfigMgr BitLocker recovery data on Always On): on the primary, "
	    "restore the DMK from a backup (RESTORE MASTER KEY ... FORCE; dmkagent(1), BACKUPS, "
	    "says how from the backups escrowed in the store) or, losing the encrypted recovery "
	    "keys, drop and recreate the certificate and the DMK with a known password, then put "
	    "that password in the store (dmkagent store put) and run dmkagent register.\n", db);
}

/*
 * recover, one database on the current primary: finish an unfinished
 * rotation or recovery, or, when the DMK opens by itself here, back it up
 * and give it a new password.  *need_node when it does not open here.
 */
static int
recover_db(struct rot *r, int *need_node, int password_unknown, struct dmk_err *e)
{
	int rc, opens;

	if ((rc = rot_analyse(r, e)) != 0)
		return rc;
	/*
	 * No secret at the reference is most often a typo, and the DMK's
	 * password is then known, elsewhere: recovering would give the DMK a
	 * second password and a second credential on every replica.  Only on
	 * the operator's word that it is really unknown.
	 */
	if (r->missing && !password_unknown) {
		r->outcome = "failed";
		return dmk_errf(e, DMK_ERR_NOTFOUND, "%s: no such secret at %s (check dmk_password "
		    "in [database %s/%s]); nothing was changed.  If nobody knows the DMK's password, "
		    "recover --password-unknown adds a new password to the DMK and a credential for "
		    "it on every replica", r->p->db->name, r->ref->text, r->p->db->ag,
		    r->p->db->label);
	}
	if ((rc = rot_facts(r, e)) != 0)
		return rc;
	if (r->step == STEP_PROVE && r->have_old && (rc = rot_probe(r, r->oldpw, e)) == 0) {
		rot_versions(r);
		r->outcome = "nothing-to-do";
		rot_say(r, "nothing to recover: the store's current password (version %s) opens the "
		    "DMK (use rotate for a new one)", r->oldv.id);
		return 0;
	}
	if (rc != 0 && rc != DMK_ERR_WRONGPASS)
		return rc;
	if (r->step != STEP_PROVE) {
		/* an unfinished rotate or recover: finish it */
		if ((rc = rot_where(r, e)) != 0)
			return rc;
		if (r->step != STEP_APPLY || r->mode != MODE_RECOVER) {
			rot_free(r);
			return rot_db(r, 0, e);
		}
	}
	opens = auto_opens(r, e);
	if (opens < -1)
		return opens;
	if (opens != 1) {
		r->outcome = "not-opened-here";
		rot_say(r, "the DMK does not open by itself on the primary %s", r->run->info.primary);
		*need_node = 1;
		return 0;
	}
	if (r->dry) {
		r->outcome = "planned";
		rot_say(r, "would recover on %s: its service master key opens the DMK; %s, write a new "
		    "password pending, ADD ENCRYPTION BY PASSWORD, register it on %zu replica(s), "
		    "verify, mark it current", r->run->info.primary, r->no_backup ?
		    "take no backup (--no-backup)" : "escrow a backup of the certificates and the DMK",
		    r->run->info.nreplicas);
		return 0;
	}
	/* What it is about to add, before it does. */
	if (!r->a->quiet)
		fprintf(agcmd_textout(r->a), "%s/%s: recovering on %s (its service master key "
		    "opens the DMK): adding a new password to the DMK, kept in %s, and a credential "
		    "for it on each of %zu replica(s); nothing is dropped\n", r->run->ag->name,
		    r->p->db->name, r->run->info.primary, r->ref->text, r->run->info.nreplicas);
	rot_free(r);
	r->recover_ok = 1;
	return rot_db(r, 0, e);
}

static int
recover_ag(struct agcmd_ctx *c, const struct conf_ag *ag, json_t *jag)
{
	struct agent *a = c->a;
	struct opts *o = c->data;
	json_t *jdbs = jdbs_of(jag);
	char tried[16][520];
	size_t ntried = 0, j, k;
	int again = 1, round, rc;

	for (round = 0; again && round < 16; round++) {
		struct ag_run run;
		struct dmk_err e;
		int need_node = 0;

		again = 0;
		if ((rc = ag_open(a, ag, o->db, 0, &run, &e)) != 0) {
			agcmd_fail(c, rc, &e);
			json_object_set_new(jag, "error", json_string(e.msg));
			ag_close(&run);
			break;
		}
		json_object_set_new(jag, "primary", json_string(run.info.primary));
		c->stepped = 1;
		if (ntried < 16)
			util_strlcpy(tried[ntried++], run.info.primary, sizeof(tried[0]));
		for (j = 0; j < run.nplans; j++) {
			struct rot r;

			if (!run.plans[j].in_ag) {
				/* lasting: said once, not again after a failover */
				if (round == 0) {
					jdb_put(jdbs, plan_json(run.plans[j].db->name, "failed",
					    run.plans[j].error));
					dmk_errf(&e, DMK_ERR_NOTFOUND, "%s", run.plans[j].error);
					agcmd_fail(c, DMK_ERR_NOTFOUND, &e);
					c->lasting = 1;
				}
				continue;
			}
			rot_init(&r, a, &run, j, "recover", MODE_RECOVER, o);
			dmk_err_clear(&e);
			rc = recover_db(&r, &need_node, o->password_unknown, &e);
			jdb_put(jdbs, rot_json(&r, rc, &e));
			rot_hook(c, &r, rc);
			rot_free(&r);
			agcmd_fail(c, rc, &e);
		}
		if (need_node) {
			/* Fail over, as the runbook does, to a replica not yet tried. */
			struct dmk_err fe;
			struct rep_run *target = NULL;

			rot_reps_free(&run);
			ag_each_replica(&run, noop_work);
			for (k = 0; k < run.nreps && target == NULL; k++) {
				size_t t2;
				int seen = 0;
				for (t2 = 0; t2 < ntried; t2++)
					if (strcasecmp(tried[t2], run.reps[k].rep->name) == 0)
						seen = 1;
				if (!seen && run.reps[k].reached)
					target = &run.reps[k];
			}
			if (target == NULL) {
				json_t *x;
				size_t xi;

				for (j = 0; j < run.nplans; j++)
					runbook_help(a, run.plans[j].db->name);
				json_array_foreach(jdbs, xi, x)
					if (strcmp(json_string_value(json_object_get(x, "outcome")),
					    "not-opened-here") == 0) {
						json_object_set_new(x, "outcome",
						    json_string("unrecoverable"));
						json_object_set_new(x, "error", json_string("no replica's "
						    "service master key opens the DMK, and no password in "
						    "the store does"));
					}
				if (c->worst == 0)
					agcmd_keep(c, DMK_ERR_WRONGPASS, "no replica can open the DMK: "
					    "see above");
			} else if (o->dry) {
				fprintf(agcmd_textout(a), "%s: would fail over to %s and test there\n",
				    ag->name, target->rep->name);
			} else {
				struct audit_target t = { ag->name, target->rep->name, NULL };

				fprintf(agcmd_textout(a), "%s: failing over to %s to test its service "
				    "master key\n", ag->name, target->rep->name);
				rc = ag_failover_to(&run, target, &fe);
				agent_audit(a, "recover-failover", &t, NULL, rc == 0 ? "ok" : "failed",
				    rc ? fe.msg : NULL);
				if (rc != 0) {
					fprintf(stderr, "dmkagent: %s\n", fe.msg);
					if (ntried < 16)
						util_strlcpy(tried[ntried++], target->rep->name,
						    sizeof(tried[0]));
				} else {
					failpoint("recover:after-failover");
					util_sleep_ms(300);
				}
				again = 1;
			}
		}
		ag_close(&run);
	}
	return 0;
}

static const struct option rec_options[] = {
	{ "no-backup", no_argument, NULL, 'B' },
	{ "password-unknown", no_argument, NULL, 'U' },
	{ NULL, 0, NULL, 0 },
};

static const struct agcmd recover_cmd = {
	.name = "recover",
	.flags = AGCMD_CHANGES | AGCMD_DRY_RUN | AGCMD_PARALLEL,
	.options = rec_options,
	.shortopts = "B",
	.option = rot_option,
	.check = rot_check,
	.run_ag_raw = recover_ag,
	.finish = rot_finish,
};

int
cmd_recover(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	struct opts o;

	memset(&o, 0, sizeof(o));
	return agcmd_main(a, &recover_cmd, &o, argc, argv, err);
}
