#!/usr/bin/python3
"""The rotation lease against vaultsim + sqlsim: an agent with our host name in
another PID namespace is not taken for dead (its lease is not taken over);
a lease overwritten in the middle of a run is noticed before the run's next
change, not a third of lease_ttl later."""
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "rotate"))
import rotlib  # noqa: E402
from rotlib import Lab, converged, store_versions  # noqa: E402
import lab as _labmod  # noqa: E402
from test_rotate import (LEASE_PATH, audit_records, lease_record,  # noqa: E402
                         other_host_config)


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def read1(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def write_lease(lab, rec):
    body = json.dumps({"data": {"lease": json.dumps(rec)}}).encode()
    req = urllib.request.Request(lab.vault.ready["address"] + f"/v1/secret/data/{LEASE_PATH}",
                                 data=body, method="POST",
                                 headers={"X-Vault-Token": lab.root_token,
                                          "Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=20,
                           context=ssl.create_default_context(cafile=lab.ca)).read()


def free_pid(lo=20000):
    """A pid with no process in our namespace."""
    for p in range(lo, lo + 5000):
        try:
            os.kill(p, 0)
        except ProcessLookupError:
            return p
        except PermissionError:
            pass
    raise unittest.SkipTest("no free pid found")


def proc_state(pid):
    s = read1(f"/proc/{pid}/stat")
    return s[s.rindex(")") + 2] if s else None


def credentials(lab):
    return [len(lab.credentials(n)) for n in range(3)]


class Lease(unittest.TestCase):
    def setUp(self):
        self.lab = Lab(nodes=3).__enter__()
        self.lab.put_dmk_password()
        rc, out, err = self.lab.agent("register")
        self.assertEqual(rc, 0, out + err)

    def tearDown(self):
        self.lab.__exit__(None, None, None)

    def test_same_host_other_pid_namespace_is_not_taken_over(self):
        """A live holder with our host name, machine and boot, but a pid
        namespace of its own: its pid means nothing here.  (The old agent
        took the lease over because kill(pid, 0) failed.)"""
        lab = self.lab
        before = [(n, s) for n, s, _ in store_versions(lab)]
        machine = read1("/etc/machine-id") or read1("/var/lib/dbus/machine-id")
        boot = read1("/proc/sys/kernel/random/boot_id")
        pidns = os.stat("/proc/self/ns/pid").st_ino
        now = time.time()
        rec = {"state": "held", "owner": "dmk", "host": socket.gethostname(),
               "pid": free_pid(), "run": "e" * 32, "command": "rotate",
               "taken": rfc3339(now), "expires": rfc3339(now + 600), "pidns": pidns + 7,
               "start": 4711, "nonce": "0" * 32, "seq": 0, "base": ""}
        if machine:
            rec["machine_id"] = machine
        if boot:
            rec["boot_id"] = boot
        write_lease(lab, rec)
        rc, out, err = lab.agent("rotate")
        self.assertEqual(rc, 4, out + err)
        self.assertIn("another rotation is under way", err)
        self.assertIn("PID namespace", err)
        self.assertEqual([(n, s) for n, s, _ in store_versions(lab)], before)
        self.assertEqual(lease_record(lab)[1]["run"], "e" * 32)
        # An older agent's record (no identity): the same, wait for its expiry.
        rec = {k: v for k, v in rec.items() if k in ("state", "owner", "host", "pid", "run",
                                                      "command", "taken", "expires")}
        write_lease(lab, rec)
        rc, out, err = lab.agent("rotate")
        self.assertEqual(rc, 4, out + err)
        self.assertEqual(lease_record(lab)[1]["run"], "e" * 32)
        # A garbled record: an error naming it, nothing changed.
        write_lease(lab, dict(rec, pid="seven"))
        rc, out, err = lab.agent("rotate")
        self.assertNotIn(rc, (0, 4), out + err)
        self.assertIn(LEASE_PATH, err)
        self.assertIn("not a lease record", err)
        self.assertEqual([(n, s) for n, s, _ in store_versions(lab)], before)
        # Released: the rotation goes on.
        write_lease(lab, dict(rec, state="released"))
        rc, out, err = lab.agent("rotate")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(converged(lab), [])

    def test_two_agents_two_pid_namespaces(self):
        """The same, for real: the first agent runs in a PID namespace of its
        own (unshare), the second on the host with the same host name."""
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            self.skipTest("needs root and unshare")
        probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                               capture_output=True)
        if probe.returncode != 0:
            self.skipTest("unshare --pid refused here")
        lab = self.lab
        # pids N.. inside the namespace, free outside it: spin the namespace's
        # counter up to a window of pids nobody has here.
        lo = free_pid(3000)
        while any(os.path.exists(f"/proc/{p}") for p in range(lo, lo + 40)):
            lo = free_pid(lo + 40)
        lab.write_config(agent_extra="lease_ttl = 60s\n")
        other = other_host_config(lab)
        lab.control("/faults", {"latency_ms": 150})
        script = (f"i=2; while [ $i -lt {lo + 5} ]; do /bin/true; i=$((i+1)); done; "
                  f"{_labmod.DMK} -c {lab.config} --output json rotate")
        p1 = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "/bin/sh", "-c",
                               script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0 = time.time()
        rec = None
        while time.time() - t0 < 60 and p1.poll() is None:
            v, rec = lease_record(lab)
            if rec is not None and rec["state"] == "held":
                break
            time.sleep(0.05)
        self.assertIsNotNone(rec, "the first agent never took the lease")
        if os.path.exists(f"/proc/{rec['pid']}"):
            p1.wait(timeout=120)
            self.skipTest(f"pid {rec['pid']} exists outside the namespace too: no test")
        second = subprocess.run([_labmod.DMK, "-c", other, "rotate"], capture_output=True,
                                text=True, timeout=120)
        during = p1.poll() is None
        o1, e1 = p1.communicate(timeout=120)
        self.assertEqual(second.returncode, 4, second.stdout + second.stderr)
        self.assertIn("another rotation is under way", second.stderr)
        self.assertTrue(during, "the first run ended before the second was refused: no test")
        self.assertEqual(p1.returncode, 0, o1 + e1)
        db = json.loads(o1)["ags"][0]["databases"][0]
        self.assertEqual(db["outcome"], "rotated")
        lab.control("/faults", {"latency_ms": 0})
        self.assertEqual([(n, s) for n, s, _ in store_versions(lab)],
                         [(1, "retired"), (2, "current")])
        self.assertEqual(converged(lab), [])

    def test_overwritten_lease_noticed_before_next_change(self):
        """lease_ttl far longer than the run (no renewal falls due): a lease
        overwritten after ADD ENCRYPTION stops the run before it registers
        the new password anywhere."""
        lab = self.lab
        lab.write_config(agent_extra="lease_ttl = 10m\n")
        env = dict(os.environ, DMKAGENT_FAILPOINT_STOP="rotate:after-add")
        env.pop("DMKAGENT_CONFIG", None)
        p1 = subprocess.Popen([_labmod.DMK, "-c", lab.config, "--output", "json", "rotate"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        t0 = time.time()
        while proc_state(p1.pid) not in ("T", "t", None) and time.time() - t0 < 60:
            time.sleep(0.05)
        if proc_state(p1.pid) not in ("T", "t"):
            p1.kill()
            o, e = p1.communicate()
            self.fail(f"never stopped at rotate:after-add (failpoints built in?): {e}")
        creds = credentials(lab)
        v, rec = lease_record(lab)
        self.assertEqual(rec["state"], "held")
        now = time.time()
        foreign = dict(rec, owner="someone", host="elsewhere", pid=1, run="f" * 32,
                       machine_id="f" * 32, nonce="f" * 32, seq=0,
                       taken=rfc3339(now), expires=rfc3339(now + 600))
        write_lease(lab, foreign)
        os.kill(p1.pid, signal.SIGCONT)
        o1, e1 = p1.communicate(timeout=120)
        self.assertEqual(p1.returncode, 4, o1 + e1)
        self.assertIn("was taken over", e1)
        db = json.loads(o1)["ags"][0]["databases"][0]
        self.assertEqual(db["outcome"], "locked")
        self.assertEqual(db["steps"][-1], "add", db["steps"])
        # no change after the loss: nothing registered, only the stop recorded
        self.assertEqual(credentials(lab), creds)
        recs = audit_records(lab)
        i = next(i for i, r in enumerate(recs) if r["action"] == "rotate-lease" and
                 r["outcome"] == "lost")
        self.assertEqual([r["action"] for r in recs[i + 1:]], ["rotate-stopped", "run-end"])
        self.assertEqual(lease_record(lab)[1]["run"], "f" * 32)
        # Nothing lost: the store's passwords open the DMK on every replica.
        self.assertEqual(rotlib.invariant(lab, [0, 1, 2]), [])
        # The other run goes away; a rerun finishes the rotation.
        write_lease(lab, dict(foreign, state="released"))
        rc, out, err = lab.agent("rotate")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(converged(lab), [])


if __name__ == "__main__":
    if not rotlib.have_pytds():
        print("python3-tds missing: skipped")
        sys.exit(77)
    unittest.main(verbosity=2)
