/* ctx.c: a run's context: configuration, stores, references, audit, lock. */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "core/dmk.h"
#include "markers.h"
#include "core/secret.h"
#include "agent.h"
#include "lock.h"
#include "auditship.h"
#include "providers/provider.h"

void
agent_init(struct agent *a)
{
	memset(a, 0, sizeof(*a));
	a->lock_fd = -1;
	a->out = stdout;
	a->audit.fd = -1;
	util_random_id(a->run_id, sizeof(a->run_id));
}

static void
anchor_close(struct agent *a)
{
	if (a->anchor_store != NULL) {
		if (a->anchor_store->opened)
			store_close(a->anchor_store);
		free(a->anchor_store);
		a->anchor_store = NULL;
	}
}

void
agent_free(struct agent *a)
{
	size_t i;

	if (a->cfg != NULL && a->stores != NULL)
		for (i = 0; i < a->cfg->nstores; i++)
			if (a->store_state[i] == 1)
				store_close(&a->stores[i]);
	free(a->stores);
	free(a->store_state);
	a->stores = NULL;
	a->store_state = NULL;
	if (a->audit_open)
		audit_close(&a->audit);
	a->audit_open = 0;
	audit_ship_close(a->ship);
	a->ship = NULL;
	anchor_close(a);
	lock_release(a->lock_fd);
	a->lock_fd = -1;
	json_decref(a->regstate);
	a->regstate = NULL;
	config_free(a->cfg);
	a->cfg = NULL;
}

int
agent_job_init(struct agent *job, struct agent *parent, FILE *out, struct dmk_err *err)
{
	size_t n = parent->cfg->nstores + 1;

	*job = *parent;
	memset(&job->audit, 0, sizeof(job->audit));
	job->audit.fd = -1;
	job->audit_open = 0;
	job->ship = NULL;
	job->anchor_store = NULL;
	job->lock_fd = -1;
	job->regstate = NULL;
	job->regstate_dirty = 0;
	job->guard = NULL;
	job->guard_ctx = NULL;
	job->out = out;
	job->parent = parent->parent != NULL ? parent->parent : parent;
	job->stores = calloc(n, sizeof(*job->stores));
	job->store_state = calloc(n, sizeof(*job->store_state));
	if (job->stores == NULL || job->store_state == NULL) {
		free(job->stores);
		free(job->store_state);
		job->stores = NULL;
		job->store_state = NULL;
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	}
	return 0;
}

void
agent_job_free(struct agent *job)
{
	size_t i;

	for (i = 0; job->stores != NULL && i < job->cfg->nstores; i++)
		if (job->store_state[i] == 1)
			store_close(&job->stores[i]);
	free(job->stores);
	free(job->store_state);
	job->stores = NULL;
	job->store_state = NULL;
}

