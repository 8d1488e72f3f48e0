#!/usr/bin/python3
"""register / verify / status end to end: dmkagent against sqlsim (an AG over
TDS+TLS) and vaultsim (HashiCorp Vault), as a DBA would run it."""
import json
import os
import stat
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab import Lab, strong_password, write_secret  # noqa: E402


def plaintext(rows):
    return [r[0] for r in rows if r[0] is not None]


class Register(unittest.TestCase):
    nodes = 3

    def setUp(self):
        self.lab = Lab(nodes=self.nodes).__enter__()

    def tearDown(self):
        self.lab.__exit__(None, None, None)

    def assertNoCanary(self, secret):
        rc, out, err = self.lab.last
        self.assertNotIn(secret, out)
        self.assertNotIn(secret, err)
        self.assertNotIn(secret, self.lab.audit_text())

    def test_register_every_replica_then_failover_decrypts_everywhere(self):
        lab = self.lab
        lab.put_dmk_password()
        # Before: a secondary made primary cannot open the DMK (the runbook's NULLs).
        lab.failover(1)
        self.assertEqual(plaintext(lab.check_query()), [], "DMK opened without registration?")
        lab.failover(0)
        rc, out, err = lab.agent("verify")
        self.assertEqual(rc, 3, out + err)
        self.assertIn("GAP", out)

        rc, out, err = lab.agent("register")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(out.count("registered"), self.nodes, out)
        self.assertNoCanary(lab.dmk_password)
        for n in range(self.nodes):
            self.assertEqual(len(lab.credentials(n)), 1, f"node {n}")

        rc, out, err = lab.agent("verify")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("every replica passes", out)

        # The seed runbook's proof: fail over to each node, the check query decrypts.
        for n in list(range(1, self.nodes)) + [0]:
            lab.failover(n)
            rows = lab.check_query()
            self.assertTrue(rows and all(r[0] is not None for r in rows), f"node {n}: {rows}")

        rc, out, err = lab.agent("--output", "json", "status")
        self.assertEqual(rc, 0, err)
        st = json.loads(out)
        self.assertEqual(len(st["ags"][0]["replicas"]), self.nodes)
        self.assertEqual(rc, 0)
        rc, out, err = lab.agent("audit", "verify", lab.audit_log)
        self.assertEqual(rc, 0, err)

    def test_state_dir_files_not_through_links(self):
        """registered.json goes through a temporary name: a symbolic link
        planted there is not followed, and a state_dir others can write is
        refused before anything changes."""
        lab = self.lab
        lab.put_dmk_password()
        os.makedirs(lab.state_dir, mode=0o700, exist_ok=True)
        victim = os.path.join(lab.dir, "victim")
        with open(victim, "w") as f:
            f.write("untouched\n")
        os.symlink(victim, os.path.join(lab.state_dir, "registered.json.tmp"))
        rc, out, err = lab.agent("register")
        self.assertEqual(rc, 0, out + err)
        with open(victim) as f:
            self.assertEqual(f.read(), "untouched\n")
        reg = os.path.join(lab.state_dir, "registered.json")
        st = os.lstat(reg)
        self.assertTrue(stat.S_ISREG(st.st_mode))
        self.assertEqual(st.st_mode & 0o777, 0o600)
        self.assertIn("AG1", json.load(open(reg)))

        os.chmod(lab.state_dir, 0o770)
        rc, out, err = lab.agent("register")
        self.assertEqual(rc, 2, out + err)
        self.assertIn(f"{lab.state_dir}: writable by group or others", err)
        os.chmod(lab.state_dir, 0o700)

    def test_second_run_changes_nothing(self):
        lab = self.lab
        lab.put_dmk_password()
        self.assertEqual(lab.agent("register")[0], 0, lab.last)
        rc, out, err = lab.agent("register")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("nothing to change", out)
        self.assertIn("already registered", out)
        for n in range(self.nodes):
            self.assertEqual(len(lab.credentials(n)), 1)

    def test_quiet_prints_nothing_on_success_and_the_problem_otherwise(self):
        lab = self.lab
        lab.put_dmk_password()
        rc, out, err = lab.agent("-q", "verify")       # nothing registered yet: gaps
        self.assertEqual(rc, 3, out + err)
        self.assertIn("GAP", out)
        rc, out, err = lab.agent("-q", "register")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(out, "")
        self.assertEqual(err, "")
        rc, out, err = lab.agent("-q", "verify")
        self.assertEqual((rc, out, err), (0, "", ""))

    def test_dry_run_changes_nothing(self):
        lab = self.lab
        lab.put_dmk_password()
        rc, out, err = lab.agent("register", "--dry-run")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("would register", out)
        for n in range(self.nodes):
            self.assertEqual(lab.credentials(n), [])

    def test_wrong_password_in_store_registers_nothing(self):
        lab = self.lab
        lab.put_dmk_password(value=strong_password())
        rc, out, err = lab.agent("register")
        self.assertEqual(rc, 3, out + err)
        self.assertIn("does not open the database master key on the primary", out + err)
        self.assertIn("hcv:sql/ag1/cm_p01/dmk#password (store version 1)", out + err)
        for n in range(self.nodes):
            self.assertEqual(lab.credentials(n), [], f"node {n}")

    def test_replica_down_then_rerun_completes(self):
        lab = self.lab
        lab.put_dmk_password()
        lab.control("/nodes/2/down", {})
        rc, out, err = lab.agent("register")
        self.assertEqual(rc, 3, out + err)
        self.assertIn("SQLNODE3", out)
        self.assertIn("NOT REACHED", out)
        self.assertEqual(len(lab.credentials(0)), 1)
        self.assertEqual(len(lab.credentials(1)), 1)
        lab.control("/nodes/2/up", {})
        rc, out, err = lab.agent("register")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(len(lab.credentials(2)), 1)
        self.assertEqual(lab.agent("verify")[0], 0, lab.last)

    def test_wrong_ca_refused(self):
        lab = self.lab
        lab.put_dmk_password()
        lab.write_config(ca=lab.pki["other-ca_pem"])
        rc, out, err = lab.agent("register")
        self.assertNotEqual(rc, 0)
        self.assertRegex(err.lower(), "certificate|tls")
        for n in range(self.nodes):
            self.assertEqual(lab.credentials(n), [])

    def test_least_privilege_login_gets_clear_message(self):
        lab = self.lab
        lab.put_dmk_password()
        pw = strong_password()
        lab.query("CREATE LOGIN lowpriv WITH PASSWORD = N'%s'" % pw.replace("'", "''"), node=0)
        for n in range(1, self.nodes):
            try:
                lab.query("CREATE LOGIN lowpriv WITH PASSWORD = N'%s'" % pw.replace("'", "''"), node=n)
            except Exception:
                pass
        lab.write_config(login="lowpriv",
                         login_password_file=write_secret(os.path.join(lab.dir, "lp"), pw))
        rc, out, err = lab.agent("register")
        self.assertNotEqual(rc, 0)
        self.assertRegex(out + err, "(?i)permission|CONTROL")
        self.assertNotIn(pw, out + err)


    def test_failover_test_visits_every_replica_and_returns(self):
        lab = self.lab
        lab.put_dmk_password()
        self.assertEqual(lab.agent("register")[0], 0, lab.last)
        rc, out, err = lab.agent("verify", "--failover-test")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(out.count("as primary: DMK opens, certificate decrypts"), self.nodes, out)
        st = lab.control("/status")
        self.assertEqual(st["primary"], "SQLNODE1", st)

    def test_connection_dropped_mid_register_converges(self):
        lab = self.lab
        lab.put_dmk_password()
        lab.control("/faults", {"drop_at_pattern": "sp_executesql|sp_control_dbmasterkey_password",
                                "drop_when": "after", "drop_node": "SQLNODE2"})
        rc, out, err = lab.agent("register")
        self.assertEqual(rc, 3, out + err)
        lab.control("/faults/clear", {})
        rc, out, err = lab.agent("register")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(lab.agent("verify")[0], 0, lab.last)
        for n in range(self.nodes):
            self.assertEqual(len(lab.credentials(n)), 1, f"node {n}")

    def test_failover_during_register_converges(self):
        lab = self.lab
        lab.put_dmk_password()
        for k in (2, 5, 8, 11):
            lab.control("/faults", {"failover_at_statement": k, "failover_target": "SQLNODE2"})
            rc, out, err = lab.agent("register")
            self.assertIn(rc, (0, 3), out + err)
            lab.control("/faults/clear", {})
            rc, out, err = lab.agent("register")
            self.assertEqual(rc, 0, f"k={k}: {out}{err}")
            self.assertEqual(lab.agent("verify")[0], 0, lab.last)
            lab.control("/failover", {"target": "SQLNODE1"})
        for n in range(self.nodes):
            self.assertEqual(len(lab.credentials(n)), 1, f"node {n}")


    def test_prune_drops_credentials_of_old_passwords(self):
        lab = self.lab
        lab.put_dmk_password()
        self.assertEqual(lab.agent("register")[0], 0, lab.last)
        # A DBA changes the DMK password by hand and stores the new one.
        new = strong_password()
        q = lambda v: v.replace("'", "''")
        lab.query(f"ALTER MASTER KEY ADD ENCRYPTION BY PASSWORD = N'{q(new)}'", node=0, database="CM_P01")
        lab.query(f"ALTER MASTER KEY DROP ENCRYPTION BY PASSWORD = N'{q(lab.dmk_password)}'",
                  node=0, database="CM_P01")
        lab.put_dmk_password(value=new, overwrite=True)
        rc, out, err = lab.agent("register")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("1 other credential(s) for this database (stale? see --prune)", out)
        for n in range(self.nodes):
            self.assertEqual(len(lab.credentials(n)), 2)
        rc, out, err = lab.agent("register", "--prune")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("dropped the credential of store version 1", out)
        for n in range(self.nodes):
            self.assertEqual(len(lab.credentials(n)), 1, f"node {n}")
        self.assertEqual(lab.agent("verify")[0], 0, lab.last)
        self.assertNotIn(new, out + err + lab.audit_text())


