/*
 * fuzz_azkv.c: the Azure parsers that read what a server sends: the
 * WWW-Authenticate challenge, token responses (Entra and managed identity)
 * and Key Vault answers (bundles, version pages, errors) through the
 * provider with a replay client.
 *
 * The first byte picks the target; the rest is the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "agent/config.h"
#include "providers/provider.h"
#include "providers/azure.h"

extern const struct prov_ops prov_azkv;

static const char *conf_text =
    "[store akv]\ntype = azure-key-vault\nvault_url = https://myvault.vault.azure.net\n"
    "auth = client-secret\ntenant_id = t1\nclient_id = c1\nclient_secret = env:FUZZ_SECRET\n";

static int
resolve(void *ctx, const struct secret_ref *ref, struct secret **out, struct dmk_err *err)
{
	(void)ctx;
	(void)ref;
	*out = secret_from_str("fuzz-secret");
	return *out ? 0 : dmk_errf(err, DMK_ERR_NOMEM, "oom");
}

/* The input as one Key Vault answer after a fixed, successful open. */
static void
through_provider(const char *body, int op)
{
	static struct config *cfg;
	struct http_replay_entry e[] = {
		{ 401, "", "WWW-Authenticate: Bearer authorization=\"https://login/t1\", "
		  "resource=\"https://vault.azure.net\"\n" },
		{ 200, "{\"access_token\":\"tok\",\"expires_in\":3600}", NULL },
		{ 200, "{\"value\":[]}", NULL },
		{ op == 2 ? 404 : 200, body, NULL },
		{ 200, body, NULL },
		{ 200, body, NULL },
	};
	struct http_replay rp;
	struct store st;
	struct dmk_err err;
	struct secret_ref ref;
	struct secret *s = NULL;
	struct prov_version v, *vs = NULL;
	size_t n;

	if (cfg == NULL && config_parse_string(conf_text, "fuzz.conf", &cfg, &err) != 0)
		abort();
	memset(&rp, 0, sizeof(rp));
	memset(&st, 0, sizeof(st));
	rp.entries = e;
	rp.n = sizeof(e) / sizeof(e[0]);
	st.conf = &cfg->stores[0];
	st.ops = &prov_azkv;
	st.priv = calloc(1, prov_azkv.priv_size);
	st.resolve = resolve;
	http_client_replay(&st.http, &rp);
	memset(&ref, 0, sizeof(ref));
	ref.kind = REF_STORE;
	strcpy(ref.store, "akv");
	strcpy(ref.path, "db1");
	strcpy(ref.text, "akv:db1");
	if (prov_azkv.open(&st, &err) == 0) {
		if (op == 0 || op == 2) {
			if (prov_azkv.get(&st, &ref, NULL, &s, &v, &err) == 0)
				secret_free(s);
		} else if (prov_azkv.list_versions(&st, &ref, &vs, &n, &err) == 0)
			free(vs);
	}
	prov_azkv.close(&st);
	free(st.priv);
	http_replay_free(&rp);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct az_challenge ch;
	struct dmk_err err;
	struct secret *tok = NULL;
	time_t exp;
	char *s;

	if (size < 1)
		return 0;
	if ((s = malloc(size)) == NULL)
		return 0;
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';
	switch (data[0] % 5) {
	case 0:
		az_challenge_parse(s, &ch, &err);
		break;
	case 1:
		if (az_token_parse(s, size - 1, 1700000000, &tok, &exp, &err) == 0)
			secret_free(tok);
		break;
	case 2:
		through_provider(s, 0);   /* a secret bundle */
		break;
	case 3:
		through_provider(s, 1);   /* a page of versions */
		break;
	case 4:
		through_provider(s, 2);   /* an error body */
		break;
	}
	free(s);
	return 0;
}
