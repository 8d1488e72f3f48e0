#!/usr/bin/python3
"""dmkagent run end to end against sqlsim + vaultsim: it converges from each
starting state (nothing registered, a rotation interrupted, a version written
outside dmkagent, a rotation due, a replica whose credential was dropped,
backups due) and a second run changes nothing; -q, --dry-run,
--random-delay; deploy hooks (their environment holds no secret, their
failure undoes nothing, the timeout); metrics parsed by an independent
parser (python3-prometheus-client)."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "rotate"))
import rotlib  # noqa: E402
from rotlib import Lab, converged, store_versions, opens  # noqa: E402
import lab as _labmod  # noqa: E402
from tests.sim.common.harness import wait_for  # noqa: E402


def catches(pid, sig):
    """pid has a handler for sig (/proc/PID/status SigCgt)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    return False

DMK_ESCROW = f"{rotlib.PATH}-backup-dmk"


def edit_config(lab, db_lines="", agent_lines=""):
    """Add lines to [database AG1/CM_P01] and [agent] (replacing earlier
    values of the same keys)."""
    with open(lab.config) as f:
        text = f.read()
    for line in (db_lines + agent_lines).splitlines():
        key = line.split("=")[0].strip()
        text = re.sub(rf"^{re.escape(key)} = [^\n]*\n", "", text, flags=re.M)
    if db_lines:
        text = re.sub(r"(dmk_password = [^\n]*\n)", lambda m: m.group(1) + db_lines, text, count=1)
    if agent_lines:
        text = text.replace("[agent]\n", "[agent]\n" + agent_lines, 1)
    with open(lab.config, "w") as f:
        f.write(text)


def all_credentials(lab):
    return [sorted(lab.credentials(n)) for n in range(lab.nodes)]


def escrow_meta(lab, path=DMK_ESCROW):
    """{version: {marker: value}} of the live versions of an escrow."""
    import urllib.error
    try:
        md = rotlib.vault_get(lab, f"{rotlib.KV}/metadata/{path}")["data"]
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return {}
        raise
    cm = md.get("custom_metadata") or {}
    out = {}
    for k, v in md["versions"].items():
        if v.get("deletion_time") or v.get("destroyed"):
            continue
        p = f"v{k}."
        out[int(k)] = {x[len(p):]: y for x, y in cm.items() if x.startswith(p)}
    return out


def run_json(lab, *args, env=None):
    rc, out, err = lab.agent("--output", "json", "run", *args, env=env)
    try:
        doc = json.loads(out)
    except ValueError:
        raise AssertionError(f"run --output json: not JSON (exit {rc}): {out!r} {err!r}")
    return rc, doc, err


def vault_write(lab, password, cas=None):
    """A new version written straight into Vault (KV v2), as an operator's
    tooling would: no dmkagent markers."""
    import ssl
    import urllib.request
    ctx = ssl.create_default_context(cafile=lab.ca)
    body = {"data": {"password": password}}
    if cas is not None:
        body["options"] = {"cas": cas}
    req = urllib.request.Request(lab.vault.ready["address"] + f"/v1/{rotlib.KV}/data/{rotlib.PATH}",
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"X-Vault-Token": lab.root_token,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=20, context=ctx) as r:
        return json.loads(r.read().decode())["data"]["version"]


def write_hook(lab, body, mode=0o700):
    path = os.path.join(lab.dir, "hook.sh")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, mode)
    return path


