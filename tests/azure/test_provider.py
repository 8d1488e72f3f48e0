"""azkv-provider: the built dmkagent against tests/sim/azuresim.

For every credential kind (client secret, client certificate PS256/RS256,
workload identity, managed identity via IMDS, App Service and Arc, the
default chain) it writes a 0600 config, runs `store put` (value on stdin),
`store show` and `store check`, then covers paging, throttling, soft delete,
and a canary: no client secret, stored value or token appears in argv,
stdout, stderr or the audit log.  Exit 77 when it cannot run here.
"""
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import traceback
import urllib.request

SKIP = 77
SRC = os.environ.get("SRCDIR", os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
sys.path.insert(0, SRC)

try:
    from tests.sim.common.harness import Sim, free_port_block, PY
    from tests.sim.common.pki import make_pki
except Exception as e:  # pragma: no cover
    print(f"skip: {e}")
    sys.exit(SKIP)

AGENT = os.environ.get("DMKAGENT", "")
SIM = os.path.join(SRC, "tests", "sim", "azuresim")
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "3c4e2f00-1b5a-4c1e-9d0a-5e8f3a2b1c0d"
CLIENT_SECRET = "canary-clientsecret-Q9v7Lm2x"
ALL_ENV = ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET",
           "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST",
           "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IMDS_ENDPOINT", "DMKAGENT_IMDS_ENDPOINT",
           "DMKAGENT_ARC_KEY_DIR", "AZURE_POD_IDENTITY_AUTHORITY_HOST", "MSI_ENDPOINT"]


class Ctx:
    def __init__(self, tmp, pki, ready):
        self.tmp, self.pki, self.ready = tmp, pki, ready
        self.values = []           # every value we stored: must never be echoed
        self.outputs = []          # (argv, stdout, stderr) of every run
        self.n = 0
        self.secret_file = os.path.join(tmp, "client-secret")
        with open(self.secret_file, "w") as f:
            f.write(CLIENT_SECRET + "\n")
        os.chmod(self.secret_file, 0o600)
        self.audit = os.path.join(tmp, "audit", "audit.jsonl")

    def config(self, store_lines):
        self.n += 1
        path = os.path.join(self.tmp, f"dmkagent-{self.n}.conf")
        r = self.ready
        text = (f"[agent]\nstate_dir = {self.tmp}/state\naudit_log = {self.audit}\n\n"
                f"[store akv]\ntype = azure-key-vault\nvault_url = {r['vault_url']}\n"
                f"ca_file = {self.pki['ca_pem']}\nchallenge_resource_verification = no\n"
                f"timeout = 20s\n" + "".join(l + "\n" for l in store_lines))
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        return path

    def run(self, conf, args, stdin=None, env=None, expect=0):
        e = {k: v for k, v in os.environ.items() if k not in ALL_ENV}
        e.update(env or {})
        argv = [AGENT, "-c", conf] + args
        p = subprocess.run(argv, input=(stdin or "").encode(), capture_output=True, env=e,
                           timeout=120)
        out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        self.outputs.append((" ".join(argv), out, err))
        if expect is not None and p.returncode != expect:
            raise AssertionError(f"{args}: exit {p.returncode}, wanted {expect}\n"
                                 f"stdout: {out}\nstderr: {err}")
        return p.returncode, out, err

    def control(self, path, body=None):
        url = f"http://127.0.0.1:{self.ready['control_port']}{path}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"{}")


def client_secret_conf(c, extra=()):
    return c.config(["auth = client-secret", f"tenant_id = {TENANT}", f"client_id = {CLIENT}",
                     f"authority_host = {c.ready['authority_host']}",
                     f"client_secret = file:{c.secret_file}"] + list(extra))


def put_show_check(c, conf, name, env=None):
    """put a fresh value, show it, check the store; returns the version id."""
    value = f"canary-value-{name}-Zx81!kq"
    c.values.append(value)
    _, out, _ = c.run(conf, ["store", "put", "--no-policy-check", f"akv:{name}"], stdin=value,
                      env=env)
    assert out.startswith(f"stored akv:{name} as version "), out
    ver = out.split()[-1]
    assert len(ver) == 32, out
    _, out, _ = c.run(conf, ["--output", "json", "store", "show", f"akv:{name}"], env=env)
    doc = json.loads(out)
    assert any(v["version"] == ver and v["markers"].get("dmkagent-state") == "current"
               for v in doc["versions"]), out
    _, out, _ = c.run(conf, ["store", "check"], env=env)
    assert "authenticated" in out and " ok " in out, out
    return ver


