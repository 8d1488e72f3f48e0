// Reads one secret from azuresim through the official JS SDK using a
// credential other than a client secret. AZSIM_CRED selects it:
//   cert      ClientCertificateCredential (PEM with key + cert: AZSIM_CERT_PEM)
//   workload  WorkloadIdentityCredential (token file: ready.federated_token_file)
//   appsvc    ManagedIdentityCredential via IDENTITY_ENDPOINT / IDENTITY_HEADER (App Service)
// Env: AZSIM_READY, AZSIM_JS_DIR, AZSIM_NAME, AZSIM_VALUE, NODE_EXTRA_CA_CERTS.
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.env.AZSIM_JS_DIR, "package.json"));
const identity = require("@azure/identity");
const { SecretClient } = require("@azure/keyvault-secrets");

const ready = JSON.parse(process.env.AZSIM_READY);
const common = { authorityHost: ready.authority_host, disableInstanceDiscovery: true };
let cred;
switch (process.env.AZSIM_CRED) {
  case "cert":
    cred = new identity.ClientCertificateCredential(ready.tenant, ready.client_id,
      { certificatePath: process.env.AZSIM_CERT_PEM }, common);
    break;
  case "workload":
    cred = new identity.WorkloadIdentityCredential({ tenantId: ready.tenant, clientId: ready.client_id,
      tokenFilePath: ready.federated_token_file, ...common });
    break;
  case "appsvc":
    cred = new identity.ManagedIdentityCredential();
    break;
  default:
    throw new Error("AZSIM_CRED?");
}
try {
  const client = new SecretClient(ready.vault_url, cred, { disableChallengeResourceVerification: true });
  const s = await client.getSecret(process.env.AZSIM_NAME);
  if (s.value !== process.env.AZSIM_VALUE) throw new Error("wrong value " + s.value);
  console.log(JSON.stringify({ ok: true }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e) }));
  process.exit(1);
}
