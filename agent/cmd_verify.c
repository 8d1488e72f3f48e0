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
#include "dbstate.h"
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

/* ---- the whole state: per database, from the store, and per replica ---- */

static json_t *
jtime(time_t t)
{
	char b[32];

	if (t == 0)
		return json_null();
	util_rfc3339(t, b, sizeof(b));
	return json_string(b);
}

static const char *
ttext(time_t t, char *b, size_t n)
{
	if (t == 0)
		return "none";
	util_rfc3339(t, b, n);
	return b;
}

/* What the agent registered on this replica for this database ("" none). */
static void
registered(struct ag_run *run, struct rep_run *rr, const struct rep_db *d, char *ver,
    size_t vlen, char *cred, size_t clen)
{
	ver[0] = cred[0] = '\0';
	if (d->have_keys && d->keys.family_guid[0])
		regstate_get(run->a, run->ag->name, rr->rep->name, d->keys.family_guid, ver, vlen,
		    cred, clen);
}

/* The registered credential holds a version that is not the one in force. */
static int
stale(const struct db_state_view *v, const char *regver)
{
	/* mid-rotation the new version is registered before it is in force */
	return v != NULL && v->known && v->in_force[0] && regver[0] &&
	    strcmp(regver, v->in_force) != 0 &&
	    !(v->unfinished && strcmp(regver, v->new_version) == 0);
}

/*
 * The warnings of one database: an unfinished rotation, extra or stale
 * credentials on a replica, little version headroom.  Into jw (strings), and
 * as text lines when out is not NULL.
 */
static void
db_warnings(struct ag_run *run, size_t j, const struct db_state_view *v, json_t *jw, FILE *out)
{
	const char *db = run->plans[j].db->name;
	char msg[DMK_ERR_MSG_MAX + 512], t[32];
	size_t i;
	int k;

	if (v != NULL && v->unfinished) {
		snprintf(msg, sizeof(msg), "an unfinished rotation (%s; step %s: %s), since %s: "
		    "store version %s replacing %s; dmkagent rotate finishes it", v->mode, v->step,
		    db_state_step_text(v->step), ttext(v->since, t, sizeof(t)),
		    v->new_version[0] ? v->new_version : "-", v->old_version[0] ? v->old_version : "-");
		json_array_append_new(jw, json_string(msg));
		if (out)
			fprintf(out, "    warning: %s: %s\n", db, msg);
	}
	for (i = 0; i < run->nreps; i++) {
		struct rep_run *rr = &run->reps[i];
		const struct rep_db *d = &rr->dbs[j];
		char ver[80], cred[160], names[8 * 162];

		if (!rr->reached || !d->have_keys)
			continue;
		registered(run, rr, d, ver, sizeof(ver), cred, sizeof(cred));
		if (d->keys.ncredentials > 1) {
			size_t off = 0;

			names[0] = '\0';
			for (k = 0; k < d->keys.ncredentials && k < 8 && off < sizeof(names); k++)
				off += (size_t)snprintf(names + off, sizeof(names) - off, "%s%s",
				    k > 0 ? ", " : "", d->keys.credential_names[k]);
			snprintf(msg, sizeof(msg), "%s holds %d credentials for this DMK (%s), where one "
			    "is enough; %s", rr->rep->name, d->keys.ncredentials, names,
			    v != NULL && v->unfinished ? "finishing the rotation drops the old one" :
			    "dmkagent register --prune drops those whose password no longer opens it");
			json_array_append_new(jw, json_string(msg));
			if (out)
				fprintf(out, "    warning: %s: %s\n", db, msg);
		}
		if (stale(v, ver)) {
			snprintf(msg, sizeof(msg), "%s: the credential dmkagent registered (%s) holds "
			    "store version %s, but version %s is in force; dmkagent register",
			    rr->rep->name, cred[0] ? cred : "?", ver, v->in_force);
			json_array_append_new(jw, json_string(msg));
			if (out)
				fprintf(out, "    warning: %s: %s\n", db, msg);
		}
	}
	if (v != NULL && v->known && v->headroom >= 0 && v->headroom < 3) {
		snprintf(msg, sizeof(msg), "the store keeps %lld versions of %s and holds %zu: "
		    "%lld more write(s) before version %s, still needed, would be dropped (writes "
		    "that would drop it are refused); raise max_versions", v->limit,
		    run->plans[j].db->dmk_password.text, v->nversions, v->headroom, v->oldest_kept);
		json_array_append_new(jw, json_string(msg));
		if (out)
			fprintf(out, "    warning: %s: %s\n", db, msg);
	}
}

