/*
 * azkv.c: Azure Key Vault secrets (data plane, api-version 7.5 by default)
 * with Entra ID credentials (azure_auth.c).
 *
 * Authentication follows the Azure SDKs' challenge flow: the first request
 * goes without a token and without a body; the vault answers 401 with
 * `WWW-Authenticate: Bearer authorization="<authority>/<tenant>",
 * resource="<resource>"` (or scope=).  The audience is never the server's
 * to choose: the vault host must be NAME.<suffix>, the Key Vault DNS suffix
 * of the configured cloud (vault.azure.net, vault.azure.cn,
 * vault.usgovcloudapi.net, or vault_dns_suffix), the challenge's resource
 * must be https://<suffix>, and the token is asked for that resource +
 * "/.default" whatever scope= the challenge names.  The tenant must be ours.
 * challenge_resource_verification = no (test vaults on 127.0.0.1 only)
 * drops the host check, never the resource check.  A later 401 with a
 * token refreshes it once.
 *
 * Versions: a version is Azure's 32-hex id; markers are the version's tags.
 * A secret that was soft-deleted is reported as DMK_ERR_DELETED, never
 * recreated behind the operator's back.
 *
 * Unit tests: open() keeps an HTTP client already in st->http (a replay
 * client) instead of creating a curl one; store_open() zeroes st, so only a
 * test that calls ops->open itself can do this.
 */
#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "provider.h"
#include "azure.h"

#define AZ_VALUE_MAX 25600        /* 25 KB, the service's limit */
#define AZ_TAGS_MAX 15
#define AZ_TAG_LEN_MAX 256
#define AZ_PAGES_MAX 1000
/* Key Vault lists versions in no documented order and `created` has one-second
 * resolution: every version written here carries its own order (nanoseconds,
 * 20 digits, increasing within the process), and the list is sorted by it. */
#define AZ_ORDER_TAG "dmkagent-order"

static const struct conf_keydef azkv_keys[] = {
	{ "vault_url", CK_URL, 1, NULL, 0, 0 },
	{ "tenant_id", CK_STRING, 0, NULL, 0, 0 },     /* default AZURE_TENANT_ID */
	{ "client_id", CK_STRING, 0, NULL, 0, 0 },     /* default AZURE_CLIENT_ID */
	{ "auth", CK_ENUM, 0,
	  "client-secret|client-certificate|workload-identity|managed-identity|default", 0, 0 },
	{ "client_secret", CK_REF, 0, NULL, 0, 0 },
	{ "client_certificate", CK_PATH, 0, NULL, 0, 0 },   /* PEM certificate */
	{ "client_certificate_key", CK_REF, 0, NULL, 0, 0 },/* file:... PEM key */
	{ "assertion_alg", CK_ENUM, 0, "PS256|RS256", 0, 0 },
	{ "authority_host", CK_URL, 0, NULL, 0, 0 },   /* default per cloud */
	{ "cloud", CK_ENUM, 0, "public|usgov|china", 0, 0 },
	{ "api_version", CK_STRING, 0, NULL, 0, 0 },   /* default 7.5 */
	{ "ca_file", CK_PATH, 0, NULL, 0, 0 },
	{ "managed_identity_client_id", CK_STRING, 0, NULL, 0, 0 },
	{ "managed_identity_object_id", CK_STRING, 0, NULL, 0, 0 },
	{ "managed_identity_resource_id", CK_STRING, 0, NULL, 0, 0 },
	{ "timeout", CK_DURATION, 0, NULL, 0, 0 },
	/* Added with the provider: */
	{ "challenge_resource_verification", CK_BOOL, 0, NULL, 0, 0 }, /* default yes */
	{ "federated_token_file", CK_PATH, 0, NULL, 0, 0 },  /* default AZURE_FEDERATED_TOKEN_FILE */
	{ "vault_dns_suffix", CK_STRING, 0, NULL, 0, 0 },    /* default per cloud */
	{ NULL, 0, 0, NULL, 0, 0 },
};

struct azkv {
	char vault[512];          /* https://host[:port], no trailing slash */
	char vault_host[256];
	char suffix[256];         /* Key Vault DNS suffix, lower case, no leading dot */
	char origin[300];         /* https://host:port, for nextLink checks */
	char api[32];
	int verify_resource;
	int challenged;           /* a challenge was seen and accepted */
	const struct secret *sending;  /* the value in flight, for az_scrub */
	struct az_cred cred;
	char tenant_id[64];       /* cred.tenant when it is a domain: its id, once resolved */
};

/* ---- names and URLs ---- */

static int
name_ok(const char *s)
{
	size_t n = strlen(s), i;

	if (n < 1 || n > 127)
		return 0;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-')
			return 0;
	return 1;
}

static int
version_ok(const char *s)
{
	size_t n = strlen(s), i;

	if (n < 1 || n > 64)
		return 0;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]))
			return 0;
	return 1;
}

static int
check_ref(const struct secret_ref *ref, const char *version, struct dmk_err *err)
{
	if (ref->field[0] != '\0')
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: an Azure Key Vault secret has one value; "
		    "drop '#%s' from the reference", ref->text, ref->field);
	if (!name_ok(ref->path))
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: '%s' is not an Azure Key Vault secret name "
		    "(1-127 of 0-9 a-z A-Z -)", ref->text, ref->path);
	if (version != NULL && !version_ok(version))
		return dmk_errf(err, DMK_ERR_BADINPUT, "%s: '%.80s' is not an Azure Key Vault version",
		    ref->text, version);
	return 0;
}

