/*
 * azure_auth.c: Entra ID credentials for Azure Key Vault.
 *
 * One struct az_cred per store.  Each credential kind is a row in
 * cred_impls[] (name, token function); the default chain walks the rows in
 * DefaultAzureCredential's order (environment, workload identity, managed
 * identity) and sticks to the first that works for the rest of the run.
 *
 * Token endpoints: {authority}/{tenant}/oauth2/v2.0/token (client secret,
 * client assertion, federated token); managed identity through IMDS, App
 * Service (IDENTITY_ENDPOINT + IDENTITY_HEADER) or Azure Arc
 * (IDENTITY_ENDPOINT + IMDS_ENDPOINT, Basic challenge with a key file).
 * Forms and headers that carry a secret are built in bufs (wiped on free).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "provider.h"
#include "azure.h"

const char *
az_auth_name(enum az_auth a)
{
	switch (a) {
	case AZ_AUTH_SECRET: return "client-secret";
	case AZ_AUTH_CERT: return "client-certificate";
	case AZ_AUTH_WORKLOAD: return "workload-identity";
	case AZ_AUTH_MI: return "managed-identity";
	case AZ_AUTH_DEFAULT: return "default";
	case AZ_AUTH_ENV: return "environment";
	}
	return "?";
}

void
az_scrub(char *dst, size_t dlen, const char *text, const struct secret *const *s, size_t ns)
{
	size_t i, n;

	if (dlen == 0)
		return;
	dst[0] = '\0';
	if (text == NULL)
		return;
	n = strlen(text);
	for (i = 0; i < ns; i++)
		if (s[i] != NULL && secret_len(s[i]) > 0 && secret_occurs_in(s[i], text, n)) {
			util_strlcpy(dst, "(server text withheld: it echoed a credential)", dlen);
			return;
		}
	/* One line: Entra's descriptions carry \r\n Trace ID: ... */
	for (i = 0; i + 1 < dlen && text[i] != '\0'; i++)
		dst[i] = (text[i] == '\r' || text[i] == '\n') ? ' ' :
		    (isprint((unsigned char)text[i]) ? text[i] : '?');
	dst[i] = '\0';
}

void
az_json_free(char *s)
{
	json_malloc_t m;
	json_free_t f;

	if (s == NULL)
		return;
	/* json_dumps allocates with Jansson's allocator (wiping in the agent). */
	json_get_alloc_funcs(&m, &f);
	secure_wipe(s, strlen(s));
	f(s);
}

/* ---- URLs ---- */

static int
url_split(const char *url, char *host, size_t hlen, int *port)
{
	const char *p, *end, *colon;
	size_t n;

	if (strncasecmp(url, "https://", 8) != 0)
		return -1;
	p = url + 8;
	end = p + strcspn(p, "/?#");
	if (memchr(p, '@', (size_t)(end - p)) != NULL)
		return -1;  /* no userinfo: it only confuses origin checks */
	colon = memchr(p, ':', (size_t)(end - p));
	*port = 443;
	if (colon != NULL) {
		char *e;
		long v;
		errno = 0;
		v = strtol(colon + 1, &e, 10);
		if (e != end || v <= 0 || v > 65535 || errno)
			return -1;
		*port = (int)v;
		end = colon;
	}
	n = (size_t)(end - p);
	if (n == 0 || n >= hlen)
		return -1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (!isalnum(c) && c != '.' && c != '-' && c != '_')
			return -1;
		host[i] = (char)tolower(c);
	}
	host[n] = '\0';
	return 0;
}

int
az_url_host(const char *url, char *out, size_t outlen)
{
	int port;

	return url_split(url, out, outlen, &port);
}

int
az_url_origin(const char *url, char *out, size_t outlen)
{
	char host[256];
	int port, n;

	if (url_split(url, host, sizeof(host), &port) != 0)
		return -1;
	n = snprintf(out, outlen, "https://%s:%d", host, port);
	return (n < 0 || (size_t)n >= outlen) ? -1 : 0;
}

/* ---- the challenge ---- */

