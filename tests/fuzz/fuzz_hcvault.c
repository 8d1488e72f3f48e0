/*
 * fuzz_hcvault.c: Vault answers from an untrusted peer.  The input is the
 * body of a replayed response to a KV read, a metadata read (versions and
 * markers) and a write, each with a 200 and with a 404 status.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "agent/config.h"
#include "providers/provider.h"

extern const struct prov_ops prov_hcvault;

static int
tok(void *ctx, const struct secret_ref *ref, struct secret **out, struct dmk_err *err)
{
	*out = secret_from_str("hvs.fuzz");
	return *out ? 0 : DMK_ERR_NOMEM;
}

static void
one(const char *body, long status)
{
	struct http_replay_entry e[] = {
		{ 200, "{\"data\":{\"ttl\":0,\"renewable\":false}}", NULL },
		{ 200, "{\"data\":{\"type\":\"kv\",\"path\":\"secret/\",\"options\":{\"version\":\"2\"}}}", NULL },
		{ status, body, NULL },      /* get */
		{ status, body, NULL },      /* list_versions */
		{ status, body, NULL },      /* set_meta: metadata read */
		{ 204, "", NULL },
		{ 200, body, NULL },         /* put: current data */
		{ status, body, NULL },      /* put: the write */
		{ status, body, NULL },      /* markers */
		{ 204, "", NULL },
	};
	struct conf_kv kv[2];
	struct conf_store conf;
	struct store st;
	struct http_replay rp;
	struct dmk_err err;
	struct secret_ref ref;
	struct secret *s = NULL, *val;
	struct prov_version v, *list = NULL;
	struct prov_meta m;
	size_t n = 0;

	memset(&conf, 0, sizeof(conf));
	memset(&st, 0, sizeof(st));
	memset(&rp, 0, sizeof(rp));
	memset(kv, 0, sizeof(kv));
	kv[0].key = "address";
	kv[0].value = "https://vault.fuzz:8200";
	kv[0].kind = CK_URL;
	kv[1].key = "token";
	kv[1].value = "file:/fuzz/token";
	kv[1].kind = CK_REF;
	ref_parse("file:/fuzz/token", &kv[1].ref, &err);
	strcpy(conf.name, "hcv");
	conf.kv = kv;
	conf.nkv = 2;
	conf.ops = &prov_hcvault;
	rp.entries = e;
	rp.n = sizeof(e) / sizeof(e[0]);
	st.conf = &conf;
	st.ops = &prov_hcvault;
	st.resolve = tok;
	if ((st.priv = calloc(1, prov_hcvault.priv_size)) == NULL)
		return;
	http_client_replay(&st.http, &rp);
	st.http.retry.max_attempts = 1;
	if (prov_hcvault.open(&st, &err) == 0) {
		ref_parse("hcv:sql/fuzz", &ref, &err);
		if (prov_hcvault.get(&st, &ref, NULL, &s, &v, &err) == 0)
			secret_free(s);
		if (prov_hcvault.list_versions(&st, &ref, &list, &n, &err) == 0)
			free(list);
		memset(&m, 0, sizeof(m));
		prov_meta_set(&m, "dmkagent-state", "current");
		prov_hcvault.set_meta(&st, &ref, "2", &m, &err);
		if ((val = secret_from_str("fuzz-value")) != NULL) {
			prov_hcvault.put(&st, &ref, val, "3", &m, &v, &err);
			secret_free(val);
		}
		prov_hcvault.close(&st);
	}
	free(st.priv);
	http_replay_free(&rp);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int init;
	char *body;

	if (!init) {
		secret_install_json_allocator();
		log_init("fuzz_hcvault", LOG_LVL_ERROR, 0);
		init = 1;
	}
	if ((body = malloc(size + 1)) == NULL)
		return 0;
	memcpy(body, data, size);
	body[size] = '\0';
	one(body, 200);
	one(body, 404);
	free(body);
	return 0;
}
