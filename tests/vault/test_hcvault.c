/*
 * test_hcvault.c: the Vault provider against recorded responses.
 *
 * The replay transport is installed in st->http before ops->open(): open()
 * then uses it instead of making a curl client (see hcvault.c).  Every test
 * ends by checking that no known secret reached the error message.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "agent/config.h"
#include "providers/provider.h"
#include "agent/markers.h"

extern const struct prov_ops prov_hcvault;

#define TOKEN "hvs.TOKENCANARY0001"
#define SECRET_ID "SECRETIDCANARY-0002"
#define WRAP "hvs.WRAPCANARY0003"
#define JWT "eyJJWTCANARY.0004.sig"
#define PASSWORD "Pa55wordCANARY-0005"
#define LOGIN_TOKEN "hvs.LOGINCANARY0006"

static const char *const canaries[] = { TOKEN, SECRET_ID, WRAP, JWT, PASSWORD, LOGIN_TOKEN,
	"CANARY" };

#define LOOKUP_ROOT { 200, "{\"data\":{\"ttl\":0,\"creation_ttl\":0,\"renewable\":false," \
	"\"policies\":[\"root\"]}}", NULL }
#define MOUNTS_V2 { 200, "{\"data\":{\"type\":\"kv\",\"path\":\"secret/\",\"options\":" \
	"{\"version\":\"2\"}}}", NULL }
#define MOUNTS_V1 { 200, "{\"data\":{\"type\":\"kv\",\"path\":\"secret/\",\"options\":" \
	"{\"version\":\"1\"}}}", NULL }
#define DATA_V3 { 200, "{\"request_id\":\"x\",\"data\":{\"data\":{\"password\":\"" PASSWORD \
	"\",\"username\":\"dmk\"},\"metadata\":{\"created_time\":\"2024-05-01T10:00:00.123Z\"," \
	"\"custom_metadata\":{\"v3.dmkagent-state\":\"current\",\"v2.dmkagent-state\":" \
	"\"retired\"},\"deletion_time\":\"\",\"destroyed\":false,\"version\":3}}}", NULL }
#define E404 { 404, "{\"errors\":[]}", NULL }
#define E403 { 403, "{\"errors\":[\"1 error occurred:\\n\\t* permission denied\\n\\n\"]}", NULL }
#define E403_TOKEN { 403, "{\"errors\":[\"2 errors occurred:\\n\\t* permission denied\\n\\t* " \
	"invalid token\\n\\n\"]}", NULL }
#define E400_CAS { 400, "{\"errors\":[\"check-and-set parameter did not match the current " \
	"version\"]}", NULL }
#define E503 { 503, "{\"errors\":[\"Vault is sealed\"]}", NULL }
#define E500 { 500, "{\"errors\":[\"internal error\"]}", NULL }
#define OK204 { 204, "", NULL }
#define LOGIN_OK { 200, "{\"auth\":{\"client_token\":\"" LOGIN_TOKEN "\",\"accessor\":\"a\"," \
	"\"policies\":[\"dmk\"],\"lease_duration\":1200,\"renewable\":true},\"lease_duration\":0}", NULL }
#define LOOKUP_LOGIN { 200, "{\"data\":{\"ttl\":1200,\"creation_ttl\":1200,\"renewable\":true}}", NULL }
#define META_7 { 200, "{\"data\":{\"current_version\":7,\"max_versions\":0,\"custom_metadata\":" \
	"{\"v6.dmkagent-state\":\"current\",\"v7.dmkagent-state\":\"pending\",\"v2.dmkagent-state\":" \
	"\"retired\",\"owner\":\"dba\"},\"versions\":{" \
	"\"5\":{\"created_time\":\"2024-01-01T00:00:00Z\",\"deletion_time\":\"2024-02-01T00:00:00Z\",\"destroyed\":false}," \
	"\"6\":{\"created_time\":\"2024-03-01T00:00:00Z\",\"deletion_time\":\"\",\"destroyed\":false}," \
	"\"4\":{\"created_time\":\"2023-12-01T00:00:00Z\",\"deletion_time\":\"\",\"destroyed\":true}," \
	"\"7\":{\"created_time\":\"2024-04-01T00:00:00Z\",\"deletion_time\":\"\",\"destroyed\":false}}}}", NULL }

struct fx {
	struct conf_kv kv[24];
	struct conf_store conf;
	struct store st;
	struct http_replay rp;
	struct dmk_err err;
	int opened;
};

static int
fake_resolve(void *ctx, const struct secret_ref *ref, struct secret **out, struct dmk_err *err)
{
	static const struct { const char *ref, *val; } t[] = {
		{ "file:/t/token", TOKEN }, { "file:/t/secret-id", SECRET_ID },
		{ "file:/t/wrap", WRAP }, { "file:/t/jwt", JWT },
	};
	size_t i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (strcmp(ref->text, t[i].ref) == 0) {
			*out = secret_from_str(t[i].val);
			return 0;
		}
	return dmk_errf(err, DMK_ERR_CONFIG, "%s: no such test file", ref->text);
}

static void
conf_add(struct fx *f, const char *k, const char *v)
{
	struct conf_kv *kv = &f->kv[f->conf.nkv++];
	struct dmk_err e;

	kv->key = (char *)k;
	kv->value = (char *)v;
	kv->kind = CK_STRING;
	if (strcmp(k, "token") == 0 || strcmp(k, "secret_id") == 0 || strcmp(k, "jwt") == 0 ||
	    strcmp(k, "client_key") == 0) {
		kv->kind = CK_REF;
		assert_int_equal(ref_parse(v, &kv->ref, &e), 0);
	}
}

static struct fx *
fx_new(void)
{
	struct fx *f = calloc(1, sizeof(*f));

	strcpy(f->conf.name, "hcv");
	strcpy(f->conf.type, "hashicorp-vault");
	f->conf.ops = &prov_hcvault;
	f->conf.kv = f->kv;
	conf_add(f, "address", "https://vault.test:8200/");
	return f;
}

static void
assert_clean(const struct fx *f)
{
	size_t i;

	for (i = 0; i < sizeof(canaries) / sizeof(canaries[0]); i++)
		if (strstr(f->err.msg, canaries[i]) != NULL)
			fail_msg("secret in the error message: %s", f->err.msg);
}

static int
fx_open(struct fx *f, const struct http_replay_entry *e, size_t n)
{
	int r;

	f->rp.entries = e;
	f->rp.n = n;
	f->st.conf = &f->conf;
	f->st.ops = &prov_hcvault;
	f->st.priv = calloc(1, prov_hcvault.priv_size);
	f->st.resolve = fake_resolve;
	http_client_replay(&f->st.http, &f->rp);
	r = prov_hcvault.open(&f->st, &f->err);
	f->opened = r == 0;
	assert_clean(f);
	return r;
}

static void
fx_free(struct fx *f)
{
	if (f->opened)
		prov_hcvault.close(&f->st);
	assert_clean(f);
	free(f->st.priv);
	http_replay_free(&f->rp);
	free(f);
}

static struct secret_ref
mkref(const char *text)
{
	struct secret_ref r;
	struct dmk_err e;

	assert_int_equal(ref_parse(text, &r, &e), 0);
	return r;
}

/* ---- reads ---- */