int
az_challenge_parse(const char *hdr, struct az_challenge *ch, struct dmk_err *err)
{
	const char *p = hdr, *t;
	char key[32], val[512];
	size_t n;

	memset(ch, 0, sizeof(*ch));
	if (hdr == NULL || strncasecmp(p, "Bearer", 6) != 0 ||
	    (p[6] != ' ' && p[6] != '\t'))
		return dmk_errf(err, DMK_ERR_PROTOCOL, "the vault's 401 carries no Bearer challenge");
	p += 6;
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		if (*p == '\0')
			break;
		for (n = 0; (isalnum((unsigned char)*p) || *p == '_' || *p == '-'); p++)
			if (n + 1 < sizeof(key))
				key[n++] = *p;
		key[n] = '\0';
		while (*p == ' ')
			p++;
		if (n == 0 || *p != '=')
			return dmk_errf(err, DMK_ERR_PROTOCOL, "malformed Bearer challenge");
		p++;
		while (*p == ' ')
			p++;
		n = 0;
		if (*p == '"') {
			for (p++; *p != '\0' && *p != '"'; p++) {
				if (*p == '\\' && p[1] != '\0')
					p++;
				if (n + 1 >= sizeof(val))
					return dmk_errf(err, DMK_ERR_PROTOCOL, "Bearer challenge "
					    "parameter too long");
				val[n++] = *p;
			}
			if (*p != '"')
				return dmk_errf(err, DMK_ERR_PROTOCOL, "malformed Bearer challenge "
				    "(unterminated quote)");
			p++;
		} else {
			for (; *p != '\0' && *p != ',' && *p != ' '; p++) {
				if (n + 1 >= sizeof(val))
					return dmk_errf(err, DMK_ERR_PROTOCOL, "Bearer challenge "
					    "parameter too long");
				val[n++] = *p;
			}
		}
		val[n] = '\0';
		if (strcasecmp(key, "authorization") == 0 || strcasecmp(key, "authorization_uri") == 0)
			util_strlcpy(ch->authority, val, sizeof(ch->authority));
		else if (strcasecmp(key, "resource") == 0)
			util_strlcpy(ch->resource, val, sizeof(ch->resource));
		else if (strcasecmp(key, "scope") == 0)
			util_strlcpy(ch->scope, val, sizeof(ch->scope));
	}
	if (ch->authority[0] == '\0')
		return dmk_errf(err, DMK_ERR_PROTOCOL, "the vault's Bearer challenge names no "
		    "authorization");
	if (ch->scope[0] == '\0' && ch->resource[0] == '\0')
		return dmk_errf(err, DMK_ERR_PROTOCOL, "the vault's Bearer challenge names neither "
		    "resource nor scope");
	/* The tenant is the authority's first path segment (as the SDKs read it). */
	if ((t = strstr(ch->authority, "://")) == NULL || (t = strchr(t + 3, '/')) == NULL)
		return dmk_errf(err, DMK_ERR_PROTOCOL, "the challenge's authorization '%.200s' "
		    "has no tenant", ch->authority);
	t++;
	n = strcspn(t, "/?#");
	if (n == 0 || n >= sizeof(ch->tenant))
		return dmk_errf(err, DMK_ERR_PROTOCOL, "the challenge's authorization '%.200s' "
		    "has no tenant", ch->authority);
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)t[i]) && t[i] != '-' && t[i] != '.' && t[i] != '_')
			return dmk_errf(err, DMK_ERR_PROTOCOL, "the challenge's tenant is malformed");
	memcpy(ch->tenant, t, n);
	ch->tenant[n] = '\0';
	if (ch->scope[0] == '\0') {
		size_t rl = strlen(ch->resource);
		snprintf(ch->scope, sizeof(ch->scope), "%s%s", ch->resource,
		    rl > 0 && ch->resource[rl - 1] == '/' ? ".default" : "/.default");
	} else if (ch->resource[0] == '\0') {
		const char *d = strstr(ch->scope, "/.default");
		size_t l = d && d[9] == '\0' ? (size_t)(d - ch->scope) : strlen(ch->scope);
		if (l >= sizeof(ch->resource))
			l = sizeof(ch->resource) - 1;
		memcpy(ch->resource, ch->scope, l);
		ch->resource[l] = '\0';
	}
	return 0;
}

/* ---- token responses ---- */

/* A JSON number or a string of digits (IMDS and App Service send strings). */
static int
json_seconds(json_t *v, long long *out)
{
	char *e;

	if (json_is_integer(v)) {
		*out = json_integer_value(v);
		return 0;
	}
	if (json_is_real(v)) {
		double d = json_real_value(v);
		/* 1e300 does not fit a long long: not a number of seconds */
		if (!(d > -1e15 && d < 1e15))
			return -1;
		*out = (long long)d;
		return 0;
	}
	if (json_is_string(v) && isdigit((unsigned char)json_string_value(v)[0])) {
		errno = 0;
		*out = strtoll(json_string_value(v), &e, 10);
		if (*e == '\0' && errno == 0)
			return 0;
	}
	return -1;
}

int
az_token_parse(const char *body, size_t len, time_t now, struct secret **tok,
    time_t *expires, struct dmk_err *err)
{
	json_t *j = NULL, *at, *v;
	long long s;
	int r = 0;

	*tok = NULL;
	*expires = 0;
	if ((j = json_loadb(body, len, 0, NULL)) == NULL || !json_is_object(j)) {
		r = dmk_errf(err, DMK_ERR_PROTOCOL, "token response is not a JSON object");
		goto out;
	}
	at = json_object_get(j, "access_token");
	if (!json_is_string(at) || json_string_length(at) == 0) {
		r = dmk_errf(err, DMK_ERR_PROTOCOL, "token response has no access_token");
		goto out;
	}
	if ((v = json_object_get(j, "token_type")) != NULL &&
	    (!json_is_string(v) || strcasecmp(json_string_value(v), "Bearer") != 0)) {
		r = dmk_errf(err, DMK_ERR_PROTOCOL, "token response: token_type is not Bearer");
		goto out;
	}
	if ((v = json_object_get(j, "expires_on")) != NULL && json_seconds(v, &s) == 0 && s > 0)
		*expires = (time_t)s;
	else if ((v = json_object_get(j, "expires_in")) != NULL && json_seconds(v, &s) == 0 &&
	    s > 0 && s < 100LL * 365 * 86400)
		*expires = now + (time_t)s;
	else {
		r = dmk_errf(err, DMK_ERR_PROTOCOL, "token response has neither expires_on nor "
		    "expires_in");
		goto out;
	}
	for (const char *c = json_string_value(at); *c; c++)
		if ((unsigned char)*c <= ' ' || (unsigned char)*c >= 0x7f) {
			r = dmk_errf(err, DMK_ERR_PROTOCOL, "token response: access_token holds "
			    "characters a header cannot carry");
			goto out;
		}
	if ((*tok = secret_from(json_string_value(at), json_string_length(at))) == NULL)
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
out:
	json_decref(j);
	return r;
}