static int
secret_url(struct azkv *kv, struct buf *u, const char *prefix, const char *name,
    const char *version, const char *suffix)
{
	return buf_printf(u, "%s/%s/%s%s%s%s?api-version=%s", kv->vault, prefix, name,
	    version ? "/" : "", version ? version : "", suffix ? suffix : "", kv->api);
}

/* ---- the challenge and the authenticated call ---- */

/* The Key Vault DNS suffix of the store's cloud (or vault_dns_suffix). */
static const char *
kv_dns_suffix(const struct conf_store *cs)
{
	const char *v = conf_store_str(cs, "vault_dns_suffix"), *cloud;

	if (v != NULL)
		return v[0] == '.' ? v + 1 : v;
	cloud = conf_store_str(cs, "cloud");
	if (cloud != NULL && strcmp(cloud, "usgov") == 0)
		return "vault.usgovcloudapi.net";
	if (cloud != NULL && strcmp(cloud, "china") == 0)
		return "vault.azure.cn";
	return "vault.azure.net";
}

/* A DNS suffix of two or more labels of [a-z0-9-]. */
static int
suffix_ok(const char *s)
{
	size_t i, n = strlen(s), label = 0, dots = 0;

	if (n == 0 || n > 200)
		return 0;
	for (i = 0; i < n; i++) {
		if (s[i] == '.') {
			if (label == 0)
				return 0;
			label = 0;
			dots++;
		} else if (isalnum((unsigned char)s[i]) || s[i] == '-')
			label++;
		else
			return 0;
	}
	return label > 0 && dots > 0;
}

/* host is exactly one label (the vault's name) followed by "." suffix. */
static int
host_under_suffix(const char *host, const char *suffix)
{
	size_t hl = strlen(host), sl = strlen(suffix);

	if (hl <= sl + 1 || host[hl - sl - 1] != '.' ||
	    strcasecmp(host + hl - sl, suffix) != 0)
		return 0;
	return memchr(host, '.', hl - sl - 1) == NULL;
}

/*
 * A tenant configured as a domain (contoso.onmicrosoft.com) is compared by
 * its id: the issuer of the authority's OpenID configuration for it,
 * https://<authority>/<tenant id>/v2.0, fetched from the configured
 * authority (never from a host the challenge names).
 */
static int
resolve_tenant(struct store *st, struct azkv *kv, struct dmk_err *err)
{
	struct http_request req;
	struct http_response resp;
	struct buf url;
	json_t *j = NULL;
	const char *iss, *p;
	size_t n, i;
	int r;

	if (kv->tenant_id[0] != '\0')
		return 0;
	buf_init(&url, 0);
	http_response_init(&resp);
	if (buf_printf(&url, "%s/%s/v2.0/.well-known/openid-configuration",
	    kv->cred.authority_host, kv->cred.tenant) != 0) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	memset(&req, 0, sizeof(req));
	req.method = "GET";
	req.url = url.data;
	http_req_header(&req, "Accept: application/json");
	if ((r = http_do(&st->http, &req, &resp, err)) != 0) {
		dmk_err_prefix(err, "tenant_id %s: the OpenID configuration", kv->cred.tenant);
		goto out;
	}
	if (resp.status != 200) {
		r = dmk_errf(err, DMK_ERR_AUTH, "tenant_id %s: %s answers HTTP %ld for its OpenID "
		    "configuration: not a tenant there (set tenant_id to the tenant's id)",
		    kv->cred.tenant, kv->cred.authority_host, resp.status);
		goto out;
	}
	j = json_loadb(resp.body.data, resp.body.len, 0, NULL);
	iss = json_string_value(json_object_get(j, "issuer"));
	/* https://host/<id>/v2.0: the first path segment, a GUID's characters */
	p = iss != NULL && strncmp(iss, "https://", 8) == 0 ? strchr(iss + 8, '/') : NULL;
	n = p != NULL ? strcspn(p + 1, "/") : 0;
	for (i = 0; p != NULL && i < n; i++)
		if (!isxdigit((unsigned char)p[1 + i]) && p[1 + i] != '-')
			break;
	if (p == NULL || n == 0 || i != n || n >= sizeof(kv->tenant_id)) {
		r = dmk_errf(err, DMK_ERR_PROTOCOL, "tenant_id %s: the OpenID configuration's issuer "
		    "names no tenant id", kv->cred.tenant);
		goto out;
	}
	memcpy(kv->tenant_id, p + 1, n);
	kv->tenant_id[n] = '\0';
	r = 0;
out:
	json_decref(j);
	http_response_free(&resp);
	buf_free(&url);
	return r;
}

static int
accept_challenge(struct store *st, struct azkv *kv, const char *hdr, struct dmk_err *err)
{
	struct az_challenge ch;
	char rhost[256];
	const char *path;
	int r;

	if ((r = az_challenge_parse(hdr, &ch, err)) != 0)
		return r;
	/*
	 * The resource must be the cloud's Key Vault resource, https://SUFFIX
	 * with no path; the token's scope was fixed at open from that same
	 * resource, so the challenge's scope= is read and ignored.
	 */
	path = strncasecmp(ch.resource, "https://", 8) == 0 ?
	    ch.resource + 8 + strcspn(ch.resource + 8, "/?#") : "";
	if (az_url_host(ch.resource, rhost, sizeof(rhost)) != 0 ||
	    strcmp(rhost, kv->suffix) != 0 || strchr(ch.resource + 8, ':') != NULL ||
	    (path[0] != '\0' && strcmp(path, "/") != 0))
		return dmk_errf(err, DMK_ERR_AUTH, "the vault %s challenges for resource "
		    "'%.200s', not https://%s (the Key Vault resource of the store's cloud); "
		    "refused", kv->vault, ch.resource, kv->suffix);
	if (kv->cred.tenant[0] != '\0' && strcasecmp(kv->cred.tenant, ch.tenant) != 0) {
		if (strchr(kv->cred.tenant, '.') != NULL &&
		    (r = resolve_tenant(st, kv, err)) != 0)
			return r;
		if (kv->tenant_id[0] == '\0' || strcasecmp(kv->tenant_id, ch.tenant) != 0)
			return dmk_errf(err, DMK_ERR_AUTH, "the vault belongs to tenant %s, but the "
			    "store is configured for tenant %s%s%s%s", ch.tenant, kv->cred.tenant,
			    kv->tenant_id[0] ? " (id " : "", kv->tenant_id,
			    kv->tenant_id[0] ? ")" : "");
	}
	kv->challenged = 1;
	return 0;
}