class RegisterFive(Register):
    nodes = 5

    # the five-node class reruns only the main scenario
    test_second_run_changes_nothing = None
    test_dry_run_changes_nothing = None
    test_quiet_prints_nothing_on_success_and_the_problem_otherwise = None
    test_wrong_password_in_store_registers_nothing = None
    test_replica_down_then_rerun_completes = None
    test_wrong_ca_refused = None
    test_least_privilege_login_gets_clear_message = None
    test_failover_test_visits_every_replica_and_returns = None
    test_connection_dropped_mid_register_converges = None
    test_failover_during_register_converges = None
    test_prune_drops_credentials_of_old_passwords = None


class Names(unittest.TestCase):
    """Database names with ], ', spaces, non-ASCII and 128 characters; the
    password has a quote and a non-ASCII letter (lab.strong_password)."""
    NAMES = ["we]ird", "O'Brien's db", "with  spaces", "Ünïcødé-数据库", "N" * 128]

    def test_hostile_names_register_and_verify(self):
        args = []
        for n in self.NAMES:
            args += ["--database-name", n]
        with Lab(nodes=3, extra_sql_args=args) as lab:
            dbs = [(n, f"n{i}") for i, n in enumerate(self.NAMES)]
            lab.write_config(databases=dbs)
            for i in range(len(self.NAMES)):
                lab.put_dmk_password(ref=f"hcv:sql/ag1/n{i}/dmk#password")
            rc, out, err = lab.agent("register", "--ag", "AG1")
            self.assertEqual(rc, 0, out + err)
            self.assertEqual(out.count("registered"), 3 * len(self.NAMES), out)
            rc, out, err = lab.agent("verify")
            self.assertEqual(rc, 0, out + err)
            self.assertNotIn(lab.dmk_password, out + err + lab.audit_text())
            for n in range(3):
                self.assertEqual(len(lab.credentials(n)), len(self.NAMES))


