#!/usr/bin/python3
"""Raw-HTTP fidelity tests for the azuresim Entra ID surface: client secret,
certificate assertions (RS256+x5t, PS256+x5t#S256), federated assertions,
error bodies, discovery documents."""
import base64
import hashlib
import json
import os
import re
import sys
import time
import unittest
import urllib.parse
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Env, TENANT, CLIENT_ID, SECRET  # noqa: E402

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TOKEN_PATH = f"/{TENANT}/oauth2/v2.0/token"


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def make_jwt(key, header, claims, alg):
    header = dict(header, alg=alg, typ="JWT")
    si = (b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(claims).encode())).encode()
    if alg == "RS256":
        sig = key.sign(si, padding.PKCS1v15(), hashes.SHA256())
    else:
        sig = key.sign(si, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())
    return si.decode() + "." + b64u(sig)


class EntraTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = Env().__enter__()
        with open(cls.env.pki["client_key"], "rb") as f:
            cls.key = serialization.load_pem_private_key(f.read(), password=None)
        with open(cls.env.pki["client_pem"], "rb") as f:
            der = x509.load_pem_x509_certificate(f.read()).public_bytes(serialization.Encoding.DER)
        cls.x5t = b64u(hashlib.sha1(der).digest())
        cls.x5t256 = b64u(hashlib.sha256(der).digest())
        with open(cls.env.ready["federated_issuer_key"], "rb") as f:
            cls.fedkey = serialization.load_pem_private_key(f.read(), password=None)

    @classmethod
    def tearDownClass(cls):
        cls.env.__exit__(None, None, None)

    def post(self, form, path=TOKEN_PATH, headers=None):
        h = dict(FORM)
        h.update(headers or {})
        return self.env.json("POST", path, urllib.parse.urlencode(form), h)

    def assert_aad_error(self, st, b, status, error, code):
        self.assertEqual(st, status, b)
        self.assertEqual(b["error"], error)
        self.assertEqual(b["error_codes"], [code])
        self.assertRegex(b["error_description"],
                         rf"^AADSTS{code}: .+\r\nTrace ID: [0-9a-f-]{{36}}\r\nCorrelation ID: [0-9a-f-]{{36}}"
                         r"\r\nTimestamp: \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ$")
        for k in ("timestamp", "trace_id", "correlation_id", "error_uri"):
            self.assertIn(k, b)

    def base_form(self, **kw):
        f = {"grant_type": "client_credentials", "client_id": CLIENT_ID,
             "scope": "https://vault.azure.net/.default"}
        f.update(kw)
        return f

    # -- client secret ---------------------------------------------------------
    def test_secret_success(self):
        st, h, b = self.post(self.base_form(client_secret=SECRET,
                                            scope="https://vault.azure.net/.default openid profile offline_access",
                                            **{"client-request-id": str(uuid.uuid4()),
                                               "x-client-SKU": "msal.js.node",
                                               "claims": '{"access_token":{"xms_cc":{"values":["cp1"]}}}'}))
        self.assertEqual(st, 200, b)
        self.assertEqual(set(b), {"token_type", "expires_in", "ext_expires_in", "access_token"})
        self.assertEqual(b["token_type"], "Bearer")
        self.assertEqual(b["expires_in"], 3599)
        self.assertIsInstance(b["ext_expires_in"], int)
        claims = json.loads(base64.urlsafe_b64decode(b["access_token"].split(".")[1] + "=="))
        self.assertEqual(claims["aud"], "https://vault.azure.net")
        self.assertEqual(claims["tid"], TENANT)
        self.assertEqual(claims["appid"], CLIENT_ID)
        self.assertEqual(h["cache-control"], "no-store, no-cache")

    def test_secret_basic_auth(self):
        cred = base64.b64encode(f"{CLIENT_ID}:{urllib.parse.quote_plus(SECRET)}".encode()).decode()
        form = self.base_form()
        del form["client_id"]
        st, _, b = self.post(form, headers={"Authorization": "Basic " + cred})
        self.assertEqual(st, 200, b)

    def test_wrong_secret(self):
        st, _, b = self.post(self.base_form(client_secret="nope"))
        self.assert_aad_error(st, b, 401, "invalid_client", 7000215)
        self.assertIn("Invalid client secret provided.", b["error_description"])

    def test_unknown_client(self):
        st, _, b = self.post(self.base_form(client_id=str(uuid.uuid4()), client_secret=SECRET))
        self.assert_aad_error(st, b, 400, "unauthorized_client", 700016)

    def test_unknown_tenant(self):
        st, _, b = self.post(self.base_form(client_secret=SECRET),
                             path=f"/{uuid.uuid4()}/oauth2/v2.0/token")
        self.assert_aad_error(st, b, 400, "invalid_request", 90002)

    def test_missing_credential_and_bad_scope(self):
        st, _, b = self.post(self.base_form())
        self.assert_aad_error(st, b, 401, "invalid_client", 7000218)
        st, _, b = self.post(self.base_form(client_secret=SECRET, scope="https://vault.azure.net"))
        self.assert_aad_error(st, b, 400, "invalid_scope", 1002012)
        st, _, b = self.post(self.base_form(client_secret=SECRET, scope="https://nosuch.example/.default"))
        self.assert_aad_error(st, b, 400, "invalid_resource", 500011)
        st, _, b = self.post(self.base_form(client_secret=SECRET, grant_type="password"))
        self.assert_aad_error(st, b, 400, "unsupported_grant_type", 70003)

    # -- certificate assertions ---------------------------------------------------
    def assertion(self, alg="RS256", aud=None, iss=CLIENT_ID, exp_delta=600, key=None, header=None,
                  jti=True):
        now = int(time.time())
        claims = {"aud": aud or f"{self.env.ready['authority_host']}/{TENANT}/oauth2/v2.0/token",
                  "iss": iss, "sub": iss, "nbf": now - 5, "iat": now - 5, "exp": now + exp_delta}
        if jti:
            claims["jti"] = str(uuid.uuid4())
        if header is None:
            header = {"x5t": self.x5t} if alg == "RS256" else {"x5t#S256": self.x5t256}
        return make_jwt(key or self.key, header, claims, alg)

    def assertion_form(self, a):
        return self.base_form(client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                              client_assertion=a)

    def test_assertion_rs256_and_ps256(self):
        for alg in ("RS256", "PS256"):
            st, _, b = self.post(self.assertion_form(self.assertion(alg)))
            self.assertEqual(st, 200, (alg, b))
        old_aud = f"{self.env.ready['authority_host']}/{TENANT}/v2.0"
        st, _, b = self.post(self.assertion_form(self.assertion(aud=old_aud)))
        self.assertEqual(st, 200, b)
        # the SHA-1 x5t in standard base64 with padding, as MSAL for Python (python3-msal) sends it
        std = base64.b64encode(base64.urlsafe_b64decode(self.x5t + "=" * (-len(self.x5t) % 4))).decode()
        self.assertIn("=", std)
        st, _, b = self.post(self.assertion_form(self.assertion(header={"x5t": std})))
        self.assertEqual(st, 200, b)
        # localhost spelling of the authority
        st, _, b = self.post(self.assertion_form(
            self.assertion(aud=f"https://localhost:{self.env.port}/{TENANT}/oauth2/v2.0/token")))
        self.assertEqual(st, 200, b)

    def test_assertion_errors(self):
        st, _, b = self.post(self.assertion_form(self.assertion(exp_delta=-600)))
        self.assert_aad_error(st, b, 400, "invalid_client", 700024)
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        st, _, b = self.post(self.assertion_form(self.assertion(key=other)))
        self.assert_aad_error(st, b, 401, "invalid_client", 700027)
        st, _, b = self.post(self.assertion_form(self.assertion(header={"x5t": "AAAA"})))
        self.assert_aad_error(st, b, 401, "invalid_client", 700027)
        st, _, b = self.post(self.assertion_form(self.assertion(aud="https://elsewhere.example/x")))
        self.assertEqual(st, 401)
        st, _, b = self.post(self.assertion_form(self.assertion(jti=False)))
        self.assertEqual(st, 400)
        st, _, b = self.post(self.assertion_form("not.a.jwt"))
        self.assertEqual(st, 400)

    # -- federated (workload identity) ------------------------------------------
    def federated(self, aud="api://AzureADTokenExchange", sub=None, exp_delta=3600, key=None):
        now = int(time.time())
        claims = {"aud": [aud], "iss": self.env.ready["federated_issuer"],
                  "sub": sub or self.env.ready["federated_subject"], "iat": now, "nbf": now,
                  "exp": now + exp_delta, "jti": str(uuid.uuid4())}
        return make_jwt(key or self.fedkey, {"kid": "k1"}, claims, "RS256")

    def test_federated(self):
        st, _, b = self.post(self.assertion_form(self.federated()))
        self.assertEqual(st, 200, b)
        with open(self.env.ready["federated_token_file"]) as f:
            st, _, b = self.post(self.assertion_form(f.read().strip()))
        self.assertEqual(st, 200, b)
        st, _, b = self.post(self.assertion_form(self.federated(aud="api://other")))
        self.assert_aad_error(st, b, 400, "invalid_client", 700212)
        st, _, b = self.post(self.assertion_form(self.federated(sub="system:serviceaccount:x:y")))
        self.assert_aad_error(st, b, 400, "invalid_client", 700213)
        st, _, b = self.post(self.assertion_form(self.federated(exp_delta=-900)))
        self.assert_aad_error(st, b, 400, "invalid_client", 700024)
        # an assertion from an unknown issuer
        a = make_jwt(self.fedkey, {}, {"aud": "api://AzureADTokenExchange", "iss": "https://evil/",
                                       "sub": "x", "exp": int(time.time()) + 60}, "RS256")
        st, _, b = self.post(self.assertion_form(a))
        self.assert_aad_error(st, b, 400, "invalid_client", 700211)

    # -- discovery -----------------------------------------------------------------
    def test_discovery(self):
        a = self.env.ready["authority_host"]
        st, _, d = self.env.json("GET", f"/{TENANT}/v2.0/.well-known/openid-configuration")
        self.assertEqual(st, 200)
        self.assertEqual(d["token_endpoint"], f"{a}/{TENANT}/oauth2/v2.0/token")
        self.assertEqual(d["issuer"], f"{a}/{TENANT}/v2.0")
        for k in ("authorization_endpoint", "end_session_endpoint", "jwks_uri"):
            self.assertTrue(d[k].startswith(a + "/"), k)
        st, _, d = self.env.json("GET", "/common/discovery/instance?api-version=1.1&authorization_endpoint="
                                 + urllib.parse.quote(f"{a}/{TENANT}/oauth2/v2.0/authorize"))
        self.assertEqual(st, 200)
        self.assertEqual(d["tenant_discovery_endpoint"],
                         f"{a}/{TENANT}/v2.0/.well-known/openid-configuration")
        self.assertTrue(d["metadata"][0]["aliases"])
        st, _, d = self.env.json("GET", f"/{TENANT}/discovery/v2.0/keys")
        self.assertEqual(st, 200)
        self.assertEqual(d["keys"][0]["kty"], "RSA")
        st, _, b = self.env.json("GET", f"/{uuid.uuid4()}/v2.0/.well-known/openid-configuration")
        self.assertEqual(st, 400)
        self.assertEqual(b["error_codes"], [90002])

    def test_fault_on_token_endpoint(self):
        self.env.control("POST", "/fail", {"status": 503, "path_prefix": TOKEN_PATH, "retry_after": 2})
        st, h, b = self.post(self.base_form(client_secret=SECRET))
        self.assertEqual(st, 503)
        self.assertEqual(h["retry-after"], "2")
        self.assertEqual(b["error"], "temporarily_unavailable")
        st, _, b = self.post(self.base_form(client_secret=SECRET))
        self.assertEqual(st, 200)


if __name__ == "__main__":
    unittest.main()