/*
 * One Key Vault call.  0 when an answer arrived other than a 401 (the
 * caller reads resp->status); 401s are handled here.
 */
static int
kv_send(struct store *st, const char *method, const char *url, const char *body,
    size_t blen, struct http_response *resp, struct dmk_err *err)
{
	struct azkv *kv = st->priv;
	int attempt, r = 0, sent_token, forced = 0;

	for (attempt = 0; attempt < 3; attempt++) {
		struct http_request req;
		const struct secret *tok = NULL;
		struct buf auth;

		memset(&req, 0, sizeof(req));
		buf_init_locked(&auth, 64 * 1024);
		req.method = method;
		req.url = url;
		sent_token = 0;
		if (kv->challenged) {
			if ((r = az_cred_token(&kv->cred, forced, &tok, err)) != 0) {
				buf_free(&auth);
				return r;
			}
			if (buf_puts(&auth, "Authorization: Bearer ") != 0 ||
			    buf_append(&auth, secret_reveal(tok), secret_len(tok)) != 0) {
				buf_free(&auth);
				return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
			}
			http_req_header(&req, auth.data);
			sent_token = 1;
			/* As the SDKs do, the body goes only with a token. */
			req.body = body;
			req.body_len = blen;
			if (body != NULL)
				http_req_header(&req, "Content-Type: application/json");
		}
		http_req_header(&req, "Accept: application/json");
		r = http_do(&st->http, &req, resp, err);
		buf_free(&auth);
		if (r != 0)
			return r;
		if (resp->status != 401) {
			/* Throttling and outages come before authentication too. */
			if (!sent_token && resp->status != 429 && resp->status < 500)
				return dmk_errf(err, DMK_ERR_PROTOCOL, "%s %s: the vault answered HTTP "
				    "%ld to a request without a token, not a 401 challenge", method,
				    url, resp->status);
			return 0;
		}
		if (resp->www_authenticate[0] == '\0' && sent_token)
			break;
		if ((r = accept_challenge(st, kv, resp->www_authenticate, err)) != 0)
			return r;
		if (sent_token) {
			if (forced)
				break;
			forced = 1;   /* expired or revoked early: one fresh token */
		}
	}
	return 0;   /* a 401 that stands: the caller's error mapping reports it */
}

/* Map a Key Vault error answer to one message and a code. */
static int
kv_fail(struct store *st, const char *what, const char *name,
    const struct http_response *resp, struct dmk_err *err)
{
	struct azkv *kv = st->priv;
	const struct secret *sec[4] = { kv->cred.token, kv->cred.client_secret, kv->cred.cert_key,
		kv->sending };
	char code[80] = "", inner[80] = "", msg[400] = "";
	json_t *j, *e, *v;
	int ec;

	if ((j = json_loadb(resp->body.data ? resp->body.data : "", resp->body.len, 0, NULL))) {
		/* (json_is_* evaluate their argument twice: no assignments inside.) */
		e = json_object_get(j, "error");
		if (json_is_object(e)) {
			v = json_object_get(e, "code");
			if (json_is_string(v))
				az_scrub(code, sizeof(code), json_string_value(v), sec, 4);
			v = json_object_get(e, "message");
			if (json_is_string(v))
				az_scrub(msg, sizeof(msg), json_string_value(v), sec, 4);
			v = json_object_get(json_object_get(e, "innererror"), "code");
			if (json_is_string(v))
				az_scrub(inner, sizeof(inner), json_string_value(v), sec, 4);
		}
		json_decref(j);
	}
	switch (resp->status) {
	case 400: ec = DMK_ERR_BADINPUT; break;
	case 401: ec = DMK_ERR_AUTH; break;
	case 403: ec = DMK_ERR_DENIED; break;
	case 404: ec = DMK_ERR_NOTFOUND; break;
	case 409:
		ec = strcmp(inner, "ObjectIsDeletedButRecoverable") == 0 ||
		    strcmp(inner, "ObjectIsBeingDeleted") == 0 ? DMK_ERR_DELETED : DMK_ERR_CONFLICT;
		break;
	case 413: ec = DMK_ERR_TOOBIG; break;
	case 429: ec = DMK_ERR_UNREACHABLE; break;
	default: ec = resp->status >= 500 ? DMK_ERR_UNREACHABLE : DMK_ERR_PROTOCOL; break;
	}
	dmk_errf(err, ec, "%s %s: HTTP %ld%s%s%s%s%s%s%s%s", what, name, resp->status,
	    resp->status == 429 ? " (throttled)" : "",
	    (resp->status == 429 || resp->status >= 500) && resp->attempts > 1 ?
	    " after retries" : "", code[0] ? " " : "", code, inner[0] ? "/" : "", inner,
	    msg[0] ? ": " : "", msg);
	if (ec == DMK_ERR_DELETED)
		dmk_err_prefix(err, "secret %s is deleted but recoverable; recover or purge it in "
		    "the vault before writing (dmkagent does not recreate deleted secrets)", name);
	return ec;
}