# ---- the cases ----

def t_client_secret(c):
    conf = client_secret_conf(c)
    put_show_check(c, conf, "cs-db1")
    # put without --overwrite on an existing name: refused, nothing written.
    rc, out, err = c.run(conf, ["store", "put", "--no-policy-check", "akv:cs-db1"],
                         stdin="another-value-9", expect=None)
    assert rc != 0 and "already exists" in err, (rc, out, err)
    c.values.append("another-value-9")
    c.run(conf, ["store", "put", "--overwrite", "--no-policy-check", "akv:cs-db1"],
          stdin="third-value-Kk2")
    c.values.append("third-value-Kk2")
    _, out, _ = c.run(conf, ["--output", "json", "store", "show", "akv:cs-db1"])
    assert len(json.loads(out)["versions"]) == 2, out
    # A '#field' is meaningless for Azure: a clear error.
    rc, out, err = c.run(conf, ["store", "show", "akv:cs-db1#password"], expect=None)
    assert rc != 0 and "#password" in err, (rc, err)
    # A wrong client secret: an authentication error naming Entra's code.
    bad = os.path.join(c.tmp, "bad-secret")
    with open(bad, "w") as f:
        f.write("not-the-secret-1234\n")
    os.chmod(bad, 0o600)
    conf = c.config(["auth = client-secret", f"tenant_id = {TENANT}", f"client_id = {CLIENT}",
                     f"authority_host = {c.ready['authority_host']}",
                     f"client_secret = file:{bad}"])
    rc, out, err = c.run(conf, ["store", "check"], expect=None)
    assert rc == 1 and "invalid_client" in out + err, (rc, out, err)
    assert "not-the-secret-1234" not in out + err
    # The vault's tenant is not ours: refused before any token is asked for.
    conf = c.config(["auth = client-secret", "tenant_id = 00000000-0000-0000-0000-000000000001",
                     f"client_id = {CLIENT}", f"authority_host = {c.ready['authority_host']}",
                     f"client_secret = file:{c.secret_file}"])
    rc, out, err = c.run(conf, ["store", "check"], expect=None)
    assert rc != 0 and "tenant" in out + err, (rc, out, err)


def t_client_cert(c):
    key = os.path.join(c.tmp, "client.key")
    shutil.copy(c.pki["client_key"], key)
    os.chmod(key, 0o600)
    for alg in ("PS256", "RS256"):
        conf = c.config(["auth = client-certificate", f"tenant_id = {TENANT}",
                         f"client_id = {CLIENT}", f"authority_host = {c.ready['authority_host']}",
                         f"client_certificate = {c.pki['client_pem']}",
                         f"client_certificate_key = file:{key}", f"assertion_alg = {alg}"])
        put_show_check(c, conf, f"cert-{alg.lower()}")


def t_workload(c):
    r = c.ready
    env = {"AZURE_FEDERATED_TOKEN_FILE": r["federated_token_file"], "AZURE_TENANT_ID": TENANT,
           "AZURE_CLIENT_ID": CLIENT, "AZURE_AUTHORITY_HOST": r["authority_host"]}
    conf = c.config(["auth = workload-identity"])
    put_show_check(c, conf, "wi-db1", env=env)


def base_url(c):
    return c.ready["vault_url"].rstrip("/")


def t_imds(c):
    conf = c.config(["auth = managed-identity"])
    put_show_check(c, conf, "imds-db1", env={"DMKAGENT_IMDS_ENDPOINT": base_url(c)})
    conf = c.config(["auth = managed-identity",
                     f"managed_identity_client_id = {c.ready['user_mi_client_id']}"])
    put_show_check(c, conf, "imds-user", env={"DMKAGENT_IMDS_ENDPOINT": base_url(c)})


def t_app_service(c):
    r = c.ready
    conf = c.config(["auth = managed-identity"])
    put_show_check(c, conf, "appsvc-db1", env={"IDENTITY_ENDPOINT": r["identity_endpoint"],
                                               "IDENTITY_HEADER": r["identity_header"]})


