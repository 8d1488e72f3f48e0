#!/usr/bin/python3
"""Control endpoint faults (README.md ## sqlsim) and persistence across restarts."""
import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from simtest import DMK_PW, SA_PW, SqlSim, connect, main, pki, q, sqlerr  # noqa: E402
from test_tsql import tsql, TSQL  # noqa: E402

import pytds  # noqa: E402


def close_quietly(c):
    try:
        c.close()
    except Exception:
        pass


class Faults(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sim = SqlSim(nodes=3, dmk_password=DMK_PW).start()

    @classmethod
    def tearDownClass(cls):
        cls.sim.stop()

    def tearDown(self):
        self.sim.control("DELETE", "/faults")
        st = self.sim.control("GET", "/status")
        for n in st["nodes"]:
            if not n["up"]:
                self.sim.control("POST", f"/nodes/{n['name']}/up")
        if st["primary"] != "SQLNODE1":
            self.sim.control("POST", "/failover", {"target": "SQLNODE1"})

    def test_latency(self):
        sim = self.sim
        with connect(sim.port(0)) as c:
            t0 = time.time()
            q(c, "SELECT 1")
            fast = time.time() - t0
            sim.control("POST", "/faults", {"latency_ms": 300})
            t0 = time.time()
            q(c, "SELECT 1")
            self.assertGreaterEqual(time.time() - t0, 0.29)
            self.assertLess(fast, 0.29)

    def test_drop_after_statements(self):
        sim = self.sim
        c = connect(sim.port(0))
        sim.control("POST", "/faults", {"drop_after_statements": 2})
        q(c, "SELECT 1")
        q(c, "SELECT 2")
        with self.assertRaises(Exception):
            q(c, "SELECT 3")
        close_quietly(c)
        with connect(sim.port(0)) as c:          # one-shot
            self.assertEqual(q(c, "SELECT 4"), [(4,)])

    def test_drop_at_pattern_before_and_after(self):
        sim = self.sim
        c = connect(sim.port(0))
        sim.control("POST", "/faults", {"drop_at_pattern": "sp_control_dbmasterkey_password",
                                        "drop_when": "before"})
        with self.assertRaises(Exception):
            c.cursor().callproc("sp_control_dbmasterkey_password", ("CM_P01", "Drop#Passw0rd1", "add"))
        close_quietly(c)
        c = connect(sim.port(0))
        self.assertEqual(q(c, "SELECT COUNT(*) FROM sys.master_key_passwords"), [(0,)])
        sim.control("POST", "/faults", {"drop_at_pattern": "sp_control", "drop_when": "after"})
        with self.assertRaises(Exception):
            c.cursor().callproc("sp_control_dbmasterkey_password", ("CM_P01", "Drop#Passw0rd1", "add"))
        close_quietly(c)
        with connect(sim.port(0)) as c:           # executed, never answered
            self.assertEqual(q(c, "SELECT COUNT(*) FROM sys.master_key_passwords"), [(1,)])
            c.cursor().callproc("sp_control_dbmasterkey_password", ("CM_P01", "Drop#Passw0rd1", "drop"))

    def test_node_down_up(self):
        sim = self.sim
        c = connect(sim.port(2))
        sim.control("POST", "/nodes/SQLNODE3/down")
        with self.assertRaises(Exception):
            q(c, "SELECT 1")
        close_quietly(c)
        with self.assertRaises((OSError, pytds.Error)):
            connect(sim.port(2), login_timeout=2)
        with connect(sim.port(0)) as p:
            r = q(p, "SELECT r.replica_server_name, s.connected_state_desc FROM sys.availability_replicas r "
                     "JOIN sys.dm_hadr_availability_replica_states s ON s.replica_id = r.replica_id "
                     "ORDER BY r.replica_server_name")
            self.assertEqual(r[2], ("SQLNODE3", "DISCONNECTED"))
        sim.control("POST", "/nodes/SQLNODE3/up")
        with connect(sim.port(2)) as c2:
            self.assertEqual(q(c2, "SELECT @@SERVERNAME"), [("SQLNODE3",)])

    def test_failover_at_statement_and_listener(self):
        sim = self.sim
        with connect(sim.listener) as c:
            self.assertEqual(q(c, "SELECT @@SERVERNAME"), [("SQLNODE1",)])
        with connect(sim.port(1)) as c:
            sim.control("POST", "/faults", {"failover_at_statement": 2, "failover_target": "SQLNODE2"})
            q(c, "SELECT 1")
            self.assertEqual(sim.control("GET", "/status")["primary"], "SQLNODE1")
            q(c, "SELECT 1")
            self.assertEqual(sim.control("GET", "/status")["primary"], "SQLNODE2")
            r = q(c, "SELECT role_desc FROM sys.dm_hadr_availability_replica_states WHERE is_local = 1")
            self.assertEqual(r, [("PRIMARY",)])
        with connect(sim.listener) as c:
            self.assertEqual(q(c, "SELECT @@SERVERNAME"), [("SQLNODE2",)])
        # a secondary sees only its own row
        with connect(sim.port(0)) as c:
            self.assertEqual(len(q(c, "SELECT * FROM sys.dm_hadr_availability_replica_states")), 1)
            self.assertEqual(len(q(c, "SELECT * FROM sys.availability_replicas")), 3)

    def test_failover_kills_database_sessions(self):
        sim = self.sim
        c = connect(sim.port(0), database="CM_P01")
        with connect(sim.port(1)) as s:
            q(s, "ALTER AVAILABILITY GROUP AG1 FAILOVER")
        with self.assertRaises(Exception):
            q(c, "SELECT 1")
        close_quietly(c)

    def test_encrypt_not_sup_fault(self):
        sim = self.sim
        sim.control("POST", "/faults", {"encrypt_not_sup": True})
        with self.assertRaises(Exception):          # pytds refuses NOT_SUP after asking for encryption
            connect(sim.port(0), login_timeout=3)

    def test_downgrade_detected_with_freetds_require(self):
        # tsql is part of the set-up (freetds-bin): its absence is a broken
        # set-up, not a reason to count this check as passed.
        self.assertTrue(TSQL, "tsql missing: scripts/setup.sh installs freetds-bin")
        sim = self.sim
        sim.control("POST", "/stats/reset")
        sim.control("POST", "/faults", {"downgrade": True})
        rc, out, err = tsql("SELECT @@SERVERNAME", sim.port(0))
        self.assertIn("SQLNODE1", out, err)         # FreeTDS 1.3.17 accepts OFF and goes login-only
        st = sim.control("GET", "/stats")
        self.assertGreater(st["plaintext_packets_after_login"], 0)
        self.assertEqual(st["prelogin_server_encryption"], {"0": 1})
        with self.assertRaises(Exception):          # pytds refuses the downgrade
            connect(sim.port(0), login_timeout=3)
        sim.control("POST", "/faults", {"downgrade": False})
        sim.control("POST", "/stats/reset")
        tsql("SELECT 1", sim.port(0))
        self.assertEqual(sim.control("GET", "/stats")["plaintext_packets_after_login"], 0)


class Robustness(unittest.TestCase):
    def test_garbage_and_downgrade_option(self):
        import random
        import struct
        with SqlSim(nodes=1, scenario="empty", extra=["--downgrade"]) as sim:
            self.assertEqual(sim.ready["databases"], [])
            rnd = random.Random(7)
            payloads = [b"", b"\x12", b"\x12\x01\x00\x04", b"\x12\x01\xff\xff" + b"A" * 100,
                        b"\x10\x01\x00\x20" + b"\x00" * 28, b"\x16\x03\x01\x00\x05hello"]
            payloads += [bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300))) for _ in range(30)]
            payloads += [struct.pack(">BBHHBB", 0x12, 1, 8 + 40, 0, 0, 0) +
                         bytes(rnd.randrange(256) for _ in range(40)) for _ in range(20)]
            for p in payloads:
                s = socket.create_connection(("127.0.0.1", sim.port(0)), timeout=5)
                try:
                    s.sendall(p)
                    s.shutdown(socket.SHUT_WR)
                    while s.recv(4096):
                        pass
                except OSError:
                    pass
                s.close()
            # still serving; the downgrade is seen by FreeTDS and counted
            if TSQL:
                rc, out, err = tsql("SELECT @@SERVERNAME", sim.port(0))
                self.assertIn("SQLNODE1", out, err)
                st = sim.control("GET", "/stats")
                self.assertGreater(st["plaintext_packets_after_login"], 0)
                self.assertEqual(st["login_only_sessions"], 1)
            self.assertIn("sqlsim", sim.log())
            self.assertNotIn("Traceback", sim.log())