static void
t_get_ok(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT, MOUNTS_V2, DATA_V3 };
	struct fx *f = fx_new();
	struct secret_ref ref = mkref("hcv:sql/ag1/db1");
	struct prov_version v;
	struct secret *s = NULL;

	conf_add(f, "token", "file:/t/token");
	conf_add(f, "namespace", "team/dba");
	assert_int_equal(fx_open(f, e, 3), 0);
	assert_int_equal(prov_hcvault.get(&f->st, &ref, NULL, &s, &v, &f->err), 0);
	assert_string_equal(secret_reveal(s), PASSWORD);
	assert_string_equal(v.id, "3");
	assert_int_equal(v.num, 3);
	assert_true(v.created > 0);
	assert_int_equal(v.meta.n, 1);
	assert_string_equal(prov_meta_get(&v.meta, "dmkagent-state"), "current");
	assert_int_equal(f->rp.nseen, 3);
	assert_string_equal(f->rp.seen_url[0], "https://vault.test:8200/v1/auth/token/lookup-self");
	assert_string_equal(f->rp.seen_url[1],
	    "https://vault.test:8200/v1/sys/internal/ui/mounts/secret/sql/ag1/db1");
	assert_string_equal(f->rp.seen_url[2], "https://vault.test:8200/v1/secret/data/sql/ag1/db1");
	assert_non_null(strstr(f->rp.seen_headers[2], "X-Vault-Token: " TOKEN "\n"));
	assert_non_null(strstr(f->rp.seen_headers[2], "X-Vault-Namespace: team/dba\n"));
	secret_free(s);
	fx_free(f);
}

static void
t_get_version_field(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT, MOUNTS_V2, DATA_V3, DATA_V3 };
	struct fx *f = fx_new();
	struct secret_ref ref = mkref("hcv:sql/ag1/db1#username");
	struct secret_ref ref2 = mkref("hcv:sql/ag1/db1#nosuch");
	struct prov_version v;
	struct secret *s = NULL;

	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e, 4), 0);
	assert_int_equal(prov_hcvault.get(&f->st, &ref, "2", &s, &v, &f->err), 0);
	assert_string_equal(secret_reveal(s), "dmk");
	assert_string_equal(f->rp.seen_url[2],
	    "https://vault.test:8200/v1/secret/data/sql/ag1/db1?version=2");
	secret_free(s);
	s = NULL;
	assert_int_equal(prov_hcvault.get(&f->st, &ref2, NULL, &s, &v, &f->err), DMK_ERR_NOTFOUND);
	assert_null(s);
	assert_non_null(strstr(f->err.msg, "no field 'nosuch'"));
	fx_free(f);
}

static void
t_get_404_empty(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT, MOUNTS_V2, E404, DATA_V3 };
	struct fx *f = fx_new();
	struct secret_ref ref = mkref("hcv:sql/missing");
	struct secret *s = NULL;

	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e, 4), 0);
	assert_int_equal(prov_hcvault.get(&f->st, &ref, NULL, &s, NULL, &f->err), DMK_ERR_NOTFOUND);
	assert_null(s);
	assert_int_equal(f->rp.nseen, 3);   /* no retry on 404 */
	assert_non_null(strstr(f->err.msg, "HTTP 404"));
	assert_non_null(strstr(f->err.msg, "no secret at this path"));
	fx_free(f);
}

static void
t_get_deleted_destroyed(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT, MOUNTS_V2,
		{ 404, "{\"data\":{\"data\":null,\"metadata\":{\"created_time\":\"2024-01-01T00:00:00Z\","
		  "\"custom_metadata\":null,\"deletion_time\":\"2024-02-01T00:00:00Z\",\"destroyed\":false,"
		  "\"version\":2}}}", NULL },
		{ 404, "{\"data\":{\"data\":null,\"metadata\":{\"created_time\":\"2024-01-01T00:00:00Z\","
		  "\"custom_metadata\":null,\"deletion_time\":\"\",\"destroyed\":true,\"version\":1}}}", NULL } };
	struct fx *f = fx_new();
	struct secret_ref ref = mkref("hcv:sql/x");
	struct prov_version v;
	struct secret *s = NULL;

	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e, 4), 0);
	assert_int_equal(prov_hcvault.get(&f->st, &ref, NULL, &s, &v, &f->err), DMK_ERR_DELETED);
	assert_string_equal(v.id, "2");
	assert_int_equal(v.deleted, 1);
	assert_non_null(strstr(f->err.msg, "version 2 is deleted"));
	assert_int_equal(prov_hcvault.get(&f->st, &ref, "1", &s, &v, &f->err), DMK_ERR_DELETED);
	assert_int_equal(v.destroyed, 1);
	assert_non_null(strstr(f->err.msg, "destroyed"));
	assert_null(s);
	assert_int_equal(f->rp.nseen, 4);
	fx_free(f);
}

static void
t_get_403(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT, MOUNTS_V2, E403, E403_TOKEN };
	struct fx *f = fx_new();
	struct secret_ref ref = mkref("hcv:sql/x");
	struct secret *s = NULL;

	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e, 4), 0);
	assert_int_equal(prov_hcvault.get(&f->st, &ref, NULL, &s, NULL, &f->err), DMK_ERR_DENIED);
	assert_non_null(strstr(f->err.msg, "HTTP 403"));
	assert_non_null(strstr(f->err.msg, "permission denied"));
	assert_int_equal(f->rp.nseen, 3);   /* no retry on 403 */
	assert_int_equal(prov_hcvault.get(&f->st, &ref, NULL, &s, NULL, &f->err), DMK_ERR_AUTH);
	assert_non_null(strstr(f->err.msg, "invalid token"));
	assert_int_equal(f->rp.nseen, 4);
	fx_free(f);
}

