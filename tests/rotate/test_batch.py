#!/usr/bin/python3
"""Rotation in one pass: `dmkagent rotate` of several databases takes each
step for all of them before the next (a batch), over one session per replica.
The agent is SIGKILLed in the middle of a batch (the failpoint NAME#N: the Nth
database past that boundary), with some databases past the step and some not;
then, per database: nothing lost at that moment, a rerun exits 0, and the
final state is right in SQL Server (the store's current password opens the DMK
on the primary and, after a failover, on every replica; the password it
replaced no longer does; exactly one credential per database on each replica)
and in the store (one version current, the one it replaced retired, nothing
pending or retiring).  Also: the whole batch rotates over one connection per
replica and one to the listener."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rotlib  # noqa: E402
from rotlib import Lab, vault_get  # noqa: E402
from tests.sim.common.harness import run_unittests  # noqa: E402

D = 6
NAMES = [f"DB{i:04d}" for i in range(1, D + 1)]
KILLED = -9


def path(db):
    return f"sql/ag1/{db.lower()}/dmk"


def versions(lab, db):
    """[(num, state, password)] of every live version of db's password, oldest first."""
    return rotlib.store_versions(lab, path(db))


def opens(lab, db, pw, node=None):
    lit = pw.replace("'", "''")
    try:
        lab.query(f"USE [{db}]; OPEN MASTER KEY DECRYPTION BY PASSWORD = N'{lit}'; "
                  "CLOSE MASTER KEY", node=node)
        return True
    except Exception as e:
        if "15313" in str(e) or "not encrypted using the specified decryptor" in str(e):
            return False
        raise


def families(lab, node):
    """{family_guid: number of DMK credentials} on one node."""
    out = {}
    for fam, _name in lab.query("SELECT m.family_guid, c.name FROM sys.master_key_passwords m "
                                "JOIN sys.credentials c ON c.credential_id = m.credential_id",
                                node=node):
        out[str(fam).lower()] = out.get(str(fam).lower(), 0) + 1
    return out


def family_of(lab, db):
    rows = lab.query("SELECT r.family_guid FROM sys.databases AS d JOIN "
                     "sys.database_recovery_status AS r ON r.database_id = d.database_id "
                     f"WHERE d.name = N'{db}'")
    return str(rows[0][0]).lower()


def nothing_lost(lab):
    """Right at the kill: for every database some live store version opens its DMK."""
    bad = []
    for db in NAMES:
        live = [(n, s, p) for n, s, p in versions(lab, db)
                if s in ("", "current", "pending", "retiring")]
        if not any(opens(lab, db, p) for _, _, p in live):
            bad.append(f"{db}: no store password opens the DMK "
                       f"({[(n, s) for n, s, _ in versions(lab, db)]})")
    return bad


def final_state(lab, rotations):
    """After a clean rerun: every database rotated at least `rotations` times in all."""
    bad = []
    names = [x["name"] for x in lab.sql_ready["nodes"]]
    fams = {db: family_of(lab, db) for db in NAMES}
    expect = {}
    for db in NAMES:
        vs = versions(lab, db)
        states = [(n, s) for n, s, _ in vs]
        cur = [(n, p) for n, s, p in vs if s == "current"]
        if any(s in ("pending", "retiring") for _, s in states):
            bad.append(f"{db}: a version is still pending or retiring: {states}")
        # a database whose rotation had finished before the kill is rotated
        # again by the rerun (rotate always makes a new one): at least `rotations`
        if len(cur) != 1 or cur[0][0] != vs[-1][0] or cur[0][0] < rotations + 1:
            bad.append(f"{db}: expected the newest version (at least {rotations + 1}) alone "
                       f"current: {states}")
            continue
        old = [(n, p) for n, s, p in vs if n == cur[0][0] - 1]
        if not old or dict(states).get(old[0][0]) != "retired":
            bad.append(f"{db}: the replaced version is not retired: {states}")
        expect[db] = (cur[0][1], old[0][1] if old else None)
    # every node as primary: the new password opens, the old one does not
    for n in list(range(1, lab.nodes)) + [0]:
        if lab.control("/status")["primary"] != names[n]:
            lab.failover(n)
        for db, (new, old) in expect.items():
            if not opens(lab, db, new):
                bad.append(f"{db}: the current password does not open the DMK on node {n}")
            if old is not None and opens(lab, db, old):
                bad.append(f"{db}: the replaced password still opens the DMK on node {n}")
    for n in range(lab.nodes):
        have = families(lab, n)
        for db in NAMES:
            if have.get(fams[db], 0) != 1:
                bad.append(f"{db}: {have.get(fams[db], 0)} credentials on node {n}, not 1")
    rc, out, err = lab.agent("verify")
    if rc != 0:
        bad.append(f"verify exit {rc}: {out[-800:]} {err[-800:]}")
    return bad