/* A 404 on a secret: is it deleted (soft-delete) or absent? */
static int
not_found(struct store *st, const char *name, const struct http_response *orig,
    struct prov_version *ver, struct dmk_err *err)
{
	struct azkv *kv = st->priv;
	struct http_response resp;
	struct buf url;
	struct dmk_err e;
	int r;

	buf_init(&url, 0);
	http_response_init(&resp);
	if (secret_url(kv, &url, "deletedsecrets", name, NULL, NULL) != 0) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (kv_send(st, "GET", url.data, NULL, 0, &resp, &e) == 0 && resp.status == 200) {
		if (ver != NULL)
			ver->deleted = 1;
		r = dmk_errf(err, DMK_ERR_DELETED, "secret %s is deleted (soft-delete); recover "
		    "or purge it in the vault, dmkagent will not recreate it", name);
		goto out;
	}
	r = kv_fail(st, "secret", name, orig, err);
out:
	http_response_free(&resp);
	buf_free(&url);
	return r;
}

/* ---- bundles ---- */

static void
parse_item(json_t *o, struct prov_version *v)
{
	json_t *a, *t, *x;
	const char *id, *k, *slash;

	memset(v, 0, sizeof(*v));
	x = json_object_get(o, "id");
	if (json_is_string(x)) {
		id = json_string_value(x);
		slash = strrchr(id, '/');
		util_strlcpy(v->id, slash ? slash + 1 : id, sizeof(v->id));
	}
	a = json_object_get(o, "attributes");
	if (json_is_object(a)) {
		if (json_is_false(json_object_get(a, "enabled")))
			v->disabled = 1;
		x = json_object_get(a, "created");
		if (json_is_integer(x))
			v->created = (time_t)json_integer_value(x);
	}
	t = json_object_get(o, "tags");
	if (json_is_object(t))
		json_object_foreach(t, k, x)
			if (json_is_string(x))
				prov_meta_set(&v->meta, k, json_string_value(x));
}

static int
tags_json(const struct prov_meta *m, json_t **out, struct dmk_err *err)
{
	json_t *t = json_object();
	size_t i;

	*out = NULL;
	if (t == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	if (m != NULL && m->n > AZ_TAGS_MAX) {
		json_decref(t);
		return dmk_errf(err, DMK_ERR_TOOBIG, "Azure Key Vault allows %d tags per version, "
		    "not %zu", AZ_TAGS_MAX, m->n);
	}
	for (i = 0; m != NULL && i < m->n; i++) {
		if (strlen(m->kv[i].key) > AZ_TAG_LEN_MAX || strlen(m->kv[i].value) > AZ_TAG_LEN_MAX) {
			json_decref(t);
			return dmk_errf(err, DMK_ERR_TOOBIG, "tag %.64s: Azure Key Vault allows %d "
			    "characters per tag name and value", m->kv[i].key, AZ_TAG_LEN_MAX);
		}
		json_object_set_new(t, m->kv[i].key, json_string(m->kv[i].value));
	}
	*out = t;
	return 0;
}

/* Serialise j into b (wiped when freed); the jansson copy is wiped too. */
static int
json_to_buf(json_t *j, struct buf *b, struct dmk_err *err)
{
	char *s = json_dumps(j, JSON_COMPACT);
	int r = 0;

	if (s == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	if (buf_puts(b, s) != 0)
		r = dmk_errf(err, DMK_ERR_TOOBIG, "request body too large");
	az_json_free(s);
	return r;
}

/* ---- operations ---- */

/* GET a secret (version NULL: current); value optional. */
static int
get_bundle(struct store *st, const char *name, const char *version, struct secret **out,
    struct prov_version *ver, struct dmk_err *err)
{
	struct azkv *kv = st->priv;
	struct http_response resp;
	struct prov_version tmp;
	struct buf url;
	json_t *j = NULL, *v;
	int r;

	if (out != NULL)
		*out = NULL;
	if (ver == NULL)
		ver = &tmp;
	memset(ver, 0, sizeof(*ver));
	buf_init(&url, 0);
	http_response_init(&resp);
	if (secret_url(kv, &url, "secrets", name, version, NULL) != 0) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = kv_send(st, "GET", url.data, NULL, 0, &resp, err)) != 0)
		goto out;
	if (resp.status == 404) {
		r = not_found(st, name, &resp, ver, err);
		goto out;
	}
	if (resp.status != 200) {
		r = kv_fail(st, "get secret", name, &resp, err);
		goto out;
	}
	if ((j = json_loadb(resp.body.data, resp.body.len, 0, NULL)) == NULL || !json_is_object(j)) {
		r = dmk_errf(err, DMK_ERR_PROTOCOL, "get secret %s: the answer is not a JSON object",
		    name);
		goto out;
	}
	parse_item(j, ver);
	if (!version_ok(ver->id)) {
		r = dmk_errf(err, DMK_ERR_PROTOCOL, "get secret %s: the answer has no usable id", name);
		goto out;
	}
	if (out != NULL) {
		v = json_object_get(j, "value");
		if (!json_is_string(v)) {
			r = dmk_errf(err, DMK_ERR_PROTOCOL, "get secret %s: the answer has no value",
			    name);
			goto out;
		}
		if ((*out = secret_from(json_string_value(v), json_string_length(v))) == NULL)
			r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	}
out:
	json_decref(j);
	http_response_free(&resp);
	buf_free(&url);
	return r;
}

static int
azkv_get(struct store *st, const struct secret_ref *ref, const char *version,
    struct secret **out, struct prov_version *ver, struct dmk_err *err)
{
	int r;