static void
t_open_invalid_token(void **state)
{
	static const struct http_replay_entry e[] = { E403_TOKEN };
	struct fx *f = fx_new();

	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e, 1), DMK_ERR_AUTH);
	assert_non_null(strstr(f->err.msg, "lookup-self"));
	fx_free(f);
}

static void
t_kv1_read(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT, MOUNTS_V1,
		{ 200, "{\"data\":{\"password\":\"" PASSWORD "\"},\"lease_duration\":2764800}", NULL } };
	struct fx *f = fx_new();
	struct secret_ref ref = mkref("hcv:sql/v1key");
	struct secret *s = NULL, *val = secret_from_str(PASSWORD);
	struct prov_version v;

	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e, 3), 0);
	assert_int_equal(prov_hcvault.get(&f->st, &ref, NULL, &s, &v, &f->err), 0);
	assert_string_equal(secret_reveal(s), PASSWORD);
	assert_string_equal(f->rp.seen_url[2], "https://vault.test:8200/v1/secret/sql/v1key");
	assert_int_equal(prov_hcvault.put(&f->st, &ref, val, "0", NULL, NULL, &f->err),
	    DMK_ERR_UNSUPPORTED);
	assert_non_null(strstr(f->err.msg, "KV version 1"));
	assert_int_equal(f->rp.nseen, 3);
	secret_free(s);
	secret_free(val);
	fx_free(f);
}

/* ---- retries ---- */

static void
t_sealed_then_ok(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT, MOUNTS_V2, E503, DATA_V3 };
	struct fx *f = fx_new();
	struct secret_ref ref = mkref("hcv:sql/x");
	struct secret *s = NULL;

	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e, 4), 0);
	assert_int_equal(prov_hcvault.get(&f->st, &ref, NULL, &s, NULL, &f->err), 0);
	assert_string_equal(secret_reveal(s), PASSWORD);
	assert_int_equal(f->rp.nseen, 4);
	assert_true(f->st.http.slept_ms > 0);
	secret_free(s);
	fx_free(f);
}

static void
t_sealed_exhausted(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT, MOUNTS_V2, E503, E503, E503,
		E503, E503, DATA_V3 };
	struct fx *f = fx_new();
	struct secret_ref ref = mkref("hcv:sql/x");
	struct secret *s = NULL;

	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e, 8), 0);
	assert_int_equal(prov_hcvault.get(&f->st, &ref, NULL, &s, NULL, &f->err),
	    DMK_ERR_UNREACHABLE);
	assert_int_equal(dmk_exit_code(f->err.code), DMK_EXIT_UNREACHABLE);
	assert_non_null(strstr(f->err.msg, "HTTP 503"));
	assert_non_null(strstr(f->err.msg, "Vault is sealed"));
	assert_int_equal(f->rp.nseen, 7);   /* 5 attempts */
	fx_free(f);
}

static void
t_429_retry_after(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT, MOUNTS_V2,
		{ 429, "{\"errors\":[\"request path \\\"secret/data/x\\\": rate limit quota exceeded\"]}",
		  "Retry-After: 3\n" }, DATA_V3 };
	struct fx *f = fx_new();
	struct secret_ref ref = mkref("hcv:sql/x");
	struct secret *s = NULL;

	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e, 4), 0);
	assert_int_equal(prov_hcvault.get(&f->st, &ref, NULL, &s, NULL, &f->err), 0);
	assert_int_equal(f->st.http.slept_ms, 3000);
	secret_free(s);
	fx_free(f);
}

static void
t_5xx_exhausted(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT, MOUNTS_V2, E500, E500, E500,
		E500, E500 };
	struct fx *f = fx_new();
	struct secret_ref ref = mkref("hcv:sql/x");
	struct secret *s = NULL;

	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e, 7), 0);
	assert_int_equal(prov_hcvault.get(&f->st, &ref, NULL, &s, NULL, &f->err),
	    DMK_ERR_UNREACHABLE);
	assert_non_null(strstr(f->err.msg, "HTTP 500"));
	assert_non_null(strstr(f->err.msg, "internal error"));
	fx_free(f);
}

static void
t_412_retried_400_not(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT, MOUNTS_V2,
		{ 412, "{\"errors\":[\"required index state not present\"]}", NULL }, DATA_V3,
		{ 400, "{\"errors\":[\"bad request\"]}", NULL }, DATA_V3 };
	struct fx *f = fx_new();
	struct secret_ref ref = mkref("hcv:sql/x");
	struct secret *s = NULL;

	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e, 6), 0);
	assert_int_equal(prov_hcvault.get(&f->st, &ref, NULL, &s, NULL, &f->err), 0);
	secret_free(s);
	s = NULL;
	assert_int_equal(f->rp.nseen, 4);
	assert_int_equal(prov_hcvault.get(&f->st, &ref, NULL, &s, NULL, &f->err),
	    DMK_ERR_BADINPUT);
	assert_int_equal(f->rp.nseen, 5);
	fx_free(f);
}

/* ---- writes ---- */

static void
t_put_create(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT, MOUNTS_V2,
		{ 200, "{\"data\":{\"created_time\":\"2024-05-01T10:00:00Z\",\"custom_metadata\":null,"
		  "\"deletion_time\":\"\",\"destroyed\":false,\"version\":1}}", NULL },
		{ 200, "{\"data\":{\"current_version\":1,\"custom_metadata\":null,\"versions\":{\"1\":"
		  "{\"created_time\":\"2024-05-01T10:00:00Z\",\"deletion_time\":\"\",\"destroyed\":false}}}}", NULL },
		OK204 };
	struct fx *f = fx_new();
	struct secret_ref ref = mkref("hcv:sql/new");
	struct secret *val = secret_from_str(PASSWORD "\"\\");
	struct prov_meta m;
	struct prov_version out;

	memset(&m, 0, sizeof(m));
	prov_meta_set(&m, "dmkagent-state", "pending");
	conf_add(f, "max_versions", "0");   /* the requests as before max_versions */
	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e, 5), 0);
	assert_int_equal(prov_hcvault.put(&f->st, &ref, val, "0", &m, &out, &f->err), 0);
	assert_string_equal(out.id, "1");
	assert_string_equal(f->rp.seen_method[2], "POST");
	assert_string_equal(f->rp.seen_url[2], "https://vault.test:8200/v1/secret/data/sql/new");
	assert_string_equal(f->rp.seen_body[2],
	    "{\"options\":{\"cas\":0},\"data\":{\"password\":\"" PASSWORD "\\\"\\\\\"}}");
	assert_string_equal(f->rp.seen_url[4], "https://vault.test:8200/v1/secret/metadata/sql/new");
	assert_string_equal(f->rp.seen_body[4],
	    "{\"custom_metadata\":{\"v1.dmkagent-state\":\"pending\"}}");
	assert_string_equal(prov_meta_get(&out.meta, "dmkagent-state"), "pending");
	secret_free(val);
	fx_free(f);
}

