#!/usr/bin/python3
"""A fleet: six availability groups (one sqlsim process each, 2 nodes, one
shared vaultsim), split over three shards run at the same time (`run --shard
I/3`, each its own state directory and audit log, as pods would have): every
AG handled by exactly one shard and the shards together cover all six; two
processes given the same shard at the same time never both act on one AG
(the AG's store lease: one acts, the other reports locked, or finds nothing
left to do); `--jobs 3` leaves the same state as `--jobs 1`, with the report
in config order; --shard and --jobs refuse bad values (exit 2); SIGINT stops
every job; the AG lease holds in Azure Key Vault too (no check-and-set)."""
import hashlib
import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from fleetlab import FleetLab  # noqa: E402
from tests.sim.common.harness import run_unittests  # noqa: E402

NAGS = 6
DB = "CM_P01"


def shard_of(name, n):
    """dmkagent(1), FLEETS: the first 8 bytes of SHA-256(name), big-endian, mod N."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % n


class Fleet(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fl = FleetLab(ags=NAGS, nodes=2).__enter__()
        try:
            cls.fl.put_passwords()
        except Exception:
            cls.fl.__exit__(None, None, None)
            raise
        cls.names = [cls.fl.ag_name(k) for k in range(NAGS)]

    @classmethod
    def tearDownClass(cls):
        cls.fl.__exit__(None, None, None)

    # ---- helpers ----
    def added(self, state):
        """AG -> number of credentials this process added (its audit log)."""
        out = {}
        for r in self.fl.audit(state):
            if r.get("action") == "register" and r.get("outcome") == "added":
                ag = r["target"]["ag"]
                out[ag] = out.get(ag, 0) + 1
        return out

    def drop_all(self, names=None):
        """A DBA drops the credentials on every replica (rebuilt nodes): work for the next run."""
        for k in range(NAGS):
            if names is not None and self.names[k] not in names:
                continue
            for node in range(2):
                self.fl.query_ag(k, "EXEC sp_control_dbmasterkey_password @db_name = %s, @password = %s, "
                                 "@action = N'drop'" % (self.q(DB), self.q(self.fl.dmk_password)), node=node)

    @staticmethod
    def q(s):
        return "N'" + s.replace("'", "''") + "'"

    def sql_state(self):
        """Per AG and node: the credentials SQL Server holds for the DMK (names only)."""
        st = {}
        for k in range(NAGS):
            for node in range(2):
                rows = self.fl.query_ag(k, "SELECT c.name FROM sys.master_key_passwords m JOIN sys.credentials c "
                                        "ON c.credential_id = m.credential_id", node=node)
                # ##DBMKEY_<family>_<random>##: the random part differs from run to run
                st[(self.names[k], node)] = sorted(r[0].rsplit("_", 1)[0] for r in rows)
        return st

    def latency(self, ms):
        for s in self.fl.sqls:
            self.fl.control("/faults", {"latency_ms": ms}, sim=s)

    def run_all(self, runs):
        """Start every (args, state, env) at once; their (rc, json, stderr)."""
        ps = [self.fl.popen("--output", "json", *args, state=state, env=env) for args, state, env in runs]
        res = []
        for p in ps:
            out, err = p.communicate(timeout=600)
            try:
                doc = json.loads(out)
            except ValueError:
                self.fail(f"no JSON (exit {p.returncode}): {out!r} {err}")
            res.append((p.returncode, doc, err))
        return res

    def verify_all(self, state, *args):
        """verify, by the process that registered (its state_dir says what it registered)."""
        rc, out, err = self.fl.agent("--output", "json", "verify", *args, state=state)
        self.assertEqual(rc, 0, err)
        return [a["name"] for a in json.loads(out)["ags"]]

    def one_credential_each(self):
        for (ag, node), creds in self.sql_state().items():
            self.assertEqual(len(creds), 1, f"{ag} node {node}: {creds}")

    # ---- the tests (in this order: each starts from the state the last left) ----
    def test_1_three_shards(self):
        want = {i: sorted(n for n in self.names if shard_of(n, 3) == i) for i in range(3)}
        self.assertTrue(all(want.values()), f"this test wants AGs in every shard: {want}")
        res = self.run_all([(["run", "--shard", f"{i}/3"], f"shard{i}", None) for i in range(3)])
        seen = []
        for i, (rc, doc, err) in enumerate(res):
            self.assertEqual(rc, 0, err)
            got = [a["name"] for a in doc["ags"]]
            self.assertEqual(sorted(got), want[i], f"shard {i}/3")
            # the audit trail: this shard added both replicas' credentials of its AGs, no other AG
            self.assertEqual(self.added(f"shard{i}"), {n: 2 for n in want[i]}, f"shard {i}/3")
            seen += got
        self.assertEqual(sorted(seen), sorted(self.names), "each AG exactly once, all six covered")
        # auto/N takes I from a Kubernetes Indexed Job's JOB_COMPLETION_INDEX
        rc, out, err = self.fl.agent("--output", "json", "run", "--shard", "auto/3", state="auto",
                                     env={"JOB_COMPLETION_INDEX": "1"})
        self.assertEqual(rc, 0, err)
        self.assertEqual(sorted(a["name"] for a in json.loads(out)["ags"]), want[1])
        self.assertEqual(self.added("auto"), {}, "nothing left to do")
        for i in range(3):
            self.assertEqual(sorted(self.verify_all(f"shard{i}", "--shard", f"{i}/3", "--jobs", "3")),
                             want[i])
        self.one_credential_each()

    def test_2_same_index_twice(self):
        big = max(range(3), key=lambda i: sum(shard_of(n, 3) == i for n in self.names))
        mine = sorted(n for n in self.names if shard_of(n, 3) == big)
        self.drop_all(mine)
        self.latency(40)      # both see the work, and would both do it without the AG's lease
        try:
            res = self.run_all([(["run", "--shard", f"{big}/3"], f"twin{t}", None) for t in range(2)])
        finally:
            self.latency(0)
        a, b = self.added("twin0"), self.added("twin1")
        for n in mine:
            self.assertFalse(n in a and n in b, f"{n} handled by both processes: {a} {b}")
            self.assertEqual(a.get(n, 0) + b.get(n, 0), 2, f"{n}: both replicas once: {a} {b}")
        for rc, doc, err in res:
            self.assertIn(rc, (0, 4), err)
            for ag in doc["ags"]:
                if ag["error"]:
                    self.assertIn("another run is working on this availability group", ag["error"])
                    self.assertEqual(rc, 4, "the loser of an AG exits 4 (locked)")
        self.assertEqual(sorted(set(a) | set(b)), mine)
        self.one_credential_each()
        # no lease left held: the next run over the shard takes every AG
        rc, out, err = self.fl.agent("--output", "json", "run", "--shard", f"{big}/3", state="twin0")
        self.assertEqual(rc, 0, err)

    def test_3_jobs_same_as_sequential(self):
        states, docs = [], []
        for jobs in ("1", "3"):
            self.drop_all()
            rc, out, err = self.fl.agent("--output", "json", "run", "--jobs", jobs, state=f"jobs{jobs}")
            self.assertEqual(rc, 0, err)
            doc = json.loads(out)
            self.assertEqual([a["name"] for a in doc["ags"]], self.names, "config order")
            self.assertEqual(self.added(f"jobs{jobs}"), {n: 2 for n in self.names})
            states.append(self.sql_state())
            docs.append(doc)
        self.assertEqual(states[0], states[1])
        self.assertEqual(docs[0]["changes"], docs[1]["changes"])
        self.assertEqual(docs[0]["changes"], 2 * NAGS)
        # the text report: each AG's lines together, in config order
        self.drop_all()
        rc, out, err = self.fl.agent("run", "--jobs", "3", state="jobs3")
        self.assertEqual(rc, 0, err)
        heads = [line.split(":")[0] for line in out.splitlines() if line.startswith("FLEET")]
        self.assertEqual(heads, sorted(heads), out)
        self.assertEqual(self.verify_all("jobs3", "--jobs", "3"), self.names)
        self.one_credential_each()

    def test_4_usage(self):
        for bad, word in (("3/3", "I must be"), ("-1/3", "I must be"), ("0/0", "--shard takes"),
                          ("x", "--shard takes"), ("1/", "--shard takes"), ("a/2", "I must be")):
            rc, out, err = self.fl.agent("run", "--shard", bad, state="usage")
            self.assertEqual(rc, 2, f"--shard {bad}: {err}")
            self.assertIn("--shard", err)
            self.assertIn(word, err)
        rc, out, err = self.fl.agent("run", "--shard", "auto/3", state="usage")
        self.assertEqual(rc, 2)
        self.assertIn("JOB_COMPLETION_INDEX is not set", err)
        for v in ("3", "x", "-1", ""):
            rc, out, err = self.fl.agent("run", "--shard", "auto/3", state="usage",
                                         env={"JOB_COMPLETION_INDEX": v})
            self.assertEqual(rc, 2, f"JOB_COMPLETION_INDEX={v!r}: {err}")
            self.assertIn("JOB_COMPLETION_INDEX", err)
        for v in ("0", "x", "65"):
            rc, out, err = self.fl.agent("verify", "--jobs", v, state="usage")
            self.assertEqual(rc, 2, err)
            self.assertIn("--jobs", err)
        # nothing was started: no audit record
        self.assertEqual(self.fl.audit("usage"), [])

    def test_5_sigint_stops_every_job(self):
        """SIGINT: no further AG is begun; the jobs under way stop at their next step boundary; a rerun
        finishes.  The first rotation to reach after-add stops the whole process there (SIGSTOP)."""
        import signal
        import time
        p = self.fl.popen("--output", "json", "rotate", "--jobs", "2", state="sig",
                          env={"DMKAGENT_FAILPOINT_STOP": "rotate:after-add"})
        def state():
            try:
                with open(f"/proc/{p.pid}/stat") as f:
                    return f.read().rsplit(")", 1)[1].split()[0]
            except OSError:
                return "gone"
        t0 = time.monotonic()
        while state() != "T" and p.poll() is None and time.monotonic() - t0 < 120:
            time.sleep(0.05)
        self.assertEqual(state(), "T", "never reached rotate:after-add")
        p.send_signal(signal.SIGINT)
        while p.poll() is None and time.monotonic() - t0 < 240:
            os.kill(p.pid, signal.SIGCONT)       # the other job may stop at after-add too
            time.sleep(0.1)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 128 + signal.SIGINT, err)
        doc = json.loads(out)
        begun = [a["name"] for a in doc["ags"]]
        self.assertLess(len(begun), NAGS, "AGs begun after the signal")
        self.assertEqual(begun, self.names[:len(begun)], "config order")
        self.assertIn("interrupted", json.dumps(doc).lower())
        rotated = {r["target"]["ag"] for r in self.fl.audit("sig") if r.get("action") == "rotate-pending"}
        self.assertTrue(rotated and rotated <= set(begun), f"{rotated} vs {begun}")
        rc, out, err = self.fl.agent("--output", "json", "rotate", "--jobs", "3", state="sig")
        self.assertEqual(rc, 0, err)
        self.one_credential_each()


class FleetAzure(unittest.TestCase):
    """The AG lease in a store without check-and-set (Azure Key Vault: flat names, claims decided among
    the versions): two processes over the same four AGs at once never both act on one."""

    def test_same_shard_twice_azure(self):
        sys.path.insert(0, os.path.join(HERE, "..", "rotate"))
        from azlab import AzureLab

        class AzureFleet(FleetLab):
            _start_vault = AzureLab._start_vault
            store_section = AzureLab.store_section

            def ref(self, k, db):
                return f"akv:sql-{self.ag_name(k).lower()}-{db.lower().replace('_', '-')}-dmk"

        with AzureFleet(ags=4, nodes=2) as fl:
            fl.put_passwords()
            for s in fl.sqls:
                fl.control("/faults", {"latency_ms": 40}, sim=s)
            ps = [fl.popen("--output", "json", "run", "--shard", "0/1", state=f"az{t}") for t in range(2)]
            res = [(p.communicate(timeout=600), p.returncode) for p in ps]
            added = []
            for t in range(2):
                a = {}
                for r in fl.audit(f"az{t}"):
                    if r.get("action") == "register" and r.get("outcome") == "added":
                        a[r["target"]["ag"]] = a.get(r["target"]["ag"], 0) + 1
                added.append(a)
            for k in range(4):
                n = fl.ag_name(k)
                self.assertFalse(n in added[0] and n in added[1], f"{n} handled twice: {added}")
                self.assertEqual(added[0].get(n, 0) + added[1].get(n, 0), 2, f"{n}: {added}")
            for (out, err), rc in res:
                self.assertIn(rc, (0, 4), err)


if __name__ == "__main__":
    try:
        import pytds  # noqa: F401
    except ImportError:
        print("python3-tds missing: skipping")
        sys.exit(77)
    run_unittests()