	*out = NULL;
	if (ver != NULL)
		memset(ver, 0, sizeof(*ver));
	if ((r = check_ref(ref, version, err)) != 0)
		return r;
	return get_bundle(st, ref->path, version, out, ver, err);
}

/* meta plus this write's AZ_ORDER_TAG. */
static int
order_tag(const struct prov_meta *meta, struct prov_meta *out, struct dmk_err *err)
{
	static atomic_ullong last;
	unsigned long long now, prev;
	struct timespec ts;
	char v[24];

	if (meta != NULL)
		*out = *meta;
	else
		memset(out, 0, sizeof(*out));
	clock_gettime(CLOCK_REALTIME, &ts);
	now = (unsigned long long)ts.tv_sec * 1000000000ULL + (unsigned long long)ts.tv_nsec;
	prev = atomic_load(&last);
	do {
		if (now <= prev)
			now = prev + 1;
	} while (!atomic_compare_exchange_weak(&last, &prev, now));
	snprintf(v, sizeof(v), "%020llu", now);
	if (prov_meta_set(out, AZ_ORDER_TAG, v) != 0)
		return dmk_errf(err, DMK_ERR_TOOBIG, "too many markers for Azure Key Vault's %d tags",
		    AZ_TAGS_MAX);
	return 0;
}

static int
write_version(struct store *st, const char *name, const struct secret *value,
    const struct prov_meta *meta, struct prov_version *out, struct dmk_err *err)
{
	struct azkv *kv = st->priv;
	struct http_response resp;
	struct buf url, body;
	struct prov_meta ordered;
	json_t *j = NULL, *tags = NULL, *val;
	int r;

	buf_init(&url, 0);
	buf_init_locked(&body, 256 * 1024);
	http_response_init(&resp);
	if ((r = order_tag(meta, &ordered, err)) != 0 || (r = tags_json(&ordered, &tags, err)) != 0)
		goto out;
	if ((val = json_stringn(secret_reveal(value), secret_len(value))) == NULL) {
		r = dmk_errf(err, DMK_ERR_BADINPUT, "the value is not valid UTF-8 text");
		goto out;
	}
	j = json_pack("{s:o,s:o,s:{s:b}}", "value", val, "tags", tags, "attributes",
	    "enabled", 1);
	tags = NULL;   /* owned by j now (or freed by json_pack on failure) */
	if (j == NULL) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = json_to_buf(j, &body, err)) != 0 ||
	    secret_url(kv, &url, "secrets", name, NULL, NULL) != 0) {
		if (r == 0)
			r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	kv->sending = value;
	r = kv_send(st, "PUT", url.data, body.data, body.len, &resp, err);
	if (r == 0 && resp.status != 200)
		r = kv_fail(st, "set secret", name, &resp, err);
	kv->sending = NULL;
	if (r != 0)
		goto out;
	json_decref(j);
	if ((j = json_loadb(resp.body.data, resp.body.len, 0, NULL)) == NULL) {
		r = dmk_errf(err, DMK_ERR_PROTOCOL, "set secret %s: the answer is not JSON", name);
		goto out;
	}
	parse_item(j, out);
	if (!version_ok(out->id))
		r = dmk_errf(err, DMK_ERR_PROTOCOL, "set secret %s: the answer has no usable id", name);
out:
	json_decref(tags);
	json_decref(j);
	http_response_free(&resp);
	buf_free(&body);
	buf_free(&url);
	return r;
}

/*
 * Key Vault's set has no check-and-set, so expect_version is honoured by
 * read-compare-write-reread: read the current version; if it is not the
 * expected one (or exists when "0" asked for create-only) -> CONFLICT;
 * write; read again and require that the current version is the one we
 * wrote, else someone wrote in between -> CONFLICT (our version stays, as
 * a non-current version, and the caller sees the race).  This narrows the
 * window but cannot close it; what makes it safe is the agent's lease in
 * the state directory, which keeps two dmkagent runs from rotating the
 * same key at once (see agent/lock.c).  Hence no PROV_CAP_CAS.
 */
static int
azkv_put(struct store *st, const struct secret_ref *ref, const struct secret *value,
    const char *expect_version, const struct prov_meta *meta, struct prov_version *out,
    struct dmk_err *err)
{
	struct prov_version cur;
	int r;

	memset(out, 0, sizeof(*out));
	if ((r = check_ref(ref, NULL, err)) != 0)
		return r;
	if (secret_len(value) > AZ_VALUE_MAX)
		return dmk_errf(err, DMK_ERR_TOOBIG, "%s: Azure Key Vault takes values up to %d "
		    "bytes, this one has %zu", ref->text, AZ_VALUE_MAX, secret_len(value));
	if (expect_version != NULL) {
		r = get_bundle(st, ref->path, NULL, NULL, &cur, err);
		if (r == DMK_ERR_NOTFOUND) {
			if (strcmp(expect_version, "0") != 0)
				return dmk_errf(err, DMK_ERR_CONFLICT, "%s: expected version %s to be "
				    "current, but the secret does not exist", ref->text, expect_version);
		} else if (r != 0)
			return r;
		else if (strcmp(expect_version, "0") == 0)
			return dmk_errf(err, DMK_ERR_CONFLICT, "%s exists (current version %s)",
			    ref->text, cur.id);
		else if (strcasecmp(expect_version, cur.id) != 0)
			return dmk_errf(err, DMK_ERR_CONFLICT, "%s: expected version %s to be current, "
			    "found %s", ref->text, expect_version, cur.id);
	}
	if ((r = write_version(st, ref->path, value, meta, out, err)) != 0)
		return r;
	if (expect_version != NULL) {
		if ((r = get_bundle(st, ref->path, NULL, NULL, &cur, err)) != 0)
			return dmk_err_prefix(err, "%s: wrote version %s, re-reading", ref->text,
			    out->id);
		if (strcasecmp(cur.id, out->id) != 0)
			return dmk_errf(err, DMK_ERR_CONFLICT, "%s: wrote version %s, but %s is current "
			    "now: another writer raced this one", ref->text, out->id, cur.id);
	}
	return 0;
}

