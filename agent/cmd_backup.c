/*
 * cmd_backup.c: dmkagent backup and run's backup step: options, the loop
 * over databases and replicas, the report.  The work is backup.c's and
 * restore_test.c's.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/sha.h>

#include "core/dmk.h"
#include "core/buf.h"
#include "core/secret.h"
#include "cli.h"
#include "failpoint.h"
#include "genpass.h"
#include "backup.h"
#include "agcmd.h"
#include "markers.h"
#include "deployhook.h"
#include "steps.h"
#include "backup_int.h"

/* ---- the command ---- */

static void
report_text(struct agent *a, const struct bk_report *rep, size_t from)
{
	size_t i;

	for (i = from; i < rep->n; i++) {
		const struct bk_item *it = &rep->items[i];
		if (!it->ok) {
			fprintf(a->out, "  %-12s %s%s%s FAILED: %s\n", it->database[0] ? it->database :
			    it->node, bk_kind_text[it->kind], it->name[0] ? " " : "", it->name, it->error);
			continue;
		}
		fprintf(a->out, "  %-12s %s%s%s", it->database[0] ? it->database : it->node,
		    bk_kind_text[it->kind], it->name[0] ? " " : "", it->name);
		if (it->thumbprint[0])
			fprintf(a->out, " thumbprint %s", it->thumbprint);
		else if (it->key_guid[0])
			fprintf(a->out, " key_guid %s", it->key_guid);
		fprintf(a->out, " (node %s): %s version %s%s%s%s\n", it->node, it->ref.text, it->version,
		    it->previous[0] ? " (previous " : "", it->previous, it->previous[0] ? ")" : "");
		if (it->server_file[0])
			fprintf(a->out, "      the backup file %s stays on %s, encrypted by the "
			    "backup password\n", it->server_file, it->node);
		if (it->restore != 0 || it->restore_note[0])
			fprintf(a->out, "      %s\n", it->restore_note);
	}
}

static json_t *
report_json(const struct bk_report *rep, size_t from)
{
	json_t *arr = json_array();
	size_t i;

	for (i = from; i < rep->n; i++) {
		const struct bk_item *it = &rep->items[i];
		json_t *o = json_object();
		json_object_set_new(o, "kind", json_string(bk_kind_names[it->kind]));
		if (it->database[0])
			json_object_set_new(o, "database", json_string(it->database));
		if (it->name[0])
			json_object_set_new(o, "name", json_string(it->name));
		json_object_set_new(o, "node", json_string(it->node));
		if (it->thumbprint[0])
			json_object_set_new(o, "thumbprint", json_string(it->thumbprint));
		if (it->key_guid[0])
			json_object_set_new(o, it->kind == BK_CERT ? "dmk_key_guid" : "key_guid",
			    json_string(it->key_guid));
		json_object_set_new(o, "reference", json_string(it->ref.text));
		json_object_set_new(o, "version", it->version[0] ? json_string(it->version) : json_null());
		json_object_set_new(o, "previous_version", it->previous[0] ?
		    json_string(it->previous) : json_null());
		json_object_set_new(o, "password_reference", json_string(it->pwref.text));
		json_object_set_new(o, "password_version", json_string(it->pwver));
		if (it->server_file[0])
			json_object_set_new(o, "server_file", json_string(it->server_file));
		json_object_set_new(o, "ok", json_boolean(it->ok));
		json_object_set_new(o, "error", it->ok ? json_null() : json_string(it->error));
		json_object_set_new(o, "restore_test", it->restore > 0 ? json_string("passed") :
		    it->restore < 0 ? json_string("failed") : it->restore_note[0] ?
		    json_string("skipped") : json_null());
		if (it->restore_note[0])
			json_object_set_new(o, "restore_note", json_string(it->restore_note));
		json_array_append_new(arr, o);
	}
	return arr;
}

/* Keep the worst outcome; "unreachable" (exit 5) wins, so a caller can retry. */
struct bk_opts {
	int smk, restore;
	struct bk_report rep;
};

static int
bk_option(struct agcmd_ctx *c, int ch, const char *arg, struct dmk_err *err)
{
	struct bk_opts *o = c->data;

	(void)arg;
	switch (ch) {
	case 's': o->smk = 1; return 0;
	case 't': o->restore = 1; return 0;
	}
	return dmk_errf(err, DMK_ERR_USAGE, "backup: unknown option");
}

/* A passed restore test, on the DMK backup's escrow version: what run's
 * restore_test_every counts from. */
static void
mark_restored(struct agent *a, const struct bk_item *it)
{
	struct prov_meta m;
	struct store *st;
	struct dmk_err e;
	char t[32];

	if (it->kind != BK_DMK || it->restore <= 0 || it->version[0] == '\0')
		return;
	util_rfc3339(time(NULL), t, sizeof(t));
	memset(&m, 0, sizeof(m));
	prov_meta_set(&m, MARK_RESTORED, t);
	if (agent_store(a, it->ref.store, &st, &e) != 0 ||
	    store_set_meta(st, &it->ref, it->version, &m, &e) != 0)
		log_warn("%s version %s: the passed restore test is not marked: %s", it->ref.text,
		    it->version, e.msg);
}

/* One database: escrow its backups, then (restore) prove them. */
static void
bk_db(struct agcmd_ctx *c, struct bk_opts *o, struct ag_run *run, struct db_plan *p,
    struct sql_session *s, int restore)
{
	struct agent *a = c->a;
	const struct secret *open_pw = p->pw;
	size_t first = o->rep.n, i;
	struct dmk_err e;
	int r, worst = 0;

