#!/usr/bin/python3
"""The operations examples work as shipped: the systemd units pass
`systemd-analyze verify` (skipped where it is missing); the least-privilege
Vault policy (examples/vault/dmkagent-policy.hcl) is enough for run, rotate
and backup --restore-test against vaultsim, and denies the rest; the SQL
login script (examples/sql/dmkagent-login.sql) gives a login with which run,
rotate, backup --restore-test and verify pass against sqlsim, and which
is not sysadmin; the Kubernetes fleet CronJob (an Indexed Job) is
consistent (completions = parallelism = the N of --shard auto/N) and its
arguments are accepted by dmkagent."""
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "rotate"))
import rotlib  # noqa: E402
from rotlib import Lab, converged  # noqa: E402
import lab as _labmod  # noqa: E402

SRC = _labmod.SRC
EX = os.path.join(SRC, "examples")


def edit(path, fn):
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(fn(text))


class Systemd(unittest.TestCase):
    def test_units_verify(self):
        sa = shutil.which("systemd-analyze")
        if sa is None:
            self.skipTest("systemd-analyze is not installed")
        d = tempfile.mkdtemp(prefix="dmkunits-")
        try:
            units = []
            for name in sorted(os.listdir(os.path.join(EX, "systemd"))):
                with open(os.path.join(EX, "systemd", name)) as f:
                    text = f.read().replace("/usr/bin/dmkagent", _labmod.DMK)
                with open(os.path.join(d, name), "w") as f:
                    f.write(text)
                units.append(os.path.join(d, name))
            self.assertEqual(sorted(os.path.basename(u) for u in units),
                             ["dmkagent-hook.service", "dmkagent-run.service", "dmkagent-run.timer",
                              "dmkagent-watch.service"])
            p = subprocess.run([sa, "verify", "--man=no", *units], capture_output=True, text=True,
                               cwd=d, timeout=120)
            self.assertEqual((p.returncode, p.stdout + p.stderr), (0, ""))
            for u in units:
                if u.endswith(".service"):
                    with open(u) as f:
                        text = f.read()
                    for need in ("NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectSystem=strict",
                                 "User=dmkagent", "LoadCredential=", "LimitCORE=0"):
                        self.assertIn(need, text, f"{u}: {need}")
            with open(os.path.join(d, "dmkagent-run.timer")) as f:
                self.assertIn("RandomizedDelaySec=", f.read())
        finally:
            shutil.rmtree(d, ignore_errors=True)


