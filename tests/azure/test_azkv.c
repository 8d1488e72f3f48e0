/*
 * test_azkv.c: the Azure Key Vault provider against recorded responses.
 *
 * Each test parses a [store] section, installs a replay HTTP client in
 * st->http and calls prov_azkv.open itself (store_open would zero st and
 * create a curl client).  The replay client records what was sent, so the
 * tests check requests (challenge probe without a token, token forms,
 * headers) as well as results.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "agent/config.h"
#include "providers/provider.h"
#include "providers/azure.h"

extern const struct prov_ops prov_azkv;

#define TENANT "11111111-2222-3333-4444-555555555555"
#define CLIENT "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
#define CANARY_SECRET "canary-client-secret-7f3e9a"
#define CANARY_TOKEN "canary-token-e5d1c2"
#define CANARY_VALUE "canary-value-4b8d0f"
#define V1 "0123456789abcdef0123456789abcdef"
#define V2 "11111111111111111111111111111111"
#define V3 "22222222222222222222222222222222"

#define CHALLENGE "WWW-Authenticate: Bearer authorization=\"https://login.windows.net/" TENANT \
	"\", resource=\"https://vault.azure.net\"\n"
#define UNAUTH "{\"error\":{\"code\":\"Unauthorized\",\"message\":\"AKV10000: Request is " \
	"missing a Bearer or PoP token.\"}}"
#define TOKEN_OK "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"ext_expires_in\":3599," \
	"\"access_token\":\"" CANARY_TOKEN "\"}"
#define LIST_EMPTY "{\"value\":[],\"nextLink\":null}"
#define BUNDLE(ver, extra) "{\"value\":\"" CANARY_VALUE "\",\"id\":\"https://myvault.vault." \
	"azure.net/secrets/db1/" ver "\",\"attributes\":{\"enabled\":true,\"created\":1700000000," \
	"\"updated\":1700000000,\"recoveryLevel\":\"Recoverable+Purgeable\"}" extra "}"

#define E_CHALLENGE { 401, UNAUTH, CHALLENGE }
#define E_TOKEN { 200, TOKEN_OK, "Content-Type: application/json\n" }
#define E_OPEN E_CHALLENGE, E_TOKEN, { 200, LIST_EMPTY, NULL }

static const char *conf_secret =
    "[store akv]\ntype = azure-key-vault\nvault_url = https://myvault.vault.azure.net\n"
    "auth = client-secret\ntenant_id = " TENANT "\nclient_id = " CLIENT "\n"
    "client_secret = env:AZKV_TEST_SECRET\n";

struct fx {
	struct config *cfg;
	struct store st;
	struct http_replay rp;
	struct dmk_err err;
	struct http_replay_entry e[64];
};

static int
test_resolve(void *ctx, const struct secret_ref *ref, struct secret **out, struct dmk_err *err)
{
	const char *v = ctx;

	(void)ref;
	*out = secret_from_str(v ? v : CANARY_SECRET);
	return *out ? 0 : dmk_errf(err, DMK_ERR_NOMEM, "oom");
}

static struct fx *
fx_new(const char *conf, const struct http_replay_entry *e, size_t n)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct dmk_err err;

	assert_non_null(f);
	if (config_parse_string(conf, "test.conf", &f->cfg, &err) != 0)
		fail_msg("config: %s", err.msg);
	assert_true(n <= 64);
	memcpy(f->e, e, n * sizeof(*e));
	f->rp.entries = f->e;
	f->rp.n = n;
	f->st.conf = &f->cfg->stores[0];
	f->st.ops = &prov_azkv;
	f->st.priv = calloc(1, prov_azkv.priv_size);
	f->st.resolve = test_resolve;
	http_client_replay(&f->st.http, &f->rp);
	return f;
}

static int
fx_open(struct fx *f)
{
	dmk_err_clear(&f->err);
	return prov_azkv.open(&f->st, &f->err);
}

static void
fx_free(struct fx *f)
{
	prov_azkv.close(&f->st);
	free(f->st.priv);
	http_replay_free(&f->rp);
	config_free(f->cfg);
	free(f);
}

/* The canary: no credential, token or value in any message. */
static void
assert_clean(const char *msg)
{
	assert_null(strstr(msg, CANARY_SECRET));
	assert_null(strstr(msg, CANARY_TOKEN));
	assert_null(strstr(msg, CANARY_VALUE));
}

static size_t
count_method(struct fx *f, const char *m)
{
	size_t i, n = 0;

	for (i = 0; i < f->rp.nseen; i++)
		if (strcmp(f->rp.seen_method[i], m) == 0)
			n++;
	return n;
}

static struct secret_ref
mkref(const char *path, const char *field)
{
	struct secret_ref r;

	memset(&r, 0, sizeof(r));
	r.kind = REF_STORE;
	strcpy(r.store, "akv");
	strcpy(r.path, path);
	if (field)
		strcpy(r.field, field);
	snprintf(r.text, sizeof(r.text), "akv:%s%s%s", path, field ? "#" : "", field ? field : "");
	return r;
}

/* ---- the challenge parser ---- */

static void
t_challenge_parse(void **state)
{
	struct az_challenge ch;
	struct dmk_err err;

	(void)state;
	assert_int_equal(az_challenge_parse("Bearer authorization=\"https://login.windows.net/"
	    TENANT "\", resource=\"https://vault.azure.net\"", &ch, &err), 0);
	assert_string_equal(ch.tenant, TENANT);
	assert_string_equal(ch.resource, "https://vault.azure.net");
	assert_string_equal(ch.scope, "https://vault.azure.net/.default");

	assert_int_equal(az_challenge_parse("Bearer authorization_uri=https://login.example/t1/"
	    "oauth2/authorize scope=\"https://vault.azure.cn/.default\"", &ch, &err), 0);
	assert_string_equal(ch.tenant, "t1");
	assert_string_equal(ch.scope, "https://vault.azure.cn/.default");
	assert_string_equal(ch.resource, "https://vault.azure.cn");

	assert_int_equal(az_challenge_parse("bearer  resource=\"https://vault.azure.net/\","
	    "authorization=\"https://login.microsoftonline.com/" TENANT "\"", &ch, &err), 0);
	assert_string_equal(ch.scope, "https://vault.azure.net/.default");

	assert_int_equal(az_challenge_parse("Basic realm=\"x\"", &ch, &err), DMK_ERR_PROTOCOL);
	assert_int_equal(az_challenge_parse("Bearer resource=\"https://vault.azure.net\"", &ch,
	    &err), DMK_ERR_PROTOCOL);
	assert_int_equal(az_challenge_parse("Bearer authorization=\"https://login/\", "
	    "resource=\"https://vault.azure.net\"", &ch, &err), DMK_ERR_PROTOCOL);
	assert_int_equal(az_challenge_parse("Bearer authorization=\"https://login/t\"", &ch, &err),
	    DMK_ERR_PROTOCOL);
	assert_int_equal(az_challenge_parse("Bearer authorization=\"https://login/t", &ch, &err),
	    DMK_ERR_PROTOCOL);
}

