/*
 * hcvault.c: HashiCorp Vault, KV version 2 (and version 1 for reading).
 *
 * A reference hcv:PATH#FIELD names the key PATH under the store's `mount`
 * (default "secret") and the field FIELD of its data (default "password").
 * The KV version of the mount is found once per run the way the vault CLI
 * does it, through sys/internal/ui/mounts/MOUNT/PATH.
 *
 * Markers.  KV v2 keeps custom_metadata per key, not per version, so the
 * marker KEY of version N is stored as the key-level entry "vN.KEY".  Reads
 * return each version's own markers under their plain names.  Vault allows
 * 64 entries, keys of 128 bytes and values of 512 bytes: every metadata
 * write drops the markers of versions that no longer exist and, if still
 * over the limit, those of the oldest versions.
 *
 * Tokens.  A token the user supplies (token reference, VAULT_TOKEN,
 * ~/.vault-token) is used as is and never revoked.  A token this run gets
 * by logging in is renewed when less than a third of its TTL is left and
 * revoked at close.
 *
 * Test seam: open() uses st->http when a transport is already installed
 * there (unit tests install http_client_replay); otherwise it makes the one
 * libcurl client the store keeps for the whole run.  store_open() zeroes
 * the store first, so a real run always gets the curl client.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "core/ref.h"
#include "provider.h"
#include "hcvault_int.h"

static const struct conf_keydef hcvault_keys[] = {
	{ "address", CK_URL, 0, NULL, 0, 0 },          /* default VAULT_ADDR */
	{ "ca_file", CK_PATH, 0, NULL, 0, 0 },         /* default VAULT_CACERT */
	{ "ca_path", CK_PATH, 0, NULL, 0, 0 },         /* default VAULT_CAPATH */
	{ "client_cert", CK_PATH, 0, NULL, 0, 0 },     /* default VAULT_CLIENT_CERT */
	{ "client_key", CK_REF, 0, NULL, 0, 0 },       /* file:... (VAULT_CLIENT_KEY) */
	{ "tls_server_name", CK_STRING, 0, NULL, 0, 0 },
	{ "namespace", CK_STRING, 0, NULL, 0, 0 },     /* default VAULT_NAMESPACE */
	{ "mount", CK_STRING, 0, NULL, 0, 0 },         /* default "secret" */
	{ "auth", CK_ENUM, 0, "token|approle|kubernetes|jwt|cert", 0, 0 },
	{ "auth_mount", CK_STRING, 0, NULL, 0, 0 },    /* default: the method's name */
	{ "token", CK_REF, 0, NULL, 0, 0 },            /* default VAULT_TOKEN, ~/.vault-token */
	{ "role_id", CK_STRING, 0, NULL, 0, 0 },
	{ "secret_id", CK_REF, 0, NULL, 0, 0 },
	{ "secret_id_wrapped", CK_BOOL, 0, NULL, 0, 0 },
	{ "role", CK_STRING, 0, NULL, 0, 0 },          /* kubernetes, jwt, cert */
	{ "jwt", CK_REF, 0, NULL, 0, 0 },              /* jwt / kubernetes token */
	{ "timeout", CK_DURATION, 0, NULL, 0, 0 },
	{ "max_versions", CK_INT, 0, NULL, 0, 4294967295LL },  /* default HCV_MAX_VERSIONS */
	{ NULL, 0, 0, NULL, 0, 0 },
};

static const char *const auth_names[] = { "token", "approle", "kubernetes", "jwt", "cert" };

/* ---- small helpers ---- */

const char *
hcv_kv_str(const struct conf_store *c, const char *key)
{
	const char *v = conf_store_str(c, key);

	return (v != NULL && *v != '\0') ? v : NULL;
}

const struct secret_ref *
hcv_kv_ref(const struct conf_store *c, const char *key)
{
	const struct conf_kv *kv = conf_store_kv(c, key);

	return (kv != NULL && kv->kind == CK_REF) ? &kv->ref : NULL;
}

int
hcv_kv_bool(const struct conf_store *c, const char *key)
{
	const char *v = hcv_kv_str(c, key);

	return v != NULL && (strcmp(v, "yes") == 0 || strcmp(v, "true") == 0);
}

const char *
hcv_envstr(const char *name)
{
	const char *v = getenv(name);

	return (v != NULL && *v != '\0') ? v : NULL;
}

static int
auth_of(const struct conf_store *c, enum hcv_auth *out)
{
	const char *a = hcv_kv_str(c, "auth");
	size_t i;

	*out = AUTH_TOKEN;
	if (a == NULL)
		return 0;
	for (i = 0; i < sizeof(auth_names) / sizeof(auth_names[0]); i++)
		if (strcmp(a, auth_names[i]) == 0) {
			*out = (enum hcv_auth)i;
			return 0;
		}
	return -1;
}

/* Safe for a header line or a path: printable ASCII without CR/LF. */
static int
plain_text(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
			return 0;
	return 1;
}

static int
valid_mount(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= 200 || s[0] == '/' || s[n - 1] == '/' || strstr(s, "..") ||
	    strstr(s, "//"))
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("._-/@+=", *s))
			return 0;
	return 1;
}

/* Append s as a JSON string literal (quotes included). */
int
hcv_json_quote(struct buf *b, const char *s, size_t n)
{
	static const char hx[] = "0123456789abcdef";
	size_t i;
	int r;

	if ((r = buf_putc(b, '"')) != 0)
		return r;
	for (i = 0; i < n && r == 0; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			char e[2] = { '\\', (char)c };
			r = buf_append(b, e, 2);
		} else if (c < 0x20) {
			char e[6] = { '\\', 'u', '0', '0', hx[c >> 4], hx[c & 15] };
			r = buf_append(b, e, 6);
		} else
			r = buf_putc(b, (char)c);
	}
	return r ? r : buf_putc(b, '"');
}

int
hcv_json_quote_str(struct buf *b, const char *s)
{
	return hcv_json_quote(b, s, strlen(s));
}

static const char *
field_of(const struct secret_ref *ref)
{
	return ref->field[0] ? ref->field : HCV_DEFAULT_FIELD;
}

/*
 * A number from an answer (TTLs in seconds, version numbers), held to
 * +-HCV_NUM_MAX like util_parse_duration(): the renewal arithmetic
 * multiplies TTLs by 1000 and 3, and a real such as 1e300 does not fit a
 * long long at all.
 */
#define HCV_NUM_MAX 1000000000000LL
long long
hcv_json_num(json_t *v)
{
	long long n = 0;
	double d;

	if (json_is_integer(v))
		n = (long long)json_integer_value(v);
	else if (json_is_real(v)) {
		d = json_real_value(v);
		n = d >= (double)HCV_NUM_MAX ? HCV_NUM_MAX : d <= -(double)HCV_NUM_MAX ?
		    -HCV_NUM_MAX : (long long)d;
	} else if (json_is_string(v))
		n = strtoll(json_string_value(v), NULL, 10);
	return n > HCV_NUM_MAX ? HCV_NUM_MAX : n < -HCV_NUM_MAX ? -HCV_NUM_MAX : n;
}

/* Vault durations in lookup answers are seconds; "1h" style in some places. */
long long
hcv_json_secs(json_t *v)
{
	long long s = 0;

	if (json_is_string(v) && util_parse_duration(json_string_value(v), &s) == 0)
		return s;
	return hcv_json_num(v);
}

/* Free what Jansson allocated (json_dumps), with Jansson's own allocator. */
static void
json_release(char *p)
{
	json_malloc_t m;
	json_free_t f;

	if (p == NULL)
		return;
	json_get_alloc_funcs(&m, &f);
	secure_wipe(p, strlen(p));
	if (f)
		f(p);
	else
		free(p);
}

/* Parse a version string: a positive whole number. */
static int
parse_version(const char *s, long long *out)
{
	char *end;
	long long v;

	if (s == NULL || !isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end != '\0' || v < 0)
		return -1;
	*out = v;
	return 0;
}

/* ---- errors: status and Vault's own text, never a body with data ---- */

/* Vault's "errors" array, flattened to one line, or "" when empty. */
static void
vault_errors(const struct http_response *resp, char *out, size_t len)
{
	json_t *root, *errs, *e;
	size_t i, o = 0;

	out[0] = '\0';
	if (resp->body.len == 0 ||
	    (root = json_loadb(resp->body.data, resp->body.len, 0, NULL)) == NULL)
		return;
	errs = json_object_get(root, "errors");
	json_array_foreach(errs, i, e) {
		const char *s = json_string_value(e);
		if (s == NULL)
			continue;
		if (o && o + 2 < len) {
			out[o++] = ';';
			out[o++] = ' ';
		}
		for (; *s && o + 1 < len; s++) {
			unsigned char c = (unsigned char)*s;
			if (c == '\n' || c == '\t' || c == '\r') {
				if (o > 0 && out[o - 1] != ' ')
					out[o++] = ' ';
			} else if (c >= 0x20)
				out[o++] = (char)c;
		}
		while (o > 0 && out[o - 1] == ' ')
			o--;
	}
	out[o] = '\0';
	json_decref(root);
}