def vault_call(lab, method, path, token, body=None):
    ctx = ssl.create_default_context(cafile=lab.ca)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(lab.vault.ready["address"] + "/v1/" + path, data=data,
                                 method=method, headers={"X-Vault-Token": token,
                                                         "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=20, context=ctx) as r:
        t = r.read().decode()
        return json.loads(t) if t else {}


class LeastPrivilege(unittest.TestCase):
    def setUp(self):
        self.lab = Lab(nodes=3).__enter__()
        self.lab.put_dmk_password()

    def tearDown(self):
        self.lab.__exit__(None, None, None)

    def test_vault_policy(self):
        lab = self.lab
        with open(os.path.join(EX, "vault", "dmkagent-policy.hcl")) as f:
            vault_call(lab, "PUT", "sys/policies/acl/dmkagent", lab.root_token, {"policy": f.read()})
        tok = vault_call(lab, "POST", "auth/token/create", lab.root_token,
                         {"policies": ["dmkagent"], "ttl": "1h"})["auth"]["client_token"]
        _labmod.write_secret(os.path.join(lab.dir, "vault-root-token"), tok)
        edit(lab.config, lambda t: re.sub(r"(dmk_password = [^\n]*\n)",
                                          r"\1backup_every = 1s\nrestore_test_every = 1s\n", t, count=1))
        for args in (("run",), ("rotate",), ("backup", "--restore-test"), ("run",)):
            rc, out, err = lab.agent(*args)
            self.assertEqual(rc, 0, f"{args}: {out} {err}")
        self.assertEqual(converged(lab), [])
        # and nothing else
        for method, path in (("GET", "secret/data/sql/ag2/other/dmk"), ("GET", "secret/metadata/"),
                             ("DELETE", f"secret/data/{rotlib.PATH}"),
                             ("POST", f"secret/destroy/{rotlib.PATH}"),
                             ("GET", "sys/policies/acl/dmkagent")):
            with self.assertRaises(urllib.error.HTTPError, msg=f"{method} {path}") as cm:
                vault_call(lab, method, path, tok, {"versions": [1]} if method == "POST" else None)
            self.assertEqual(cm.exception.code, 403, f"{method} {path}")

    def test_sql_login_script(self):
        lab = self.lab
        with open(os.path.join(EX, "sql", "dmkagent-login.sql")) as f:
            script = f.read()
        pw = _labmod.strong_password()
        self.assertNotIn("$(DMKAGENT_PASSWORD)", script.split("CREATE LOGIN")[0],
                         "the password variable outside CREATE LOGIN")
        script = (script.replace("$(DMKAGENT_PASSWORD)", pw.replace("'", "''"))
                  .replace("$(DMKAGENT_SID)", "0x1D2F3A4B5C6D7E8F9A0B1C2D3E4F5A6B")
                  .replace("$(DB)", "CM_P01"))
        batches = [b.strip() for b in re.split(r"^GO\s*$", script, flags=re.M)]
        batches = ["\n".join(x for x in b.splitlines() if not x.startswith(":") and
                             not x.startswith("--")).strip() for b in batches]
        batches = [b for b in batches if b]
        split = next(i for i, b in enumerate(batches) if b.startswith("USE [CM_P01]"))
        def sqlcmd(node, bs):
            """The batches on one connection, one after the other, as sqlcmd runs them."""
            with lab.connect(node=node) as c:
                cur = c.cursor()
                for b in bs:
                    cur.execute(b)
        for node in range(lab.nodes):
            sqlcmd(node, batches[:split])
        sqlcmd(0, batches[split:])
        pwfile = _labmod.write_secret(os.path.join(lab.dir, "dmkagent-login-password"), pw)
        edit(lab.config, lambda t: t.replace("login = sa\n", "login = dmkagent\n")
             .replace(f"login_password = file:{os.path.join(lab.dir, 'sa-password')}",
                      f"login_password = file:{pwfile}"))
        for args in (("run",), ("rotate",), ("backup", "--restore-test"), ("verify",)):
            rc, out, err = lab.agent(*args)
            self.assertEqual(rc, 0, f"{args}: {out} {err}")
        import pytds
        with pytds.connect("localhost", port=lab.sql_ready["listener_port"], user="dmkagent",
                           password=pw, cafile=lab.ca, validate_host=True, enc_login_only=False,
                           autocommit=True, login_timeout=15, timeout=30) as c:
            cur = c.cursor()
            cur.execute("SELECT IS_SRVROLEMEMBER('sysadmin')")
            self.assertEqual(cur.fetchall()[0][0], 0, "the script made dmkagent sysadmin")
        self.assertEqual(converged(lab), [])


class Kubernetes(unittest.TestCase):
    def test_fleet_indexed_job(self):
        try:
            import yaml
        except ImportError:
            self.skipTest("python3-yaml missing")
        with open(os.path.join(EX, "kubernetes", "cronjob-fleet.yaml")) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        cj = next(d for d in docs if d["kind"] == "CronJob")
        job = cj["spec"]["jobTemplate"]["spec"]
        self.assertEqual(job["completionMode"], "Indexed")
        c = job["template"]["spec"]["containers"][0]
        args = c["args"]
        shard = args[args.index("--shard") + 1]
        self.assertTrue(shard.startswith("auto/"), shard)
        n = int(shard.split("/")[1])
        self.assertEqual(job["completions"], n)
        self.assertEqual(job["parallelism"], n)
        self.assertEqual(job["template"]["spec"]["restartPolicy"], "Never")
        env = {e["name"]: e for e in c.get("env", [])}
        self.assertIn("job-completion-index", env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"])
        state = next(m for m in c["volumeMounts"] if m["name"] == "state")
        self.assertIn("$(JOB_COMPLETION_INDEX)", state["subPathExpr"], "one state directory per index")
        # dmkagent takes these arguments: an index beyond N is refused naming it (exit 2) before
        # anything is touched; the shipped example configuration loads
        cfg = os.path.join(EX, "dmkagent.conf")
        argv = [_labmod.DMK] + [a if a != "/etc/dmkagent/dmkagent.conf" else cfg for a in args]
        for idx, want in ((str(n), "JOB_COMPLETION_INDEX='%d' is not an index" % n), (None, "is not set")):
            e = dict(os.environ)
            e.pop("JOB_COMPLETION_INDEX", None)
            if idx is not None:
                e["JOB_COMPLETION_INDEX"] = idx
            p = subprocess.run(argv, capture_output=True, text=True, env=e, timeout=60)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn(want, p.stderr)


if __name__ == "__main__":
    if not os.path.exists(_labmod.DMK):
        print("dmkagent not built")
        sys.exit(77)
    if not rotlib.have_pytds():
        print("python3-tds missing: skipping")
        sys.exit(77)
    unittest.main(verbosity=2)