static void
t_token_parse(void **state)
{
	struct secret *tok;
	struct dmk_err err;
	time_t exp;

	(void)state;
	assert_int_equal(az_token_parse(TOKEN_OK, strlen(TOKEN_OK), 1000, &tok, &exp, &err), 0);
	assert_int_equal(exp, 1000 + 3599);
	assert_string_equal(secret_reveal(tok), CANARY_TOKEN);
	secret_free(tok);
	/* IMDS: every value a string; expires_on wins over expires_in. */
	const char *imds = "{\"access_token\":\"abc\",\"refresh_token\":\"\",\"expires_in\":\"3599\","
	    "\"expires_on\":\"1506484173\",\"not_before\":\"1506480273\",\"resource\":"
	    "\"https://vault.azure.net\",\"token_type\":\"Bearer\"}";
	assert_int_equal(az_token_parse(imds, strlen(imds), 1000, &tok, &exp, &err), 0);
	assert_int_equal(exp, 1506484173);
	secret_free(tok);
	const char *num = "{\"access_token\":\"abc\",\"expires_on\":1586984735}";
	assert_int_equal(az_token_parse(num, strlen(num), 1000, &tok, &exp, &err), 0);
	assert_int_equal(exp, 1586984735);
	secret_free(tok);
	const char *noexp = "{\"access_token\":\"abc\"}";
	assert_int_equal(az_token_parse(noexp, strlen(noexp), 0, &tok, &exp, &err),
	    DMK_ERR_PROTOCOL);
	assert_null(tok);
	const char *ctl = "{\"access_token\":\"a\\r\\nX-Evil: 1\",\"expires_in\":10}";
	assert_int_equal(az_token_parse(ctl, strlen(ctl), 0, &tok, &exp, &err), DMK_ERR_PROTOCOL);
	assert_int_equal(az_token_parse("[1]", 3, 0, &tok, &exp, &err), DMK_ERR_PROTOCOL);
	/* A real out of a long long's range is no time (fuzz_azkv; UBSan caught the cast). */
	const char *huge = "{\"access_token\":\"abc\",\"expires_on\":1e300}";
	assert_int_equal(az_token_parse(huge, strlen(huge), 0, &tok, &exp, &err), DMK_ERR_PROTOCOL);
	assert_null(tok);
	const char *huge2 = "{\"access_token\":\"abc\",\"expires_on\":-1e300,\"expires_in\":60.0}";
	assert_int_equal(az_token_parse(huge2, strlen(huge2), 1000, &tok, &exp, &err), 0);
	assert_int_equal(exp, 1060);
	secret_free(tok);
}

/* ---- open, challenge, token ---- */

static void
t_open_client_secret(void **state)
{
	const struct http_replay_entry e[] = { E_OPEN };
	struct fx *f = fx_new(conf_secret, e, 3);

	(void)state;
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(f->rp.nseen, 3);
	/* The probe: no token, as the SDKs do. */
	assert_null(strstr(f->rp.seen_headers[0], "Authorization"));
	assert_string_equal(f->rp.seen_url[0],
	    "https://myvault.vault.azure.net/secrets?api-version=7.5&maxresults=1");
	assert_string_equal(f->rp.seen_method[1], "POST");
	assert_string_equal(f->rp.seen_url[1],
	    "https://login.microsoftonline.com/" TENANT "/oauth2/v2.0/token");
	assert_string_equal(f->rp.seen_body[1], "client_id=" CLIENT
	    "&scope=https%3A%2F%2Fvault.azure.net%2F.default&client_secret=" CANARY_SECRET
	    "&grant_type=client_credentials");
	assert_non_null(strstr(f->rp.seen_headers[1],
	    "Content-Type: application/x-www-form-urlencoded"));
	assert_non_null(strstr(f->rp.seen_headers[2], "Authorization: Bearer " CANARY_TOKEN));
	fx_free(f);
}

static void
t_wrong_tenant(void **state)
{
	const struct http_replay_entry e[] = {
		{ 401, UNAUTH, "WWW-Authenticate: Bearer authorization=\"https://login.windows.net/"
		  "99999999-0000-0000-0000-000000000000\", resource=\"https://vault.azure.net\"\n" },
	};
	struct fx *f = fx_new(conf_secret, e, 1);

	(void)state;
	assert_int_equal(fx_open(f), DMK_ERR_AUTH);
	assert_non_null(strstr(f->err.msg, "tenant 99999999"));
	assert_int_equal(f->rp.nseen, 1);   /* no token was asked for */
	fx_free(f);
}

static void
t_resource_mismatch(void **state)
{
	const struct http_replay_entry e[] = {
		{ 401, UNAUTH, "WWW-Authenticate: Bearer authorization=\"https://login.windows.net/"
		  TENANT "\", resource=\"https://vault.evil.example\"\n" },
		E_TOKEN, { 200, LIST_EMPTY, NULL },
	};
	const struct http_replay_entry ok[] = { E_OPEN };
	struct fx *f = fx_new(conf_secret, e, 3);
	char conf[2048];

	(void)state;
	assert_int_equal(fx_open(f), DMK_ERR_AUTH);
	assert_non_null(strstr(f->err.msg, "not https://vault.azure.net"));
	assert_int_equal(f->rp.nseen, 1);
	fx_free(f);

	/*
	 * A test vault on 127.0.0.1 is under no Key Vault suffix: the opt-out
	 * drops the host check, not the resource check (the server never picks
	 * the token's audience).
	 */
	snprintf(conf, sizeof(conf), "[store akv]\ntype = azure-key-vault\n"
	    "vault_url = https://127.0.0.1:8443\nauth = client-secret\ntenant_id = " TENANT
	    "\nclient_id = " CLIENT "\nclient_secret = env:AZKV_TEST_SECRET\n"
	    "challenge_resource_verification = no\n");
	f = fx_new(conf, e, 3);
	assert_int_equal(fx_open(f), DMK_ERR_AUTH);
	assert_int_equal(f->rp.nseen, 1);
	fx_free(f);
	f = fx_new(conf, ok, 3);
	assert_int_equal(fx_open(f), 0);
	assert_non_null(strstr(f->rp.seen_body[1], "scope=https%3A%2F%2Fvault.azure.net%2F.default"));
	fx_free(f);
}

/* The challenge's scope= never chooses the token's audience. */
static void
t_challenge_scope_ignored(void **state)
{
	const struct http_replay_entry e[] = {
		{ 401, UNAUTH, "WWW-Authenticate: Bearer authorization=\"https://login.windows.net/"
		  TENANT "\", resource=\"https://vault.azure.net\", "
		  "scope=\"https://management.azure.com/.default\"\n" },
		E_TOKEN, { 200, LIST_EMPTY, NULL },
	};
	const struct http_replay_entry e2[] = {
		{ 401, UNAUTH, "WWW-Authenticate: Bearer authorization=\"https://login.windows.net/"
		  TENANT "\", scope=\"https://management.azure.com/.default\"\n" },
		E_TOKEN, { 200, LIST_EMPTY, NULL },
	};
	struct fx *f = fx_new(conf_secret, e, 3);

	(void)state;
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(f->rp.nseen, 3);
	assert_non_null(strstr(f->rp.seen_body[1], "scope=https%3A%2F%2Fvault.azure.net%2F.default"));
	assert_null(strstr(f->rp.seen_body[1], "management"));
	fx_free(f);
	/* A scope alone, of another resource: refused before any token. */
	f = fx_new(conf_secret, e2, 3);
	assert_int_equal(fx_open(f), DMK_ERR_AUTH);
	assert_int_equal(f->rp.nseen, 1);
	fx_free(f);
}

