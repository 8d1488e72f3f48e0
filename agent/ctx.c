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
#include "core/secret.h"
#include "agent.h"
#include "lock.h"
#include "../providers/provider.h"

void
agent_init(struct agent *a)
{
	memset(a, 0, sizeof(*a));
	a->lock_fd = -1;
	a->out = stdout;
	a->audit.fd = -1;
	util_random_id(a->run_id, sizeof(a->run_id));
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
	lock_release(a->lock_fd);
	a->lock_fd = -1;
	json_decref(a->regstate);
	a->regstate = NULL;
	config_free(a->cfg);
	a->cfg = NULL;
}

int
agent_load_config(struct agent *a, const char *path, struct dmk_err *err)
{
	int r;

	util_strlcpy(a->config_path, path, sizeof(a->config_path));
	if ((r = config_load(path, &a->cfg, err)) != 0)
		return r;
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
			return r;
	}
	*out = &a->stores[i];
	return 0;
}

int
check_secret_file(const char *path, struct dmk_err *err)
{
	struct stat st;

	if (lstat(path, &st) == -1)
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: not a regular file", path);
	if (st.st_uid != geteuid() && st.st_uid != 0)
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: owned by uid %u, neither this user nor "
		    "root", path, (unsigned)st.st_uid);
	if (st.st_mode & 077)
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: readable or writable by group or others "
		    "(mode %03o); run chmod 600 %s", path, (unsigned)(st.st_mode & 0777), path);
	return 0;
}

int
read_secret_file(const char *path, struct secret **out, struct dmk_err *err)
{
	char chunk[4096];
	struct secret *s;
	struct stat st;
	ssize_t n;
	int fd, r;

	*out = NULL;
	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) == -1)
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		close(fd);
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: not a regular file", path);
	}
	if (st.st_uid != geteuid() && st.st_uid != 0) {
		close(fd);
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: owned by uid %u, neither this user nor "
		    "root", path, (unsigned)st.st_uid);
	}
	if (st.st_mode & 077) {
		close(fd);
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: readable or writable by group or others "
		    "(mode %03o); run chmod 600 %s", path, (unsigned)(st.st_mode & 0777), path);
	}
	if ((s = secret_new()) == NULL) {
		close(fd);
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	}
	while ((n = read(fd, chunk, sizeof(chunk))) > 0)
		if ((r = secret_append(s, chunk, (size_t)n)) != 0) {
			secure_wipe(chunk, sizeof(chunk));
			secret_free(s);
			close(fd);
			return dmk_errf(err, r, "%s: larger than %d bytes", path, SECRET_MAX);
		}
	secure_wipe(chunk, sizeof(chunk));
	close(fd);
	if (n < 0) {
		secret_free(s);
		return dmk_errf(err, DMK_ERR_IO, "%s: %s", path, strerror(errno));
	}
	secret_trim_newline(s);
	*out = s;
	return 0;
}

int
agent_resolve(struct agent *a, const struct secret_ref *ref, int allow_env,
    struct secret **out, struct prov_version *ver, struct dmk_err *err)
{
	struct store *st;
	const char *v;
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
		if ((v = getenv(ref->path)) == NULL || *v == '\0')
			return dmk_errf(err, DMK_ERR_CONFIG, "%s: the variable is not set", ref->text);
		if ((*out = secret_from_str(v)) == NULL)
			return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		return 0;
	case REF_STORE:
		if ((r = agent_store(a, ref->store, &st, err)) != 0)
			return r;
		if ((r = st->ops->get(st, ref, NULL, out, ver, err)) != 0)
			return dmk_err_prefix(err, "%s", ref->text);
		return 0;
	}
	return dmk_errf(err, DMK_ERR_INTERNAL, "bad reference kind");
}

int
agent_begin(struct agent *a, const char *command, struct dmk_err *err)
{
	struct secret *key = NULL;
	char dir[4096], *slash;
	int r;

	if ((r = lock_acquire(a->cfg->state_dir, a->wait_seconds, &a->lock_fd, err)) != 0)
		return r;
	util_strlcpy(dir, a->cfg->audit_log, sizeof(dir));
	if ((slash = strrchr(dir, '/')) != NULL && slash != dir) {
		*slash = '\0';
		if (mkdir(dir, 0700) == -1 && errno != EEXIST)
			return dmk_errf(err, DMK_ERR_IO, "%s: cannot create: %s", dir, strerror(errno));
	}
	if (a->cfg->has_audit_key &&
	    (r = agent_resolve(a, &a->cfg->audit_key, 0, &key, NULL, err)) != 0)
		return dmk_err_prefix(err, "audit_key");
	r = audit_open(&a->audit, a->cfg->audit_log, key, a->run_id, err);
	secret_free(key);
	if (r != 0)
		return r;
	a->audit_open = 1;
	return audit_record(&a->audit, "run-start", NULL, NULL, command, NULL, err);
}

void
agent_end(struct agent *a, const char *command, int result)
{
	struct dmk_err err;

	if (a->audit_open) {
		if (audit_record(&a->audit, "run-end", NULL, NULL,
		    result == 0 ? "ok" : dmk_strerror(result), result ? command : NULL, &err) != 0)
			log_error("%s", err.msg);
		audit_close(&a->audit);
		a->audit_open = 0;
	}
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

	if (!a->audit_open || n == 0)
		return 0;
	pthread_mutex_lock(&audit_mtx);
	r = audit_record_many(&a->audit, e, n, &err);
	pthread_mutex_unlock(&audit_mtx);
	if (r != 0)
		log_error("%s", err.msg);
	return r;
}
