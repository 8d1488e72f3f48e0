#!/usr/bin/python3
"""dmkagent rotate with the DMK password in Azure Key Vault (azuresim) and
the AG in sqlsim: the happy path, resume after SIGKILL at the failpoints
rotate:after-pending and rotate:after-register, and rotate --if-due doing
nothing when not due.  The invariants are test_rotate.py's: the store's
current version opens the DMK, nothing left pending or retiring, every node
decrypts ConfigMgr's rows as primary, verify passes, the audit chain
verifies, no password in output or audit.  Exit 77 when it cannot run here
(python3-tds missing; a build without -Dfailpoints=true skips the resume
cases only)."""
import json
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rotlib  # noqa: E402  (also runs a private copy of the binary)
from rotlib import opens, decrypts_everywhere  # noqa: E402
import lab as _labmod  # noqa: E402
from tests.sim.common.harness import failpoints_expected, run_unittests  # noqa: E402
from azlab import AzureLab  # noqa: E402

NODES = (0, 1, 2)


from rotlib import have_failpoints  # noqa: E402


def set_db_option(lab, line):
    with open(lab.config) as f:
        text = f.read()
    text = re.sub(r"(dmk_password = [^\n]*\n)", r"\1" + line + "\n", text, count=1)
    with open(lab.config, "w") as f:
        f.write(text)


def converged(lab):
    """rotlib.converged, with the store read from Key Vault: revocation
    checked too (rotlib.revoked)."""
    bad = []
    vs = lab.store_versions()
    states = [(v[:8], s) for v, s, _ in vs]
    if vs and vs[-1][1] == "pending":
        bad.append(f"a version is still pending: {states}")
    if any(s == "retiring" for _, s, _ in vs):
        bad.append(f"a version is still retiring: {states}")
    vid, pw = lab.store_current()
    if pw is None or not opens(lab, pw):
        bad.append(f"the store's current version {vid} does not open the DMK ({states})")
    else:
        # the old passwords and credentials were dropped (rotlib.revoked)
        bad += rotlib.revoked(lab, NODES, versions=vs, current=(vid, pw))
    bad += decrypts_everywhere(lab, list(NODES))
    rc, out, err = lab.agent("verify")
    if rc != 0:
        bad.append(f"verify exit {rc}: {out} {err}")
    rc, out, err = lab.agent("audit", "verify", lab.audit_log)
    if rc != 0:
        bad.append(f"audit verify exit {rc}: {err}")
    return bad


def invariant(lab):
    """Nothing lost after a crash: a live password in the store opens the DMK,
    and every node decrypts as primary."""
    bad = []
    vs = lab.store_versions()
    if not any(opens(lab, p) for _, s, p in vs if s in ("", "current", "pending", "retiring")):
        bad.append(f"no store password opens the DMK ({[(v[:8], s) for v, s, _ in vs]})")
    return bad + decrypts_everywhere(lab, list(NODES))


