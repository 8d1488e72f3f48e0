/* cmd_config.c: dmkagent config check. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "cli.h"
#include "deployhook.h"
#include "providers/provider.h"

static json_t *
ref_json(const struct secret_ref *r)
{
	return json_string(r->text);   /* a reference, never a secret */
}

/* Every file: reference and the hook command: each problem on its own line
 * (stderr), the last one left in err; returns the first code. */
static int
check_files(struct agent *a, struct dmk_err *err)
{
	const struct config *c = a->cfg;
	struct dmk_err e;
	size_t i, j, n = 0;
	int first = 0;

#define CHK(ref, line) do {                                                      \
	if ((ref)->kind == REF_FILE && check_secret_file((ref)->path, &e) != 0) {  \
		dmk_err_prefix(&e, "%s:%d", c->path, (line));                       \
		if (n++ > 0)                                                         \
			fprintf(stderr, "dmkagent: %s\n", err->msg);                 \
		if (first == 0)                                                      \
			first = e.code;                                              \
		*err = e;                                                            \
	}                                                                            \
} while (0)
	if (c->has_audit_key)
		CHK(&c->audit_key, 0);
	for (i = 0; i < c->nstores; i++)
		for (j = 0; j < c->stores[i].nkv; j++)
			if (c->stores[i].kv[j].kind == CK_REF)
				CHK(&c->stores[i].kv[j].ref, c->stores[i].kv[j].line);
	for (i = 0; i < c->nags; i++) {
		if (c->ags[i].has_login_password)
			CHK(&c->ags[i].login_password, c->ags[i].line);
		if (c->ags[i].has_smk_backup_password)
			CHK(&c->ags[i].smk_backup_password, c->ags[i].line);
	}
	for (i = 0; i < c->ndbs; i++) {
		CHK(&c->dbs[i].dmk_password, c->dbs[i].line);
		if (c->dbs[i].has_cert_backup_password)
			CHK(&c->dbs[i].cert_backup_password, c->dbs[i].line);
		if (c->dbs[i].has_dmk_backup_password)
			CHK(&c->dbs[i].dmk_backup_password, c->dbs[i].line);
	}
#undef CHK
	if (c->hook_command[0] != '\0' && deployhook_check(c->hook_command, &e) != 0) {
		dmk_err_prefix(&e, "%s: [agent]", c->path);
		if (n++ > 0)
			fprintf(stderr, "dmkagent: %s\n", err->msg);
		if (first == 0)
			first = e.code;
		*err = e;
	}
	return first;
}

