/*
 * hcvault_int.h: what the two files of the Vault store share (hcvault.c:
 * configuration, requests, KV v1/v2, markers, the operations; hcvault_auth.c:
 * the auth methods and the client token's lifecycle).  Private to providers/.
 */
#ifndef DMK_HCVAULT_INT_H
#define DMK_HCVAULT_INT_H

#include <jansson.h>

#include "core/dmk.h"
#include "core/buf.h"
#include "core/secret.h"
#include "provider.h"

#define HCV_DEFAULT_FIELD "password"
#define HCV_DEFAULT_MOUNT "secret"
#define HCV_K8S_TOKEN "/var/run/secrets/kubernetes.io/serviceaccount/token"
#define HCV_META_MAX_KEYS 64
#define HCV_URL_MAX 4096


enum hcv_auth { AUTH_TOKEN = 0, AUTH_APPROLE, AUTH_K8S, AUTH_JWT, AUTH_CERT };

struct hcv {
	char addr[1024];          /* no trailing slash */
	char ns[256];
	char mount[256];          /* as configured, no slashes around */
	enum hcv_auth auth;
	char auth_mount[256];
	struct http_tls tls;
	struct secret *client_key;
	struct secret *token;
	int token_owned;          /* from a login: renew, revoke at close */
	long long token_ttl_s;    /* TTL at the last lookup or renewal; 0: none */
	long long token_period_s; /* what a renewal should restore */
	long long token_t0_ms;    /* when token_ttl_s was measured */
	int token_renewable;
	int renewing;
	int kv_version;           /* 0: not detected yet */
	char kv_mount[256];       /* the mount path Vault reported, no slash */
	char kv_prefix[512];      /* part of the path inside the mount before the ref */
	int told_standby;         /* the standby redirect was reported */
	char who[256];            /* the login's role name or token display name (audit) */
	long long mount_maxv;     /* the mount's max_versions (its /config); 0: not read */
};

/* What a failure is about (hcv_vault_fail): reading data or logging in. */
enum { CTX_DATA = 0, CTX_LOGIN };

/* hcv_request flags. */
enum {
	REQ_TOKEN = 1 << 0,     /* send X-Vault-Token */
	REQ_NORETRY = 1 << 1,   /* single-use: never retry */
	REQ_NORENEW = 1 << 2,   /* do not consider renewal first */
};

/* hcvault_auth.c */
int hcv_auth_approle(struct store *st, struct dmk_err *err);
int hcv_auth_cert(struct store *st, struct dmk_err *err);
int hcv_auth_jwtlike(struct store *st, int k8s, struct dmk_err *err);
int hcv_auth_token(struct store *st, struct dmk_err *err);
int hcv_resolve_ref(struct store *st, const struct secret_ref *ref, const char *key,
    struct secret **out, struct dmk_err *err);
int hcv_token_lookup(struct store *st, struct dmk_err *err);
int hcv_maybe_renew(struct store *st, struct dmk_err *err);
/* hcvault.c */
int hcv_json_quote_str(struct buf *b, const char *s);
int hcv_json_quote(struct buf *b, const char *s, size_t n);
const char *hcv_envstr(const char *name);
long long hcv_json_num(json_t *v);
long long hcv_json_secs(json_t *v);
int hcv_kv_bool(const struct conf_store *c, const char *key);
const struct secret_ref *hcv_kv_ref(const struct conf_store *c, const char *key);
const char *hcv_kv_str(const struct conf_store *c, const char *key);
json_t *hcv_parse_body(const struct http_response *resp, const char *what, struct dmk_err *err);
int hcv_vault_fail(const struct http_response *resp, const char *what, int ctx, struct dmk_err *err);
int hcv_request(struct store *st, const char *method, const char *path,
    const struct buf *body, int flags, const struct secret *tok,
    struct http_response *resp, struct dmk_err *err);

#endif