/* The vault host must be NAME.<the cloud's Key Vault suffix>. */
static void
t_vault_host_suffix(void **state)
{
	static const char *bad[] = {
		"https://1", "https://kv.1", "https://myvault.vault.evil.example",
		"https://vault.azure.net", "https://a.b.vault.azure.net",
		"https://myvault.vault.azure.net.evil.example", "https://myvault.vault.azure.cn",
	};
	const struct http_replay_entry one[] = {
		{ 401, UNAUTH, "WWW-Authenticate: Bearer authorization=\"https://login.windows.net/"
		  TENANT "\", resource=\"https://1\"\n" },
		E_TOKEN, { 200, LIST_EMPTY, NULL },
	};
	const struct http_replay_entry cn[] = {
		{ 401, UNAUTH, "WWW-Authenticate: Bearer authorization=\"https://login.chinacloudapi.cn/"
		  TENANT "\", resource=\"https://vault.azure.cn\"\n" },
		E_TOKEN, { 200, LIST_EMPTY, NULL },
	};
	struct config *cfg = NULL;
	struct dmk_err err;
	char conf[2048];
	struct fx *f;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(conf, sizeof(conf), "[store akv]\ntype = azure-key-vault\nvault_url = %s\n"
		    "auth = client-secret\ntenant_id = " TENANT "\nclient_id = " CLIENT "\n"
		    "client_secret = env:AZKV_TEST_SECRET\n", bad[i]);
		assert_int_equal(config_parse_string(conf, "test.conf", &cfg, &err), DMK_ERR_CONFIG);
		assert_non_null(strstr(err.msg, "is not a vault under vault.azure.net"));
	}
	/* Past the config check (a replayed open): a one-label resource is refused. */
	snprintf(conf, sizeof(conf), "%svault_dns_suffix = vault.azure.cn\n", conf_secret);
	assert_int_equal(config_parse_string(conf, "test.conf", &cfg, &err), DMK_ERR_CONFIG);
	snprintf(conf, sizeof(conf), "[store akv]\ntype = azure-key-vault\nvault_url = "
	    "https://kv.1\nauth = client-secret\ntenant_id = " TENANT "\nclient_id = " CLIENT
	    "\nclient_secret = env:AZKV_TEST_SECRET\nchallenge_resource_verification = no\n");
	f = fx_new(conf, one, 3);
	assert_int_equal(fx_open(f), DMK_ERR_AUTH);
	assert_int_equal(f->rp.nseen, 1);
	fx_free(f);
	/* The China cloud: its own suffix and scope. */
	snprintf(conf, sizeof(conf), "[store akv]\ntype = azure-key-vault\nvault_url = "
	    "https://myvault.vault.azure.cn\ncloud = china\nauth = client-secret\ntenant_id = "
	    TENANT "\nclient_id = " CLIENT "\nclient_secret = env:AZKV_TEST_SECRET\n");
	f = fx_new(conf, cn, 3);
	assert_int_equal(fx_open(f), 0);
	assert_non_null(strstr(f->rp.seen_body[1], "scope=https%3A%2F%2Fvault.azure.cn%2F.default"));
	fx_free(f);
	/* A vault_dns_suffix that is no suffix. */
	snprintf(conf, sizeof(conf), "%svault_dns_suffix = net\n", conf_secret);
	assert_int_equal(config_parse_string(conf, "test.conf", &cfg, &err), DMK_ERR_CONFIG);
	assert_non_null(strstr(err.msg, "vault_dns_suffix"));
}

static void
t_token_cached(void **state)
{
	const struct http_replay_entry e[] = {
		E_OPEN, { 200, BUNDLE(V1, ""), NULL }, { 200, BUNDLE(V1, ""), NULL },
	};
	struct fx *f = fx_new(conf_secret, e, 5);
	struct secret_ref ref = mkref("db1", NULL);
	struct secret *s = NULL;
	struct prov_version v;

	(void)state;
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.get(&f->st, &ref, NULL, &s, &v, &f->err), 0);
	secret_free(s);
	assert_int_equal(prov_azkv.get(&f->st, &ref, NULL, &s, &v, &f->err), 0);
	secret_free(s);
	assert_int_equal(count_method(f, "POST"), 1);
	fx_free(f);
}

/* Refresh five minutes before expiry: 299 s left is too little, 3600 s is plenty. */
static void
t_token_refresh(void **state)
{
	char soon[256], later[256];
	struct http_replay_entry e[] = {
		E_CHALLENGE, { 200, soon, NULL }, { 200, LIST_EMPTY, NULL },
		{ 200, later, NULL }, { 200, BUNDLE(V1, ""), NULL },
		{ 200, BUNDLE(V1, ""), NULL },
	};
	struct secret_ref ref = mkref("db1", NULL);
	struct secret *s = NULL;
	struct fx *f;

	(void)state;
	/* expires_on as a number, then as a string. */
	snprintf(soon, sizeof(soon), "{\"token_type\":\"Bearer\",\"access_token\":\"t1\","
	    "\"expires_on\":%lld}", (long long)time(NULL) + 299);
	snprintf(later, sizeof(later), "{\"token_type\":\"Bearer\",\"access_token\":\"t2\","
	    "\"expires_on\":\"%lld\"}", (long long)time(NULL) + 3600);
	f = fx_new(conf_secret, e, 6);
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.get(&f->st, &ref, NULL, &s, NULL, &f->err), 0);
	secret_free(s);
	assert_int_equal(prov_azkv.get(&f->st, &ref, NULL, &s, NULL, &f->err), 0);
	secret_free(s);
	assert_int_equal(count_method(f, "POST"), 2);
	assert_non_null(strstr(f->rp.seen_headers[2], "Bearer t1"));
	assert_non_null(strstr(f->rp.seen_headers[4], "Bearer t2"));
	assert_non_null(strstr(f->rp.seen_headers[5], "Bearer t2"));
	fx_free(f);
}

/* A token revoked early: the 401 with a challenge gets one fresh token. */
static void
t_token_rejected_refetch(void **state)
{
	const struct http_replay_entry e[] = {
		E_OPEN, E_CHALLENGE, E_TOKEN, { 200, BUNDLE(V1, ""), NULL },
	};
	struct fx *f = fx_new(conf_secret, e, 6);
	struct secret_ref ref = mkref("db1", NULL);
	struct secret *s = NULL;

	(void)state;
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.get(&f->st, &ref, NULL, &s, NULL, &f->err), 0);
	secret_free(s);
	assert_int_equal(count_method(f, "POST"), 2);
	fx_free(f);

	/* ... but only once. */
	const struct http_replay_entry e2[] = { E_OPEN, E_CHALLENGE, E_TOKEN, E_CHALLENGE };
	f = fx_new(conf_secret, e2, 6);
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.get(&f->st, &ref, NULL, &s, NULL, &f->err), DMK_ERR_AUTH);
	assert_non_null(strstr(f->err.msg, "HTTP 401"));
	assert_clean(f->err.msg);
	fx_free(f);
}

static void
t_token_error(void **state)
{
	const struct http_replay_entry e[] = {
		E_CHALLENGE,
		{ 401, "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS7000215: Invalid "
		  "client secret provided.\\r\\nTrace ID: x\",\"error_codes\":[7000215]}", NULL },
	};
	struct fx *f = fx_new(conf_secret, e, 2);

	(void)state;
	assert_int_equal(fx_open(f), DMK_ERR_AUTH);
	assert_non_null(strstr(f->err.msg, "invalid_client"));
	assert_non_null(strstr(f->err.msg, "AADSTS7000215"));
	assert_null(strchr(f->err.msg, '\n'));
	assert_clean(f->err.msg);
	fx_free(f);

	/* A server that echoes the secret back: the text is withheld. */
	const struct http_replay_entry e2[] = {
		E_CHALLENGE,
		{ 400, "{\"error\":\"invalid_request\",\"error_description\":\"bad secret "
		  CANARY_SECRET "\"}", NULL },
	};
	f = fx_new(conf_secret, e2, 2);
	assert_int_equal(fx_open(f), DMK_ERR_AUTH);
	assert_non_null(strstr(f->err.msg, "withheld"));
	assert_clean(f->err.msg);
	fx_free(f);
}

/* ---- reading ---- */

static void
t_get_ok(void **state)
{
	const struct http_replay_entry e[] = {
		E_OPEN, { 200, BUNDLE(V1, ",\"tags\":{\"dmkagent-state\":\"current\",\"other\":\"x\"}"),
		  NULL },
	};
	struct fx *f = fx_new(conf_secret, e, 4);
	struct secret_ref ref = mkref("db1", NULL);
	struct secret *s = NULL;
	struct prov_version v;

	(void)state;
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.get(&f->st, &ref, V1, &s, &v, &f->err), 0);
	assert_string_equal(secret_reveal(s), CANARY_VALUE);
	assert_string_equal(v.id, V1);
	assert_int_equal(v.created, 1700000000);
	assert_string_equal(prov_meta_get(&v.meta, "dmkagent-state"), "current");
	assert_string_equal(f->rp.seen_url[3],
	    "https://myvault.vault.azure.net/secrets/db1/" V1 "?api-version=7.5");
	secret_free(s);
	fx_free(f);
}

