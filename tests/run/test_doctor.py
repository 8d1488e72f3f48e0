#!/usr/bin/python3
"""dmkagent doctor, the read-only pre-flight check, against sqlsim + vaultsim:
all good (exit 0, every check ok); several problems at once (a file:
reference readable by others, a typo'd Vault path, a wrong token for a
second store, a replica down, a login without a permission it needs, too
few versions kept), each reported on its own line with its target and
fix (exit 1); the store stopped (exit 5); and doctor changes nothing in
the store or in SQL Server.  Also config check: every error, each with
FILE:LINE."""
import glob
import hashlib
import json
import os
import re
import ssl
import sys
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "rotate"))
import rotlib  # noqa: E402
from rotlib import Lab, store_versions  # noqa: E402
import lab as _labmod  # noqa: E402
from tests.sim.common.harness import run_unittests, SKIP  # noqa: E402


def snapshot(lab):
    """Every byte the simulators keep: the Vault state and SQL Server's
    (each node's master database, the replicated databases, the AG); and
    dmkagent's own state_dir and audit log."""
    out = {}
    for path in [os.path.join(lab.dir, "vault", "vaultsim-state.json")] + \
            sorted(glob.glob(os.path.join(lab.dir, "sql", "**", "*.json"), recursive=True)) + \
            sorted(glob.glob(os.path.join(lab.state_dir, "*"))) + \
            ([lab.audit_log] if os.path.exists(lab.audit_log) else []):
        with open(path, "rb") as f:
            out[os.path.relpath(path, lab.dir)] = hashlib.sha256(f.read()).hexdigest()
    st = lab.control("/status")
    st.pop("faults", None)                 # its statement counter counts reads too
    for n in st["nodes"]:
        n.pop("sessions", None)
    return out, store_versions(lab), st


def doctor(lab, *args):
    rc, out, err = lab.agent("--output", "json", "doctor", *args)
    try:
        doc = json.loads(out)
    except ValueError:
        raise AssertionError(f"doctor --output json: not JSON (exit {rc}): {out!r} {err!r}")
    return rc, doc, err


