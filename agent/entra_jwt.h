/*
 * entra_jwt.h: [hook] auth = entra: Entra ID bearer tokens on Event Grid
 * deliveries, checked against the tenant's published signing keys.
 *
 * A token passes when: three base64url parts; header alg RS256 with a kid
 * the tenant's JWKS ({authority_host}/{tenant}/discovery/v2.0/keys, over
 * HTTPS, verified; fetched at start and again, at most once a minute, when
 * a kid is unknown) holds; the RSA PKCS#1 v1.5 SHA-256 signature verifies;
 * tid is the tenant; iss is https://sts.windows.net/{tenant}/ (v1 tokens) or
 * {authority_host}/{tenant}/v2.0 (v2); aud is the audience; exp is in the
 * future and nbf not more than 5 minutes ahead.  The token is never logged.
 */
#ifndef DMK_ENTRA_JWT_H
#define DMK_ENTRA_JWT_H

#include <limits.h>
#include <time.h>

#include "core/dmk.h"

#define ENTRA_MAX_KEYS 16

struct entra_key {
	char kid[128];
	void *pkey;                    /* EVP_PKEY * */
};

struct entra_verifier {
	char authority[512];           /* https://login.microsoftonline.com */
	char tenant[64];
	char audience[512];
	char ca_file[PATH_MAX];        /* "" system store */
	struct entra_key keys[ENTRA_MAX_KEYS];
	size_t nkeys;
	time_t fetched;
};

/* Fetch the tenant's keys. */
int entra_fetch_keys(struct entra_verifier *v, struct dmk_err *err);
/* Check a bearer token (without "Bearer "); 0 when it passes, else why not. */
int entra_verify(struct entra_verifier *v, const char *token, time_t now, struct dmk_err *err);
/* Replace the key set from a JWKS document (pure; for the tests too). */
int entra_set_jwks(struct entra_verifier *v, const char *json, size_t len, struct dmk_err *err);
void entra_free(struct entra_verifier *v);

#endif