/* The AG's "databases": per database, the store's side and the warnings. */
static void
print_dbs(struct agent *a, struct ag_run *run, json_t *jag, int status,
    const struct db_state_view *views)
{
	json_t *jdbs = json_array();
	FILE *out = a->output == OUTPUT_TEXT ? a->out : NULL;
	char t1[32], t2[32];
	size_t j;

	for (j = 0; j < run->nplans; j++) {
		const struct db_state_view *v = &views[j];
		json_t *x, *jw = json_array(), *u = json_null(), *jv;

		if (status ? !run->plans[j].in_ag : !run->plans[j].usable) {
			json_decref(jw);
			continue;
		}
		x = json_object();
		json_object_set_new(x, "database", json_string(run->plans[j].db->name));
		json_object_set_new(x, "store_read", json_boolean(v->known));
		if (!v->known)
			json_object_set_new(x, "store_error", json_string(v->error));
		json_object_set_new(x, "store_version", agcmd_jstr(v->in_force));
		json_object_set_new(x, "last_rotation", jtime(v->changed));
		json_object_set_new(x, "next_due", jtime(v->next_due));
		if (v->unfinished)
			u = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:o}", "step", v->step,
			    "description", db_state_step_text(v->step), "mode", v->mode,
			    "rotation", agcmd_jstr(v->rotation), "new_version",
			    agcmd_jstr(v->new_version), "old_version", agcmd_jstr(v->old_version),
			    "since", jtime(v->since));
		json_object_set_new(x, "unfinished_rotation", u);
		jv = json_pack("{s:I, s:o, s:o, s:o}", "count", (json_int_t)v->nversions,
		    "limit", v->limit > 0 ? json_integer(v->limit) : json_null(),
		    "headroom", v->headroom >= 0 ? json_integer(v->headroom) : json_null(),
		    "oldest_kept", agcmd_jstr(v->oldest_kept));
		json_object_set_new(x, "versions", jv);
		json_object_set_new(x, "last_backup", jtime(v->backup));
		json_object_set_new(x, "last_backup_version", agcmd_jstr(v->backup_version));
		json_object_set_new(x, "last_restore_test", jtime(v->restore_test));
		if (out && status) {
			fprintf(out, "  %s: store version %s in force", run->plans[j].db->name,
			    v->in_force[0] ? v->in_force : "-");
			if (!v->known)
				fprintf(out, " (store not read: %s)\n", v->error);
			else
				fprintf(out, ", written %s; next rotation due %s\n",
				    ttext(v->changed, t1, sizeof(t1)), v->next_due ? ttext(v->next_due, t2,
				    sizeof(t2)) : "never (no rotate_every)");
			if (v->unfinished)
				fprintf(out, "    UNFINISHED %s: step %s (%s), since %s; version %s "
				    "replacing %s\n", v->mode, v->step, db_state_step_text(v->step),
				    ttext(v->since, t1, sizeof(t1)), v->new_version[0] ? v->new_version : "-",
				    v->old_version[0] ? v->old_version : "-");
			if (v->known && v->limit > 0)
				fprintf(out, "    versions: %zu held, %lld kept; %s%lld%s\n", v->nversions,
				    v->limit, v->headroom >= 0 ? "headroom " : "no version still needed "
				    "is at risk", v->headroom >= 0 ? v->headroom : 0LL, v->headroom >= 0 ?
				    " write(s)" : "");
			else if (v->known)
				fprintf(out, "    versions: %zu held; the store keeps them all\n",
				    v->nversions);
			if (v->known)
				fprintf(out, "    last backup %s; last passed restore test %s\n",
				    ttext(v->backup, t1, sizeof(t1)), ttext(v->restore_test, t2,
				    sizeof(t2)));
		}
		db_warnings(run, j, v, jw, out);
		json_object_set_new(x, "warnings", jw);
		json_array_append_new(jdbs, x);
	}
	json_object_set_new(jag, "databases", jdbs);
}