/* max_versions: set before the write on an existing key; a write that would
 * drop the version in force is refused before anything is written. */
#define META_3 { 200, "{\"data\":{\"current_version\":3,\"max_versions\":0,\"custom_metadata\":" \
	"{\"v2.dmkagent-state\":\"retired\",\"v3.dmkagent-state\":\"retired\"},\"versions\":{" \
	"\"1\":{\"created_time\":\"2024-05-01T10:00:00Z\",\"deletion_time\":\"\",\"destroyed\":false}," \
	"\"2\":{\"created_time\":\"2024-05-02T10:00:00Z\",\"deletion_time\":\"\",\"destroyed\":false}," \
	"\"3\":{\"created_time\":\"2024-05-03T10:00:00Z\",\"deletion_time\":\"\",\"destroyed\":false}}}}", NULL }

static void
t_put_max_versions(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT, MOUNTS_V2,
		META_3, OK204, DATA_V3,
		{ 200, "{\"data\":{\"created_time\":\"2024-05-04T10:00:00Z\",\"deletion_time\":\"\","
		  "\"destroyed\":false,\"version\":4}}", NULL },
		META_3 };
	struct fx *f = fx_new();
	struct secret_ref ref = mkref("hcv:sql/x");
	struct secret *val = secret_from_str("NEWVALUE-CANARY");
	struct prov_version out;

	conf_add(f, "token", "file:/t/token");
	conf_add(f, "max_versions", "20");
	assert_int_equal(fx_open(f, e, 7), 0);
	f->st.keep = markers_keep;
	assert_int_equal(prov_hcvault.put(&f->st, &ref, val, "3", NULL, &out, &f->err), 0);
	assert_string_equal(out.id, "4");
	assert_string_equal(f->rp.seen_method[3], "POST");
	assert_string_equal(f->rp.seen_url[3], "https://vault.test:8200/v1/secret/metadata/sql/x");
	assert_string_equal(f->rp.seen_body[3], "{\"max_versions\":20}");
	assert_string_equal(f->rp.seen_url[5], "https://vault.test:8200/v1/secret/data/sql/x");
	/* Vault's own 10 would do, but 3 kept of 3 held drops version 1, in force */
	f->conf.nkv--;
	conf_add(f, "max_versions", "3");
	assert_int_equal(prov_hcvault.put(&f->st, &ref, val, "3", NULL, &out, &f->err),
	    DMK_ERR_TOOBIG);
	assert_int_equal(f->rp.nseen, 7);          /* the metadata read, nothing written */
	assert_non_null(strstr(f->err.msg, "hcv:sql/x"));
	assert_non_null(strstr(f->err.msg, "version 1"));
	assert_non_null(strstr(f->err.msg, "max_versions"));
	secret_free(val);
	fx_free(f);
}

static void
t_put_keeps_fields_and_cas_conflict(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT, MOUNTS_V2, DATA_V3, E400_CAS };
	struct fx *f = fx_new();
	struct secret_ref ref = mkref("hcv:sql/x");
	struct secret *val = secret_from_str("NEWVALUE-CANARY");

	conf_add(f, "max_versions", "0");   /* the requests as before max_versions */
	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e, 4), 0);
	assert_int_equal(prov_hcvault.put(&f->st, &ref, val, "3", NULL, NULL, &f->err),
	    DMK_ERR_CONFLICT);
	assert_non_null(strstr(f->err.msg, "HTTP 400"));
	assert_non_null(strstr(f->err.msg, "check-and-set"));
	assert_int_equal(f->rp.nseen, 4);   /* no retry on 400 */
	assert_string_equal(f->rp.seen_body[3], "{\"options\":{\"cas\":3},\"data\":{\"username\":"
	    "\"dmk\",\"password\":\"NEWVALUE-CANARY\"}}");
	secret_free(val);
	fx_free(f);
}

static void
t_put_dropped_then_cas(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT, MOUNTS_V2, DATA_V3,
		{ 0, NULL, NULL }, E400_CAS,
		{ 200, "{\"data\":{\"data\":{\"password\":\"NEWVALUE-CANARY\"},\"metadata\":{"
		  "\"created_time\":\"2024-05-01T10:00:00Z\",\"deletion_time\":\"\",\"destroyed\":false,"
		  "\"version\":4}}}", NULL },
		/* second put: the current value is someone else's */
		DATA_V3, { 0, NULL, NULL }, E400_CAS,
		{ 200, "{\"data\":{\"data\":{\"password\":\"OTHER\"},\"metadata\":{"
		  "\"created_time\":\"2024-05-01T10:00:00Z\",\"deletion_time\":\"\",\"destroyed\":false,"
		  "\"version\":4}}}", NULL } };
	struct fx *f = fx_new();
	struct secret_ref ref = mkref("hcv:sql/x");
	struct secret *val = secret_from_str("NEWVALUE-CANARY");
	struct prov_version out;

	conf_add(f, "max_versions", "0");   /* the requests as before max_versions */
	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e, 10), 0);
	assert_int_equal(prov_hcvault.put(&f->st, &ref, val, "3", NULL, &out, &f->err), 0);
	assert_string_equal(out.id, "4");
	assert_int_equal(f->rp.nseen, 6);
	assert_int_equal(prov_hcvault.put(&f->st, &ref, val, "3", NULL, &out, &f->err),
	    DMK_ERR_CONFLICT);
	assert_int_equal(f->rp.nseen, 10);
	secret_free(val);
	fx_free(f);
}

/* ---- markers ---- */

