/*
 * store.c: what the agent calls instead of a store's ops: opening and
 * closing, one wrapper per operation (an operation the store lacks is
 * DMK_ERR_UNSUPPORTED, naming the store), and the check of each table row.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "provider.h"

static int
unsupported(const struct store *st, const char *what, struct dmk_err *err)
{
	return dmk_errf(err, DMK_ERR_UNSUPPORTED, "store %s (%s) cannot %s",
	    st->conf ? st->conf->name : "?", st->ops->type, what);
}

int
store_get(struct store *st, const struct secret_ref *ref, const char *version,
    struct secret **out, struct prov_version *ver, struct dmk_err *err)
{
	*out = NULL;
	return st->ops->get(st, ref, version, out, ver, err);
}

int
store_put(struct store *st, const struct secret_ref *ref, const struct secret *value,
    const char *expect_version, const struct prov_meta *meta, struct prov_version *out,
    struct dmk_err *err)
{
	if (meta != NULL && meta->n > 0 && !store_can(st, PROV_CAP_META))
		meta = NULL;           /* markers are best effort where none are kept */
	return st->ops->put(st, ref, value, expect_version, meta, out, err);
}

int
store_set_meta(struct store *st, const struct secret_ref *ref, const char *version,
    const struct prov_meta *meta, struct dmk_err *err)
{
	if (!store_can(st, PROV_CAP_META))
		return unsupported(st, "keep markers on versions", err);
	return st->ops->set_meta(st, ref, version, meta, err);
}

int
store_list_versions(struct store *st, const struct secret_ref *ref,
    struct prov_version **out, size_t *n, struct dmk_err *err)
{
	*out = NULL;
	*n = 0;
	if (!store_can(st, PROV_CAP_VERSIONS))
		return unsupported(st, "list versions", err);
	return st->ops->list_versions(st, ref, out, n, err);
}

int
store_delete_version(struct store *st, const struct secret_ref *ref, const char *version,
    struct dmk_err *err)
{
	if (!store_can(st, PROV_CAP_DELETE))
		return unsupported(st, "delete a version", err);
	return st->ops->delete_version(st, ref, version, err);
}

int
store_check(struct store *st, const struct secret_ref *const *refs, size_t nrefs,
    struct buf *report, struct dmk_err *err)
{
	if (!store_can(st, PROV_CAP_CHECK))
		return unsupported(st, "check references", err);
	return st->ops->check(st, refs, nrefs, report, err);
}

void
store_identity(const struct store *st, char *out, size_t len)
{
	if (len > 0)
		out[0] = '\0';
	if (st->opened && st->ops->identity != NULL)
		st->ops->identity((struct store *)st, out, len);
}

int
store_version_limit(struct store *st, const struct secret_ref *ref, long long *limit,
    size_t *count, char *how, size_t howlen, struct dmk_err *err)
{
	char dummy[8];

	*limit = 0;
	*count = 0;
	if (how == NULL) {
		how = dummy;
		howlen = sizeof(dummy);
	}
	if (howlen > 0)
		how[0] = '\0';
	if (st->ops->version_limit == NULL) {
		snprintf(how, howlen, "store %s (%s) keeps every version",
		    st->conf ? st->conf->name : "?", st->ops->type);
		return 0;
	}
	return st->ops->version_limit(st, ref, limit, count, how, howlen, err);
}

long long
store_headroom(const struct store *st, const struct prov_version *v, size_t n,
    long long limit, long *first)
{
	size_t i;

	if (first != NULL)
		*first = -1;
	if (limit <= 0 || st->keep == NULL)
		return -1;
	for (i = 0; i < n; i++)
		if (st->keep(v, n, i)) {
			if (first != NULL)
				*first = (long)i;
			/* after w more writes the oldest n + w - limit are gone */
			return limit - (long long)n + (long long)i > 0 ?
			    limit - (long long)n + (long long)i : 0;
		}
	return -1;
}

int
store_check_room(const struct store *st, const struct secret_ref *ref,
    const struct prov_version *v, size_t n, long long limit, struct dmk_err *err)
{
	long first;

	if (store_headroom(st, v, n, limit, &first) != 0 || first < 0)
		return 0;
	return dmk_errf(err, DMK_ERR_TOOBIG, "%s: refusing to write: the store keeps %lld "
	    "versions of this key and holds %zu, so a new one would delete version %s for good, "
	    "which is still needed (in force, pending or retiring); raise max_versions in "
	    "[store %s] (or the key's max_versions) and retry", ref->text, limit, n,
	    v[first].id, st->conf->name);
}

int
store_can(const struct store *st, unsigned caps)
{
	return (st->ops->caps & caps) == caps;
}