static int
azkv_set_meta(struct store *st, const struct secret_ref *ref, const char *version,
    const struct prov_meta *meta, struct dmk_err *err)
{
	struct azkv *kv = st->priv;
	struct prov_version cur;
	struct http_response resp;
	struct buf url, body;
	json_t *j = NULL, *tags = NULL;
	size_t i;
	int r;

	if ((r = check_ref(ref, version, err)) != 0)
		return r;
	buf_init(&url, 0);
	buf_init_locked(&body, 0);
	http_response_init(&resp);
	/* PATCH replaces the whole tag set: merge with what the version has. */
	if ((r = get_bundle(st, ref->path, version, NULL, &cur, err)) != 0)
		goto out;
	for (i = 0; meta != NULL && i < meta->n; i++)
		if ((r = prov_meta_set(&cur.meta, meta->kv[i].key, meta->kv[i].value)) != 0) {
			r = dmk_errf(err, r, "%s: too many markers", ref->text);
			goto out;
		}
	if ((r = tags_json(&cur.meta, &tags, err)) != 0)
		goto out;
	if ((j = json_pack("{s:o}", "tags", tags)) == NULL) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = json_to_buf(j, &body, err)) != 0)
		goto out;
	if (secret_url(kv, &url, "secrets", ref->path, cur.id, NULL) != 0) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = kv_send(st, "PATCH", url.data, body.data, body.len, &resp, err)) != 0)
		goto out;
	if (resp.status == 404)
		r = not_found(st, ref->path, &resp, NULL, err);
	else if (resp.status != 200)
		r = kv_fail(st, "update secret", ref->path, &resp, err);
out:
	json_decref(j);
	http_response_free(&resp);
	buf_free(&body);
	buf_free(&url);
	return r;
}

static int
cmp_created(const void *a, const void *b)
{
	const struct prov_version *x = a, *y = b;
	const char *ox = prov_meta_get(&x->meta, AZ_ORDER_TAG);
	const char *oy = prov_meta_get(&y->meta, AZ_ORDER_TAG);
	int c;

	/* both written here: our own order (same-length digit strings) */
	if (ox != NULL && oy != NULL && strlen(ox) == 20 && strlen(oy) == 20 &&
	    strspn(ox, "0123456789") == 20 && strspn(oy, "0123456789") == 20 &&
	    (c = strcmp(ox, oy)) != 0)
		return c < 0 ? -1 : 1;
	if (x->created != y->created)
		return x->created < y->created ? -1 : 1;
	return x->num < y->num ? -1 : x->num > y->num;  /* num: the order the vault gave */
}

static int
azkv_list(struct store *st, const struct secret_ref *ref, struct prov_version **out,
    size_t *n, struct dmk_err *err)
{
	struct azkv *kv = st->priv;
	struct http_response resp;
	struct prov_version *v = NULL, *t;
	struct buf url;
	json_t *j = NULL, *arr, *it, *nl;
	size_t cnt = 0, cap = 0, i;
	char origin[300];
	int r = 0, pages;

	*out = NULL;
	*n = 0;
	if ((r = check_ref(ref, NULL, err)) != 0)
		return r;
	buf_init(&url, 0);
	http_response_init(&resp);
	if (secret_url(kv, &url, "secrets", ref->path, NULL, "/versions") != 0 ||
	    buf_puts(&url, "&maxresults=25") != 0) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (pages = 0; ; pages++) {
		if (pages == AZ_PAGES_MAX) {
			r = dmk_errf(err, DMK_ERR_TOOBIG, "list versions of %s: more than %d pages",
			    ref->path, AZ_PAGES_MAX);
			goto out;
		}
		if ((r = kv_send(st, "GET", url.data, NULL, 0, &resp, err)) != 0)
			goto out;
		if (resp.status == 404) {
			r = not_found(st, ref->path, &resp, NULL, err);
			goto out;
		}
		if (resp.status != 200) {
			r = kv_fail(st, "list versions of", ref->path, &resp, err);
			goto out;
		}
		json_decref(j);
		j = json_loadb(resp.body.data, resp.body.len, 0, NULL);
		arr = json_object_get(j, "value");
		if (!json_is_array(arr)) {
			r = dmk_errf(err, DMK_ERR_PROTOCOL, "list versions of %s: the answer has no "
			    "value array", ref->path);
			goto out;
		}
		json_array_foreach(arr, i, it) {
			if (!json_is_object(it))
				continue;
			if (cnt == cap) {
				cap = cap ? cap * 2 : 32;
				if ((t = realloc(v, cap * sizeof(*v))) == NULL) {
					r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
					goto out;
				}
				v = t;
			}
			parse_item(it, &v[cnt]);
			v[cnt].num = (long long)cnt;
			if (version_ok(v[cnt].id))
				cnt++;
		}
		nl = json_object_get(j, "nextLink");
		if (!json_is_string(nl) || json_string_length(nl) == 0)
			break;
		/* Follow only links back to the same vault: a token must not leak. */
		if (az_url_origin(json_string_value(nl), origin, sizeof(origin)) != 0 ||
		    strcmp(origin, kv->origin) != 0) {
			r = dmk_errf(err, DMK_ERR_PROTOCOL, "list versions of %s: nextLink %.200s "
			    "points away from the vault %s; refused", ref->path,
			    json_string_value(nl), kv->origin);
			goto out;
		}
		buf_reset(&url);
		if (buf_puts(&url, json_string_value(nl)) != 0) {
			r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
			goto out;
		}
	}
	if (cnt == 0) {
		/* Azure answers an empty list for an absent secret. */
		resp.status = 404;
		buf_reset(&resp.body);
		r = not_found(st, ref->path, &resp, NULL, err);
		goto out;
	}
	qsort(v, cnt, sizeof(*v), cmp_created);
	for (i = 0; i < cnt; i++)
		v[i].num = 0;
	*out = v;
	*n = cnt;
	v = NULL;
out:
	free(v);
	json_decref(j);
	http_response_free(&resp);
	buf_free(&url);
	return r;
}

