// Drives azuresim with the official Azure SDK for JavaScript.
// usage: node jssdk.mjs  (config in env: AZSIM_READY = the ready line JSON,
//        AZSIM_SECRET = client secret; NODE_EXTRA_CA_CERTS = the test CA)
// Prints one JSON line of results; exits non-zero on the first failure.
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.env.AZSIM_JS_DIR, "package.json"));
const { ClientSecretCredential } = require("@azure/identity");
const { SecretClient } = require("@azure/keyvault-secrets");

const ready = JSON.parse(process.env.AZSIM_READY);
const out = {};
function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
}

const cred = new ClientSecretCredential(ready.tenant, ready.client_id, process.env.AZSIM_SECRET, {
  authorityHost: ready.authority_host,
  disableInstanceDiscovery: true,
});
const client = new SecretClient(ready.vault_url, cred, {
  disableChallengeResourceVerification: true,
  retryOptions: { maxRetries: 3, retryDelayInMs: 50, maxRetryDelayInMs: 200 },
});

const name = process.env.AZSIM_NAME || "dmk-js-test";
try {
  // set + get
  const s1 = await client.setSecret(name, "password-1", { tags: { purpose: "dmk" }, contentType: "text/plain" });
  check(s1.value === "password-1", "setSecret value");
  check(/^[0-9a-f]{32}$/.test(s1.properties.version), "32-hex version");
  const g1 = await client.getSecret(name);
  check(g1.value === "password-1", "getSecret value");
  check(g1.properties.tags.purpose === "dmk", "tags round trip");
  check(g1.properties.recoveryLevel === "Recoverable+Purgeable", "recoveryLevel");
  check(g1.properties.createdOn instanceof Date, "createdOn is a Date");
  out.first_version = s1.properties.version;

  // many versions -> paging via nextLink
  const N = 27;
  let last;
  for (let i = 2; i <= N; i++) last = await client.setSecret(name, "password-" + i);
  const versions = [];
  for await (const p of client.listPropertiesOfSecretVersions(name)) versions.push(p.version);
  check(versions.length === N, "listed " + versions.length + " versions, want " + N);
  check(new Set(versions).size === N, "versions distinct");
  let pages = 0;
  for await (const page of client.listPropertiesOfSecretVersions(name).byPage({ maxPageSize: 10 })) {
    pages++;
    check(page.length <= 10, "page size honoured");
  }
  check(pages === 3, "3 pages of 10, got " + pages);
  out.versions = versions.length;
  out.pages = pages;

  // get an older version explicitly
  const old = await client.getSecret(name, { version: s1.properties.version });
  check(old.value === "password-1", "get by version");
  const latest = await client.getSecret(name);
  check(latest.value === "password-" + N, "latest value");

  // update properties (tags) on the latest version
  const upd = await client.updateSecretProperties(name, last.properties.version, {
    tags: { state: "committed" },
  });
  check(upd.tags.state === "committed", "updated tags");
  const g2 = await client.getSecret(name);
  check(g2.properties.tags.state === "committed", "tags persisted");

  // list secrets
  const names = [];
  for await (const p of client.listPropertiesOfSecrets()) names.push(p.name);
  check(names.includes(name), "listPropertiesOfSecrets includes the secret");

  // disabled secret -> 403 SecretDisabled
  await client.updateSecretProperties(name, last.properties.version, { enabled: false });
  try {
    await client.getSecret(name);
    check(false, "disabled secret must not be readable");
  } catch (e) {
    check(e.statusCode === 403, "disabled -> 403, got " + e.statusCode);
    out.disabled_code = e.code;
  }
  await client.updateSecretProperties(name, last.properties.version, { enabled: true });

  // not found
  try {
    await client.getSecret(name + "-missing");
    check(false, "missing secret must 404");
  } catch (e) {
    check(e.statusCode === 404 && e.code === "SecretNotFound", "404 SecretNotFound");
  }

  // delete with poller, deleted view, recover
  const poller = await client.beginDeleteSecret(name, { intervalInMs: 100 });
  const del = await poller.pollUntilDone();
  check(del.name === name, "deleted name");
  check(typeof del.recoveryId === "string" && del.recoveryId.includes("/deletedsecrets/"), "recoveryId");
  const ds = await client.getDeletedSecret(name);
  check(ds.properties.recoveryId === del.recoveryId, "getDeletedSecret");
  check(ds.properties.scheduledPurgeDate instanceof Date, "scheduledPurgeDate");
  const deletedNames = [];
  for await (const d of client.listDeletedSecrets()) deletedNames.push(d.name);
  check(deletedNames.includes(name), "listDeletedSecrets");
  try {
    await client.setSecret(name, "reuse");
    check(false, "reuse of a deleted name must fail");
  } catch (e) {
    check(e.statusCode === 409, "409 on reuse, got " + e.statusCode);
  }
  const rp = await client.beginRecoverDeletedSecret(name, { intervalInMs: 100 });
  await rp.pollUntilDone();
  const g3 = await client.getSecret(name);
  check(g3.value === "password-" + N, "value after recover");

  // delete again and purge
  const p2 = await client.beginDeleteSecret(name, { intervalInMs: 100 });
  await p2.pollUntilDone();
  await client.purgeDeletedSecret(name);
  try {
    await client.getDeletedSecret(name);
    check(false, "purged secret must be gone");
  } catch (e) {
    check(e.statusCode === 404, "404 after purge");
  }
  out.ok = true;
  console.log(JSON.stringify(out));
} catch (e) {
  out.ok = false;
  out.error = String(e && e.stack ? e.stack : e);
  out.statusCode = e && e.statusCode;
  out.code = e && e.code;
  console.log(JSON.stringify(out));
  process.exit(1);
}
