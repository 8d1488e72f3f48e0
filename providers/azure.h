/*
 * azure.h: what azkv.c (Key Vault secrets) and azure_auth.c (Entra ID
 * credentials) share.  Private to providers/; the unit tests and the fuzz
 * target include it to reach the parsers directly.
 *
 * Invariants:
 *  - A token lives only in struct az_cred.token (a struct secret); the
 *    Authorization header is built in a buf that is wiped when freed.
 *  - Nothing here formats a token, client secret, assertion or secret value
 *    into a dmk_err; error text taken from a server is dropped if it holds
 *    any secret we sent (az_scrub).
 *  - A cached token is used until AZ_REFRESH_MARGIN seconds before it
 *    expires, then fetched again (the Azure SDKs' five minutes).
 */
#ifndef DMK_AZURE_H
#define DMK_AZURE_H

#include <time.h>

#include "core/dmk.h"
#include "core/buf.h"
#include "provider.h"

struct secret;

#define AZ_REFRESH_MARGIN 300

/* Where Azure Arc's agent writes its challenge key files (MSAL-node). */
#define AZ_ARC_KEY_DIR "/var/opt/azcmagent/tokens"
#define AZ_ARC_KEY_MAX 4096
/* Test and unusual-host overrides, documented in dmkagent.conf(5). */
#define AZ_ENV_IMDS "DMKAGENT_IMDS_ENDPOINT"
#define AZ_ENV_ARC_DIR "DMKAGENT_ARC_KEY_DIR"
#define AZ_IMDS_DEFAULT "http://169.254.169.254"

enum az_auth {
	AZ_AUTH_SECRET = 1,
	AZ_AUTH_CERT,
	AZ_AUTH_WORKLOAD,
	AZ_AUTH_MI,
	AZ_AUTH_DEFAULT,
	AZ_AUTH_ENV,          /* only inside the default chain */
};

enum az_alg { AZ_ALG_PS256 = 0, AZ_ALG_RS256 };

/* A parsed `WWW-Authenticate: Bearer ...` challenge. */
struct az_challenge {
	char authority[512];  /* authorization= (or authorization_uri=) */
	char tenant[128];     /* the authority's first path segment */
	char resource[256];   /* resource=, or scope= without /.default */
	char scope[300];      /* scope=, or resource + "/.default" */
};

struct az_cred {
	enum az_auth auth;            /* as configured */
	enum az_auth used;            /* the default chain's winner, once known */
	char tenant[128];
	char client_id[128];
	char authority_host[512];     /* https://login..., no trailing slash */
	char scope[300];              /* https://vault.azure.net/.default */
	enum az_alg alg;
	char cert_path[1024];
	const struct secret_ref *client_secret_ref;
	const struct secret_ref *cert_key_ref;
	char fed_token_file[1024];
	char mi_client_id[128], mi_object_id[128], mi_res_id[512];
	struct store *st;             /* resolve and http */
	struct secret *client_secret; /* resolved once per run */
	struct secret *cert_key;
	struct secret *token;
	time_t token_expires;
	int token_requests;           /* for tests and debug logs */
};

/* Fill c from the store section and the AZURE_* environment; no network. */
int az_cred_init(struct az_cred *c, struct store *st, const char *scope,
    struct dmk_err *err);
void az_cred_free(struct az_cred *c);
/* A valid token (cached, or fetched when force or within the margin). */
int az_cred_token(struct az_cred *c, int force, const struct secret **out,
    struct dmk_err *err);
const char *az_auth_name(enum az_auth a);

/* Parsers, exposed for the unit tests and the fuzz target. */
int az_challenge_parse(const char *hdr, struct az_challenge *ch, struct dmk_err *err);
/* Token JSON (Entra or managed identity) -> token and absolute expiry. */
int az_token_parse(const char *body, size_t len, time_t now, struct secret **tok,
    time_t *expires, struct dmk_err *err);
/* Client assertion JWT for certificate credentials, into out (wiped buf). */
int az_jwt_assertion(const char *client_id, const char *aud, const char *cert_pem,
    size_t cert_len, const struct secret *key_pem, enum az_alg alg, time_t now,
    struct buf *out, struct dmk_err *err);
/* "scheme://host:port" in lower case, port explicit; -1 if not https. */
int az_url_origin(const char *url, char *out, size_t outlen);
/* The host of an https URL, lower case; -1 if malformed. */
int az_url_host(const char *url, char *out, size_t outlen);
/* Copy server text into dst for a message, dropping it if any secret occurs. */
void az_scrub(char *dst, size_t dlen, const char *text, const struct secret *const *s,
    size_t ns);

/* Wipe and free a string from json_dumps(), with Jansson's own free. */
void az_json_free(char *s);

#endif