def vault_post(lab, path, body, method="POST"):
    ctx = ssl.create_default_context(cafile=lab.ca)
    req = urllib.request.Request(lab.vault.ready["address"] + "/v1/" + path,
                                 data=json.dumps(body).encode(), method=method,
                                 headers={"X-Vault-Token": lab.root_token,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=20, context=ctx) as r:
        t = r.read().decode()
        return json.loads(t) if t else {}


SERVER_PERMS = ("VIEW SERVER STATE", "VIEW ANY DEFINITION", "ALTER ANY CREDENTIAL",
                "ADMINISTER BULK OPERATIONS", "ALTER ANY AVAILABILITY GROUP")


def make_login(lab, perms=SERVER_PERMS, lacking=()):
    """The login dmkagent on every replica (as examples/sql/dmkagent-login.sql
    makes it), without the (node, permission) pairs in lacking; its password
    in a file, which the configuration then names."""
    pw = _labmod.strong_password()
    esc = pw.replace("'", "''")
    for node in range(lab.nodes):
        lab.query(f"CREATE LOGIN [dmkagent] WITH PASSWORD = N'{esc}', "
                  "SID = 0x1D2F3A4B5C6D7E8F9A0B1C2D3E4F5A6B, CHECK_POLICY = ON, "
                  "CHECK_EXPIRATION = OFF", node=node)
        for perm in perms:
            if (node, perm) not in lacking:
                lab.query(f"GRANT {perm} TO [dmkagent]", node=node)
    with lab.connect(node=0, database="CM_P01") as c:
        cur = c.cursor()
        cur.execute("CREATE USER [dmkagent] FOR LOGIN [dmkagent]")
        cur.execute("GRANT CONTROL ON DATABASE::[CM_P01] TO [dmkagent]")
    pwfile = _labmod.write_secret(os.path.join(lab.dir, "dmkagent-login"), pw)
    edit(lab, lambda t: t.replace("login = sa\n", "login = dmkagent\n")
         .replace(f"login_password = file:{os.path.join(lab.dir, 'sa-password')}",
                  f"login_password = file:{pwfile}"))
    return pw


def edit(lab, fn):
    with open(lab.config) as f:
        text = f.read()
    with open(lab.config, "w") as f:
        f.write(fn(text))


class Doctor(unittest.TestCase):
    def setUp(self):
        self.lab = Lab(nodes=3).__enter__()
        self.lab.put_dmk_password()
        rc, out, err = self.lab.agent("register")
        self.assertEqual(rc, 0, out + err)

    def tearDown(self):
        self.lab.__exit__(None, None, None)

    def problems(self, doc):
        return [c for c in doc["checks"] if c["status"] == "PROBLEM"]

    def test_all_good(self):
        lab = self.lab
        before = snapshot(lab)
        rc, doc, err = doctor(lab)
        self.assertEqual(rc, 0, json.dumps(doc, indent=1) + err)
        self.assertEqual(doc["exit"], 0)
        self.assertEqual(self.problems(doc), [])
        for c in doc["checks"]:
            self.assertEqual((c["status"], c["ok"]), ("ok", True), c)
        names = {c["name"] for c in doc["checks"]}
        for want in ("file", "store", "reference", "write", "headroom", "ag", "database",
                     "replica", "permission"):
            self.assertIn(want, names, f"no {want} check: {doc['checks']}")
        # every replica answered over TLS and its login's permissions were read
        for node in ("SQLNODE1", "SQLNODE2", "SQLNODE3"):
            self.assertTrue(any(c["name"] == "replica" and node in c["target"] for c in doc["checks"]))
            self.assertTrue(any(c["name"] == "permission" and node in c["target"] for c in doc["checks"]))
        # text: one line per check, each ok
        rc, out, err = lab.agent("doctor")
        self.assertEqual(rc, 0, out + err)
        lines = out.strip().splitlines()
        self.assertEqual(len(lines), len(doc["checks"]) + 1, out)
        self.assertTrue(all(x.startswith("ok: ") for x in lines[:-1]), out)
        rc, out, err = lab.agent("-q", "doctor")
        self.assertEqual((rc, out), (0, ""), "-q printed with nothing wrong")
        self.assertEqual(snapshot(lab), before, "doctor changed the store or SQL Server")
        self.assertNotIn(lab.dmk_password, out + err)

    def test_many_problems_at_once(self):
        lab = self.lab
        # A login with every permission but ALTER ANY CREDENTIAL on SQLNODE2.
        pw = make_login(lab, lacking={(1, "ALTER ANY CREDENTIAL")})
        # audit_key in a file others can read; a second store with a wrong token
        # (holding the audit anchor); the DMK password's path with a typo.
        key = os.path.join(lab.dir, "audit.key")
        with open(key, "w") as f:
            f.write("k" * 32)
        os.chmod(key, 0o644)
        wrong = _labmod.write_secret(os.path.join(lab.dir, "wrong-token"), "hvs.not-a-token")
        store2 = lab.store_section().replace("[store hcv]", "[store hcv2]").replace(
            os.path.join(lab.dir, "vault-root-token"), wrong)
        edit(lab, lambda t: t.replace("[agent]\n", f"[agent]\naudit_key = file:{key}\n"
                      "audit_anchor = hcv2:dmkagent/audit-anchor#head\n")
             .replace("[ag AG1]", store2 + "[ag AG1]")
             .replace("hcv:sql/ag1/cm_p01/dmk#password", "hcv:sql/ag1/cm_p0l/dmk#password"))
        lab.control("/nodes/SQLNODE3/down", {})
        before = snapshot(lab)

        rc, doc, err = doctor(lab)
        self.assertEqual(rc, 1, json.dumps(doc, indent=1) + err)
        self.assertEqual(doc["exit"], 1)
        probs = self.problems(doc)
        def find(name, *needles):
            hits = [p for p in probs if p["name"] == name and
                    all(n in p["target"] + " " + p["problem"] for n in needles)]
            self.assertTrue(hits, f"no {name} problem with {needles}: {json.dumps(probs, indent=1)}")
            self.assertTrue(hits[0]["fix"], hits[0])
            return hits[0]
        p = find("file", key)
        self.assertIn(f"chmod 600 {key}", p["fix"])
        p = find("store", "hcv2")
        self.assertIn(wrong, p["fix"])
        p = find("reference", "hcv:sql/ag1/cm_p0l/dmk#password", "no such secret")
        self.assertIn("typo", p["fix"])
        p = find("replica", "SQLNODE3")
        self.assertIn("start SQL Server on SQLNODE3", p["fix"])
        p = find("permission", "SQLNODE2", "ALTER ANY CREDENTIAL")
        self.assertIn("GRANT ALTER ANY CREDENTIAL TO [dmkagent]", p["fix"])
        self.assertEqual(len(probs), 5, json.dumps(probs, indent=1))
        # the other replicas' permissions are in order; the anchor in hcv2 was not checked
        self.assertTrue(any(c["name"] == "permission" and "SQLNODE1" in c["target"] and c["ok"]
                            for c in doc["checks"]))
        self.assertTrue(any(c["status"] == "not checked" and "audit-anchor" in c["target"]
                            for c in doc["checks"]))

        # text: the same problems, one line each, with the fix
        rc, out, err = lab.agent("doctor")
        self.assertEqual(rc, 1, out + err)
        if os.environ.get("DOCTOR_SHOW"):
            sys.stderr.write(out)
        plines = [x for x in out.splitlines() if x.startswith("PROBLEM: ")]
        self.assertEqual(len(plines), 5, out)
        self.assertTrue(all("; fix: " in x for x in plines), out)
        rc, out, err = lab.agent("-q", "doctor")
        self.assertEqual(rc, 1)
        self.assertTrue(all(x.startswith("PROBLEM: ") or x.startswith("doctor: ")
                            for x in out.splitlines()), out)
        for secret in (pw, lab.dmk_password, lab.root_token, lab.sa_password):
            self.assertNotIn(secret, out + err + json.dumps(doc))
        self.assertEqual(snapshot(lab), before, "doctor changed the store or SQL Server")

    def test_least_privilege(self):
        """The example Vault policy and SQL login (README, Least privilege)
        are enough: no problem, and no false alarm about what they leave out
        (the mount's config, server-wide rights)."""
        lab = self.lab
        with open(os.path.join(_labmod.SRC, "examples", "vault", "dmkagent-policy.hcl")) as f:
            vault_post(lab, "sys/policies/acl/dmkagent", {"policy": f.read()}, method="PUT")
        tok = vault_post(lab, "auth/token/create", {"policies": ["dmkagent"], "ttl": "1h"})
        _labmod.write_secret(os.path.join(lab.dir, "vault-root-token"), tok["auth"]["client_token"])
        make_login(lab, perms=SERVER_PERMS + ("CREATE ANY DATABASE",))
        edit(lab, lambda t: t.replace("dmk_password = hcv:sql/ag1/cm_p01/dmk#password\n",
                                      "dmk_password = hcv:sql/ag1/cm_p01/dmk#password\n"
                                      "restore_test_every = 30d\n"))
        rc, doc, err = doctor(lab)
        self.assertEqual(rc, 0, json.dumps(doc, indent=1) + err)
        self.assertEqual(self.problems(doc), [])
        perms = [c for c in doc["checks"] if c["name"] == "permission"]
        self.assertEqual(len(perms), 3, perms)
        self.assertTrue(all("CREATE ANY DATABASE" in c["detail"] for c in perms), perms)
        self.assertTrue(any("CONTROL on database CM_P01" in c["detail"] for c in perms), perms)
        head = [c for c in doc["checks"] if c["name"] == "headroom"]
        # dmkagent sets max_versions (100 by default) on the key before each
        # write: the mount's config, which the policy does not open, is not needed.
        self.assertIn("max_versions 100 of [store hcv]", head[0]["detail"])

    def test_write_denied(self):
        """A token that may read and write the DMK password but not its
        backup escrow: named, with what to grant; checked without writing."""
        lab = self.lab
        pol = ('path "secret/data/sql/ag1/cm_p01/dmk" { capabilities = ["create", "read", "update"] }\n'
               'path "secret/metadata/sql/ag1/cm_p01/dmk" { capabilities = ["read", "update"] }\n')
        vault_post(lab, "sys/policies/acl/narrow", {"policy": pol}, method="PUT")
        tok = vault_post(lab, "auth/token/create", {"policies": ["narrow"], "ttl": "1h"})
        _labmod.write_secret(os.path.join(lab.dir, "vault-root-token"), tok["auth"]["client_token"])
        before = snapshot(lab)
        rc, doc, err = doctor(lab)
        self.assertEqual(rc, 1, json.dumps(doc, indent=1) + err)
        probs = self.problems(doc)
        self.assertEqual(len(probs), 1, probs)
        self.assertEqual(probs[0]["name"], "write")
        self.assertIn(f"{rotlib.PATH}-backup-dmk", probs[0]["target"])
        self.assertIn("grant", probs[0]["fix"])
        self.assertEqual(snapshot(lab), before, "doctor changed the store or SQL Server")

    def test_headroom(self):
        lab = self.lab
        # Vault keeps two versions of the key: the next rotation's pending
        # version would push the one in force out for good.
        vault_post(lab, f"{rotlib.KV}/metadata/{rotlib.PATH}", {"max_versions": 2})
        # By default dmkagent sets its own max_versions (100) on the key
        # before each write: the key's 2 would not push anything out.
        rc, doc, err = doctor(lab)
        self.assertEqual(rc, 0, json.dumps(doc, indent=1) + err)
        # max_versions = 0 leaves the key's own setting in force.
        edit(lab, lambda t: t.replace("[store hcv]\n", "[store hcv]\nmax_versions = 0\n", 1))
        rc, doc, err = doctor(lab)
        self.assertEqual(rc, 1, json.dumps(doc, indent=1) + err)
        probs = self.problems(doc)
        self.assertEqual([p["name"] for p in probs], ["headroom"], probs)
        self.assertIn("max_versions 2 on the key", probs[0]["problem"])
        self.assertIn("max-versions", probs[0]["fix"])

    def test_store_stopped(self):
        lab = self.lab
        lab.vault.stop()
        rc, doc, err = doctor(lab)
        self.assertEqual(rc, 5, json.dumps(doc, indent=1) + err)
        probs = self.problems(doc)
        self.assertTrue(probs)
        self.assertTrue(all(p["temporary"] for p in probs), probs)
        self.assertTrue(any(p["name"] == "store" and "hcv" in p["target"] for p in probs))
        # the replicas were still checked
        self.assertTrue(any(c["name"] == "replica" and c["ok"] for c in doc["checks"]))


class DoctorAzure(unittest.TestCase):
    def test_key_vault(self):
        """Key Vault: the read proves get; set cannot be proven without
        writing, so it is "not checked" (never a pass, never a problem), and
        Key Vault keeps every version."""
        from azlab import AzureLab
        with AzureLab(nodes=2) as lab:
            lab.put_dmk_password()
            rc, out, err = lab.agent("register")
            self.assertEqual(rc, 0, out + err)
            rc, doc, err = doctor(lab)
            self.assertEqual(rc, 0, json.dumps(doc, indent=1) + err)
            dmk = lab.dmk_ref("CM_P01")
            mine = {c["name"]: c for c in doc["checks"] if c["target"].startswith(dmk + " ")}
            self.assertEqual(mine["reference"]["status"], "ok", mine)
            self.assertEqual((mine["write"]["status"], mine["write"]["ok"]), ("not checked", None),
                             mine)
            self.assertIn("without writing", mine["write"]["detail"])
            self.assertEqual(mine["headroom"]["status"], "ok", mine)
            self.assertIn("keeps every version", mine["headroom"]["detail"])
            rc, out, err = lab.agent("doctor")
            self.assertIn(f"not checked: write {dmk} ", out)


class ConfigCheck(unittest.TestCase):
    def test_every_error(self):
        d = _labmod.tempfile.mkdtemp(prefix="dmkcfg-")
        os.chmod(d, 0o700)
        path = os.path.join(d, "dmkagent.conf")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write("[agent]\nstate_dir = /tmp/x\nbogus = 1\n"                     # 3
                    "[store hcv]\ntype = hashicorp-vault\naddress = https://v:8200\n"
                    "auth = token\ntoken = env:VAULT_TOKEN\n"
                    "[ag AG1]\nlistener = a.example.com:1433\nlogin = dmkagent\n"
                    "login_password = hcv:sql/l#p\nquery_timeout = later\n"       # 13
                    "[database AG1/CM_P01]\ndmk_password = hcv:sql/d#p\n"
                    "rotate_every = monthly\n")                                  # 16
        try:
            p = _labmod.subprocess.run([_labmod.DMK, "-c", path, "config", "check"],
                                       capture_output=True, text=True, timeout=30)
            self.assertEqual(p.returncode, 2, p.stdout + p.stderr)
            for line, key in ((3, "bogus"), (13, "query_timeout"), (16, "rotate_every")):
                self.assertRegex(p.stderr, rf"{re.escape(path)}:{line}: [^\n]*{key}")
        finally:
            _labmod.shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    if not os.path.exists(_labmod.DMK):
        print("dmkagent not built")
        sys.exit(SKIP)
    if not rotlib.have_pytds():
        print("python3-tds missing: skipping")
        sys.exit(SKIP)
    run_unittests()
