/*
 * register.c: dmkagent register.  For each configured database, the DMK
 * password from its store, proven on the primary, registered with
 * sp_control_dbmasterkey_password on every replica the AG lists, so that
 * after any failover the new primary opens the DMK by itself.
 *
 * Order: nothing is registered anywhere for a database until its password
 * has opened the DMK on the primary.  Adding a credential only adds: a
 * crash or a dropped connection at any point leaves each replica with the
 * credentials it had plus perhaps the new one, and a rerun converges
 * (15594 means "already there").
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "cli.h"
#include "agcmd.h"
#include "deployhook.h"
#include "steps.h"

/*
 * --prune, on the primary: which older store versions hold a password that
 * no longer opens the DMK.  Their credentials can go from every replica.
 */
static void
find_stale(struct rep_run *rr, struct sql_session *s, struct db_plan *p)
{
	struct agent *a = rr->run->a;
	struct prov_version *v = NULL;
	struct store *st;
	size_t n = 0, i;
	struct dmk_err e;

	if (p->db->dmk_password.kind != REF_STORE || agent_store(a, p->store, &st, &e) != 0 ||
	    store_list_versions(st, &p->db->dmk_password, &v, &n, &e) != 0)
		return;
	for (i = 0; i < n && p->nstale < 16; i++) {
		struct secret *old = NULL;
		struct prov_version ov;

		if (strcmp(v[i].id, p->ver.id) == 0 || v[i].destroyed)
			continue;
		if (store_get(st, &p->db->dmk_password, v[i].id, &old, &ov, &e) != 0)
			continue;
		if (!secret_equal(old, p->pw) &&
		    sql_dmk_probe(s, p->db->name, old, &e) == DMK_ERR_WRONGPASS) {
			p->stale[p->nstale] = old;
			util_strlcpy(p->stale_ver[p->nstale++], v[i].id, sizeof(p->stale_ver[0]));
			continue;
		}
		secret_free(old);
	}
	free(v);
}

static int
prune_work(struct rep_run *rr, struct sql_session *s)
{
	struct ag_run *run = rr->run;
	size_t i, j;

	for (i = 0; i < run->nplans; i++) {
		struct db_plan *p = &run->plans[i];
		struct rep_db *d = &rr->dbs[i];

		for (j = 0; p->usable && j < p->nstale; j++) {
			struct audit_target t = { run->ag->name, rr->rep->name, p->db->name };
			struct audit_keys k = { p->primary_keys.dmk_key_guid, NULL, p->store,
			    p->db->dmk_password.text, p->stale_ver[j], p->primary_keys.family_guid, NULL };
			struct dmk_err e;
			int r = run->dry_run ? 0 : sql_dmk_password(s, p->db->name, p->stale[j], "drop", &e);

			if (r != 0 && sql_last_error(s)->number == 15595)
				continue;   /* never registered here */
			agent_audit(run->a, "prune", &t, &k, r == 0 ? "dropped" : "failed",
			    r == 0 ? NULL : e.msg);
			if (r == 0) {
				d->outcome = OUT_DROPPED;
				rep_note(rr, d, "%s the credential of store "
				    "version %s", run->dry_run ? "would drop" : "dropped", p->stale_ver[j]);
			}
		}
	}
	return 0;
}

/* Databases per request: sql_dmk_password_many's limit. */
#define ADD_CHUNK SQL_DMK_MANY_MAX

static int
add_chunk(struct ag_run *run, struct sql_session *s, size_t *idx, size_t n, int *ambiguous,
    int *n15594, struct sql_result **after, struct dmk_err *err)
{
	const char *dbs[SQL_DMK_MANY_MAX];
	const struct secret *pws[SQL_DMK_MANY_MAX];
	size_t i;

	for (i = 0; i < n; i++) {
		dbs[i] = run->plans[idx[i]].db->name;
		pws[i] = run->plans[idx[i]].pw;
	}
	return sql_dmk_password_many(s, dbs, pws, n, "add", ambiguous, n15594, after, err);
}