class RoundTrips(unittest.TestCase):
    """Requests per session (sqlsim /stats), the round trips the bench measures (bench/README.md):
    through the listener, discovery with the primary's facts, then the password proofs (2); on each
    replica, register: the encryption check with the credentials, then every add in one RPC with the
    credentials after (2, for up to 140 databases); verify: one batch (1)."""
    D = 80

    def test_requests_per_session(self):
        with Lab(nodes=2, extra_sql_args=["--extra-databases", str(self.D)]) as lab:
            lab.write_config(databases=[(f"DB{i:04d}", None) for i in range(1, self.D + 1)])
            for i in range(1, self.D + 1):
                lab.put_dmk_password(ref=f"hcv:sql/ag1/db{i:04d}/dmk#password")
            for job, want_listener, want_replica in (("register", 2, 2), ("verify", 2, 1)):
                lab.control("/stats/reset", {})
                rc, out, err = lab.agent(job)
                self.assertEqual(rc, 0, out + err)
                conns = lab.control("/stats")["per_connection"]
                listener = [c for c in conns if c["via_listener"]]
                replicas = [c for c in conns if not c["via_listener"]]
                self.assertEqual(len(listener), 1, conns)
                self.assertEqual(len(replicas), 2, conns)
                self.assertEqual(listener[0]["requests"], want_listener, f"{job}: {conns}")
                for c in replicas:
                    self.assertEqual(c["requests"], want_replica, f"{job}: {conns}")
            for n in range(2):
                self.assertEqual(len(lab.credentials(n)), self.D)


if __name__ == "__main__":
    unittest.main(verbosity=2)   # None attributes above are not collected