/*
 * One message per failed answer: what we asked, the status, what it means
 * and Vault's text.  Returns the DMK_ERR_* code.
 */
int
hcv_vault_fail(const struct http_response *resp, const char *what, int ctx, struct dmk_err *err)
{
	char ve[600], detail[700];
	const char *meaning;
	int code;

	vault_errors(resp, ve, sizeof(ve));
	if (ve[0])
		snprintf(detail, sizeof(detail), " (Vault: %s)", ve);
	else
		detail[0] = '\0';
	switch (resp->status) {
	case 400:
		if (strstr(ve, "check-and-set parameter did not match")) {
			code = DMK_ERR_CONFLICT;
			meaning = "the secret changed since it was read (check-and-set mismatch)";
		} else if (strstr(ve, "check-and-set parameter required")) {
			code = DMK_ERR_CONFLICT;
			meaning = "the key requires check-and-set";
		} else if (strstr(ve, "wrapping token is not valid")) {
			code = DMK_ERR_AUTH;
			meaning = "the response-wrapping token was already used or has expired";
		} else if (ctx == CTX_LOGIN) {
			code = DMK_ERR_AUTH;
			meaning = "login refused";
		} else {
			code = DMK_ERR_BADINPUT;
			meaning = "request refused";
		}
		break;
	case 401:
	case 403:
		if (strstr(ve, "invalid token") || ctx == CTX_LOGIN) {
			code = DMK_ERR_AUTH;
			meaning = ctx == CTX_LOGIN ? "login refused" :
			    "the token is invalid, expired or revoked";
		} else {
			code = DMK_ERR_DENIED;
			meaning = "permission denied; check the token's policies";
		}
		break;
	case 404:
		code = DMK_ERR_NOTFOUND;
		meaning = "not found";
		break;
	case 412:
		code = DMK_ERR_UNREACHABLE;
		meaning = "the server is not yet consistent (still failing after retries)";
		break;
	case 429:
		code = DMK_ERR_UNREACHABLE;
		meaning = "rate limited (still refused after retries)";
		break;
	case 503:
		code = DMK_ERR_UNREACHABLE;
		if (strstr(ve, "sealed"))
			meaning = "Vault is sealed";
		else if (strstr(ve, "standby"))
			meaning = "Vault is in standby";
		else
			meaning = "Vault is unavailable (sealed or standby; still failing after retries)";
		break;
	default:
		if (resp->status >= 500) {
			code = DMK_ERR_UNREACHABLE;
			meaning = "server error (still failing after retries)";
		} else {
			code = DMK_ERR_PROTOCOL;
			meaning = "unexpected answer";
		}
		break;
	}
	return dmk_errf(err, code, "%s: HTTP %ld: %s%s", what, resp->status, meaning, detail);
}

/* ---- requests ---- */

static int
hcv_retry_status(long status)
{
	return status == 412 || status == 429 || status >= 500;
}


/*
 * A standby Vault with request forwarding off answers 307 (or 308) with the
 * active node's address.  Followed once, with the token, only to https and
 * the same /v1/ path: the same client makes the call, so the same CA must
 * vouch for the active node and its name.  Anything else is refused,
 * naming VAULT_ADDR.
 */
static int
follow_standby(struct store *st, struct http_request *req, const char *path,
    struct http_response *resp, struct dmk_err *err)
{
	struct hcv *h = st->priv;
	char loc[1024];
	const char *v1 = NULL, *c;
	size_t pl = strlen(path);
	long status = resp->status;
	int r, ok;

	util_strlcpy(loc, resp->location, sizeof(loc));
	ok = strncasecmp(loc, "https://", 8) == 0 && (v1 = strstr(loc + 8, "/v1/")) != NULL &&
	    v1 > loc + 8 && strncmp(v1 + 4, path, pl) == 0 &&
	    (v1[4 + pl] == '\0' || (v1[4 + pl] == '?' && strchr(path, '?') == NULL));
	for (c = loc + 8; ok && c < v1; c++)
		if (!isalnum((unsigned char)*c) && strchr(".-:[]", *c) == NULL)
			ok = 0;
	if (!ok)
		return dmk_errf(err, DMK_ERR_CONFIG, "Vault at %s is a standby and redirects (HTTP "
		    "%ld) to '%.300s': not followed (only https, for the same path, under the same "
		    "CA); set VAULT_ADDR (address in [store %s]) to the active node", h->addr,
		    status, loc[0] ? loc : "(no Location)", st->conf->name);
	if (!h->told_standby) {
		log_warn("Vault at %s is a standby (request forwarding off): following its "
		    "redirect to %.*s with the token, verified against the same CA; set VAULT_ADDR "
		    "(address in [store %s]) to the active node to skip this", h->addr,
		    (int)(v1 - loc), loc, st->conf->name);
		h->told_standby = 1;
	}
	req->url = loc;
	http_response_free(resp);
	http_response_init(resp);
	if ((r = http_do(&st->http, req, resp, err)) != 0)
		return dmk_err_prefix(err, "Vault's active node %.*s (redirected from the standby %s)",
		    (int)(v1 - loc), loc, h->addr);
	if (resp->status == 307 || resp->status == 308)
		return dmk_errf(err, DMK_ERR_CONFIG, "Vault at %s redirected to %.*s, which redirects "
		    "again: not followed; set VAULT_ADDR (address in [store %s]) to the active node",
		    h->addr, (int)(v1 - loc), loc, st->conf->name);
	return 0;
}

/*
 * One call to Vault.  path is below /v1/.  tok (may be NULL) overrides the
 * store's token.  The answer lands in resp (caller frees); 0 when an answer
 * arrived, whatever its status.
 */
int
hcv_request(struct store *st, const char *method, const char *path,
    const struct buf *body, int flags, const struct secret *tok,
    struct http_response *resp, struct dmk_err *err)
{
	struct hcv *h = st->priv;
	struct http_request req;
	struct buf url, tokhdr, nshdr;
	int r;

	if ((flags & REQ_TOKEN) && !(flags & REQ_NORENEW) && tok == NULL &&
	    (r = hcv_maybe_renew(st, err)) != 0)
		return r;
	memset(&req, 0, sizeof(req));
	buf_init(&url, HCV_URL_MAX);
	buf_init_locked(&tokhdr, 64 * 1024);
	buf_init(&nshdr, 1024);
	if ((r = buf_printf(&url, "%s/v1/%s", h->addr, path)) != 0) {
		r = dmk_errf(err, r, "URL too long for %s", path);
		goto out;
	}
	req.method = method;
	req.url = url.data;
	req.retry_status = hcv_retry_status;
	req.no_retry = (flags & REQ_NORETRY) != 0;
	http_req_header(&req, "X-Vault-Request: true");
	if (h->ns[0]) {
		if ((r = buf_printf(&nshdr, "X-Vault-Namespace: %s", h->ns)) != 0)
			goto nomem;
		http_req_header(&req, nshdr.data);
	}
	if (flags & REQ_TOKEN) {
		const struct secret *t = tok ? tok : h->token;
		if (t == NULL) {
			r = dmk_errf(err, DMK_ERR_INTERNAL, "no Vault token");
			goto out;
		}
		if ((r = buf_puts(&tokhdr, "X-Vault-Token: ")) != 0 ||
		    (r = buf_append(&tokhdr, secret_reveal(t), secret_len(t))) != 0)
			goto nomem;
		http_req_header(&req, tokhdr.data);
	}
	if (body != NULL) {
		http_req_header(&req, "Content-Type: application/json");
		req.body = body->data ? body->data : "";
		req.body_len = body->len;
	}
	r = http_do(&st->http, &req, resp, err);
	if (r != 0)
		dmk_err_prefix(err, "Vault at %s unreachable", h->addr);
	else if (resp->status == 307 || resp->status == 308)
		r = follow_standby(st, &req, path, resp, err);
	goto out;
nomem:
	r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
out:
	buf_free(&tokhdr);   /* wipes the token copy */
	buf_free(&nshdr);
	buf_free(&url);
	return r;
}

/* Parse an answer body; NULL with err set when it is not JSON. */
json_t *
hcv_parse_body(const struct http_response *resp, const char *what, struct dmk_err *err)
{
	json_t *root;

	if (resp->body.len == 0 ||
	    (root = json_loadb(resp->body.data, resp->body.len, 0, NULL)) == NULL ||
	    !json_is_object(root)) {
		if (resp->body.len && (root = json_loadb(resp->body.data, resp->body.len, 0, NULL)))
			json_decref(root);
		dmk_errf(err, DMK_ERR_PROTOCOL, "%s: HTTP %ld: the answer is not a JSON object",
		    what, resp->status);
		return NULL;
	}
	return root;
}