static void
t_bad_refs(void **state)
{
	const struct http_replay_entry e[] = { E_OPEN };
	struct fx *f = fx_new(conf_secret, e, 3);
	struct secret_ref ref = mkref("db1", "password"), bad = mkref("db_1", NULL);
	struct secret *s = NULL, *big;
	struct prov_version v;
	char *blob = malloc(25601);

	(void)state;
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.get(&f->st, &ref, NULL, &s, &v, &f->err), DMK_ERR_CONFIG);
	assert_non_null(strstr(f->err.msg, "#password"));
	assert_int_equal(prov_azkv.get(&f->st, &bad, NULL, &s, &v, &f->err), DMK_ERR_CONFIG);
	ref = mkref("db1", NULL);
	assert_int_equal(prov_azkv.get(&f->st, &ref, "../x", &s, &v, &f->err), DMK_ERR_BADINPUT);
	memset(blob, 'a', 25601);
	big = secret_from(blob, 25601);
	assert_int_equal(prov_azkv.put(&f->st, &ref, big, NULL, NULL, &v, &f->err), DMK_ERR_TOOBIG);
	assert_int_equal(f->rp.nseen, 3);   /* nothing reached the wire */
	secret_free(big);
	free(blob);
	fx_free(f);
}

static void
t_not_found(void **state)
{
	const struct http_replay_entry e[] = {
		E_OPEN,
		{ 404, "{\"error\":{\"code\":\"SecretNotFound\",\"message\":\"A secret with (name/id) "
		  "db1 was not found in this key vault.\"}}", NULL },
		{ 404, "{\"error\":{\"code\":\"SecretNotFound\",\"message\":\"Deleted Secret not "
		  "found: db1\"}}", NULL },
	};
	struct fx *f = fx_new(conf_secret, e, 5);
	struct secret_ref ref = mkref("db1", NULL);
	struct secret *s = NULL;
	struct prov_version v;

	(void)state;
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.get(&f->st, &ref, NULL, &s, &v, &f->err), DMK_ERR_NOTFOUND);
	assert_non_null(strstr(f->err.msg, "HTTP 404 SecretNotFound"));
	assert_non_null(strstr(f->rp.seen_url[4], "/deletedsecrets/db1?"));
	assert_null(s);
	fx_free(f);
}

static void
t_deleted(void **state)
{
	const struct http_replay_entry e[] = {
		E_OPEN,
		{ 404, "{\"error\":{\"code\":\"SecretNotFound\",\"message\":\"not found\"}}", NULL },
		{ 200, "{\"recoveryId\":\"https://myvault.vault.azure.net/deletedsecrets/db1\","
		  "\"id\":\"https://myvault.vault.azure.net/secrets/db1/" V1 "\"}", NULL },
	};
	struct fx *f = fx_new(conf_secret, e, 5);
	struct secret_ref ref = mkref("db1", NULL);
	struct secret *s = NULL;
	struct prov_version v;

	(void)state;
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.get(&f->st, &ref, NULL, &s, &v, &f->err), DMK_ERR_DELETED);
	assert_true(v.deleted);
	assert_non_null(strstr(f->err.msg, "deleted"));
	fx_free(f);

	/* create-only put on a deleted name: reported, never recreated. */
	f = fx_new(conf_secret, e, 5);
	struct secret *val = secret_from_str("x");
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.put(&f->st, &ref, val, "0", NULL, &v, &f->err), DMK_ERR_DELETED);
	assert_int_equal(count_method(f, "PUT"), 0);
	secret_free(val);
	fx_free(f);
}

static void
t_put_409_deleted(void **state)
{
	const struct http_replay_entry e[] = {
		E_OPEN,
		{ 409, "{\"error\":{\"code\":\"Conflict\",\"message\":\"Secret db1 is currently in a "
		  "deleted but recoverable state, and its name cannot be reused; in this state, the "
		  "secret can only be recovered or purged.\",\"innererror\":{\"code\":"
		  "\"ObjectIsDeletedButRecoverable\"}}}", NULL },
	};
	struct fx *f = fx_new(conf_secret, e, 4);
	struct secret_ref ref = mkref("db1", NULL);
	struct secret *val = secret_from_str(CANARY_VALUE);
	struct prov_version v;

	(void)state;
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.put(&f->st, &ref, val, NULL, NULL, &v, &f->err), DMK_ERR_DELETED);
	assert_non_null(strstr(f->err.msg, "ObjectIsDeletedButRecoverable"));
	assert_non_null(strstr(f->err.msg, "HTTP 409"));
	assert_non_null(strstr(f->err.msg, "recover or purge"));
	assert_clean(f->err.msg);
	/* The value went only in the authenticated PUT's body. */
	assert_non_null(strstr(f->rp.seen_body[3], CANARY_VALUE));
	assert_null(f->rp.seen_body[0]);
	secret_free(val);
	fx_free(f);
}

static void
t_forbidden(void **state)
{
	const struct http_replay_entry e[] = {
		E_OPEN,
		{ 403, "{\"error\":{\"code\":\"Forbidden\",\"message\":\"Caller is not authorized to "
		  "perform action on resource.\\r\\nAction: 'Microsoft.KeyVault/vaults/secrets/"
		  "getSecret/action'\",\"innererror\":{\"code\":\"ForbiddenByRbac\"}}}", NULL },
		{ 403, "{\"error\":{\"code\":\"Forbidden\",\"message\":\"Operation get is not allowed "
		  "on a disabled secret.\",\"innererror\":{\"code\":\"SecretDisabled\"}}}", NULL },
	};
	struct fx *f = fx_new(conf_secret, e, 5);
	struct secret_ref ref = mkref("db1", NULL);
	struct secret *s = NULL;
	struct prov_version v;

	(void)state;
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.get(&f->st, &ref, NULL, &s, &v, &f->err), DMK_ERR_DENIED);
	assert_non_null(strstr(f->err.msg, "HTTP 403 Forbidden/ForbiddenByRbac"));
	assert_null(strchr(f->err.msg, '\r'));
	assert_int_equal(prov_azkv.get(&f->st, &ref, NULL, &s, &v, &f->err), DMK_ERR_DENIED);
	assert_non_null(strstr(f->err.msg, "SecretDisabled"));
	fx_free(f);
}

static void
t_throttle(void **state)
{
	const struct http_replay_entry e[] = {
		E_OPEN,
		{ 429, "{\"error\":{\"code\":\"Throttled\",\"message\":\"slow down\"}}",
		  "Retry-After: 3\n" },
		{ 200, BUNDLE(V1, ""), NULL },
	};
	struct fx *f = fx_new(conf_secret, e, 5);
	struct secret_ref ref = mkref("db1", NULL);
	struct secret *s = NULL;
	struct prov_version v;

	(void)state;
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.get(&f->st, &ref, NULL, &s, &v, &f->err), 0);
	assert_int_equal(f->st.http.slept_ms, 3000);
	secret_free(s);
	fx_free(f);
}

static void
t_throttle_storm_and_5xx(void **state)
{
	struct http_replay_entry e[16] = { E_OPEN };
	struct secret_ref ref = mkref("db1", NULL);
	struct secret *s = NULL;
	struct prov_version v;
	struct fx *f;
	size_t i;

	(void)state;
	for (i = 3; i < 8; i++)
		e[i] = (struct http_replay_entry){ 429, "{\"error\":{\"code\":\"Throttled\","
		    "\"message\":\"Too many requests\"}}", "Retry-After: 1\n" };
	f = fx_new(conf_secret, e, 8);
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.get(&f->st, &ref, NULL, &s, &v, &f->err), DMK_ERR_UNREACHABLE);
	assert_non_null(strstr(f->err.msg, "HTTP 429 (throttled) after retries Throttled"));
	assert_int_equal(f->rp.nseen, 8);
	assert_int_equal(dmk_exit_code(f->err.code), DMK_EXIT_UNREACHABLE);
	fx_free(f);

	for (i = 3; i < 8; i++)
		e[i] = (struct http_replay_entry){ 503, "", NULL };
	f = fx_new(conf_secret, e, 8);
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.get(&f->st, &ref, NULL, &s, &v, &f->err), DMK_ERR_UNREACHABLE);
	assert_non_null(strstr(f->err.msg, "HTTP 503 after retries"));
	assert_true(f->st.http.slept_ms > 0);
	fx_free(f);

	/* Connection failures are retried too, then reported. */
	for (i = 3; i < 8; i++)
		e[i] = (struct http_replay_entry){ 0, NULL, NULL };
	f = fx_new(conf_secret, e, 8);
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.get(&f->st, &ref, NULL, &s, &v, &f->err), DMK_ERR_UNREACHABLE);
	assert_int_equal(f->rp.nseen, 8);
	fx_free(f);
}

