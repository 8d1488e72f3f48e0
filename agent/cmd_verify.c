/*
 * verify.c: dmkagent verify [--failover-test] and dmkagent status.
 *
 * verify gathers, per replica and database, the strongest evidence there is
 * without failing over:
 *  - a credential for the database's family_guid exists on the replica
 *    (sys.master_key_passwords), and it is the one this agent registered;
 *  - the store's current version is the one registered there;
 *  - on the primary the store's password opens the DMK (ag_open proves it);
 *  - where the database is readable, the DMK opens by itself: a
 *    certificate under the DMK encrypts and decrypts (this is the seed
 *    runbook's check, and it is exactly what a failover needs).
 * --failover-test (disruptive, opt-in) fails over to each replica in turn,
 * runs the auto-open probe as primary there, and returns to the original.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "cli.h"
#include "agcmd.h"
#include "steps.h"

/*
 * One round trip for the replica's credentials (*creds, NULL if that
 * statement failed) and, where the replica is readable, every database's
 * "does the DMK open by itself here?" via a certificate under it.
 * opened[i] gets 1, 0, or -1 (cannot tell, e.g. a secondary that does
 * not allow reads: sql_add_cert_probe).
 */
static void
probe_all(struct rep_run *rr, struct sql_session *s, int *opened, struct sql_result **creds)
{
	struct ag_run *run = rr->run;
	struct sql_result **sets = NULL;
	struct sql_stmt *st;
	struct dmk_err e;
	size_t i, n = 0, k;
	int r = 0, probing = rr->is_primary || rr->rep->secondary_allow != 0;

	for (i = 0; i < run->nplans; i++)
		opened[i] = -1;
	*creds = NULL;
	if ((st = sql_stmt_new()) == NULL)
		return;
	/* The credentials first, in the same round trip. */
	r = sql_add_credentials(st, &e);
	n = 1;
	for (i = 0; i < run->nplans && r == 0; i++) {
		struct db_plan *p = &run->plans[i];
		if (!p->usable || p->cert[0] == '\0' || !probing)
			continue;
		r = sql_add_cert_probe(st, i, p->db->name, p->cert, &e);
		n++;
	}
	if (r == 0 && n > 0 && sql_exec_sets(s, st, &sets, &n, &e) == 0) {
		for (k = 0; k < n; k++) {
			const struct sql_value *iv, *ov;

			if (sets[k]->ncols == 2 && strcmp(sets[k]->cols[0], "family_guid") == 0 &&
			    strcmp(sets[k]->cols[1], "name") == 0 && *creds == NULL) {
				*creds = sets[k];
				sets[k] = NULL;
				continue;
			}
			iv = sql_cell(sets[k], 0, "i");
			ov = sql_cell(sets[k], 0, "opened");
			if (iv && ov && iv->type == SQLT_INT && ov->type == SQLT_INT &&
			    iv->i >= 0 && (size_t)iv->i < run->nplans)
				opened[iv->i] = ov->i < 0 ? -1 : ov->i != 0;
		}
		sql_sets_free(sets, n);
	}
	sql_stmt_free(st);
}