class Run(unittest.TestCase):
    def setUp(self):
        self.lab = Lab(nodes=3).__enter__()
        self.lab.put_dmk_password()

    def tearDown(self):
        self.lab.__exit__(None, None, None)

    def assertSecondRunChangesNothing(self):
        lab = self.lab
        before = (store_versions(lab), all_credentials(lab), escrow_meta(lab))
        rc, doc, err = run_json(lab)
        self.assertEqual(rc, 0, (doc, err))
        self.assertEqual(doc["changes"], 0, doc)
        self.assertEqual((store_versions(lab), all_credentials(lab), escrow_meta(lab)), before,
                         "a second run changed the store or SQL Server")
        rc, out, err = lab.agent("-q", "run")
        self.assertEqual((rc, out, err), (0, "", ""), "-q printed when nothing needed attention")

    def assertNoSecrets(self, text):
        vs = store_versions(self.lab)
        for pw in [self.lab.dmk_password, self.lab.sa_password, self.lab.root_token] + \
                [p for _, _, p in vs]:
            self.assertNotIn(pw, text)

    # ---- starting states ----
    def test_nothing_registered(self):
        lab = self.lab
        rc, out, err = lab.agent("verify")
        self.assertEqual(rc, 3, "verify passed before anything was registered?")
        rc, out, err = lab.agent("run", "--dry-run")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(all_credentials(lab), [[], [], []], "--dry-run registered something")
        rc, out, err = lab.agent("run")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("run: 3 change(s); every replica passes", out)
        self.assertNoSecrets(out + err + lab.audit_text())
        # the audit records say why the run happened
        self.assertIn("schedule (run)", lab.audit_triggers())
        self.assertEqual(converged(lab), [])
        self.assertSecondRunChangesNothing()

    def test_rotation_interrupted(self):
        lab = self.lab
        self.assertEqual(lab.agent("register")[0], 0, lab.last)
        rc, out, err = lab.agent("rotate", env={"DMKAGENT_FAILPOINT": "rotate:after-add"})
        self.assertEqual(rc, -9)
        self.assertEqual(store_versions(lab)[-1][1], "pending")
        rc, doc, err = run_json(lab)
        self.assertEqual(rc, 0, (doc, err))
        fin = doc["ags"][0]["steps"]["finish"]
        self.assertEqual([d["outcome"] for d in fin], ["finished"], fin)
        self.assertTrue(fin[0]["resumed"])
        self.assertEqual(doc["ags"][0]["steps"]["rotate"], [], "a due-less run started a rotation")
        self.assertEqual([(n, s) for n, s, _ in store_versions(lab)], [(1, "retired"), (2, "current")])
        self.assertFalse(opens(lab, lab.dmk_password), "the old password still opens the DMK")
        self.assertEqual(converged(lab), [])
        self.assertSecondRunChangesNothing()

    def test_rotation_interrupted_at_drop(self):
        lab = self.lab
        self.assertEqual(lab.agent("register")[0], 0, lab.last)
        rc, out, err = lab.agent("rotate", env={"DMKAGENT_FAILPOINT": "rotate:after-drop-primary"})
        self.assertEqual(rc, -9)
        rc, out, err = lab.agent("run")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual([(n, s) for n, s, _ in store_versions(lab)], [(1, "retired"), (2, "current")])
        for n in range(3):
            self.assertEqual(len(lab.credentials(n)), 1, f"node {n}: the old credential is left")
        self.assertEqual(converged(lab), [])
        self.assertSecondRunChangesNothing()

    def test_version_written_outside_dmkagent(self):
        """An operator writes a new password into Vault: run applies it through
        the rotation state machine (adopt), and never generates one itself."""
        lab = self.lab
        self.assertEqual(lab.agent("register")[0], 0, lab.last)
        new = _labmod.strong_password()
        vault_write(lab, new)
        rc, doc, err = run_json(lab)
        self.assertEqual(rc, 0, (doc, err))
        vs = store_versions(lab)
        self.assertEqual([(n, s) for n, s, _ in vs], [(1, "retired"), (2, "current")])
        self.assertEqual(vs[-1][2], new, "run wrote a password of its own")
        self.assertTrue(opens(lab, new))
        self.assertFalse(opens(lab, lab.dmk_password))
        self.assertEqual(converged(lab), [])
        self.assertSecondRunChangesNothing()

    def test_rotation_due(self):
        lab = self.lab
        edit_config(lab, db_lines="rotate_every = 1h\n")
        rc, doc, err = run_json(lab)
        self.assertEqual(rc, 0, (doc, err))
        self.assertEqual(doc["ags"][0]["steps"]["rotate"], [], "rotated before it was due")
        self.assertEqual(len(store_versions(lab)), 1)
        edit_config(lab, db_lines="rotate_every = 1s\n")
        time.sleep(2)
        rc, doc, err = run_json(lab)
        self.assertEqual(rc, 0, (doc, err))
        self.assertEqual([d["outcome"] for d in doc["ags"][0]["steps"]["rotate"]], ["rotated"])
        self.assertEqual([(n, s) for n, s, _ in store_versions(lab)], [(1, "retired"), (2, "current")])
        self.assertEqual(converged(lab), [])
        edit_config(lab, db_lines="rotate_every = 1d\n")
        self.assertSecondRunChangesNothing()

    def test_replica_lost_its_credential(self):
        """A rebuilt node: its credential is gone.  run registers it again."""
        lab = self.lab
        self.assertEqual(lab.agent("run")[0], 0, lab.last)
        lit = lab.dmk_password.replace("'", "''")
        lab.query("EXEC sp_control_dbmasterkey_password @db_name = N'CM_P01', "
                  f"@password = N'{lit}', @action = N'drop'", node=2)
        self.assertEqual(lab.credentials(2), [])
        self.assertEqual(lab.agent("verify")[0], 3, lab.last)
        rc, doc, err = run_json(lab)
        self.assertEqual(rc, 0, (doc, err))
        self.assertEqual(doc["changes"], 1, doc)
        self.assertEqual(len(lab.credentials(2)), 1)
        self.assertEqual(converged(lab), [])
        self.assertSecondRunChangesNothing()

    def test_replica_down_is_incomplete_then_converges(self):
        lab = self.lab
        lab.control("/nodes/2/down", {})
        rc, out, err = lab.agent("-q", "run")
        self.assertEqual(rc, 3, out + err)
        self.assertIn("SQLNODE3", out + err, "-q hid a run that needs attention")
        lab.control("/nodes/2/up", {})
        rc, out, err = lab.agent("run")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(converged(lab), [])
        self.assertSecondRunChangesNothing()

    def test_backups_due(self):
        lab = self.lab
        edit_config(lab, db_lines="backup_every = 1h\nrestore_test_every = 1s\n")
        rc, doc, err = run_json(lab)
        self.assertEqual(rc, 0, (doc, err))
        bk = doc["ags"][0]["steps"]["backup"]
        self.assertEqual([(b["database"], b["restore_test"]) for b in bk], [("CM_P01", True)])
        meta = escrow_meta(lab)
        self.assertEqual(list(meta), [1])
        self.assertIn("dmkagent-restore-tested", meta[1], meta)
        # a restore test due again, the backup not: a new backup, tested
        time.sleep(1.5)
        edit_config(lab, db_lines="restore_test_every = 1d\n")
        rc, doc, err = run_json(lab)
        self.assertEqual(doc["ags"][0]["steps"]["backup"], [], "a backup that was not due")
        edit_config(lab, db_lines="backup_every = 1s\n")
        time.sleep(1.5)
        rc, doc, err = run_json(lab)
        self.assertEqual(rc, 0, (doc, err))
        self.assertEqual([b["restore_test"] for b in doc["ags"][0]["steps"]["backup"]], [False])
        self.assertEqual(sorted(escrow_meta(lab)), [1, 2])
        edit_config(lab, db_lines="backup_every = 1d\n")
        self.assertSecondRunChangesNothing()

    # ---- options ----
    def test_random_delay(self):
        lab = self.lab
        t0 = time.monotonic()
        rc, out, err = lab.agent("-q", "run", "--random-delay", "2")
        self.assertEqual(rc, 0, out + err)
        self.assertLess(time.monotonic() - t0, 30)
        rc, out, err = lab.agent("run", "--random-delay", "soon")
        self.assertEqual(rc, 2, out + err)
        self.assertIn("--random-delay", err)
        # SIGTERM during the wait: nothing done, at once, exit 143 (128 + SIGTERM) as
        # for any interrupted run
        audit_before = lab.audit_text()
        p = subprocess.Popen([_labmod.DMK, "-c", lab.config, "run", "--random-delay", "86400"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # in its wait: the handler is installed just before it (cmd_run.c run_check)
        wait_for("the agent to catch SIGTERM", lambda: catches(p.pid, signal.SIGTERM), timeout=20)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20)
        self.assertLess(time.monotonic() - t0, 5)
        self.assertEqual(p.returncode, 143, out + err)
        self.assertIn("before anything was done", err)
        self.assertEqual(lab.audit_text(), audit_before, "an interrupted wait wrote run records")

    def test_help_and_usage(self):
        rc, out, err = self.lab.agent("run", "--help")
        self.assertEqual(rc, 0)
        self.assertIn("usage: dmkagent [global options] run [--ag AG] [--database DB] [--dry-run] "
                      "[--random-delay SECONDS]", out)
        rc, out, err = self.lab.agent("run", "--frob")
        self.assertEqual(rc, 2, out + err)
        rc, out, err = self.lab.agent("run", "extra")
        self.assertEqual(rc, 2, out + err)

    # ---- deploy hooks ----
    def test_hook_environment_holds_no_secret(self):
        lab = self.lab
        envdir = os.path.join(lab.dir, "hookenv")
        os.mkdir(envdir)
        hook = write_hook(lab, f'env -0 > "{envdir}/$$.env"\n')
        edit_config(lab, agent_lines=f"hook_command = {hook}\n")
        canary = "hvs.CANARY-" + _labmod.strong_password()
        rc, out, err = lab.agent("run", env={"VAULT_TOKEN": canary, "AZURE_CLIENT_SECRET": canary,
                                             "DMKAGENT_CONFIG": lab.config})
        self.assertEqual(rc, 0, out + err)
        envs = []
        for name in sorted(os.listdir(envdir)):
            with open(os.path.join(envdir, name), "rb") as f:
                raw = f.read()
            for pw in [lab.dmk_password, lab.sa_password, lab.root_token, canary]:
                self.assertNotIn(pw.encode(), raw, "a secret in the hook's environment")
            envs.append(dict(x.split("=", 1) for x in raw.decode().split("\0") if x))
        self.assertEqual(len(envs), 1, envs)   # one database registered
        e = envs[0]
        self.assertEqual(set(e) - {"PWD", "SHLVL", "_"},
                         {"PATH", "LC_ALL", "DMKAGENT_EVENT", "DMKAGENT_AG", "DMKAGENT_DATABASE",
                          "DMKAGENT_VERSION", "DMKAGENT_OUTCOME", "DMKAGENT_COMMAND",
                          "DMKAGENT_RUN_ID"})
        self.assertEqual((e["DMKAGENT_EVENT"], e["DMKAGENT_AG"], e["DMKAGENT_DATABASE"],
                          e["DMKAGENT_VERSION"], e["DMKAGENT_OUTCOME"], e["DMKAGENT_COMMAND"]),
                         ("registered", "AG1", "CM_P01", "1", "ok", "run"))
        self.assertIn('"hook"', lab.audit_text())
        # a rotation fires "rotated" with the new version
        for f in os.listdir(envdir):
            os.unlink(os.path.join(envdir, f))
        rc, out, err = lab.agent("rotate")
        self.assertEqual(rc, 0, out + err)
        evs = []
        for name in os.listdir(envdir):
            with open(os.path.join(envdir, name), "rb") as f:
                raw = f.read()
            for _, _, pw in store_versions(lab):
                self.assertNotIn(pw.encode(), raw)
            evs.append(dict(x.split("=", 1) for x in raw.decode().split("\0") if x))
        self.assertEqual([(x["DMKAGENT_EVENT"], x["DMKAGENT_VERSION"], x["DMKAGENT_COMMAND"])
                          for x in evs], [("rotated", "2", "rotate")])

    def test_hook_failure_undoes_nothing(self):
        lab = self.lab
        hook = write_hook(lab, "exit 7\n")
        edit_config(lab, agent_lines=f"hook_command = {hook}\n")
        rc, out, err = lab.agent("run")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("exited 7", err)
        self.assertEqual(converged(lab), [])
        recs = [json.loads(x) for x in lab.audit_text().splitlines() if '"hook"' in x]
        self.assertTrue(recs and "failed" in json.dumps(recs), recs)

    def test_hook_timeout_and_checks(self):
        lab = self.lab
        hook = write_hook(lab, "sleep 60\n")
        edit_config(lab, agent_lines=f"hook_command = {hook}\nhook_timeout = 1s\n")
        t0 = time.monotonic()
        rc, out, err = lab.agent("run")
        self.assertEqual(rc, 0, out + err)
        self.assertLess(time.monotonic() - t0, 40)
        self.assertIn("still running after 1s", err)
        self.assertEqual(converged(lab), [])
        # group-writable: refused, not run, audited
        os.chmod(hook, 0o770)
        lab.query("EXEC sp_control_dbmasterkey_password @db_name = N'CM_P01', @password = N'"
                  + lab.dmk_password.replace("'", "''") + "', @action = N'drop'", node=1)
        rc, out, err = lab.agent("run")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("writable by group or others", err)
        self.assertIn("refused", lab.audit_text())
        rc, out, err = lab.agent("config", "check")
        self.assertEqual(rc, 2, out + err)
        self.assertIn("writable by group or others", err)
        # a relative path is a configuration error
        edit_config(lab, agent_lines="hook_command = hook.sh\n")
        rc, out, err = lab.agent("run")
        self.assertEqual(rc, 2, out + err)
        self.assertIn("hook_command", err)

    # ---- metrics ----
    def test_metrics_parse(self):
        try:
            from prometheus_client.parser import text_string_to_metric_families
        except ImportError:
            raise unittest.SkipTest("python3-prometheus-client is not installed")
        lab = self.lab
        prom = os.path.join(lab.dir, "textfile", "dmkagent.prom")
        os.mkdir(os.path.dirname(prom))
        edit_config(lab, db_lines="backup_every = 1d\n",
                    agent_lines=f"metrics_file = {prom}\n")
        t0 = time.time()
        rc, out, err = lab.agent("run")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(lab.agent("run")[0], 0, lab.last)
        lab.control("/nodes/1/down", {})
        self.assertEqual(lab.agent("run")[0], 3, lab.last)
        lab.control("/nodes/1/up", {})
        with open(prom) as f:
            text = f.read()
        self.assertEqual(os.stat(prom).st_mode & 0o777, 0o644)
        self.assertEqual([x for x in os.listdir(os.path.dirname(prom))], ["dmkagent.prom"],
                         "a temporary file was left")
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        # the parser drops _total from a counter family's name
        self.assertEqual(fams["dmkagent_runs"].type, "counter")

        def val(name, **labels):
            for s in fams[name].samples:
                if all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
            raise AssertionError(f"no sample {name} {labels} in:\n{text}")
        db = {"ag": "AG1", "database": "CM_P01"}
        self.assertEqual(val("dmkagent_runs", exit="0"), 2)
        self.assertEqual(val("dmkagent_runs", exit="3"), 1)
        self.assertEqual(val("dmkagent_last_run_exit_code"), 3)
        self.assertEqual(val("dmkagent_replicas_expected", **db), 3)
        self.assertEqual(val("dmkagent_replicas_registered", **db), 2)
        self.assertEqual(val("dmkagent_rotation_unfinished", **db), 0)
        self.assertGreaterEqual(val("dmkagent_last_success_timestamp_seconds", **db), int(t0))
        self.assertLess(val("dmkagent_password_age_seconds", **db), 600)
        self.assertLess(val("dmkagent_backup_age_seconds", **db), 600)
        self.assertNotIn("dmkagent_restore_test_age_seconds{", text, "a made-up restore test age")
        for name in fams:
            self.assertTrue(name.startswith("dmkagent_"), name)
        # strict line check on top: HELP and TYPE before each family's samples
        seen = set()
        for line in text.splitlines():
            m = re.match(r"# (HELP|TYPE) (\w+) ", line)
            if m:
                seen.add(m.group(2))
                continue
            name = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? -?[0-9.e+]+$", line)
            self.assertIsNotNone(name, f"bad sample line {line!r}")
            self.assertIn(name.group(1), seen, f"sample before its TYPE: {line!r}")
        self.assertNoSecrets(text)
        # a rotation interrupted, and run cannot finish it (a replica down): it shows
        rc, _, _ = lab.agent("rotate", env={"DMKAGENT_FAILPOINT": "rotate:after-pending"})
        self.assertEqual(rc, -9)
        lab.control("/nodes/2/down", {})
        self.assertEqual(lab.agent("run")[0], 3, lab.last)
        lab.control("/nodes/2/up", {})
        with open(prom) as f:
            text = f.read()
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        self.assertEqual(val("dmkagent_rotation_unfinished", **db), 1)
        self.assertEqual(val("dmkagent_runs", exit="3"), 2)
        rc, out, err = lab.agent("run", "--dry-run")
        self.assertEqual(rc, 0, out + err)
        with open(prom) as f:
            self.assertEqual(f.read(), text, "a dry run wrote the metrics")


if __name__ == "__main__":
    if not os.path.exists(_labmod.DMK):
        print("dmkagent not built")
        sys.exit(77)
    if not rotlib.have_pytds():
        print("python3-tds missing: skipping")
        sys.exit(77)
    unittest.main(verbosity=2)
