/* hcvault_auth.c: Vault auth methods (token, AppRole with wrapped secret_id,
 * Kubernetes, JWT, TLS certificate) and the client token's lifecycle
 * (lookup, renewal at a third of its TTL, revocation of login tokens). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <jansson.h>
#include "core/dmk.h"
#include "core/secret.h"
#include "core/ref.h"
#include "provider.h"
#include "hcvault_int.h"

/* ---- token lifecycle ---- */

static void
token_set(struct hcv *h, struct secret *tok, int owned)
{
	secret_free(h->token);
	h->token = tok;
	h->token_owned = owned;
	h->token_ttl_s = 0;
	h->token_period_s = 0;
	h->token_renewable = 0;
	h->token_t0_ms = util_now_ms();
}

/* auth.client_token of a login answer, as a secret. */
static int
take_client_token(struct hcv *h, const struct http_response *resp, const char *what,
    struct dmk_err *err)
{
	json_t *root, *auth;
	const char *t;
	struct secret *s;

	if ((root = hcv_parse_body(resp, what, err)) == NULL)
		return err->code;
	auth = json_object_get(root, "auth");
	if ((t = json_string_value(json_object_get(auth, "client_token"))) == NULL || !*t) {
		json_decref(root);
		return dmk_errf(err, DMK_ERR_PROTOCOL, "%s: the answer holds no auth.client_token",
		    what);
	}
	s = secret_from_str(t);
	if (s == NULL) {
		json_decref(root);
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	}
	token_set(h, s, 1);
	/* AppRole, Kubernetes, JWT: Vault names the role in the login's metadata. */
	if ((t = json_string_value(json_object_get(json_object_get(auth, "metadata"),
	    "role_name"))) != NULL && *t)
		snprintf(h->who, sizeof(h->who), "role_name=%.200s", t);
	h->token_ttl_s = hcv_json_num(json_object_get(auth, "lease_duration"));
	h->token_period_s = h->token_ttl_s;
	h->token_renewable = json_is_true(json_object_get(auth, "renewable"));
	json_decref(root);
	return 0;
}

/* GET auth/token/lookup-self: is the token good, and how long does it live? */
int
hcv_token_lookup(struct store *st, struct dmk_err *err)
{
	struct hcv *h = st->priv;
	struct http_response resp;
	json_t *root = NULL, *d;
	long long ttl, cttl, period;
	int r;

	http_response_init(&resp);
	if ((r = hcv_request(st, "GET", "auth/token/lookup-self", NULL, REQ_TOKEN | REQ_NORENEW,
	    NULL, &resp, err)) != 0)
		goto out;
	if (resp.status != 200) {
		r = hcv_vault_fail(&resp, "token lookup (auth/token/lookup-self)", CTX_DATA, err);
		if (r == DMK_ERR_DENIED || r == DMK_ERR_NOTFOUND)
			r = dmk_errf(err, DMK_ERR_AUTH, "%s", err->msg);
		goto out;
	}
	if ((root = hcv_parse_body(&resp, "token lookup", err)) == NULL) {
		r = err->code;
		goto out;
	}
	d = json_object_get(root, "data");
	if (h->who[0] == '\0') {
		const char *rn = json_string_value(json_object_get(json_object_get(d, "meta"),
		    "role_name")), *dn = json_string_value(json_object_get(d, "display_name"));
		if (rn != NULL && *rn)
			snprintf(h->who, sizeof(h->who), "role_name=%.200s", rn);
		else if (dn != NULL && *dn)
			snprintf(h->who, sizeof(h->who), "display_name=%.200s", dn);
	}
	ttl = hcv_json_secs(json_object_get(d, "ttl"));
	cttl = hcv_json_secs(json_object_get(d, "creation_ttl"));
	period = hcv_json_secs(json_object_get(d, "period"));
	h->token_ttl_s = ttl;
	h->token_period_s = period > 0 ? period : cttl > 0 ? cttl : ttl;
	h->token_renewable = json_is_true(json_object_get(d, "renewable"));
	h->token_t0_ms = util_now_ms();
	if (ttl > 0)
		log_debug("Vault token: ttl %llds of %llds, %srenewable", ttl, h->token_period_s,
		    h->token_renewable ? "" : "not ");
out:
	json_decref(root);
	http_response_free(&resp);
	return r;
}