int
agent_load_config(struct agent *a, const char *path, struct dmk_err *err)
{
	struct config_errors *errs;
	size_t k;
	int r;

	util_strlcpy(a->config_path, path, sizeof(a->config_path));
	/* Every error of the file, each on its own line (config check's job,
	 * and no command runs on a configuration with any). */
	if ((errs = malloc(sizeof(*errs))) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	r = config_load_all(path, &a->cfg, errs, err);
	if (r != 0 && errs->n > 1) {
		for (k = 0; k < errs->n; k++)
			fprintf(stderr, "dmkagent: %s\n", errs->msg[k]);
		dmk_errf(err, r, "%s: %zu errors in the configuration (each above); nothing "
		    "was done", path, errs->n);
	}
	free(errs);
	if (r != 0)
		return r;
	/* env: references leave the environment now, before any thread starts. */
	for (size_t i = 0; i < a->cfg->nstores; i++)
		for (size_t j = 0; j < a->cfg->stores[i].nkv; j++) {
			const struct conf_kv *kv = &a->cfg->stores[i].kv[j];
			if (kv->kind == CK_REF && kv->ref.kind == REF_ENV)
				(void)secret_env_present(kv->ref.path);
		}
	a->stores = calloc(a->cfg->nstores ? a->cfg->nstores : 1, sizeof(*a->stores));
	a->store_state = calloc(a->cfg->nstores ? a->cfg->nstores : 1, sizeof(int));
	if (a->stores == NULL || a->store_state == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	return 0;
}

static int
store_bootstrap_resolve(void *ctx, const struct secret_ref *ref, struct secret **out,
    struct dmk_err *err)
{
	return agent_resolve(ctx, ref, 1, out, NULL, err);
}

int
agent_guard(struct agent *a, struct dmk_err *err)
{
	return a->guard != NULL ? a->guard(a->guard_ctx, err) : 0;
}

/*
 * A store that refused this run's credentials (or what they may do): name
 * what to fix, the [store] section's auth method and the references its
 * credentials come from (never a value), so that nobody blames a replica.
 */
int
agent_store_cred_hint(struct agent *a, const char *name, struct dmk_err *err)
{
	const struct conf_store *cs = config_store(a->cfg, name);
	char what[600];
	size_t i, len = 0;

	if (cs == NULL || (err->code != DMK_ERR_AUTH && err->code != DMK_ERR_DENIED) ||
	    strstr(err->msg, "; fix the credentials of [store ") != NULL)
		return err->code;
	what[0] = '\0';
	for (i = 0; i < cs->nkv && len < sizeof(what) - 1; i++) {
		const struct conf_kv *kv = &cs->kv[i];
		int n;

		if (kv->kind != CK_REF && strcmp(kv->key, "auth") != 0)
			continue;
		n = snprintf(what + len, sizeof(what) - len, "%s%s = %s", len ? ", " : "",
		    kv->key, kv->value);
		if (n < 0)
			break;
		len += (size_t)n < sizeof(what) - len ? (size_t)n : sizeof(what) - len - 1;
	}
	snprintf(err->msg + strlen(err->msg), sizeof(err->msg) - strlen(err->msg),
	    "; fix the credentials of [store %s] in %s%s%s%s", name, a->config_path,
	    what[0] ? " (" : "", what, what[0] ? ")" : "");
	return err->code;
}

int
agent_store(struct agent *a, const char *name, struct store **out, struct dmk_err *err)
{
	size_t i;
	int r;

	for (i = 0; i < a->cfg->nstores; i++)
		if (strcmp(a->cfg->stores[i].name, name) == 0)
			break;
	if (i == a->cfg->nstores)
		return dmk_errf(err, DMK_ERR_CONFIG, "no store named '%s' in %s", name,
		    a->config_path);
	if (a->store_state[i] == -1)
		return dmk_errf(err, DMK_ERR_CONFIG, "store '%s' needs itself to open (a cycle of "
		    "references between stores)", name);
	if (a->store_state[i] == 0) {
		struct store *st = &a->stores[i];
		a->store_state[i] = -1;
		r = store_open(st, &a->cfg->stores[i], store_bootstrap_resolve, a, err);
		a->store_state[i] = r == 0 ? 1 : 0;
		if (r != 0)
			return agent_store_cred_hint(a, name, err);
		st->keep = markers_keep;      /* no write drops a version still needed */
	}
	*out = &a->stores[i];
	return 0;
}

int
agent_resolve(struct agent *a, const struct secret_ref *ref, int allow_env,
    struct secret **out, struct prov_version *ver, struct dmk_err *err)
{
	struct store *st;
	int r;

	*out = NULL;
	if (ver)
		memset(ver, 0, sizeof(*ver));
	switch (ref->kind) {
	case REF_FILE:
		return read_secret_file(ref->path, out, err);
	case REF_ENV:
		if (!allow_env)
			return dmk_errf(err, DMK_ERR_CONFIG, "%s: env: references are only for a "
			    "store's bootstrap credentials", ref->text);
		/* Taken out of the environment (and /proc/PID/environ) on first use. */
		if (!secret_env_present(ref->path))
			return dmk_errf(err, DMK_ERR_CONFIG, "%s: the variable is not set", ref->text);
		if ((*out = secret_env_take(ref->path)) == NULL)
			return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		return 0;
	case REF_STORE:
		if ((r = agent_store(a, ref->store, &st, err)) != 0)
			return r;
		if ((r = store_get(st, ref, NULL, out, ver, err)) == DMK_ERR_NOTFOUND)
			return dmk_err_prefix(err, "no such secret at %s", ref->text);
		if (r != 0) {
			dmk_err_prefix(err, "%s", ref->text);
			return agent_store_cred_hint(a, ref->store, err);
		}
		return 0;
	}
	return dmk_errf(err, DMK_ERR_INTERNAL, "bad reference kind");
}

int
agent_audit_checkpoint_path(struct agent *a, char *path, size_t len, struct dmk_err *err)
{
	if ((size_t)snprintf(path, len, "%s/audit-checkpoint.json", a->cfg->state_dir) >= len)
		return dmk_errf(err, DMK_ERR_CONFIG, "state_dir: path too long");
	return 0;
}

/*
 * The anchor's own store instance: audit records come from replica threads
 * too (one at a time, under the audit mutex), and must not share an HTTP
 * handle with a thread that is using the store.
 */
static int
anchor_store(struct agent *a, struct store **out, struct dmk_err *err)
{
	const struct conf_store *cs;
	int r;

	if (a->anchor_store == NULL) {
		if ((cs = config_store(a->cfg, a->cfg->audit_anchor.store)) == NULL)
			return dmk_errf(err, DMK_ERR_CONFIG, "audit_anchor: no store named '%s'",
			    a->cfg->audit_anchor.store);
		if ((a->anchor_store = calloc(1, sizeof(*a->anchor_store))) == NULL)
			return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		if ((r = store_open(a->anchor_store, cs, store_bootstrap_resolve, a, err)) != 0) {
			free(a->anchor_store);
			a->anchor_store = NULL;
			return dmk_err_prefix(err, "%s", a->cfg->audit_anchor.text);
		}
	}
	*out = a->anchor_store;
	return 0;
}

static int
anchor_put(void *ctx, const char *text, struct dmk_err *err)
{
	struct agent *a = ctx;
	struct prov_version ver;
	struct secret *v;
	struct store *st;
	int r;

	if ((r = anchor_store(a, &st, err)) != 0)
		return r;
	if ((v = secret_from_str(text)) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	memset(&ver, 0, sizeof(ver));
	r = store_put(st, &a->cfg->audit_anchor, v, NULL, NULL, &ver, err);
	secret_free(v);
	if (r != 0)
		return dmk_err_prefix(err, "%s", a->cfg->audit_anchor.text);
	return 0;
}

int
agent_audit_anchor_get(struct agent *a, const struct secret *key, struct audit_ckpt *c,
    int *found, struct dmk_err *err)
{
	struct secret *v = NULL;
	struct store *st;
	int r;

	*found = 0;
	if ((r = anchor_store(a, &st, err)) != 0)
		return r;
	r = store_get(st, &a->cfg->audit_anchor, NULL, &v, NULL, err);
	if (r == DMK_ERR_NOTFOUND || r == DMK_ERR_DELETED) {
		dmk_err_clear(err);
		return 0;
	}
	if (r != 0)
		return dmk_err_prefix(err, "%s", a->cfg->audit_anchor.text);
	r = audit_ckpt_parse(secret_reveal(v), secret_len(v), key, a->cfg->audit_anchor.text,
	    c, err);
	secret_free(v);
	if (r == 0)
		*found = 1;
	return r;
}

/* What each store and SQL Server see this run as: configuration names, never a secret. */
static void
describe(void *ctx, const char *store, const char *ag, char *sid, size_t slen, char *login,
    size_t llen)
{
	struct agent *a = ctx;
	const struct conf_store *cs;
	const char *auth;
	size_t i;
	int n;

	if (store != NULL && (cs = config_store(a->cfg, store)) != NULL) {
		auth = conf_store_str(cs, "auth");
		n = snprintf(sid, slen, "%s: %s auth=%s", cs->name, cs->type, auth ? auth :
		    "default");
		/* What the store itself says it logged in as (the store's own
		 * business: a Vault role, an Entra client id), once it is open. */
		for (i = 0; i < a->cfg->nstores && a->stores != NULL; i++)
			if (&a->cfg->stores[i] == cs && a->store_state[i] == 1 && n > 0 &&
			    (size_t)n < slen) {
				char who[256];
				store_identity(&a->stores[i], who, sizeof(who));
				if (who[0])
					snprintf(sid + n, slen - (size_t)n, " %s", who);
			}
	}
	for (i = 0; ag != NULL && i < a->cfg->nags; i++)
		if (strcmp(a->cfg->ags[i].name, ag) == 0) {
			snprintf(login, llen, "%s", a->cfg->ags[i].login[0] &&
			    strcmp(a->cfg->ags[i].login, "integrated") != 0 ? a->cfg->ags[i].login :
			    "integrated (Kerberos)");
			break;
		}
}

int
agent_begin(struct agent *a, const char *command, struct dmk_err *err)
{
	struct secret *key = NULL;
	char dir[4096], *slash, ckpt[4096];
	int r, found;

	if ((r = lock_acquire(a->cfg->state_dir, a->wait_seconds, &a->lock_fd, err)) != 0)
		return r;
	util_strlcpy(dir, a->cfg->audit_log, sizeof(dir));
	if ((slash = strrchr(dir, '/')) != NULL && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0700) == -1 && errno != EEXIST)
			return dmk_errf(err, DMK_ERR_IO, "%s: cannot create: %s", dir, strerror(errno));
	}
	if ((r = agent_audit_checkpoint_path(a, ckpt, sizeof(ckpt), err)) != 0)
		return r;
	if (a->cfg->has_audit_key &&
	    (r = agent_resolve(a, &a->cfg->audit_key, 0, &key, NULL, err)) != 0)
		return dmk_err_prefix(err, "audit_key");
	r = audit_open(&a->audit, a->cfg->audit_log, key, a->run_id, err);
	if (r == 0)
		r = audit_use_checkpoint(&a->audit, ckpt, err);
	if (r == 0 && a->cfg->has_audit_anchor) {
		/* The store's copy catches a cut log whose local checkpoint was rolled back. */
		struct dmk_err aerr;
		a->audit.anchor = anchor_put;
		a->audit.anchor_ctx = a;
		r = agent_audit_anchor_get(a, key, &a->audit.expect, &found, &aerr);
		if (r == DMK_ERR_VERIFY && a->audit_reset_reason == NULL) {
			*err = aerr;
		} else if (r == DMK_ERR_VERIFY) {
			/* reset-checkpoint: the anchor is overwritten; say what it was. */
			log_warn("audit anchor replaced: %s", aerr.msg);
			r = 0;
		} else if (r != 0) {
			/* Unreachable now: compared next run; the put is retried each batch. */
			log_warn("audit anchor not compared: %s", aerr.msg);
			snprintf(a->audit.anchor_err, sizeof(a->audit.anchor_err), "%s", aerr.msg);
			r = 0;
		} else
			a->audit.has_expect = found;
	}
	secret_free(key);
	if (r != 0) {
		audit_close(&a->audit);
		return r;
	}
	if (a->cfg->audit_syslog[0] != '\0' && a->ship == NULL) {
		char sck[4200];
		snprintf(sck, sizeof(sck), "%s/audit-syslog.json", a->cfg->state_dir);
		if ((r = audit_ship_open(a->cfg->audit_syslog, a->cfg->audit_syslog_ca,
		    a->cfg->audit_log, sck, &a->ship, err)) != 0) {
			audit_close(&a->audit);
			return r;
		}
	}
	a->audit_open = 1;
	a->audit.reset_reason = a->audit_reset_reason;
	a->audit.reason = a->reason;
	a->audit.ticket = a->ticket;
	a->audit.trigger = a->trigger;
	a->audit.describe = describe;
	a->audit.describe_ctx = a;
	if (a->ship != NULL) {
		a->audit.after = audit_ship_after;
		a->audit.after_ctx = a->ship;
	}
	return audit_record(&a->audit, "run-start", NULL, NULL, command, NULL, err);
}

void
agent_end(struct agent *a, const char *command, int result)
{
	struct dmk_err err;

	if (a->audit_open) {
		const char *sf = audit_ship_failure(a->ship);
		/* A SIEM that missed records is itself on the record (and sent later). */
		if (sf != NULL && audit_record(&a->audit, "audit-syslog", NULL, NULL, "failed", sf,
		    &err) != 0)
			log_error("%s", err.msg);
		if (audit_record(&a->audit, "run-end", NULL, NULL,
		    result == 0 ? "ok" : dmk_strerror(result), result ? command : NULL, &err) != 0)
			log_error("%s", err.msg);
		audit_close(&a->audit);
		a->audit_open = 0;
	}
	audit_ship_close(a->ship);
	a->ship = NULL;
	anchor_close(a);
	lock_release(a->lock_fd);
	a->lock_fd = -1;
}

/* Replica threads audit concurrently: one record at a time. */
static pthread_mutex_t audit_mtx = PTHREAD_MUTEX_INITIALIZER;

int
agent_audit(struct agent *a, const char *action, const struct audit_target *t,
    const struct audit_keys *k, const char *outcome, const char *error)
{
	struct dmk_err err;
	int r;

	if (a->parent != NULL)
		a = a->parent;
	if (!a->audit_open)
		return 0;
	pthread_mutex_lock(&audit_mtx);
	r = audit_record(&a->audit, action, t, k, outcome, error, &err);
	pthread_mutex_unlock(&audit_mtx);
	if (r != 0)
		log_error("%s", err.msg);
	return r;
}

int
agent_audit_many(struct agent *a, const struct audit_entry *e, size_t n)
{
	struct dmk_err err;
	int r;

	if (a->parent != NULL)
		a = a->parent;
	if (!a->audit_open || n == 0)
		return 0;
	pthread_mutex_lock(&audit_mtx);
	r = audit_record_many(&a->audit, e, n, &err);
	pthread_mutex_unlock(&audit_mtx);
	if (r != 0)
		log_error("%s", err.msg);
	return r;
}
