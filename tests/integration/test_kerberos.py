#!/usr/bin/python3
"""login = integrated, end to end: a real MIT KDC on loopback (tests/integration/kdc.py), a
service principal MSSQLSvc/127.0.0.1:PORT per sqlsim port in a keytab, the client's ticket from
kinit, FreeTDS's GSSAPI token carried through the relay in LOGIN7, and sqlsim accepting it with
python3-gssapi (--kerberos-keytab).  Skipped (77) without krb5-kdc, krb5-admin-server, krb5-user
and python3-gssapi."""
import os
import re
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kdc as kdcmod  # noqa: E402
from lab import Lab  # noqa: E402

PRINC = "dmkagent@DMK.TEST"


class Kerberos(unittest.TestCase):
    def setUp(self):
        self.kdc = kdcmod.KDC(tempfile.mkdtemp(prefix="dmkkdc-"))
        self.addCleanup(self.kdc.cleanup)
        self.kdc.start()
        self.svc_keytab = os.path.join(self.kdc.dir, "mssql.keytab")
        self.lab = Lab(nodes=2, extra_sql_args=["--kerberos-keytab", self.svc_keytab,
                                                "--kerberos-login", PRINC]).__enter__()
        self.addCleanup(self.lab.__exit__, None, None, None)
        r = self.lab.sql_ready
        for port in [r["listener_port"]] + [n["port"] for n in r["nodes"]]:
            self.kdc.add(f"MSSQLSvc/127.0.0.1:{port}", self.svc_keytab)
        self.client_keytab = os.path.join(self.kdc.dir, "client.keytab")
        self.kdc.add("dmkagent", self.client_keytab)
        self.lab.put_dmk_password()
        self.lab.write_config(login="integrated")
        with open(self.lab.config) as f:
            text = re.sub(r"(?m)^login_password = .*\n", "", f.read())
        with open(self.lab.config, "w") as f:
            f.write(text)
        self.env = {k: v for k, v in self.kdc.env().items()
                    if k in ("KRB5_CONFIG", "KRB5CCNAME", "KRB5RCACHETYPE")}

    def test_integrated_login_registers_and_verifies(self):
        lab = self.lab
        self.kdc.kinit("dmkagent", self.client_keytab)
        rc, out, err = lab.agent("register", env=self.env)
        self.assertEqual(rc, 0, out + err)
        rc, out, err = lab.agent("verify", env=self.env)
        self.assertEqual(rc, 0, out + err)
        st = lab.control("/stats")
        self.assertGreaterEqual(st["kerberos_logins"], 3, st)
        self.assertEqual(st["kerberos_refused"], 0, st)
        self.assertEqual(len(lab.credentials(1)), 1)

    def test_no_ticket_says_so(self):
        rc, out, err = self.lab.agent("status", env=self.env)
        self.assertNotEqual(rc, 0, out + err)
        self.assertIn("integrated (Kerberos) login failed", out + err)
        self.assertIn("MSSQLSvc/127.0.0.1:", out + err)

    def test_service_key_not_in_keytab_is_refused(self):
        self.kdc.kinit("dmkagent", self.client_keytab)
        os.unlink(self.svc_keytab)          # the server cannot read the ticket any more
        rc, out, err = self.lab.agent("status", env=self.env)
        self.assertNotEqual(rc, 0, out + err)
        self.assertIn("18452", out + err)
        self.assertGreaterEqual(self.lab.control("/stats")["kerberos_refused"], 1)


NSS_WRAPPER = next((p for p in ("/usr/lib/x86_64-linux-gnu/libnss_wrapper.so",
                                "/usr/lib/aarch64-linux-gnu/libnss_wrapper.so") if os.path.exists(p)), None)


class KerberosFQDN(unittest.TestCase):
    """Named instances without routing URLs, placed by `domain` and SQL Server Browser: the service
    names asked for are MSSQLSvc/<FQDN>:<port>, as SPNs are registered in Active Directory."""

    def setUp(self):
        if NSS_WRAPPER is None:
            self.skipTest("libnss-wrapper is not installed")
        self.kdc = kdcmod.KDC(tempfile.mkdtemp(prefix="dmkkdc-"))
        self.addCleanup(self.kdc.cleanup)
        self.kdc.start()
        keytab = os.path.join(self.kdc.dir, "mssql.keytab")
        self.lab = Lab(nodes=2, server_cert="dnsonly", listener_host="localhost",
                       extra_sql_args=["--server-names", "SQLNODE1\\INST1,SQLNODE2\\INST2",
                                       "--browser-port", "0", "--shape", "no-routing-urls",
                                       "--kerberos-keytab", keytab, "--kerberos-login", PRINC]).__enter__()
        self.addCleanup(self.lab.__exit__, None, None, None)
        r = self.lab.sql_ready
        self.kdc.add(f"MSSQLSvc/localhost:{r['listener_port']}", keytab)
        for i, n in enumerate(r["nodes"]):
            self.kdc.add(f"MSSQLSvc/SQLNODE{i + 1}.sim.test:{n['port']}", keytab)
        client = os.path.join(self.kdc.dir, "client.keytab")
        self.kdc.add("dmkagent", client)
        self.kdc.kinit("dmkagent", client)
        self.lab.put_dmk_password()
        self.lab.write_config(login="integrated",
                              extra_ag=f"browser_port = {r['browser_port']}\ndomain = sim.test\n")
        with open(self.lab.config) as f:
            text = re.sub(r"(?m)^login_password = .*\n", "", f.read())
        with open(self.lab.config, "w") as f:
            f.write(text)
        hosts = os.path.join(self.kdc.dir, "hosts")
        with open(hosts, "w") as f:
            f.write("127.0.0.1 sqlnode1.sim.test\n127.0.0.1 sqlnode2.sim.test\n127.0.0.1 localhost\n")
        self.env = {k: v for k, v in self.kdc.env().items()
                    if k in ("KRB5_CONFIG", "KRB5CCNAME", "KRB5RCACHETYPE")}
        self.env.update(LD_PRELOAD=NSS_WRAPPER, NSS_WRAPPER_HOSTS=hosts, NSS_WRAPPER_DISABLE_DEEPBIND="1")

    def test_spn_is_the_fqdn(self):
        rc, out, err = self.lab.agent("register", env=self.env)
        self.assertEqual(rc, 0, out + err)
        rc, out, err = self.lab.agent("status", env=self.env)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("(server name + domain + SQL Server Browser)", out)
        self.assertGreaterEqual(self.lab.control("/stats")["kerberos_logins"], 5)


if __name__ == "__main__":
    why = kdcmod.missing()
    if why:
        print(f"Kerberos test skipped: not installed: {why} (apt-get install krb5-kdc krb5-admin-server "
              "krb5-user python3-gssapi)")
        sys.exit(77)
    unittest.main()