	if (!p->usable && !(p->code == DMK_ERR_WRONGPASS && p->in_ag)) {
		dmk_errf(&e, p->code ? p->code : DMK_ERR_INTERNAL, "%s: not backed up: %s",
		    p->db->name, p->error);
		agcmd_fail(c, e.code, &e);
		deployhook_fire(a, "failed", run->ag->name, p->db->name, NULL, e.code);
		return;
	}
	if (!p->usable) {
		/* the store's password does not open the DMK: a backup still
		 * helps, if the key opens by itself (SMK or a credential) */
		log_warn("%s", p->error);
		open_pw = NULL;
	}
	r = bk_backup_db(run, p, s, open_pw, &o->rep, &e);
	if (r != 0)
		dmk_err_prefix(&e, "%s: not backed up", p->db->name);
	agcmd_fail(c, r, &e);
	worst = r;
	if (restore && o->rep.n > first) {
		r = bk_restore_test(run, s, &o->rep, first, o->rep.n, &e);
		agcmd_fail(c, r, &e);
		worst = agcmd_worse(worst, r);
		for (i = first; i < o->rep.n; i++)
			mark_restored(a, &o->rep.items[i]);
	}
	if (a->output == OUTPUT_TEXT)
		report_text(a, &o->rep, first);
	for (i = first; i < o->rep.n; i++)
		if (o->rep.items[i].kind == BK_DMK && o->rep.items[i].ok)
			break;
	if (worst != 0 || o->rep.n > first)
		deployhook_fire(a, worst != 0 ? "failed" : "backed-up", run->ag->name, p->db->name,
		    i < o->rep.n ? o->rep.items[i].version : NULL, worst);
}

static int
bk_steps(struct agcmd_ctx *c, struct bk_opts *o, struct ag_run *run, json_t *jag,
    const int *want)
{
	struct agent *a = c->a;
	const struct conf_ag *ag = run->ag;
	struct sql_endpoint ep;
	struct sql_session *s = NULL;
	struct dmk_err e;
	size_t j, from = o->rep.n;
	int r;

	ag_listener_endpoint(ag, &ep);
	if ((r = sql_connect(&ep, &run->login, &s, &e)) != 0) {
		dmk_err_prefix(&e, "AG %s", ag->name);
		agcmd_fail(c, r, &e);
		goto out;
	}
	for (j = 0; j < run->nplans && !agcmd_stopping(c, run->plans[j].db->name); j++)
		if (want == NULL || want[j] > 0)
			bk_db(c, o, run, &run->plans[j], s, want ? want[j] > 1 : o->restore);
	if (o->smk) {
		size_t first = o->rep.n;
		r = bk_backup_smk(run, &o->rep, &e);
		if (r != 0)
			dmk_err_prefix(&e, "service master keys not backed up");
		agcmd_fail(c, r, &e);
		if (a->output == OUTPUT_TEXT) {
			report_text(a, &o->rep, first);
			if (o->restore && o->rep.n > first)
				fprintf(a->out, "  service master key backups are not restore-tested: "
				    "RESTORE SERVICE MASTER KEY would change the node; the escrowed "
				    "bytes were compared with the store's copy\n");
		}
	}
out:
	json_object_set_new(jag, "backups", report_json(&o->rep, from));
	sql_close(s);
	return 0;
}

static int
bk_ag(struct agcmd_ctx *c, struct ag_run *run, json_t *jag)
{
	return bk_steps(c, c->data, run, jag, NULL);
}

int
backup_steps(struct agcmd_ctx *c, struct ag_run *run, const int *want, json_t *jag,
    size_t *escrowed)
{
	struct bk_opts o;
	size_t i;
	int r;

	memset(&o, 0, sizeof(o));
	r = bk_steps(c, &o, run, jag, want);
	for (i = 0; i < o.rep.n; i++)
		*escrowed += o.rep.items[i].ok;
	free(o.rep.items);
	return r;
}

static void
bk_finish(struct agcmd_ctx *c, json_t *root)
{
	struct bk_opts *o = c->data;
	size_t i, nok = 0, nfail = 0;

	for (i = 0; i < o->rep.n; i++) {
		nok += o->rep.items[i].ok;
		nfail += !o->rep.items[i].ok || o->rep.items[i].restore < 0;
	}
	json_object_set_new(root, "escrowed", json_integer((json_int_t)nok));
	if (c->a->output == OUTPUT_TEXT)
		fprintf(c->a->out, "%zu backup(s) escrowed%s\n", nok, nfail ? ", with failures "
		    "(see above)" : "");
	/* some backups escrowed, then a failure: partial work (never 2, which
	 * says nothing changed: --smk without smk_backup_password, say) */
	if (c->worst != 0 && nok > 0 && (dmk_exit_code(c->worst) == DMK_EXIT_FAILED ||
	    dmk_exit_code(c->worst) == DMK_EXIT_USAGE))
		agcmd_conclude(c, DMK_ERR_INCOMPLETE, "incomplete: %zu backup(s) escrowed, then "
		    "%zu problem(s), reported above", nok, c->nfailed);
}

static const struct option bk_options[] = {
	{ "smk", no_argument, NULL, 's' },
	{ "restore-test", no_argument, NULL, 't' },
	{ NULL, 0, NULL, 0 },
};

static const struct agcmd backup_cmd = {
	.name = "backup",
	.flags = AGCMD_CHANGES | AGCMD_PROBE | AGCMD_HEADER,
	.options = bk_options,
	.shortopts = "st",
	.option = bk_option,
	.run_ag = bk_ag,
	.finish = bk_finish,
};

int
cmd_backup(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	struct bk_opts o;
	int r;

	memset(&o, 0, sizeof(o));
	r = agcmd_main(a, &backup_cmd, &o, argc, argv, err);
	free(o.rep.items);
	return r;
}
