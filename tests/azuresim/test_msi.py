#!/usr/bin/python3
"""Raw-HTTP fidelity tests for the azuresim managed identity endpoints:
IMDS (HTTPS and the optional plain-HTTP port), App Service, Azure Arc."""
import base64
import json
import os
import sys
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Env  # noqa: E402

IMDS = "/metadata/identity/oauth2/token"
ARC = "/arc/metadata/identity/oauth2/token"
VAULT = urllib.parse.quote("https://vault.azure.net", safe="")


def claims(tok):
    return json.loads(base64.urlsafe_b64decode(tok.split(".")[1] + "=="))


class MSITest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = Env().__enter__()
        cls.r = cls.env.ready

    @classmethod
    def tearDownClass(cls):
        cls.env.__exit__(None, None, None)

    def imds(self, query, headers=None, plain=False):
        h = {"Metadata": "true"} if headers is None else headers
        if plain:
            return self.env.json("GET", IMDS + "?" + query, headers=h, port=self.env.hport, tls=False)
        return self.env.json("GET", IMDS + "?" + query, headers=h)

    def test_ready_line(self):
        for k in ("vault_url", "authority_host", "imds_endpoint", "identity_endpoint", "control_port",
                  "identity_header", "arc_identity_endpoint", "arc_key_dir", "imds_http_endpoint"):
            self.assertIn(k, self.r)
        self.assertEqual(self.r["vault_url"], f"https://127.0.0.1:{self.env.port}")

    def test_imds_success_all_strings(self):
        for plain in (False, True):
            st, _, b = self.imds(f"api-version=2018-02-01&resource={VAULT}", plain=plain)
            self.assertEqual(st, 200, b)
            for k in ("access_token", "expires_in", "expires_on", "not_before", "resource", "token_type"):
                self.assertIsInstance(b[k], str, k)
            self.assertEqual(b["token_type"], "Bearer")
            self.assertEqual(b["resource"], "https://vault.azure.net")
            self.assertEqual(b["client_id"], self.r["mi_client_id"])
            # the token works at Key Vault
            st, _, _ = self.env.kv("GET", "/secrets/nosuch", token=b["access_token"])
            self.assertEqual(st, 404)

    def test_imds_errors(self):
        st, _, b = self.imds(f"api-version=2018-02-01&resource={VAULT}", headers={})
        self.assertEqual(st, 400)
        self.assertEqual(b, {"error": "bad_request_102",
                             "error_description": "Required metadata header not specified"})
        st, _, b = self.imds(f"resource={VAULT}")
        self.assertEqual(st, 400)
        self.assertEqual(b["error"], "invalid_request")
        st, _, b = self.imds("api-version=2018-02-01")
        self.assertEqual(st, 400)
        st, _, b = self.imds("api-version=2018-02-01&resource=https%3A%2F%2Fnosuch.example")
        self.assertEqual(st, 400)
        self.assertEqual(b["error"], "invalid_resource")
        st, _, b = self.imds(f"api-version=2018-02-01&resource={VAULT}&client_id=00000000-0000-0000-0000-000000000001")
        self.assertEqual(st, 400)
        self.assertEqual(b, {"error": "invalid_request", "error_description": "Identity not found"})

    def test_imds_user_assigned(self):
        for k, v in (("client_id", self.r["user_mi_client_id"]), ("object_id", self.r["user_mi_object_id"]),
                     ("msi_res_id", self.r["user_mi_resource_id"]),
                     ("mi_res_id", self.r["user_mi_resource_id"])):
            st, _, b = self.imds(f"api-version=2018-02-01&resource={VAULT}&{k}={urllib.parse.quote(v, safe='')}")
            self.assertEqual(st, 200, (k, b))
            self.assertEqual(claims(b["access_token"])["appid"], self.r["user_mi_client_id"])

    def test_imds_fault_404(self):
        self.env.control("POST", "/fail", {"status": 404, "path_prefix": IMDS})
        st, _, b = self.imds(f"api-version=2018-02-01&resource={VAULT}")
        self.assertEqual(st, 404)
        st, _, b = self.imds(f"api-version=2018-02-01&resource={VAULT}")
        self.assertEqual(st, 200)

    def test_appservice(self):
        p = "/msi/token?api-version=2019-08-01&resource=" + VAULT
        st, _, b = self.env.json("GET", p, headers={"X-IDENTITY-HEADER": self.r["identity_header"]})
        self.assertEqual(st, 200, b)
        self.assertIsInstance(b["expires_on"], str)
        self.assertTrue(b["expires_on"].isdigit())
        self.assertEqual(b["token_type"], "Bearer")
        self.assertEqual(b["client_id"], self.r["mi_client_id"])
        st, _, _ = self.env.json("GET", p)
        self.assertEqual(st, 400)
        st, _, _ = self.env.json("GET", p, headers={"X-IDENTITY-HEADER": "wrong"})
        self.assertEqual(st, 401)
        st, _, b = self.env.json("GET", p + "&client_id=" + self.r["user_mi_client_id"],
                                 headers={"X-IDENTITY-HEADER": self.r["identity_header"]})
        self.assertEqual(st, 200)
        self.assertEqual(b["client_id"], self.r["user_mi_client_id"])

    def test_arc_flow(self):
        p = ARC + "?api-version=2019-11-01&resource=" + VAULT
        st, h, _ = self.env.json("GET", p, headers={"Metadata": "true"})
        self.assertEqual(st, 401)
        www = h["www-authenticate"]
        self.assertTrue(www.startswith("Basic realm="))
        keyfile = www[len("Basic realm="):]
        self.assertTrue(keyfile.startswith(self.r["arc_key_dir"] + "/"))
        self.assertTrue(keyfile.endswith(".key"))
        with open(keyfile) as f:
            secret = f.read()
        self.assertLessEqual(len(secret), 4096)
        st, _, b = self.env.json("GET", p, headers={"Metadata": "true", "Authorization": "Basic " + secret})
        self.assertEqual(st, 200, b)
        self.assertIsInstance(b["expires_on"], str)
        st, _, _ = self.env.kv("GET", "/secrets/nosuch", token=b["access_token"])
        self.assertEqual(st, 404)
        st, h, _ = self.env.json("GET", p, headers={"Metadata": "true", "Authorization": "Basic wrong"})
        self.assertEqual(st, 401)
        self.assertIn("www-authenticate", h)
        st, _, b = self.env.json("GET", p)
        self.assertEqual(st, 400)
        # over the plain-HTTP port too
        st, h, _ = self.env.json("GET", p, headers={"Metadata": "true"}, port=self.env.hport, tls=False)
        self.assertEqual(st, 401)

    def test_plain_port_is_msi_only(self):
        st, _, _ = self.env.json("GET", "/secrets/x?api-version=7.5", port=self.env.hport, tls=False)
        self.assertEqual(st, 404)

    def test_grants_for_managed_identity(self):
        st, _, b = self.imds(f"api-version=2018-02-01&resource={VAULT}")
        tok = b["access_token"]
        self.env.control("POST", "/grants", {"client_id": self.r["mi_client_id"], "ops": []})
        try:
            st, _, b = self.env.kv("GET", "/secrets/nosuch", token=tok)
            self.assertEqual(st, 403)
            self.assertEqual(b["error"]["innererror"]["code"], "ForbiddenByRbac")
        finally:
            self.env.control("POST", "/reset-grants")


if __name__ == "__main__":
    unittest.main()