static void
t_markers_roundtrip(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT, MOUNTS_V2, META_7, OK204,
		META_7 };
	struct fx *f = fx_new();
	struct secret_ref ref = mkref("hcv:sql/x");
	struct prov_meta m;
	struct prov_version *v = NULL;
	size_t n = 0;
	json_t *body, *cm;

	memset(&m, 0, sizeof(m));
	prov_meta_set(&m, "dmkagent-state", "retiring");
	prov_meta_set(&m, "dmkagent-rotation", "r42");
	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e, 5), 0);
	assert_int_equal(prov_hcvault.set_meta(&f->st, &ref, "6", &m, &f->err), 0);
	assert_string_equal(f->rp.seen_method[3], "POST");
	body = json_loads(f->rp.seen_body[3], 0, NULL);
	assert_non_null(body);
	cm = json_object_get(body, "custom_metadata");
	assert_string_equal(json_string_value(json_object_get(cm, "v6.dmkagent-state")), "retiring");
	assert_string_equal(json_string_value(json_object_get(cm, "v6.dmkagent-rotation")), "r42");
	assert_string_equal(json_string_value(json_object_get(cm, "v7.dmkagent-state")), "pending");
	assert_string_equal(json_string_value(json_object_get(cm, "owner")), "dba");
	/* version 2 no longer exists: its marker is pruned */
	assert_null(json_object_get(cm, "v2.dmkagent-state"));
	assert_int_equal(json_object_size(cm), 4);
	json_decref(body);

	assert_int_equal(prov_hcvault.list_versions(&f->st, &ref, &v, &n, &f->err), 0);
	assert_int_equal(n, 4);
	assert_string_equal(v[0].id, "4");
	assert_int_equal(v[0].destroyed, 1);
	assert_int_equal(v[1].num, 5);
	assert_int_equal(v[1].deleted, 1);
	assert_int_equal(v[1].meta.n, 0);
	assert_string_equal(prov_meta_get(&v[2].meta, "dmkagent-state"), "current");
	assert_string_equal(prov_meta_get(&v[3].meta, "dmkagent-state"), "pending");
	assert_int_equal(v[3].meta.n, 1);
	assert_true(v[3].created > v[2].created);
	free(v);
	fx_free(f);
}

static void
t_markers_limit(void **state)
{
	static char meta[16384];
	static struct http_replay_entry e[] = { LOOKUP_ROOT, MOUNTS_V2, { 200, meta, NULL }, OK204 };
	struct fx *f = fx_new();
	struct secret_ref ref = mkref("hcv:sql/x");
	struct prov_meta m;
	json_t *body, *cm;
	size_t o = 0;
	int i;

	/* 30 versions with 3 markers each = 90 entries, over Vault's 64 */
	o += snprintf(meta + o, sizeof(meta) - o, "{\"data\":{\"custom_metadata\":{");
	for (i = 1; i <= 30; i++)
		o += snprintf(meta + o, sizeof(meta) - o, "%s\"v%d.a\":\"x\",\"v%d.b\":\"x\",\"v%d.c\":\"x\"",
		    i > 1 ? "," : "", i, i, i);
	o += snprintf(meta + o, sizeof(meta) - o, "},\"versions\":{");
	for (i = 1; i <= 30; i++)
		o += snprintf(meta + o, sizeof(meta) - o, "%s\"%d\":{\"created_time\":\"2024-01-01T00:00:00Z\","
		    "\"deletion_time\":\"\",\"destroyed\":false}", i > 1 ? "," : "", i);
	snprintf(meta + o, sizeof(meta) - o, "}}}");
	memset(&m, 0, sizeof(m));
	prov_meta_set(&m, "dmkagent-state", "current");
	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e, 4), 0);
	assert_int_equal(prov_hcvault.set_meta(&f->st, &ref, "30", &m, &f->err), 0);
	body = json_loads(f->rp.seen_body[3], 0, NULL);
	cm = json_object_get(body, "custom_metadata");
	assert_true(json_object_size(cm) <= 64);
	assert_non_null(json_object_get(cm, "v30.dmkagent-state"));
	assert_non_null(json_object_get(cm, "v29.a"));
	assert_null(json_object_get(cm, "v1.a"));
	json_decref(body);
	fx_free(f);
}

static void
t_delete_version(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT, MOUNTS_V2, OK204 };
	struct fx *f = fx_new();
	struct secret_ref ref = mkref("hcv:sql/x");

	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e, 3), 0);
	assert_int_equal(prov_hcvault.delete_version(&f->st, &ref, "2", &f->err), 0);
	assert_string_equal(f->rp.seen_url[2], "https://vault.test:8200/v1/secret/delete/sql/x");
	assert_string_equal(f->rp.seen_body[2], "{\"versions\":[2]}");
	assert_int_equal(prov_hcvault.delete_version(&f->st, &ref, "x", &f->err), DMK_ERR_BADINPUT);
	fx_free(f);
}

/* ---- authentication ---- */

static void
t_approle_login(void **state)
{
	static const struct http_replay_entry e[] = { LOGIN_OK, LOOKUP_LOGIN, OK204 };
	struct fx *f = fx_new();

	conf_add(f, "auth", "approle");
	conf_add(f, "role_id", "role-1234");
	conf_add(f, "secret_id", "file:/t/secret-id");
	conf_add(f, "auth_mount", "approle-dmk");
	assert_int_equal(fx_open(f, e, 3), 0);
	assert_string_equal(f->rp.seen_url[0], "https://vault.test:8200/v1/auth/approle-dmk/login");
	assert_string_equal(f->rp.seen_body[0],
	    "{\"role_id\":\"role-1234\",\"secret_id\":\"" SECRET_ID "\"}");
	assert_null(strstr(f->rp.seen_headers[0], "X-Vault-Token"));
	assert_non_null(strstr(f->rp.seen_headers[1], "X-Vault-Token: " LOGIN_TOKEN));
	prov_hcvault.close(&f->st);
	f->opened = 0;
	/* the login token is this run's: revoked at close */
	assert_int_equal(f->rp.nseen, 3);
	assert_string_equal(f->rp.seen_url[2], "https://vault.test:8200/v1/auth/token/revoke-self");
	assert_non_null(strstr(f->rp.seen_headers[2], "X-Vault-Token: " LOGIN_TOKEN));
	fx_free(f);
}

static void
t_user_token_not_revoked(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT, OK204 };
	struct fx *f = fx_new();

	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e, 2), 0);
	prov_hcvault.close(&f->st);
	f->opened = 0;
	assert_int_equal(f->rp.nseen, 1);
	fx_free(f);
}