/* ---- client assertion JWT ---- */

static int
b64url(struct buf *out, const unsigned char *in, size_t len)
{
	unsigned char *tmp;
	int n, r;

	if ((tmp = malloc(4 * ((len + 2) / 3) + 1)) == NULL)
		return DMK_ERR_NOMEM;
	n = EVP_EncodeBlock(tmp, in, (int)len);
	while (n > 0 && tmp[n - 1] == '=')
		n--;
	for (int i = 0; i < n; i++)
		if (tmp[i] == '+')
			tmp[i] = '-';
		else if (tmp[i] == '/')
			tmp[i] = '_';
	r = buf_append(out, tmp, (size_t)n);
	secure_wipe(tmp, (size_t)n);
	free(tmp);
	return r;
}

static int
b64url_json(struct buf *out, json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	int r;

	if (s == NULL)
		return DMK_ERR_NOMEM;
	r = b64url(out, (unsigned char *)s, strlen(s));
	az_json_free(s);
	return r;
}

static void
random_guid(char *out, size_t len)
{
	unsigned char b[16];

	RAND_bytes(b, sizeof(b));
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	snprintf(out, len, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
	    "%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
	    b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

int
az_jwt_assertion(const char *client_id, const char *aud, const char *cert_pem,
    size_t cert_len, const struct secret *key_pem, enum az_alg alg, time_t now,
    struct buf *out, struct dmk_err *err)
{
	BIO *bio = NULL;
	X509 *x = NULL;
	EVP_PKEY *pk = NULL;
	EVP_MD_CTX *md = NULL;
	EVP_PKEY_CTX *pctx = NULL;
	json_t *hdr = NULL, *cl = NULL;
	unsigned char *der = NULL, dg[EVP_MAX_MD_SIZE], *sig = NULL;
	unsigned int dglen = 0;
	size_t siglen = 0;
	int derlen, r = 0;
	char guid[40];
	struct buf thumb;

	buf_init(&thumb, 0);
	if ((bio = BIO_new_mem_buf(cert_pem, (int)cert_len)) == NULL ||
	    (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) == NULL) {
		r = dmk_errf(err, DMK_ERR_CONFIG, "client certificate: no PEM certificate found");
		goto out;
	}
	BIO_free(bio);
	if ((bio = BIO_new_mem_buf(secret_reveal(key_pem), (int)secret_len(key_pem))) == NULL ||
	    (pk = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)) == NULL) {
		r = dmk_errf(err, DMK_ERR_CONFIG, "client certificate key: not a PEM private key "
		    "(or it is encrypted)");
		goto out;
	}
	if (EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA) {
		r = dmk_errf(err, DMK_ERR_CONFIG, "client certificate key: Entra ID needs an RSA key");
		goto out;
	}
	if (X509_check_private_key(x, pk) != 1) {
		r = dmk_errf(err, DMK_ERR_CONFIG, "client certificate key does not match the "
		    "certificate");
		goto out;
	}
	if ((derlen = i2d_X509(x, &der)) <= 0 ||
	    !EVP_Digest(der, (size_t)derlen, dg, &dglen,
	    alg == AZ_ALG_PS256 ? EVP_sha256() : EVP_sha1(), NULL) ||
	    b64url(&thumb, dg, dglen) != 0) {
		r = dmk_errf(err, DMK_ERR_INTERNAL, "cannot hash the client certificate");
		goto out;
	}
	random_guid(guid, sizeof(guid));
	hdr = json_pack("{s:s,s:s,s:s}", "alg", alg == AZ_ALG_PS256 ? "PS256" : "RS256",
	    "typ", "JWT", alg == AZ_ALG_PS256 ? "x5t#S256" : "x5t", thumb.data);
	cl = json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I}", "aud", aud, "iss", client_id,
	    "sub", client_id, "jti", guid, "nbf", (json_int_t)now, "iat", (json_int_t)now,
	    "exp", (json_int_t)(now + 600));
	if (hdr == NULL || cl == NULL) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	buf_reset(out);
	if (b64url_json(out, hdr) != 0 || buf_putc(out, '.') != 0 || b64url_json(out, cl) != 0) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestSignInit(md, &pctx, EVP_sha256(), NULL, pk) != 1 ||
	    (alg == AZ_ALG_PS256 &&
	    (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
	    EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1)) ||
	    EVP_DigestSign(md, NULL, &siglen, (unsigned char *)out->data, out->len) != 1 ||
	    (sig = malloc(siglen)) == NULL ||
	    EVP_DigestSign(md, sig, &siglen, (unsigned char *)out->data, out->len) != 1) {
		r = dmk_errf(err, DMK_ERR_INTERNAL, "cannot sign the client assertion");
		goto out;
	}
	if (buf_putc(out, '.') != 0 || b64url(out, sig, siglen) != 0)
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
out:
	if (r != 0)
		buf_reset(out);
	buf_free(&thumb);
	json_decref(hdr);
	json_decref(cl);
	free(sig);
	OPENSSL_free(der);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pk);
	X509_free(x);
	BIO_free(bio);
	return r;
}

/* ---- files ---- */

