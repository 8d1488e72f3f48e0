#!/usr/bin/python3
"""TDS 8.0 strict encryption: `encrypt = strict` in [ag] against sqlsim --strict ("Force Strict
Encryption": TLS 1.2/1.3 with ALPN tds/8.0 before any TDS byte, PRELOGIN and LOGIN7 inside it).
The relay bridges FreeTDS's TDS 7.x login onto the strict connection.  A strict server meeting a
mandatory client, and the reverse, fail naming the setting to change."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab import Lab  # noqa: E402


class Strict(unittest.TestCase):
    def setUp(self):
        self.lab = Lab(nodes=2).__enter__()
        self.lab.put_dmk_password()

    def tearDown(self):
        self.lab.__exit__(None, None, None)

    def strict_server(self, on=True):
        self.lab.control("/faults", {"strict": on})
        self.lab.control("/stats/reset", {})

    def test_strict_client_and_server_register_and_verify(self):
        lab = self.lab
        self.strict_server()
        lab.write_config(extra_ag="encrypt = strict\n")
        rc, out, err = lab.agent("register")
        self.assertEqual(rc, 0, out + err)
        rc, out, err = lab.agent("verify")
        self.assertEqual(rc, 0, out + err)
        st = lab.control("/stats")
        self.assertGreaterEqual(st["strict_sessions"], 3, st)
        self.assertEqual(st["refused_not_strict"], 0, st)
        self.assertEqual(set(st["strict_alpn"]), {"tds/8.0"}, st)
        self.assertEqual(set(st["strict_tls_version"]), {"TLSv1.3"}, st)
        self.assertEqual(st["plaintext_logins"], 0, st)
        self.strict_server(False)
        self.assertEqual(len(lab.credentials(1)), 1)

    def test_strict_server_mandatory_client_names_the_setting(self):
        lab = self.lab
        self.strict_server()
        rc, out, err = lab.agent("status")
        self.assertNotEqual(rc, 0, out + err)
        self.assertIn("set 'encrypt = strict' for this AG", out + err)
        self.assertGreaterEqual(lab.control("/stats")["refused_not_strict"], 1)

    def test_mandatory_server_strict_client_names_the_setting(self):
        lab = self.lab
        lab.write_config(extra_ag="encrypt = strict\n")
        rc, out, err = lab.agent("status")
        self.assertNotEqual(rc, 0, out + err)
        self.assertIn("set 'encrypt = mandatory' for this AG", out + err)

    def test_strict_checks_the_certificate_name(self):
        lab = self.lab
        self.strict_server()
        lab.write_config(extra_ag="encrypt = strict\ntls_name = other.sim.test\n")
        rc, out, err = lab.agent("status")
        self.assertNotEqual(rc, 0, out + err)
        self.assertIn("not accepted for 'other.sim.test': hostname mismatch: it is for "
                      "DNS:localhost, IP:127.0.0.1", out + err)
        self.assertEqual(lab.control("/stats")["logins_ok"], 0)


if __name__ == "__main__":
    unittest.main()