static void
t_approle_bad_secret(void **state)
{
	static const struct http_replay_entry e[] = {
		{ 400, "{\"errors\":[\"invalid role or secret ID\"]}", NULL }, LOOKUP_LOGIN };
	struct fx *f = fx_new();

	conf_add(f, "auth", "approle");
	conf_add(f, "role_id", "role-1234");
	conf_add(f, "secret_id", "file:/t/secret-id");
	assert_int_equal(fx_open(f, e, 2), DMK_ERR_AUTH);
	assert_non_null(strstr(f->err.msg, "invalid role or secret ID"));
	assert_non_null(strstr(f->err.msg, "HTTP 400"));
	assert_int_equal(f->rp.nseen, 1);
	fx_free(f);
}

static void
t_approle_wrapped(void **state)
{
	static const struct http_replay_entry e[] = {
		{ 200, "{\"data\":{\"creation_path\":\"auth/approle/role/dmk/secret-id\","
		  "\"creation_time\":\"2024-05-01T10:00:00Z\",\"creation_ttl\":120}}", NULL },
		{ 200, "{\"data\":{\"secret_id\":\"" SECRET_ID "\",\"secret_id_accessor\":\"acc\","
		  "\"secret_id_ttl\":0}}", NULL },
		LOGIN_OK, LOOKUP_LOGIN };
	struct fx *f = fx_new();

	conf_add(f, "auth", "approle");
	conf_add(f, "role_id", "role-1234");
	conf_add(f, "secret_id", "file:/t/wrap");
	conf_add(f, "secret_id_wrapped", "yes");
	assert_int_equal(fx_open(f, e, 4), 0);
	assert_string_equal(f->rp.seen_url[0], "https://vault.test:8200/v1/sys/wrapping/lookup");
	assert_string_equal(f->rp.seen_body[0], "{\"token\":\"" WRAP "\"}");
	assert_string_equal(f->rp.seen_url[1], "https://vault.test:8200/v1/sys/wrapping/unwrap");
	assert_non_null(strstr(f->rp.seen_headers[1], "X-Vault-Token: " WRAP));
	assert_null(f->rp.seen_body[1]);
	assert_string_equal(f->rp.seen_body[2],
	    "{\"role_id\":\"role-1234\",\"secret_id\":\"" SECRET_ID "\"}");
	fx_free(f);
}

static void
t_approle_wrapped_wrong_path(void **state)
{
	static const struct http_replay_entry e[] = {
		{ 200, "{\"data\":{\"creation_path\":\"secret/data/other\",\"creation_ttl\":120}}", NULL },
		{ 200, "{\"data\":{\"secret_id\":\"x\"}}", NULL } };
	struct fx *f = fx_new();

	conf_add(f, "auth", "approle");
	conf_add(f, "role_id", "role-1234");
	conf_add(f, "secret_id", "file:/t/wrap");
	conf_add(f, "secret_id_wrapped", "yes");
	assert_int_equal(fx_open(f, e, 2), DMK_ERR_AUTH);
	assert_non_null(strstr(f->err.msg, "secret/data/other"));
	assert_int_equal(f->rp.nseen, 1);   /* never unwrapped */
	fx_free(f);
}

static void
t_approle_wrapped_used(void **state)
{
	static const struct http_replay_entry e[] = {
		{ 200, "{\"data\":{\"creation_path\":\"auth/approle/role/dmk/secret-id\"}}", NULL },
		{ 400, "{\"errors\":[\"wrapping token is not valid or does not exist\"]}", NULL },
		{ 400, "{\"errors\":[\"wrapping token is not valid or does not exist\"]}", NULL } };
	struct fx *f = fx_new();

	conf_add(f, "auth", "approle");
	conf_add(f, "role_id", "role-1234");
	conf_add(f, "secret_id", "file:/t/wrap");
	conf_add(f, "secret_id_wrapped", "true");
	assert_int_equal(fx_open(f, e, 3), DMK_ERR_AUTH);
	assert_non_null(strstr(f->err.msg, "already used"));
	assert_int_equal(f->rp.nseen, 2);
	fx_free(f);
}

static void
t_jwt_k8s_cert_login(void **state)
{
	static const struct http_replay_entry e[] = { LOGIN_OK, LOOKUP_LOGIN, OK204 };
	struct fx *f = fx_new();

	conf_add(f, "auth", "kubernetes");
	conf_add(f, "role", "dmk");
	conf_add(f, "jwt", "file:/t/jwt");
	assert_int_equal(fx_open(f, e, 3), 0);
	assert_string_equal(f->rp.seen_url[0], "https://vault.test:8200/v1/auth/kubernetes/login");
	assert_string_equal(f->rp.seen_body[0], "{\"role\":\"dmk\",\"jwt\":\"" JWT "\"}");
	fx_free(f);

	f = fx_new();
	conf_add(f, "auth", "jwt");
	conf_add(f, "role", "dmk");
	conf_add(f, "jwt", "file:/t/jwt");
	conf_add(f, "auth_mount", "oidc/ci");
	assert_int_equal(fx_open(f, e, 3), 0);
	assert_string_equal(f->rp.seen_url[0], "https://vault.test:8200/v1/auth/oidc/ci/login");
	fx_free(f);
}

/* A key that looks like a marker of an impossible version (v + 23 digits) is
 * someone else's key: kept, not parsed with an overflow (fuzz_hcvault_http). */
static void
t_set_meta_huge_marker(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT, MOUNTS_V2,
		{ 200, "{\"data\":{\"current_version\":7,\"custom_metadata\":{"
		  "\"v99999999999999999999999.x\":\"y\",\"v7.dmkagent-state\":\"current\"},"
		  "\"versions\":{\"7\":{\"created_time\":\"2024-03-01T00:00:00Z\"}}}}", NULL },
		OK204 };
	struct fx *f = fx_new();
	struct secret_ref ref = mkref("hcv:sql/x");
	struct prov_meta m;
	json_t *body, *cm;

	memset(&m, 0, sizeof(m));
	prov_meta_set(&m, "dmkagent-state", "retiring");
	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e, 4), 0);
	assert_int_equal(prov_hcvault.set_meta(&f->st, &ref, "7", &m, &f->err), 0);
	body = json_loads(f->rp.seen_body[3], 0, NULL);
	assert_non_null(body);
	cm = json_object_get(body, "custom_metadata");
	assert_string_equal(json_string_value(json_object_get(cm, "v99999999999999999999999.x")),
	    "y");
	assert_string_equal(json_string_value(json_object_get(cm, "v7.dmkagent-state")), "retiring");
	json_decref(body);
	fx_free(f);
}

