// Writes a new version of a Key Vault secret with the official Azure SDK for
// JavaScript, as an operator's pipeline would (no dmkagent tags).
// usage: node setsecret.mjs < value   (env: AZ_JS_DIR, AZ_VAULT_URL, AZ_AUTHORITY,
//        AZ_TENANT, AZ_CLIENT, AZ_CLIENT_SECRET, AZ_NAME; NODE_EXTRA_CA_CERTS = the test CA)
// Prints the new version id.
import { createRequire } from "node:module";
import path from "node:path";
import fs from "node:fs";

const require = createRequire(path.join(process.env.AZ_JS_DIR, "package.json"));
const { ClientSecretCredential } = require("@azure/identity");
const { SecretClient } = require("@azure/keyvault-secrets");

const value = fs.readFileSync(0, "utf8").replace(/\n$/, "");
const cred = new ClientSecretCredential(process.env.AZ_TENANT, process.env.AZ_CLIENT,
  process.env.AZ_CLIENT_SECRET, { authorityHost: process.env.AZ_AUTHORITY,
  disableInstanceDiscovery: true });
const client = new SecretClient(process.env.AZ_VAULT_URL, cred,
  { disableChallengeResourceVerification: true });
const s = await client.setSecret(process.env.AZ_NAME, value);
console.log(s.properties.version);
