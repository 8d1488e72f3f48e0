/*
 * hcvault.c: HashiCorp Vault (KV version 2, and version 1 for reading).
 * STUB: the configuration keys are final; the operations come with the
 * Vault provider issue.
 */
#include <string.h>

#include "../agent/dmk.h"
#include "../agent/secret.h"
#include "provider.h"

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
	{ NULL, 0, 0, NULL, 0, 0 },
};

static int
hcvault_open(struct store *st, struct dmk_err *err)
{
	return dmk_errf(err, DMK_ERR_UNSUPPORTED, "the hashicorp-vault store is not built yet");
}

const struct prov_ops prov_hcvault = {
	.type = "hashicorp-vault",
	.caps = PROV_CAP_CAS | PROV_CAP_VERSIONS | PROV_CAP_META | PROV_CAP_DELETE,
	.keys = hcvault_keys,
	.priv_size = 0,
	.open = hcvault_open,
};