/*
 * TTLs from an answer are held to a sane bound: a huge one (integer or
 * real) means "plenty left", not an overflow that makes every request
 * renew first (found by fuzz_hcvault_http).
 */
static void
t_renewal_huge_ttl(void **state)
{
	static const struct http_replay_entry e1[] = {
		{ 200, "{\"data\":{\"ttl\":9223372036854775,\"creation_ttl\":3600,"
		  "\"renewable\":true}}", NULL }, MOUNTS_V2, DATA_V3 };
	static const struct http_replay_entry e2[] = {
		{ 200, "{\"data\":{\"ttl\":1e300,\"creation_ttl\":3600,\"renewable\":true}}",
		  NULL }, MOUNTS_V2, DATA_V3 };
	const struct http_replay_entry *es[] = { e1, e2 };
	struct secret_ref ref = mkref("hcv:sql/x");
	struct secret *s = NULL;
	struct fx *f;
	size_t i;

	for (i = 0; i < 2; i++) {
		f = fx_new();
		conf_add(f, "token", "file:/t/token");
		assert_int_equal(fx_open(f, es[i], 3), 0);
		assert_int_equal(prov_hcvault.get(&f->st, &ref, NULL, &s, NULL, &f->err), 0);
		assert_int_equal(f->rp.nseen, 3);
		assert_null(strstr(f->rp.seen_url[1], "renew"));
		secret_free(s);
		fx_free(f);
	}
}

static void
t_renewal_decision(void **state)
{
	/* 30 s left of 3600: renew before the next request */
	static const struct http_replay_entry e1[] = {
		{ 200, "{\"data\":{\"ttl\":30,\"creation_ttl\":3600,\"renewable\":true}}", NULL },
		{ 200, "{\"auth\":{\"client_token\":\"x\",\"lease_duration\":3600,\"renewable\":true}}", NULL },
		MOUNTS_V2, DATA_V3 };
	/* 1300 s left of 3600, more than a third: no renewal */
	static const struct http_replay_entry e2[] = {
		{ 200, "{\"data\":{\"ttl\":1300,\"creation_ttl\":3600,\"renewable\":true}}", NULL },
		MOUNTS_V2, DATA_V3 };
	/* not renewable: no renewal however little is left */
	static const struct http_replay_entry e3[] = {
		{ 200, "{\"data\":{\"ttl\":30,\"creation_ttl\":3600,\"renewable\":false}}", NULL },
		MOUNTS_V2, DATA_V3 };
	struct secret_ref ref = mkref("hcv:sql/x");
	struct secret *s = NULL;
	struct fx *f;

	f = fx_new();
	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e1, 4), 0);
	assert_int_equal(prov_hcvault.get(&f->st, &ref, NULL, &s, NULL, &f->err), 0);
	assert_string_equal(f->rp.seen_url[1], "https://vault.test:8200/v1/auth/token/renew-self");
	assert_string_equal(f->rp.seen_body[1], "{\"increment\":\"3600s\"}");
	assert_int_equal(f->rp.nseen, 4);
	/* renewed to 3600: the next request does not renew again */
	secret_free(s);
	fx_free(f);

	f = fx_new();
	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e2, 3), 0);
	assert_int_equal(prov_hcvault.get(&f->st, &ref, NULL, &s, NULL, &f->err), 0);
	assert_int_equal(f->rp.nseen, 3);
	assert_null(strstr(f->rp.seen_url[1], "renew"));
	secret_free(s);
	fx_free(f);

	f = fx_new();
	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e3, 3), 0);
	assert_int_equal(prov_hcvault.get(&f->st, &ref, NULL, &s, NULL, &f->err), 0);
	assert_int_equal(f->rp.nseen, 3);
	secret_free(s);
	fx_free(f);
}

/* ---- check ---- */

static void
t_check(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT, MOUNTS_V2,
		{ 200, "{\"secret/data/sql/a\":[\"create\",\"read\",\"update\"],\"secret/metadata/sql/a\":"
		  "[\"read\",\"update\"],\"capabilities\":[\"create\",\"read\",\"update\"]}", NULL },
		{ 200, "{\"secret/data/sql/b\":[\"read\"],\"secret/metadata/sql/b\":[\"read\"]}", NULL } };
	struct fx *f = fx_new();
	struct secret_ref a = mkref("hcv:sql/a"), b = mkref("hcv:sql/b#other");
	const struct secret_ref *refs[] = { &a, &b };
	struct buf rep;

	buf_init(&rep, 0);
	conf_add(f, "token", "file:/t/token");
	assert_int_equal(fx_open(f, e, 4), 0);
	assert_int_equal(prov_hcvault.check(&f->st, refs, 2, &rep, &f->err), DMK_ERR_DENIED);
	assert_string_equal(f->rp.seen_url[2], "https://vault.test:8200/v1/sys/capabilities-self");
	assert_string_equal(f->rp.seen_body[2],
	    "{\"paths\":[\"secret/data/sql/a\",\"secret/metadata/sql/a\"]}");
	assert_non_null(strstr(rep.data, "hcv:sql/a "));
	assert_non_null(strstr(rep.data, "ok"));
	assert_non_null(strstr(rep.data, "hcv:sql/b#other"));
	assert_non_null(strstr(rep.data, "FAIL  missing create/update on secret/data/sql/b, "
	    "update on secret/metadata/sql/b"));
	buf_free(&rep);
	fx_free(f);
}

/* ---- configuration ---- */