static int
verify_work(struct rep_run *rr, struct sql_session *s)
{
	struct ag_run *run = rr->run;
	struct sql_result *all = NULL;
	int *opened, gap = 0;
	struct dmk_err e;
	size_t i;

	if ((opened = calloc(run->nplans + 1, sizeof(int))) == NULL)
		return DMK_ERR_NOMEM;
	/* credentials and probes in one round trip; the credentials alone if that failed */
	probe_all(rr, s, opened, &all);
	if (all == NULL && rep_credentials(s, &all, &e) != 0) {
		for (i = 0; i < run->nplans; i++)
			if (run->plans[i].usable) {
				rr->dbs[i].outcome = OUT_GAP;
				rep_note(rr, &rr->dbs[i], "cannot read the "
				    "credentials: %s", e.msg);
			}
		free(opened);
		return DMK_ERR_INCOMPLETE;
	}
	for (i = 0; i < run->nplans; i++) {
		struct db_plan *p = &run->plans[i];
		struct rep_db *d = &rr->dbs[i];
		char ver[80], cred[160];
		int j, found;

		if (!p->usable) {
			d->outcome = OUT_SKIPPED;
			continue;
		}
		d->keys = p->primary_keys;     /* the database's facts, from the primary */
		memset(d->keys.credential_names, 0, sizeof(d->keys.credential_names));
		d->keys.ncredentials = creds_of(all, p->primary_keys.family_guid,
		    d->keys.credential_names);
		d->have_keys = 1;
		d->auto_open = opened[i];
		if (d->keys.ncredentials == 0) {
			d->outcome = OUT_GAP;
			rep_note(rr, d, "no credential for this database "
			    "(family %s): after a failover this replica cannot open the DMK; run "
			    "dmkagent register", p->primary_keys.family_guid);
			gap = 1;
			continue;
		}
		if (regstate_get(run->a, run->ag->name, rr->rep->name, p->primary_keys.family_guid,
		    ver, sizeof(ver), cred, sizeof(cred)) != 0) {
			d->outcome = OUT_GAP;
			rep_note(rr, d, "%d credential(s), none registered by "
			    "dmkagent from %s; run dmkagent register", d->keys.ncredentials,
			    p->db->dmk_password.text);
			gap = 1;
			continue;
		}
		if (strcmp(ver, p->ver.id) != 0) {
			d->outcome = OUT_GAP;
			rep_note(rr, d, "registered store version %s, but the "
			    "store's current version is %s; run dmkagent register", ver, p->ver.id);
			gap = 1;
			continue;
		}
		for (j = 0, found = cred[0] == '\0'; j < d->keys.ncredentials && j < 8; j++)
			if (strcmp(d->keys.credential_names[j], cred) == 0)
				found = 1;
		if (!found) {
			d->outcome = OUT_GAP;
			rep_note(rr, d, "the credential dmkagent registered (%s) "
			    "is gone; run dmkagent register", cred);
			gap = 1;
			continue;
		}
		if (d->auto_open == 0) {
			d->outcome = OUT_GAP;
			rep_note(rr, d, "the DMK does not open by itself "
			    "here: the registered credential does not open it");
			gap = 1;
			continue;
		}
		d->outcome = OUT_OK;
		rep_note(rr, d, "credential registered (store version %s)%s",
		    ver, d->auto_open == 1 ? "; DMK opens by itself" :
		    "; not readable here: checked by catalog only");
	}
	sql_result_free(all);
	free(opened);
	return gap ? DMK_ERR_INCOMPLETE : 0;
}

/* ---- --failover-test ---- */

static int
failover_test(struct agent *a, struct ag_run *run)
{
	struct rep_run *orig = NULL;
	size_t i, j;
	int bad = 0;

	for (i = 0; i < run->nreps; i++)
		if (run->reps[i].is_primary)
			orig = &run->reps[i];
	for (i = 0; i < run->nreps; i++) {
		struct rep_run *rr = &run->reps[i];
		struct sql_session *s = NULL;
		struct dmk_err e;

		if (!rr->reached)
			continue;
		if (!rr->is_primary && ag_failover_to(run, rr, &e) != 0) {
			fprintf(a->out, "  %-12s failover test: cannot fail over: %s\n", rr->rep->name, e.msg);
			bad = 1;
			continue;
		}
		if (rep_connect(rr, &s, &e) != 0) {
			fprintf(a->out, "  %-12s failover test: %s\n", rr->rep->name, e.msg);
			bad = 1;
			continue;
		}
		for (j = 0; j < run->nplans; j++) {
			int o;
			if (!run->plans[j].usable)
				continue;
			o = probe_auto_open(s, run->plans[j].db->name, run->plans[j].cert, &e);
			fprintf(a->out, "  %-12s %-24s as primary: %s\n", rr->rep->name,
			    run->plans[j].db->name, o == 1 ? "DMK opens, certificate decrypts" :
			    o == 0 ? "DMK DOES NOT OPEN" : "cannot tell (no certificate under the DMK)");
			if (o == 0) {
				rr->dbs[j].outcome = OUT_GAP;
				rep_note(rr, &rr->dbs[j], "after failing over here the DMK did not open");
				bad = 1;
			}
		}
		sql_close(s);
	}
	if (orig != NULL) {
		struct dmk_err e;
		if (ag_failover_to(run, orig, &e) != 0) {
			fprintf(a->out, "  could not return to the original primary %s: %s\n",
			    orig->rep->name, e.msg);
			bad = 1;
		}
	}
	return bad ? DMK_ERR_INCOMPLETE : 0;
}

