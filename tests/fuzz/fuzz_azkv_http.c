/*
 * fuzz_azkv_http.c: every answer Azure gives, from the first challenge on.
 * The input (conv.h) picks a credential (client secret; managed identity
 * through IMDS, App Service and Azure Arc; workload identity; the default
 * chain; a user-assigned identity) and a set of operations, and scripts
 * every HTTP answer: the 401 challenge (WWW-Authenticate), Entra and
 * managed-identity token answers, Arc's Basic challenge naming a key file,
 * secret bundles, writes, version pages with nextLink, deleted-secret
 * probes, error bodies and Retry-After.
 *
 * Arc's key file and the federated token live in FUZZ_DIR, made at start.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "agent/config.h"
#include "providers/provider.h"
#include "providers/azure.h"
#include "conv.h"

#define FUZZ_DIR "/tmp/dmk-fuzz-azure"

extern const struct prov_ops prov_azkv;

#define VAULT "[store akv]\ntype = azure-key-vault\nvault_url = https://myvault.vault.azure.net\n"
static const char *const confs[] = {
	VAULT "auth = client-secret\ntenant_id = t1\nclient_id = c1\nclient_secret = env:FUZZ_SECRET\n",
	VAULT "auth = managed-identity\n",           /* IMDS */
	VAULT "auth = managed-identity\n",           /* App Service */
	VAULT "auth = managed-identity\n",           /* Azure Arc */
	VAULT "auth = workload-identity\ntenant_id = t1\nclient_id = c1\n"
	    "federated_token_file = " FUZZ_DIR "/fed.jwt\n",
	"[store akv]\ntype = azure-key-vault\nvault_url = https://myvault.vault.usgovcloudapi.net\n"
	    "cloud = usgov\n",                          /* default chain, another cloud */
	VAULT "auth = managed-identity\nmanaged_identity_client_id = mi1\n"
	    "challenge_resource_verification = no\napi_version = 7.4\n",
};
#define NCONFS (sizeof(confs) / sizeof(confs[0]))

static const char *const envs[] = { "AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET",
	"AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST",
	"IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IMDS_ENDPOINT", AZ_ENV_IMDS,
	"AZURE_POD_IDENTITY_AUTHORITY_HOST", AZ_ENV_ARC_DIR };

static int
resolve(void *ctx, const struct secret_ref *ref, struct secret **out, struct dmk_err *err)
{
	(void)ctx;
	(void)ref;
	*out = secret_from_str("fuzz-client-secret");
	return *out ? 0 : dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
}

static void
write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd == -1 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
		fprintf(stderr, "fuzz_azkv_http: %s: %s\n", path, strerror(errno));
		abort();
	}
	close(fd);
}

static void
set_env(unsigned cfg)
{
	size_t i;

	for (i = 0; i < sizeof(envs) / sizeof(envs[0]); i++)
		unsetenv(envs[i]);
	switch (cfg) {
	case 1:
		setenv(AZ_ENV_IMDS, "https://imds.fuzz/", 1);
		break;
	case 2:
		setenv("IDENTITY_ENDPOINT", "https://appsvc.fuzz/msi/token", 1);
		setenv("IDENTITY_HEADER", "hdr", 1);
		break;
	case 3:
		setenv("IDENTITY_ENDPOINT", "https://arc.fuzz/metadata/identity/oauth2/token", 1);
		setenv("IMDS_ENDPOINT", "https://arc.fuzz", 1);
		setenv(AZ_ENV_ARC_DIR, FUZZ_DIR, 1);
		break;
	}
}

static void
refof(struct secret_ref *ref, const char *path)
{
	memset(ref, 0, sizeof(*ref));
	ref->kind = REF_STORE;
	strcpy(ref->store, "akv");
	strcpy(ref->path, path);
	snprintf(ref->text, sizeof(ref->text), "akv:%s", path);
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
	unsigned which;

	if (!init) {
		secret_install_json_allocator();
		log_init("fuzz_azkv_http", LOG_LVL_ERROR, 0);
		if (mkdir(FUZZ_DIR, 0700) == -1 && errno != EEXIST)
			abort();
		write_file(FUZZ_DIR "/fuzz.key", "arc-key");
		write_file(FUZZ_DIR "/fed.jwt", "eyJhbGciOiJub25lIn0.e30.");
		for (k = 0; k < NCONFS; k++)
			if (config_parse_string(confs[k], "fuzz.conf", &cfg[k], &err) != 0) {
				fprintf(stderr, "fuzz_azkv_http: config %zu: %s\n", k, err.msg);
				abort();
			}
		init = 1;
	}
	if (conv_parse(&c, data, size) != 0) {
		conv_free(&c);
		return 0;
	}
	which = c.cfg % NCONFS;
	set_env(which);
	memset(&st, 0, sizeof(st));
	st.conf = &cfg[which]->stores[0];
	st.ops = &prov_azkv;
	st.resolve = resolve;
	if ((st.priv = calloc(1, prov_azkv.priv_size)) == NULL)
		goto out;
	http_client_replay(&st.http, &c.rp);
	if (prov_azkv.open(&st, &err) != 0)
		goto out;
	refof(&ref, "db1");
	refof(&ref2, "db-two");
	if ((c.ops & 0x01) && prov_azkv.get(&st, &ref, NULL, &s, &v, &err) == 0)
		secret_free(s);
	if ((c.ops & 0x02) && prov_azkv.get(&st, &ref2, "0123456789abcdef0123456789abcdef",
	    &s, &v, &err) == 0)
		secret_free(s);
	if ((c.ops & 0x04) && prov_azkv.list_versions(&st, &ref, &list, &n, &err) == 0)
		free(list);
	memset(&m, 0, sizeof(m));
	prov_meta_set(&m, "dmkagent-state", "current");
	prov_meta_set(&m, "dmkagent-rotation", "r-fuzz");
	if (c.ops & 0x08)
		prov_azkv.set_meta(&st, &ref, "11111111111111111111111111111111", &m, &err);
	if ((c.ops & 0x30) && (val = secret_from_str("fuzz-value")) != NULL) {
		if (c.ops & 0x10)
			prov_azkv.put(&st, &ref, val, NULL, &m, &v, &err);
		if (c.ops & 0x20)
			prov_azkv.put(&st, &ref2, val, "22222222222222222222222222222222", &m, &v,
			    &err);
		secret_free(val);
	}
	if (c.ops & 0x40) {
		refs[0] = &ref;
		refs[1] = &ref2;
		buf_init(&report, 0);
		prov_azkv.check(&st, refs, 2, &report, &err);
		buf_free(&report);
	}
	prov_azkv.close(&st);
out:
	free(st.priv);
	conv_free(&c);
	return 0;
}
