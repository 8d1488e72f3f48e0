#!/usr/bin/python3
"""The rotation lease in Azure Key Vault (azuresim), which has no
check-and-set: two agents ("two hosts": two state directories, one vault)
started at the same moment, round after round (DMKAGENT_LEASE_RACE_ROUNDS,
50 by default).  In every round at most one of them changes anything: one
rotates, the other is refused with exit 4 before its first change.  Writes
of the lease are slowed (300 ms) and the second agent starts 0-60 ms after
the first, so that one agent's write lands after the other's read-back: the
window a write-then-read-back lease leaves open (the agent before the
counted claims failed this test in most rounds)."""
import json
import os
import random
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "rotate"))
import rotlib  # noqa: E402  (also runs a private copy of the binary)
import lab as _labmod  # noqa: E402
from azlab import AzureLab  # noqa: E402
from test_rotate import other_host_config  # noqa: E402
from test_rotate_azure import converged  # noqa: E402

ROUNDS = int(os.environ.get("DMKAGENT_LEASE_RACE_ROUNDS", "50"))


def audit_records(lab):
    return [json.loads(x) for x in lab.audit_text().splitlines() if x.strip()]


class LeaseAzure(unittest.TestCase):
    def setUp(self):
        self.lab = AzureLab(nodes=3).__enter__()
        try:
            self.lab.put_dmk_password()
            rc, out, err = self.lab.agent("register")
            self.assertEqual(rc, 0, out + err)
        except BaseException:
            self.lab.__exit__(None, None, None)
            raise

    def tearDown(self):
        self.lab.__exit__(None, None, None)

    def test_two_contenders_at_the_same_moment(self):
        lab = self.lab
        configs = [lab.config, other_host_config(lab)]
        env = dict(os.environ)
        env.pop("DMKAGENT_CONFIG", None)
        lab.control("/latency", {"ms": 300, "path_prefix": "/secrets/dmkagent-lease",
                                 "method": "PUT"}, sim=lab.azure)
        rng = random.Random(int(os.environ.get("DMKAGENT_LEASE_RACE_SEED", "1")))
        t0 = time.time()
        outcomes = {}
        for rnd in range(ROUNDS):
            before = len(lab.store_versions())
            procs = []
            for i, c in enumerate(configs):
                if i:
                    time.sleep(rng.uniform(0, 0.06))
                procs.append(subprocess.Popen([_labmod.DMK, "-c", c, "--output", "json",
                                               "rotate", "--no-backup"], stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True, env=env))
            res = [p.communicate(timeout=300) for p in procs]
            codes = sorted(p.returncode for p in procs)
            detail = f"round {rnd}: " + " / ".join(f"{p.returncode} {e}" for p, (o, e) in
                                                  zip(procs, res))
            self.assertEqual(codes, [0, 4], detail)
            loser = next(i for i, p in enumerate(procs) if p.returncode == 4)
            winner = 1 - loser
            ldb = json.loads(res[loser][0])["ags"][0]["databases"][0]
            self.assertEqual(ldb["outcome"], "locked", detail)
            self.assertEqual(ldb["steps"], [], detail)    # not even past the lease
            self.assertIn("another rotation is under way", res[loser][1], detail)
            why = "same moment" if "same moment" in res[loser][1] else "held"
            outcomes[why] = outcomes.get(why, 0) + 1
            vs = lab.store_versions()
            self.assertEqual(len(vs), before + 1, detail)
            self.assertEqual([s for _, s, _ in vs[-2:]], ["retired", "current"], detail)
        elapsed = time.time() - t0
        # One pending version written per round: only the winners changed anything.
        pend = [r for r in audit_records(lab) if r["action"] == "rotate-pending"]
        self.assertEqual(len(pend), ROUNDS)
        sys.stderr.write(f"{ROUNDS} rounds in {elapsed:.1f}s; losers: {outcomes}\n")
        # verify reads the registration state of the host that ran it: the
        # last winner's
        lab.control("/latency", {"ms": 0}, sim=lab.azure)
        lab.config = configs[winner]
        self.assertEqual(converged(lab), [])


if __name__ == "__main__":
    if not rotlib.have_pytds():
        print("python3-tds missing: skipped")
        sys.exit(77)
    unittest.main(verbosity=2)
