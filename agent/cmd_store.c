/*
 * cmd_store.c: dmkagent store check | put | show, the same for every store:
 * they speak only through struct prov_ops.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "cli.h"
#include "genpass.h"
#include "markers.h"
#include "providers/provider.h"

static int
parse_store_ref(struct agent *a, const char *text, struct secret_ref *ref, struct dmk_err *err)
{
	if (ref_parse(text, ref, err) != 0)
		return dmk_err_prefix(err, "REF");
	if (ref->kind != REF_STORE)
		return dmk_errf(err, DMK_ERR_USAGE, "REF must name a store (STORE:PATH[#FIELD])");
	if (config_store(a->cfg, ref->store) == NULL)
		return dmk_errf(err, DMK_ERR_USAGE, "no [store %s] in %s", ref->store, a->config_path);
	return 0;
}

/* Every reference the configuration makes into one store. */
static size_t
collect_refs(const struct config *c, const char *store, const struct secret_ref **out, size_t max)
{
	size_t n = 0, i, j;

#define ADD(r) do { if ((r)->kind == REF_STORE && strcmp((r)->store, store) == 0 && n < max) \
	out[n++] = (r); } while (0)
	if (c->has_audit_key)
		ADD(&c->audit_key);
	if (c->has_audit_anchor)
		ADD(&c->audit_anchor);
	for (i = 0; i < c->nstores; i++)
		for (j = 0; j < c->stores[i].nkv; j++)
			if (c->stores[i].kv[j].kind == CK_REF)
				ADD(&c->stores[i].kv[j].ref);
	for (i = 0; i < c->nags; i++) {
		if (c->ags[i].has_login_password)
			ADD(&c->ags[i].login_password);
		if (c->ags[i].has_smk_backup_password)
			ADD(&c->ags[i].smk_backup_password);
	}
	for (i = 0; i < c->ndbs; i++) {
		ADD(&c->dbs[i].dmk_password);
		if (c->dbs[i].has_cert_backup_password)
			ADD(&c->dbs[i].cert_backup_password);
		if (c->dbs[i].has_dmk_backup_password)
			ADD(&c->dbs[i].dmk_backup_password);
	}
#undef ADD
	return n;
}

/*
 * Access is not existence: a reference the agent reads (every one but the
 * audit anchor, which it writes) must name a secret that is there, or a typo
 * passes the check.  Versions are listed where the store keeps them (no
 * value is read); else the value is read and wiped at once.  The missing
 * ones are moved from refs to miss (the store's own check is about access,
 * and says "ok" of a path it may write) and reported in missing; returns
 * how many.
 */
static size_t
refs_missing(struct agent *a, struct store *st, const struct secret_ref **refs, size_t *n,
    const struct secret_ref **miss, struct buf *missing, struct dmk_err *err)
{
	struct prov_version *v, ver;
	struct secret *val;
	struct dmk_err e;
	size_t i, k, nv, nmiss = 0;
	int r;

	for (i = k = 0; i < *n; i++) {
		r = 0;
		if (!(a->cfg->has_audit_anchor && refs[i] == &a->cfg->audit_anchor)) {
			v = NULL;
			val = NULL;
			if (store_can(st, PROV_CAP_VERSIONS))
				r = store_list_versions(st, refs[i], &v, &nv, &e);
			else
				r = store_get(st, refs[i], NULL, &val, &ver, &e);
			free(v);
			secret_free(val);
		}
		if (r != DMK_ERR_NOTFOUND) {
			refs[k++] = refs[i];   /* present, or the store's check explains why not */
			continue;
		}
		buf_printf(missing, "             %-40s FAIL  no such secret at %s\n", refs[i]->text,
		    refs[i]->text);
		miss[nmiss] = refs[i];
		if (nmiss++ == 0)
			dmk_errf(err, DMK_ERR_NOTFOUND, "no such secret at %s", refs[i]->text);
	}
	*n = k;
	return nmiss;
}