/* Renew when less than a third of the TTL is left; failure is only a warning. */
int
hcv_maybe_renew(struct store *st, struct dmk_err *err)
{
	struct hcv *h = st->priv;
	struct http_response resp;
	struct buf body;
	struct dmk_err e;
	json_t *root;
	long long left_ms;
	int r;

	if (h->token == NULL || h->renewing || !h->token_renewable || h->token_ttl_s <= 0 ||
	    h->token_period_s <= 0)
		return 0;
	left_ms = h->token_ttl_s * 1000 - (util_now_ms() - h->token_t0_ms);
	if (left_ms * 3 >= h->token_period_s * 1000)
		return 0;
	h->renewing = 1;
	http_response_init(&resp);
	buf_init_locked(&body, 256);
	buf_printf(&body, "{\"increment\":\"%llds\"}", h->token_period_s);
	r = hcv_request(st, "POST", "auth/token/renew-self", &body, REQ_TOKEN | REQ_NORENEW,
	    NULL, &resp, &e);
	if (r == 0 && resp.status == 200 &&
	    (root = json_loadb(resp.body.data, resp.body.len, 0, NULL)) != NULL) {
		json_t *auth = json_object_get(root, "auth");
		long long nt = hcv_json_num(json_object_get(auth, "lease_duration"));
		h->token_t0_ms = util_now_ms();
		if (nt > 0)
			h->token_ttl_s = nt;
		h->token_renewable = json_is_true(json_object_get(auth, "renewable"));
		if (nt * 1000 <= left_ms)
			h->token_renewable = 0;  /* capped by max TTL: stop trying */
		log_debug("Vault token renewed: ttl %llds", h->token_ttl_s);
		json_decref(root);
	} else {
		if (r == 0)
			hcv_vault_fail(&resp, "token renewal (auth/token/renew-self)", CTX_DATA, &e);
		log_warn("Vault token renewal failed, going on with the current token: %s", e.msg);
		h->token_renewable = 0;
	}
	buf_free(&body);
	http_response_free(&resp);
	h->renewing = 0;
	return 0;
}

/* ---- authentication ---- */

int
hcv_resolve_ref(struct store *st, const struct secret_ref *ref, const char *key,
    struct secret **out, struct dmk_err *err)
{
	int r;

	*out = NULL;
	if (st->resolve == NULL)
		return dmk_errf(err, DMK_ERR_CONFIG, "'%s' cannot be resolved here", key);
	if ((r = st->resolve(st->resolve_ctx, ref, out, err)) != 0)
		return dmk_err_prefix(err, "'%s' (%s)", key, ref->text);
	return 0;
}

/* A file read without the 0600 rule (a Kubernetes projected token is 0644). */
static int
read_plain_file(const char *path, struct secret **out, struct dmk_err *err)
{
	char chunk[4096];
	struct secret *s;
	ssize_t n;
	int fd, r = 0;

	*out = NULL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: %s", path, strerror(errno));
	if ((s = secret_new()) == NULL) {
		close(fd);
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	}
	while ((n = read(fd, chunk, sizeof(chunk))) > 0)
		if ((r = secret_append(s, chunk, (size_t)n)) != 0)
			break;
	secure_wipe(chunk, sizeof(chunk));
	close(fd);
	if (r != 0 || n < 0) {
		secret_free(s);
		return dmk_errf(err, r ? r : DMK_ERR_IO, "%s: cannot read", path);
	}
	secret_trim_newline(s);
	*out = s;
	return 0;
}

static int
login(struct store *st, const char *what, const struct buf *body, struct dmk_err *err)
{
	struct hcv *h = st->priv;
	struct http_response resp;
	char path[400], desc[500];
	int r;

	snprintf(path, sizeof(path), "auth/%s/login", h->auth_mount);
	snprintf(desc, sizeof(desc), "%s login (%s)", what, path);
	http_response_init(&resp);
	if ((r = hcv_request(st, "POST", path, body, 0, NULL, &resp, err)) != 0)
		goto out;
	if (resp.status != 200) {
		r = hcv_vault_fail(&resp, desc, CTX_LOGIN, err);
		goto out;
	}
	r = take_client_token(h, &resp, desc, err);
out:
	http_response_free(&resp);
	return r;
}

