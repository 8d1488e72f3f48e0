/*
 * conf.h: the generic shape of a configuration section, shared by the
 * agent's configuration model (agent/config.h) and the stores, which
 * declare their own keys (struct prov_ops.keys) and read their section.
 * Values are owned by the configuration; callers never free them.
 */
#ifndef DMK_CONF_H
#define DMK_CONF_H

#include "dmk.h"
#include "ref.h"

#define CONF_NAME_MAX 128        /* sysname: 128 characters */
#define CONF_NAME_BYTES (CONF_NAME_MAX * 4 + 1)  /* UTF-8 */
#define CONF_VALUE_MAX 1024

enum conf_kind {
	CK_STRING = 1, CK_REF, CK_INT, CK_DURATION, CK_BOOL, CK_HOSTPORT,
	CK_PATH, CK_URL, CK_ENUM,
};

struct conf_keydef {
	const char *name;
	enum conf_kind kind;
	int required;
	const char *choices;      /* CK_ENUM: "a|b|c" */
	long long min, max;       /* CK_INT bounds (both 0: none) */
};

struct conf_kv {
	char *key;
	char *value;              /* for CK_REF: the reference text */
	int line;
	enum conf_kind kind;
	struct secret_ref ref;    /* CK_REF */
};

struct prov_ops;

struct conf_store {
	char name[64];
	char type[64];
	const struct prov_ops *ops;
	struct conf_kv *kv;
	size_t nkv;
	int line;
};

const struct conf_kv *conf_store_kv(const struct conf_store *st, const char *key);
const char *conf_store_str(const struct conf_store *st, const char *key);

/* Does this key name carry a secret (…password, …secret, …secret_id, …token, …_key)? */
int conf_key_is_secret(const char *key);

#endif
