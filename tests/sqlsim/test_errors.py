#!/usr/bin/python3
"""Every documented error number the simulator models, provoked through pytds, with number, severity and text
(sqlserver-semantics.md; tds-notes.md for 18456)."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from simtest import DMK_PW, SA_PW, SqlSim, connect, main, q, sqlerr  # noqa: E402

PW = "Str0ng#Passw0rd-x"
sim = None


def setUpModule():
    global sim
    sim = SqlSim(nodes=2, dmk_password=DMK_PW).start()


def tearDownModule():
    sim.stop()


class Errors(unittest.TestCase):
    def expect(self, conn, sql, number, severity=None, text=None):
        n, sev, msg = sqlerr(conn, sql)
        self.assertEqual(n, number, f"{sql!r}: got {n} {msg}")
        if severity is not None:
            self.assertEqual(sev, severity)
        if text is not None:
            self.assertEqual(msg, text)
        return msg

    def test_102_syntax(self):
        with connect(sim.port(0)) as c:
            self.expect(c, "SELECT FROM WHERE", 102, 15, "Incorrect syntax near 'FROM'.")
            self.expect(c, "CREATE MASTER KEY", 102, 15, "Incorrect syntax near 'KEY'.")
            self.expect(c, "MERGE INTO x", 102)

    def test_208_207(self):
        with connect(sim.port(0)) as c:
            self.expect(c, "SELECT * FROM sys.no_such_view", 208, 16, "Invalid object name 'sys.no_such_view'.")
            self.expect(c, "SELECT no_such_col FROM sys.databases", 207, 16, "Invalid column name 'no_such_col'.")

    def test_15313_wrong_password(self):
        with connect(sim.port(0), database="CM_P01") as c:
            self.expect(c, "OPEN MASTER KEY DECRYPTION BY PASSWORD = 'wrong'", 15313, 16,
                        "The key is not encrypted using the specified decryptor.")
            self.expect(c, "ALTER MASTER KEY DROP ENCRYPTION BY PASSWORD = 'not-this-one'", 15313)
            q(c, f"OPEN MASTER KEY DECRYPTION BY PASSWORD = '{DMK_PW}'; CLOSE MASTER KEY")

    def test_15578_15580_15558_15581(self):
        with connect(sim.port(0), database="CM_P01") as c:
            self.expect(c, f"CREATE MASTER KEY ENCRYPTION BY PASSWORD = '{PW}'", 15578, 16,
                        "There is already a master key in the database. Please drop it before performing this "
                        "statement.")
            self.expect(c, "DROP MASTER KEY", 15580, 16,
                        "Cannot drop master key because certificate 'BitLockerManagement_CERT' is encrypted by it.")
            self.expect(c, f"ALTER MASTER KEY DROP ENCRYPTION BY PASSWORD = '{DMK_PW}'", 15558)
            # a scratch database-level setup in master: a DMK without SMK encryption cannot be altered unopened
            q(c, "USE master")
            q(c, f"CREATE MASTER KEY ENCRYPTION BY PASSWORD = '{PW}'")
            q(c, "ALTER MASTER KEY DROP ENCRYPTION BY SERVICE MASTER KEY")
            self.expect(c, f"ALTER MASTER KEY ADD ENCRYPTION BY PASSWORD = 'An0ther#Passw0rd'", 15581, 16,
                        "Please create a master key in the database or open the master key in the session before "
                        "performing this operation.")
            self.expect(c, f"BACKUP MASTER KEY TO FILE = 'C:\\Windows\\Temp\\m.key' ENCRYPTION BY PASSWORD = '{PW}'",
                        15581)
            q(c, f"OPEN MASTER KEY DECRYPTION BY PASSWORD = '{PW}'")
            q(c, "ALTER MASTER KEY ADD ENCRYPTION BY PASSWORD = 'An0ther#Passw0rd'")
            q(c, "ALTER MASTER KEY DROP ENCRYPTION BY PASSWORD = 'An0ther#Passw0rd'")
            q(c, "CLOSE MASTER KEY; DROP MASTER KEY")

    def test_15151_15232_15240_15465(self):
        with connect(sim.port(0), database="CM_P01") as c:
            self.expect(c, "DROP CERTIFICATE NoSuchCert", 15151, 16,
                        "Cannot find the certificate 'NoSuchCert', because it does not exist or you do not have "
                        "permission.")
            self.expect(c, "CREATE CERTIFICATE BitLockerManagement_CERT WITH SUBJECT = 'x'", 15232, 16,
                        "A certificate with name 'BitLockerManagement_CERT' already exists or this certificate "
                        "already has been added to the database.")
            q(c, "BACKUP CERTIFICATE BitLockerManagement_CERT TO FILE = 'C:\\Windows\\Temp\\e.cer' "
                 f"WITH PRIVATE KEY (FILE = 'C:\\Windows\\Temp\\e.pvk', ENCRYPTION BY PASSWORD = '{PW}')")
            self.expect(c, "BACKUP CERTIFICATE BitLockerManagement_CERT TO FILE = 'C:\\Windows\\Temp\\e.cer'", 15240,
                        16, "Cannot write into file 'C:\\Windows\\Temp\\e.cer'. Verify that you have write "
                            "permissions, that the file path is valid, and that the file does not already exist.")
            q(c, "USE master")
            self.expect(c, "CREATE CERTIFICATE Copy1 FROM FILE = 'C:\\Windows\\Temp\\e.cer' WITH PRIVATE KEY "
                           "(FILE = 'C:\\Windows\\Temp\\e.pvk', DECRYPTION BY PASSWORD = 'Wr0ng#password')", 15465)

    def test_sp_control_errors(self):
        with connect(sim.port(0)) as c:
            def sp(db, pw, action):
                return f"EXEC sp_control_dbmasterkey_password @db_name = N'{db}', @password = N'{pw}', " \
                       f"@action = N'{action}'"
            self.expect(c, sp("master", PW, "add"), 15276, 16,
                        "Cannot provision master key passwords for system databases.")
            q(c, sp("CM_P01", "Any#Passw0rd-1", "add"))
            self.expect(c, sp("CM_P01", "Any#Passw0rd-1", "add"), 15594, 16,
                        "The password is already provisioned for the database 'CM_P01'")
            q(c, sp("CM_P01", "Any#Passw0rd-1", "drop"))
            self.expect(c, sp("CM_P01", "Any#Passw0rd-1", "drop"), 15595, 16,
                        "The password cannot be dropped because it is not provisioned for the database 'CM_P01'")
            self.expect(c, "EXEC sp_no_such_proc", 2812)

    def test_15247_least_privilege(self):
        with connect(sim.port(0)) as c:
            q(c, "CREATE LOGIN lowpriv WITH PASSWORD = 'L0w#Privileged!'")
            q(c, "USE CM_P01; CREATE USER lowpriv FOR LOGIN lowpriv")
        with connect(sim.port(0), user="lowpriv", password="L0w#Privileged!") as c:
            msg = self.expect(c, "EXEC sp_control_dbmasterkey_password @db_name=N'CM_P01', @password=N'x', "
                                 "@action=N'add'", 15247, 16)
            self.assertEqual(msg, "User does not have permission to perform this action.")
            # over RPC too
            import pytds
            with c.cursor() as cur:
                with self.assertRaises(pytds.OperationalError) as cm:
                    cur.callproc("sp_control_dbmasterkey_password", ("CM_P01", "x", "add"))
                self.assertEqual(cm.exception.number, 15247)
            q(c, "USE CM_P01")
            self.expect(c, f"ALTER MASTER KEY ADD ENCRYPTION BY PASSWORD = '{PW}'", 15151, 16,
                        "Cannot find the symmetric key 'master key', because it does not exist or you do not have "
                        "permission.")
            self.assertEqual(q(c, "SELECT HAS_PERMS_BY_NAME('CM_P01', 'DATABASE', 'CONTROL')"), [(0,)])
        with connect(sim.port(0)) as c:
            q(c, "USE CM_P01; GRANT CONTROL ON DATABASE::CM_P01 TO lowpriv")
        with connect(sim.port(0), user="lowpriv", password="L0w#Privileged!", database="CM_P01") as c:
            self.assertEqual(q(c, "SELECT HAS_PERMS_BY_NAME('CM_P01', 'DATABASE', 'CONTROL')"), [(1,)])
            q(c, "EXEC sp_control_dbmasterkey_password @db_name=N'CM_P01', @password=N'Lp#Passw0rd1', "
                 "@action=N'add'")
            # the credential is not visible without VIEW ANY DEFINITION
            self.assertEqual(q(c, "SELECT COUNT(*) FROM sys.credentials"), [(0,)])
            # DMVs need VIEW SERVER STATE
            self.assertEqual(sqlerr(c, "SELECT role_desc FROM sys.dm_hadr_availability_replica_states")[:2],
                             (300, 14))
            # the server itself is securable NULL, class NULL (the docs' example A),
            # whatever the current database grants
            self.assertEqual(q(c, "SELECT HAS_PERMS_BY_NAME(NULL, NULL, 'VIEW SERVER STATE')"), [(0,)])
        with connect(sim.port(0)) as c:
            q(c, "GRANT VIEW SERVER STATE TO lowpriv")
        with connect(sim.port(0), user="lowpriv", password="L0w#Privileged!") as c:
            self.assertEqual(len(q(c, "SELECT role_desc FROM sys.dm_hadr_availability_replica_states")), 2)
            self.assertEqual(q(c, "SELECT HAS_PERMS_BY_NAME(NULL, NULL, 'VIEW SERVER STATE'), "
                                  "HAS_PERMS_BY_NAME(NULL, NULL, 'ALTER ANY CREDENTIAL')"), [(1, 0)])

    def test_3906_write_on_secondary(self):
        with connect(sim.port(1), database="CM_P01") as c:
            self.expect(c, f"ALTER MASTER KEY ADD ENCRYPTION BY PASSWORD = '{PW}'", 3906, 16,
                        'Failed to update database "CM_P01" because the database is read-only.')
            self.expect(c, "DROP CERTIFICATE BitLockerManagement_CERT", 3906)
            # reading works on a readable secondary
            self.assertEqual(len(q(c, "SELECT * FROM sys.certificates")), 1)

    def test_41122_failover_on_primary(self):
        with connect(sim.port(0)) as c:
            msg = self.expect(c, "ALTER AVAILABILITY GROUP [AG1] FAILOVER", 41122, 16)
            self.assertIn("AG1", msg)

    def test_18456_login_failed(self):
        import pytds
        with self.assertRaises(pytds.Error) as cm:
            connect(sim.port(0), password="wrong")
        self.assertEqual(getattr(cm.exception, "number", None), 18456)
        self.assertIn("Login failed for user 'sa'.", str(cm.exception))

    def test_976_978(self):
        try:
            sim.control("POST", "/faults", {"readable_secondaries": "no"})
            with connect(sim.port(1)) as c:
                n, sev, msg = sqlerr(c, "USE CM_P01")
                self.assertEqual((n, sev), (976, 14))
                self.assertIn("The target database, 'CM_P01', is participating in an availability group", msg)
                self.assertEqual(sqlerr(c, "SELECT * FROM CM_P01.sys.symmetric_keys")[0], 976)
                # sp_control works there: master is outside the AG
                q(c, "EXEC sp_control_dbmasterkey_password @db_name=N'CM_P01', @password=N'Sec#Passw0rd1', "
                     "@action=N'add'")
            sim.control("POST", "/faults", {"readable_secondaries": "read_only"})
            with connect(sim.port(1)) as c:
                n, sev, msg = sqlerr(c, "USE CM_P01")
                self.assertEqual((n, sev), (978, 14))
            # (pytds 1.11 sets TypeFlags 0x40 instead of fReadOnlyIntent 0x20, so it cannot state the intent)
        finally:
            sim.control("POST", "/faults", {"readable_secondaries": "yes"})


if __name__ == "__main__":
    main()