/* Build MOUNT/KIND/PREFIX/PATH (kind NULL for KV v1), URL-encoded. */
static int
kv_path(struct hcv *h, const char *kind, const char *path, struct buf *out)
{
	int r;

	buf_reset(out);
	if ((r = http_urlencode(out, h->kv_mount, strlen(h->kv_mount), 1)) != 0)
		return r;
	if (kind && ((r = buf_putc(out, '/')) != 0 || (r = buf_puts(out, kind)) != 0))
		return r;
	if ((r = buf_putc(out, '/')) != 0)
		return r;
	if (h->kv_prefix[0] &&
	    (r = http_urlencode(out, h->kv_prefix, strlen(h->kv_prefix), 1)) != 0)
		return r;
	return http_urlencode(out, path, strlen(path), 1);
}

/* Same, unencoded, for capabilities-self and messages. */
static void
kv_plain(struct hcv *h, const char *kind, const char *path, char *out, size_t len)
{
	snprintf(out, len, "%s%s%s/%s%s", h->kv_mount, kind ? "/" : "", kind ? kind : "",
	    h->kv_prefix, path);
}

/* ---- configuration ---- */

static int
hcvault_validate(const struct conf_store *c, struct dmk_err *err)
{
	enum hcv_auth a;
	const char *v;

	if (auth_of(c, &a) != 0)
		return dmk_errf(err, DMK_ERR_CONFIG, "'auth' must be token, approle, kubernetes, "
		    "jwt or cert");
	if (hcv_kv_str(c, "tls_server_name"))
		return dmk_errf(err, DMK_ERR_CONFIG, "'tls_server_name' is not supported: "
		    "dmkagent checks the certificate against the host in 'address'; use a "
		    "name the certificate carries there");
	if ((v = hcv_kv_str(c, "mount")) && !valid_mount(v))
		return dmk_errf(err, DMK_ERR_CONFIG, "'mount' must be a path such as secret or "
		    "kv/prod, without leading or trailing '/', not '%s'", v);
	if ((v = hcv_kv_str(c, "auth_mount")) && !valid_mount(v))
		return dmk_errf(err, DMK_ERR_CONFIG, "'auth_mount' must be a path such as approle "
		    "or k8s/prod, not '%s'", v);
	if ((v = hcv_kv_str(c, "namespace")) && (!plain_text(v) || strlen(v) >= 250))
		return dmk_errf(err, DMK_ERR_CONFIG, "'namespace' holds a control character or "
		    "is too long");
	if ((v = hcv_kv_str(c, "role_id")) && (!plain_text(v) || strlen(v) >= 1000))
		return dmk_errf(err, DMK_ERR_CONFIG, "'role_id' holds a control character or is "
		    "too long");
	if ((v = hcv_kv_str(c, "role")) && (!plain_text(v) || strlen(v) >= 1000))
		return dmk_errf(err, DMK_ERR_CONFIG, "'role' holds a control character or is too "
		    "long");
	if (hcv_kv_ref(c, "client_key") && !hcv_kv_str(c, "client_cert"))
		return dmk_errf(err, DMK_ERR_CONFIG, "'client_key' needs 'client_cert'");
	if (hcv_kv_str(c, "client_cert") && !hcv_kv_ref(c, "client_key"))
		return dmk_errf(err, DMK_ERR_CONFIG, "'client_cert' needs 'client_key' (a file: "
		    "reference to the PEM private key)");

#define ONLY(key, cond, methods) do {                                                   \
	if (conf_store_kv(c, key) && !(cond))                                             \
		return dmk_errf(err, DMK_ERR_CONFIG, "'%s' is only for auth = %s (this "     \
		    "store uses auth = %s)", key, methods, auth_names[a]);                    \
} while (0)
	ONLY("token", a == AUTH_TOKEN, "token");
	ONLY("role_id", a == AUTH_APPROLE, "approle");
	ONLY("secret_id", a == AUTH_APPROLE, "approle");
	ONLY("secret_id_wrapped", a == AUTH_APPROLE, "approle");
	ONLY("role", a == AUTH_K8S || a == AUTH_JWT || a == AUTH_CERT, "kubernetes, jwt or cert");
	ONLY("jwt", a == AUTH_K8S || a == AUTH_JWT, "kubernetes or jwt");
	ONLY("auth_mount", a != AUTH_TOKEN, "approle, kubernetes, jwt or cert");
#undef ONLY

	switch (a) {
	case AUTH_APPROLE:
		if (!hcv_kv_str(c, "role_id"))
			return dmk_errf(err, DMK_ERR_CONFIG, "auth = approle needs 'role_id'");
		if (!hcv_kv_ref(c, "secret_id"))
			return dmk_errf(err, DMK_ERR_CONFIG, "auth = approle needs 'secret_id' (a "
			    "reference such as file:/etc/dmkagent/secret-id)");
		break;
	case AUTH_K8S:
	case AUTH_JWT:
		if (!hcv_kv_str(c, "role"))
			return dmk_errf(err, DMK_ERR_CONFIG, "auth = %s needs 'role'", auth_names[a]);
		if (a == AUTH_JWT && !hcv_kv_ref(c, "jwt"))
			return dmk_errf(err, DMK_ERR_CONFIG, "auth = jwt needs 'jwt' (a reference to "
			    "the token, such as file:/run/dmkagent/jwt)");
		break;
	case AUTH_CERT:
		if (!hcv_kv_str(c, "client_cert") && !hcv_envstr("VAULT_CLIENT_CERT"))
			return dmk_errf(err, DMK_ERR_CONFIG, "auth = cert needs 'client_cert' and "
			    "'client_key' (or VAULT_CLIENT_CERT and VAULT_CLIENT_KEY)");
		break;
	case AUTH_TOKEN:
		break;
	}
	return 0;
}

static void
copy_path(char *dst, size_t n, const char *key, const char *envname, const struct conf_store *c)
{
	const char *v = hcv_kv_str(c, key);

	if (v == NULL)
		v = hcv_envstr(envname);
	util_strlcpy(dst, v ? v : "", n);
}

static int
hcvault_open(struct store *st, struct dmk_err *err)
{
	const struct conf_store *c = st->conf;
	struct hcv *h = st->priv;
	const struct secret_ref *kr;
	const char *v;
	long long timeout = 30;
	size_t n;
	int r;

	if ((r = hcvault_validate(c, err)) != 0)
		return r;
	auth_of(c, &h->auth);
	if ((v = hcv_kv_str(c, "address")) == NULL && (v = hcv_envstr("VAULT_ADDR")) == NULL)
		return dmk_errf(err, DMK_ERR_CONFIG, "no Vault address: set 'address' in [store %s] "
		    "or VAULT_ADDR", c->name);
	if (strncmp(v, "https://", 8) != 0 || !plain_text(v))
		return dmk_errf(err, DMK_ERR_CONFIG, "the Vault address must be an https:// URL, "
		    "not '%s'", v);
	if (util_strlcpy(h->addr, v, sizeof(h->addr)) >= sizeof(h->addr))
		return dmk_errf(err, DMK_ERR_CONFIG, "the Vault address is too long");
	n = strlen(h->addr);
	while (n > 8 && h->addr[n - 1] == '/')
		h->addr[--n] = '\0';
	if (n >= 3 && strcmp(h->addr + n - 3, "/v1") == 0)
		h->addr[n - 3] = '\0';
	if ((v = hcv_kv_str(c, "namespace")) == NULL)
		v = hcv_envstr("VAULT_NAMESPACE");
	if (v && (!plain_text(v) || util_strlcpy(h->ns, v, sizeof(h->ns)) >= sizeof(h->ns)))
		return dmk_errf(err, DMK_ERR_CONFIG, "the Vault namespace is too long or holds a "
		    "control character");
	util_strlcpy(h->mount, (v = hcv_kv_str(c, "mount")) ? v : HCV_DEFAULT_MOUNT, sizeof(h->mount));
	util_strlcpy(h->auth_mount, (v = hcv_kv_str(c, "auth_mount")) ? v : auth_names[h->auth],
	    sizeof(h->auth_mount));
	if ((v = hcv_kv_str(c, "timeout")) != NULL && util_parse_duration(v, &timeout) != 0)
		return dmk_errf(err, DMK_ERR_CONFIG, "'timeout' must be a duration, not '%s'", v);
	if (timeout <= 0)
		timeout = 30;
	if (hcv_envstr("VAULT_SKIP_VERIFY"))
		log_warn("VAULT_SKIP_VERIFY is ignored: dmkagent always verifies Vault's "
		    "certificate");

	copy_path(h->tls.ca_file, sizeof(h->tls.ca_file), "ca_file", "VAULT_CACERT", c);
	copy_path(h->tls.ca_path, sizeof(h->tls.ca_path), "ca_path", "VAULT_CAPATH", c);
	copy_path(h->tls.client_cert_file, sizeof(h->tls.client_cert_file), "client_cert",
	    "VAULT_CLIENT_CERT", c);
	if ((kr = hcv_kv_ref(c, "client_key")) != NULL) {
		if ((r = hcv_resolve_ref(st, kr, "client_key", &h->client_key, err)) != 0)
			return r;
	} else if (h->tls.client_cert_file[0] && (v = hcv_envstr("VAULT_CLIENT_KEY")) != NULL) {
		if ((r = read_secret_file(v, &h->client_key, err)) != 0)
			return dmk_err_prefix(err, "VAULT_CLIENT_KEY");
	}
	if (h->tls.client_cert_file[0] && h->client_key == NULL)
		return dmk_errf(err, DMK_ERR_CONFIG, "a client certificate needs its key: set "
		    "'client_key' or VAULT_CLIENT_KEY");
	h->tls.client_key = h->client_key;

	if (st->http.ops == NULL) {
		long ct = timeout * 1000 < 10000 ? (long)(timeout * 1000) : 10000;
		if ((r = http_client_curl(&st->http, &h->tls, ct, (long)(timeout * 1000), err)) != 0)
			return r;
		if (st->http.retry.max_total_ms < timeout * 2000)
			st->http.retry.max_total_ms = timeout * 2000;
	}

	switch (h->auth) {
	case AUTH_TOKEN:
		r = hcv_auth_token(st, err);
		break;
	case AUTH_APPROLE:
		r = hcv_auth_approle(st, err);
		break;
	case AUTH_K8S:
		r = hcv_auth_jwtlike(st, 1, err);
		break;
	case AUTH_JWT:
		r = hcv_auth_jwtlike(st, 0, err);
		break;
	case AUTH_CERT:
		r = hcv_auth_cert(st, err);
		break;
	}
	if (r == 0)
		r = hcv_token_lookup(st, err);
	if (r != 0) {
		/* store_open() will not call close(): release everything here. */
		secret_free(h->token);
		secret_free(h->client_key);
		h->token = h->client_key = NULL;
		http_client_close(&st->http);
	}
	return r;
}