static int
register_work(struct rep_run *rr, struct sql_session *s)
{
	struct ag_run *run = rr->run;
	struct sql_result *before = NULL, *after = NULL;
	size_t *idx = NULL, nidx = 0, i, c, nent = 0;
	int failed = 0, r, *chunk_present = NULL;
	struct audit_entry *ent = NULL;
	struct audit_target *tg = NULL;
	struct audit_keys *ks = NULL;
	struct dmk_err e;

	if ((idx = calloc(run->nplans + 1, sizeof(*idx))) == NULL ||
	    (chunk_present = calloc(run->nplans / ADD_CHUNK + 2, sizeof(int))) == NULL ||
	    (ent = calloc(run->nplans + 1, sizeof(*ent))) == NULL ||
	    (tg = calloc(run->nplans + 1, sizeof(*tg))) == NULL ||
	    (ks = calloc(run->nplans + 1, sizeof(*ks))) == NULL) {
		free(idx);
		free(chunk_present);
		free(ent);
		free(tg);
		free(ks);
		return DMK_ERR_NOMEM;
	}
	if ((r = rep_credentials(s, &before, &e)) != 0) {
		/* cannot read the catalog: every database fails with that reason */
		for (i = 0; i < run->nplans; i++)
			if (run->plans[i].usable) {
				rr->dbs[i].outcome = OUT_FAILED;
				rep_note(rr, &rr->dbs[i], "%s", e.msg);
			}
		r = DMK_ERR_INCOMPLETE;
		goto out;
	}
	for (i = 0; i < run->nplans; i++) {
		struct db_plan *p = &run->plans[i];
		struct rep_db *d = &rr->dbs[i];

		if (!p->usable) {
			d->outcome = OUT_SKIPPED;
			continue;
		}
		d->keys.ncredentials = creds_of(before, p->primary_keys.family_guid,
		    d->keys.credential_names);
		util_strlcpy(d->keys.family_guid, p->primary_keys.family_guid,
		    sizeof(d->keys.family_guid));
		d->have_keys = 1;
		if (run->dry_run) {
			d->outcome = OUT_WOULD_ADD;
			rep_note(rr, d, "%d credential(s) for this database "
			    "now; SQL Server does not tell which password each holds",
			    d->keys.ncredentials);
			continue;
		}
		idx[nidx++] = i;
	}
	/* One round trip per chunk of databases. */
	for (i = 0; i < nidx; i += ADD_CHUNK) {
		size_t n = nidx - i < ADD_CHUNK ? nidx - i : ADD_CHUNK, j;
		int ambiguous = 0, n15594 = 0;

		/* the last chunk reads the credentials afterwards in the same request */
		r = add_chunk(run, s, idx + i, n, &ambiguous, &n15594,
		    i + n == nidx ? &after : NULL, &e);
		chunk_present[i / ADD_CHUNK] = ambiguous ? -1 : n15594;
		for (j = 0; j < n; j++) {
			struct rep_db *d = &rr->dbs[idx[i + j]];
			if (r != 0) {
				d->outcome = OUT_FAILED;
				rep_note(rr, d, "%s", e.msg);
			} else
				d->outcome = OUT_NONE;   /* the credentials tell, below */
		}
	}
	if (nidx > 0 && after == NULL && rep_credentials(s, &after, &e) != 0)
		after = NULL;
	/* Pass 1: a credential that was not there before is ours. */
	for (i = 0; i < nidx && after != NULL; i++) {
		struct db_plan *p = &run->plans[idx[i]];
		struct rep_db *d = &rr->dbs[idx[i]];
		char now[8][160];
		int nnow, a2, b2, seen;

		if (d->outcome != OUT_FAILED) {
			memset(now, 0, sizeof(now));
			nnow = creds_of(after, p->primary_keys.family_guid, now);
			for (a2 = 0; a2 < nnow && a2 < 8 && !d->credential[0]; a2++) {
				for (b2 = 0, seen = 0; b2 < d->keys.ncredentials && b2 < 8; b2++)
					if (strcmp(now[a2], d->keys.credential_names[b2]) == 0)
						seen = 1;
				if (!seen) {
					util_strlcpy(d->credential, now[a2], sizeof(d->credential));
					d->outcome = OUT_ADDED;
				}
			}
		}
	}
	/*
	 * Pass 2: in a chunk whose only errors were 15594, one per database
	 * without a new credential, those databases had the password already.
	 */
	for (c = 0; c * ADD_CHUNK < nidx && after != NULL; c++) {
		size_t lo = c * ADD_CHUNK, hi = lo + ADD_CHUNK < nidx ? lo + ADD_CHUNK : nidx, j;
		int quiet = 0;
		for (j = lo; j < hi; j++)
			quiet += rr->dbs[idx[j]].outcome == OUT_NONE;
		if (chunk_present[c] >= 0 && quiet == chunk_present[c])
			for (j = lo; j < hi; j++)
				if (rr->dbs[idx[j]].outcome == OUT_NONE)
					rr->dbs[idx[j]].outcome = OUT_PRESENT;
	}
	for (i = 0; i < nidx; i++) {
		struct db_plan *p = &run->plans[idx[i]];
		struct rep_db *d = &rr->dbs[idx[i]];
		struct audit_target *t = &tg[nent];
		struct audit_keys *k = &ks[nent];

		if (d->outcome == OUT_NONE) {
			/* The batch cannot tell: ask for this database alone. */
			r = sql_dmk_password(s, p->db->name, p->pw, "add", &e);
			if (r == 0)
				d->outcome = OUT_ADDED;
			else if (sql_last_error(s)->number == 15594)
				d->outcome = OUT_PRESENT;
			else {
				d->outcome = OUT_FAILED;
				rep_note(rr, d, "%s", e.msg);
			}
		}
		if (d->outcome == OUT_FAILED)
			failed = 1;
		/* Audited and recorded below, once for the replica's batch. */
		t->ag = run->ag->name;
		t->replica = rr->rep->name;
		t->database = p->db->name;
		k->family_guid = p->primary_keys.family_guid;
		k->dmk_key_guid = p->primary_keys.dmk_key_guid;
		k->store = p->store;
		k->reference = p->db->dmk_password.text;
		k->version = p->ver.id;
		ent[nent].action = "register";
		ent[nent].target = t;
		ent[nent].keys = k;
		ent[nent].outcome = d->outcome == OUT_FAILED ? "failed" :
		    d->outcome == OUT_ADDED ? "added" : "unchanged";
		ent[nent].error = d->outcome == OUT_FAILED ? rep_note_text(d) : NULL;
		nent++;
		if (d->outcome == OUT_FAILED)
			continue;
		regstate_stage(run->a, run->ag->name, rr->rep->name, p->primary_keys.family_guid,
		    p->db->dmk_password.text, p->ver.id, d->credential, 0);
		{
			int others = d->keys.ncredentials - (d->outcome == OUT_PRESENT);
			if (others > 0)
				rep_note(rr, d, "%d other credential(s) for this "
				    "database%s", others, run->prune ? "" : " (stale? see --prune)");
		}
		if (run->prune && rr->is_primary)
			find_stale(rr, s, p);
	}
	agent_audit_many(run->a, ent, nent);
	if (regstate_flush(run->a, &e) != 0)
		log_warn("%s", e.msg);
	r = failed ? DMK_ERR_INCOMPLETE : 0;
out:
	sql_result_free(before);
	sql_result_free(after);
	free(idx);
	free(chunk_present);
	free(ent);
	free(tg);
	free(ks);
	return r;
}