/* Read a small file into a secret (a token file, a key file); max bytes. */
static int
read_small_file(const char *path, size_t max, struct secret **out, struct dmk_err *err)
{
	char chunk[4096];
	struct stat sb;
	ssize_t n;
	int fd, r = 0;

	*out = NULL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) == -1)
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: %s", path, strerror(errno));
	if (fstat(fd, &sb) == -1 || !S_ISREG(sb.st_mode)) {
		r = dmk_errf(err, DMK_ERR_CONFIG, "%s: not a regular file", path);
		goto out;
	}
	if ((size_t)sb.st_size > max) {
		r = dmk_errf(err, DMK_ERR_TOOBIG, "%s: larger than %zu bytes", path, max);
		goto out;
	}
	if ((*out = secret_new()) == NULL) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	while ((n = read(fd, chunk, sizeof(chunk))) > 0) {
		if (secret_len(*out) + (size_t)n > max ||
		    secret_append(*out, chunk, (size_t)n) != 0) {
			r = dmk_errf(err, DMK_ERR_TOOBIG, "%s: larger than %zu bytes", path, max);
			break;
		}
	}
	if (n < 0)
		r = dmk_errf(err, DMK_ERR_IO, "%s: %s", path, strerror(errno));
	secure_wipe(chunk, sizeof(chunk));
out:
	if (r != 0) {
		secret_free(*out);
		*out = NULL;
	}
	close(fd);
	return r;
}

static int
read_text_file(const char *path, size_t max, struct buf *out, struct dmk_err *err)
{
	struct secret *s = NULL;
	int r;

	if ((r = read_small_file(path, max, &s, err)) != 0)
		return r;
	if (buf_append(out, secret_reveal(s), secret_len(s)) != 0)
		r = dmk_errf(err, DMK_ERR_TOOBIG, "%s: too large", path);
	secret_free(s);
	return r;
}

/* ---- requests ---- */

static void
strip_slashes(char *s)
{
	size_t n = strlen(s);

	while (n > 0 && s[n - 1] == '/')
		s[--n] = '\0';
}

static int
form_add(struct buf *f, const char *name, const char *val, size_t vlen)
{
	int r = 0;

	if (f->len > 0)
		r = buf_putc(f, '&');
	if (r == 0)
		r = buf_puts(f, name);
	if (r == 0)
		r = buf_putc(f, '=');
	if (r == 0)
		r = http_urlencode(f, val, vlen, 0);
	return r;
}

/* Turn a failed token answer into one message: status, error, description. */
static int
token_error(struct az_cred *c, const char *what, const char *url,
    const struct http_response *resp, struct dmk_err *err)
{
	const struct secret *sec[3] = { c->client_secret, c->cert_key, c->token };
	char desc[400] = "", code[80] = "";
	json_t *j;
	int ec;

	if ((j = json_loadb(resp->body.data ? resp->body.data : "", resp->body.len, 0, NULL))) {
		json_t *e = json_object_get(j, "error"), *d = json_object_get(j, "error_description");
		if (json_is_object(e)) {   /* managed identity sometimes nests */
			d = json_object_get(e, "message");
			e = json_object_get(e, "code");
		}
		if (json_is_string(e))
			az_scrub(code, sizeof(code), json_string_value(e), sec, 3);
		if (json_is_string(d))
			az_scrub(desc, sizeof(desc), json_string_value(d), sec, 3);
		json_decref(j);
	}
	ec = resp->status == 429 || resp->status >= 500 ? DMK_ERR_UNREACHABLE :
	    resp->status == 403 ? DMK_ERR_DENIED : DMK_ERR_AUTH;
	return dmk_errf(err, ec, "%s: %s: HTTP %ld%s%s%s%s%s", what, url, resp->status,
	    resp->attempts > 1 ? " after retries" : "", code[0] ? " " : "", code,
	    desc[0] ? ": " : "", desc);
}

static int
token_call(struct az_cred *c, const char *what, struct http_request *req,
    struct dmk_err *err)
{
	struct http_response resp;
	struct secret *tok = NULL;
	time_t exp;
	int r;

	http_response_init(&resp);
	c->token_requests++;
	if ((r = http_do(&c->st->http, req, &resp, err)) != 0) {
		dmk_err_prefix(err, "%s", what);
		goto out;
	}
	if (resp.status != 200) {
		r = token_error(c, what, req->url, &resp, err);
		goto out;
	}
	if ((r = az_token_parse(resp.body.data, resp.body.len, time(NULL), &tok, &exp, err)) != 0) {
		dmk_err_prefix(err, "%s: %s", what, req->url);
		goto out;
	}
	secret_free(c->token);
	c->token = tok;
	c->token_expires = exp;
	log_debug("%s: token valid until %lld", what, (long long)exp);
out:
	http_response_free(&resp);
	return r;
}

static int
post_form(struct az_cred *c, const char *what, struct buf *form, struct dmk_err *err)
{
	struct http_request req;
	struct buf url;
	int r;

	buf_init(&url, 0);
	memset(&req, 0, sizeof(req));
	if (buf_printf(&url, "%s/%s/oauth2/v2.0/token", c->authority_host, c->tenant) != 0) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	req.method = "POST";
	req.url = url.data;
	req.body = form->data;
	req.body_len = form->len;
	http_req_header(&req, "Content-Type: application/x-www-form-urlencoded");
	http_req_header(&req, "Accept: application/json");
	r = token_call(c, what, &req, err);
out:
	buf_free(&url);
	return r;
}