#define ITEM(ver, created, tags) "{\"id\":\"https://myvault.vault.azure.net/secrets/db1/" ver \
	"\",\"attributes\":{\"enabled\":true,\"created\":" created "}" tags "}"

static void
t_paging(void **state)
{
	const struct http_replay_entry e[] = {
		E_OPEN,
		{ 200, "{\"value\":[" ITEM(V3, "300", ",\"tags\":{\"dmkagent-state\":\"pending\"}") ","
		  ITEM(V1, "100", "") "],\"nextLink\":\"https://MyVault.vault.azure.net:443/secrets/"
		  "db1/versions?api-version=7.5&$skiptoken=abc&maxresults=2\"}", NULL },
		{ 200, "{\"value\":[" ITEM(V2, "200", "") "],\"nextLink\":null}", NULL },
	};
	struct fx *f = fx_new(conf_secret, e, 5);
	struct secret_ref ref = mkref("db1", NULL);
	struct prov_version *v = NULL;
	size_t n = 0;

	(void)state;
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.list_versions(&f->st, &ref, &v, &n, &f->err), 0);
	assert_int_equal(n, 3);
	assert_string_equal(v[0].id, V1);
	assert_string_equal(v[1].id, V2);
	assert_string_equal(v[2].id, V3);
	assert_string_equal(prov_meta_get(&v[2].meta, "dmkagent-state"), "pending");
	assert_string_equal(f->rp.seen_url[4], "https://MyVault.vault.azure.net:443/secrets/db1/"
	    "versions?api-version=7.5&$skiptoken=abc&maxresults=2");
	assert_non_null(strstr(f->rp.seen_headers[4], "Bearer " CANARY_TOKEN));
	free(v);
	fx_free(f);
}

static void
t_foreign_nextlink(void **state)
{
	static const char *links[] = {
		"https://evil.example.com/secrets/db1/versions?x=1",
		"https://myvault.vault.azure.net:8443/secrets/db1/versions",
		"http://myvault.vault.azure.net/secrets/db1/versions",
		"https://myvault.vault.azure.net@evil.example.com/x",
	};
	size_t i;

	(void)state;
	for (i = 0; i < 4; i++) {
		char body[512];
		struct http_replay_entry e[] = {
			E_OPEN, { 200, body, NULL }, { 200, "{\"value\":[]}", NULL },
		};
		struct secret_ref ref = mkref("db1", NULL);
		struct prov_version *v = NULL;
		size_t n = 0;
		struct fx *f;

		snprintf(body, sizeof(body), "{\"value\":[" ITEM(V1, "100", "") "],\"nextLink\":"
		    "\"%s\"}", links[i]);
		f = fx_new(conf_secret, e, 5);
		assert_int_equal(fx_open(f), 0);
		assert_int_equal(prov_azkv.list_versions(&f->st, &ref, &v, &n, &f->err),
		    DMK_ERR_PROTOCOL);
		assert_non_null(strstr(f->err.msg, "refused"));
		assert_int_equal(f->rp.nseen, 4);   /* the token never went there */
		assert_null(v);
		fx_free(f);
	}
}

/* ---- writing: check-and-set emulation and markers ---- */

static void
t_put_cas(void **state)
{
	const struct http_replay_entry ok[] = {
		E_OPEN, { 200, BUNDLE(V1, ""), NULL }, { 200, BUNDLE(V2, ""), NULL },
		{ 200, BUNDLE(V2, ""), NULL },
	};
	const struct http_replay_entry stale[] = { E_OPEN, { 200, BUNDLE(V3, ""), NULL } };
	const struct http_replay_entry race[] = {
		E_OPEN, { 200, BUNDLE(V1, ""), NULL }, { 200, BUNDLE(V2, ""), NULL },
		{ 200, BUNDLE(V3, ""), NULL },
	};
	const struct http_replay_entry exists[] = { E_OPEN, { 200, BUNDLE(V1, ""), NULL } };
	struct secret_ref ref = mkref("db1", NULL);
	struct secret *val = secret_from_str(CANARY_VALUE);
	struct prov_version v;
	struct fx *f;

	(void)state;
	f = fx_new(conf_secret, ok, 6);
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.put(&f->st, &ref, val, V1, NULL, &v, &f->err), 0);
	assert_string_equal(v.id, V2);
	assert_string_equal(f->rp.seen_method[4], "PUT");
	assert_string_equal(f->rp.seen_method[5], "GET");
	fx_free(f);

	f = fx_new(conf_secret, stale, 4);
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.put(&f->st, &ref, val, V1, NULL, &v, &f->err), DMK_ERR_CONFLICT);
	assert_non_null(strstr(f->err.msg, "found " V3));
	assert_int_equal(count_method(f, "PUT"), 0);
	fx_free(f);

	f = fx_new(conf_secret, race, 6);
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.put(&f->st, &ref, val, V1, NULL, &v, &f->err), DMK_ERR_CONFLICT);
	assert_non_null(strstr(f->err.msg, "raced"));
	assert_clean(f->err.msg);
	fx_free(f);

	f = fx_new(conf_secret, exists, 4);
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.put(&f->st, &ref, val, "0", NULL, &v, &f->err), DMK_ERR_CONFLICT);
	assert_int_equal(count_method(f, "PUT"), 0);
	fx_free(f);
	secret_free(val);
}

static void
t_tags_roundtrip(void **state)
{
	const struct http_replay_entry e[] = {
		E_OPEN,
		{ 200, BUNDLE(V2, ",\"tags\":{\"dmkagent-state\":\"pending\",\"dmkagent-rotation\":"
		  "\"r1\"}"), NULL },
		{ 200, BUNDLE(V2, ",\"tags\":{\"dmkagent-state\":\"pending\",\"dmkagent-rotation\":"
		  "\"r1\"}"), NULL },
		{ 200, BUNDLE(V2, ",\"tags\":{\"dmkagent-state\":\"current\",\"dmkagent-rotation\":"
		  "\"r1\"}"), NULL },
	};
	struct fx *f = fx_new(conf_secret, e, 6);
	struct secret_ref ref = mkref("db1", NULL);
	struct secret *val = secret_from_str(CANARY_VALUE);
	struct prov_meta m, m2;
	struct prov_version v;
	json_t *j;

	(void)state;
	memset(&m, 0, sizeof(m));
	prov_meta_set(&m, "dmkagent-state", "pending");
	prov_meta_set(&m, "dmkagent-rotation", "r1");
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.put(&f->st, &ref, val, NULL, &m, &v, &f->err), 0);
	assert_string_equal(prov_meta_get(&v.meta, "dmkagent-rotation"), "r1");
	j = json_loads(f->rp.seen_body[3], 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "tags"),
	    "dmkagent-state")), "pending");
	assert_true(json_is_true(json_object_get(json_object_get(j, "attributes"), "enabled")));
	json_decref(j);

	memset(&m2, 0, sizeof(m2));
	prov_meta_set(&m2, "dmkagent-state", "current");
	assert_int_equal(prov_azkv.set_meta(&f->st, &ref, V2, &m2, &f->err), 0);
	assert_string_equal(f->rp.seen_method[5], "PATCH");
	assert_string_equal(f->rp.seen_url[5],
	    "https://myvault.vault.azure.net/secrets/db1/" V2 "?api-version=7.5");
	j = json_loads(f->rp.seen_body[5], 0, NULL);
	assert_non_null(j);
	assert_null(json_object_get(j, "value"));
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "tags"),
	    "dmkagent-state")), "current");
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "tags"),
	    "dmkagent-rotation")), "r1");   /* kept */
	json_decref(j);
	secret_free(val);
	fx_free(f);
}

/* ---- certificate credentials ---- */

static char certfile[256], keyfile[256], tmpdir[128];

