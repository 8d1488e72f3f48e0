#!/usr/bin/python3
"""dmkagent rotate and recover end to end against sqlsim + vaultsim: the happy
path, --dry-run, resume after a crash, --if-due, two agents at once, recover
of a DMK whose password nobody knows, rotate --regenerate, the backup taken
first (and not twice on a rerun), --output json, and the lease renewed
through a run longer than lease_ttl."""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rotlib  # noqa: E402
from rotlib import Lab, converged, store_versions, store_current, opens  # noqa: E402
import lab as _labmod  # noqa: E402
from tests.sim.common.harness import wait_for  # noqa: E402


def set_db_option(lab, line):
    with open(lab.config) as f:
        text = f.read()
    text = re.sub(r"(dmk_password = [^\n]*\n)", r"\1" + line + "\n", text, count=1)
    with open(lab.config, "w") as f:
        f.write(text)


DMK_ESCROW = f"{rotlib.PATH}-backup-dmk"
LEASE_PATH = "dmkagent/leases/AG1/CM-P01"


def vault_or_none(lab, path):
    import urllib.error
    try:
        return rotlib.vault_get(lab, path)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def markers(lab, path, version):
    md = vault_or_none(lab, f"{rotlib.KV}/metadata/{path}")
    if md is None:
        return {}
    cm = md["data"].get("custom_metadata") or {}
    p = f"v{version}."
    return {k[len(p):]: v for k, v in cm.items() if k.startswith(p)}


def escrow_versions(lab, path=DMK_ESCROW):
    """The live version numbers of an escrowed backup, oldest first."""
    md = vault_or_none(lab, f"{rotlib.KV}/metadata/{path}")
    if md is None:
        return []
    return sorted(int(k) for k, v in md["data"]["versions"].items()
                  if not v.get("deletion_time") and not v.get("destroyed"))


def backup_passwords(lab):
    out = []
    for kind in ("cert", "dmk"):
        d = vault_or_none(lab, f"{rotlib.KV}/data/{rotlib.PATH}-backup-password-{kind}")
        if d is not None:
            out.append(d["data"]["data"]["password"])
    return out


def audit_records(lab):
    return [json.loads(x) for x in lab.audit_text().splitlines() if x.strip()]


def lease_record(lab):
    """(version, record) of the rotation lease of AG1/CM_P01, or (None, None)."""
    d = vault_or_none(lab, f"{rotlib.KV}/data/{LEASE_PATH}")
    if d is None:
        return None, None
    return d["data"]["metadata"]["version"], json.loads(d["data"]["data"]["lease"])