static int
need_ids(struct az_cred *c, const char *what, struct dmk_err *err)
{
	if (c->tenant[0] == '\0')
		return dmk_errf(err, DMK_ERR_CONFIG, "%s needs tenant_id (or AZURE_TENANT_ID)", what);
	if (c->client_id[0] == '\0')
		return dmk_errf(err, DMK_ERR_CONFIG, "%s needs client_id (or AZURE_CLIENT_ID)", what);
	return 0;
}

static int
resolve_ref(struct az_cred *c, const struct secret_ref *ref, const char *key,
    struct secret **out, struct dmk_err *err)
{
	int r;

	if (*out != NULL)
		return 0;
	if (c->st->resolve == NULL)
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: no way to resolve references here", key);
	if ((r = c->st->resolve(c->st->resolve_ctx, ref, out, err)) != 0)
		return dmk_err_prefix(err, "%s", key);
	secret_trim_newline(*out);
	return 0;
}

static int
tok_client_secret(struct az_cred *c, struct dmk_err *err)
{
	struct buf f;
	int r;

	if ((r = need_ids(c, "client-secret", err)) != 0)
		return r;
	if (c->client_secret == NULL) {
		if (c->client_secret_ref != NULL)
			r = resolve_ref(c, c->client_secret_ref, "client_secret", &c->client_secret, err);
		else if (c->auth != AZ_AUTH_SECRET && secret_env_present("AZURE_CLIENT_SECRET")) {
			/* Taken out of the environment (and /proc/PID/environ). */
			if ((c->client_secret = secret_env_take("AZURE_CLIENT_SECRET")) == NULL)
				r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		} else
			r = dmk_errf(err, DMK_ERR_CONFIG, "client-secret needs client_secret");
		if (r != 0)
			return r;
	}
	buf_init_locked(&f, 64 * 1024);
	if (form_add(&f, "client_id", c->client_id, strlen(c->client_id)) != 0 ||
	    form_add(&f, "scope", c->scope, strlen(c->scope)) != 0 ||
	    form_add(&f, "client_secret", secret_reveal(c->client_secret),
	    secret_len(c->client_secret)) != 0 ||
	    form_add(&f, "grant_type", "client_credentials", 18) != 0)
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	else
		r = post_form(c, "client-secret token", &f, err);
	buf_free(&f);
	return r;
}

static int
assertion_form(struct az_cred *c, const char *assertion, size_t alen, const char *what,
    struct dmk_err *err)
{
	struct buf f;
	int r;

	buf_init_locked(&f, 256 * 1024);
	if (form_add(&f, "client_id", c->client_id, strlen(c->client_id)) != 0 ||
	    form_add(&f, "scope", c->scope, strlen(c->scope)) != 0 ||
	    form_add(&f, "client_assertion_type",
	    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer", 54) != 0 ||
	    form_add(&f, "client_assertion", assertion, alen) != 0 ||
	    form_add(&f, "grant_type", "client_credentials", 18) != 0)
		r = dmk_errf(err, DMK_ERR_TOOBIG, "%s: assertion too large", what);
	else
		r = post_form(c, what, &f, err);
	buf_free(&f);
	return r;
}

static int
tok_client_cert(struct az_cred *c, struct dmk_err *err)
{
	struct buf pem, jwt, aud;
	int r;

	buf_init_locked(&pem, 256 * 1024);
	buf_init_locked(&jwt, 64 * 1024);
	buf_init(&aud, 0);
	if ((r = need_ids(c, "client-certificate", err)) != 0)
		goto out;
	if (c->cert_path[0] == '\0') {
		r = dmk_errf(err, DMK_ERR_CONFIG, "client-certificate needs client_certificate");
		goto out;
	}
	if ((r = read_text_file(c->cert_path, 256 * 1024, &pem, err)) != 0)
		goto out;
	if (c->cert_key == NULL) {
		if (c->cert_key_ref != NULL)
			r = resolve_ref(c, c->cert_key_ref, "client_certificate_key", &c->cert_key, err);
		else if (c->auth != AZ_AUTH_CERT)
			/* AZURE_CLIENT_CERTIFICATE_PATH: certificate and key in one PEM. */
			r = read_small_file(c->cert_path, 256 * 1024, &c->cert_key, err);
		else
			r = dmk_errf(err, DMK_ERR_CONFIG, "client-certificate needs "
			    "client_certificate_key");
		if (r != 0)
			goto out;
	}
	if (buf_printf(&aud, "%s/%s/oauth2/v2.0/token", c->authority_host, c->tenant) != 0) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = az_jwt_assertion(c->client_id, aud.data, pem.data, pem.len, c->cert_key, c->alg,
	    time(NULL), &jwt, err)) != 0) {
		dmk_err_prefix(err, "%s", c->cert_path);
		goto out;
	}
	r = assertion_form(c, jwt.data, jwt.len, "client-certificate token", err);
out:
	buf_free(&pem);
	buf_free(&jwt);
	buf_free(&aud);
	return r;
}

static int
tok_workload(struct az_cred *c, struct dmk_err *err)
{
	struct secret *fed = NULL;
	int r;

	if (c->fed_token_file[0] == '\0')
		return dmk_errf(err, DMK_ERR_CONFIG, "workload-identity needs AZURE_FEDERATED_TOKEN_FILE");
	if ((r = need_ids(c, "workload-identity", err)) != 0)
		return r;
	/* Re-read on every request: the kubelet rotates the projected token. */
	if ((r = read_small_file(c->fed_token_file, 64 * 1024, &fed, err)) != 0)
		return dmk_err_prefix(err, "federated token");
	secret_trim_newline(fed);
	if (secret_len(fed) == 0)
		r = dmk_errf(err, DMK_ERR_CONFIG, "%s: empty federated token", c->fed_token_file);
	else
		r = assertion_form(c, secret_reveal(fed), secret_len(fed), "workload-identity token",
		    err);
	secret_free(fed);
	return r;
}