/*
 * A wrapped secret_id: look the wrapping token up first (it must come from
 * a .../secret-id endpoint, or someone handed us a wrapped something else),
 * then unwrap it once.
 */
static int
unwrap_secret_id(struct store *st, const struct secret *wrap, struct secret **out,
    struct dmk_err *err)
{
	struct http_response resp;
	struct buf body;
	json_t *root = NULL;
	const char *cp, *sid;
	size_t n;
	int r;

	*out = NULL;
	http_response_init(&resp);
	buf_init_locked(&body, 64 * 1024);
	if ((r = buf_puts(&body, "{\"token\":")) != 0 ||
	    (r = hcv_json_quote(&body, secret_reveal(wrap), secret_len(wrap))) != 0 ||
	    (r = buf_putc(&body, '}')) != 0) {
		r = dmk_errf(err, r, "wrapping token too long");
		goto out;
	}
	if ((r = hcv_request(st, "POST", "sys/wrapping/lookup", &body, 0, NULL, &resp, err)) != 0)
		goto out;
	if (resp.status != 200) {
		r = hcv_vault_fail(&resp, "secret_id wrapping token lookup (sys/wrapping/lookup)",
		    CTX_LOGIN, err);
		goto out;
	}
	if ((root = hcv_parse_body(&resp, "sys/wrapping/lookup", err)) == NULL) {
		r = err->code;
		goto out;
	}
	cp = json_string_value(json_object_get(json_object_get(root, "data"), "creation_path"));
	n = cp ? strlen(cp) : 0;
	if (n < 10 || strcmp(cp + n - 10, "/secret-id") != 0) {
		r = dmk_errf(err, DMK_ERR_AUTH, "the wrapped secret_id was not created by an "
		    "AppRole secret-id endpoint (creation_path '%s'); refusing to unwrap it",
		    cp ? cp : "");
		goto out;
	}
	json_decref(root);
	root = NULL;
	/* Single use: never retried, the token is the credential. */
	if ((r = hcv_request(st, "POST", "sys/wrapping/unwrap", NULL, REQ_TOKEN | REQ_NORETRY |
	    REQ_NORENEW, wrap, &resp, err)) != 0)
		goto out;
	if (resp.status != 200) {
		r = hcv_vault_fail(&resp, "secret_id unwrap (sys/wrapping/unwrap)", CTX_LOGIN, err);
		goto out;
	}
	if ((root = hcv_parse_body(&resp, "sys/wrapping/unwrap", err)) == NULL) {
		r = err->code;
		goto out;
	}
	sid = json_string_value(json_object_get(json_object_get(root, "data"), "secret_id"));
	if (sid == NULL || *sid == '\0') {
		r = dmk_errf(err, DMK_ERR_PROTOCOL, "sys/wrapping/unwrap: the answer holds no "
		    "data.secret_id");
		goto out;
	}
	if ((*out = secret_from_str(sid)) == NULL)
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
out:
	json_decref(root);
	buf_free(&body);
	http_response_free(&resp);
	return r;
}

int
hcv_auth_approle(struct store *st, struct dmk_err *err)
{
	const struct conf_store *c = st->conf;
	struct secret *sid = NULL, *wrap = NULL;
	struct buf body;
	int r;

	buf_init_locked(&body, 64 * 1024);
	if (hcv_kv_bool(c, "secret_id_wrapped")) {
		if ((r = hcv_resolve_ref(st, hcv_kv_ref(c, "secret_id"), "secret_id", &wrap, err)) != 0)
			goto out;
		if ((r = unwrap_secret_id(st, wrap, &sid, err)) != 0)
			goto out;
	} else if ((r = hcv_resolve_ref(st, hcv_kv_ref(c, "secret_id"), "secret_id", &sid, err)) != 0)
		goto out;
	if ((r = buf_puts(&body, "{\"role_id\":")) != 0 ||
	    (r = hcv_json_quote_str(&body, hcv_kv_str(c, "role_id"))) != 0 ||
	    (r = buf_puts(&body, ",\"secret_id\":")) != 0 ||
	    (r = hcv_json_quote(&body, secret_reveal(sid), secret_len(sid))) != 0 ||
	    (r = buf_putc(&body, '}')) != 0) {
		r = dmk_errf(err, r, "secret_id too long");
		goto out;
	}
	r = login(st, "AppRole", &body, err);
out:
	buf_free(&body);
	secret_free(sid);
	secret_free(wrap);
	return r;
}

