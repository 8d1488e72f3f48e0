#!/usr/bin/python3
"""The ConfigMgr Always On runbook (seeds/000, memdocs bitlocker-keys-sql-always-on.md) replayed with pytds:
both procedures, failing over to every node and running the document's check query."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from simtest import DMK_PW, SqlSim, connect, main, q, sqlerr  # noqa: E402

CHECK = ("SELECT TOP 5 RecoveryAndHardwareCore.DecryptString(RecoveryKey, DEFAULT)\n"
         "FROM RecoveryAndHardwareCore_Keys\nORDER BY LastUpdateTime DESC")
NEW_PW = "N3w-DMK#password!"
BACKUP_PW = "Backup#Passw0rd-1"
DB = "CM_P01"


def register(conn, pw):
    with conn.cursor() as c:
        c.execute("EXEC sp_control_dbmasterkey_password\n    @db_name = N'CM_P01',\n"
                  f"    @password = N'{pw}',\n    @action = N'add';")


def failover_to(sim, i):
    """ALTER AVAILABILITY GROUP ... FAILOVER on the target secondary (a no-op if it is already primary)."""
    if sim.control("GET", "/status")["primary"] == sim.ready["nodes"][i]["name"]:
        return
    with connect(sim.port(i)) as c:
        q(c, "ALTER AVAILABILITY GROUP [AG1] FAILOVER")


def check(sim, i):
    with connect(sim.port(i), database=DB) as c:
        return [r[0] for r in q(c, CHECK)]


def plaintext(rows):
    return len(rows) == 5 and all(isinstance(r, str) and len(r) == 55 for r in rows)


class KnownPassword(unittest.TestCase):
    def test_known_password_procedure(self):
        with SqlSim(nodes=3, dmk_password=DMK_PW) as sim:
            # the primary (node 1) opens the DMK with its SMK
            self.assertTrue(plaintext(check(sim, 0)))
            # before registration a failed-over node returns NULL rows
            failover_to(sim, 1)
            self.assertEqual(check(sim, 1), [None] * 5)
            # "Execute the following command on each node"
            for i in range(3):
                with connect(sim.port(i)) as c:
                    register(c, DMK_PW)
                    n = q(c, "SELECT COUNT(*) FROM sys.master_key_passwords m JOIN sys.credentials c "
                             "ON m.credential_id = c.credential_id WHERE c.name LIKE '##DBMKEY_%'")[0][0]
                    self.assertEqual(n, 1)
            # verify: fail over to each node and run the check query
            for i in (1, 2, 0):
                failover_to(sim, i)
                self.assertTrue(plaintext(check(sim, i)), f"node {i}")
            # and through the listener
            with connect(sim.listener, database=DB) as c:
                self.assertTrue(plaintext([r[0] for r in q(c, CHECK)]))


class UnknownPassword(unittest.TestCase):
    def test_unknown_password_procedure(self):
        with SqlSim(nodes=3) as sim:
            # Find a valid DMK: the primary decrypts; the others give NULL after failover
            self.assertTrue(plaintext(check(sim, 0)))
            failover_to(sim, 2)
            self.assertEqual(check(sim, 2), [None] * 5)
            failover_to(sim, 0)
            self.assertTrue(plaintext(check(sim, 0)))
            with connect(sim.port(0), database=DB) as c:
                before = q(c, "SELECT thumbprint FROM sys.certificates WHERE name = 'BitLockerManagement_CERT'")
                old_guid = q(c, "SELECT key_guid FROM sys.symmetric_keys WHERE name = '##MS_DatabaseMasterKey##'")
                # 1. back up the certificate with its private key
                q(c, "BACKUP CERTIFICATE BitLockerManagement_CERT\nTO FILE = 'C:\\Windows\\Temp\\BitLockerManagement_CERT'\n"
                     "WITH PRIVATE KEY\n(\n    FILE = 'C:\\Windows\\Temp\\BitLockerManagement_CERT_KEY',\n"
                     f"    ENCRYPTION BY PASSWORD = '{BACKUP_PW}'\n);")
                # 2. back up the DMK
                q(c, f"BACKUP MASTER KEY\nTO FILE = 'C:\\Windows\\Temp\\DMK'\nENCRYPTION BY PASSWORD = '{BACKUP_PW}';")
                # a second backup to the same file fails with 15240
                self.assertEqual(sqlerr(c, f"BACKUP MASTER KEY TO FILE = 'C:\\Windows\\Temp\\DMK' "
                                            f"ENCRYPTION BY PASSWORD = '{BACKUP_PW}'")[0], 15240)
                # 3. drop the certificate and the DMK
                q(c, "DROP CERTIFICATE BitLockerManagement_CERT;\nDROP MASTER KEY;")
                self.assertEqual(q(c, "SELECT COUNT(*) FROM sys.symmetric_keys"), [(0,)])
                # 4. create a new DMK
                q(c, f"CREATE MASTER KEY\nENCRYPTION BY PASSWORD = '{NEW_PW}';")
                new_guid = q(c, "SELECT key_guid FROM sys.symmetric_keys WHERE name = '##MS_DatabaseMasterKey##'")
                self.assertNotEqual(old_guid, new_guid)
                self.assertEqual(sorted(r[0] for r in q(c, "SELECT crypt_type FROM sys.key_encryptions")),
                                 ["ESKM", "ESP2"])
                # 5. register it
                register(c, NEW_PW)
                # 6. re-import the certificate
                q(c, "CREATE CERTIFICATE BitLockerManagement_CERT AUTHORIZATION RecoveryAndHardwareCore\n"
                     "FROM FILE = 'C:\\Windows\\Temp\\BitLockerManagement_CERT'\nWITH PRIVATE KEY\n(\n"
                     "    FILE = 'C:\\Windows\\Temp\\BitLockerManagement_CERT_KEY',\n"
                     f"    DECRYPTION BY PASSWORD = '{BACKUP_PW}'\n);")
                after = q(c, "SELECT thumbprint FROM sys.certificates WHERE name = 'BitLockerManagement_CERT'")
                self.assertEqual(before, after)
                self.assertEqual(q(c, "SELECT pvt_key_encryption_type FROM sys.certificates"), [("MK",)])
                # 7. grant
                q(c, "GRANT CONTROL ON CERTIFICATE::BitLockerManagement_CERT TO RecoveryAndHardwareRead;\n"
                     "GRANT CONTROL ON CERTIFICATE::BitLockerManagement_CERT TO RecoveryAndHardwareWrite;")
                n = q(c, "SELECT COUNT(*) FROM sys.database_principals p "
                         "JOIN sys.database_permissions dp ON dp.grantee_principal_id = p.principal_id "
                         "JOIN sys.certificates c ON dp.major_id = c.certificate_id AND dp.class = 25 "
                         "WHERE c.name = 'BitLockerManagement_CERT' AND dp.permission_name = 'CONTROL' "
                         "AND p.name IN ('RecoveryAndHardwareCore', 'RecoveryAndHardwareRead', "
                         "'RecoveryAndHardwareWrite')")[0][0]
                self.assertGreaterEqual(n, 2)
                self.assertTrue(plaintext([r[0] for r in q(c, CHECK)]))
            # 8-10. fail over to each other node; NULL before registration, plaintext after
            for i in (1, 2):
                failover_to(sim, i)
                self.assertEqual(check(sim, i), [None] * 5, f"node {i} before registration")
                with connect(sim.port(i)) as c:
                    register(c, NEW_PW)
                self.assertTrue(plaintext(check(sim, i)), f"node {i} after registration")
            # 11. fail back; verify every node
            failover_to(sim, 0)
            self.assertTrue(plaintext(check(sim, 0)))
            for i in (1, 2):
                failover_to(sim, i)
                self.assertTrue(plaintext(check(sim, i)))
            # the credential open re-encrypted the DMK by the local SMK of the last primary
            st = sim.control("GET", "/status")
            smk = [e["smk_node"] for e in st["databases"][DB]["dmk_encryptions"] if e["kind"] == "smk"]
            self.assertEqual(smk, ["SQLNODE3"])


if __name__ == "__main__":
    main()
