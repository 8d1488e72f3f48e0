#!/usr/bin/python3
"""Fidelity tests for tests/sim/vaultsim, driven by Debian's python3-hvac plus raw HTTP."""
import base64
import json
import os
import shutil
import ssl
import sys
import tempfile
import time
import unittest
import warnings
import urllib.error
import urllib.request

SRCDIR = os.environ.get("SRCDIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, SRCDIR)

try:
    import hvac
    import hvac.exceptions as hexc
except ImportError:  # pragma: no cover
    print("hvac not importable: skipping")
    sys.exit(77)

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.sim.common.harness import PY, Sim, free_port_block, wait_for
from tests.sim.common.pki import make_pki

SIM = os.path.join(SRCDIR, "tests", "sim", "vaultsim")
ROOT = "root-" + base64.b32encode(os.urandom(10)).decode().lower()


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def sign_jwt(key, claims, alg="RS256", kid=None):
    hdr = {"alg": alg, "typ": "JWT"}
    if kid:
        hdr["kid"] = kid
    signing = (b64u(json.dumps(hdr).encode()) + "." + b64u(json.dumps(claims).encode())).encode()
    if alg == "RS256":
        sig = key.sign(signing, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(key.sign(signing, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return signing.decode() + "." + b64u(sig)


def cert_pem(key):
    """A throwaway self-signed certificate for key (hvac insists pem_keys look like certificates)."""
    import datetime
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sa-signer")])
    now = datetime.datetime.utcnow()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def pub_pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class VaultSimTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        warnings.simplefilter("ignore", ResourceWarning)
        cls.tmp = tempfile.mkdtemp(prefix="vaultsim-test-")
        cls.pki = make_pki(os.path.join(cls.tmp, "pki"))
        cls.rootfile = os.path.join(cls.tmp, "root-token")
        with open(cls.rootfile, "w") as f:
            f.write(ROOT + "\n")
        cls.state = os.path.join(cls.tmp, "state")
        cls.base = free_port_block(2)
        cls.sim = cls._start()
        cls.addr = cls.sim.ready["address"]
        cls.cport = cls.sim.ready["control_port"]
        cls.ctx = ssl.create_default_context(cafile=cls.pki["ca_pem"])

    @classmethod
    def _start(cls):
        s = Sim([PY, SIM, "--state", cls.state, "--port", str(cls.base), "--tls-cert", cls.pki["server_pem"],
                 "--tls-key", cls.pki["server_key"], "--root-token-file", cls.rootfile,
                 "--client-ca", cls.pki["ca_pem"]], timeout=20,
                log_path=os.path.join(cls.tmp, "vaultsim.log"))
        return s.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.sim.stop()
        if os.environ.get("VAULTSIM_KEEP"):
            print("kept", cls.tmp)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def client(self, token=ROOT, **kw):
        return hvac.Client(url=self.addr, token=token, verify=self.pki["ca_pem"], **kw)

    def control(self, path, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.cport}{path}",
                                     data=None if body is None else json.dumps(body).encode(),
                                     method="GET" if body is None else "POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def raw(self, method, path, body=None, token=ROOT, headers=None):
        h = {"X-Vault-Token": token} if token else {}
        h.update(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.addr + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=10) as r:
                txt = r.read()
                return r.status, (json.loads(txt) if txt else None), dict(r.headers)
        except urllib.error.HTTPError as e:
            txt = e.read()
            return e.code, (json.loads(txt) if txt else None), dict(e.headers)

    # ------------------------------------------------------------------ KV v2
    def test_kv2_create_read_versions(self):
        c = self.client()
        w = c.secrets.kv.v2.create_or_update_secret("app/db", secret={"password": "p1"})
        self.assertEqual(w["data"]["version"], 1)
        self.assertEqual(w["data"]["deletion_time"], "")
        c.secrets.kv.v2.create_or_update_secret("app/db", secret={"password": "p2"}, cas=1)
        r = c.secrets.kv.v2.read_secret_version("app/db")
        self.assertEqual(r["data"]["data"], {"password": "p2"})
        self.assertEqual(r["data"]["metadata"]["version"], 2)
        self.assertRegex(r["data"]["metadata"]["created_time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
        r1 = c.secrets.kv.v2.read_secret_version("app/db", version=1)
        self.assertEqual(r1["data"]["data"], {"password": "p1"})
        for k in ("request_id", "lease_id", "renewable", "lease_duration", "wrap_info", "warnings", "auth",
                  "mount_type"):
            self.assertIn(k, r)
        self.assertEqual(r["mount_type"], "kv")
        keys = c.secrets.kv.v2.list_secrets("app")["data"]["keys"]
        self.assertEqual(keys, ["db"])
        self.assertIn("app/", c.secrets.kv.v2.list_secrets("")["data"]["keys"])

    def test_kv2_cas_conflict(self):
        c = self.client()
        c.secrets.kv.v2.create_or_update_secret("cas/one", secret={"v": "1"}, cas=0)
        with self.assertRaises(hexc.InvalidRequest) as cm:
            c.secrets.kv.v2.create_or_update_secret("cas/one", secret={"v": "2"}, cas=0)
        self.assertIn("check-and-set parameter did not match the current version", str(cm.exception))
        self.assertEqual(cm.exception.errors, ["check-and-set parameter did not match the current version"])
        # raw body
        st, body, _ = self.raw("POST", "/v1/secret/data/cas/one", {"options": {"cas": 7}, "data": {"x": "y"}})
        self.assertEqual(st, 400)
        self.assertEqual(body, {"errors": ["check-and-set parameter did not match the current version"]})
        # cas_required on the key
        c.secrets.kv.v2.update_metadata("cas/one", cas_required=True)
        st, body, _ = self.raw("POST", "/v1/secret/data/cas/one", {"data": {"x": "y"}})
        self.assertEqual((st, body), (400, {"errors": ["check-and-set parameter required for this call"]}))
        st, body, _ = self.raw("POST", "/v1/secret/data/cas/one", {"options": {"cas": 1}, "data": {"x": "y"}})
        self.assertEqual(st, 200)
        self.assertEqual(body["data"]["version"], 2)
        st, body, _ = self.raw("POST", "/v1/secret/data/cas/one", {"options": {}})
        self.assertEqual((st, body), (400, {"errors": ["no data provided"]}))

    def test_kv2_custom_metadata_and_max_versions(self):
        c = self.client()
        c.secrets.kv.v2.create_or_update_secret("meta/k", secret={"a": "1"})
        c.secrets.kv.v2.update_metadata("meta/k", max_versions=2)
        # hvac 0.11 has no custom_metadata argument: post it through hvac's adapter
        c.adapter.post("/v1/secret/metadata/meta/k", json={"custom_metadata": {"owner": "dba"}})
        for i in range(2, 5):
            c.secrets.kv.v2.create_or_update_secret("meta/k", secret={"a": str(i)})
        r = c.secrets.kv.v2.read_secret_version("meta/k")
        self.assertEqual(r["data"]["metadata"]["custom_metadata"], {"owner": "dba"})
        md = c.secrets.kv.v2.read_secret_metadata("meta/k")["data"]
        self.assertEqual(md["current_version"], 4)
        self.assertEqual(md["max_versions"], 2)
        self.assertEqual(sorted(md["versions"]), ["3", "4"])
        self.assertEqual(md["oldest_version"], 3)
        self.assertEqual(md["custom_metadata"], {"owner": "dba"})
        with self.assertRaises(hexc.InvalidPath):
            c.secrets.kv.v2.read_secret_version("meta/k", version=1)
        # PATCH with merge-patch content type
        st, body, _ = self.raw("PATCH", "/v1/secret/data/meta/k", {"data": {"b": "x"}},
                               headers={"Content-Type": "application/merge-patch+json"})
        self.assertEqual(st, 200, body)
        self.assertEqual(c.secrets.kv.v2.read_secret_version("meta/k")["data"]["data"], {"a": "4", "b": "x"})
        # empty keys and values are refused, as are too many or too long ones
        for cm, want in (({"": "x"}, "keys cannot be empty"),
                         ({"owner": ""}, 'value for key "owner" cannot be empty'),
                         ({"k" * 129: "x"}, "maximum key length of 128 bytes"),
                         ({"owner": "v" * 513}, "maximum value length of 512 bytes"),
                         ({f"k{i}": "x" for i in range(65)}, "at most 64 keys")):
            st, body, _ = self.raw("POST", "/v1/secret/metadata/meta/k", {"custom_metadata": cm})
            self.assertEqual(st, 400, body)
            self.assertIn(want, body["errors"][0])
        self.assertEqual(c.secrets.kv.v2.read_secret_metadata("meta/k")["data"]["custom_metadata"],
                         {"owner": "dba"})
        st, body, _ = self.raw("PATCH", "/v1/secret/metadata/meta/k", {"custom_metadata": {"team": "x"}},
                               headers={"Content-Type": "application/merge-patch+json"})
        self.assertEqual(st, 204)
        self.assertEqual(c.secrets.kv.v2.read_secret_metadata("meta/k")["data"]["custom_metadata"],
                         {"owner": "dba", "team": "x"})

    def test_kv2_delete_undelete_destroy(self):
        c = self.client()
        c.secrets.kv.v2.create_or_update_secret("del/k", secret={"a": "1"})
        c.secrets.kv.v2.create_or_update_secret("del/k", secret={"a": "2"})
        c.secrets.kv.v2.delete_latest_version_of_secret("del/k")
        with self.assertRaises(hexc.InvalidPath):
            c.secrets.kv.v2.read_secret_version("del/k")
        st, body, _ = self.raw("GET", "/v1/secret/data/del/k")
        self.assertEqual(st, 404)
        self.assertIsNone(body["data"]["data"])
        self.assertNotEqual(body["data"]["metadata"]["deletion_time"], "")
        self.assertFalse(body["data"]["metadata"]["destroyed"])
        self.assertEqual(body["data"]["metadata"]["version"], 2)
        self.assertIn("request_id", body)
        self.assertNotIn("errors", body)
        c.secrets.kv.v2.undelete_secret_versions("del/k", versions=[2])
        self.assertEqual(c.secrets.kv.v2.read_secret_version("del/k")["data"]["data"], {"a": "2"})
        c.secrets.kv.v2.destroy_secret_versions("del/k", versions=[1])
        st, body, _ = self.raw("GET", "/v1/secret/data/del/k?version=1")
        self.assertEqual(st, 404)
        self.assertTrue(body["data"]["metadata"]["destroyed"])
        self.assertIsNone(body["data"]["data"])
        c.secrets.kv.v2.delete_secret_versions("del/k", versions=[2])
        with self.assertRaises(hexc.InvalidPath):
            c.secrets.kv.v2.read_secret_version("del/k", version=2)
        c.secrets.kv.v2.delete_metadata_and_all_versions("del/k")
        st, body, _ = self.raw("GET", "/v1/secret/metadata/del/k")
        self.assertEqual((st, body), (404, {"errors": []}))

    def test_raw_404_and_list(self):
        st, body, hdrs = self.raw("GET", "/v1/secret/data/does/not/exist")
        self.assertEqual((st, body), (404, {"errors": []}))
        self.assertEqual(hdrs.get("Content-Type"), "application/json")
        st, body, _ = self.raw("LIST", "/v1/secret/metadata/nothing-here/")
        self.assertEqual((st, body), (404, {"errors": []}))
        st, body, _ = self.raw("GET", "/v1/secret/metadata/?list=true")
        self.assertIn(st, (200, 404))

    def test_kv_config_engine_cas_required(self):
        c = self.client()
        c.sys.enable_secrets_engine("kv", path="kvcas", options={"version": "2"})
        c.secrets.kv.v2.configure(cas_required=True, max_versions=0, mount_point="kvcas")
        st, body, _ = self.raw("POST", "/v1/kvcas/data/x", {"data": {"a": "b"}})
        self.assertEqual((st, body), (400, {"errors": ["check-and-set parameter required for this call"]}))
        st, body, _ = self.raw("POST", "/v1/kvcas/data/x", {"data": {"a": "b"}, "options": {"cas": 0}})
        self.assertEqual(st, 200)
        cfg = c.secrets.kv.v2.read_configuration(mount_point="kvcas")["data"]
        self.assertEqual(cfg, {"cas_required": True, "delete_version_after": "0s", "max_versions": 0})
        ui = self.raw("GET", "/v1/sys/internal/ui/mounts/kvcas/x")[1]["data"]
        self.assertEqual((ui["path"], ui["type"], ui["options"]), ("kvcas/", "kv", {"version": "2"}))
        self.assertIn("kvcas/", c.sys.list_mounted_secrets_engines()["data"])

    def test_kv1(self):
        c = self.client()
        c.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
        c.secrets.kv.v1.create_or_update_secret("a/b", {"k": "v"}, mount_point="kv1")
        r = c.secrets.kv.v1.read_secret("a/b", mount_point="kv1")
        self.assertEqual(r["data"], {"k": "v"})
        self.assertEqual(c.secrets.kv.v1.list_secrets("a", mount_point="kv1")["data"]["keys"], ["b"])
        c.secrets.kv.v1.delete_secret("a/b", mount_point="kv1")
        self.assertEqual(self.raw("GET", "/v1/kv1/a/b")[:2], (404, {"errors": []}))
        ui = self.raw("GET", "/v1/sys/internal/ui/mounts/kv1")[1]["data"]
        self.assertEqual(ui["options"], {"version": "1"})

    # ------------------------------------------------------------------ policies / tokens
    def test_policy_denies(self):
        c = self.client()
        c.sys.create_or_update_policy("ro-app", 'path "secret/data/pol/*" { capabilities = ["read"] }\n'
                                                 'path "secret/metadata/pol/*" { capabilities = ["list"] }')
        c.secrets.kv.v2.create_or_update_secret("pol/x", secret={"a": "1"})
        c.secrets.kv.v2.create_or_update_secret("other/x", secret={"a": "1"})
        t = c.auth.token.create(policies=["ro-app"], ttl="1h")["auth"]["client_token"]
        u = self.client(token=t)
        self.assertEqual(u.secrets.kv.v2.read_secret_version("pol/x")["data"]["data"], {"a": "1"})
        with self.assertRaises(hexc.Forbidden) as cm:
            u.secrets.kv.v2.read_secret_version("other/x")
        self.assertEqual(cm.exception.errors, ["1 error occurred:\n\t* permission denied\n\n"])
        with self.assertRaises(hexc.Forbidden):
            u.secrets.kv.v2.create_or_update_secret("pol/x", secret={"a": "2"})
        st, body, _ = self.raw("POST", "/v1/sys/capabilities-self", {"paths": ["secret/data/pol/x"]}, token=t)
        self.assertEqual(st, 200)
        self.assertEqual(body["data"]["secret/data/pol/x"], ["read"])
        self.assertEqual(body["data"]["capabilities"], ["read"])
        st, body, _ = self.raw("POST", "/v1/sys/capabilities-self", {"paths": ["secret/data/other/x"]}, token=t)
        self.assertEqual(body["data"]["secret/data/other/x"], ["deny"])
        self.assertEqual(u.lookup_token()["data"]["policies"], ["default", "ro-app"])
        self.assertIn("ro-app", c.sys.list_policies()["data"]["policies"])
        # + wildcard and deny precedence
        c.sys.create_or_update_policy("plus", 'path "secret/data/+/cfg" { capabilities = ["read","create","update"] }\n'
                                              'path "secret/data/bad/cfg" { capabilities = ["deny"] }')
        t2 = c.auth.token.create(policies=["plus"])["auth"]["client_token"]
        u2 = self.client(token=t2)
        u2.secrets.kv.v2.create_or_update_secret("good/cfg", secret={"a": "1"})
        with self.assertRaises(hexc.Forbidden):
            u2.secrets.kv.v2.create_or_update_secret("bad/cfg", secret={"a": "1"})
        st, body, _ = self.raw("GET", "/v1/secret/data/pol/x", token="hvs.bogus")
        self.assertEqual(st, 403)
        self.assertIn("permission denied", body["errors"][0])
        self.assertIn("invalid token", body["errors"][0])

    def test_token_lookup_renew_revoke(self):
        c = self.client()
        auth = c.auth.token.create(policies=["default"], ttl="30m", explicit_max_ttl="1h")["auth"]
        t = auth["client_token"]
        self.assertTrue(t.startswith("hvs."))
        self.assertEqual(auth["lease_duration"], 1800)
        u = self.client(token=t)
        d = u.auth.token.lookup_self()["data"]
        self.assertEqual(d["id"], t)
        self.assertEqual(d["creation_ttl"], 1800)
        self.assertEqual(d["explicit_max_ttl"], 3600)
        self.assertTrue(d["renewable"])
        r = u.auth.token.renew_self(increment="2h")
        self.assertLessEqual(r["auth"]["lease_duration"], 3600)
        self.assertTrue(any("exceeded the effective max_ttl" in w for w in r["warnings"]), r["warnings"])
        self.assertRegex(r["warnings"][0], r'^TTL of "2h0m0s" exceeded the effective max_ttl of "\d+m\d+s"; '
                                           r'TTL value is capped accordingly$')
        look = c.auth.token.lookup(t)["data"]
        self.assertEqual(look["accessor"], auth["accessor"])
        u.auth.token.revoke_self()
        with self.assertRaises(hexc.Forbidden):
            u.auth.token.lookup_self()

    def test_token_short_ttl_expires_and_control_expire(self):
        c = self.client()
        t = c.auth.token.create(policies=["default"], ttl="1s")["auth"]["client_token"]
        # refused once its second is up
        wait_for("the 1s token to expire",
                 lambda: self.raw("GET", "/v1/auth/token/lookup-self", token=t)[0] != 200,
                 timeout=15, every=0.05)
        st, body, _ = self.raw("GET", "/v1/auth/token/lookup-self", token=t)
        self.assertEqual(st, 403)
        self.assertIn("invalid token", body["errors"][0])
        t2 = c.auth.token.create(policies=["default"], ttl="1h")["auth"]["client_token"]
        self.control("/expire-tokens", {})
        self.assertEqual(self.raw("GET", "/v1/auth/token/lookup-self", token=t2)[0], 403)
        self.assertEqual(self.raw("GET", "/v1/auth/token/lookup-self")[0], 200)

    # ------------------------------------------------------------------ approle + wrapping
    def test_approle(self):
        c = self.client()
        c.sys.enable_auth_method("approle")
        c.sys.create_or_update_policy("dmk", 'path "secret/data/dmk/*" { capabilities = ["read","create","update"] }')
        c.auth.approle.create_or_update_approle("dmkagent", token_policies=["dmk"], token_ttl="20m",
                                                token_max_ttl="1h", secret_id_num_uses=2, secret_id_ttl="10m")
        role = c.auth.approle.read_role("dmkagent")["data"]
        self.assertEqual(role["token_policies"], ["dmk"])
        self.assertEqual(role["token_ttl"], 1200)
        role_id = c.auth.approle.read_role_id("dmkagent")["data"]["role_id"]
        sec = c.auth.approle.generate_secret_id("dmkagent")["data"]
        self.assertEqual(set(sec), {"secret_id", "secret_id_accessor", "secret_id_ttl", "secret_id_num_uses"})
        self.assertEqual((sec["secret_id_ttl"], sec["secret_id_num_uses"]), (600, 2))
        u = self.client(token=None)
        login = u.auth.approle.login(role_id, sec["secret_id"])
        a = login["auth"]
        self.assertEqual(a["lease_duration"], 1200)
        self.assertTrue(a["renewable"])
        self.assertEqual(a["metadata"], {"role_name": "dmkagent"})
        self.assertEqual(a["token_policies"], ["default", "dmk"])
        self.assertEqual(login["lease_duration"], 0)
        u.secrets.kv.v2.create_or_update_secret("dmk/key", secret={"pw": "x"})
        with self.assertRaises(hexc.Forbidden):
            u.secrets.kv.v2.read_secret_version("app/db")
        # second use exhausts the secret id, third fails
        self.client(token=None).auth.approle.login(role_id, sec["secret_id"])
        for bodyd, msg in (({"role_id": role_id, "secret_id": sec["secret_id"]}, "invalid role or secret ID"),
                           ({"secret_id": "x"}, "missing role_id"),
                           ({"role_id": role_id}, "missing secret_id"),
                           ({"role_id": "nope", "secret_id": "x"}, "invalid role or secret ID")):
            st, body, _ = self.raw("POST", "/v1/auth/approle/login", bodyd, token=None)
            self.assertEqual((st, body), (400, {"errors": [msg]}))
        # wrapped secret id
        st, body, _ = self.raw("POST", "/v1/auth/approle/role/dmkagent/secret-id", {},
                               headers={"X-Vault-Wrap-TTL": "60s"})
        self.assertEqual(st, 200)
        self.assertIsNone(body["data"])
        wi = body["wrap_info"]
        self.assertEqual(wi["ttl"], 60)
        self.assertEqual(wi["creation_path"], "auth/approle/role/dmkagent/secret-id")
        self.assertTrue(wi["wrapped_accessor"])
        look = c.sys.wrapping.lookup if hasattr(c.sys, "wrapping") else None
        st, lb, _ = self.raw("POST", "/v1/sys/wrapping/lookup", {"token": wi["token"]}, token=None)
        self.assertEqual(lb["data"]["creation_path"], "auth/approle/role/dmkagent/secret-id")
        un = self.client(token=wi["token"]).sys.unwrap()
        self.assertEqual(un["data"]["secret_id_accessor"], wi["wrapped_accessor"])
        self.client(token=None).auth.approle.login(role_id, un["data"]["secret_id"])
        st, body, _ = self.raw("POST", "/v1/sys/wrapping/unwrap", {}, token=wi["token"])
        self.assertEqual((st, body), (400, {"errors": ["wrapping token is not valid or does not exist"]}))
        del look

    def test_wrap_with_body_token_and_periodic_renew(self):
        c = self.client()
        c.sys.enable_auth_method("approle", path="approle2")
        c.auth.approle.create_or_update_approle("per", token_policies=["default"], token_period="1h",
                                                mount_point="approle2")
        st, body, _ = self.raw("POST", "/v1/auth/approle2/role/per/secret-id", {}, headers={"X-Vault-Wrap-TTL": "5m"})
        wt = body["wrap_info"]["token"]
        un = c.sys.unwrap(wt)
        rid = c.auth.approle.read_role_id("per", mount_point="approle2")["data"]["role_id"]
        a = self.client(token=None).auth.approle.login(rid, un["data"]["secret_id"], mount_point="approle2")["auth"]
        self.assertEqual(a["lease_duration"], 3600)
        r = self.client(token=a["client_token"]).auth.token.renew_self(increment=99999)
        self.assertEqual(r["auth"]["lease_duration"], 3600)

    # ------------------------------------------------------------------ kubernetes / jwt / cert
    def test_kubernetes_login(self):
        c = self.client()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        c.sys.enable_auth_method("kubernetes")
        c.auth.kubernetes.configure("https://k8s.example:6443", pem_keys=[cert_pem(key)])
        c.auth.kubernetes.create_role("dmk", bound_service_account_names=["dmkagent"],
                                      bound_service_account_namespaces=["sql"], policies=["default"])
        now = int(time.time())
        claims = {"iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:sql:dmkagent",
                  "aud": ["vault"], "exp": now + 600, "iat": now, "nbf": now,
                  "kubernetes.io": {"namespace": "sql", "serviceaccount": {"name": "dmkagent", "uid": "u-1"}}}
        jwt = sign_jwt(key, claims)
        a = self.client(token=None).auth.kubernetes.login("dmk", jwt)["auth"]
        self.assertEqual(a["metadata"]["service_account_namespace"], "sql")
        self.assertEqual(a["metadata"]["service_account_name"], "dmkagent")
        self.assertEqual(a["metadata"]["role"], "dmk")
        claims["kubernetes.io"]["namespace"] = "other"
        st, body, _ = self.raw("POST", "/v1/auth/kubernetes/login", {"role": "dmk", "jwt": sign_jwt(key, claims)},
                               token=None)
        self.assertEqual((st, body), (403, {"errors": ["namespace not authorized"]}))
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        st, _, _ = self.raw("POST", "/v1/auth/kubernetes/login", {"role": "dmk", "jwt": sign_jwt(other, claims)},
                            token=None)
        self.assertEqual(st, 403)
        st, body, _ = self.raw("POST", "/v1/auth/kubernetes/login", {"role": "nope", "jwt": jwt}, token=None)
        self.assertEqual((st, body), (400, {"errors": ["invalid role name \"nope\""]}))

    def test_jwt_login(self):
        c = self.client()
        key = ec.generate_private_key(ec.SECP256R1())
        c.sys.enable_auth_method("jwt")
        c.auth.jwt.configure(jwt_validation_pubkeys=[pub_pem(key)], bound_issuer="https://issuer.example")
        c.auth.jwt.create_role("dmk", user_claim="sub", allowed_redirect_uris=[], role_type="jwt",
                               bound_audiences=["vault"], bound_subject="dmkagent", token_policies=["default"])
        now = int(time.time())
        claims = {"iss": "https://issuer.example", "sub": "dmkagent", "aud": "vault", "exp": now + 300, "iat": now}
        a = self.client(token=None).auth.jwt.jwt_login("dmk", sign_jwt(key, claims, alg="ES256"))["auth"]
        self.assertEqual(a["metadata"], {"role": "dmk"})
        self.assertIn("default", a["policies"])
        for change, msg in (({"aud": "x"}, "invalid audience claim"), ({"iss": "https://evil"}, "invalid issuer"),
                            ({"exp": now - 3600}, "token is expired"), ({"sub": "eve"}, "bound subject")):
            cl = dict(claims, **change)
            st, body, _ = self.raw("POST", "/v1/auth/jwt/login", {"role": "dmk", "jwt": sign_jwt(key, cl, "ES256")},
                                   token=None)
            self.assertEqual(st, 400)
            self.assertIn(msg, body["errors"][0])
        bad = sign_jwt(ec.generate_private_key(ec.SECP256R1()), claims, "ES256")
        st, body, _ = self.raw("POST", "/v1/auth/jwt/login", {"role": "dmk", "jwt": bad}, token=None)
        self.assertEqual(st, 400)
        self.assertIn("error validating token", body["errors"][0])

    def test_cert_login(self):
        c = self.client()
        c.sys.enable_auth_method("cert")
        c.auth.cert.create_ca_certificate_role("dmk", self.pki["ca_pem"], token_policies=["default"])
        u = hvac.Client(url=self.addr, verify=self.pki["ca_pem"],
                        cert=(self.pki["client_pem"], self.pki["client_key"]))
        r = u.auth.cert.login(name="dmk")
        self.assertEqual(r["auth"]["metadata"]["cert_name"], "dmk")
        self.assertEqual(r["auth"]["metadata"]["common_name"], "dmkagent-client")
        self.assertTrue(u.is_authenticated())
        st, body, _ = self.raw("POST", "/v1/auth/cert/login", {}, token=None)
        self.assertEqual(st, 400)

    # ------------------------------------------------------------------ faults, health, seal
    def test_health_codes(self):
        st, body, _ = self.raw("GET", "/v1/sys/health", token=None)
        self.assertEqual(st, 200)
        self.assertFalse(body["sealed"])
        self.assertTrue(body["initialized"])
        self.assertEqual(self.raw("GET", "/v1/sys/health?activecode=299", token=None)[0], 299)
        self.assertEqual(self.raw("HEAD", "/v1/sys/health", token=None)[0], 200)

    def test_sealed(self):
        c = self.client()
        self.control("/seal", {})
        try:
            with self.assertRaises(hexc.VaultDown):
                c.secrets.kv.v2.read_secret_version("app/db")
            st, body, _ = self.raw("GET", "/v1/secret/data/app/db")
            self.assertEqual((st, body), (503, {"errors": ["Vault is sealed"]}))
            st, body, _ = self.raw("GET", "/v1/sys/health", token=None)
            self.assertEqual(st, 503)
            self.assertTrue(body["sealed"])
            self.assertEqual(self.raw("GET", "/v1/sys/health?sealedcode=200", token=None)[0], 200)
            self.assertTrue(c.sys.is_sealed())
            c.sys.submit_unseal_key("any-key")
            self.assertFalse(c.sys.is_sealed())
            c.sys.seal()
            self.assertTrue(c.sys.is_sealed())
        finally:
            self.control("/unseal", {})
        self.assertFalse(c.sys.is_sealed())

    def test_rate_limit_and_faults(self):
        c = self.client()
        c.secrets.kv.v2.create_or_update_secret("rl/x", secret={"a": "1"})
        self.control("/fail", {"status": 429, "count": 1, "retry_after": 2})
        with self.assertRaises(hexc.RateLimitExceeded):
            c.secrets.kv.v2.read_secret_version("rl/x")
        self.control("/fail", {"status": 429, "count": 1, "retry_after": 3, "path_prefix": "secret/"})
        self.assertEqual(self.raw("GET", "/v1/sys/health", token=None)[0], 200)
        st, body, hdrs = self.raw("GET", "/v1/secret/data/rl/x")
        self.assertEqual((st, body), (429, {"errors": ["request path \"secret/data/rl/x\": rate limit quota exceeded"]}))
        self.assertEqual(hdrs.get("Retry-After"), "3")
        self.control("/fail", {"status": 500, "count": 1})
        with self.assertRaises(hexc.InternalServerError):
            c.secrets.kv.v2.read_secret_version("rl/x")
        self.assertEqual(c.secrets.kv.v2.read_secret_version("rl/x")["data"]["data"], {"a": "1"})
        self.control("/drop", {"count": 1})
        with self.assertRaises(Exception):
            self.raw("GET", "/v1/secret/data/rl/x")
        self.assertEqual(self.raw("GET", "/v1/secret/data/rl/x")[0], 200)
        stats = self.control("/stats")
        self.assertGreater(stats["requests"].get("GET /v1/secret/data/rl/x", 0), 3)
        for r in stats["last"]:
            for k, val in r["headers"].items():
                self.assertNotEqual(val, ROOT)

    def test_namespace_header(self):
        st, _, _ = self.raw("POST", "/v1/secret/data/nsk", {"data": {"n": "ns1"}},
                            headers={"X-Vault-Namespace": "team1"})
        self.assertEqual(st, 200)
        st, body, _ = self.raw("GET", "/v1/secret/data/nsk", headers={"X-Vault-Namespace": "team1/"})
        self.assertEqual(body["data"]["data"], {"n": "ns1"})
        self.assertEqual(self.raw("GET", "/v1/team1/secret/data/nsk")[1]["data"]["data"], {"n": "ns1"})
        self.assertEqual(self.raw("GET", "/v1/secret/data/nsk")[0], 404)

    def test_zz_restart_persists(self):
        c = self.client()
        c.secrets.kv.v2.create_or_update_secret("persist/k", secret={"a": "1"})
        c.secrets.kv.v2.create_or_update_secret("persist/k", secret={"a": "2"})
        t = c.auth.token.create(policies=["default"], ttl="1h")["auth"]["client_token"]
        c.sys.create_or_update_policy("persisted", 'path "x/*" { capabilities = ["read"] }')
        type(self).sim.stop()
        type(self).sim = self._start()
        r = c.secrets.kv.v2.read_secret_version("persist/k")
        self.assertEqual((r["data"]["data"], r["data"]["metadata"]["version"]), ({"a": "2"}, 2))
        self.assertEqual(self.client(token=t).auth.token.lookup_self()["data"]["id"], t)
        self.assertIn("persisted", c.sys.list_policies()["data"]["policies"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
