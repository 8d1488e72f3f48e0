/*
 * azkv.c: Azure Key Vault secrets with Entra ID credentials.
 * STUB: the configuration keys are final; the operations come with the
 * Azure Key Vault provider issue.
 */
#include <string.h>

#include "../agent/dmk.h"
#include "../agent/secret.h"
#include "provider.h"

static const struct conf_keydef azkv_keys[] = {
	{ "vault_url", CK_URL, 1, NULL, 0, 0 },
	{ "tenant_id", CK_STRING, 0, NULL, 0, 0 },     /* default AZURE_TENANT_ID */
	{ "client_id", CK_STRING, 0, NULL, 0, 0 },     /* default AZURE_CLIENT_ID */
	{ "auth", CK_ENUM, 0,
	  "client-secret|client-certificate|workload-identity|managed-identity|default", 0, 0 },
	{ "client_secret", CK_REF, 0, NULL, 0, 0 },
	{ "client_certificate", CK_PATH, 0, NULL, 0, 0 },   /* PEM certificate */
	{ "client_certificate_key", CK_REF, 0, NULL, 0, 0 },/* file:... PEM key */
	{ "assertion_alg", CK_ENUM, 0, "PS256|RS256", 0, 0 },
	{ "authority_host", CK_URL, 0, NULL, 0, 0 },   /* default per cloud */
	{ "cloud", CK_ENUM, 0, "public|usgov|china", 0, 0 },
	{ "api_version", CK_STRING, 0, NULL, 0, 0 },   /* default 7.5 */
	{ "ca_file", CK_PATH, 0, NULL, 0, 0 },
	{ "managed_identity_client_id", CK_STRING, 0, NULL, 0, 0 },
	{ "managed_identity_object_id", CK_STRING, 0, NULL, 0, 0 },
	{ "managed_identity_resource_id", CK_STRING, 0, NULL, 0, 0 },
	{ "timeout", CK_DURATION, 0, NULL, 0, 0 },
	{ NULL, 0, 0, NULL, 0, 0 },
};

static int
azkv_open(struct store *st, struct dmk_err *err)
{
	return dmk_errf(err, DMK_ERR_UNSUPPORTED, "the azure-key-vault store is not built yet");
}

const struct prov_ops prov_azkv = {
	.type = "azure-key-vault",
	.caps = PROV_CAP_VERSIONS | PROV_CAP_META,
	.keys = azkv_keys,
	.priv_size = 0,
	.open = azkv_open,
};