static void
hcvault_close(struct store *st)
{
	struct hcv *h = st->priv;
	struct http_response resp;
	struct dmk_err e;

	if (h == NULL)
		return;
	if (h->token != NULL && h->token_owned && st->http.ops != NULL) {
		http_response_init(&resp);
		if (hcv_request(st, "POST", "auth/token/revoke-self", NULL,
		    REQ_TOKEN | REQ_NORENEW | REQ_NORETRY, NULL, &resp, &e) != 0)
			log_warn("Vault token not revoked: %s", e.msg);
		else if (resp.status != 204 && resp.status != 200) {
			hcv_vault_fail(&resp, "token revocation (auth/token/revoke-self)", CTX_DATA, &e);
			log_warn("%s", e.msg);
		}
		http_response_free(&resp);
	}
	secret_free(h->token);
	secret_free(h->client_key);
	h->token = h->client_key = NULL;
	h->tls.client_key = NULL;
	http_client_close(&st->http);
}

/* ---- KV version detection ---- */

static int
kv_detect(struct store *st, const struct secret_ref *ref, struct dmk_err *err)
{
	struct hcv *h = st->priv;
	struct http_response resp;
	struct buf path;
	json_t *root = NULL, *d, *opts;
	const char *type, *mp, *ver;
	char full[800];
	size_t ml;
	int r;

	if (h->kv_version)
		return 0;
	http_response_init(&resp);
	buf_init(&path, HCV_URL_MAX);
	snprintf(full, sizeof(full), "%s/%s", h->mount, ref->path);
	if ((r = buf_puts(&path, "sys/internal/ui/mounts/")) != 0 ||
	    (r = http_urlencode(&path, full, strlen(full), 1)) != 0) {
		r = dmk_errf(err, r, "path too long");
		goto out;
	}
	if ((r = hcv_request(st, "GET", path.data, NULL, REQ_TOKEN, NULL, &resp, err)) != 0)
		goto out;
	if (resp.status != 200) {
		char what[900];
		snprintf(what, sizeof(what), "finding the secrets engine of %s "
		    "(sys/internal/ui/mounts/%s)", full, full);
		r = hcv_vault_fail(&resp, what, CTX_DATA, err);
		if (r == DMK_ERR_NOTFOUND || r == DMK_ERR_DENIED)
			dmk_err_prefix(err, "no KV secrets engine at mount '%s' that this token may "
			    "use", h->mount);
		goto out;
	}
	if ((root = hcv_parse_body(&resp, "sys/internal/ui/mounts", err)) == NULL) {
		r = err->code;
		goto out;
	}
	d = json_object_get(root, "data");
	type = json_string_value(json_object_get(d, "type"));
	mp = json_string_value(json_object_get(d, "path"));
	opts = json_object_get(d, "options");
	ver = json_string_value(json_object_get(opts, "version"));
	if (type == NULL || (strcmp(type, "kv") != 0 && strcmp(type, "generic") != 0)) {
		r = dmk_errf(err, DMK_ERR_CONFIG, "mount '%s' is a '%s' secrets engine, not KV",
		    h->mount, type ? type : "unknown");
		goto out;
	}
	h->kv_version = (ver != NULL && strcmp(ver, "2") == 0) ? 2 : 1;
	/* Vault names the real mount; the rest of mount/path lies inside it. */
	if (mp != NULL && (ml = strlen(mp)) > 0 && mp[ml - 1] == '/' && ml - 1 < sizeof(h->kv_mount)
	    && strncmp(full, mp, ml) == 0 && strlen(h->mount) + 1 >= ml) {
		memcpy(h->kv_mount, mp, ml - 1);
		h->kv_mount[ml - 1] = '\0';
		/* configured mount "kv/prod" on a mount "kv/": prefix "prod/" */
		snprintf(h->kv_prefix, sizeof(h->kv_prefix), "%s%s",
		    strlen(h->mount) >= ml ? h->mount + ml : "",
		    strlen(h->mount) >= ml ? "/" : "");
	} else {
		util_strlcpy(h->kv_mount, h->mount, sizeof(h->kv_mount));
		h->kv_prefix[0] = '\0';
	}
	log_debug("Vault mount %s: KV version %d", h->kv_mount, h->kv_version);
out:
	json_decref(root);
	buf_free(&path);
	http_response_free(&resp);
	return r;
}

/* ---- markers: "vN.KEY" in custom_metadata ---- */

/* Markers of version num out of a custom_metadata object. */
static void
markers_of(json_t *cm, long long num, struct prov_meta *m)
{
	char pfx[32];
	const char *k;
	json_t *v;
	size_t pl;

	memset(m, 0, sizeof(*m));
	snprintf(pfx, sizeof(pfx), "v%lld.", num);
	pl = strlen(pfx);
	json_object_foreach(cm, k, v) {
		if (strncmp(k, pfx, pl) == 0 && json_is_string(v) && k[pl] != '\0')
			prov_meta_set(m, k + pl, json_string_value(v));
	}
}

/* The version a "vN.KEY" entry belongs to, or -1 if it is not a marker. */
static long long
marker_version(const char *k)
{
	long long v = 0;

	if (k[0] != 'v' || !isdigit((unsigned char)k[1]))
		return -1;
	for (k++; isdigit((unsigned char)*k); k++)
		if ((v = v * 10 + (*k - '0')) > HCV_NUM_MAX)
			return -1;   /* no version is that high: someone else's key */
	return *k == '.' ? v : -1;
}

/*
 * Drop markers of versions absent from versions (the metadata "versions"
 * object), then those of the oldest versions until Vault's limit is met.
 */
static void
markers_prune(json_t *cm, json_t *versions, long long keep)
{
	const char *k;
	json_t *v;
	void *tmp;
	char num[32];
	long long oldest;

	json_object_foreach_safe(cm, tmp, k, v) {
		long long n = marker_version(k);
		if (n < 0 || n == keep)
			continue;
		snprintf(num, sizeof(num), "%lld", n);
		if (versions != NULL && json_object_get(versions, num) == NULL)
			json_object_del(cm, k);
	}
	while (json_object_size(cm) > HCV_META_MAX_KEYS) {
		oldest = -1;
		json_object_foreach(cm, k, v) {
			long long n = marker_version(k);
			if (n >= 0 && n != keep && (oldest < 0 || n < oldest))
				oldest = n;
		}
		if (oldest < 0)
			break;
		json_object_foreach_safe(cm, tmp, k, v)
			if (marker_version(k) == oldest)
				json_object_del(cm, k);
	}
}

