/*
 * provider.h: one interface for every secret store.
 *
 * Each store type is a struct prov_ops (a row of function pointers plus its
 * capabilities and its configuration keys) in the NULL-terminated
 * providers[] registry (registry.c).  The agent asks caps, never which store
 * it talks to.  Adding a store is one file and one line in registry.c.
 *
 * Versions and their markers.  Rotation writes a new version marked pending
 * before SQL Server knows it, then marks it current and the old one
 * retiring/retired.  prov_meta is per version: a store that keeps metadata
 * per key (Vault KV v2 custom_metadata) maps it onto per-version keys.
 *
 * Secrets come back only as struct secret; every response body that held
 * one is wiped (buf, and Jansson's wiping allocator).
 */
#ifndef DMK_PROVIDER_H
#define DMK_PROVIDER_H

#include "core/dmk.h"
#include "core/buf.h"
#include "core/conf.h"
#include "core/ref.h"
#include "http.h"

struct secret;

#define PROV_META_MAX 16

struct prov_meta_kv {
	char key[128];
	char value[512];
};

struct prov_meta {
	size_t n;
	struct prov_meta_kv kv[PROV_META_MAX];
};

struct prov_version {
	char id[80];          /* Vault: "7"; Azure: the 32-hex version */
	long long num;        /* Vault: 7; Azure: 0 */
	time_t created;       /* 0 when unknown */
	int deleted;          /* soft-deleted */
	int destroyed;        /* gone for good */
	int disabled;         /* Azure attributes.enabled == false */
	struct prov_meta meta;
};

enum prov_caps {
	PROV_CAP_CAS = 1u << 0,       /* put() honours expect_version */
	PROV_CAP_VERSIONS = 1u << 1,  /* get() of an older version, list */
	PROV_CAP_META = 1u << 2,      /* per-version markers */
	PROV_CAP_DELETE = 1u << 3,    /* delete_version() */
};

struct store {
	const struct conf_store *conf;
	const struct prov_ops *ops;
	struct http_client http;
	void *priv;                   /* ops->priv_size bytes, zeroed */
	int opened;
	/* Resolves a reference held by this store's own section (bootstrap
	 * credentials such as a secret_id); set by the agent. */
	int (*resolve)(void *ctx, const struct secret_ref *ref,
	    struct secret **out, struct dmk_err *err);
	void *resolve_ctx;
};

struct prov_ops {
	const char *type;             /* value of type = in [store NAME] */
	unsigned caps;
	const struct conf_keydef *keys;  /* allowed keys, {NULL}-terminated */
	size_t priv_size;

	/* Static checks of the section beyond the key table; no network. */
	int (*validate)(const struct conf_store *conf, struct dmk_err *err);
	/* Connect and authenticate. */
	int (*open)(struct store *st, struct dmk_err *err);
	/* Revoke what this run created; release priv's contents. */
	void (*close)(struct store *st);

	/* version NULL: the current one. */
	int (*get)(struct store *st, const struct secret_ref *ref,
	    const char *version, struct secret **out, struct prov_version *ver,
	    struct dmk_err *err);
	/*
	 * Write a new version.  expect_version: NULL no check; "0" create only;
	 * otherwise the version that must still be current (PROV_CAP_CAS).
	 * meta: markers for the new version (may be NULL).  out: the new version.
	 */
	int (*put)(struct store *st, const struct secret_ref *ref,
	    const struct secret *value, const char *expect_version,
	    const struct prov_meta *meta, struct prov_version *out,
	    struct dmk_err *err);
	/* Replace the markers of one version (keys absent from meta are kept). */
	int (*set_meta)(struct store *st, const struct secret_ref *ref,
	    const char *version, const struct prov_meta *meta,
	    struct dmk_err *err);
	/* All versions, oldest first; *out freed with free(). */
	int (*list_versions)(struct store *st, const struct secret_ref *ref,
	    struct prov_version **out, size_t *n, struct dmk_err *err);
	/* Soft-delete one version (PROV_CAP_DELETE). */
	int (*delete_version)(struct store *st, const struct secret_ref *ref,
	    const char *version, struct dmk_err *err);
	/* store check: can we read/write each reference?  One line per ref. */
	int (*check)(struct store *st, const struct secret_ref *const *refs,
	    size_t nrefs, struct buf *report, struct dmk_err *err);
};

extern const struct prov_ops *const providers[];
const struct prov_ops *prov_find(const char *type);

/* Markers: helpers over struct prov_meta. */
const char *prov_meta_get(const struct prov_meta *m, const char *key);
int prov_meta_set(struct prov_meta *m, const char *key, const char *value);

/* The agent's marker keys (the same in every store). */
#define PROV_MARK_STATE     "dmkagent-state"    /* pending|current|retiring|retired */
#define PROV_MARK_ROTATION  "dmkagent-rotation" /* rotation id */
#define PROV_MARK_BY        "dmkagent-by"       /* user@host */
#define PROV_MARK_TIME      "dmkagent-time"     /* RFC 3339 */

/*
 * Open a store from its section: allocates priv, calls ops->open.
 * resolve/rctx let the store read its own bootstrap credentials
 * (st->resolve); tests may pass NULL.
 */
int store_open(struct store *st, const struct conf_store *conf,
    int (*resolve)(void *, const struct secret_ref *, struct secret **, struct dmk_err *),
    void *rctx, struct dmk_err *err);
void store_close(struct store *st);

#endif