static void
t_validate(void **state)
{
	static const struct { const char *k[4], *v[4], *want; } cases[] = {
		{ { "auth", "secret_id" }, { "approle", "file:/t/secret-id" }, "needs 'role_id'" },
		{ { "auth", "role_id" }, { "approle", "r" }, "needs 'secret_id'" },
		{ { "auth", "jwt" }, { "kubernetes", "file:/t/jwt" }, "needs 'role'" },
		{ { "auth", "role" }, { "jwt", "r" }, "needs 'jwt'" },
		{ { "auth" }, { "cert" }, "needs 'client_cert'" },
		{ { "tls_server_name" }, { "vault.internal" }, "'tls_server_name' is not supported" },
		{ { "role_id" }, { "r" }, "'role_id' is only for auth = approle" },
		{ { "mount" }, { "/secret/" }, "'mount' must be" },
		{ { "client_key" }, { "file:/t/key" }, "'client_key' needs 'client_cert'" },
	};
	size_t i, j;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fx *f = fx_new();
		for (j = 0; j < 4 && cases[i].k[j]; j++)
			conf_add(f, cases[i].k[j], cases[i].v[j]);
		assert_int_equal(prov_hcvault.validate(&f->conf, &f->err), DMK_ERR_CONFIG);
		if (strstr(f->err.msg, cases[i].want) == NULL)
			fail_msg("case %zu: '%s' lacks '%s'", i, f->err.msg, cases[i].want);
		fx_free(f);
	}
	{
		struct fx *f = fx_new();
		conf_add(f, "auth", "approle");
		conf_add(f, "role_id", "r");
		conf_add(f, "secret_id", "file:/t/secret-id");
		assert_int_equal(prov_hcvault.validate(&f->conf, &f->err), 0);
		fx_free(f);
	}
}

static void
t_env_fallbacks(void **state)
{
	static const struct http_replay_entry e[] = { LOOKUP_ROOT };
	struct fx *f = fx_new();

	f->conf.nkv = 0;   /* no address: VAULT_ADDR */
	setenv("VAULT_ADDR", "https://env.vault:8200", 1);
	setenv("VAULT_TOKEN", TOKEN, 1);
	setenv("VAULT_NAMESPACE", "ns1/", 1);
	setenv("VAULT_SKIP_VERIFY", "true", 1);
	assert_int_equal(fx_open(f, e, 1), 0);
	assert_string_equal(f->rp.seen_url[0], "https://env.vault:8200/v1/auth/token/lookup-self");
	assert_non_null(strstr(f->rp.seen_headers[0], "X-Vault-Token: " TOKEN "\n"));
	assert_non_null(strstr(f->rp.seen_headers[0], "X-Vault-Namespace: ns1/\n"));
	unsetenv("VAULT_ADDR");
	unsetenv("VAULT_TOKEN");
	secret_env_forget("VAULT_TOKEN");
	unsetenv("VAULT_NAMESPACE");
	unsetenv("VAULT_SKIP_VERIFY");
	fx_free(f);
}

/* ---- canary: a run of failures with known secrets in play ---- */

static void
t_canary(void **state)
{
	static const struct http_replay_entry e[] = { LOGIN_OK, LOOKUP_LOGIN, MOUNTS_V2,
		{ 400, "{\"errors\":[\"no data provided\"],\"data\":{\"password\":\"" PASSWORD "\"}}", NULL },
		{ 200, "{\"data\":{\"data\":{\"password\":5},\"metadata\":{\"version\":1}}}", NULL },
		{ 200, "{\"data\":{\"data\":{\"password\":\"" PASSWORD "\"},\"metadata\":{\"version\":1,"
		  "\"deletion_time\":\"\",\"destroyed\":false}}}", NULL }, E400_CAS,
		{ 200, "not json " PASSWORD, NULL },
		OK204 };
	struct fx *f = fx_new();
	struct secret_ref ref = mkref("hcv:sql/x");
	struct secret *s = NULL, *val = secret_from_str(PASSWORD);

	conf_add(f, "max_versions", "0");   /* the requests as before max_versions */
	conf_add(f, "auth", "approle");
	conf_add(f, "role_id", "role-1234");
	conf_add(f, "secret_id", "file:/t/secret-id");
	assert_int_equal(fx_open(f, e, 9), 0);
	assert_int_equal(prov_hcvault.get(&f->st, &ref, NULL, &s, NULL, &f->err), DMK_ERR_BADINPUT);
	assert_clean(f);
	assert_int_equal(prov_hcvault.get(&f->st, &ref, NULL, &s, NULL, &f->err), DMK_ERR_PROTOCOL);
	assert_clean(f);
	assert_int_equal(prov_hcvault.put(&f->st, &ref, val, "1", NULL, NULL, &f->err),
	    DMK_ERR_CONFLICT);
	assert_clean(f);
	assert_int_equal(prov_hcvault.get(&f->st, &ref, NULL, &s, NULL, &f->err), DMK_ERR_PROTOCOL);
	assert_clean(f);
	assert_null(s);
	secret_free(val);
	fx_free(f);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_get_ok),
		cmocka_unit_test(t_get_version_field),
		cmocka_unit_test(t_get_404_empty),
		cmocka_unit_test(t_get_deleted_destroyed),
		cmocka_unit_test(t_get_403),
		cmocka_unit_test(t_open_invalid_token),
		cmocka_unit_test(t_kv1_read),
		cmocka_unit_test(t_sealed_then_ok),
		cmocka_unit_test(t_sealed_exhausted),
		cmocka_unit_test(t_429_retry_after),
		cmocka_unit_test(t_5xx_exhausted),
		cmocka_unit_test(t_412_retried_400_not),
		cmocka_unit_test(t_put_create),
		cmocka_unit_test(t_put_max_versions),
		cmocka_unit_test(t_put_keeps_fields_and_cas_conflict),
		cmocka_unit_test(t_put_dropped_then_cas),
		cmocka_unit_test(t_markers_roundtrip),
		cmocka_unit_test(t_markers_limit),
		cmocka_unit_test(t_delete_version),
		cmocka_unit_test(t_approle_login),
		cmocka_unit_test(t_user_token_not_revoked),
		cmocka_unit_test(t_approle_bad_secret),
		cmocka_unit_test(t_approle_wrapped),
		cmocka_unit_test(t_approle_wrapped_wrong_path),
		cmocka_unit_test(t_approle_wrapped_used),
		cmocka_unit_test(t_jwt_k8s_cert_login),
		cmocka_unit_test(t_renewal_decision),
		cmocka_unit_test(t_renewal_huge_ttl),
		cmocka_unit_test(t_set_meta_huge_marker),
		cmocka_unit_test(t_check),
		cmocka_unit_test(t_validate),
		cmocka_unit_test(t_env_fallbacks),
		cmocka_unit_test(t_canary),
	};

	secret_install_json_allocator();
	unsetenv("VAULT_ADDR");
	unsetenv("VAULT_TOKEN");
	secret_env_forget("VAULT_TOKEN");
	unsetenv("VAULT_NAMESPACE");
	log_init("test_hcvault", LOG_LVL_ERROR, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