static int
azkv_check(struct store *st, const struct secret_ref *const *refs, size_t nrefs,
    struct buf *report, struct dmk_err *err)
{
	struct prov_version ver;
	struct dmk_err e;
	size_t i;
	int r, worst = 0;

	for (i = 0; i < nrefs; i++) {
		dmk_err_clear(&e);
		if ((r = check_ref(refs[i], NULL, &e)) == 0)
			r = get_bundle(st, refs[i]->path, NULL, NULL, &ver, &e);
		if (r == 0)
			buf_printf(report, "             %s: ok, current version %s%s\n", refs[i]->text,
			    ver.id, ver.disabled ? " (disabled)" : "");
		else if (r == DMK_ERR_NOTFOUND)
			buf_printf(report, "             %s: not there yet (store put creates it)\n",
			    refs[i]->text);
		else {
			buf_printf(report, "             %s: FAIL %s\n", refs[i]->text, e.msg);
			if (worst == 0) {
				worst = r;
				*err = e;
			}
		}
	}
	return worst;
}

/* ---- configuration ---- */

static int
conf_yes(const struct conf_store *cs, const char *key, int dflt)
{
	const char *v = conf_store_str(cs, key);

	if (v == NULL)
		return dflt;
	return strcmp(v, "yes") == 0 || strcmp(v, "true") == 0;
}

static int
azkv_validate(const struct conf_store *cs, struct dmk_err *err)
{
	const char *v, *auth = conf_store_str(cs, "auth");
	char host[256];

	v = conf_store_str(cs, "vault_url");
	if (v == NULL || az_url_host(v, host, sizeof(host)) != 0)
		return dmk_errf(err, DMK_ERR_CONFIG, "vault_url must be https://HOST[:PORT]");
	v += 8;
	v += strcspn(v, "/?#");
	while (*v == '/')
		v++;
	if (*v != '\0')
		return dmk_errf(err, DMK_ERR_CONFIG, "vault_url must be the vault's address with no "
		    "path, such as https://myvault.vault.azure.net");
	if (!suffix_ok(kv_dns_suffix(cs)))
		return dmk_errf(err, DMK_ERR_CONFIG, "vault_dns_suffix '%.80s' is not a DNS suffix "
		    "such as vault.azure.net", kv_dns_suffix(cs));
	if (conf_yes(cs, "challenge_resource_verification", 1) &&
	    !host_under_suffix(host, kv_dns_suffix(cs)))
		return dmk_errf(err, DMK_ERR_CONFIG, "vault_url host %s is not a vault under "
		    "%s, the Key Vault DNS suffix of the store's cloud (NAME.%s; set cloud or "
		    "vault_dns_suffix for another cloud)", host, kv_dns_suffix(cs),
		    kv_dns_suffix(cs));
	if ((v = conf_store_str(cs, "api_version")) != NULL) {
		size_t i, n = strlen(v);
		for (i = 0; i < n; i++)
			if (!isalnum((unsigned char)v[i]) && v[i] != '.' && v[i] != '-')
				break;
		if (n == 0 || n > 24 || i != n || !isdigit((unsigned char)v[0]))
			return dmk_errf(err, DMK_ERR_CONFIG, "api_version '%.40s' is not a Key Vault "
			    "API version such as 7.5", v);
	}
	if (auth == NULL)
		return 0;   /* default chain: checked at open, from the environment */
	if (strcmp(auth, "client-secret") == 0) {
		if (conf_store_kv(cs, "client_secret") == NULL)
			return dmk_errf(err, DMK_ERR_CONFIG, "auth = client-secret needs "
			    "client_secret (a reference)");
		if (conf_store_str(cs, "tenant_id") == NULL && getenv("AZURE_TENANT_ID") == NULL)
			return dmk_errf(err, DMK_ERR_CONFIG, "auth = client-secret needs tenant_id "
			    "(or AZURE_TENANT_ID)");
		if (conf_store_str(cs, "client_id") == NULL && getenv("AZURE_CLIENT_ID") == NULL)
			return dmk_errf(err, DMK_ERR_CONFIG, "auth = client-secret needs client_id "
			    "(or AZURE_CLIENT_ID)");
	} else if (strcmp(auth, "client-certificate") == 0) {
		if (conf_store_str(cs, "client_certificate") == NULL)
			return dmk_errf(err, DMK_ERR_CONFIG, "auth = client-certificate needs "
			    "client_certificate (a PEM file)");
		if (conf_store_kv(cs, "client_certificate_key") == NULL)
			return dmk_errf(err, DMK_ERR_CONFIG, "auth = client-certificate needs "
			    "client_certificate_key (a reference to the PEM key)");
		if (conf_store_str(cs, "tenant_id") == NULL && getenv("AZURE_TENANT_ID") == NULL)
			return dmk_errf(err, DMK_ERR_CONFIG, "auth = client-certificate needs "
			    "tenant_id (or AZURE_TENANT_ID)");
		if (conf_store_str(cs, "client_id") == NULL && getenv("AZURE_CLIENT_ID") == NULL)
			return dmk_errf(err, DMK_ERR_CONFIG, "auth = client-certificate needs "
			    "client_id (or AZURE_CLIENT_ID)");
	} else if (strcmp(auth, "managed-identity") == 0) {
		int ids = (conf_store_str(cs, "managed_identity_client_id") != NULL) +
		    (conf_store_str(cs, "managed_identity_object_id") != NULL) +
		    (conf_store_str(cs, "managed_identity_resource_id") != NULL);
		if (ids > 1)
			return dmk_errf(err, DMK_ERR_CONFIG, "managed_identity_client_id, "
			    "managed_identity_object_id and managed_identity_resource_id: "
			    "give at most one");
	}
	if (strcmp(auth, "client-secret") != 0 && conf_store_kv(cs, "client_secret") != NULL)
		return dmk_errf(err, DMK_ERR_CONFIG, "client_secret is only used with "
		    "auth = client-secret");
	return 0;
}

