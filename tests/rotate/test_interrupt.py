#!/usr/bin/python3
"""Ctrl-C and SIGTERM in the middle of a rotation: the run stops at its next
step boundary (never between two statements that belong together), says where
it stopped, writes its run-end audit record, releases the store lease and
exits 143 (130 for SIGINT); at that moment nothing is lost, and a rerun
converges.  A second signal ends the process at once."""
import json
import os
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rotlib  # noqa: E402
from rotlib import Lab, converged, invariant, store_versions, vault_get  # noqa: E402
import lab as _labmod  # noqa: E402
from tests.sim.common.harness import run_unittests  # noqa: E402

LEASE = "secret/data/dmkagent/leases/AG1/CM-P01"


from tests.sim.common.harness import wait_for as _wait_for  # noqa: E402

def wait_for(what, cond, timeout=90):
    return _wait_for(what, cond, timeout)


def signal_taken(pid, sig):
    """sig is no longer pending for pid: the kernel delivered it (the agent's
    handler has run, or is running with sig blocked, so that another one is
    a second signal, not merged into the first)."""
    bit = 1 << (sig - 1)
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & bit:
                return False
    return True


class Interrupt(unittest.TestCase):
    def start(self, lab, *args):
        env = dict(os.environ)
        env.pop("DMKAGENT_CONFIG", None)
        return subprocess.Popen([_labmod.DMK, "-c", lab.config, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)

    def interrupted_rotation(self, sig, code):
        with Lab(nodes=3) as lab:
            lab.put_dmk_password()
            self.assertEqual(lab.agent("register")[0], 0, lab.last)
            lab.control("/faults", {"latency_ms": 120})   # each SQL request slower: time to signal
            p = self.start(lab, "rotate", "--no-backup")
            # the pending version in the store: step 3 is done, step 4 is next
            wait_for("the pending version",
                     lambda: any(s == "pending" for _, s, _ in store_versions(lab)))
            p.send_signal(sig)
            out, err = p.communicate(timeout=120)
            lab.control("/faults", {"latency_ms": 0})
            what = f"exit {p.returncode}\n{out}{err}"
            self.assertEqual(p.returncode, code, what)
            name = "SIGTERM" if sig == signal.SIGTERM else "SIGINT"
            self.assertIn(f"interrupted by {name}", err, what)
            self.assertIn("a rerun resumes there", err, what)
            # nothing lost at the stop
            self.assertEqual(invariant(lab, (0, 1, 2)), [])
            # the run-end record was written: the log verifies, no run without end
            rc, vout, verr = lab.agent("audit", "verify", lab.audit_log)
            self.assertEqual(rc, 0, vout + verr)
            self.assertNotIn("interrupted run", vout + verr)
            # the store lease was released, not left to expire
            lease = vault_get(lab, LEASE)["data"]["data"]
            self.assertIn("released", json.dumps(lease), lease)
            # a rerun finishes the rotation
            rc, rout, rerr = lab.agent("rotate", "--no-backup")
            self.assertEqual(rc, 0, rout + rerr)
            self.assertEqual(converged(lab), [])

    def test_sigterm_stops_at_a_step_boundary(self):
        self.interrupted_rotation(signal.SIGTERM, 143)

    def test_sigint_stops_at_a_step_boundary(self):
        self.interrupted_rotation(signal.SIGINT, 130)

    def test_second_signal_ends_at_once(self):
        with Lab(nodes=3) as lab:
            lab.put_dmk_password()
            self.assertEqual(lab.agent("register")[0], 0, lab.last)
            lab.control("/faults", {"latency_ms": 400})
            p = self.start(lab, "rotate", "--no-backup")
            wait_for("the pending version",
                     lambda: any(s == "pending" for _, s, _ in store_versions(lab)))
            p.send_signal(signal.SIGTERM)
            wait_for("the first SIGTERM to be delivered",
                     lambda: signal_taken(p.pid, signal.SIGTERM), timeout=10)
            t0 = time.time()
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=60)
            lab.control("/faults", {"latency_ms": 0})
            self.assertEqual(p.returncode, 143, out + err)
            self.assertLess(time.time() - t0, 5, "the second signal did not end the run at once")
            self.assertIn("stopping now", err)
            # even so nothing is lost, and a rerun converges
            self.assertEqual(invariant(lab, (0, 1, 2)), [])
            rc, rout, rerr = lab.agent("rotate", "--no-backup")
            self.assertEqual(rc, 0, rout + rerr)
            self.assertEqual(converged(lab), [])


if __name__ == "__main__":
    if not rotlib.have_pytds():
        print("python3-tds missing: skipped")
        sys.exit(77)
    run_unittests()