/* ---- operations ---- */

static int
check_ref(const struct secret_ref *ref, struct dmk_err *err)
{
	if (ref->path[0] == '\0')
		return dmk_errf(err, DMK_ERR_BADINPUT, "%s: no path", ref->text);
	return 0;
}

/* Fill ver from a KV v2 "metadata" object of a data read or write. */
static void
version_from(json_t *md, struct prov_version *ver)
{
	const char *t;
	long long n = hcv_json_num(json_object_get(md, "version"));
	time_t tt;

	ver->num = n;
	snprintf(ver->id, sizeof(ver->id), "%lld", n);
	if ((t = json_string_value(json_object_get(md, "created_time"))) != NULL &&
	    util_parse_rfc3339(t, &tt) == 0)
		ver->created = tt;
	t = json_string_value(json_object_get(md, "deletion_time"));
	ver->deleted = t != NULL && *t != '\0';
	ver->destroyed = json_is_true(json_object_get(md, "destroyed"));
	markers_of(json_object_get(md, "custom_metadata"), n, &ver->meta);
}

static int
hcvault_get(struct store *st, const struct secret_ref *ref, const char *version,
    struct secret **out, struct prov_version *ver, struct dmk_err *err)
{
	struct hcv *h = st->priv;
	struct http_response resp;
	struct prov_version tmpver;
	struct buf path;
	json_t *root = NULL, *d, *data, *md, *fv;
	const char *field = field_of(ref);
	char plain[800], what[1000];
	long long vnum = 0;
	int r;

	*out = NULL;
	if (ver == NULL)
		ver = &tmpver;
	memset(ver, 0, sizeof(*ver));
	http_response_init(&resp);
	buf_init(&path, HCV_URL_MAX);
	if ((r = check_ref(ref, err)) != 0 || (r = kv_detect(st, ref, err)) != 0)
		goto out;
	if (version != NULL && parse_version(version, &vnum) != 0) {
		r = dmk_errf(err, DMK_ERR_BADINPUT, "%s: version '%s' is not a Vault version "
		    "number", ref->text, version);
		goto out;
	}
	if (h->kv_version == 1 && version != NULL) {
		r = dmk_errf(err, DMK_ERR_UNSUPPORTED, "%s: mount '%s' is KV version 1, which "
		    "keeps no versions", ref->text, h->kv_mount);
		goto out;
	}
	kv_plain(h, h->kv_version == 2 ? "data" : NULL, ref->path, plain, sizeof(plain));
	if ((r = kv_path(h, h->kv_version == 2 ? "data" : NULL, ref->path, &path)) != 0 ||
	    (vnum > 0 && (r = buf_printf(&path, "?version=%lld", vnum)) != 0)) {
		r = dmk_errf(err, r, "path too long");
		goto out;
	}
	if (vnum > 0)
		snprintf(what, sizeof(what), "reading %s version %lld (%s)", ref->text, vnum, plain);
	else
		snprintf(what, sizeof(what), "reading %s (%s)", ref->text, plain);
	if ((r = hcv_request(st, "GET", path.data, NULL, REQ_TOKEN, NULL, &resp, err)) != 0)
		goto out;
	if (resp.status == 404 && h->kv_version == 2 && resp.body.len &&
	    (root = json_loadb(resp.body.data, resp.body.len, 0, NULL)) != NULL &&
	    json_is_object(md = json_object_get(json_object_get(root, "data"), "metadata"))) {
		/* the key exists, the version is soft-deleted or destroyed */
		version_from(md, ver);
		r = dmk_errf(err, DMK_ERR_DELETED, "%s: HTTP 404: version %s is %s", what, ver->id,
		    ver->destroyed ? "destroyed (gone for good)" :
		    "deleted (soft; 'vault kv undelete' can restore it)");
		goto out;
	}
	json_decref(root);
	root = NULL;
	if (resp.status == 404) {
		char ve[300];
		vault_errors(&resp, ve, sizeof(ve));
		r = dmk_errf(err, DMK_ERR_NOTFOUND, "%s: HTTP 404: %s%s%s%s", what,
		    vnum > 0 ? "no such version" : "no secret at this path",
		    ve[0] ? " (Vault: " : "", ve, ve[0] ? ")" : "");
		goto out;
	}
	if (resp.status != 200) {
		r = hcv_vault_fail(&resp, what, CTX_DATA, err);
		goto out;
	}
	if ((root = hcv_parse_body(&resp, what, err)) == NULL) {
		r = err->code;
		goto out;
	}
	d = json_object_get(root, "data");
	if (h->kv_version == 2) {
		data = json_object_get(d, "data");
		md = json_object_get(d, "metadata");
		if (!json_is_object(md)) {
			r = dmk_errf(err, DMK_ERR_PROTOCOL, "%s: the answer has no data.metadata", what);
			goto out;
		}
		version_from(md, ver);
		if (ver->destroyed || ver->deleted || json_is_null(data)) {
			r = dmk_errf(err, DMK_ERR_DELETED, "%s: version %s is %s", what, ver->id,
			    ver->destroyed ? "destroyed (gone for good)" : "deleted");
			goto out;
		}
	} else
		data = d;
	if (!json_is_object(data)) {
		r = dmk_errf(err, DMK_ERR_PROTOCOL, "%s: the answer has no data object", what);
		goto out;
	}
	if ((fv = json_object_get(data, field)) == NULL) {
		r = dmk_errf(err, DMK_ERR_NOTFOUND, "%s: the secret has no field '%s'%s", what,
		    field, ref->field[0] ? "" : " (the default field; name another with #FIELD)");
		goto out;
	}
	if (!json_is_string(fv)) {
		r = dmk_errf(err, DMK_ERR_PROTOCOL, "%s: field '%s' is not a string", what, field);
		goto out;
	}
	if ((*out = secret_from(json_string_value(fv), json_string_length(fv))) == NULL)
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
out:
	json_decref(root);   /* the wiping allocator clears the value's copy */
	buf_free(&path);
	http_response_free(&resp);
	return r;
}

/* GET metadata: the whole answer's "data" object, owned by *root. */
static int
read_metadata(struct store *st, const struct secret_ref *ref, json_t **root, json_t **md,
    struct dmk_err *err)
{
	struct hcv *h = st->priv;
	struct http_response resp;
	struct buf path;
	char plain[800], what[1000];
	int r;

	*root = *md = NULL;
	http_response_init(&resp);
	buf_init(&path, HCV_URL_MAX);
	kv_plain(h, "metadata", ref->path, plain, sizeof(plain));
	snprintf(what, sizeof(what), "reading the metadata of %s (%s)", ref->text, plain);
	if ((r = kv_path(h, "metadata", ref->path, &path)) != 0) {
		r = dmk_errf(err, r, "path too long");
		goto out;
	}
	if ((r = hcv_request(st, "GET", path.data, NULL, REQ_TOKEN, NULL, &resp, err)) != 0)
		goto out;
	if (resp.status == 404) {
		r = dmk_errf(err, DMK_ERR_NOTFOUND, "%s: HTTP 404: no secret at this path", what);
		goto out;
	}
	if (resp.status != 200) {
		r = hcv_vault_fail(&resp, what, CTX_DATA, err);
		goto out;
	}
	if ((*root = hcv_parse_body(&resp, what, err)) == NULL) {
		r = err->code;
		goto out;
	}
	*md = json_object_get(*root, "data");
	if (!json_is_object(*md) || !json_is_object(json_object_get(*md, "versions"))) {
		json_decref(*root);
		*root = *md = NULL;
		r = dmk_errf(err, DMK_ERR_PROTOCOL, "%s: the answer has no data.versions", what);
	}
out:
	buf_free(&path);
	http_response_free(&resp);
	return r;
}

/* Write custom_metadata (only that field: Vault keeps max_versions etc.). */
static int
write_custom_metadata(struct store *st, const struct secret_ref *ref, json_t *cm,
    struct dmk_err *err)
{
	struct hcv *h = st->priv;
	struct http_response resp;
	struct buf path, body;
	json_t *o;
	char *s = NULL, plain[800], what[1000];
	int r;

	http_response_init(&resp);
	buf_init(&path, HCV_URL_MAX);
	buf_init_locked(&body, 256 * 1024);
	kv_plain(h, "metadata", ref->path, plain, sizeof(plain));
	snprintf(what, sizeof(what), "writing the markers of %s (%s)", ref->text, plain);
	o = json_pack("{s:O}", "custom_metadata", cm);
	if (o == NULL || (s = json_dumps(o, JSON_COMPACT)) == NULL ||
	    (r = buf_puts(&body, s)) != 0 || (r = kv_path(h, "metadata", ref->path, &path)) != 0) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((r = hcv_request(st, "POST", path.data, &body, REQ_TOKEN, NULL, &resp, err)) != 0)
		goto out;
	if (resp.status != 200 && resp.status != 204)
		r = hcv_vault_fail(&resp, what, CTX_DATA, err);
out:
	json_release(s);
	json_decref(o);
	buf_free(&body);
	buf_free(&path);
	http_response_free(&resp);
	return r;
}