def t_arc(c):
    r = c.ready
    env = {"IDENTITY_ENDPOINT": r["arc_identity_endpoint"], "IMDS_ENDPOINT": r["arc_imds_endpoint"],
           "DMKAGENT_ARC_KEY_DIR": r["arc_key_dir"]}
    conf = c.config(["auth = managed-identity"])
    put_show_check(c, conf, "arc-db1", env=env)
    # The key file is not under the directory we trust: refused.
    other = os.path.join(c.tmp, "elsewhere")
    os.makedirs(other, exist_ok=True)
    env["DMKAGENT_ARC_KEY_DIR"] = other
    rc, out, err = c.run(conf, ["store", "check"], env=env, expect=None)
    assert rc != 0 and "refused" in out + err, (rc, out, err)


def t_default_chain(c):
    r = c.ready
    conf = c.config([f"authority_host = {r['authority_host']}"])
    # Environment credential first.
    put_show_check(c, conf, "def-env", env={"AZURE_TENANT_ID": TENANT, "AZURE_CLIENT_ID": CLIENT,
                                            "AZURE_CLIENT_SECRET": CLIENT_SECRET})
    # Nothing in the environment: managed identity.
    put_show_check(c, conf, "def-mi", env={"DMKAGENT_IMDS_ENDPOINT": base_url(c)})
    # Everything fails: each credential's reason, exit 5 (IMDS unreachable).
    rc, out, err = c.run(conf, ["store", "check"],
                         env={"DMKAGENT_IMDS_ENDPOINT": "https://127.0.0.1:1"}, expect=None)
    text = out + err
    assert rc == 5, (rc, text)
    for part in ("environment:", "workload-identity:", "managed-identity:"):
        assert part in text, text


def t_paging(c):
    conf = client_secret_conf(c)
    for i in range(27):
        v = f"page-value-{i}-Qm3!"
        c.values.append(v)
        c.run(conf, ["store", "put", "--overwrite", "--no-policy-check", "akv:paged"], stdin=v)
    _, out, _ = c.run(conf, ["--output", "json", "store", "show", "akv:paged"])
    vers = json.loads(out)["versions"]
    assert len(vers) == 27, len(vers)
    assert len({v["version"] for v in vers}) == 27
    created = [v["created"] for v in vers]
    assert created == sorted(created), created


def t_version_order(c):
    """Key Vault lists versions in no documented order and `created` has one-second resolution
    (here: all in one second, listed by id): the newest is the one written last, by the agent's
    own order tag."""
    conf = client_secret_conf(c)
    c.control("/pin-created", {"created": 1767225600})
    try:
        vers = []
        for i in range(6):
            v = f"order-value-{i}-Jq7!"
            c.values.append(v)
            _, out, _ = c.run(conf, ["store", "put", "--overwrite", "--no-policy-check", "akv:ordered"],
                              stdin=v)
            vers.append(out.split()[-1])
        _, out, _ = c.run(conf, ["--output", "json", "store", "show", "akv:ordered"])
        listed = [v["version"] for v in json.loads(out)["versions"]]
        assert listed == vers, (listed, vers)
        assert all(len(v["markers"].get("dmkagent-order", "")) == 20
                   for v in json.loads(out)["versions"]), out
    finally:
        c.control("/pin-created", {"created": None})


def t_tenant_domain(c):
    """tenant_id as a domain: the challenge names the tenant id; the agent resolves the domain
    through the authority's OpenID configuration before comparing."""
    def conf_for(tenant):
        return c.config(["auth = client-secret", f"tenant_id = {tenant}", f"client_id = {CLIENT}",
                         f"authority_host = {c.ready['authority_host']}",
                         f"client_secret = file:{c.secret_file}"])
    put_show_check(c, conf_for("contoso.onmicrosoft.com"), "tenant-domain")
    rc, out, err = c.run(conf_for("fabrikam.onmicrosoft.com"), ["store", "show", "akv:tenant-domain"],
                         expect=None)
    assert rc != 0 and "tenant_id fabrikam.onmicrosoft.com" in err and "not a tenant there" in err, \
        (rc, out, err)


def t_throttling(c):
    conf = client_secret_conf(c)
    put_show_check(c, conf, "thr-db1")
    c.control("/fail", {"status": 429, "count": 2, "retry_after": 1})
    _, out, _ = c.run(conf, ["store", "show", "akv:thr-db1"])
    assert "1 version(s)" in out, out
    c.control("/fail", {"status": 503, "count": 2})
    c.run(conf, ["store", "show", "akv:thr-db1"])
    c.control("/fail", {"status": 429, "count": -1, "retry_after": 1})
    try:
        rc, out, err = c.run(conf, ["store", "show", "akv:thr-db1"], expect=None)
    finally:
        c.control("/reset", {})
    assert rc == 5 and "429" in out + err, (rc, out, err)