static void
report(struct agent *a, struct ag_run *run, json_t *jag)
{
	size_t i, j;
	json_t *jreps = json_array(), *jdbs = json_array();

	for (j = 0; j < run->nplans; j++) {
		json_t *o = json_object();
		json_object_set_new(o, "database", json_string(run->plans[j].db->name));
		json_object_set_new(o, "reference", json_string(run->plans[j].db->dmk_password.text));
		json_object_set_new(o, "version", json_string(run->plans[j].ver.id));
		json_object_set_new(o, "usable", json_boolean(run->plans[j].usable));
		json_object_set_new(o, "error", run->plans[j].usable ? json_null() :
		    json_string(run->plans[j].error));
		json_array_append_new(jdbs, o);
		if (!run->plans[j].usable && a->output == OUTPUT_TEXT)
			fprintf(a->out, "%s: %s\n", run->ag->name, run->plans[j].error);
	}
	for (i = 0; i < run->nreps; i++) {
		struct rep_run *rr = &run->reps[i];
		json_t *o = json_object(), *od = json_array();
		json_object_set_new(o, "name", json_string(rr->rep->name));
		json_object_set_new(o, "role", json_string(rr->is_primary ? "PRIMARY" : "SECONDARY"));
		json_object_set_new(o, "address", json_sprintf("%s:%d", rr->ep.host, rr->ep.port));
		json_object_set_new(o, "address_from", json_string(rr->how[0] ? rr->how : "none"));
		json_object_set_new(o, "reached", json_boolean(rr->reached));
		json_object_set_new(o, "error", rr->reached ? json_null() : json_string(rr->error));
		if (!rr->reached && a->output == OUTPUT_TEXT)
			fprintf(a->out, "  %-12s NOT REACHED: %s\n", rr->rep->name, rr->error);
		for (j = 0; rr->reached && j < run->nplans; j++) {
			struct rep_db *d = &rr->dbs[j];
			json_t *x = json_object();
			json_object_set_new(x, "database", json_string(run->plans[j].db->name));
			json_object_set_new(x, "outcome", json_string(rep_outcome_name(d->outcome)));
			json_object_set_new(x, "detail", json_string(rep_note_text(d)));
			if (d->credential[0])
				json_object_set_new(x, "credential", json_string(d->credential));
			json_array_append_new(od, x);
			if (a->output == OUTPUT_TEXT && d->outcome != OUT_SKIPPED)
				fprintf(a->out, "  %-12s %-24s %s%s%s\n", rr->rep->name,
				    run->plans[j].db->name, rep_outcome_name(d->outcome),
				    rep_note_text(d)[0] ? ": " : "", rep_note_text(d));
		}
		json_object_set_new(o, "databases", od);
		json_array_append_new(jreps, o);
	}
	json_object_set_new(jag, "databases", jdbs);
	json_object_set_new(jag, "replicas", jreps);
}