static int
azkv_open(struct store *st, struct dmk_err *err)
{
	struct azkv *kv = st->priv;
	const struct conf_store *cs = st->conf;
	struct http_response resp;
	struct http_tls tls;
	struct buf url;
	const char *v;
	char scope[300];
	long long timeout = 30;
	int r;

	buf_init(&url, 0);
	http_response_init(&resp);
	if ((r = azkv_validate(cs, err)) != 0)
		goto out;
	util_strlcpy(kv->vault, conf_store_str(cs, "vault_url"), sizeof(kv->vault));
	while (kv->vault[0] && kv->vault[strlen(kv->vault) - 1] == '/')
		kv->vault[strlen(kv->vault) - 1] = '\0';
	if (az_url_host(kv->vault, kv->vault_host, sizeof(kv->vault_host)) != 0 ||
	    az_url_origin(kv->vault, kv->origin, sizeof(kv->origin)) != 0) {
		r = dmk_errf(err, DMK_ERR_CONFIG, "vault_url %s is malformed", kv->vault);
		goto out;
	}
	v = conf_store_str(cs, "api_version");
	util_strlcpy(kv->api, v ? v : "7.5", sizeof(kv->api));
	kv->verify_resource = conf_yes(cs, "challenge_resource_verification", 1);
	if (!kv->verify_resource)
		log_info("[store %s] challenge_resource_verification = no: the "
		    "vault host %s is not checked against %s (test vaults only)", cs->name,
		    kv->vault_host, kv_dns_suffix(cs));
	util_strlcpy(kv->suffix, kv_dns_suffix(cs), sizeof(kv->suffix));
	for (char *c = kv->suffix; *c != '\0'; c++)
		*c = (char)tolower((unsigned char)*c);
	snprintf(scope, sizeof(scope), "https://%s/.default", kv->suffix);
	if ((r = az_cred_init(&kv->cred, st, scope, err)) != 0)
		goto out;
	if ((v = conf_store_str(cs, "timeout")) != NULL && util_parse_duration(v, &timeout) != 0)
		timeout = 30;
	if (st->http.ops == NULL) {   /* a unit test may have installed a replay client */
		memset(&tls, 0, sizeof(tls));
		if ((v = conf_store_str(cs, "ca_file")) != NULL)
			util_strlcpy(tls.ca_file, v, sizeof(tls.ca_file));
		if ((r = http_client_curl(&st->http, &tls, 10000, (long)timeout * 1000, err)) != 0)
			goto out;
	}
	/*
	 * Authenticate now, so that store check and a rotation fail early:
	 * the challenge, a token, then one cheap authenticated call.  A 403
	 * still proves the token (the identity may read only its secrets).
	 */
	if (buf_printf(&url, "%s/secrets?api-version=%s&maxresults=1", kv->vault, kv->api) != 0) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = kv_send(st, "GET", url.data, NULL, 0, &resp, err)) != 0)
		goto out;
	if (resp.status != 200 && resp.status != 403)
		r = kv_fail(st, "authenticate to", kv->vault, &resp, err);
out:
	if (r != 0) {
		az_cred_free(&kv->cred);
		http_client_close(&st->http);
	}
	http_response_free(&resp);
	buf_free(&url);
	return r;
}

static void
azkv_close(struct store *st)
{
	struct azkv *kv = st->priv;

	if (kv != NULL)
		az_cred_free(&kv->cred);
	http_client_close(&st->http);
}

/* Who Entra ID issued the tokens to: the application or managed identity. */
static void
azkv_identity(struct store *st, char *out, size_t len)
{
	const struct azkv *kv = st->priv;
	const char *id = kv == NULL ? "" : kv->cred.client_id[0] ? kv->cred.client_id :
	    kv->cred.mi_client_id;

	snprintf(out, len, "%s%s", id[0] ? "client_id=" : "", id);
}

const struct prov_ops prov_azkv = {
	.type = "azure-key-vault",
	/* No CAS: put() emulates expect_version, see azkv_put(). */
	.caps = PROV_CAP_VERSIONS | PROV_CAP_META | PROV_CAP_CHECK,
	.lease = PROV_LEASE_READBACK,
	.name_max = 127,              /* secret names: 1-127 of [0-9A-Za-z-] */
	.flat_names = 1,
	.keys = azkv_keys,
	.priv_size = sizeof(struct azkv),
	.validate = azkv_validate,
	.open = azkv_open,
	.close = azkv_close,
	.get = azkv_get,
	.put = azkv_put,
	.set_meta = azkv_set_meta,
	.list_versions = azkv_list,
	.check = azkv_check,
	.identity = azkv_identity,
};