int
cmd_config_check(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	const struct config *c = a->cfg;
	size_t i, j;
	int r;

	if (argc > 1)
		return dmk_errf(err, DMK_ERR_USAGE, "config check takes no arguments");
	if ((r = check_files(a, err)) != 0)
		return r;
	if (a->output == OUTPUT_JSON) {
		json_t *root = json_object(), *arr, *o, *kv;
		char *s;

		o = json_object();
		json_object_set_new(o, "state_dir", json_string(c->state_dir));
		json_object_set_new(o, "audit_log", json_string(c->audit_log));
		json_object_set_new(o, "audit_key", c->has_audit_key ? ref_json(&c->audit_key) : json_null());
		json_object_set_new(o, "audit_anchor", c->has_audit_anchor ?
		    ref_json(&c->audit_anchor) : json_null());
		json_object_set_new(o, "password_length", json_integer(c->password_length));
		json_object_set_new(o, "lease_ttl", json_integer(c->lease_ttl));
		json_object_set_new(o, "hook_command", c->hook_command[0] ?
		    json_string(c->hook_command) : json_null());
		json_object_set_new(o, "hook_timeout", json_integer(c->hook_timeout));
		json_object_set_new(o, "metrics_file", c->metrics_file[0] ?
		    json_string(c->metrics_file) : json_null());
		json_object_set_new(root, "agent", o);
		if (c->hook.present) {
			o = json_object();
			json_object_set_new(o, "listen_host", json_string(c->hook.listen_host));
			json_object_set_new(o, "listen_port", json_integer(c->hook.listen_port));
			json_object_set_new(o, "tls_cert", json_string(c->hook.tls_cert));
			json_object_set_new(o, "tls_key", ref_json(&c->hook.tls_key));
			json_object_set_new(o, "key", c->hook.has_key ? ref_json(&c->hook.key) :
			    json_null());
			json_object_set_new(o, "auth", json_string(c->hook.entra ? "entra" : "code"));
			if (c->hook.entra) {
				json_object_set_new(o, "audience", json_string(c->hook.audience));
				json_object_set_new(o, "tenant", json_string(c->hook.tenant));
				json_object_set_new(o, "authority_host",
				    json_string(c->hook.authority_host));
			}
			json_object_set_new(o, "queue", json_integer(c->hook.queue));
			json_object_set_new(root, "hook", o);
		}
		arr = json_array();
		for (i = 0; i < c->nstores; i++) {
			o = json_object();
			json_object_set_new(o, "name", json_string(c->stores[i].name));
			json_object_set_new(o, "type", json_string(c->stores[i].type));
			kv = json_object();
			for (j = 0; j < c->stores[i].nkv; j++)
				json_object_set_new(kv, c->stores[i].kv[j].key,
				    json_string(c->stores[i].kv[j].value));
			json_object_set_new(o, "settings", kv);
			json_array_append_new(arr, o);
		}
		json_object_set_new(root, "stores", arr);
		arr = json_array();
		for (i = 0; i < c->nags; i++) {
			const struct conf_ag *ag = &c->ags[i];
			json_t *reps = json_array();
			o = json_object();
			json_object_set_new(o, "label", json_string(ag->label));
			json_object_set_new(o, "name", json_string(ag->name));
			json_object_set_new(o, "listener_host", json_string(ag->listener_host));
			json_object_set_new(o, "listener_port", json_integer(ag->listener_port));
			json_object_set_new(o, "login", json_string(ag->login));
			json_object_set_new(o, "login_password",
			    ag->has_login_password ? ref_json(&ag->login_password) : json_null());
			json_object_set_new(o, "ca_file", json_string(ag->ca_file));
			json_object_set_new(o, "domain", json_string(ag->domain));
			json_object_set_new(o, "tls_name", json_string(ag->tls_name));
			json_object_set_new(o, "browser_port", json_integer(ag->browser_port));
			json_object_set_new(o, "encrypt", json_string(ag->encrypt == ENCRYPT_STRICT ?
			    "strict" : "mandatory"));
			for (j = 0; j < ag->nreplicas; j++) {
				const struct conf_replica *cr = &ag->replicas[j];
				json_t *rp = json_object();
				json_object_set_new(rp, "name", json_string(cr->name));
				json_object_set_new(rp, "host", cr->host[0] ? json_string(cr->host) :
				    json_null());
				json_object_set_new(rp, "port", cr->host[0] ? json_integer(cr->port) :
				    json_null());
				json_object_set_new(rp, "tls_name", cr->tls_name[0] ?
				    json_string(cr->tls_name) : json_null());
				json_array_append_new(reps, rp);
			}
			json_object_set_new(o, "replica_overrides", reps);
			json_array_append_new(arr, o);
		}
		json_object_set_new(root, "ags", arr);
		arr = json_array();
		for (i = 0; i < c->ndbs; i++) {
			const struct conf_db *db = &c->dbs[i];
			o = json_object();
			json_object_set_new(o, "ag", json_string(db->ag));
			json_object_set_new(o, "database", json_string(db->name));
			json_object_set_new(o, "dmk_password", ref_json(&db->dmk_password));
			json_object_set_new(o, "cert_backup_password", db->has_cert_backup_password ?
			    ref_json(&db->cert_backup_password) : json_null());
			json_object_set_new(o, "rotate_every", json_integer(db->rotate_every));
			json_object_set_new(o, "backup_every", json_integer(db->backup_every));
			json_object_set_new(o, "restore_test_every", json_integer(db->restore_test_every));
			json_array_append_new(arr, o);
		}
		json_object_set_new(root, "databases", arr);
		s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		fprintf(a->out, "%s\n", s);
		json_free_dump(s);
		json_decref(root);
		return 0;
	}
	fprintf(a->out, "%s: valid\n", c->path);
	fprintf(a->out, "stores: %zu\n", c->nstores);
	for (i = 0; i < c->nstores; i++)
		fprintf(a->out, "  %s (%s)\n", c->stores[i].name, c->stores[i].type);
	fprintf(a->out, "availability groups: %zu\n", c->nags);
	for (i = 0; i < c->nags; i++)
		fprintf(a->out, "  %s: listener %s:%d, login %s, %zu replica override(s)\n",
		    c->ags[i].name, c->ags[i].listener_host, c->ags[i].listener_port,
		    c->ags[i].login, c->ags[i].nreplicas);
	fprintf(a->out, "databases: %zu\n", c->ndbs);
	for (i = 0; i < c->ndbs; i++)
		fprintf(a->out, "  %s/%s: dmk_password %s%s%s\n", c->dbs[i].ag, c->dbs[i].name,
		    c->dbs[i].dmk_password.text,
		    c->dbs[i].has_cert_backup_password ? ", cert_backup_password " : "",
		    c->dbs[i].has_cert_backup_password ? c->dbs[i].cert_backup_password.text : "");
	return 0;
}
