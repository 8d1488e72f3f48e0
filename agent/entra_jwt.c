/* entra_jwt.c: Entra ID bearer tokens for hook serve (entra_jwt.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include "core/dmk.h"
#include "core/buf.h"
#include "providers/http.h"
#include "entra_jwt.h"

/* base64url without padding into out (malloc'd); -1 on bad input. */
static int
b64u_decode(const char *in, size_t n, unsigned char **out, size_t *outlen)
{
	unsigned char *o;
	size_t i, k = 0;
	unsigned int acc = 0;
	int bits = 0, v;

	if (n > 64 * 1024 || (o = malloc(n * 3 / 4 + 3)) == NULL)
		return -1;
	for (i = 0; i < n; i++) {
		char c = in[i];
		v = c >= 'A' && c <= 'Z' ? c - 'A' : c >= 'a' && c <= 'z' ? c - 'a' + 26 :
		    c >= '0' && c <= '9' ? c - '0' + 52 : c == '-' ? 62 : c == '_' ? 63 : -1;
		if (v < 0) {
			free(o);
			return -1;
		}
		acc = (acc << 6) | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			o[k++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	if (n % 4 == 1) {
		free(o);
		return -1;
	}
	*out = o;
	*outlen = k;
	return 0;
}

static void *
rsa_key(const char *n64, const char *e64)
{
	unsigned char *n = NULL, *e = NULL;
	size_t nl = 0, el = 0;
	BIGNUM *bn = NULL, *be = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pk = NULL;

	if (b64u_decode(n64, strlen(n64), &n, &nl) != 0 || b64u_decode(e64, strlen(e64), &e,
	    &el) != 0 || nl < 256 || nl > 1024)
		goto out;
	if ((bn = BN_bin2bn(n, (int)nl, NULL)) == NULL || (be = BN_bin2bn(e, (int)el, NULL)) == NULL ||
	    (bld = OSSL_PARAM_BLD_new()) == NULL ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) ||
	    (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
	    (ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)) == NULL ||
	    EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		pk = NULL;
out:
	free(n);
	free(e);
	BN_free(bn);
	BN_free(be);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	EVP_PKEY_CTX_free(ctx);
	return pk;
}

void
entra_free(struct entra_verifier *v)
{
	size_t i;

	for (i = 0; i < v->nkeys; i++)
		EVP_PKEY_free(v->keys[i].pkey);
	v->nkeys = 0;
}

int
entra_set_jwks(struct entra_verifier *v, const char *json, size_t len, struct dmk_err *err)
{
	json_t *root, *keys, *k;
	size_t i;

	if ((root = json_loadb(json, len, 0, NULL)) == NULL ||
	    !json_is_array(keys = json_object_get(root, "keys"))) {
		json_decref(root);
		return dmk_errf(err, DMK_ERR_PROTOCOL, "the tenant's signing keys are not a JWKS "
		    "document");
	}
	entra_free(v);
	json_array_foreach(keys, i, k) {
		const char *kty = json_string_value(json_object_get(k, "kty"));
		const char *kid = json_string_value(json_object_get(k, "kid"));
		const char *n = json_string_value(json_object_get(k, "n"));
		const char *e = json_string_value(json_object_get(k, "e"));
		void *pk;

		if (v->nkeys == ENTRA_MAX_KEYS || kty == NULL || strcmp(kty, "RSA") != 0 ||
		    kid == NULL || strlen(kid) >= sizeof(v->keys[0].kid) || n == NULL || e == NULL ||
		    (pk = rsa_key(n, e)) == NULL)
			continue;
		util_strlcpy(v->keys[v->nkeys].kid, kid, sizeof(v->keys[0].kid));
		v->keys[v->nkeys++].pkey = pk;
	}
	json_decref(root);
	return v->nkeys > 0 ? 0 : dmk_errf(err, DMK_ERR_PROTOCOL, "the tenant publishes no RSA "
	    "signing key");
}

int
entra_fetch_keys(struct entra_verifier *v, struct dmk_err *err)
{
	struct http_client c;
	struct http_tls tls;
	struct http_request req;
	struct http_response resp;
	char url[700];
	int r;

	memset(&tls, 0, sizeof(tls));
	util_strlcpy(tls.ca_file, v->ca_file, sizeof(tls.ca_file));
	snprintf(url, sizeof(url), "%s/%s/discovery/v2.0/keys", v->authority, v->tenant);
	memset(&req, 0, sizeof(req));
	req.method = "GET";
	req.url = url;
	http_response_init(&resp);
	v->fetched = time(NULL);
	if ((r = http_client_curl(&c, &tls, 10000, 20000, err)) != 0)
		return dmk_err_prefix(err, "the tenant's signing keys");
	if ((r = http_do(&c, &req, &resp, err)) != 0)
		dmk_err_prefix(err, "%s", url);
	else if (resp.status != 200)
		r = dmk_errf(err, DMK_ERR_PROTOCOL, "%s: HTTP %ld", url, resp.status);
	else
		r = entra_set_jwks(v, resp.body.data, resp.body.len, err);
	http_response_free(&resp);
	http_client_close(&c);
	return r;
}

static int
claim_str(json_t *c, const char *k, const char *want)
{
	const char *s = json_string_value(json_object_get(c, k));

	return s != NULL && strcasecmp(s, want) == 0;
}

int
entra_verify(struct entra_verifier *v, const char *tok, time_t now, struct dmk_err *err)
{
	const char *d1 = strchr(tok, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL, *alg, *kid;
	unsigned char *hb = NULL, *pb = NULL, *sig = NULL;
	size_t hl, pl, sl, i;
	json_t *hdr = NULL, *cl = NULL, *x;
	EVP_MD_CTX *md = NULL;
	void *pk = NULL;
	char iss1[200], iss2[700];
	int r = DMK_ERR_AUTH, refetched = 0;

	if (d1 == NULL || d2 == NULL || strchr(d2 + 1, '.') != NULL || strlen(tok) > 16384 ||
	    b64u_decode(tok, (size_t)(d1 - tok), &hb, &hl) != 0 ||
	    b64u_decode(d1 + 1, (size_t)(d2 - d1 - 1), &pb, &pl) != 0 ||
	    b64u_decode(d2 + 1, strlen(d2 + 1), &sig, &sl) != 0 ||
	    (hdr = json_loadb((char *)hb, hl, 0, NULL)) == NULL ||
	    (cl = json_loadb((char *)pb, pl, 0, NULL)) == NULL) {
		dmk_errf(err, r, "bearer token: malformed");
		goto out;
	}
	alg = json_string_value(json_object_get(hdr, "alg"));
	kid = json_string_value(json_object_get(hdr, "kid"));
	if (alg == NULL || strcmp(alg, "RS256") != 0 || kid == NULL) {
		dmk_errf(err, r, "bearer token: not RS256 with a key id");
		goto out;
	}
again:
	for (i = 0; i < v->nkeys && pk == NULL; i++)
		if (strcmp(v->keys[i].kid, kid) == 0)
			pk = v->keys[i].pkey;
	if (pk == NULL && !refetched && now - v->fetched >= 60) {
		struct dmk_err e2;
		refetched = 1;
		if (entra_fetch_keys(v, &e2) != 0)
			log_warn("hook: %s", e2.msg);
		goto again;
	}
	if (pk == NULL) {
		dmk_errf(err, r, "bearer token: signed by a key the tenant does not publish");
		goto out;
	}
	if ((md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pk) != 1 ||
	    EVP_DigestVerify(md, sig, sl, (const unsigned char *)tok, (size_t)(d2 - tok)) != 1) {
		dmk_errf(err, r, "bearer token: bad signature");
		goto out;
	}
	snprintf(iss1, sizeof(iss1), "https://sts.windows.net/%s/", v->tenant);
	snprintf(iss2, sizeof(iss2), "%s/%s/v2.0", v->authority, v->tenant);
	if (!claim_str(cl, "tid", v->tenant) ||
	    !(claim_str(cl, "iss", iss1) || claim_str(cl, "iss", iss2))) {
		dmk_errf(err, r, "bearer token: another tenant or issuer");
		goto out;
	}
	if (!claim_str(cl, "aud", v->audience)) {
		dmk_errf(err, r, "bearer token: for another audience");
		goto out;
	}
	x = json_object_get(cl, "exp");
	if (!json_is_integer(x) || json_integer_value(x) <= (json_int_t)now) {
		dmk_errf(err, r, "bearer token: expired");
		goto out;
	}
	x = json_object_get(cl, "nbf");
	if (x != NULL && (!json_is_integer(x) || json_integer_value(x) > (json_int_t)now + 300)) {
		dmk_errf(err, r, "bearer token: not valid yet");
		goto out;
	}
	r = 0;
out:
	EVP_MD_CTX_free(md);
	json_decref(hdr);
	json_decref(cl);
	free(hb);
	free(pb);
	free(sig);
	return r;
}