def other_host_config(lab):
    """The same lab seen from another host: its own state directory (so its
    own local lock), the same store (so the same lease)."""
    other = os.path.join(lab.dir, "other.conf")
    with open(lab.config) as f:
        text = f.read()
    text = text.replace(lab.state_dir, lab.state_dir + "-other")
    with open(os.open(other, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(text)
    return other


class Rotate(unittest.TestCase):
    def setUp(self):
        self.lab = Lab(nodes=3).__enter__()
        self.lab.put_dmk_password()
        rc, out, err = self.lab.agent("register")
        self.assertEqual(rc, 0, out + err)

    def tearDown(self):
        self.lab.__exit__(None, None, None)

    def test_happy_path_and_dry_run(self):
        lab = self.lab
        before = store_versions(lab)
        rc, out, err = lab.agent("rotate", "--dry-run")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("would rotate", out)
        self.assertEqual(store_versions(lab), before, "dry run changed the store")
        rc, out, err = lab.agent("rotate")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("rotated: store version 2 is current, version 1 retired", out)
        vs = store_versions(lab)
        self.assertEqual([(n, s) for n, s, _ in vs], [(1, "retired"), (2, "current")])
        self.assertFalse(opens(lab, lab.dmk_password), "the old password still opens the DMK")
        self.assertTrue(opens(lab, vs[-1][2]))
        for n in range(3):
            self.assertEqual(len(lab.credentials(n)), 1, f"node {n}: old credential kept")
        self.assertEqual(converged(lab), [])
        for pw in (lab.dmk_password, vs[-1][2]):
            self.assertNotIn(pw, out + err)
            self.assertNotIn(pw, lab.audit_text())
        audit = lab.audit_text()
        for action in ("rotate-lease", "rotate-prove", "rotate-pending", "rotate-add",
                       "rotate-register", "rotate-verify", "rotate-mark-current",
                       "rotate-mark-retiring", "rotate-drop", "rotate-drop-credential",
                       "rotate-mark-retired", "rotate-release"):
            self.assertIn(f'"{action}"', audit)
        rc, out, err = lab.agent("rotate")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("version 3 is current, version 2 retired", out)

    @rotlib.needs_failpoints
    def test_resume_after_crash(self):
        lab = self.lab
        rc, out, err = lab.agent("rotate", env={"DMKAGENT_FAILPOINT": "rotate:after-add"})
        self.assertEqual(rc, -9)
        vs = store_versions(lab)
        self.assertEqual(vs[-1][1], "pending")
        self.assertTrue(opens(lab, vs[-1][2]) and opens(lab, lab.dmk_password))
        # verify still passes on the old password while a rotation is pending
        self.assertEqual(lab.agent("verify")[0], 0, lab.last)
        rc, out, err = lab.agent("rotate", "--dry-run")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("would resume rotate", out)
        self.assertIn("at step: register it on every replica", out)
        rc, out, err = lab.agent("rotate")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("resuming rotate", out)
        self.assertIn("finished: store version 2 is current, version 1 retired", out)
        self.assertEqual(escrow_versions(lab), [1], "the rerun took a second backup")
        self.assertEqual(converged(lab), [])

    @rotlib.needs_failpoints
    def test_resume_at_drop(self):
        lab = self.lab
        rc, out, err = lab.agent("rotate", env={"DMKAGENT_FAILPOINT": "rotate:after-drop-primary"})
        self.assertEqual(rc, -9)
        rc, out, err = lab.agent("rotate", "--dry-run")
        self.assertIn("at step: drop the old password", out)
        rc, out, err = lab.agent("rotate")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(converged(lab), [])

    def test_unmarked_pending_is_adopted(self):
        """A pending write whose markers never landed (the store failed between
        the data write and the metadata write): the newest version is unmarked
        and SQL Server does not know it.  rotate continues it, no manual step."""
        lab = self.lab
        import json, ssl, urllib.request
        ctx = ssl.create_default_context(cafile=lab.ca)
        body = json.dumps({"options": {"cas": 1}, "data": {"password": "Zz9!" + "q" * 20}}).encode()
        req = urllib.request.Request(lab.vault.ready["address"] + f"/v1/secret/data/{rotlib.PATH}",
                                     data=body, method="POST",
                                     headers={"X-Vault-Token": lab.root_token,
                                              "Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=20, context=ctx).read()
        self.assertEqual(store_versions(lab)[-1][1], "")
        rc, out, err = lab.agent("rotate")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("continuing 2 as a pending rotation", out)
        self.assertEqual([(n, s) for n, s, _ in store_versions(lab)], [(1, "retired"), (2, "current")])
        self.assertEqual(converged(lab), [])

    def test_if_due(self):
        lab = self.lab
        rc, out, err = lab.agent("rotate", "--if-due")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("not due (no rotate_every)", out)
        set_db_option(lab, "rotate_every = 1h")
        rc, out, err = lab.agent("rotate", "--if-due")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("not due until", out)
        self.assertEqual(len(store_versions(lab)), 1)
        set_db_option(lab, "rotate_every = 1s")
        with open(lab.config) as f:
            text = f.read()
        with open(lab.config, "w") as f:
            f.write(text.replace("rotate_every = 1h\n", ""))
        time.sleep(2)
        rc, out, err = lab.agent("rotate", "--if-due")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("rotated", out)
        self.assertEqual(converged(lab), [])

    def _two_at_once(self, config2):
        lab = self.lab
        lab.control("/faults", {"latency_ms": 40})
        e = dict(os.environ)
        p1 = subprocess.Popen([_labmod.DMK, "-c", lab.config, "rotate"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=e)
        # the second starts once the first holds the lease (and, before it,
        # the state directory's lock)
        wait_for("the first agent to take the lease",
                 lambda: p1.poll() is not None or
                 (lease_record(lab)[1] or {}).get("state") == "held", timeout=60)
        p2 = subprocess.Popen([_labmod.DMK, "-c", config2, "rotate"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=e)
        o1, e1 = p1.communicate(timeout=120)
        o2, e2 = p2.communicate(timeout=120)
        lab.control("/faults/clear", {})
        lab.control("/faults", {"latency_ms": 0})
        codes = sorted([p1.returncode, p2.returncode])
        self.assertEqual(codes, [0, 4], f"{p1.returncode} {o1} {e1} / {p2.returncode} {o2} {e2}")
        vs = store_versions(lab)
        self.assertEqual([(n, s) for n, s, _ in vs], [(1, "retired"), (2, "current")],
                         "two rotations interleaved")
        self.assertEqual(converged(lab), [])

    def test_two_agents_same_state_dir(self):
        self._two_at_once(self.lab.config)

    def test_two_agents_two_hosts_lease(self):
        self._two_at_once(other_host_config(self.lab))

    # ---- the backup taken first ----
    def test_backup_first_and_json_report(self):
        lab = self.lab
        rc, out, err = lab.agent("--output", "json", "rotate")
        self.assertEqual(rc, 0, out + err)
        doc = json.loads(out)          # one JSON document, nothing else on stdout
        self.assertEqual((doc["command"], doc["complete"], doc["exit"], doc["backup"]),
                         ("rotate", True, 0, True))
        [ag] = doc["ags"]
        self.assertEqual(ag["name"], "AG1")
        [db] = ag["databases"]
        self.assertEqual((db["database"], db["mode"], db["outcome"], db["old_version"],
                          db["new_version"], db["error"], db["stopped_at"]),
                         ("CM_P01", "rotate", "rotated", "1", "2", None, None))
        self.assertEqual(db["steps"], ["lease", "prove", "backup", "pending", "add", "register",
                                       "verify", "mark-current", "verify-mark", "drop-primary",
                                       "drop-replicas", "retire", "release"])
        self.assertEqual(db["backup"]["outcome"], "escrowed")
        self.assertEqual(db["backup"]["version"], "1")
        self.assertTrue(db["backup"]["reference"].endswith("-backup-dmk#password"), db)
        # The DMK and the certificate are escrowed, the DMK backup tagged with
        # the rotation, and the new version names its backup.
        self.assertEqual(escrow_versions(lab), [1])
        bm = markers(lab, DMK_ESCROW, 1)
        self.assertEqual(bm.get("dmkagent-kind"), "dmk-backup")
        self.assertEqual(bm.get("dmkagent-before"), "1")
        pm = markers(lab, rotlib.PATH, 2)
        self.assertEqual(bm.get("dmkagent-rotation"), pm.get("dmkagent-rotation"))
        self.assertEqual(bm.get("dmkagent-rotation"), db["rotation"])
        self.assertEqual(pm.get("dmkagent-backup"), "1")
        md = rotlib.vault_get(lab, f"{rotlib.KV}/metadata/sql/ag1/cm_p01?list=true")
        self.assertTrue(any(k.startswith("dmk-backup-cert-") for k in md["data"]["keys"]), md)
        recs = [r for r in audit_records(lab) if r["action"] == "rotate-backup"]
        self.assertEqual([r["outcome"] for r in recs], ["escrowed"])
        vs = store_versions(lab)
        for pw in [lab.dmk_password, vs[-1][2]] + backup_passwords(lab):
            self.assertNotIn(pw, out + err)
            self.assertNotIn(pw, lab.audit_text())
        self.assertEqual(len(backup_passwords(lab)), 2)
        self.assertEqual(converged(lab), [])

    def test_backup_failure_refuses_unless_no_backup(self):
        lab = self.lab
        weak = "zqxjkvbwpq"     # SQL Server's policy refuses it: BACKUP MASTER KEY fails
        body = json.dumps({"data": {"password": weak}}).encode()
        import ssl
        import urllib.request
        req = urllib.request.Request(lab.vault.ready["address"] + "/v1/secret/data/sql/ag1/cm_p01/bk",
                                     data=body, method="POST",
                                     headers={"X-Vault-Token": lab.root_token,
                                              "Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=20,
                               context=ssl.create_default_context(cafile=lab.ca)).read()
        set_db_option(lab, "dmk_backup_password = hcv:sql/ag1/cm_p01/bk#password")
        before = store_versions(lab)
        creds = [sorted(lab.credentials(n)) for n in range(3)]
        rc, out, err = lab.agent("--output", "json", "rotate")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("refused", err)
        self.assertIn("--no-backup", err)
        db = json.loads(out)["ags"][0]["databases"][0]
        self.assertEqual(db["outcome"], "stopped")
        self.assertEqual(db["backup"]["outcome"], "failed")
        self.assertIn("--no-backup", db["error"])
        self.assertNotIn("pending", db["steps"])
        self.assertFalse(json.loads(out)["complete"])
        # Nothing changed: the store, the DMK, the credentials.
        self.assertEqual(store_versions(lab), before)
        self.assertTrue(opens(lab, lab.dmk_password))
        self.assertEqual([sorted(lab.credentials(n)) for n in range(3)], creds)
        self.assertEqual(lab.agent("rotate", "--regenerate", "--no-backup")[0], 2, lab.last)
        self.assertEqual(store_versions(lab), before)
        rc, out, err = lab.agent("rotate", "--no-backup")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("rotated: store version 2 is current", out)
        self.assertIn("no backup taken first (--no-backup)", err)
        recs = [r for r in audit_records(lab) if r["action"] == "rotate-backup"]
        self.assertEqual([r["outcome"] for r in recs], ["failed", "skipped"])
        self.assertNotIn(weak, out + err + lab.audit_text())
        self.assertEqual(converged(lab), [])

    @rotlib.needs_failpoints
    def test_backup_not_taken_twice_after_a_stop(self):
        lab = self.lab
        before = [(n, s) for n, s, _ in store_versions(lab)]
        rc, out, err = lab.agent("rotate", env={"DMKAGENT_FAILPOINT": "rotate:after-backup"})
        self.assertEqual(rc, -9, out + err)
        self.assertEqual([(n, s) for n, s, _ in store_versions(lab)], before,
                         "the store changed before the pending write")
        self.assertEqual(escrow_versions(lab), [1])
        rid = markers(lab, DMK_ESCROW, 1).get("dmkagent-rotation")
        self.assertTrue(rid)
        rc, out, err = lab.agent("--output", "json", "rotate")
        self.assertEqual(rc, 0, out + err)
        self.assertIn(f"a backup for rotation {rid} is already escrowed", err)
        db = json.loads(out)["ags"][0]["databases"][0]
        self.assertEqual((db["rotation"], db["backup"]["outcome"], db["backup"]["version"]),
                         (rid, "already escrowed", "1"))
        self.assertEqual(escrow_versions(lab), [1], "a second backup for the same rotation")
        self.assertEqual(markers(lab, rotlib.PATH, 2).get("dmkagent-rotation"), rid)
        self.assertEqual(converged(lab), [])
        # The next rotation is a new one: its own backup; a stop after its
        # pending write does not make the rerun take another.
        rc, out, err = lab.agent("rotate", env={"DMKAGENT_FAILPOINT": "rotate:after-pending"})
        self.assertEqual(rc, -9, out + err)
        self.assertEqual(escrow_versions(lab), [1, 2])
        rid2 = markers(lab, DMK_ESCROW, 2).get("dmkagent-rotation")
        self.assertNotEqual(rid2, rid)
        self.assertEqual(markers(lab, DMK_ESCROW, 2).get("dmkagent-before"), "2")
        rc, out, err = lab.agent("rotate")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(escrow_versions(lab), [1, 2])
        self.assertEqual(markers(lab, rotlib.PATH, 3).get("dmkagent-rotation"), rid2)
        self.assertEqual(converged(lab), [])

    # ---- the lease through a long run ----
    def _slow_run(self, ttl="3s", latency=150):
        lab = self.lab
        lab.write_config(agent_extra=f"lease_ttl = {ttl}\n")
        lab.control("/faults", {"latency_ms": latency})
        return subprocess.Popen([_labmod.DMK, "-c", lab.config, "--output", "json", "rotate"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def test_lease_renewed_through_a_long_run(self):
        lab = self.lab
        t0 = time.time()
        # 300 ms a round trip: a rotation over kept sessions needs about 28
        # round trips (8 s or more), so the run outlasts lease_ttl (4 s) by
        # far, while no step (at most 5 round trips, 1.5 s) comes near the
        # renewal's margin (renewed after a third of lease_ttl; the record's
        # expiry has one-second resolution), even under the sanitizers
        p1 = self._slow_run(ttl="4s", latency=300)
        seen, second = [], None
        while p1.poll() is None:
            v, rec = lease_record(lab)
            if rec is not None and rec["state"] == "held" and (v, rec) not in seen:
                seen.append((v, rec))
            if second is None and time.time() - t0 > 5.0 and p1.poll() is None:
                # past lease_ttl: without renewal the lease would have expired
                second = subprocess.run([_labmod.DMK, "-c", other_host_config(lab), "rotate"],
                                        capture_output=True, text=True, timeout=60)
                second_during = p1.poll() is None
            time.sleep(0.1)
        o1, e1 = p1.communicate(timeout=60)
        elapsed = time.time() - t0
        self.assertEqual(p1.returncode, 0, o1 + e1)
        self.assertGreater(elapsed, 5.5, "the run did not outlast lease_ttl: no test")
        self.assertIsNotNone(second, "the second agent never ran")
        self.assertEqual(second.returncode, 4, second.stdout + second.stderr)
        self.assertIn("another rotation is under way", second.stderr)
        self.assertTrue(second_during, "the first run ended before the second agent was done")
        runs = {rec["run"] for _, rec in seen}
        self.assertEqual(len(runs), 1, seen)
        expiries = sorted({rec["expires"] for _, rec in seen})
        self.assertGreaterEqual(len(expiries), 2, f"the lease's expiry never moved: {seen}")
        self.assertGreater(len({v for v, _ in seen}), 1, seen)
        db = json.loads(o1)["ags"][0]["databases"][0]
        self.assertGreaterEqual(db["lease_renewals"], 1)
        self.assertEqual(db["outcome"], "rotated")
        recs = [r for r in audit_records(lab) if r["action"] == "rotate-lease"]
        self.assertIn("renewed", [r["outcome"] for r in recs])
        self.assertEqual([(n, s) for n, s, _ in store_versions(lab)], [(1, "retired"), (2, "current")])
        v, rec = lease_record(lab)
        self.assertEqual(rec["state"], "released")
        lab.control("/faults", {"latency_ms": 0})
        self.assertEqual(converged(lab), [])

    def test_lease_taken_over_stops_the_run(self):
        lab = self.lab
        import ssl
        import urllib.error
        import urllib.request
        p1 = self._slow_run()
        first = None
        taken = False
        while p1.poll() is None and not taken:
            v, rec = lease_record(lab)
            if rec is not None and rec["state"] == "held":
                if first is None:
                    first = (v, rec["expires"])
                elif rec["expires"] != first[1]:
                    # renewed once: now another agent takes it over, as one
                    # would after the expiry of a lease nobody renewed
                    foreign = dict(rec, owner="someone", host="elsewhere", pid=1,
                                   run="f" * 32, expires=time.strftime(
                                       "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 4)))
                    body = json.dumps({"options": {"cas": v},
                                       "data": {"lease": json.dumps(foreign)}}).encode()
                    req = urllib.request.Request(
                        lab.vault.ready["address"] + f"/v1/secret/data/{LEASE_PATH}", data=body,
                        method="POST", headers={"X-Vault-Token": lab.root_token,
                                                "Content-Type": "application/json"})
                    try:
                        urllib.request.urlopen(
                            req, timeout=20, context=ssl.create_default_context(cafile=lab.ca)).read()
                        taken = True
                    except urllib.error.HTTPError:
                        pass    # the agent renewed in between: try again
            time.sleep(0.05)
        self.assertTrue(taken, "the run ended before the lease could be taken over")
        o1, e1 = p1.communicate(timeout=60)
        self.assertEqual(p1.returncode, 4, o1 + e1)
        self.assertIn("was taken over", e1)
        db = json.loads(o1)["ags"][0]["databases"][0]
        self.assertEqual(db["outcome"], "locked")
        self.assertIn("taken over", db["error"])
        self.assertNotIn("release", db["steps"])
        # Stopped at once: after the lease was found lost, no change, no release
        # over the other agent's record.
        recs = audit_records(lab)
        i = next(i for i, r in enumerate(recs) if r["action"] == "rotate-lease" and
                 r["outcome"] == "lost")
        self.assertEqual([r["action"] for r in recs[i + 1:]], ["rotate-stopped", "run-end"])
        self.assertEqual(lease_record(lab)[1]["run"], "f" * 32)
        lab.control("/faults", {"latency_ms": 0})
        self.assertEqual(rotlib.invariant(lab, [0, 1, 2]), [])
        rc, out, err = lab.agent("--wait", "20", "rotate")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(converged(lab), [])

    def test_regenerate(self):
        lab = self.lab
        key_before = lab.control("/status")["databases"]["CM_P01"]["dmk_key_guid"]
        store_before = store_versions(lab)
        rc, out, err = lab.agent("rotate", "--regenerate")
        if rc != 0:
            # Until backups exist, --regenerate must refuse and change nothing.
            self.assertIn("needs a fresh escrowed backup", out + err)
            self.assertEqual(store_versions(lab), store_before)
            self.assertEqual(lab.control("/status")["databases"]["CM_P01"]["dmk_key_guid"], key_before)
            self.assertEqual(converged(lab), [])
            return
        self.assertNotEqual(lab.control("/status")["databases"]["CM_P01"]["dmk_key_guid"], key_before)
        self.assertEqual(converged(lab), [])


class Recover(unittest.TestCase):
    def setUp(self):
        self.lab = Lab(nodes=3)
        self.lab.dmk_password = None      # nobody knows the DMK's password
        self.lab.__enter__()

    def tearDown(self):
        self.lab.__exit__(None, None, None)

    def test_recover_fails_over_to_the_node_whose_smk_opens(self):
        lab = self.lab
        lab.failover(1)                      # node 2's SMK cannot open the DMK
        self.assertEqual([r[0] for r in lab.check_query() if r[0]], [])
        # no secret at the reference: recover only on the word that the
        # password is really unknown (--password-unknown), never on a typo
        rc, out, err = lab.agent("recover", "--dry-run", "--password-unknown")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(store_versions(lab), [])
        rc, out, err = lab.agent("recover", "--password-unknown")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("failing over to", out)
        num, pw = store_current(lab)
        self.assertIsNotNone(pw)
        self.assertNotIn(pw, out + err + lab.audit_text())
        self.assertEqual(converged(lab), [])
        rc, out, err = lab.agent("recover")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("nothing to recover", out)
        rc, out, err = lab.agent("rotate")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(converged(lab), [])

    @rotlib.needs_failpoints
    def test_recover_backs_up_first_once(self):
        lab = self.lab
        lab.failover(1)                      # node 2's SMK cannot open the DMK
        rc, out, err = lab.agent("recover", "--password-unknown",
                                 env={"DMKAGENT_FAILPOINT": "recover:after-backup"})
        self.assertEqual(rc, -9, out + err)
        self.assertEqual(store_versions(lab), [], "recover changed the store before its backup")
        self.assertEqual(escrow_versions(lab), [1])
        bm = markers(lab, DMK_ESCROW, 1)
        self.assertEqual((bm.get("dmkagent-kind"), bm.get("dmkagent-before")), ("dmk-backup", "0"))
        rc, out, err = lab.agent("--output", "json", "recover", "--password-unknown")
        self.assertEqual(rc, 0, out + err)
        doc = json.loads(out)
        self.assertEqual((doc["command"], doc["complete"]), ("recover", True))
        [db] = doc["ags"][0]["databases"]
        self.assertEqual((db["mode"], db["outcome"], db["old_version"], db["new_version"]),
                         ("recover", "recovered", None, "1"))
        self.assertEqual(db["backup"]["outcome"], "already escrowed")
        self.assertEqual(escrow_versions(lab), [1], "recover took a second backup")
        self.assertEqual(markers(lab, rotlib.PATH, 1).get("dmkagent-rotation"),
                         bm.get("dmkagent-rotation"))
        recs = [r["outcome"] for r in audit_records(lab) if r["action"] == "recover-backup"]
        self.assertEqual(recs, ["escrowed", "already escrowed"])
        num, pw = store_current(lab)
        for s in [pw] + backup_passwords(lab):
            self.assertNotIn(s, out + err + lab.audit_text())
        self.assertEqual(converged(lab), [])

    def test_no_node_opens(self):
        lab = self.lab
        lab.query("USE CM_P01; ALTER MASTER KEY DROP ENCRYPTION BY SERVICE MASTER KEY")
        st = lab.control("/status")["databases"]["CM_P01"]
        rc, out, err = lab.agent("recover", "--password-unknown")
        self.assertNotEqual(rc, 0, out + err)
        self.assertIn("runbook", out)
        rc, out, err = lab.agent("--output", "json", "recover", "--password-unknown")
        self.assertNotEqual(rc, 0, out + err)
        self.assertIn("runbook", err)
        db = json.loads(out)["ags"][0]["databases"][0]
        self.assertEqual(db["outcome"], "unrecoverable")
        self.assertEqual(escrow_versions(lab), [], "a backup of a DMK nothing opens")
        st2 = lab.control("/status")["databases"]["CM_P01"]
        self.assertEqual(st["dmk_key_guid"], st2["dmk_key_guid"])
        self.assertEqual(st["certificates"], st2["certificates"])


if __name__ == "__main__":
    if not rotlib.have_pytds():
        print("python3-tds missing: skipped")
        sys.exit(77)
    unittest.main(verbosity=2)