static void
print_run(struct agent *a, struct ag_run *run, json_t *jag, int status,
    const struct db_state_view *views)
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
			json_t *x;
			char rver[80], rcred[160];
			int k;

			/* a database the AG does not list has no rows: its error says so */
			if (!run->plans[j].in_ag)
				continue;
			x = json_object();
			registered(run, rr, d, rver, sizeof(rver), rcred, sizeof(rcred));
			json_object_set_new(x, "database", json_string(run->plans[j].db->name));
			if (d->have_keys) {
				json_t *names = json_array();
				for (k = 0; k < d->keys.ncredentials && k < 8; k++)
					json_array_append_new(names, json_string(d->keys.credential_names[k]));
				json_object_set_new(x, "credential_names", names);
				json_object_set_new(x, "extra_credentials", json_integer(
				    d->keys.ncredentials > 1 ? d->keys.ncredentials - 1 : 0));
				json_object_set_new(x, "registered_version", agcmd_jstr(rver));
				json_object_set_new(x, "registered_credential", agcmd_jstr(rcred));
				json_object_set_new(x, "stale", json_boolean(stale(&views[j], rver)));
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
				    "credential(s) here; store version %s; registered %s%s\n",
				    run->plans[j].db->name,
				    d->have_keys && d->keys.dmk_key_guid[0] ? d->keys.dmk_key_guid : "(none)",
				    d->have_keys && d->keys.dmk_by_smk ? "by SMK" : "not by SMK",
				    d->have_keys ? d->keys.npassword_encryptions : 0,
				    d->have_keys ? d->keys.ncredentials : 0,
				    run->plans[j].ver.id[0] ? run->plans[j].ver.id : "-",
				    rver[0] ? rver : "-", stale(&views[j], rver) ? " (STALE)" :
				    d->have_keys && d->keys.ncredentials > 1 ? " (EXTRA CREDENTIALS)" : "");
			else if (d->outcome != OUT_SKIPPED)
				fprintf(a->out, "    %-24s %s: %s\n", run->plans[j].db->name,
				    d->outcome == OUT_OK ? "pass" : "GAP", rep_note_text(d));
		}
		json_object_set_new(o, "databases", od);
		json_array_append_new(jreps, o);
	}
	json_object_set_new(jag, "replicas", jreps);
	print_dbs(a, run, jag, status, views);
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
	struct db_state_view *views;
	size_t j;
	int r;

	if ((views = calloc(run->nplans + 1, sizeof(*views))) == NULL)
		return DMK_ERR_NOMEM;
	/* the store's side, once per database (not per replica) */
	for (j = 0; j < run->nplans; j++) {
		const struct db_plan *p = &run->plans[j];

		if (!(o->status ? p->in_ag : p->usable))
			continue;
		if (p->code == DMK_ERR_UNREACHABLE || p->code == DMK_ERR_TIMEOUT) {
			/* ag_open could not reach the store: not once more per database */
			util_strlcpy(views[j].error, p->error, sizeof(views[j].error));
			views[j].headroom = -1;
			continue;
		}
		db_state_read(c->a, p->db, o->status, &views[j]);
	}
	r = ag_each_replica(run, o->status ? status_work : verify_work);
	if (o->failover_test && failover_test(c->a, run) != 0)
		r = DMK_ERR_INCOMPLETE;
	if (o->failover_test) {
		struct audit_target t = { run->ag->name, NULL, NULL };
		agent_audit(c->a, "failover-test", &t, NULL, r == 0 ? "ok" : "gap", NULL);
	}
	print_run(c->a, run, jag, o->status, views);
	free(views);
	/* status shows what it could read; a store or a database it could not
	 * is its outcome too (exit 5 or 1), never a silent "-" */
	r = agcmd_worse(r, agcmd_plans(c, run));
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
	/* A store or login that failed is not a replica's gap: say so. */
	if (c->a->output == OUTPUT_TEXT && !o->status)
		fprintf(c->a->out, c->worst == 0 ? "verify: every replica passes\n" :
		    c->worst == DMK_ERR_INCOMPLETE ? "verify: gaps found (see above)\n" :
		    "verify: not checked (see above)\n");
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
	.flags = AGCMD_PROBE | AGCMD_HEADER | AGCMD_MAY_CHANGE | AGCMD_PARALLEL,
	.options = ver_options,
	.shortopts = "f",
	.option = ver_option,
	.run_ag = ver_ag,
	.finish = ver_finish,
};

static const struct agcmd status_cmd = {
	.name = "status",
	.flags = AGCMD_HEADER | AGCMD_PARALLEL,
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