static int
set_markers(struct store *st, const struct secret_ref *ref, long long vnum,
    const struct prov_meta *meta, struct dmk_err *err)
{
	json_t *root = NULL, *md, *cm, *versions;
	char num[32], key[160];
	size_t i;
	int r;

	if ((r = read_metadata(st, ref, &root, &md, err)) != 0)
		return r;
	versions = json_object_get(md, "versions");
	snprintf(num, sizeof(num), "%lld", vnum);
	if (json_object_get(versions, num) == NULL) {
		r = dmk_errf(err, DMK_ERR_NOTFOUND, "%s: there is no version %lld", ref->text, vnum);
		goto out;
	}
	cm = json_object_get(md, "custom_metadata");
	cm = json_is_object(cm) ? json_copy(cm) : json_object();
	if (cm == NULL) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < meta->n; i++) {
		snprintf(key, sizeof(key), "v%lld.%s", vnum, meta->kv[i].key);
		if (strlen(key) > 128) {
			json_decref(cm);
			r = dmk_errf(err, DMK_ERR_TOOBIG, "%s: marker name '%s' is too long for "
			    "Vault (128 bytes with the version prefix)", ref->text, meta->kv[i].key);
			goto out;
		}
		json_object_set_new(cm, key, json_string(meta->kv[i].value));
	}
	markers_prune(cm, versions, vnum);
	if (json_object_size(cm) > HCV_META_MAX_KEYS) {
		json_decref(cm);
		r = dmk_errf(err, DMK_ERR_TOOBIG, "%s: more than %d custom_metadata entries even "
		    "after pruning old markers", ref->text, HCV_META_MAX_KEYS);
		goto out;
	}
	r = write_custom_metadata(st, ref, cm, err);
	json_decref(cm);
out:
	json_decref(root);
	return r;
}

/* A KV v2 reference and one of its version numbers; lacking says what v1 lacks. */
static int
kv2_version(struct store *st, const struct secret_ref *ref, const char *version,
    const char *lacking, long long *vnum, struct dmk_err *err)
{
	struct hcv *h = st->priv;
	int r;

	if ((r = check_ref(ref, err)) != 0 || (r = kv_detect(st, ref, err)) != 0)
		return r;
	if (h->kv_version != 2)
		return dmk_errf(err, DMK_ERR_UNSUPPORTED, "%s: mount '%s' is KV version 1, which "
		    "%s", ref->text, h->kv_mount, lacking);
	if (parse_version(version, vnum) != 0 || *vnum == 0)
		return dmk_errf(err, DMK_ERR_BADINPUT, "%s: version '%s' is not a Vault version "
		    "number", ref->text, version ? version : "");
	return 0;
}

static int
hcvault_set_meta(struct store *st, const struct secret_ref *ref, const char *version,
    const struct prov_meta *meta, struct dmk_err *err)
{
	long long vnum;
	int r;

	if ((r = kv2_version(st, ref, version, "has no metadata", &vnum, err)) != 0)
		return r;
	if (meta == NULL || meta->n == 0)
		return 0;
	return set_markers(st, ref, vnum, meta, err);
}

/*
 * The request body {"options":{"cas":N},"data":{...}}, in a buf that wipes.
 * Other fields of the current data (cur, may be NULL) are kept.
 */
static int
put_body(struct buf *b, json_t *cur, const char *field, const struct secret *value,
    long long cas)
{
	const char *k;
	json_t *v;
	int r, first = 1;

	if (cas >= 0)
		r = buf_printf(b, "{\"options\":{\"cas\":%lld},\"data\":{", cas);
	else
		r = buf_puts(b, "{\"data\":{");
	if (r)
		return r;
	json_object_foreach(cur, k, v) {
		char *s;
		if (strcmp(k, field) == 0)
			continue;
		if ((s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT)) == NULL)
			return DMK_ERR_NOMEM;
		r = (first ? 0 : buf_putc(b, ','));
		if (!r)
			r = hcv_json_quote_str(b, k);
		if (!r)
			r = buf_putc(b, ':');
		if (!r)
			r = buf_puts(b, s);
		json_release(s);
		if (r)
			return r;
		first = 0;
	}
	if ((!first && (r = buf_putc(b, ',')) != 0) || (r = hcv_json_quote_str(b, field)) != 0 ||
	    (r = buf_putc(b, ':')) != 0 ||
	    (r = hcv_json_quote(b, secret_reveal(value), secret_len(value))) != 0)
		return r;
	return buf_puts(b, "}}");
}

/* The current data object (for keeping other fields), or NULL. */
static int
current_data(struct store *st, const struct secret_ref *ref, json_t **root, json_t **data,
    struct dmk_err *err)
{
	struct hcv *h = st->priv;
	struct http_response resp;
	struct buf path;
	char what[900];
	int r;

	*root = *data = NULL;
	http_response_init(&resp);
	buf_init(&path, HCV_URL_MAX);
	snprintf(what, sizeof(what), "reading %s before writing it", ref->text);
	if ((r = kv_path(h, "data", ref->path, &path)) != 0) {
		r = dmk_errf(err, r, "path too long");
		goto out;
	}
	if ((r = hcv_request(st, "GET", path.data, NULL, REQ_TOKEN, NULL, &resp, err)) != 0)
		goto out;
	if (resp.status == 404)
		goto out;   /* new key, or deleted version: nothing to keep */
	if (resp.status != 200) {
		r = hcv_vault_fail(&resp, what, CTX_DATA, err);
		goto out;
	}
	if ((*root = hcv_parse_body(&resp, what, err)) == NULL) {
		r = err->code;
		goto out;
	}
	*data = json_object_get(json_object_get(*root, "data"), "data");
	if (!json_is_object(*data))
		*data = NULL;
out:
	buf_free(&path);
	http_response_free(&resp);
	return r;
}

static int
cmp_version(const void *a, const void *b)
{
	const struct prov_version *x = a, *y = b;

	return x->num < y->num ? -1 : x->num > y->num;
}

