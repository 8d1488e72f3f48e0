#!/usr/bin/python3
"""No DMK password crosses the wire outside TLS: every agent command refuses a
server (or a man in the middle) that will not encrypt the whole session, or
whose certificate the CA does not vouch for or whose name does not match, and
sends nothing after the login.  The simulator counts plaintext packets."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab import Lab  # noqa: E402

COMMANDS = [["register"], ["verify"], ["status"], ["register", "--dry-run"]]


class Downgrade(unittest.TestCase):
    def run_all(self, lab, expect):
        for cmd in COMMANDS:
            rc, out, err = lab.agent(*cmd)
            self.assertNotEqual(rc, 0, f"{cmd}: accepted\n{out}{err}")
            self.assertRegex(out + err, expect, cmd)
            self.assertNotIn(lab.dmk_password, out + err)
            self.assertNotIn(lab.sa_password, out + err)

    def check_nothing_in_clear(self, lab):
        st = lab.control("/stats")
        self.assertEqual(st.get("plaintext_packets_after_login"), 0, st)
        self.assertEqual(st.get("plaintext_logins", 0), 0, st)
        self.assertEqual(st.get("logins_ok", 0), 0, st)
        for n in range(lab.nodes):
            lab.control("/faults/clear", {})
        for n in range(lab.nodes):
            self.assertEqual(lab.credentials(n), [], f"node {n} got a credential")

    def test_encrypt_off_answer_refused(self):
        with Lab(nodes=3) as lab:
            lab.put_dmk_password()
            lab.control("/faults", {"downgrade": True})
            lab.control("/stats/reset", {})
            self.run_all(lab, r"refused full TLS encryption \(PRELOGIN answered ENCRYPT_OFF\)")
            self.check_nothing_in_clear(lab)

    def test_not_sup_answer_refused(self):
        with Lab(nodes=3) as lab:
            lab.put_dmk_password()
            lab.control("/faults", {"encrypt_not_sup": True})
            lab.control("/stats/reset", {})
            self.run_all(lab, r"refused full TLS encryption \(PRELOGIN answered ENCRYPT_NOT_SUP\)")
            self.check_nothing_in_clear(lab)

    def test_server_reporting_no_encryption_refused(self):
        """The second line: a server whose TLS the relay accepted but which says the
        session is not encrypted (encrypt_option FALSE) gets no statement that carries a
        password: the question leads each session's first batch."""
        with Lab(nodes=3) as lab:
            lab.put_dmk_password()
            lab.control("/faults", {"report_unencrypted": True})
            for cmd in COMMANDS:
                rc, out, err = lab.agent(*cmd)
                self.assertNotEqual(rc, 0, f"{cmd}: accepted\n{out}{err}")
                self.assertIn("reports this connection as not encrypted (encrypt_option = FALSE)",
                              out + err, cmd)
                self.assertNotIn(lab.dmk_password, out + err)
            lab.control("/faults/clear", {})
            for n in range(lab.nodes):
                self.assertEqual(lab.credentials(n), [], f"node {n} got a credential")
            # and with the fault gone the same lab registers: the test can tell the difference
            rc, out, err = lab.agent("register")
            self.assertEqual(rc, 0, out + err)

    def test_untrusted_certificate_refused(self):
        with Lab(nodes=3, server_cert="untrusted") as lab:
            lab.put_dmk_password()
            lab.control("/stats/reset", {})
            self.run_all(lab, r"(?i)certificate")
            st = lab.control("/stats")
            self.assertEqual(st.get("logins_ok", 0), 0, st)

    def test_wrong_name_refused(self):
        with Lab(nodes=3, server_cert="wrongname") as lab:
            lab.put_dmk_password()
            lab.control("/stats/reset", {})
            self.run_all(lab, r"(?i)certificate|name")
            st = lab.control("/stats")
            self.assertEqual(st.get("logins_ok", 0), 0, st)


if __name__ == "__main__":
    unittest.main(verbosity=2)