/* IMDS answers 404 while it updates and 410 while it starts: both retried. */
static int
imds_retry_status(long s)
{
	return s == 404 || s == 410 || s == 429 || s >= 500;
}

static int
add_query(struct buf *u, const char *name, const char *val)
{
	int r = buf_putc(u, strchr(u->data ? u->data : "", '?') ? '&' : '?');

	if (r == 0)
		r = buf_printf(u, "%s=", name);
	if (r == 0)
		r = http_urlencode(u, val, strlen(val), 0);
	return r;
}

/* Arc's key file must be a regular file directly under the agent's directory. */
static int
arc_key_path_ok(const char *realm, char *resolved, struct dmk_err *err)
{
	const char *dir = getenv(AZ_ENV_ARC_DIR);
	char rdir[PATH_MAX];
	size_t dl, rl = strlen(realm);

	if (dir == NULL || *dir == '\0')
		dir = AZ_ARC_KEY_DIR;
	if (rl < 5 || strcmp(realm + rl - 4, ".key") != 0)
		return dmk_errf(err, DMK_ERR_AUTH, "Azure Arc challenge names a key file without "
		    "the .key extension; refused");
	if (realpath(dir, rdir) == NULL)
		return dmk_errf(err, DMK_ERR_AUTH, "Azure Arc key directory %s: %s", dir,
		    strerror(errno));
	if (realpath(realm, resolved) == NULL)
		return dmk_errf(err, DMK_ERR_AUTH, "Azure Arc key file %.300s: %s", realm,
		    strerror(errno));
	dl = strlen(rdir);
	if (strncmp(resolved, rdir, dl) != 0 || resolved[dl] != '/' ||
	    strchr(resolved + dl + 1, '/') != NULL)
		return dmk_errf(err, DMK_ERR_AUTH, "Azure Arc challenge names %.300s, which is not "
		    "in %s; refused", realm, rdir);
	return 0;
}

static int
tok_arc(struct az_cred *c, const char *endpoint, const char *resource, struct dmk_err *err)
{
	struct http_request req;
	struct http_response resp;
	struct secret *key = NULL;
	struct buf url, auth;
	char realm[PATH_MAX], path[PATH_MAX];
	const char *p;
	int r;

	buf_init(&url, 0);
	buf_init_locked(&auth, 16 * 1024);
	http_response_init(&resp);
	if (c->mi_client_id[0] || c->mi_object_id[0] || c->mi_res_id[0]) {
		r = dmk_errf(err, DMK_ERR_CONFIG, "Azure Arc supports only the system-assigned "
		    "identity; remove managed_identity_* keys");
		goto out;
	}
	if (buf_puts(&url, endpoint) != 0 || add_query(&url, "api-version", "2019-11-01") != 0 ||
	    add_query(&url, "resource", resource) != 0) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	memset(&req, 0, sizeof(req));
	req.method = "GET";
	req.url = url.data;
	http_req_header(&req, "Metadata: true");
	if ((r = http_do(&c->st->http, &req, &resp, err)) != 0) {
		dmk_err_prefix(err, "Azure Arc token");
		goto out;
	}
	if (resp.status != 401) {
		r = token_error(c, "Azure Arc token (expected a 401 Basic challenge)", url.data,
		    &resp, err);
		goto out;
	}
	p = resp.www_authenticate;
	if (strncasecmp(p, "Basic realm=", 12) != 0) {
		r = dmk_errf(err, DMK_ERR_PROTOCOL, "Azure Arc: the 401 carries no Basic realm");
		goto out;
	}
	p += 12;
	if (*p == '"')
		p++;
	util_strlcpy(realm, p, sizeof(realm));
	realm[strcspn(realm, "\"")] = '\0';
	if ((r = arc_key_path_ok(realm, path, err)) != 0)
		goto out;
	if ((r = read_small_file(path, AZ_ARC_KEY_MAX, &key, err)) != 0) {
		dmk_err_prefix(err, "Azure Arc key");
		goto out;
	}
	secret_trim_newline(key);
	if (buf_puts(&auth, "Authorization: Basic ") != 0 ||
	    buf_append(&auth, secret_reveal(key), secret_len(key)) != 0) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	http_req_header(&req, auth.data);
	r = token_call(c, "Azure Arc token", &req, err);
out:
	secret_free(key);
	http_response_free(&resp);
	buf_free(&url);
	buf_free(&auth);
	return r;
}