/* Every version in a metadata answer (data), oldest first; *out freed with free(). */
static int
versions_of(json_t *md, struct prov_version **out, size_t *n, struct dmk_err *err)
{
	json_t *versions, *cm, *v;
	struct prov_version *list;
	const char *k, *t;
	size_t i = 0, cnt;
	time_t tt;

	*out = NULL;
	*n = 0;
	versions = json_object_get(md, "versions");
	cm = json_object_get(md, "custom_metadata");
	cnt = json_object_size(versions);
	if ((list = calloc(cnt ? cnt : 1, sizeof(*list))) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	json_object_foreach(versions, k, v) {
		long long num;
		if (parse_version(k, &num) != 0 || num <= 0 || !json_is_object(v))
			continue;
		list[i].num = num;
		snprintf(list[i].id, sizeof(list[i].id), "%lld", num);
		if ((t = json_string_value(json_object_get(v, "created_time"))) != NULL &&
		    util_parse_rfc3339(t, &tt) == 0)
			list[i].created = tt;
		t = json_string_value(json_object_get(v, "deletion_time"));
		list[i].deleted = t != NULL && *t != '\0';
		list[i].destroyed = json_is_true(json_object_get(v, "destroyed"));
		markers_of(cm, num, &list[i].meta);
		i++;
	}
	qsort(list, i, sizeof(*list), cmp_version);
	*out = list;
	*n = i;
	return 0;
}

/* ---- version headroom: Vault drops a key's oldest versions for good ---- */

/* The max_versions the agent sets on each key it writes; 0: leave the key's
 * (or the mount's) own.  Vault keeps 10 when neither key nor mount says. */
#define HCV_MAX_VERSIONS 100
#define HCV_VAULT_DEFAULT_VERSIONS 10

static long long
conf_max_versions(const struct conf_store *c)
{
	const char *v = hcv_kv_str(c, "max_versions");

	return v != NULL ? strtoll(v, NULL, 10) : HCV_MAX_VERSIONS;
}

/* The mount's max_versions (GET MOUNT/config), 10 when it says 0 or the
 * token may not read it (Vault's default then is all we can assume). */
static long long
mount_max_versions(struct store *st)
{
	struct hcv *h = st->priv;
	struct http_response resp;
	struct buf path;
	struct dmk_err e;
	json_t *root = NULL;
	long long v = 0;

	if (h->mount_maxv > 0)
		return h->mount_maxv;
	http_response_init(&resp);
	buf_init(&path, HCV_URL_MAX);
	if (http_urlencode(&path, h->kv_mount, strlen(h->kv_mount), 1) == 0 &&
	    buf_puts(&path, "/config") == 0 &&
	    hcv_request(st, "GET", path.data, NULL, REQ_TOKEN, NULL, &resp, &e) == 0 &&
	    resp.status == 200 && (root = hcv_parse_body(&resp, "the mount's config", &e)) != NULL)
		v = hcv_json_num(json_object_get(json_object_get(root, "data"), "max_versions"));
	json_decref(root);
	buf_free(&path);
	http_response_free(&resp);
	h->mount_maxv = v > 0 ? v : HCV_VAULT_DEFAULT_VERSIONS;
	return h->mount_maxv;
}

/* How many versions the key keeps after this agent's next write: ours when
 * configured (put sets it first), else the key's, else the mount's. */
static long long
key_limit(struct store *st, json_t *md)
{
	long long c = conf_max_versions(st->conf), k;

	if (c > 0)
		return c;
	k = md != NULL ? hcv_json_num(json_object_get(md, "max_versions")) : 0;
	return k > 0 ? k : mount_max_versions(st);
}

/* POST MOUNT/KIND/PATH with a small JSON body that names no secret; 200 or
 * 204 is success, anything else Vault's error about what. */
static int
kv_post(struct store *st, const char *kind, const struct secret_ref *ref, const char *json,
    const char *what, struct dmk_err *err)
{
	struct hcv *h = st->priv;
	struct http_response resp;
	struct buf path, body;
	int r;

	http_response_init(&resp);
	buf_init(&path, HCV_URL_MAX);
	buf_init(&body, 256);
	if ((r = kv_path(h, kind, ref->path, &path)) != 0 || (r = buf_puts(&body, json)) != 0) {
		r = dmk_errf(err, r, "%s: path too long", what);
		goto out;
	}
	if ((r = hcv_request(st, "POST", path.data, &body, REQ_TOKEN, NULL, &resp, err)) != 0)
		goto out;
	if (resp.status != 200 && resp.status != 204)
		r = hcv_vault_fail(&resp, what, CTX_DATA, err);
out:
	buf_free(&body);
	buf_free(&path);
	http_response_free(&resp);
	return r;
}

/* POST MOUNT/metadata/PATH {"max_versions": n}: Vault keeps the other fields. */
static int
set_max_versions(struct store *st, const struct secret_ref *ref, long long n,
    struct dmk_err *err)
{
	char plain[800], what[1000], num[64];

	kv_plain(st->priv, "metadata", ref->path, plain, sizeof(plain));
	snprintf(what, sizeof(what), "setting max_versions = %lld on %s (%s)", n, ref->text, plain);
	snprintf(num, sizeof(num), "{\"max_versions\":%lld}", n);
	return kv_post(st, "metadata", ref, num, what, err);
}

/*
 * Before a write to an existing key: refuse when it would drop a version
 * still needed (st->keep), then make the key keep max_versions.  *isnew: no
 * key yet (the caller sets max_versions after creating it).
 */
static int
room_for_write(struct store *st, const struct secret_ref *ref, int *isnew,
    struct dmk_err *err)
{
	struct prov_version *v = NULL;
	json_t *root = NULL, *md = NULL;
	long long limit, want = conf_max_versions(st->conf);
	size_t n = 0;
	int r;

	*isnew = 0;
	if (want <= 0 && st->keep == NULL)
		return 0;             /* nothing to set, nothing to keep */
	if ((r = read_metadata(st, ref, &root, &md, err)) == DMK_ERR_NOTFOUND) {
		*isnew = 1;
		return 0;
	}
	if (r == DMK_ERR_DENIED) {
		log_warn("%s: cannot check the key's version headroom before writing: %s", ref->text,
		    err->msg);
		return 0;
	}
	if (r != 0)
		return r;
	limit = key_limit(st, md);
	if ((r = versions_of(md, &v, &n, err)) != 0 ||
	    (r = store_check_room(st, ref, v, n, limit, err)) != 0)
		goto out;
	if (want > 0 && hcv_json_num(json_object_get(md, "max_versions")) != want &&
	    set_max_versions(st, ref, want, err) != 0)
		log_warn("%s; writing anyway (this write drops no version still needed)", err->msg);
out:
	free(v);
	json_decref(root);
	return r;
}

/*
 * How many versions Vault keeps of ref after our next write (key_limit: our
 * max_versions when configured, put sets it first; else the key's, else the
 * mount's, else Vault's default of 10), how many it holds, and why.  Reads
 * only.
 */
static int
hcvault_version_limit(struct store *st, const struct secret_ref *ref, long long *limit,
    size_t *count, char *how, size_t howlen, struct dmk_err *err)
{
	struct hcv *h = st->priv;
	json_t *root = NULL, *md = NULL;
	long long c = conf_max_versions(st->conf), k = 0;
	int r;

	*limit = 0;
	*count = 0;
	if ((r = check_ref(ref, err)) != 0 || (r = kv_detect(st, ref, err)) != 0)
		return r;
	if (h->kv_version != 2) {
		*limit = 1;           /* KV v1 keeps the value, no versions */
		snprintf(how, howlen, "mount %s is KV version 1: one value, no versions",
		    h->kv_mount);
		return 0;
	}
	r = read_metadata(st, ref, &root, &md, err);
	if (r != 0 && r != DMK_ERR_NOTFOUND)
		return r;
	if (r == 0) {
		k = hcv_json_num(json_object_get(md, "max_versions"));
		*count = json_object_size(json_object_get(md, "versions"));
	}
	*limit = key_limit(st, r == 0 ? md : NULL);
	if (c > 0)
		snprintf(how, howlen, "max_versions %lld of [store %s] (dmkagent sets it on the key "
		    "before each write)", c, st->conf->name);
	else if (k > 0)
		snprintf(how, howlen, "max_versions %lld on the key", k);
	else
		snprintf(how, howlen, "%lld: the mount %s's max_versions, or Vault's default of 10 "
		    "when the mount sets none or this token may not read %s/config", *limit,
		    h->kv_mount, h->kv_mount);
	json_decref(root);
	return 0;
}

static int
hcvault_put(struct store *st, const struct secret_ref *ref, const struct secret *value,
    const char *expect_version, const struct prov_meta *meta, struct prov_version *out,
    struct dmk_err *err)
{
	struct hcv *h = st->priv;
	struct http_response resp;
	struct prov_version tmpver, curver;
	struct secret *cur = NULL;
	struct buf path, body;
	json_t *croot = NULL, *cdata = NULL, *root = NULL, *d;
	char plain[800], what[1000];
	long long cas = -1;
	int r, isnew = 1;

	if (out == NULL)
		out = &tmpver;
	memset(out, 0, sizeof(*out));
	http_response_init(&resp);
	buf_init(&path, HCV_URL_MAX);
	buf_init_locked(&body, SECRET_MAX * 2 + 4096);
	if ((r = check_ref(ref, err)) != 0 || (r = kv_detect(st, ref, err)) != 0)
		goto out;
	if (h->kv_version != 2) {
		r = dmk_errf(err, DMK_ERR_UNSUPPORTED, "%s: mount '%s' is KV version 1: dmkagent "
		    "reads it but does not write it (no versions, no check-and-set); upgrade the "
		    "mount to KV version 2", ref->text, h->kv_mount);
		goto out;
	}
	if (expect_version != NULL && parse_version(expect_version, &cas) != 0) {
		r = dmk_errf(err, DMK_ERR_BADINPUT, "%s: expected version '%s' is not a Vault "
		    "version number", ref->text, expect_version);
		goto out;
	}
	/* Never drop a version still needed; the key keeps max_versions. */
	if (cas != 0 && (r = room_for_write(st, ref, &isnew, err)) != 0)
		goto out;
	/* Keep the key's other fields: a new version replaces the whole data map. */
	if (cas != 0 && (r = current_data(st, ref, &croot, &cdata, err)) != 0)
		goto out;
	if ((r = put_body(&body, cdata, field_of(ref), value, cas)) != 0) {
		r = dmk_errf(err, r, "%s: the secret is too large", ref->text);
		goto out;
	}
	json_decref(croot);
	croot = NULL;
	kv_plain(h, "data", ref->path, plain, sizeof(plain));
	snprintf(what, sizeof(what), "writing %s (%s)", ref->text, plain);
	if ((r = kv_path(h, "data", ref->path, &path)) != 0) {
		r = dmk_errf(err, r, "path too long");
		goto out;
	}
	if ((r = hcv_request(st, "POST", path.data, &body, REQ_TOKEN, NULL, &resp, err)) != 0)
		goto out;
	if (resp.status != 200) {
		r = hcv_vault_fail(&resp, what, CTX_DATA, err);
		/*
		 * A retried CAS write whose first try landed before the connection
		 * dropped: the retry sees its own version.  If the current value is
		 * ours, the write happened.
		 */
		if (r == DMK_ERR_CONFLICT && resp.attempts > 1 && cas >= 0) {
			struct dmk_err e2;
			memset(&curver, 0, sizeof(curver));
			if (hcvault_get(st, ref, NULL, &cur, &curver, &e2) == 0 &&
			    curver.num == cas + 1 && secret_equal(cur, value)) {
				log_info("%s: the first write landed before the connection dropped; "
				    "version %s is ours", ref->text, curver.id);
				*out = curver;
				memset(&out->meta, 0, sizeof(out->meta));
				r = 0;
				goto markers;
			}
		}
		goto out;
	}
	if ((root = hcv_parse_body(&resp, what, err)) == NULL) {
		r = err->code;
		goto out;
	}
	d = json_object_get(root, "data");
	if (!json_is_object(d) || hcv_json_num(json_object_get(d, "version")) <= 0) {
		r = dmk_errf(err, DMK_ERR_PROTOCOL, "%s: the answer has no data.version", what);
		goto out;
	}
	version_from(d, out);
	memset(&out->meta, 0, sizeof(out->meta));
	if (isnew && conf_max_versions(st->conf) > 0) {
		struct dmk_err e2;
		if (set_max_versions(st, ref, conf_max_versions(st->conf), &e2) != 0)
			log_warn("version %s was written, but %s", out->id, e2.msg);
	}
markers:
	if (meta != NULL && meta->n > 0) {
		if ((r = set_markers(st, ref, out->num, meta, err)) != 0) {
			dmk_err_prefix(err, "version %s was written, but its markers were not", out->id);
			goto out;
		}
		out->meta = *meta;
	}
out:
	secret_free(cur);
	json_decref(croot);
	json_decref(root);
	buf_free(&body);
	buf_free(&path);
	http_response_free(&resp);
	return r;
}

static int
hcvault_list_versions(struct store *st, const struct secret_ref *ref,
    struct prov_version **out, size_t *n, struct dmk_err *err)
{
	struct hcv *h = st->priv;
	json_t *root = NULL, *md;
	int r;

	*out = NULL;
	*n = 0;
	if ((r = check_ref(ref, err)) != 0 || (r = kv_detect(st, ref, err)) != 0)
		return r;
	if (h->kv_version != 2)
		return dmk_errf(err, DMK_ERR_UNSUPPORTED, "%s: mount '%s' is KV version 1, which "
		    "keeps no versions", ref->text, h->kv_mount);
	if ((r = read_metadata(st, ref, &root, &md, err)) != 0)
		return r;
	r = versions_of(md, out, n, err);
	json_decref(root);
	return r;
}

static int
hcvault_delete_version(struct store *st, const struct secret_ref *ref, const char *version,
    struct dmk_err *err)
{
	char plain[800], what[1000], body[64];
	long long vnum;
	int r;

	if ((r = kv2_version(st, ref, version, "keeps no versions to delete", &vnum, err)) != 0)
		return r;
	kv_plain(st->priv, "delete", ref->path, plain, sizeof(plain));
	snprintf(what, sizeof(what), "deleting version %lld of %s (%s)", vnum, ref->text, plain);
	snprintf(body, sizeof(body), "{\"versions\":[%lld]}", vnum);
	return kv_post(st, "delete", ref, body, what, err);
}

/* Does a capability list grant any of the wanted ones (or root/sudo-less root)? */
static int
has_cap(json_t *caps, const char *want)
{
	json_t *c;
	size_t i;
	char w[64];
	const char *p = want, *bar;

	json_array_foreach(caps, i, c) {
		const char *s = json_string_value(c);
		if (s == NULL)
			continue;
		if (strcmp(s, "root") == 0)
			return 1;
		if (strcmp(s, "deny") == 0)
			return 0;
	}
	while (*p) {
		size_t l;
		bar = strchr(p, '|');
		l = bar ? (size_t)(bar - p) : strlen(p);
		snprintf(w, sizeof(w), "%.*s", (int)l, p);
		json_array_foreach(caps, i, c)
			if (json_string_value(c) && strcmp(json_string_value(c), w) == 0)
				return 1;
		p += l + (bar != NULL);
	}
	return 0;
}

static int
hcvault_check(struct store *st, const struct secret_ref *const *refs, size_t nrefs,
    struct buf *report, struct dmk_err *err)
{
	struct hcv *h = st->priv;
	struct http_response resp;
	struct buf body;
	json_t *root = NULL, *dc, *mc;
	char dpath[800], mpath[800], missing[600], what[1000];
	size_t i;
	int r = 0, bad = 0;

	for (i = 0; i < nrefs; i++) {
		const struct secret_ref *ref = refs[i];
		if ((r = check_ref(ref, err)) != 0 || (r = kv_detect(st, ref, err)) != 0) {
			buf_printf(report, "             %-40s FAIL  %s\n", ref->text, err->msg);
			return r;
		}
		http_response_init(&resp);
		buf_init_locked(&body, 4096);
		kv_plain(h, h->kv_version == 2 ? "data" : NULL, ref->path, dpath, sizeof(dpath));
		kv_plain(h, "metadata", ref->path, mpath, sizeof(mpath));
		buf_puts(&body, "{\"paths\":[");
		hcv_json_quote_str(&body, dpath);
		if (h->kv_version == 2) {
			buf_putc(&body, ',');
			hcv_json_quote_str(&body, mpath);
		}
		buf_puts(&body, "]}");
		snprintf(what, sizeof(what), "checking %s (sys/capabilities-self)", ref->text);
		if ((r = hcv_request(st, "POST", "sys/capabilities-self", &body, REQ_TOKEN, NULL,
		    &resp, err)) != 0 || (resp.status != 200 &&
		    (r = hcv_vault_fail(&resp, what, CTX_DATA, err)) != 0) ||
		    (root = hcv_parse_body(&resp, what, err)) == NULL) {
			if (r == 0)
				r = err->code;
			buf_printf(report, "             %-40s FAIL  %s\n", ref->text, err->msg);
			buf_free(&body);
			http_response_free(&resp);
			return r;
		}
		dc = json_object_get(root, dpath);
		mc = json_object_get(root, mpath);
		if (dc == NULL && h->kv_version == 1)
			dc = json_object_get(root, "capabilities");
		missing[0] = '\0';
#define NEED(caps, want, label, p) do {                                               \
	if (!has_cap(caps, want))                                                     \
		snprintf(missing + strlen(missing), sizeof(missing) - strlen(missing),   \
		    "%s%s on %s", missing[0] ? ", " : "", label, p);                     \
} while (0)
		NEED(dc, "read", "read", dpath);
		NEED(dc, "create|update", "create/update", dpath);
		if (h->kv_version == 2) {
			NEED(mc, "read", "read", mpath);
			NEED(mc, "update", "update", mpath);
		}
#undef NEED
		if (missing[0]) {
			bad++;
			buf_printf(report, "             %-40s FAIL  missing %s\n", ref->text, missing);
		} else
			buf_printf(report, "             %-40s ok    read, write%s (KV v%d, %s)\n",
			    ref->text, h->kv_version == 2 ? ", markers" : "", h->kv_version, dpath);
		json_decref(root);
		root = NULL;
		buf_free(&body);
		http_response_free(&resp);
	}
	if (bad)
		return dmk_errf(err, DMK_ERR_DENIED, "the token lacks capabilities on %d of %zu "
		    "reference(s); see the lines above", bad, nrefs);
	return 0;
}

static void
hcvault_identity(struct store *st, char *out, size_t len)
{
	const struct hcv *h = st->priv;

	snprintf(out, len, "%s", h != NULL ? h->who : "");
}

const struct prov_ops prov_hcvault = {
	.type = "hashicorp-vault",
	.caps = PROV_CAP_CAS | PROV_CAP_VERSIONS | PROV_CAP_META | PROV_CAP_DELETE |
	    PROV_CAP_CHECK | PROV_CAP_CHECK_WRITE,
	.lease = PROV_LEASE_CAS,
	.name_max = 511,              /* our reference's path; Vault sets no lower limit */
	.flat_names = 0,
	.keys = hcvault_keys,
	.priv_size = sizeof(struct hcv),
	.validate = hcvault_validate,
	.open = hcvault_open,
	.close = hcvault_close,
	.get = hcvault_get,
	.put = hcvault_put,
	.set_meta = hcvault_set_meta,
	.list_versions = hcvault_list_versions,
	.delete_version = hcvault_delete_version,
	.check = hcvault_check,
	.identity = hcvault_identity,
	.version_limit = hcvault_version_limit,
};
