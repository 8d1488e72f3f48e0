#!/usr/bin/python3
"""The built dmkagent against tests/sim/vaultsim: store put/show/check for
every auth method, check-and-set, faults, token renewal, and a canary.

Vault is set up through its own HTTP API with the root token, as an operator
would; the agent only ever gets the credentials of its auth method.
Exits 77 when the simulator or python3-cryptography is missing.
"""
import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

SRCDIR = os.environ.get("SRCDIR", os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
sys.path.insert(0, SRCDIR)
SIM = os.path.join(SRCDIR, "tests", "sim", "vaultsim")
DMKAGENT = os.environ.get("DMKAGENT", "")

try:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    from tests.sim.common.harness import PY, Sim, free_port_block
    from tests.sim.common.pki import make_pki
except ImportError as e:  # pragma: no cover
    print("skipped:", e)
    sys.exit(77)
if not os.path.exists(SIM) or not DMKAGENT or not os.path.exists(DMKAGENT):
    print("skipped: vaultsim or DMKAGENT missing")
    sys.exit(77)

ROOT = "root-" + base64.b32encode(os.urandom(10)).decode().lower()
CANARY = "Canary-" + base64.b32encode(os.urandom(10)).decode() + "-x9!"


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def sign_jwt(key, claims, alg="RS256"):
    hdr = {"alg": alg, "typ": "JWT"}
    signing = (b64u(json.dumps(hdr).encode()) + "." + b64u(json.dumps(claims).encode())).encode()
    if alg == "RS256":
        sig = key.sign(signing, padding.PKCS1v15(), hashes.SHA256())
    else:
        r, s = decode_dss_signature(key.sign(signing, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return signing.decode() + "." + b64u(sig)


def cert_pem(key):
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


def write_secret(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")


POLICY = '''
path "secret/data/sql/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/sql/*" { capabilities = ["read", "update", "list"] }
path "secret/delete/sql/*" { capabilities = ["update"] }
'''
READONLY = '''
path "secret/data/sql/*" { capabilities = ["read"] }
path "secret/metadata/sql/*" { capabilities = ["read"] }
'''


class VaultProvider(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="hcvault-provider-")
        cls.pki = make_pki(os.path.join(cls.tmp, "pki"))
        cls.rootfile = os.path.join(cls.tmp, "root-token")
        write_secret(cls.rootfile, ROOT)
        base = free_port_block(2)
        cls.sim = Sim([PY, SIM, "--state", os.path.join(cls.tmp, "state"), "--port", str(base),
                       "--tls-cert", cls.pki["server_pem"], "--tls-key", cls.pki["server_key"],
                       "--root-token-file", cls.rootfile, "--control-port", str(base + 1),
                       "--client-ca", cls.pki["ca_pem"]],
                      timeout=30, log_path=os.path.join(cls.tmp, "vaultsim.log")).__enter__()
        cls.addr = cls.sim.ready["address"]
        cls.cport = cls.sim.ready["control_port"]
        cls.ctx = ssl.create_default_context(cafile=cls.pki["ca_pem"])
        cls.setup_vault()

    @classmethod
    def tearDownClass(cls):
        cls.sim.stop()
        if os.environ.get("HCV_KEEP"):
            print("kept", cls.tmp)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.control("/clear", {})

    # ---- Vault and simulator plumbing ----
    @classmethod
    def api(cls, method, path, body=None, token=ROOT, headers=None, ok=True):
        h = {"X-Vault-Token": token} if token else {}
        h.update(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(cls.addr + "/v1/" + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, context=cls.ctx, timeout=20) as r:
                txt = r.read()
                return r.status, (json.loads(txt) if txt else None)
        except urllib.error.HTTPError as e:
            txt = e.read()
            if ok:
                raise AssertionError(f"{method} {path}: {e.code} {txt[:300]!r}")
            return e.code, (json.loads(txt) if txt else None)

    @classmethod
    def control(cls, path, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{cls.cport}{path}",
                                     data=None if body is None else json.dumps(body).encode(),
                                     method="GET" if body is None else "POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    @classmethod
    def setup_vault(cls):
        t = cls.tmp
        cls.api("PUT", "sys/policies/acl/dmk", {"policy": POLICY})
        cls.api("PUT", "sys/policies/acl/dmk-ro", {"policy": READONLY})
        # token: a child token with the dmk policy, in a 0600 file
        _, r = cls.api("POST", "auth/token/create", {"policies": ["dmk"], "ttl": "1h"})
        cls.user_token = r["auth"]["client_token"]
        write_secret(os.path.join(t, "token"), cls.user_token)
        _, r = cls.api("POST", "auth/token/create", {"policies": ["dmk-ro"], "ttl": "1h"})
        write_secret(os.path.join(t, "token-ro"), r["auth"]["client_token"])
        # approle
        cls.api("POST", "sys/auth/approle", {"type": "approle"})
        cls.api("POST", "auth/approle/role/dmk", {"token_policies": ["dmk"], "token_ttl": "20m"})
        cls.api("POST", "auth/approle/role/short", {"token_policies": ["dmk"], "token_ttl": "8s",
                                                    "token_max_ttl": "1h"})
        cls.role_id = cls.api("GET", "auth/approle/role/dmk/role-id")[1]["data"]["role_id"]
        cls.short_role_id = cls.api("GET", "auth/approle/role/short/role-id")[1]["data"]["role_id"]
        cls.secret_id = cls.api("POST", "auth/approle/role/dmk/secret-id", {})[1]["data"]["secret_id"]
        write_secret(os.path.join(t, "secret-id"), cls.secret_id)
        sid = cls.api("POST", "auth/approle/role/short/secret-id", {})[1]["data"]["secret_id"]
        write_secret(os.path.join(t, "short-secret-id"), sid)
        # kubernetes: service-account tokens signed by a key the test holds
        cls.k8s_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cls.api("POST", "sys/auth/kubernetes", {"type": "kubernetes"})
        cls.api("POST", "auth/kubernetes/config", {"kubernetes_host": "https://k8s.example:6443",
                                                   "pem_keys": [cert_pem(cls.k8s_key)]})
        cls.api("POST", "auth/kubernetes/role/dmk", {"bound_service_account_names": ["dmkagent"],
                                                     "bound_service_account_namespaces": ["sql"],
                                                     "token_policies": ["dmk"]})
        now = int(time.time())
        claims = {"iss": "https://kubernetes.default.svc", "sub": "system:serviceaccount:sql:dmkagent",
                  "aud": ["vault"], "exp": now + 3600, "iat": now, "nbf": now,
                  "kubernetes.io": {"namespace": "sql", "serviceaccount": {"name": "dmkagent", "uid": "u-1"}}}
        write_secret(os.path.join(t, "k8s-jwt"), sign_jwt(cls.k8s_key, claims))
        # jwt
        cls.jwt_key = ec.generate_private_key(ec.SECP256R1())
        cls.api("POST", "sys/auth/jwt", {"type": "jwt"})
        cls.api("POST", "auth/jwt/config", {"jwt_validation_pubkeys": [pub_pem(cls.jwt_key)],
                                            "bound_issuer": "https://issuer.example"})
        cls.api("POST", "auth/jwt/role/dmk", {"role_type": "jwt", "user_claim": "sub",
                                              "bound_audiences": ["vault"], "bound_subject": "dmkagent",
                                              "token_policies": ["dmk"]})
        claims = {"iss": "https://issuer.example", "sub": "dmkagent", "aud": "vault",
                  "exp": now + 3600, "iat": now}
        write_secret(os.path.join(t, "jwt"), sign_jwt(cls.jwt_key, claims, "ES256"))
        # cert
        cls.api("POST", "sys/auth/cert", {"type": "cert"})
        with open(cls.pki["ca_pem"]) as f:
            cls.api("POST", "auth/cert/certs/dmk", {"certificate": f.read(), "token_policies": ["dmk"]})
        os.chmod(cls.pki["client_key"], 0o600)

    def wrapped_secret_id(self):
        _, r = self.api("POST", "auth/approle/role/dmk/secret-id", {},
                        headers={"X-Vault-Wrap-TTL": "5m"})
        return r["wrap_info"]["token"]

    # ---- the agent ----
    def config(self, name, auth_lines, ref_path, agent_extra=""):
        d = os.path.join(self.tmp, "run-" + name)
        os.makedirs(d, exist_ok=True)
        text = f"""[agent]
state_dir = {d}/state
audit_log = {d}/audit/audit.log
{agent_extra}
[store hcv]
type = hashicorp-vault
address = {self.addr}
ca_file = {self.pki["ca_pem"]}
timeout = 20s
{auth_lines}

[ag ag1]
listener = 127.0.0.1:1433
login = integrated

[database ag1/db1]
dmk_password = hcv:{ref_path}
"""
        path = os.path.join(d, "dmkagent.conf")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.makedirs(os.path.join(d, "state"), mode=0o700, exist_ok=True)
        return path

    def agent(self, conf, args, stdin=None, timeout=120):
        argv = [DMKAGENT, "-v", "-c", conf] + args
        self.assertNotIn(CANARY, " ".join(argv))
        env = dict(os.environ)
        for k in list(env):
            if k.startswith("VAULT_"):
                del env[k]
        p = subprocess.run(argv, input=(stdin or "").encode(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout, env=env)
        out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        self.outputs.append(out + err)
        return p.returncode, out, err

    def vault_value(self, path):
        _, r = self.api("GET", "secret/data/" + path)
        return r["data"]["data"]["password"], r["data"]["metadata"]["version"]

    def full_cycle(self, name, auth_lines):
        """put, put without --overwrite (conflict), put --overwrite, show, check."""
        self.outputs = []
        path = f"sql/{name}/db1"
        conf = self.config(name, auth_lines, path)
        pw = f"Pw-{name}-" + b64u(os.urandom(12))
        rc, out, err = self.agent(conf, ["store", "put", "hcv:" + path], pw)
        self.assertEqual(rc, 0, err)
        self.assertIn(f"stored hcv:{path} as version 1", out)
        self.assertEqual(self.vault_value(path), (pw, 1))
        rc, out, err = self.agent(conf, ["store", "put", "hcv:" + path], pw + "2")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("already exists", err)
        self.assertIn("check-and-set", err)
        self.assertIn("HTTP 400", err)
        self.assertEqual(self.vault_value(path), (pw, 1))
        rc, out, err = self.agent(conf, ["store", "put", "--overwrite", "hcv:" + path], pw + "2")
        self.assertEqual(rc, 0, err)
        self.assertIn("as version 2", out)
        self.assertEqual(self.vault_value(path), (pw + "2", 2))
        rc, out, err = self.agent(conf, ["store", "show", "hcv:" + path])
        self.assertEqual(rc, 0, err)
        self.assertIn("2 version(s)", out)
        lines = [ln.split() for ln in out.splitlines()[2:]]
        self.assertEqual([ln[0] for ln in lines], ["1", "2"])
        self.assertEqual([ln[2] for ln in lines], ["current", "current"])
        rc, out, err = self.agent(conf, ["store", "check"])
        self.assertEqual(rc, 0, out + err)
        self.assertIn("authenticated; 1 reference(s)", out)
        self.assertRegex(out, rf"hcv:{path}\s+ok")
        for o in self.outputs:
            self.assertNotIn(pw, o)
        return conf, path

    def assert_no_secrets(self, extra=()):
        for o in self.outputs:
            for s in (CANARY, ROOT, self.user_token, self.secret_id) + tuple(extra):
                self.assertNotIn(s, o)

    # ---- auth methods ----
    def test_auth_token_file(self):
        self.full_cycle("token", f"token = file:{self.tmp}/token")
        self.assert_no_secrets()
        # a user-supplied token is never revoked
        st, _ = self.api("GET", "auth/token/lookup-self", token=self.user_token, ok=False)
        self.assertEqual(st, 200)

    def test_auth_approle(self):
        before = self.control("/stats")["requests"].get("POST /v1/auth/token/revoke-self", 0)
        self.full_cycle("approle", f"auth = approle\nrole_id = {self.role_id}\n"
                                   f"secret_id = file:{self.tmp}/secret-id")
        self.assert_no_secrets()
        after = self.control("/stats")["requests"].get("POST /v1/auth/token/revoke-self", 0)
        self.assertGreaterEqual(after - before, 5)   # one login token revoked per run

    def test_auth_approle_wrapped(self):
        self.outputs = []
        wrap = self.wrapped_secret_id()
        write_secret(os.path.join(self.tmp, "wrapped"), wrap)
        conf = self.config("wrapped", f"auth = approle\nrole_id = {self.role_id}\n"
                                      f"secret_id = file:{self.tmp}/wrapped\nsecret_id_wrapped = yes",
                           "sql/wrapped/db1")
        rc, out, err = self.agent(conf, ["store", "put", "hcv:sql/wrapped/db1"], "Wrapped-pw-1234567")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.vault_value("sql/wrapped/db1"), ("Wrapped-pw-1234567", 1))
        # single use: a second run with the same wrapping token is refused clearly
        rc, out, err = self.agent(conf, ["store", "show", "hcv:sql/wrapped/db1"])
        self.assertEqual(rc, 1, err)
        self.assertIn("wrapping token", err)
        self.assert_no_secrets((wrap,))

    def test_auth_kubernetes(self):
        self.full_cycle("kubernetes", f"auth = kubernetes\nrole = dmk\njwt = file:{self.tmp}/k8s-jwt")

    def test_auth_jwt(self):
        self.full_cycle("jwt", f"auth = jwt\nrole = dmk\njwt = file:{self.tmp}/jwt")

    def test_auth_cert(self):
        self.full_cycle("cert", f"auth = cert\nrole = dmk\nclient_cert = {self.pki['client_pem']}\n"
                                f"client_key = file:{self.pki['client_key']}")

    def test_bad_credentials(self):
        self.outputs = []
        write_secret(os.path.join(self.tmp, "bad-secret-id"), "0000-not-a-secret-id")
        conf = self.config("badsid", f"auth = approle\nrole_id = {self.role_id}\n"
                                     f"secret_id = file:{self.tmp}/bad-secret-id", "sql/bad/db1")
        rc, out, err = self.agent(conf, ["store", "show", "hcv:sql/bad/db1"])
        self.assertEqual(rc, 1)
        self.assertIn("HTTP 400", err)
        self.assertIn("invalid role or secret ID", err)
        self.assertNotIn("0000-not-a-secret-id", out + err)

    def test_check_readonly_denied(self):
        self.outputs = []
        conf = self.config("ro", f"token = file:{self.tmp}/token-ro", "sql/ro/db1")
        rc, out, err = self.agent(conf, ["store", "check"])
        self.assertNotEqual(rc, 0)
        self.assertIn("FAIL  missing create/update on secret/data/sql/ro/db1", out)
        rc, out, err = self.agent(conf, ["store", "put", "hcv:sql/ro/db1"], "Readonly-pw-12345")
        self.assertEqual(rc, 1)
        self.assertIn("HTTP 403", err)
        self.assertIn("permission denied", err)

    # ---- faults ----
    def test_faults(self):
        conf, path = self.full_cycle("faults", f"token = file:{self.tmp}/token")
        # sealed: exit 5 and a clear message
        self.control("/seal", {})
        try:
            t0 = time.time()
            rc, out, err = self.agent(conf, ["store", "show", "hcv:" + path])
        finally:
            self.control("/unseal", {"key": "k"})
        self.assertEqual(rc, 5, err)
        self.assertIn("sealed", err)
        self.assertIn("HTTP 503", err)
        # 429 storm, then success; Retry-After honoured
        self.control("/fail", {"status": 429, "count": 3, "retry_after": 1})
        t0 = time.time()
        rc, out, err = self.agent(conf, ["store", "put", "--overwrite", "hcv:" + path], "After-429-pw-1")
        self.assertEqual(rc, 0, err)
        self.assertGreaterEqual(time.time() - t0, 2.5)
        self.assertEqual(self.vault_value(path)[0], "After-429-pw-1")
        # 500 until cleared: exit 5 after bounded retries
        self.control("/fail", {"status": 500, "count": -1, "path_prefix": "secret/"})
        rc, out, err = self.agent(conf, ["store", "show", "hcv:" + path])
        self.control("/fail", {"status": 0})
        self.assertEqual(rc, 5, err)
        self.assertIn("HTTP 500", err)
        # a dropped connection, then success
        self.control("/drop", {"count": 2})
        rc, out, err = self.agent(conf, ["store", "show", "hcv:" + path])
        self.assertEqual(rc, 0, err)
        # sealed in the middle of a run: the write's reads pass (the metadata read
        # before it: max_versions headroom), then Vault seals
        self.control("/fail", {"status": 503, "count": -1, "path_prefix": "secret/metadata/",
                               "skip": 1})
        rc, out, err = self.agent(conf, ["store", "put", "--overwrite", "hcv:" + path], "Mid-seal-pw-12")
        self.control("/fail", {"status": 0})
        self.assertEqual(rc, 5, err)
        self.assertIn("sealed", err)
        self.assertIn("markers were not", err)

    def test_dropped_write_lands(self):
        """The first CAS write lands, its answer is lost: the retry must see it as ours."""
        self.outputs = []
        conf = self.config("drop", f"token = file:{self.tmp}/token", "sql/drop/db1")
        rc, out, err = self.agent(conf, ["store", "put", "hcv:sql/drop/db1"], "Drop-pw-first-1")
        self.assertEqual(rc, 0, err)
        # /drop does not process the request, so this covers retry-after-drop of a write
        self.control("/drop", {"count": 1})
        rc, out, err = self.agent(conf, ["store", "put", "--overwrite", "hcv:sql/drop/db1"],
                                  "Drop-pw-second-2")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.vault_value("sql/drop/db1"), ("Drop-pw-second-2", 2))

    # ---- token renewal ----
    def test_renewal(self):
        self.outputs = []
        conf = self.config("renew", f"auth = approle\nrole_id = {self.short_role_id}\n"
                                    f"secret_id = file:{self.tmp}/short-secret-id", "sql/renew/db1")
        rc, out, err = self.agent(conf, ["store", "put", "hcv:sql/renew/db1"], "Renew-pw-1234567")
        self.assertEqual(rc, 0, err)
        self.assertNotIn("renewal failed", err)
        # 1 s per request against an 8 s TTL: the run outlives two thirds of it
        before = self.control("/stats")["requests"].get("POST /v1/auth/token/renew-self", 0)
        self.control("/latency", {"ms": 1000})
        try:
            rc, out, err = self.agent(conf, ["store", "put", "--overwrite", "hcv:sql/renew/db1"],
                                      "Renew-pw-2345678")
        finally:
            self.control("/latency", {"ms": 0})
        self.assertEqual(rc, 0, err)
        after = self.control("/stats")["requests"].get("POST /v1/auth/token/renew-self", 0)
        self.assertGreaterEqual(after - before, 1)
        self.assertNotIn("renewal failed", err)
        self.assertEqual(self.vault_value("sql/renew/db1"), ("Renew-pw-2345678", 2))

    # ---- canary ----
    def test_audit_anchor(self):
        """audit_anchor: the head is in the store after a run; verify compares
        the log with it; a cut log with a rolled-back local checkpoint is caught."""
        import hashlib
        self.outputs = []
        anchor = "hcv:sql/audit/anchor#head"
        conf = self.config("anchor", f"token = file:{self.tmp}/token", "sql/anchor/db1",
                           f"audit_anchor = {anchor}\n")
        d = os.path.dirname(conf)
        log, ckpt = f"{d}/audit/audit.log", f"{d}/state/audit-checkpoint.json"
        pw = "Pw-anchor-" + b64u(os.urandom(12))
        rc, out, err = self.agent(conf, ["store", "put", "hcv:sql/anchor/db1"], pw)
        self.assertEqual(rc, 0, err)

        def stored():
            _, r = self.api("GET", "secret/data/sql/audit/anchor")
            return json.loads(r["data"]["data"]["head"])
        with open(log, "rb") as f:
            lines = f.read().splitlines()
        head = stored()
        self.assertEqual(head["seq"], len(lines))
        self.assertEqual(head["head"], hashlib.sha256(lines[-1]).hexdigest())
        with open(ckpt) as f:
            saved = f.read()
        self.assertEqual(json.loads(saved)["seq"], head["seq"])
        rc, out, err = self.agent(conf, ["audit", "verify"])
        self.assertEqual(rc, 0, err)
        self.assertIn(f"checkpoint {anchor}: seq {len(lines)}, the log holds it", out)
        self.assertIn(f"checkpoint {ckpt}: seq {len(lines)}", out)
        # a second run moves the anchor on
        rc, out, err = self.agent(conf, ["store", "put", "--overwrite", "hcv:sql/anchor/db1"], pw + "2")
        self.assertEqual(rc, 0, err)
        self.assertEqual(stored()["seq"], 2 * len(lines))
        # cut the log back to the first run and roll the local checkpoint back with it
        with open(log, "wb") as f:
            f.write(b"".join(ln + b"\n" for ln in lines))
        with open(ckpt, "w") as f:
            f.write(saved)
        rc, out, err = self.agent(conf, ["audit", "verify"])
        self.assertEqual(rc, 1, out + err)
        self.assertIn(f"audit.log:{len(lines)}: the log ends here at seq {len(lines)}, but the "
                      f"checkpoint {anchor} says seq {2 * len(lines)}", err)
        size = os.path.getsize(log)
        rc, out, err = self.agent(conf, ["store", "put", "--overwrite", "hcv:sql/anchor/db1"], pw + "3")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("the audit anchor says seq", err)
        self.assertIn("audit.log", err)
        self.assertEqual(os.path.getsize(log), size)
        self.assertEqual(self.vault_value("sql/anchor/db1")[0], pw + "2")
        # the operator accepts the cut log on purpose: recorded, and the anchor follows
        rc, out, err = self.agent(conf, ["audit", "reset-checkpoint", "--reason", "test: cut on purpose"])
        self.assertEqual(rc, 0, out + err)
        rc, out, err = self.agent(conf, ["audit", "verify"])
        self.assertEqual(rc, 0, out + err)
        self.assertIn("checkpoint-reset (reason: test: cut on purpose", out)
        with open(log, "rb") as f:
            self.assertEqual(stored()["seq"], len(f.read().splitlines()))
        self.assert_no_secrets((pw,))

    def start_vaultsim(self, name, cert):
        base = free_port_block(2)
        sim = Sim([PY, SIM, "--state", os.path.join(self.tmp, "state-" + name), "--port", str(base),
                   "--tls-cert", self.pki[cert + "_pem"], "--tls-key", self.pki[cert + "_key"],
                   "--root-token-file", self.rootfile, "--control-port", str(base + 1)],
                  timeout=30, log_path=os.path.join(self.tmp, f"vaultsim-{name}.log")).__enter__()
        self.addCleanup(sim.stop)
        return sim

    def test_standby_redirect(self):
        """A standby with request forwarding off answers 307 to the active node: followed with the
        token when it is https under the same CA, for the same path; otherwise refused naming
        VAULT_ADDR."""
        self.outputs = []
        standby = self.start_vaultsim("standby", "server")
        scport = standby.ready["control_port"]

        def to(active):
            req = urllib.request.Request(f"http://127.0.0.1:{scport}/standby",
                                         data=json.dumps({"active": active}).encode(), method="POST")
            urllib.request.urlopen(req, timeout=10).read()
        to(self.addr)
        path = "sql/standby/db1"
        conf = self.config("standby", f"auth = token\ntoken = file:{self.tmp}/token", path)
        with open(conf) as f:
            text = f.read().replace(f"address = {self.addr}", f"address = {standby.ready['address']}")
        with open(conf, "w") as f:
            f.write(text)
        pw = "Pw-standby-" + b64u(os.urandom(12))
        rc, out, err = self.agent(conf, ["store", "put", "hcv:" + path], pw)
        self.assertEqual(rc, 0, out + err)
        self.assertIn(f"Vault at {standby.ready['address']} is a standby", err)
        self.assertIn(f"following its redirect to {self.addr}", err)
        self.assertEqual(self.vault_value(path), (pw, 1))       # it landed on the active node
        rc, out, err = self.agent(conf, ["store", "show", "hcv:" + path])
        self.assertEqual(rc, 0, out + err)
        # plain http: refused, the token never sent there
        to(self.addr.replace("https://", "http://"))
        rc, out, err = self.agent(conf, ["store", "show", "hcv:" + path])
        self.assertEqual(rc, 2, out + err)
        self.assertIn("not followed (only https", err)
        self.assertIn("set VAULT_ADDR (address in [store hcv]) to the active node", err)
        # https, but a certificate the configured CA does not vouch for: refused by TLS
        other = self.start_vaultsim("untrusted", "untrusted")
        to(other.ready["address"])
        rc, out, err = self.agent(conf, ["store", "show", "hcv:" + path])
        self.assertNotEqual(rc, 0, out + err)
        self.assertIn(f"Vault's active node {other.ready['address']} (redirected from the standby", err)
        ost = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{other.ready['control_port']}/stats", timeout=10).read())
        self.assertEqual(ost["total"], 0, ost)                  # no request (no token) reached it
        self.assert_no_secrets((pw,))

    def test_canary(self):
        self.outputs = []
        conf = self.config("canary", f"auth = approle\nrole_id = {self.role_id}\n"
                                     f"secret_id = file:{self.tmp}/secret-id", "sql/canary/db1")
        rc, out, err = self.agent(conf, ["store", "put", "hcv:sql/canary/db1"], CANARY)
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.vault_value("sql/canary/db1")[0], CANARY)
        rc, out, err = self.agent(conf, ["store", "put", "hcv:sql/canary/db1"], CANARY)
        self.assertEqual(rc, 1)
        rc, out, err = self.agent(conf, ["store", "show", "hcv:sql/canary/db1"])
        self.assertEqual(rc, 0)
        self.control("/seal", {})
        try:
            rc, out, err = self.agent(conf, ["store", "put", "--overwrite", "hcv:sql/canary/db1"], CANARY)
        finally:
            self.control("/unseal", {"key": "k"})
        self.assertEqual(rc, 5)
        audit = os.path.join(self.tmp, "run-canary", "audit", "audit.log")
        with open(audit, errors="replace") as f:
            log = f.read()
        self.assertIn("store-put", log)
        self.outputs.append(log)
        self.assert_no_secrets()


if __name__ == "__main__":
    unittest.main(verbosity=2)