static int
tok_managed(struct az_cred *c, struct dmk_err *err)
{
	const char *ie = getenv("IDENTITY_ENDPOINT"), *ih = getenv("IDENTITY_HEADER");
	const char *imds = getenv("IMDS_ENDPOINT");
	struct http_request req;
	struct buf url, hdr;
	char resource[300];
	const char *d;
	int r = 0, builtin = 0;

	/* The resource is the scope without "/.default". */
	util_strlcpy(resource, c->scope, sizeof(resource));
	if ((d = strstr(resource, "/.default")) != NULL && d[9] == '\0')
		resource[d - resource] = '\0';
	if (ie != NULL && *ie != '\0' && (ih == NULL || *ih == '\0') && imds != NULL && *imds)
		return tok_arc(c, ie, resource, err);

	buf_init(&url, 0);
	buf_init_locked(&hdr, 8192);
	memset(&req, 0, sizeof(req));
	req.method = "GET";
	if (ie != NULL && *ie != '\0' && ih != NULL && *ih != '\0') {
		/* App Service / Functions, 2019-08-01 protocol. */
		if (buf_puts(&url, ie) != 0 || add_query(&url, "api-version", "2019-08-01") != 0 ||
		    add_query(&url, "resource", resource) != 0 ||
		    (c->mi_client_id[0] && add_query(&url, "client_id", c->mi_client_id) != 0) ||
		    (c->mi_object_id[0] && add_query(&url, "principal_id", c->mi_object_id) != 0) ||
		    (c->mi_res_id[0] && add_query(&url, "mi_res_id", c->mi_res_id) != 0) ||
		    buf_printf(&hdr, "X-IDENTITY-HEADER: %s", ih) != 0) {
			r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
			goto out;
		}
		http_req_header(&req, hdr.data);
		req.url = url.data;
		r = token_call(c, "App Service managed identity token", &req, err);
		goto out;
	}
	/* IMDS.  AZURE_POD_IDENTITY_AUTHORITY_HOST is the SDKs' override. */
	if ((d = getenv(AZ_ENV_IMDS)) == NULL || *d == '\0')
		if ((d = getenv("AZURE_POD_IDENTITY_AUTHORITY_HOST")) == NULL || *d == '\0') {
			d = AZ_IMDS_DEFAULT;
			builtin = 1;
		}
	if (buf_puts(&url, d) != 0) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	while (url.len > 0 && url.data[url.len - 1] == '/')
		url.data[--url.len] = '\0';
	if (buf_puts(&url, "/metadata/identity/oauth2/token") != 0 ||
	    add_query(&url, "api-version", "2018-02-01") != 0 ||
	    add_query(&url, "resource", resource) != 0 ||
	    (c->mi_client_id[0] && add_query(&url, "client_id", c->mi_client_id) != 0) ||
	    (c->mi_object_id[0] && add_query(&url, "object_id", c->mi_object_id) != 0) ||
	    (c->mi_res_id[0] && add_query(&url, "msi_res_id", c->mi_res_id) != 0)) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	http_req_header(&req, "Metadata: true");
	req.url = url.data;
	/* Real IMDS is plain HTTP on the link-local address; overrides stay https. */
	req.allow_imds_http = builtin;
	req.retry_status = imds_retry_status;
	r = token_call(c, "IMDS managed identity token", &req, err);
out:
	buf_free(&url);
	buf_free(&hdr);
	return r;
}

/* Environment credential: AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH. */
static int
tok_env(struct az_cred *c, struct dmk_err *err)
{
	const char *cert = getenv("AZURE_CLIENT_CERTIFICATE_PATH");

	if (c->client_secret_ref != NULL || c->client_secret != NULL ||
	    secret_env_present("AZURE_CLIENT_SECRET"))
		return tok_client_secret(c, err);
	if (c->cert_path[0] != '\0' || (cert != NULL && *cert != '\0')) {
		if (c->cert_path[0] == '\0')
			util_strlcpy(c->cert_path, cert, sizeof(c->cert_path));
		return tok_client_cert(c, err);
	}
	return dmk_errf(err, DMK_ERR_CONFIG, "AZURE_CLIENT_SECRET and "
	    "AZURE_CLIENT_CERTIFICATE_PATH are not set");
}

/* One row per credential; the default chain is rows in this order. */
static const struct {
	enum az_auth auth;
	int (*token)(struct az_cred *, struct dmk_err *);
	int in_chain;
} cred_impls[] = {
	{ AZ_AUTH_ENV, tok_env, 1 },
	{ AZ_AUTH_WORKLOAD, tok_workload, 1 },
	{ AZ_AUTH_MI, tok_managed, 1 },
	{ AZ_AUTH_SECRET, tok_client_secret, 0 },
	{ AZ_AUTH_CERT, tok_client_cert, 0 },
};
#define NIMPLS (sizeof(cred_impls) / sizeof(cred_impls[0]))

static int
run_impl(struct az_cred *c, enum az_auth a, struct dmk_err *err)
{
	size_t i;

	for (i = 0; i < NIMPLS; i++)
		if (cred_impls[i].auth == a)
			return cred_impls[i].token(c, err);
	return dmk_errf(err, DMK_ERR_INTERNAL, "no credential %d", (int)a);
}

static int
run_chain(struct az_cred *c, struct dmk_err *err)
{
	struct buf msg;
	struct dmk_err e;
	size_t i;
	int r, worst = DMK_ERR_AUTH;

	buf_init(&msg, DMK_ERR_MSG_MAX);
	for (i = 0; i < NIMPLS; i++) {
		if (!cred_impls[i].in_chain)
			continue;
		dmk_err_clear(&e);
		if ((r = cred_impls[i].token(c, &e)) == 0) {
			c->used = cred_impls[i].auth;
			log_debug("azure default credential: using %s", az_auth_name(c->used));
			buf_free(&msg);
			return 0;
		}
		if (r != DMK_ERR_CONFIG)
			worst = r;   /* it was there and failed: more telling than "not set" */
		buf_printf(&msg, "%s%s: %s", msg.len ? "; " : "", az_auth_name(cred_impls[i].auth),
		    e.msg);
	}
	dmk_errf(err, worst, "no credential in the default chain worked: %s",
	    msg.data ? msg.data : "");
	buf_free(&msg);
	return worst;
}

