#!/usr/bin/python3
"""azuresim against the official Azure SDK for JavaScript (@azure/identity
ClientSecretCredential + @azure/keyvault-secrets SecretClient): challenge
flow, token acquisition through MSAL, set/get/paging/update/disable/delete
poller/deleted view/recover/purge. Exits 77 when the npm packages are absent
and cannot be installed."""
import json
import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Env, SECRET, SKIP, SRCDIR  # noqa: E402

JS_DIR = os.path.join(SRCDIR, "tests", "js")
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jssdk.mjs")
ID_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jssdk_identity.mjs")


def have_packages():
    nm = os.path.join(JS_DIR, "node_modules", "@azure")
    return all(os.path.isdir(os.path.join(nm, p)) for p in ("identity", "keyvault-secrets"))


def ensure_packages():
    if shutil.which("node") is None:
        return False
    if have_packages():
        return True
    if shutil.which("npm") is None or not os.path.exists(os.path.join(JS_DIR, "package.json")):
        return False
    try:
        subprocess.run(["npm", "install", "--prefix", JS_DIR, "--no-audit", "--no-fund",
                        "--package-lock=false"], check=True, timeout=150,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except (subprocess.SubprocessError, OSError):
        return False
    return have_packages()


class JSSDK(unittest.TestCase):
    def run_node(self, env_, extra=None, script=SCRIPT):
        e = dict(os.environ)
        e.update({"AZSIM_READY": json.dumps(env_.ready), "AZSIM_SECRET": SECRET,
                  "AZSIM_JS_DIR": JS_DIR, "NODE_EXTRA_CA_CERTS": env_.pki["ca_pem"]})
        for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
            e.pop(k, None)
        e["NO_PROXY"] = e["no_proxy"] = "127.0.0.1,localhost"
        e.update(extra or {})
        p = subprocess.run(["node", script], env=e, capture_output=True, text=True, timeout=150)
        lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
        res = json.loads(lines[-1]) if lines else {"ok": False, "error": p.stderr[-3000:]}
        return p.returncode, res, p.stderr

    def test_sdk_round_trip(self):
        with Env() as env:
            rc, res, err = self.run_node(env)
            self.assertEqual(rc, 0, f"node failed: {res} {err[-2000:]}")
            self.assertTrue(res["ok"])
            self.assertEqual(res["versions"], 27)
            self.assertEqual(res["pages"], 3)
            self.assertEqual(res["disabled_code"], "Forbidden")
            audit = env.control("GET", "/audit")[2]["entries"]
            kv = [e for e in audit if e["surface"] == "keyvault"]
            # challenge flow: the SDK's very first Key Vault request carries no Authorization
            self.assertFalse(kv[0]["authorization"])
            self.assertEqual(kv[0]["status"], 401)
            self.assertTrue(all(e["authorization"] for e in kv[1:]))
            # exactly one token request (the token is cached), against the v2 endpoint
            tok = [e for e in audit if e["surface"] == "entra-token"]
            self.assertEqual(len(tok), 1, tok)
            self.assertEqual(tok[0]["status"], 200)
            # paging used the nextLink with a $skiptoken
            self.assertTrue(any("$skiptoken" in e["query"] for e in kv))

    def test_sdk_retries_429(self):
        with Env() as env:
            env.control("POST", "/fail", {"status": 429, "count": 2, "retry_after": 1,
                                          "path_prefix": "/secrets/", "method": "PUT"})
            rc, res, err = self.run_node(env, {"AZSIM_NAME": "dmk-js-retry"})
            self.assertEqual(rc, 0, f"node failed: {res} {err[-2000:]}")
            audit = env.control("GET", "/audit")[2]["entries"]
            self.assertEqual(len([e for e in audit if e.get("fault") == "fail"]), 2)

    def test_sdk_wrong_secret(self):
        with Env() as env:
            e = {"AZSIM_SECRET": "not-the-secret"}
            rc, res, err = self.run_node(env, e)
            self.assertNotEqual(rc, 0)
            self.assertIn("AADSTS7000215", res.get("error", "") + err)

    def test_other_credentials(self):
        """Certificate (msal-node builds the assertion), workload identity
        (federated token file) and App Service managed identity."""
        with Env() as env:
            tok = env.token()
            st, _, _ = env.kv("PUT", "/secrets/dmk-cred", {"value": "cred-value"}, token=tok)
            self.assertEqual(st, 200)
            combo = os.path.join(env.dir, "client-combo.pem")
            with open(combo, "w") as out:
                for p in (env.pki["client_key"], env.pki["client_pem"]):
                    with open(p) as f:
                        out.write(f.read())
            base = {"AZSIM_NAME": "dmk-cred", "AZSIM_VALUE": "cred-value"}
            cases = {
                "cert": {"AZSIM_CERT_PEM": combo},
                "workload": {},
                "appsvc": {"IDENTITY_ENDPOINT": env.ready["identity_endpoint"],
                           "IDENTITY_HEADER": env.ready["identity_header"]},
            }
            for cred, extra in cases.items():
                with self.subTest(cred=cred):
                    e = dict(base, AZSIM_CRED=cred, **extra)
                    rc, res, err = self.run_node(env, e, script=ID_SCRIPT)
                    self.assertEqual(rc, 0, f"{cred}: {res} {err[-1500:]}")
            audit = env.control("GET", "/audit")[2]["entries"]
            self.assertTrue(any(a["surface"] == "appservice" and a["status"] == 200 for a in audit))


if __name__ == "__main__":
    if not ensure_packages():
        print("SKIP: node or @azure/identity + @azure/keyvault-secrets not available in tests/js")
        sys.exit(SKIP)
    unittest.main()