int
cmd_store_check(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	const struct secret_ref *refs[256], *miss[256];
	struct store *st;
	struct buf report, missing, mreport;
	size_t i, n, nmiss;
	int r, worst = 0;

	if (argc > 2)
		return dmk_errf(err, DMK_ERR_USAGE, "usage: dmkagent store check [STORE]");
	if (argc == 2 && config_store(a->cfg, argv[1]) == NULL)
		return dmk_errf(err, DMK_ERR_USAGE, "no [store %s] in %s", argv[1], a->config_path);
	for (i = 0; i < a->cfg->nstores; i++) {
		const char *name = a->cfg->stores[i].name;
		struct dmk_err e, em;
		if (argc == 2 && strcmp(argv[1], name) != 0)
			continue;
		if ((r = agent_store(a, name, &st, &e)) != 0) {
			fprintf(a->out, "%-12s %-16s FAIL  %s\n", name, a->cfg->stores[i].type, e.msg);
			if (worst == 0 || dmk_exit_code(r) > dmk_exit_code(worst)) {
				worst = r;
				*err = e;
			}
			continue;
		}
		n = collect_refs(a->cfg, name, refs, 256);
		buf_init(&report, 0);
		buf_init(&missing, 0);
		nmiss = refs_missing(a, st, refs, &n, miss, &missing, &em);
		r = store_can(st, PROV_CAP_CHECK) ? store_check(st, refs, n, &report, &e) : 0;
		/* a missing one's access too: shown only when it is refused */
		buf_init(&mreport, 0);
		if (r == 0 && nmiss > 0 && store_can(st, PROV_CAP_CHECK) &&
		    (r = store_check(st, miss, nmiss, &mreport, &e)) != 0)
			buf_append(&report, mreport.data, mreport.len);
		buf_free(&mreport);
		fprintf(a->out, "%-12s %-16s %s  authenticated; %zu reference(s)\n", name,
		    a->cfg->stores[i].type, r == 0 && nmiss == 0 ? "ok  " : "FAIL", n + nmiss);
		if (report.len)
			fprintf(a->out, "%s", report.data);
		if (missing.len)
			fprintf(a->out, "%s", missing.data);
		buf_free(&report);
		buf_free(&missing);
		if (r != 0) {
			fprintf(a->out, "             %s\n", e.msg);
			if (worst == 0) {
				worst = r;
				*err = e;
			}
		} else if (nmiss > 0 && worst == 0) {
			worst = DMK_ERR_NOTFOUND;
			*err = em;
		}
	}
	return worst;
}

int
cmd_store_put(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	static const struct option opts[] = {
		{ "overwrite", no_argument, NULL, 'o' },
		{ "no-policy-check", no_argument, NULL, 'n' },
		{ "reason", required_argument, NULL, 'R' },
		{ "ticket", required_argument, NULL, 'T' },
		{ NULL, 0, NULL, 0 },
	};
	struct secret_ref ref;
	struct secret *val = NULL, *cur = NULL;
	struct prov_version curver, newver;
	struct prov_meta meta;
	struct store *st;
	const char *expect = "0";
	char tbuf[32], by[400];
	int ch, overwrite = 0, policy = 1, r;
	struct audit_keys k;

	while ((ch = getopt_long(argc, argv, "on", opts, NULL)) != -1) {
		if (ch == 'o')
			overwrite = 1;
		else if (ch == 'n')
			policy = 0;
		else if (ch == 'R' && (r = markers_check_reason(optarg, err)) == 0)
			a->reason = optarg;
		else if (ch == 'T' && (r = markers_check_ticket(optarg, err)) == 0)
			a->ticket = optarg;
		else if (ch == 'R' || ch == 'T')
			return r;
		else
			return dmk_errf(err, DMK_ERR_USAGE, "usage: dmkagent store put [--overwrite] "
			    "[--no-policy-check] [--reason TEXT] [--ticket ID] REF");
	}
	if (optind != argc - 1)
		return dmk_errf(err, DMK_ERR_USAGE, "usage: dmkagent store put [--overwrite] "
		    "[--no-policy-check] [--reason TEXT] [--ticket ID] REF (the value comes from "
		    "standard input, never argv)");
	if (a->cfg->require_ticket && a->ticket == NULL)
		return dmk_errf(err, DMK_ERR_USAGE, "store put: require_ticket = yes in [agent]: "
		    "give --ticket ID (nothing was changed)");
	markers_set_why(a->reason, a->ticket);
	if ((r = parse_store_ref(a, argv[optind], &ref, err)) != 0)
		return r;
	if ((r = cli_read_secret("Password: ", 1, &val, err)) != 0)
		return r;
	if (policy && (r = pass_policy_check(val, err)) != 0)
		goto out;
	if ((r = agent_begin(a, "store put", err)) != 0)
		goto out;
	if ((r = agent_store(a, ref.store, &st, err)) != 0)
		goto audit;
	if (overwrite) {
		r = store_get(st, &ref, NULL, &cur, &curver, err);
		if (r == DMK_ERR_NOTFOUND || r == DMK_ERR_DELETED) {
			expect = (r == DMK_ERR_DELETED && curver.id[0]) ? curver.id : "0";
			r = 0;
		} else if (r != 0)
			goto audit;
		else
			expect = store_cas(st, curver.id);
	}
	memset(&meta, 0, sizeof(meta));
	util_rfc3339(time(NULL), tbuf, sizeof(tbuf));
	snprintf(by, sizeof(by), "%s@%s", a->audit.user, a->audit.host);
	prov_meta_set(&meta, MARK_STATE, "current");
	prov_meta_set(&meta, MARK_BY, by);
	prov_meta_set(&meta, MARK_TIME, tbuf);
	markers_why(&meta);
	memset(&newver, 0, sizeof(newver));
	if ((r = store_put(st, &ref, val, expect, &meta, &newver, err)) != 0) {
		if (r == DMK_ERR_CONFLICT && !overwrite)
			dmk_err_prefix(err, "%s already exists (use --overwrite to add a version)",
			    ref.text);
		goto audit;
	}
	fprintf(a->out, "stored %s as version %s\n", ref.text, newver.id);
audit:
	memset(&k, 0, sizeof(k));
	k.store = ref.store;
	k.reference = ref.text;
	k.version = r == 0 ? newver.id : NULL;
	agent_audit(a, "store-put", NULL, &k, r == 0 ? "ok" : "failed", r == 0 ? NULL : err->msg);
	agent_end(a, "store put", r);
out:
	secret_free(val);
	secret_free(cur);
	return r;
}