int
az_cred_token(struct az_cred *c, int force, const struct secret **out, struct dmk_err *err)
{
	int r;

	*out = NULL;
	if (!force && c->token != NULL && time(NULL) < c->token_expires - AZ_REFRESH_MARGIN) {
		*out = c->token;
		return 0;
	}
	if (c->auth == AZ_AUTH_DEFAULT && c->used == 0)
		r = run_chain(c, err);
	else
		r = run_impl(c, c->auth == AZ_AUTH_DEFAULT ? c->used : c->auth, err);
	if (r != 0)
		return r;
	*out = c->token;
	return 0;
}

static const char *
env_or(const char *conf, const char *env)
{
	const char *v;

	if (conf != NULL && *conf != '\0')
		return conf;
	v = getenv(env);
	return v != NULL ? v : "";
}

int
az_cred_init(struct az_cred *c, struct store *st, const char *scope, struct dmk_err *err)
{
	const struct conf_store *cs = st->conf;
	const struct conf_kv *kv;
	const char *v;
	static const struct { const char *name; enum az_auth a; } kinds[] = {
		{ "client-secret", AZ_AUTH_SECRET }, { "client-certificate", AZ_AUTH_CERT },
		{ "workload-identity", AZ_AUTH_WORKLOAD }, { "managed-identity", AZ_AUTH_MI },
		{ "default", AZ_AUTH_DEFAULT },
	};
	size_t i;

	memset(c, 0, sizeof(*c));
	c->st = st;
	c->auth = AZ_AUTH_DEFAULT;
	if ((v = conf_store_str(cs, "auth")) != NULL)
		for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
			if (strcmp(v, kinds[i].name) == 0)
				c->auth = kinds[i].a;
	util_strlcpy(c->tenant, env_or(conf_store_str(cs, "tenant_id"), "AZURE_TENANT_ID"),
	    sizeof(c->tenant));
	util_strlcpy(c->client_id, env_or(conf_store_str(cs, "client_id"), "AZURE_CLIENT_ID"),
	    sizeof(c->client_id));
	v = conf_store_str(cs, "cloud");
	util_strlcpy(c->authority_host, env_or(conf_store_str(cs, "authority_host"),
	    "AZURE_AUTHORITY_HOST"), sizeof(c->authority_host));
	if (c->authority_host[0] == '\0')
		util_strlcpy(c->authority_host, v == NULL || strcmp(v, "public") == 0 ?
		    "https://login.microsoftonline.com" : strcmp(v, "usgov") == 0 ?
		    "https://login.microsoftonline.us" : "https://login.chinacloudapi.cn",
		    sizeof(c->authority_host));
	strip_slashes(c->authority_host);
	if (strncasecmp(c->authority_host, "https://", 8) != 0)
		return dmk_errf(err, DMK_ERR_CONFIG, "authority host %s is not an https:// URL",
		    c->authority_host);
	util_strlcpy(c->scope, scope, sizeof(c->scope));
	v = conf_store_str(cs, "assertion_alg");
	c->alg = v != NULL && strcmp(v, "RS256") == 0 ? AZ_ALG_RS256 : AZ_ALG_PS256;
	if ((v = conf_store_str(cs, "client_certificate")) != NULL)
		util_strlcpy(c->cert_path, v, sizeof(c->cert_path));
	if ((kv = conf_store_kv(cs, "client_secret")) != NULL)
		c->client_secret_ref = &kv->ref;
	if ((kv = conf_store_kv(cs, "client_certificate_key")) != NULL)
		c->cert_key_ref = &kv->ref;
	util_strlcpy(c->fed_token_file, env_or(conf_store_str(cs, "federated_token_file"),
	    "AZURE_FEDERATED_TOKEN_FILE"), sizeof(c->fed_token_file));
	if ((v = conf_store_str(cs, "managed_identity_client_id")) != NULL)
		util_strlcpy(c->mi_client_id, v, sizeof(c->mi_client_id));
	if ((v = conf_store_str(cs, "managed_identity_object_id")) != NULL)
		util_strlcpy(c->mi_object_id, v, sizeof(c->mi_object_id));
	if ((v = conf_store_str(cs, "managed_identity_resource_id")) != NULL)
		util_strlcpy(c->mi_res_id, v, sizeof(c->mi_res_id));
	switch (c->auth) {
	case AZ_AUTH_SECRET:
		if (c->client_secret_ref == NULL)
			return dmk_errf(err, DMK_ERR_CONFIG, "auth = client-secret needs client_secret");
		return need_ids(c, "auth = client-secret", err);
	case AZ_AUTH_CERT:
		return need_ids(c, "auth = client-certificate", err);
	case AZ_AUTH_WORKLOAD:
		if (c->fed_token_file[0] == '\0')
			return dmk_errf(err, DMK_ERR_CONFIG, "auth = workload-identity needs "
			    "AZURE_FEDERATED_TOKEN_FILE (or federated_token_file)");
		return need_ids(c, "auth = workload-identity", err);
	default:
		return 0;
	}
}

void
az_cred_free(struct az_cred *c)
{
	secret_free(c->client_secret);
	secret_free(c->cert_key);
	secret_free(c->token);
	c->client_secret = c->cert_key = c->token = NULL;
}