class Persistence(unittest.TestCase):
    def test_restart_resumes(self):
        s1 = SqlSim(nodes=2)
        with s1:
            with connect(s1.port(1)) as c:
                q(c, "ALTER AVAILABILITY GROUP [AG1] FAILOVER")
                c.cursor().callproc("sp_control_dbmasterkey_password", ("CM_P01", "Keep#Passw0rd1", "add"))
                q(c, "CREATE LOGIN keeper WITH PASSWORD = 'Keep#Passw0rd1'")
            before = s1.control("GET", "/status")
            s1.stop()
            s2 = SqlSim(nodes=2, state=s1.state).start()
            try:
                after = s2.control("GET", "/status")
                self.assertEqual(after["primary"], "SQLNODE2")
                self.assertEqual([n["smk_guid"] for n in after["nodes"]], [n["smk_guid"] for n in before["nodes"]])
                self.assertEqual(after["databases"], before["databases"])
                with connect(s2.port(1), user="keeper", password="Keep#Passw0rd1") as c:
                    self.assertEqual(q(c, "SELECT SUSER_SNAME()"), [("keeper",)])
                with connect(s2.port(1)) as c:
                    self.assertEqual(q(c, "SELECT COUNT(*) FROM sys.master_key_passwords"), [(1,)])
            finally:
                s2.stop()

    def test_smk_regenerate_and_backup(self):
        with SqlSim(nodes=2) as sim:
            with connect(sim.port(0), database="CM_P01") as c:
                rows = q(c, "SELECT TOP 1 RecoveryAndHardwareCore.DecryptString(RecoveryKey, DEFAULT) "
                            "FROM RecoveryAndHardwareCore_Keys")
                self.assertIsNotNone(rows[0][0])
                q(c, "BACKUP SERVICE MASTER KEY TO FILE = 'C:\\Windows\\Temp\\smk.bak' "
                     "ENCRYPTION BY PASSWORD = 'Smk#Backup-Passw0rd'")
                q(c, "ALTER SERVICE MASTER KEY REGENERATE")
                rows = q(c, "SELECT TOP 1 RecoveryAndHardwareCore.DecryptString(RecoveryKey, DEFAULT) "
                            "FROM RecoveryAndHardwareCore_Keys")
                self.assertIsNotNone(rows[0][0])     # re-encrypted by the new SMK
                q(c, "RESTORE SERVICE MASTER KEY FROM FILE = 'C:\\Windows\\Temp\\smk.bak' "
                     "DECRYPTION BY PASSWORD = 'Smk#Backup-Passw0rd'")
                self.assertIsNotNone(q(c, "SELECT TOP 1 RecoveryAndHardwareCore.DecryptString(RecoveryKey, DEFAULT) "
                                          "FROM RecoveryAndHardwareCore_Keys")[0][0])
                q(c, "ALTER MASTER KEY REGENERATE WITH ENCRYPTION BY PASSWORD = 'Regen#Passw0rd-1'")
                self.assertEqual(sorted(r[0] for r in q(c, "SELECT crypt_type FROM sys.key_encryptions")),
                                 ["ESKM", "ESP2"])
                self.assertEqual(sqlerr(c, "ALTER MASTER KEY DROP ENCRYPTION BY PASSWORD = 'Regen#Passw0rd-1'")[0],
                                 15558)
                self.assertIsNotNone(q(c, "SELECT TOP 1 RecoveryAndHardwareCore.DecryptString(RecoveryKey, DEFAULT) "
                                          "FROM RecoveryAndHardwareCore_Keys")[0][0])
                # OPENROWSET reads the node's file; CERTPRIVATEKEY / FROM BINARY copy pattern
                r = q(c, "SELECT BulkColumn FROM OPENROWSET(BULK N'C:\\Windows\\Temp\\smk.bak', SINGLE_BLOB) AS f")
                self.assertTrue(r[0][0].startswith(b"{"))
                enc = q(c, "SELECT CERTENCODED(CERT_ID('BitLockerManagement_CERT')), "
                           "CERTPRIVATEKEY(CERT_ID('BitLockerManagement_CERT'), 'Copy#Passw0rd-1')")[0]
                q(c, "USE master")
                q(c, "CREATE MASTER KEY ENCRYPTION BY PASSWORD = 'Master#Dmk-Passw0rd'")
                q(c, f"CREATE CERTIFICATE CopyCert FROM BINARY = 0x{enc[0].hex()} WITH PRIVATE KEY "
                     f"(BINARY = 0x{enc[1].hex()}, DECRYPTION BY PASSWORD = 'Copy#Passw0rd-1')")
                self.assertEqual(q(c, "SELECT pvt_key_encryption_type FROM sys.certificates WHERE name = 'CopyCert'"),
                                 [("MK",)])


if __name__ == "__main__":
    main()