def t_token_expiry(c):
    conf = client_secret_conf(c)
    put_show_check(c, conf, "exp-db1")
    # A token revoked between calls of one run: the agent fetches a new one.  One run
    # is one process, so revoke before the run and let the cached challenge path work.
    c.control("/expire-tokens", {})
    c.run(conf, ["store", "show", "akv:exp-db1"])


def t_deleted(c):
    conf = client_secret_conf(c)
    put_show_check(c, conf, "gone-db1")
    tok = c.control("/token", {"resource": "https://vault.azure.net", "client_id": CLIENT})
    token = tok.get("access_token") or tok.get("token")
    assert token, tok
    ctx = ssl.create_default_context(cafile=c.pki["ca_pem"])
    req = urllib.request.Request(f"{base_url(c)}/secrets/gone-db1?api-version=7.5",
                                 method="DELETE", headers={"Authorization": f"Bearer {token}"})
    urllib.request.urlopen(req, context=ctx, timeout=10).read()
    rc, out, err = c.run(conf, ["store", "show", "akv:gone-db1"], expect=None)
    assert rc != 0 and "deleted" in err, (rc, out, err)
    rc, out, err = c.run(conf, ["store", "put", "--overwrite", "--no-policy-check",
                                "akv:gone-db1"], stdin="resurrect-me-77", expect=None)
    c.values.append("resurrect-me-77")
    assert rc != 0 and "deleted" in err, (rc, out, err)
    rc, out, err = c.run(conf, ["store", "put", "--no-policy-check", "akv:gone-db1"],
                         stdin="resurrect-me-77", expect=None)
    assert rc != 0 and "deleted" in err, (rc, out, err)


def t_canary(c):
    """Runs last: nothing secret in anything the agent produced."""
    audit = open(c.audit, errors="replace").read() if os.path.exists(c.audit) else ""
    assert audit, "no audit log written"
    needles = [CLIENT_SECRET] + c.values + [c.ready["identity_header"]]
    key = open(c.pki["client_key"]).read().splitlines()[1]
    needles.append(key)
    for argv, out, err in c.outputs + [("audit", audit, "")]:
        for s in (argv, out, err):
            for n in needles:
                assert n not in s or (s is argv and False), f"secret leaked in {argv!r}"
            # Entra and Key Vault tokens are JWTs: "eyJ" starts every one.
            assert "eyJ0eXAi" not in s and "eyJhbGci" not in s, f"token leaked in {argv!r}"


CASES = [t_client_secret, t_client_cert, t_workload, t_imds, t_app_service, t_arc,
         t_default_chain, t_paging, t_version_order, t_tenant_domain, t_throttling, t_token_expiry, t_deleted, t_canary]


def main():
    if not AGENT or not os.access(AGENT, os.X_OK):
        print("skip: DMKAGENT is not built")
        return SKIP
    if not os.path.exists(SIM):
        print("skip: tests/sim/azuresim is missing")
        return SKIP
    tmp = tempfile.mkdtemp(prefix="azkv-provider-")
    failed = 0
    try:
        pki = make_pki(os.path.join(tmp, "pki"))
        secfile = os.path.join(tmp, "sim-secrets")
        with open(secfile, "w") as f:
            f.write(CLIENT_SECRET + "\n")
        port = free_port_block(3)
        argv = [PY, SIM, "--state", os.path.join(tmp, "sim"), "--port", str(port),
                "--tls-cert", pki["server_pem"], "--tls-key", pki["server_key"],
                "--tenant", TENANT, "--client-id", CLIENT, "--client-secret-file", secfile,
                "--client-cert", pki["client_pem"], "--control-port", str(port + 1),
                "--tenant-domain", "contoso.onmicrosoft.com"]
        with Sim(argv, log_path=os.path.join(tmp, "sim.log")) as sim:
            c = Ctx(tmp, pki, sim.ready)
            for case in CASES:
                try:
                    case(c)
                    print(f"ok   {case.__name__}")
                except Exception:
                    failed += 1
                    print(f"FAIL {case.__name__}")
                    traceback.print_exc(file=sys.stdout)
            if failed:
                print("--- simulator log (tail) ---")
                print(sim.log_text()[-4000:])
    finally:
        if not failed:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")
    print(f"{len(CASES) - failed} of {len(CASES)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