static void
make_cert(void)
{
	EVP_PKEY *pk = EVP_RSA_gen(2048);
	X509 *x = X509_new();
	FILE *fp;

	assert_non_null(pk);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, pk);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
	    (const unsigned char *)"dmkagent-test", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_sign(x, pk, EVP_sha256());
	snprintf(certfile, sizeof(certfile), "%s/cert.pem", tmpdir);
	snprintf(keyfile, sizeof(keyfile), "%s/key.pem", tmpdir);
	fp = fopen(certfile, "w");
	PEM_write_X509(fp, x);
	fclose(fp);
	fp = fopen(keyfile, "w");
	PEM_write_PrivateKey(fp, pk, NULL, NULL, 0, NULL, NULL);
	fclose(fp);
	chmod(keyfile, 0600);
	X509_free(x);
	EVP_PKEY_free(pk);
}

static char *
slurp(const char *path)
{
	FILE *fp = fopen(path, "r");
	char *b = calloc(1, 65536);

	assert_non_null(fp);
	assert_true(fread(b, 1, 65535, fp) > 0);
	fclose(fp);
	return b;
}

static size_t
b64url_dec(const char *in, size_t n, unsigned char *out)
{
	char tmp[8192];
	size_t i, m;
	int r;

	assert_true(n + 4 < sizeof(tmp));
	for (i = 0; i < n; i++)
		tmp[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
	m = n;
	while (m % 4)
		tmp[m++] = '=';
	r = EVP_DecodeBlock(out, (unsigned char *)tmp, (int)m);
	assert_true(r >= 0);
	return (size_t)r - (m - n);
}

static void
verify_jwt(const char *jwt, enum az_alg alg, const char *aud)
{
	const char *d1 = strchr(jwt, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
	unsigned char hb[2048], cb[2048], sig[1024], dg[32], *der = NULL;
	char thumb[128];
	size_t hl, cl, sl;
	json_t *h, *c;
	char *pem = slurp(certfile);
	BIO *bio = BIO_new_mem_buf(pem, -1);
	X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	EVP_PKEY *pub = X509_get_pubkey(x);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	unsigned int dl;
	int derlen;

	assert_non_null(d2);
	hl = b64url_dec(jwt, (size_t)(d1 - jwt), hb);
	cl = b64url_dec(d1 + 1, (size_t)(d2 - d1 - 1), cb);
	sl = b64url_dec(d2 + 1, strlen(d2 + 1), sig);
	h = json_loadb((char *)hb, hl, 0, NULL);
	c = json_loadb((char *)cb, cl, 0, NULL);
	assert_non_null(h);
	assert_non_null(c);
	assert_string_equal(json_string_value(json_object_get(h, "typ")), "JWT");
	assert_string_equal(json_string_value(json_object_get(h, "alg")),
	    alg == AZ_ALG_PS256 ? "PS256" : "RS256");
	/* The thumbprint names this certificate. */
	derlen = i2d_X509(x, &der);
	EVP_Digest(der, (size_t)derlen, dg, &dl, alg == AZ_ALG_PS256 ? EVP_sha256() : EVP_sha1(),
	    NULL);
	{
		unsigned char got[64];
		const char *t = json_string_value(json_object_get(h,
		    alg == AZ_ALG_PS256 ? "x5t#S256" : "x5t"));
		assert_non_null(t);
		assert_int_equal(b64url_dec(t, strlen(t), got), dl);
		assert_memory_equal(got, dg, dl);
		snprintf(thumb, sizeof(thumb), "%s", t);
	}
	assert_string_equal(json_string_value(json_object_get(c, "aud")), aud);
	assert_string_equal(json_string_value(json_object_get(c, "iss")), CLIENT);
	assert_string_equal(json_string_value(json_object_get(c, "sub")), CLIENT);
	assert_int_equal(strlen(json_string_value(json_object_get(c, "jti"))), 36);
	assert_int_equal(json_integer_value(json_object_get(c, "exp")) -
	    json_integer_value(json_object_get(c, "nbf")), 600);
	assert_non_null(json_object_get(c, "iat"));
	/* The signature verifies with the certificate's key. */
	assert_int_equal(EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, pub), 1);
	if (alg == AZ_ALG_PS256) {
		EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
		EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
	}
	assert_int_equal(EVP_DigestVerify(md, sig, sl, (const unsigned char *)jwt,
	    (size_t)(d2 - jwt)), 1);
	/* ... and not over anything else. */
	assert_int_not_equal(EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), NULL, pub), 0);
	if (alg == AZ_ALG_PS256) {
		EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
		EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
	}
	assert_int_not_equal(EVP_DigestVerify(md, sig, sl, (const unsigned char *)jwt,
	    (size_t)(d2 - jwt) - 1), 1);
	json_decref(h);
	json_decref(c);
	OPENSSL_free(der);
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pub);
	X509_free(x);
	BIO_free(bio);
	free(pem);
}

static void
t_jwt(void **state)
{
	char *pem = slurp(certfile), *key = slurp(keyfile);
	struct secret *k = secret_from_str(key);
	struct dmk_err err;
	struct buf out;

	(void)state;
	buf_init(&out, 0);
	assert_int_equal(az_jwt_assertion(CLIENT, "https://login.example/t/oauth2/v2.0/token", pem,
	    strlen(pem), k, AZ_ALG_PS256, time(NULL), &out, &err), 0);
	verify_jwt(out.data, AZ_ALG_PS256, "https://login.example/t/oauth2/v2.0/token");
	assert_int_equal(az_jwt_assertion(CLIENT, "https://login.example/t/oauth2/v2.0/token", pem,
	    strlen(pem), k, AZ_ALG_RS256, time(NULL), &out, &err), 0);
	verify_jwt(out.data, AZ_ALG_RS256, "https://login.example/t/oauth2/v2.0/token");
	/* A key that does not match the certificate is refused. */
	secret_free(k);
	EVP_PKEY *other = EVP_RSA_gen(2048);
	BIO *b = BIO_new(BIO_s_mem());
	char *p;
	long n;
	PEM_write_bio_PrivateKey(b, other, NULL, NULL, 0, NULL, NULL);
	n = BIO_get_mem_data(b, &p);
	k = secret_from(p, (size_t)n);
	assert_int_equal(az_jwt_assertion(CLIENT, "a", pem, strlen(pem), k, AZ_ALG_PS256,
	    time(NULL), &out, &err), DMK_ERR_CONFIG);
	assert_int_equal(out.len, 0);
	BIO_free(b);
	EVP_PKEY_free(other);
	secret_free(k);
	buf_free(&out);
	free(pem);
	free(key);
}

static int
resolve_keyfile(void *ctx, const struct secret_ref *ref, struct secret **out,
    struct dmk_err *err)
{
	char *k = slurp(keyfile);

	(void)ctx;
	(void)ref;
	*out = secret_from_str(k);
	free(k);
	return *out ? 0 : dmk_errf(err, DMK_ERR_NOMEM, "oom");
}

static void
t_client_cert(void **state)
{
	const struct http_replay_entry e[] = { E_OPEN };
	char conf[2048], *a, *end, jwt[8192];
	struct fx *f;
	int rs;

	(void)state;
	for (rs = 0; rs < 2; rs++) {
		snprintf(conf, sizeof(conf), "[store akv]\ntype = azure-key-vault\n"
		    "vault_url = https://myvault.vault.azure.net\nauth = client-certificate\n"
		    "tenant_id = " TENANT "\nclient_id = " CLIENT "\nclient_certificate = %s\n"
		    "client_certificate_key = file:%s\n%s", certfile, keyfile,
		    rs ? "assertion_alg = RS256\n" : "");
		f = fx_new(conf, e, 3);
		f->st.resolve = resolve_keyfile;
		assert_int_equal(fx_open(f), 0);
		assert_non_null(strstr(f->rp.seen_body[1], "client_assertion_type=urn%3Aietf%3Aparams"
		    "%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"));
		assert_null(strstr(f->rp.seen_body[1], "client_secret"));
		a = strstr(f->rp.seen_body[1], "client_assertion=");
		assert_non_null(a);
		a += strlen("client_assertion=");
		end = strchr(a, '&');
		snprintf(jwt, sizeof(jwt), "%.*s", (int)(end ? end - a : (long)strlen(a)), a);
		verify_jwt(jwt, rs ? AZ_ALG_RS256 : AZ_ALG_PS256,
		    "https://login.microsoftonline.com/" TENANT "/oauth2/v2.0/token");
		fx_free(f);
	}
}