static void
print_run(struct agent *a, struct ag_run *run, json_t *jag, int status)
{
	size_t i, j;
	json_t *jreps = json_array();

	for (j = 0; j < run->nplans; j++)
		if (!run->plans[j].usable && a->output == OUTPUT_TEXT)
			fprintf(a->out, "%s: %s\n", run->ag->name, run->plans[j].error);
	for (i = 0; i < run->nreps; i++) {
		struct rep_run *rr = &run->reps[i];
		json_t *o = json_object(), *od = json_array();
		const char *role;

		json_object_set_new(o, "name", json_string(rr->rep->name));
		/* the catalog's role; NULL (a disconnected remote replica) is unknown */
		role = rr->rep->role[0] ? rr->rep->role : rr->is_primary ? "PRIMARY" : "UNKNOWN";
		json_object_set_new(o, "role", json_string(role));
		json_object_set_new(o, "synchronization_health", json_string(rr->rep->sync_health));
		json_object_set_new(o, "address", json_sprintf("%s:%d", rr->ep.host, rr->ep.port));
		json_object_set_new(o, "address_from", json_string(rr->how[0] ? rr->how : "none"));
		json_object_set_new(o, "tls_name", json_string(rr->ep.tls_name));
		json_object_set_new(o, "reached", json_boolean(rr->reached));
		if (!rr->reached)
			json_object_set_new(o, "error", json_string(rr->error));
		if (a->output == OUTPUT_TEXT) {
			fprintf(a->out, "  %-12s %-9s %s:%d (%s)%s%s\n", rr->rep->name,
			    role, rr->ep.host[0] ? rr->ep.host : "?",
			    rr->ep.port, rr->how[0] ? rr->how : "no address",
			    rr->reached ? "" : "  NOT REACHED: ", rr->reached ? "" : rr->error);
		}
		for (j = 0; rr->reached && j < run->nplans; j++) {
			struct rep_db *d = &rr->dbs[j];
			json_t *x = json_object();
			json_object_set_new(x, "database", json_string(run->plans[j].db->name));
			if (d->have_keys) {
				json_object_set_new(x, "family_guid", json_string(d->keys.family_guid));
				json_object_set_new(x, "dmk_key_guid", json_string(d->keys.dmk_key_guid));
				json_object_set_new(x, "encrypted_by_smk", json_boolean(d->keys.dmk_by_smk));
				if (status)
					json_object_set_new(x, "password_encryptions",
					    json_integer(d->keys.npassword_encryptions));
				json_object_set_new(x, "credentials", json_integer(d->keys.ncredentials));
			}
			json_object_set_new(x, "store_version", json_string(run->plans[j].ver.id));
			if (!status) {
				json_object_set_new(x, "result", json_string(d->outcome == OUT_OK ? "pass" :
				    d->outcome == OUT_SKIPPED ? "skipped" : "gap"));
				json_object_set_new(x, "detail", json_string(rep_note_text(d)));
			}
			json_array_append_new(od, x);
			if (a->output != OUTPUT_TEXT)
				continue;
			if (status)
				fprintf(a->out, "    %-24s DMK %s: %s, %d password encryption(s); %d "
				    "credential(s) here; store version %s\n", run->plans[j].db->name,
				    d->have_keys && d->keys.dmk_key_guid[0] ? d->keys.dmk_key_guid : "(none)",
				    d->have_keys && d->keys.dmk_by_smk ? "by SMK" : "not by SMK",
				    d->have_keys ? d->keys.npassword_encryptions : 0,
				    d->have_keys ? d->keys.ncredentials : 0,
				    run->plans[j].ver.id[0] ? run->plans[j].ver.id : "-");
			else if (d->outcome != OUT_SKIPPED)
				fprintf(a->out, "    %-24s %s: %s\n", run->plans[j].db->name,
				    d->outcome == OUT_OK ? "pass" : "GAP", rep_note_text(d));
		}
		json_object_set_new(o, "databases", od);
		json_array_append_new(jreps, o);
	}
	json_object_set_new(jag, "replicas", jreps);
}