int
cmd_store_show(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	struct secret_ref ref;
	struct prov_version *v = NULL;
	struct store *st;
	size_t n = 0, i, j;
	int r;

	if (argc != 2)
		return dmk_errf(err, DMK_ERR_USAGE, "usage: dmkagent store show REF");
	if ((r = parse_store_ref(a, argv[1], &ref, err)) != 0)
		return r;
	if ((r = agent_store(a, ref.store, &st, err)) != 0)
		return r;
	if ((r = store_list_versions(st, &ref, &v, &n, err)) == DMK_ERR_NOTFOUND)
		return dmk_err_prefix(err, "no such secret at %s", ref.text);
	if (r != 0)
		return agent_store_cred_hint(a, ref.store, err);
	if (a->output == OUTPUT_JSON) {
		json_t *arr = json_array();
		char *s;
		for (i = 0; i < n; i++) {
			json_t *o = json_object(), *m = json_object();
			char t[32] = "";
			if (v[i].created)
				util_rfc3339(v[i].created, t, sizeof(t));
			json_object_set_new(o, "version", json_string(v[i].id));
			json_object_set_new(o, "created", json_string(t));
			json_object_set_new(o, "deleted", json_boolean(v[i].deleted));
			json_object_set_new(o, "destroyed", json_boolean(v[i].destroyed));
			json_object_set_new(o, "disabled", json_boolean(v[i].disabled));
			for (j = 0; j < v[i].meta.n; j++)
				json_object_set_new(m, v[i].meta.kv[j].key, json_string(v[i].meta.kv[j].value));
			json_object_set_new(o, "markers", m);
			json_array_append_new(arr, o);
		}
		s = json_dumps(arr, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		fprintf(a->out, "{\"reference\":\"%s\",\"versions\":%s}\n", ref.text, s);
		json_free_dump(s);
		json_decref(arr);
	} else {
		fprintf(a->out, "%s: %zu version(s)\n", ref.text, n);
		fprintf(a->out, "%-34s %-20s %-9s %s\n", "VERSION", "CREATED", "STATE", "MARKERS");
		for (i = 0; i < n; i++) {
			char t[32] = "-";
			const char *state = v[i].destroyed ? "destroyed" : v[i].deleted ? "deleted" :
			    v[i].disabled ? "disabled" : prov_meta_get(&v[i].meta, MARK_STATE);
			if (v[i].created)
				util_rfc3339(v[i].created, t, sizeof(t));
			fprintf(a->out, "%-34s %-20s %-9s", v[i].id, t, state ? state : "-");
			for (j = 0; j < v[i].meta.n; j++)
				if (strcmp(v[i].meta.kv[j].key, MARK_STATE) != 0)
					fprintf(a->out, " %s=%s", v[i].meta.kv[j].key, v[i].meta.kv[j].value);
			fprintf(a->out, "\n");
		}
	}
	free(v);
	return 0;
}