/* ---- workload and managed identity ---- */

static void
write_file(const char *path, const char *s)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	fputs(s, fp);
	fclose(fp);
	chmod(path, 0600);
}

static void
clear_env(void)
{
	static const char *vars[] = { "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET",
		"AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST",
		"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IMDS_ENDPOINT", AZ_ENV_IMDS,
		"AZURE_POD_IDENTITY_AUTHORITY_HOST", AZ_ENV_ARC_DIR };
	size_t i;

	for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		unsetenv(vars[i]);
		secret_env_forget(vars[i]);
	}
}

static void
t_workload(void **state)
{
	const char *tok200 = "{\"token_type\":\"Bearer\",\"expires_in\":200,\"access_token\":\"w\"}";
	const struct http_replay_entry e[] = {
		E_CHALLENGE, { 200, tok200, NULL }, { 200, LIST_EMPTY, NULL },
		{ 200, tok200, NULL }, { 200, BUNDLE(V1, ""), NULL },
	};
	const char *conf = "[store akv]\ntype = azure-key-vault\n"
	    "vault_url = https://myvault.vault.azure.net\nauth = workload-identity\n";
	struct secret_ref ref = mkref("db1", NULL);
	struct secret *s = NULL;
	char fed[256];
	struct fx *f;

	(void)state;
	clear_env();
	snprintf(fed, sizeof(fed), "%s/fed-token", tmpdir);
	write_file(fed, "federated-jwt-one\n");
	setenv("AZURE_FEDERATED_TOKEN_FILE", fed, 1);
	setenv("AZURE_TENANT_ID", TENANT, 1);
	setenv("AZURE_CLIENT_ID", CLIENT, 1);
	setenv("AZURE_AUTHORITY_HOST", "https://login.example.test/", 1);
	f = fx_new(conf, e, 5);
	assert_int_equal(fx_open(f), 0);
	assert_string_equal(f->rp.seen_url[1], "https://login.example.test/" TENANT
	    "/oauth2/v2.0/token");
	assert_non_null(strstr(f->rp.seen_body[1], "client_assertion=federated-jwt-one&"));
	assert_non_null(strstr(f->rp.seen_body[1], "client_id=" CLIENT));
	/* The kubelet rotated the file: the next token request reads it again. */
	write_file(fed, "federated-jwt-two");
	assert_int_equal(prov_azkv.get(&f->st, &ref, NULL, &s, NULL, &f->err), 0);
	assert_non_null(strstr(f->rp.seen_body[3], "client_assertion=federated-jwt-two&"));
	secret_free(s);
	fx_free(f);
	clear_env();
}

static void
t_imds(void **state)
{
	char tok[256];
	struct http_replay_entry e[] = {
		E_CHALLENGE, { 404, "{\"error\":\"not_found\"}", NULL }, { 200, tok, NULL },
		{ 200, LIST_EMPTY, NULL },
	};
	const char *conf = "[store akv]\ntype = azure-key-vault\n"
	    "vault_url = https://myvault.vault.azure.net\nauth = managed-identity\n"
	    "managed_identity_client_id = 77777777-0000-0000-0000-000000000000\n";
	struct fx *f;

	(void)state;
	clear_env();
	snprintf(tok, sizeof(tok), "{\"access_token\":\"m\",\"expires_in\":\"3599\",\"expires_on\":"
	    "\"%lld\",\"token_type\":\"Bearer\",\"resource\":\"https://vault.azure.net\"}",
	    (long long)time(NULL) + 3599);
	setenv(AZ_ENV_IMDS, "https://imds.test:4443/", 1);
	f = fx_new(conf, e, 4);
	assert_int_equal(fx_open(f), 0);
	/* 404 while IMDS updates is retried. */
	assert_string_equal(f->rp.seen_url[1], f->rp.seen_url[2]);
	assert_string_equal(f->rp.seen_url[2], "https://imds.test:4443/metadata/identity/oauth2/"
	    "token?api-version=2018-02-01&resource=https%3A%2F%2Fvault.azure.net"
	    "&client_id=77777777-0000-0000-0000-000000000000");
	assert_non_null(strstr(f->rp.seen_headers[2], "Metadata: true"));
	assert_non_null(strstr(f->rp.seen_headers[3], "Bearer m"));
	fx_free(f);
	clear_env();
}

static void
t_app_service(void **state)
{
	const struct http_replay_entry e[] = { E_CHALLENGE, E_TOKEN, { 200, LIST_EMPTY, NULL } };
	const char *conf = "[store akv]\ntype = azure-key-vault\n"
	    "vault_url = https://myvault.vault.azure.net\nauth = managed-identity\n";
	struct fx *f;

	(void)state;
	clear_env();
	setenv("IDENTITY_ENDPOINT", "https://appsvc.test/msi/token", 1);
	setenv("IDENTITY_HEADER", "hdr-" CANARY_SECRET, 1);
	f = fx_new(conf, e, 3);
	assert_int_equal(fx_open(f), 0);
	assert_string_equal(f->rp.seen_url[1], "https://appsvc.test/msi/token?api-version=2019-08-01"
	    "&resource=https%3A%2F%2Fvault.azure.net");
	assert_non_null(strstr(f->rp.seen_headers[1], "X-IDENTITY-HEADER: hdr-" CANARY_SECRET));
	fx_free(f);
	clear_env();
}