static const struct {
	unsigned cap;
	const char *name;
} cap_names[] = {
	{ PROV_CAP_CAS, "check-and-set" },
	{ PROV_CAP_VERSIONS, "versions" },
	{ PROV_CAP_META, "markers on versions" },
	{ PROV_CAP_DELETE, "deleting versions" },
	{ PROV_CAP_CHECK, "checking references" },
	{ PROV_CAP_CHECK_WRITE, "checking write access without writing" },
};

int
store_require(const struct store *st, unsigned caps, const char *why, struct dmk_err *err)
{
	size_t i;

	for (i = 0; i < sizeof(cap_names) / sizeof(cap_names[0]); i++)
		if ((caps & cap_names[i].cap) && !store_can(st, cap_names[i].cap))
			return dmk_errf(err, DMK_ERR_UNSUPPORTED, "store %s (%s) keeps no %s, which "
			    "%s needs", st->conf ? st->conf->name : "?", st->ops->type,
			    cap_names[i].name, why);
	return 0;
}

const char *
store_cas(const struct store *st, const char *cur)
{
	return store_can(st, PROV_CAP_CAS) ? cur : NULL;
}

int
prov_check_ops(const struct prov_ops *o, struct dmk_err *err)
{
	const struct {
		unsigned cap;
		int set;
	} has[] = {
		{ PROV_CAP_VERSIONS, o->list_versions != NULL },
		{ PROV_CAP_META, o->set_meta != NULL },
		{ PROV_CAP_DELETE, o->delete_version != NULL },
		{ PROV_CAP_CHECK, o->check != NULL },
	};
	size_t i;

	if (o->type == NULL || o->open == NULL || o->get == NULL || o->put == NULL ||
	    o->keys == NULL)
		return dmk_errf(err, DMK_ERR_INTERNAL, "store type %s: type, keys, open, get and "
		    "put are required", o->type ? o->type : "?");
	for (i = 0; i < sizeof(has) / sizeof(has[0]); i++)
		if (((o->caps & has[i].cap) != 0) != has[i].set)
			return dmk_errf(err, DMK_ERR_INTERNAL, "store type %s: capability 0x%x and "
			    "its operation disagree", o->type, has[i].cap);
	if ((o->caps & PROV_CAP_CHECK_WRITE) && !(o->caps & PROV_CAP_CHECK))
		return dmk_errf(err, DMK_ERR_INTERNAL, "store type %s: capability 0x%x needs "
		    "0x%x", o->type, PROV_CAP_CHECK_WRITE, PROV_CAP_CHECK);
	if (o->name_max == 0 || (o->lease != PROV_LEASE_CAS && o->lease != PROV_LEASE_READBACK) ||
	    ((o->caps & PROV_CAP_CAS) != 0) != (o->lease == PROV_LEASE_CAS))
		return dmk_errf(err, DMK_ERR_INTERNAL, "store type %s: naming rules or lease "
		    "strength missing or inconsistent", o->type);
	return 0;
}

size_t
prov_min_name_max(void)
{
	size_t i, m = 0;

	for (i = 0; providers[i] != NULL; i++)
		if (m == 0 || providers[i]->name_max < m)
			m = providers[i]->name_max;
	return m;
}

void
prov_type_list(char *out, size_t n)
{
	size_t i, off = 0;
	int k;

	if (n > 0)
		out[0] = '\0';
	for (i = 0; providers[i] != NULL && off < n; i++) {
		k = snprintf(out + off, n - off, "%s%s", i > 0 ? ", " : "", providers[i]->type);
		if (k < 0)
			break;
		off += (size_t)k;
	}
}

int
store_open(struct store *st, const struct conf_store *conf,
    int (*resolve)(void *, const struct secret_ref *, struct secret **, struct dmk_err *),
    void *rctx, struct dmk_err *err)
{
	int r;

	memset(st, 0, sizeof(*st));
	st->conf = conf;
	st->resolve = resolve;
	st->resolve_ctx = rctx;
	st->ops = conf->ops;
	if ((r = prov_check_ops(st->ops, err)) != 0)
		return r;
	if (st->ops->priv_size && (st->priv = calloc(1, st->ops->priv_size)) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	if ((r = st->ops->open(st, err)) != 0) {
		dmk_err_prefix(err, "store %s", conf->name);
		free(st->priv);
		st->priv = NULL;
		return r;
	}
	st->opened = 1;
	return 0;
}

void
store_close(struct store *st)
{
	if (st->opened && st->ops->close)
		st->ops->close(st);
	if (st->priv) {
		secure_wipe(st->priv, st->ops->priv_size);
		free(st->priv);
	}
	st->priv = NULL;
	st->opened = 0;
}
