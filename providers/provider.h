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
 *
 * Ownership: a struct store is its caller's (the agent's); store_open()
 * allocates priv and store_close() wipes and frees it.  get() hands the
 * caller a new secret (secret_free()); put() only reads value and meta;
 * list_versions() hands the caller an array to free().  conf and the
 * references passed in belong to the configuration and must outlive the
 * call; nothing of them is kept after it returns.
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
	PROV_CAP_VERSIONS = 1u << 1,  /* get() of an older version, list_versions() */
	PROV_CAP_META = 1u << 2,      /* per-version markers: set_meta() */
	PROV_CAP_DELETE = 1u << 3,    /* delete_version() */
	PROV_CAP_CHECK = 1u << 4,     /* check() */
	PROV_CAP_CHECK_WRITE = 1u << 5, /* check() also proves write access, without
	                                   writing (Vault: sys/capabilities-self) */
};

/*
 * How far two agents' leases can be trusted to exclude each other: with
 * check-and-set only one write of a lease can win; without it a lease is
 * written and read back, and two writes in the same moment can both
 * believe they won (dmkagent.conf(5) says what remains).
 */
enum prov_lease { PROV_LEASE_CAS = 1, PROV_LEASE_READBACK };

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
	/* Set by the agent (markers.h): must version i of v (all n versions of
	 * a key, oldest first) stay?  A store that drops its oldest versions
	 * (Vault's max_versions) refuses a write that would drop such a one.
	 * NULL: none must. */
	int (*keep)(const struct prov_version *v, size_t n, size_t i);
};

struct prov_ops {
	const char *type;             /* value of type = in [store NAME] */
	unsigned caps;                /* PROV_CAP_*: exactly the optional ops set below */
	enum prov_lease lease;
	/* Naming rules of the store's paths: the longest path, and whether names
	 * are flat ([0-9A-Za-z-] only, no '/'), as Azure Key Vault secret names. */
	size_t name_max;
	int flat_names;
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
	/* Optional: who the store saw this run authenticate as (an AppRole's
	 * role name, a token's display name), for audit records; never a
	 * secret.  "" when not known.  No network. */
	void (*identity)(struct store *st, char *out, size_t len);
	/* Optional, read-only: how many versions of this key the store keeps
	 * after this agent's next write (*limit; 0: all, as Azure Key Vault),
	 * how many it holds now (*count: every version, deleted ones too, as
	 * the store counts them), and where *limit comes from (how); the next
	 * write drops the oldest beyond *limit.  NULL: all kept. */
	int (*version_limit)(struct store *st, const struct secret_ref *ref,
	    long long *limit, size_t *count, char *how, size_t howlen, struct dmk_err *err);
};

extern const struct prov_ops *const providers[];
const struct prov_ops *prov_find(const char *type);

/* Markers (their meaning is the agent's: agent/markers.h). */
const char *prov_meta_get(const struct prov_meta *m, const char *key);
/* An empty value removes the marker (none is ever written empty); an empty
 * key is DMK_ERR_BADINPUT. */
int prov_meta_set(struct prov_meta *m, const char *key, const char *value);

/*
 * Open a store from its section: allocates priv, calls ops->open.
 * resolve/rctx let the store read its own bootstrap credentials
 * (st->resolve); tests may pass NULL.
 */
int store_open(struct store *st, const struct conf_store *conf,
    int (*resolve)(void *, const struct secret_ref *, struct secret **, struct dmk_err *),
    void *rctx, struct dmk_err *err);
void store_close(struct store *st);

/*
 * What the agent calls instead of ops->: each wrapper answers
 * DMK_ERR_UNSUPPORTED, naming the store, when the store lacks the
 * operation, so callers test one error code and never a NULL pointer.
 * Ownership as in struct prov_ops: *out secrets are the caller's to
 * secret_free(), *out version arrays the caller's to free().
 */
int store_get(struct store *st, const struct secret_ref *ref, const char *version,
    struct secret **out, struct prov_version *ver, struct dmk_err *err);
int store_put(struct store *st, const struct secret_ref *ref, const struct secret *value,
    const char *expect_version, const struct prov_meta *meta, struct prov_version *out,
    struct dmk_err *err);
int store_set_meta(struct store *st, const struct secret_ref *ref, const char *version,
    const struct prov_meta *meta, struct dmk_err *err);
int store_list_versions(struct store *st, const struct secret_ref *ref,
    struct prov_version **out, size_t *n, struct dmk_err *err);
int store_delete_version(struct store *st, const struct secret_ref *ref,
    const char *version, struct dmk_err *err);
int store_check(struct store *st, const struct secret_ref *const *refs, size_t nrefs,
    struct buf *report, struct dmk_err *err);
/* Who the store saw this run as (the login's role, the client id), never a
 * secret; "" when the store does not say or is not open. */
void store_identity(const struct store *st, char *out, size_t len);
/* How many versions of ref the store keeps after our next write (0: all),
 * how many it holds now, and why (how, may be NULL); 0/0 for a store
 * without the operation. */
int store_version_limit(struct store *st, const struct secret_ref *ref, long long *limit,
    size_t *count, char *how, size_t howlen, struct dmk_err *err);
/*
 * Version headroom: how many more writes to a key that keeps limit of its
 * n versions v (oldest first) are possible before the first version st->keep
 * wants kept is dropped; -1 when none ever is (limit 0, or nothing kept).
 * *first (may be NULL) gets that version's index, or -1.
 */
long long store_headroom(const struct store *st, const struct prov_version *v, size_t n,
    long long limit, long *first);
/* Before one write: 0, or DMK_ERR_TOOBIG naming ref, the version it would
 * drop and the limit (nothing written). */
int store_check_room(const struct store *st, const struct secret_ref *ref,
    const struct prov_version *v, size_t n, long long limit, struct dmk_err *err);
/* Whether the store has every capability in caps. */
int store_can(const struct store *st, unsigned caps);
/* The same, as an error naming the store and why the caller needs it. */
int store_require(const struct store *st, unsigned caps, const char *why,
    struct dmk_err *err);
/* The expect_version for a put that must not lose a concurrent write:
 * cur when the store can check and set, else NULL (no check). */
const char *store_cas(const struct store *st, const char *cur);

/* Is the table row consistent (caps match the ops it sets, naming rules
 * given)?  Checked for every row when a configuration is loaded. */
int prov_check_ops(const struct prov_ops *ops, struct dmk_err *err);
/* The longest path every registered store accepts (names meant to be valid
 * in any store, such as backup escrows'). */
size_t prov_min_name_max(void);
/* "hashicorp-vault, azure-key-vault": for messages. */
void prov_type_list(char *out, size_t n);

#endif