class Batch(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not rotlib.have_pytds():
            raise unittest.SkipTest("python3-tds is not installed")

    def lab(self):
        lab = Lab(nodes=3, extra_sql_args=["--extra-databases", str(D)]).__enter__()
        self.addCleanup(lab.__exit__, None, None, None)
        lab.write_config(databases=[(db, None) for db in NAMES])
        for db in NAMES:
            lab.put_dmk_password(ref=f"hcv:{path(db)}#password")
        self.assertEqual(lab.agent("register")[0], 0, lab.last)
        return lab

    def test_one_pass_sessions(self):
        """The batch shares the sessions: one listener session, one per replica."""
        lab = self.lab()
        lab.control("/stats/reset", {})
        rc, out, err = lab.agent("rotate")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(out.count("rotated: store version 2 is current, version 1 retired"), D,
                         out)
        st = lab.control("/stats")
        conns = sum(m["connections"] for m in st["by_node"].values())
        # the listener's session (on the primary) and one per replica
        self.assertEqual(conns, 1 + lab.nodes, st["by_node"])
        self.assertEqual(final_state(lab, 1), [])

    @rotlib.needs_failpoints
    def test_kill_mid_batch(self):
        """Killed in the middle of a batch at several boundaries; each rerun converges."""
        lab = self.lab()
        cells = ["rotate:after-pending#2", "rotate:after-add#2", "rotate:after-register#3",
                 "rotate:after-mark-current#4", "rotate:after-drop-primary#2",
                 "rotate:after-retire#5"]
        for i, fp in enumerate(cells, start=1):
            with self.subTest(failpoint=fp):
                rc, out, err = lab.agent("rotate", env={"DMKAGENT_FAILPOINT": fp})
                self.assertEqual(rc, KILLED, f"{fp}: {out} {err}")
                self.assertEqual(nothing_lost(lab), [], fp)
                rc, out, err = lab.agent("--wait", "30", "rotate")
                self.assertEqual(rc, 0, f"{fp}: rerun: {out} {err}")
                self.assertEqual(final_state(lab, i), [], fp)

    @rotlib.needs_failpoints
    def test_batch_size(self):
        """--batch 4 splits six databases into two batches; a kill in the second
        leaves the first finished."""
        lab = self.lab()
        rc, out, err = lab.agent("rotate", "--batch", "4",
                                 env={"DMKAGENT_FAILPOINT": "rotate:after-add#5"})
        self.assertEqual(rc, KILLED, out + err)
        for db in NAMES[:4]:
            self.assertEqual([s for _, s, _ in versions(lab, db)], ["retired", "current"], db)
        self.assertEqual(nothing_lost(lab), [])
        rc, out, err = lab.agent("--wait", "30", "rotate", "--batch", "4")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(final_state(lab, 1), [])
        self.assertNotEqual(lab.agent("rotate", "--batch", "0")[0], 0)


if __name__ == "__main__":
    run_unittests()