class RotateAzure(unittest.TestCase):
    def setUp(self):
        self.lab = AzureLab(nodes=3).__enter__()
        try:
            self.lab.put_dmk_password()
            rc, out, err = self.lab.agent("register")
            self.assertEqual(rc, 0, out + err)
            vs = self.lab.store_versions()
            self.assertEqual(len(vs), 1, vs)
            self.assertEqual(vs[0][2], self.lab.dmk_password)
        except BaseException:
            self.lab.__exit__(None, None, None)
            raise

    def tearDown(self):
        if hasattr(self, "_outcome") and not self._ok():
            sys.stderr.write("--- azuresim log (tail) ---\n" + self.lab.azure.log_text()[-3000:] + "\n")
        self.lab.__exit__(None, None, None)

    def _ok(self):
        res = getattr(self._outcome, "result", None)
        errs = getattr(self._outcome, "errors", None) or []
        if res is not None:
            return not any(t is self for t, _ in res.errors + res.failures)
        return not any(e for _, e in errs)

    def assert_no_secret(self, *texts):
        pws = [self.lab.dmk_password] + [p for _, _, p in self.lab.store_versions()]
        blob = "\n".join(texts) + self.lab.audit_text()
        for pw in pws:
            self.assertNotIn(pw, blob, "a password appears in output or audit")

    def test_happy_path(self):
        lab = self.lab
        old = lab.store_versions()
        rc, out, err = lab.agent("rotate", "--dry-run")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("would rotate", out)
        self.assertEqual(lab.store_versions(), old, "dry run changed the store")
        rc, out, err = lab.agent("rotate")
        self.assertEqual(rc, 0, out + err)
        vs = lab.store_versions()
        self.assertEqual([s for _, s, _ in vs], ["retired", "current"], vs and [(v, s) for v, s, _ in vs])
        self.assertEqual(vs[0][0], old[0][0])
        self.assertIn(f"rotated: store version {vs[1][0]} is current, version {vs[0][0]} retired", out)
        self.assertNotEqual(vs[1][2], lab.dmk_password)
        self.assertFalse(opens(lab, lab.dmk_password), "the old password still opens the DMK")
        self.assertTrue(opens(lab, vs[1][2]))
        for n in NODES:
            self.assertEqual(len(lab.credentials(n)), 1, f"node {n}: old credential kept")
        self.assertEqual(converged(lab), [])
        audit = lab.audit_text()
        for action in ("rotate-lease", "rotate-prove", "rotate-pending", "rotate-add",
                       "rotate-register", "rotate-verify", "rotate-mark-current",
                       "rotate-mark-retiring", "rotate-drop", "rotate-drop-credential",
                       "rotate-mark-retired", "rotate-release"):
            self.assertIn(f'"{action}"', audit)
        self.assert_no_secret(out, err)
        # the lease is a secret of its own beside the password, released
        secrets = lab.control("/secrets", sim=lab.azure)
        self.assertIn("dmkagent-lease", json.dumps(secrets).lower())
        # a second rotation: the retired version stays retired, the current one is replaced
        rc, out, err = lab.agent("rotate")
        self.assertEqual(rc, 0, out + err)
        vs2 = lab.store_versions()
        self.assertEqual([s for _, s, _ in vs2], ["retired", "retired", "current"])
        self.assertIn(f"version {vs2[2][0]} is current, version {vs[1][0]} retired", out)
        self.assertEqual(converged(lab), [])

    def _crash_and_resume(self, failpoint, step_text):
        if not have_failpoints():
            if failpoints_expected():
                self.fail(f"{_labmod.DMK} has no failpoints, though this build is meant to")
            self.skipTest("dmkagent built without -Dfailpoints=true")
        lab = self.lab
        rc, out, err = lab.agent("rotate", env={"DMKAGENT_FAILPOINT": failpoint})
        self.assertEqual(rc, -9, f"failpoint {failpoint} did not kill the agent: {out} {err}")
        vs = lab.store_versions()
        self.assertEqual(len(vs), 2, [(v, s) for v, s, _ in vs])
        self.assertEqual(vs[-1][1], "pending", [(v, s) for v, s, _ in vs])
        self.assertEqual(vs[0][2], lab.dmk_password)
        self.assertEqual(invariant(lab), [])
        self.assertTrue(opens(lab, lab.dmk_password), "the old password was dropped too early")
        # verify still passes on the old password while a rotation is pending
        rc, out, err = lab.agent("verify")
        self.assertEqual(rc, 0, out + err)
        rc, out, err = lab.agent("rotate", "--dry-run")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("would resume rotate", out)
        self.assertIn(f"at step: {step_text}", out)
        rc, out, err = lab.agent("rotate")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("resuming rotate", out)
        self.assertIn(f"finished: store version {vs[1][0]} is current, version {vs[0][0]} retired", out)
        self.assertEqual([(v, s) for v, s, _ in lab.store_versions()],
                         [(vs[0][0], "retired"), (vs[1][0], "current")])
        self.assertFalse(opens(lab, lab.dmk_password))
        self.assertEqual(converged(lab), [])
        self.assert_no_secret(out, err)
        # converged means converged: the next run starts a new rotation, it does not resume
        rc, out, err = lab.agent("rotate", "--dry-run")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("would rotate", out)

    def test_resume_after_pending(self):
        # killed after the pending version is in the store, before SQL Server knows it
        self._crash_and_resume("rotate:after-pending", "put the new password on the DMK (primary)")

    def test_resume_after_register(self):
        # killed after ADD ENCRYPTION and registration on every replica, before verify/marks
        self._crash_and_resume("rotate:after-register", "register it on every replica")

    def test_if_due_noop(self):
        lab = self.lab
        before = lab.store_versions()
        rc, out, err = lab.agent("rotate", "--if-due")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("not due (no rotate_every)", out)
        set_db_option(lab, "rotate_every = 1h")
        rc, out, err = lab.agent("rotate", "--if-due")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("not due until", out)
        self.assertIn(f"(version {before[0][0]})", out)
        self.assertEqual(lab.store_versions(), before, "--if-due changed the store when not due")
        self.assertTrue(opens(lab, lab.dmk_password))
        self.assertEqual(converged(lab), [])


if __name__ == "__main__":
    if not rotlib.have_pytds():
        print("python3-tds missing: skipped")
        sys.exit(77)
    if not os.access(_labmod.DMK, os.X_OK):
        print(f"{_labmod.DMK} not built: skipped")
        sys.exit(77)
    run_unittests()