int
hcv_auth_jwtlike(struct store *st, int k8s, struct dmk_err *err)
{
	const struct conf_store *c = st->conf;
	const struct secret_ref *jr = hcv_kv_ref(c, "jwt");
	struct secret *jwt = NULL;
	struct buf body;
	int r;

	buf_init_locked(&body, 256 * 1024);
	if (jr != NULL)
		r = hcv_resolve_ref(st, jr, "jwt", &jwt, err);
	else
		r = read_plain_file(HCV_K8S_TOKEN, &jwt, err);
	if (r != 0)
		goto out;
	if ((r = buf_puts(&body, "{\"role\":")) != 0 ||
	    (r = hcv_json_quote_str(&body, hcv_kv_str(c, "role"))) != 0 ||
	    (r = buf_puts(&body, ",\"jwt\":")) != 0 ||
	    (r = hcv_json_quote(&body, secret_reveal(jwt), secret_len(jwt))) != 0 ||
	    (r = buf_putc(&body, '}')) != 0) {
		r = dmk_errf(err, r, "jwt too long");
		goto out;
	}
	r = login(st, k8s ? "Kubernetes" : "JWT", &body, err);
out:
	buf_free(&body);
	secret_free(jwt);
	return r;
}

int
hcv_auth_cert(struct store *st, struct dmk_err *err)
{
	const char *role = hcv_kv_str(st->conf, "role");
	struct buf body;
	int r;

	buf_init_locked(&body, 4096);
	if (role) {
		if ((r = buf_puts(&body, "{\"name\":")) != 0 ||
		    (r = hcv_json_quote_str(&body, role)) != 0 || (r = buf_putc(&body, '}')) != 0) {
			buf_free(&body);
			return dmk_errf(err, r, "role too long");
		}
	} else
		buf_puts(&body, "{}");
	r = login(st, "TLS certificate", &body, err);
	buf_free(&body);
	return r;
}

int
hcv_auth_token(struct store *st, struct dmk_err *err)
{
	struct hcv *h = st->priv;
	const struct secret_ref *tr = hcv_kv_ref(st->conf, "token");
	struct secret *tok = NULL;
	const char *home;
	char path[4096];
	int r;

	if (tr != NULL) {
		if ((r = hcv_resolve_ref(st, tr, "token", &tok, err)) != 0)
			return r;
	} else if (secret_env_present("VAULT_TOKEN")) {
		/* Taken out of the environment (and /proc/PID/environ) on first use. */
		if ((tok = secret_env_take("VAULT_TOKEN")) == NULL)
			return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	} else if ((home = hcv_envstr("HOME")) != NULL) {
		snprintf(path, sizeof(path), "%s/.vault-token", home);
		if (access(path, F_OK) != 0)
			return dmk_errf(err, DMK_ERR_CONFIG, "no Vault token: set 'token' in "
			    "[store %s], VAULT_TOKEN, or write %s", st->conf->name, path);
		if ((r = read_secret_file(path, &tok, err)) != 0)
			return r;
	} else
		return dmk_errf(err, DMK_ERR_CONFIG, "no Vault token: set 'token' in [store %s] "
		    "or VAULT_TOKEN", st->conf->name);
	if (secret_len(tok) == 0) {
		secret_free(tok);
		return dmk_errf(err, DMK_ERR_CONFIG, "the Vault token is empty");
	}
	token_set(h, tok, 0);
	return 0;
}
