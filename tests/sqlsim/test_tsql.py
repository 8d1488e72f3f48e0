#!/usr/bin/python3
"""FreeTDS tsql (freetds-bin 1.3.17, GnuTLS) against sqlsim over verified TLS (tds-notes.md section 13)."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from simtest import DMK_PW, SA_PW, SKIP, SqlSim, main, pki  # noqa: E402

TSQL = shutil.which("tsql")
sim = None


def setUpModule():
    global sim
    sim = SqlSim(nodes=2, dmk_password=DMK_PW).start()


def tearDownModule():
    sim.stop()


def conf(port, ca=None, encryption="require", host="localhost", tds="7.4"):
    d = tempfile.mkdtemp(prefix="sqlsim-ftds-")
    path = os.path.join(d, "freetds.conf")
    with open(path, "w") as f:
        f.write(f"[global]\n[sim]\n\thost = {host}\n\tport = {port}\n\ttds version = {tds}\n"
                f"\tencryption = {encryption}\n\tcheck certificate hostname = yes\n"
                f"\tclient charset = UTF-8\n\tenable tls v1 = no\n")
        f.write(f"\tca file = {ca or pki()['ca_pem']}\n")
    return path


def tsql(sql, port, user="sa", password=SA_PW, **kw):
    env = dict(os.environ, FREETDSCONF=conf(port, **kw))
    env.pop("TDSDUMP", None)
    p = subprocess.run([TSQL, "-S", "sim", "-U", user, "-P", password, "-o", "q"], input=sql + "\nGO\nexit\n",
                       capture_output=True, text=True, env=env, timeout=30)
    return p.returncode, p.stdout, p.stderr


class Tsql(unittest.TestCase):
    def test_select_over_verified_tls(self):
        rc, out, err = tsql("SELECT @@SERVERNAME AS n, DB_ID('CM_P01') AS id", sim.port(0))
        self.assertIn("SQLNODE1", out, err)
        self.assertIn("5", out)
        st = sim.control("GET", "/stats")
        self.assertGreaterEqual(st["full_tls_sessions"], 1)

    def test_runbook_check_query(self):
        rc, out, err = tsql("USE CM_P01\nGO\nSELECT TOP 5 RecoveryAndHardwareCore.DecryptString(RecoveryKey, DEFAULT)"
                            " FROM RecoveryAndHardwareCore_Keys ORDER BY LastUpdateTime DESC", sim.port(0))
        lines = [l for l in out.splitlines() if l.count("-") == 7]
        self.assertEqual(len(lines), 5, out + err)

    def test_sp_control_and_catalog(self):
        rc, out, err = tsql("EXEC sp_control_dbmasterkey_password @db_name = N'CM_P01', "
                            f"@password = N'{DMK_PW}', @action = N'add'\nGO\n"
                            "SELECT c.name FROM sys.credentials c JOIN sys.master_key_passwords m "
                            "ON c.credential_id = m.credential_id", sim.port(1))
        self.assertIn("##DBMKEY_", out, err)
        self.assertNotIn(DMK_PW, out)

    def test_error_reported(self):
        rc, out, err = tsql("USE CM_P01\nGO\nOPEN MASTER KEY DECRYPTION BY PASSWORD = 'nope'", sim.port(0))
        self.assertIn("15313", out + err)
        self.assertIn("The key is not encrypted using the specified decryptor.", out + err)

    def test_types_and_nulls(self):
        rc, out, err = tsql("SELECT CAST(1 AS bit) AS b, CAST(NULL AS int) AS n, CAST(12345678901 AS bigint) AS big,"
                            " N'caf\u00e9' AS s, 0x0102 AS v, NEWID() AS g, GETDATE() AS d, SYSDATETIME() AS d2",
                            sim.port(0))
        self.assertIn("12345678901", out, err)
        self.assertIn("caf\u00e9", out)
        self.assertIn("NULL", out)

    def test_wrong_ca_rejected(self):
        rc, out, err = tsql("SELECT 1", sim.port(0), ca=pki()["other-ca_pem"])
        self.assertNotEqual(rc, 0)
        self.assertNotIn("SQLNODE", out)

    def test_ip_host_not_in_name_check(self):
        # FreeTDS checks the name against host; the certificate has IP:127.0.0.1 too, so this works
        rc, out, err = tsql("SELECT @@SERVERNAME", sim.port(0), host="127.0.0.1")
        self.assertIn("SQLNODE1", out + err)

    def test_tds_versions(self):
        for v in ("7.1", "7.2", "7.3", "7.4"):
            rc, out, err = tsql("SELECT name, is_master_key_encrypted_by_server FROM sys.databases "
                                "WHERE name = 'CM_P01'", sim.port(0), tds=v)
            self.assertIn("CM_P01", out, f"tds {v}: {err}")

    def test_listener(self):
        rc, out, err = tsql("SELECT @@SERVERNAME", sim.listener)
        self.assertIn("SQLNODE1", out, err)


if __name__ == "__main__":
    if not TSQL:
        print("tsql not installed: skipped")
        sys.exit(SKIP)
    main()