static int
status_work(struct rep_run *rr, struct sql_session *s)
{
	size_t i;
	struct dmk_err e;

	for (i = 0; i < rr->run->nplans; i++)
		if (rr->run->plans[i].in_ag &&
		    sql_db_keys(s, rr->run->plans[i].db->name, &rr->dbs[i].keys, &e) == 0)
			rr->dbs[i].have_keys = 1;
	return 0;
}

struct ver_opts {
	int status;                   /* status, not verify */
	int failover_test;
};

static int
ver_option(struct agcmd_ctx *c, int ch, const char *arg, struct dmk_err *err)
{
	struct ver_opts *o = c->data;

	(void)arg;
	if (ch != 'f' || o->status)
		return dmk_errf(err, DMK_ERR_USAGE, "status: unknown option; usage: dmkagent "
		    "status [--ag AG] [--database DB]");
	o->failover_test = 1;
	c->changes = 1;               /* disruptive: under the lock, with run records */
	c->audit_name = "verify --failover-test";
	return 0;
}

static int
ver_steps(struct agcmd_ctx *c, const struct ver_opts *o, struct ag_run *run, json_t *jag)
{
	size_t j;
	int r;

	r = ag_each_replica(run, o->status ? status_work : verify_work);
	for (j = 0; j < run->nplans; j++)
		if (!run->plans[j].usable && !o->status)
			r = DMK_ERR_INCOMPLETE;
	if (o->failover_test && failover_test(c->a, run) != 0)
		r = DMK_ERR_INCOMPLETE;
	if (o->failover_test) {
		struct audit_target t = { run->ag->name, NULL, NULL };
		agent_audit(c->a, "failover-test", &t, NULL, r == 0 ? "ok" : "gap", NULL);
	}
	print_run(c->a, run, jag, o->status);
	return r;
}

static int
ver_ag(struct agcmd_ctx *c, struct ag_run *run, json_t *jag)
{
	return ver_steps(c, c->data, run, jag);
}

int
verify_steps(struct agcmd_ctx *c, struct ag_run *run, json_t *jag)
{
	static const struct ver_opts o = { 0, 0 };

	return ver_steps(c, &o, run, jag);
}

static void
ver_finish(struct agcmd_ctx *c, json_t *root)
{
	struct ver_opts *o = c->data;

	if (!o->status)
		json_object_set_new(root, "pass", json_boolean(c->worst == 0));
	if (c->a->output == OUTPUT_TEXT && !o->status)
		fprintf(c->a->out, c->worst == 0 ? "verify: every replica passes\n" :
		    "verify: gaps found (see above)\n");
	if (c->worst == DMK_ERR_INCOMPLETE)
		agcmd_conclude(c, c->worst, o->status ? "some replica was not reached" :
		    "not every replica can open every DMK after a failover");
}

static const struct option ver_options[] = {
	{ "failover-test", no_argument, NULL, 'f' },
	{ NULL, 0, NULL, 0 },
};

static const struct agcmd verify_cmd = {
	.name = "verify",
	.flags = AGCMD_PROBE | AGCMD_HEADER | AGCMD_MAY_CHANGE,
	.options = ver_options,
	.shortopts = "f",
	.option = ver_option,
	.run_ag = ver_ag,
	.finish = ver_finish,
};

static const struct agcmd status_cmd = {
	.name = "status",
	.flags = AGCMD_HEADER,
	.run_ag = ver_ag,
	.finish = ver_finish,
};

int
cmd_verify(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	struct ver_opts o = { 0, 0 };

	return agcmd_main(a, &verify_cmd, &o, argc, argv, err);
}

int
cmd_status(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	struct ver_opts o = { 1, 0 };

	return agcmd_main(a, &status_cmd, &o, argc, argv, err);
}