struct reg_opts {
	int prune;
	size_t changed;
};

static int
reg_option(struct agcmd_ctx *c, int ch, const char *arg, struct dmk_err *err)
{
	struct reg_opts *o = c->data;

	(void)arg;
	if (ch != 'p')
		return DMK_ERR_USAGE;
	o->prune = 1;
	return 0;
}

/* Register on every replica, then (--prune) drop what older versions left. */
int
register_steps(struct agcmd_ctx *c, struct ag_run *run, json_t *jag, int prune,
    size_t *changed)
{
	size_t j, k, nst = 0, added;
	int r, rc = 0, failed;

	run->dry_run = c->dry_run;
	run->prune = prune;
	r = ag_each_replica(run, register_work);
	if (prune && r == 0) {
		for (j = 0; j < run->nplans; j++)
			nst += run->plans[j].nstale;
		if (nst > 0) {
			for (j = 0; j < run->nreps; j++)
				free(run->reps[j].dbs);
			free(run->reps);
			run->reps = NULL;
			r = ag_each_replica(run, prune_work);
		}
	}
	report(c->a, run, jag);
	rc = agcmd_plans(c, run);
	/* One hook per database: registered somewhere new, or failed somewhere. */
	for (k = 0; k < run->nplans; k++) {
		if (!run->plans[k].usable)
			continue;
		for (j = 0, added = 0, failed = 0; j < run->nreps; j++) {
			if (run->reps[j].dbs == NULL)
				continue;
			added += run->reps[j].dbs[k].outcome == OUT_ADDED;
			failed |= run->reps[j].dbs[k].outcome == OUT_FAILED || !run->reps[j].reached;
		}
		*changed += added;
		if (!c->dry_run && (added || failed))
			deployhook_fire(c->a, failed ? "failed" : "registered", run->ag->name,
			    run->plans[k].db->name, run->plans[k].ver.id, failed ?
			    DMK_ERR_INCOMPLETE : 0);
	}
	return agcmd_worse(rc, r);
}

static int
reg_ag(struct agcmd_ctx *c, struct ag_run *run, json_t *jag)
{
	struct reg_opts *o = c->data;

	return register_steps(c, run, jag, o->prune, &o->changed);
}

static void
reg_finish(struct agcmd_ctx *c, json_t *root)
{
	struct reg_opts *o = c->data;

	json_object_set_new(root, "changed", json_integer((json_int_t)o->changed));
	if (c->a->output == OUTPUT_JSON)
		return;
	if (!c->dry_run && o->changed)
		fprintf(c->a->out, "%zu credential(s) added\n", o->changed);
	else if (!c->dry_run && c->worst == 0)
		fprintf(c->a->out, "nothing to change: every replica already had the password "
		    "registered\n");
	if (c->worst == DMK_ERR_INCOMPLETE)
		agcmd_conclude(c, c->worst, "incomplete: not every replica or database was done "
		    "(see above)%s", agcmd_rerun(c, "; a rerun finishes the rest"));
}

static const struct option reg_options[] = {
	{ "prune", no_argument, NULL, 'p' },
	{ NULL, 0, NULL, 0 },
};

/* --jobs: an AG job's count into the run's. */
static void
reg_merge(void *data, const void *job)
{
	((struct reg_opts *)data)->changed += ((const struct reg_opts *)job)->changed;
}

static const struct agcmd reg_cmd = {
	.name = "register",
	.flags = AGCMD_CHANGES | AGCMD_PROBE | AGCMD_DRY_RUN | AGCMD_HEADER | AGCMD_PARALLEL,
	.options = reg_options,
	.shortopts = "p",
	.option = reg_option,
	.run_ag = reg_ag,
	.finish = reg_finish,
	.data_size = sizeof(struct reg_opts),
	.merge = reg_merge,
};

int
cmd_register(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	struct reg_opts o;

	memset(&o, 0, sizeof(o));
	return agcmd_main(a, &reg_cmd, &o, argc, argv, err);
}
