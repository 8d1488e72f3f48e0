#!/usr/bin/python3
"""dmkagent rotate and recover end to end against sqlsim + vaultsim: the happy
path, --dry-run, resume after a crash, --if-due, two agents at once, recover
of a DMK whose password nobody knows, and rotate --regenerate."""
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


def set_db_option(lab, line):
    with open(lab.config) as f:
        text = f.read()
    text = re.sub(r"(dmk_password = [^\n]*\n)", r"\1" + line + "\n", text, count=1)
    with open(lab.config, "w") as f:
        f.write(text)


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
        self.assertEqual(converged(lab), [])

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
        time.sleep(0.3)
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
        lab = self.lab
        other = os.path.join(lab.dir, "other.conf")
        with open(lab.config) as f:
            text = f.read()
        text = text.replace(lab.state_dir, lab.state_dir + "-other")
        with open(os.open(other, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(text)
        self._two_at_once(other)

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
        rc, out, err = lab.agent("recover", "--dry-run")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(store_versions(lab), [])
        rc, out, err = lab.agent("recover")
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

    def test_no_node_opens(self):
        lab = self.lab
        lab.query("USE CM_P01; ALTER MASTER KEY DROP ENCRYPTION BY SERVICE MASTER KEY")
        st = lab.control("/status")["databases"]["CM_P01"]
        rc, out, err = lab.agent("recover")
        self.assertNotEqual(rc, 0, out + err)
        self.assertIn("runbook", out)
        st2 = lab.control("/status")["databases"]["CM_P01"]
        self.assertEqual(st["dmk_key_guid"], st2["dmk_key_guid"])
        self.assertEqual(st["certificates"], st2["certificates"])


if __name__ == "__main__":
    if not rotlib.have_pytds():
        print("python3-tds missing: skipped")
        sys.exit(77)
    unittest.main(verbosity=2)
