/*
 * fuzz_hcvault_http.c: every answer Vault gives, from login to revocation.
 * The input (conv.h) picks a store configuration (auth token, approle,
 * wrapped approle, kubernetes, jwt, cert; a namespace and a nested mount)
 * and a set of operations, and scripts every HTTP answer: auth logins,
 * unwrap, token lookup/renew/revoke, mount detection, KV v1/v2 reads,
 * metadata, version lists, check-and-set writes, deletes, error bodies and
 * Retry-After headers (the retry loop runs with a no-op sleep).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "agent/config.h"
#include "providers/provider.h"
#include "conv.h"

extern const struct prov_ops prov_hcvault;

static const char *const confs[] = {
	"[store hcv]\ntype = hashicorp-vault\naddress = https://vault.fuzz:8200\n"
	"token = file:/fuzz/token\n",
	"[store hcv]\ntype = hashicorp-vault\naddress = https://vault.fuzz:8200/v1/\n"
	"auth = approle\nrole_id = r1\nsecret_id = file:/fuzz/sid\n",
	"[store hcv]\ntype = hashicorp-vault\naddress = https://vault.fuzz:8200\n"
	"auth = approle\nrole_id = r1\nsecret_id = file:/fuzz/wrap\nsecret_id_wrapped = yes\n",
	"[store hcv]\ntype = hashicorp-vault\naddress = https://vault.fuzz:8200\n"
	"auth = kubernetes\nrole = dmk\njwt = file:/fuzz/jwt\nauth_mount = k8s/prod\n",
	"[store hcv]\ntype = hashicorp-vault\naddress = https://vault.fuzz:8200\n"
	"auth = jwt\nrole = dmk\njwt = file:/fuzz/jwt\n",
	"[store hcv]\ntype = hashicorp-vault\naddress = https://vault.fuzz:8200\n"
	"auth = cert\nrole = dmk\nclient_cert = /fuzz/cert.pem\nclient_key = file:/fuzz/key.pem\n",
	"[store hcv]\ntype = hashicorp-vault\naddress = https://vault.fuzz:8200\n"
	"token = file:/fuzz/token\nnamespace = team/a\nmount = kv/prod\n",
};
#define NCONFS (sizeof(confs) / sizeof(confs[0]))

static int
resolve(void *ctx, const struct secret_ref *ref, struct secret **out, struct dmk_err *err)
{
	(void)ctx;
	(void)ref;
	*out = secret_from_str("hvs.fuzz-credential");
	return *out ? 0 : dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct config *cfg[NCONFS];
	static int init;
	struct conv c;
	struct store st;
	struct dmk_err err;
	struct secret_ref ref, ref2;
	const struct secret_ref *refs[2];
	struct secret *s = NULL, *val;
	struct prov_version v, *list = NULL;
	struct prov_meta m;
	struct buf report;
	size_t n = 0, k;

	if (!init) {
		static const char *const env[] = { "VAULT_ADDR", "VAULT_TOKEN", "VAULT_NAMESPACE",
		    "VAULT_CACERT", "VAULT_CAPATH", "VAULT_CLIENT_CERT", "VAULT_CLIENT_KEY" };
		secret_install_json_allocator();
		log_init("fuzz_hcvault_http", LOG_LVL_ERROR, 0);
		for (k = 0; k < sizeof(env) / sizeof(env[0]); k++)
			unsetenv(env[k]);
		for (k = 0; k < NCONFS; k++)
			if (config_parse_string(confs[k], "fuzz.conf", &cfg[k], &err) != 0) {
				fprintf(stderr, "fuzz_hcvault_http: config %zu: %s\n", k, err.msg);
				abort();
			}
		init = 1;
	}
	if (conv_parse(&c, data, size) != 0) {
		conv_free(&c);
		return 0;
	}
	memset(&st, 0, sizeof(st));
	st.conf = &cfg[c.cfg % NCONFS]->stores[0];
	st.ops = &prov_hcvault;
	st.resolve = resolve;
	if ((st.priv = calloc(1, prov_hcvault.priv_size)) == NULL)
		goto out;
	http_client_replay(&st.http, &c.rp);
	if (prov_hcvault.open(&st, &err) != 0)
		goto out;
	ref_parse("hcv:sql/fuzz", &ref, &err);
	ref_parse("hcv:sql/other#pw", &ref2, &err);
	if ((c.ops & 0x01) && prov_hcvault.get(&st, &ref, NULL, &s, &v, &err) == 0)
		secret_free(s);
	if ((c.ops & 0x02) && prov_hcvault.get(&st, &ref2, "1", &s, &v, &err) == 0)
		secret_free(s);
	if ((c.ops & 0x04) && prov_hcvault.list_versions(&st, &ref, &list, &n, &err) == 0)
		free(list);
	memset(&m, 0, sizeof(m));
	prov_meta_set(&m, "dmkagent-state", "current");
	prov_meta_set(&m, "dmkagent-rotation", "r-fuzz");
	if (c.ops & 0x08)
		prov_hcvault.set_meta(&st, &ref, "2", &m, &err);
	if ((c.ops & 0x30) && (val = secret_from_str("fuzz-value")) != NULL) {
		if (c.ops & 0x10)
			prov_hcvault.put(&st, &ref, val, "3", &m, &v, &err);
		if (c.ops & 0x20)
			prov_hcvault.put(&st, &ref2, val, "0", NULL, &v, &err);
		secret_free(val);
	}
	if (c.ops & 0x40)
		prov_hcvault.delete_version(&st, &ref, "1", &err);
	if (c.ops & 0x80) {
		refs[0] = &ref;
		refs[1] = &ref2;
		buf_init(&report, 0);
		prov_hcvault.check(&st, refs, 2, &report, &err);
		buf_free(&report);
	}
	prov_hcvault.close(&st);
out:
	free(st.priv);
	conv_free(&c);
	return 0;
}