static void
t_arc(void **state)
{
	char keydir[256], keypath[300], hdr[512], outside[300];
	struct http_replay_entry e[] = {
		E_CHALLENGE, { 401, "", hdr }, E_TOKEN, { 200, LIST_EMPTY, NULL },
	};
	const char *conf = "[store akv]\ntype = azure-key-vault\n"
	    "vault_url = https://myvault.vault.azure.net\nauth = managed-identity\n";
	struct fx *f;

	(void)state;
	clear_env();
	snprintf(keydir, sizeof(keydir), "%s/arc", tmpdir);
	mkdir(keydir, 0700);
	snprintf(keypath, sizeof(keypath), "%s/abc.key", keydir);
	write_file(keypath, "arc-basic-" CANARY_SECRET);
	setenv("IDENTITY_ENDPOINT", "https://arc.test/metadata/identity/oauth2/token", 1);
	setenv("IMDS_ENDPOINT", "https://arc.test", 1);
	setenv(AZ_ENV_ARC_DIR, keydir, 1);
	snprintf(hdr, sizeof(hdr), "WWW-Authenticate: Basic realm=%s\n", keypath);
	f = fx_new(conf, e, 4);
	assert_int_equal(fx_open(f), 0);
	assert_string_equal(f->rp.seen_url[1], "https://arc.test/metadata/identity/oauth2/token?"
	    "api-version=2019-11-01&resource=https%3A%2F%2Fvault.azure.net");
	assert_non_null(strstr(f->rp.seen_headers[1], "Metadata: true"));
	assert_null(strstr(f->rp.seen_headers[1], "Authorization"));
	assert_non_null(strstr(f->rp.seen_headers[2], "Authorization: Basic arc-basic-"
	    CANARY_SECRET));
	fx_free(f);

	/* Outside the agent's directory (here via ..): refused, never read. */
	snprintf(outside, sizeof(outside), "%s/evil.key", tmpdir);
	write_file(outside, "not-for-you");
	snprintf(hdr, sizeof(hdr), "WWW-Authenticate: Basic realm=%s/../evil.key\n", keydir);
	f = fx_new(conf, e, 4);
	assert_int_equal(fx_open(f), DMK_ERR_AUTH);
	assert_non_null(strstr(f->err.msg, "refused"));
	assert_int_equal(f->rp.nseen, 2);
	fx_free(f);

	/* Too big a file is not sent either. */
	char big[5000];
	memset(big, 'k', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	write_file(keypath, big);
	snprintf(hdr, sizeof(hdr), "WWW-Authenticate: Basic realm=%s\n", keypath);
	f = fx_new(conf, e, 4);
	assert_int_equal(fx_open(f), DMK_ERR_TOOBIG);
	assert_int_equal(f->rp.nseen, 2);
	fx_free(f);
	clear_env();
}

static void
t_default_chain(void **state)
{
	struct http_replay_entry e[8] = { E_CHALLENGE };
	const char *conf = "[store akv]\ntype = azure-key-vault\n"
	    "vault_url = https://myvault.vault.azure.net\n";
	struct fx *f;
	size_t i;

	(void)state;
	clear_env();
	setenv(AZ_ENV_IMDS, "https://imds.test", 1);
	for (i = 1; i < 6; i++)
		e[i] = (struct http_replay_entry){ 0, NULL, NULL };
	f = fx_new(conf, e, 6);
	assert_int_equal(fx_open(f), DMK_ERR_UNREACHABLE);
	assert_non_null(strstr(f->err.msg, "environment: AZURE_CLIENT_SECRET"));
	assert_non_null(strstr(f->err.msg, "workload-identity: "));
	assert_non_null(strstr(f->err.msg, "managed-identity: IMDS"));
	fx_free(f);

	/* Environment first: AZURE_CLIENT_SECRET wins over IMDS. */
	setenv("AZURE_TENANT_ID", TENANT, 1);
	setenv("AZURE_CLIENT_ID", CLIENT, 1);
	setenv("AZURE_CLIENT_SECRET", CANARY_SECRET, 1);
	const struct http_replay_entry e2[] = { E_OPEN };
	f = fx_new(conf, e2, 3);
	assert_int_equal(fx_open(f), 0);
	assert_non_null(strstr(f->rp.seen_body[1], "client_secret=" CANARY_SECRET));
	fx_free(f);
	clear_env();
}

/* ---- configuration ---- */

static void
t_validate(void **state)
{
	static const struct { const char *extra; const char *want; } cases[] = {
		{ "auth = client-secret\ntenant_id = t\nclient_id = c\n", "client_secret" },
		{ "auth = client-secret\nclient_id = c\nclient_secret = env:X\n", "tenant_id" },
		{ "auth = client-certificate\ntenant_id = t\nclient_id = c\n", "client_certificate" },
		{ "auth = client-certificate\ntenant_id = t\nclient_id = c\nclient_certificate = /x\n",
		  "client_certificate_key" },
		{ "api_version = 7.5/../x\n", "api_version" },
		{ "auth = managed-identity\nmanaged_identity_client_id = a\n"
		  "managed_identity_object_id = b\n", "at most one" },
	};
	struct config *cfg = NULL;
	struct dmk_err err;
	char conf[1024];
	size_t i;

	(void)state;
	clear_env();
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(conf, sizeof(conf), "[store akv]\ntype = azure-key-vault\n"
		    "vault_url = https://myvault.vault.azure.net\n%s", cases[i].extra);
		assert_int_equal(config_parse_string(conf, "t.conf", &cfg, &err), DMK_ERR_CONFIG);
		if (strstr(err.msg, cases[i].want) == NULL)
			fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, cases[i].want);
	}
	assert_int_equal(config_parse_string("[store akv]\ntype = azure-key-vault\n"
	    "vault_url = https://myvault.vault.azure.net/secrets\n", "t.conf", &cfg, &err),
	    DMK_ERR_CONFIG);
	assert_int_equal(config_parse_string("[store akv]\ntype = azure-key-vault\n"
	    "vault_url = https://myvault.vault.azure.net/\nchallenge_resource_verification = no\n"
	    "cloud = usgov\n", "t.conf", &cfg, &err), 0);
	config_free(cfg);
}

static void
t_sovereign_cloud(void **state)
{
	const struct http_replay_entry e[] = {
		{ 401, UNAUTH, "WWW-Authenticate: Bearer authorization=\"https://login.chinacloudapi.cn/"
		  TENANT "\", resource=\"https://vault.azure.cn\"\n" }, E_TOKEN,
		{ 200, LIST_EMPTY, NULL },
	};
	const char *conf = "[store akv]\ntype = azure-key-vault\n"
	    "vault_url = https://myvault.vault.azure.cn\ncloud = china\nauth = client-secret\n"
	    "tenant_id = " TENANT "\nclient_id = " CLIENT "\nclient_secret = env:X\n";
	struct fx *f;

	(void)state;
	clear_env();
	f = fx_new(conf, e, 3);
	assert_int_equal(fx_open(f), 0);
	assert_string_equal(f->rp.seen_url[1], "https://login.chinacloudapi.cn/" TENANT
	    "/oauth2/v2.0/token");
	assert_non_null(strstr(f->rp.seen_body[1], "scope=https%3A%2F%2Fvault.azure.cn%2F.default"));
	fx_free(f);
}

/* ---- the canary across every failure message we make ---- */

static void
t_canary(void **state)
{
	const struct http_replay_entry e[] = {
		E_OPEN,
		{ 403, "{\"error\":{\"code\":\"Forbidden\",\"message\":\"token " CANARY_TOKEN
		  " is not allowed\"}}", NULL },
		{ 400, "{\"error\":{\"code\":\"BadParameter\",\"message\":\"value " CANARY_VALUE
		  "\"}}", NULL },
	};
	struct fx *f = fx_new(conf_secret, e, 5);
	struct secret_ref ref = mkref("db1", NULL);
	struct secret *s = NULL, *val = secret_from_str(CANARY_VALUE);
	struct prov_version v;

	(void)state;
	assert_int_equal(fx_open(f), 0);
	assert_int_equal(prov_azkv.get(&f->st, &ref, NULL, &s, &v, &f->err), DMK_ERR_DENIED);
	assert_clean(f->err.msg);
	assert_non_null(strstr(f->err.msg, "withheld"));
	assert_int_equal(prov_azkv.put(&f->st, &ref, val, NULL, NULL, &v, &f->err),
	    DMK_ERR_BADINPUT);
	assert_non_null(strstr(f->err.msg, "HTTP 400"));
	assert_non_null(strstr(f->err.msg, "withheld"));
	assert_clean(f->err.msg);
	secret_free(val);
	fx_free(f);
}

static int
setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_azkv.XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	setenv("AZKV_TEST_SECRET", CANARY_SECRET, 1);
	secret_install_json_allocator();
	make_cert();
	return 0;
}

static int
teardown(void **state)
{
	char cmd[300];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_challenge_parse),
		cmocka_unit_test(t_token_parse),
		cmocka_unit_test(t_open_client_secret),
		cmocka_unit_test(t_wrong_tenant),
		cmocka_unit_test(t_resource_mismatch),
		cmocka_unit_test(t_challenge_scope_ignored),
		cmocka_unit_test(t_vault_host_suffix),
		cmocka_unit_test(t_token_cached),
		cmocka_unit_test(t_token_refresh),
		cmocka_unit_test(t_token_rejected_refetch),
		cmocka_unit_test(t_token_error),
		cmocka_unit_test(t_get_ok),
		cmocka_unit_test(t_bad_refs),
		cmocka_unit_test(t_not_found),
		cmocka_unit_test(t_deleted),
		cmocka_unit_test(t_put_409_deleted),
		cmocka_unit_test(t_forbidden),
		cmocka_unit_test(t_throttle),
		cmocka_unit_test(t_throttle_storm_and_5xx),
		cmocka_unit_test(t_paging),
		cmocka_unit_test(t_foreign_nextlink),
		cmocka_unit_test(t_put_cas),
		cmocka_unit_test(t_tags_roundtrip),
		cmocka_unit_test(t_jwt),
		cmocka_unit_test(t_client_cert),
		cmocka_unit_test(t_workload),
		cmocka_unit_test(t_imds),
		cmocka_unit_test(t_app_service),
		cmocka_unit_test(t_arc),
		cmocka_unit_test(t_default_chain),
		cmocka_unit_test(t_validate),
		cmocka_unit_test(t_sovereign_cloud),
		cmocka_unit_test(t_canary),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
