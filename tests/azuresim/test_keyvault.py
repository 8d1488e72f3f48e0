#!/usr/bin/python3
"""Raw-HTTP fidelity tests for the azuresim Key Vault secrets surface:
exact statuses, bodies and headers."""
import os
import sys
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Env, TENANT, CLIENT_ID  # noqa: E402
from tests.sim.common.harness import wait_for  # noqa: E402

NOT_FOUND = ("A secret with (name/id) {} was not found in this key vault. If you recently deleted "
             "this secret you may be able to recover it using the correct recovery command. For help "
             "resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182")


class KeyVaultTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = Env().__enter__()
        cls.tok = cls.env.token()

    @classmethod
    def tearDownClass(cls):
        cls.env.__exit__(None, None, None)

    def kv(self, method, path, body=None, **kw):
        kw.setdefault("token", self.tok)
        return self.env.kv(method, path, body, **kw)

    def test_challenge(self):
        st, h, b = self.env.request("GET", "/secrets/x?api-version=7.5")
        self.assertEqual(st, 401)
        self.assertEqual(h["www-authenticate"],
                         f'Bearer authorization="{self.env.ready["authority_host"]}/{TENANT}", '
                         'resource="https://vault.azure.net"')
        self.assertEqual(b, b'{"error":{"code":"Unauthorized","message":"AKV10000: Request is '
                            b'missing a Bearer or PoP token."}}')
        self.assertEqual(h["content-type"], "application/json; charset=utf-8")
        # a PUT without a body and without Authorization gets the same challenge (JS SDK flow)
        st, h, _ = self.env.request("PUT", "/secrets/x?api-version=7.5")
        self.assertEqual(st, 401)
        self.assertIn("www-authenticate", h)

    def test_bad_tokens(self):
        st, h, b = self.kv("GET", "/secrets/x", token="garbage")
        self.assertEqual(st, 401)
        self.assertIn("www-authenticate", h)
        # token for another resource
        arm = self.env.control("POST", "/token", {"resource": "https://management.azure.com/"})[2]
        st, h, b = self.kv("GET", "/secrets/x", token=arm["access_token"])
        self.assertEqual(st, 401)
        self.assertEqual(b["error"]["message"], "AKV10022: Invalid audience. Expected "
                         "https://vault.azure.net, found: https://management.azure.com/.")
        # expired token
        old = self.env.control("POST", "/token", {"lifetime": -10})[2]["access_token"]
        st, h, b = self.kv("GET", "/secrets/x", token=old)
        self.assertEqual(st, 401)
        self.assertEqual(b["error"]["code"], "Unauthorized")
        self.assertIn("TokenExpired", b["error"]["message"])
        self.assertIn("www-authenticate", h)
        # tampered signature
        t = self.tok[:-4] + ("AAAA" if not self.tok.endswith("AAAA") else "BBBB")
        st, _, b = self.kv("GET", "/secrets/x", token=t)
        self.assertEqual(st, 401)

    def test_api_version(self):
        st, _, b = self.kv("GET", "/secrets/x", api=None)
        self.assertEqual(st, 400)
        self.assertEqual(b["error"]["code"], "BadParameter")
        st, _, b = self.kv("GET", "/secrets/x", api="9.9")
        self.assertEqual(st, 400)
        for v in ("7.0", "7.3", "7.4", "7.6", "2025-07-01"):
            st, _, _ = self.kv("GET", "/secrets/nosuch", api=v)
            self.assertEqual(st, 404, v)

    def test_set_get_bundle_shape(self):
        st, h, b = self.kv("PUT", "/secrets/Shape-1", {"value": "p@ss", "contentType": "text/plain",
                                                       "tags": {"k": "v"},
                                                       "attributes": {"exp": 4102444800}})
        self.assertEqual(st, 200, b)
        host = f"https://127.0.0.1:{self.env.port}"
        self.assertRegex(b["id"], r"^" + host + r"/secrets/Shape-1/[0-9a-f]{32}$")
        self.assertEqual(b["value"], "p@ss")
        self.assertEqual(b["contentType"], "text/plain")
        self.assertEqual(b["tags"], {"k": "v"})
        a = b["attributes"]
        self.assertEqual(a["enabled"], True)
        self.assertEqual(a["exp"], 4102444800)
        self.assertIsInstance(a["created"], int)
        self.assertIsInstance(a["updated"], int)
        self.assertEqual(a["recoveryLevel"], "Recoverable+Purgeable")
        self.assertEqual(a["recoverableDays"], 90)
        # case-insensitive names, trailing slash = latest, explicit version
        ver = b["id"].rsplit("/", 1)[1]
        for p in ("/secrets/shape-1", "/secrets/SHAPE-1/", f"/secrets/shape-1/{ver}"):
            st, _, g = self.kv("GET", p)
            self.assertEqual(st, 200, p)
            self.assertEqual(g["id"], b["id"])
            self.assertEqual(g["value"], "p@ss")

    def test_not_found(self):
        st, _, b = self.kv("GET", "/secrets/nope")
        self.assertEqual(st, 404)
        self.assertEqual(b, {"error": {"code": "SecretNotFound", "message": NOT_FOUND.format("nope")}})
        st, _, b = self.kv("GET", "/secrets/nope/" + "0" * 32)
        self.assertEqual(st, 404)
        st, _, b = self.kv("GET", "/deletedsecrets/nope")
        self.assertEqual(st, 404)
        self.assertEqual(b, {"error": {"code": "SecretNotFound", "message": "Deleted Secret not found: nope"}})

    def test_validation(self):
        st, _, b = self.kv("PUT", "/secrets/bad_name", {"value": "x"})
        self.assertEqual(st, 400)
        self.assertEqual(b["error"]["code"], "BadParameter")
        st, _, b = self.kv("PUT", "/secrets/" + "a" * 128, {"value": "x"})
        self.assertEqual(st, 400)
        st, _, b = self.kv("PUT", "/secrets/" + "a" * 127, {"value": "x"})
        self.assertEqual(st, 200)
        st, _, b = self.kv("PUT", "/secrets/big", {"value": "x" * (25 * 1024 + 1)})
        self.assertEqual(st, 400)
        st, _, b = self.kv("PUT", "/secrets/big", {"value": "x" * (25 * 1024)})
        self.assertEqual(st, 200)
        st, _, b = self.kv("PUT", "/secrets/tags", {"value": "x", "tags": {str(i): "v" for i in range(16)}})
        self.assertEqual(st, 400)
        st, _, b = self.kv("PUT", "/secrets/tags", {"value": "x", "tags": {str(i): "v" for i in range(15)}})
        self.assertEqual(st, 200)
        st, _, b = self.kv("PUT", "/secrets/novalue", {"contentType": "x"})
        self.assertEqual(st, 400)

    def test_update_disable(self):
        _, _, b = self.kv("PUT", "/secrets/upd", {"value": "v1", "tags": {"a": "1"}})
        ver = b["id"].rsplit("/", 1)[1]
        st, _, u = self.kv("PATCH", f"/secrets/upd/{ver}", {"tags": {"state": "pending"}})
        self.assertEqual(st, 200)
        self.assertNotIn("value", u)
        self.assertEqual(u["tags"], {"state": "pending"})
        st, _, u = self.kv("PATCH", f"/secrets/upd/{ver}", {"attributes": {"enabled": False}})
        self.assertEqual(u["attributes"]["enabled"], False)
        self.assertEqual(u["tags"], {"state": "pending"})
        st, _, g = self.kv("GET", "/secrets/upd")
        self.assertEqual(st, 403)
        self.assertEqual(g, {"error": {"code": "Forbidden",
                                       "message": "Operation get is not allowed on a disabled secret.",
                                       "innererror": {"code": "SecretDisabled"}}})
        # still listed
        st, _, lst = self.kv("GET", "/secrets/upd/versions")
        self.assertEqual(lst["value"][0]["attributes"]["enabled"], False)
        self.kv("PATCH", f"/secrets/upd/{ver}", {"attributes": {"enabled": True}})
        st, _, g = self.kv("GET", "/secrets/upd")
        self.assertEqual(st, 200)
        self.assertEqual(g["value"], "v1")

    def test_paging(self):
        for i in range(7):
            self.kv("PUT", "/secrets/paged", {"value": f"v{i}"})
        st, _, p = self.kv("GET", "/secrets/paged/versions?maxresults=3")
        self.assertEqual(st, 200)
        seen = [i["id"] for i in p["value"]]
        self.assertNotIn("value", p["value"][0])
        pages = 1
        while p["nextLink"]:
            u = urllib.parse.urlsplit(p["nextLink"])
            self.assertEqual(u.scheme, "https")
            self.assertEqual(u.port, self.env.port)
            q = urllib.parse.parse_qs(u.query)
            self.assertIn("$skiptoken", q)
            self.assertEqual(q["maxresults"], ["3"])
            self.assertIn("api-version", q)
            st, _, p = self.env.json("GET", u.path + "?" + u.query,
                                     headers={"Authorization": "Bearer " + self.tok})
            self.assertEqual(st, 200)
            seen += [i["id"] for i in p["value"]]
            pages += 1
        self.assertEqual(pages, 3)
        self.assertEqual(len(set(seen)), 7)
        self.assertIsNone(p["nextLink"])
        st, _, b = self.kv("GET", "/secrets/paged/versions?maxresults=26")
        self.assertEqual(st, 400)
        st, _, lst = self.kv("GET", "/secrets")
        self.assertTrue(any(i["id"].endswith("/secrets/paged") for i in lst["value"]))

    def test_delete_recover_purge(self):
        self.kv("PUT", "/secrets/del-me", {"value": "v"})
        st, _, d = self.kv("DELETE", "/secrets/del-me")
        self.assertEqual(st, 200)
        self.assertEqual(d["recoveryId"], f"https://127.0.0.1:{self.env.port}/deletedsecrets/del-me")
        self.assertIsInstance(d["deletedDate"], int)
        self.assertEqual(d["scheduledPurgeDate"] - d["deletedDate"], 90 * 86400)
        self.assertNotIn("value", d)
        st, _, b = self.kv("GET", "/secrets/del-me")
        self.assertEqual(st, 404)
        st, _, b = self.kv("PUT", "/secrets/del-me", {"value": "again"})
        self.assertEqual(st, 409)
        self.assertEqual(b["error"]["code"], "Conflict")
        self.assertEqual(b["error"]["innererror"]["code"], "ObjectIsDeletedButRecoverable")
        self.assertEqual(b["error"]["message"],
                         "Secret del-me is currently in a deleted but recoverable state, and its name "
                         "cannot be reused; in this state, the secret can only be recovered or purged.")
        st, _, g = self.kv("GET", "/deletedsecrets/del-me")
        self.assertEqual(st, 200)
        st, _, lst = self.kv("GET", "/deletedsecrets")
        self.assertEqual(st, 200)
        self.assertTrue(any(i["recoveryId"].endswith("/del-me") for i in lst["value"]))
        st, _, r = self.kv("POST", "/deletedsecrets/del-me/recover")
        self.assertEqual(st, 200)
        self.assertNotIn("value", r)
        st, _, g = self.kv("GET", "/secrets/del-me")
        self.assertEqual(g["value"], "v")
        self.kv("DELETE", "/secrets/del-me")
        st, h, b = self.env.request("DELETE", "/deletedsecrets/del-me?api-version=7.5",
                                    headers={"Authorization": "Bearer " + self.tok})
        self.assertEqual(st, 204)
        self.assertEqual(b, b"")
        st, _, _ = self.kv("PUT", "/secrets/del-me", {"value": "new"})
        self.assertEqual(st, 200)

    def test_delete_in_progress(self):
        self.kv("PUT", "/secrets/slow-del", {"value": "v"})
        self.env.control("POST", "/delete-delay", {"ms": 1500})
        try:
            st, _, d = self.kv("DELETE", "/secrets/slow-del")
            self.assertEqual(st, 200)
            st, _, _ = self.kv("GET", "/deletedsecrets/slow-del")
            self.assertEqual(st, 404)
            st, _, b = self.kv("PUT", "/secrets/slow-del", {"value": "v"})
            self.assertEqual(st, 409)
            self.assertEqual(b["error"]["innererror"]["code"], "ObjectIsBeingDeleted")
            # the deletion ends after the delay (1.5 s): then it is a deleted secret
            wait_for("the delayed deletion to finish",
                     lambda: self.kv("GET", "/deletedsecrets/slow-del")[0] == 200, timeout=15)
        finally:
            self.env.control("POST", "/delete-delay", {"ms": 0})

    def test_rbac(self):
        self.kv("PUT", "/secrets/rbac", {"value": "v"})
        self.env.control("POST", "/grants", {"client_id": CLIENT_ID, "ops": ["list"]})
        try:
            st, _, b = self.kv("GET", "/secrets/rbac")
            self.assertEqual(st, 403)
            self.assertEqual(b["error"]["code"], "Forbidden")
            self.assertEqual(b["error"]["innererror"], {"code": "ForbiddenByRbac"})
            self.assertTrue(b["error"]["message"].startswith(
                "Caller is not authorized to perform action on resource.\r\n"))
            self.assertIn("Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'", b["error"]["message"])
            st, _, b = self.kv("PUT", "/secrets/rbac", {"value": "v2"})
            self.assertEqual(st, 403)
            st, _, _ = self.kv("GET", "/secrets/rbac/versions")
            self.assertEqual(st, 200)
        finally:
            self.env.control("POST", "/reset-grants")
        st, _, _ = self.kv("GET", "/secrets/rbac")
        self.assertEqual(st, 200)

    def test_faults_and_stats(self):
        self.env.control("POST", "/fail", {"status": 429, "count": 2, "retry_after": 3,
                                           "path_prefix": "/secrets/fault"})
        st, h, b = self.kv("GET", "/secrets/fault")
        self.assertEqual(st, 429)
        self.assertEqual(h["retry-after"], "3")
        self.assertEqual(b["error"]["code"], "Throttled")
        st, h, b = self.kv("GET", "/secrets/fault")
        self.assertEqual(st, 429)
        st, h, b = self.kv("GET", "/secrets/fault")
        self.assertEqual(st, 404)
        self.env.control("POST", "/fail", {"status": 503})
        st, _, _ = self.kv("GET", "/secrets/x")
        self.assertEqual(st, 503)
        # drop: the connection closes without a response
        self.env.control("POST", "/drop", {"count": 1})
        with self.assertRaises(Exception):
            self.kv("GET", "/secrets/x")
        self.env.control("POST", "/latency", {"ms": 300})
        t0 = time.time()
        self.kv("GET", "/secrets/x")
        self.assertGreaterEqual(time.time() - t0, 0.3)
        self.env.control("POST", "/latency", {"ms": 0})
        st, _, s = self.env.control("GET", "/stats")
        self.assertEqual(st, 200)
        self.assertGreater(s["total"], 0)
        self.assertIn("with_authorization", s)
        st, _, a = self.env.control("GET", "/audit")
        e = a["entries"][-1]
        self.assertEqual(set(e) >= {"method", "path", "status", "authorization"}, True)
        self.assertNotIn(self.tok, str(a))

    def test_expire_tokens(self):
        t = self.env.token()
        st, _, _ = self.kv("GET", "/secrets/nosuch", token=t)
        self.assertEqual(st, 404)
        self.env.control("POST", "/expire-tokens")
        st, h, b = self.kv("GET", "/secrets/nosuch", token=t)
        self.assertEqual(st, 401)
        self.assertIn("www-authenticate", h)
        type(self).tok = self.env.token()
        st, _, _ = self.kv("GET", "/secrets/nosuch")
        self.assertEqual(st, 404)


class PersistenceTest(unittest.TestCase):
    def test_restart_keeps_secrets(self):
        import shutil
        import tempfile
        from common import Sim, AZURESIM, PY, SECRET  # noqa: F401
        with Env() as env:
            tok = env.token()
            _, _, b = env.kv("PUT", "/secrets/keep", {"value": "kept"}, token=tok)
            argv = list(env.sim.argv)
            env.sim.stop()
            env.sim.proc.stdout.close()
            env.sim = Sim(argv, log_path=os.path.join(env.dir, "azuresim2.log")).__enter__()
            st, _, g = env.kv("GET", "/secrets/keep", token=tok)
            self.assertEqual(st, 200)
            self.assertEqual(g["id"], b["id"])
            self.assertEqual(g["value"], "kept")


if __name__ == "__main__":
    unittest.main()
