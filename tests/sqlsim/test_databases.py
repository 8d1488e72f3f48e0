#!/usr/bin/python3
"""sqlsim: --extra-databases, --database-name (awkward names everywhere a name goes), CREATE/DROP DATABASE
for scratch databases outside the AG (DMK and certificate statements inside them), --latency-handshake and
the per-node / per-connection statistics, and the state files written only on change."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from simtest import DMK_PW, SqlSim, connect, main, q, sqlerr  # noqa: E402

try:
    import pytds  # noqa: F401
except ImportError:
    print("python3-tds missing")
    sys.exit(77)

ODD = ["we]ird 'name", "Ünïcødé データベース", "x" * 128, "a]]b''c d", "[br]"]


def qi(name):
    return "[" + name.replace("]", "]]") + "]"


def qs(text):
    return "N'" + text.replace("'", "''") + "'"


class ExtraDatabases(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        extra = ["--extra-databases", "12"]
        for n in ODD:
            extra += ["--database-name", n]
        cls.sim = SqlSim(nodes=3, dmk_password=DMK_PW, extra=extra).start()

    @classmethod
    def tearDownClass(cls):
        cls.sim.stop()

    def test_ready_and_status(self):
        dbs = self.sim.ready["databases"]
        self.assertIn("CM_P01", dbs)
        for i in range(1, 13):
            self.assertIn(f"DB{i:04d}", dbs)
        for n in ODD:
            self.assertIn(n, dbs)
        st = self.sim.control("GET", "/status")
        d = st["databases"]["DB0007"]
        self.assertEqual(d["certificates"], ["DMKAGENT_TEST_CERT"])
        self.assertEqual(sorted(e["kind"] for e in d["dmk_encryptions"]), ["pw", "smk"])

    def test_catalog_on_every_node(self):
        for i in range(3):
            with connect(self.sim.port(i)) as c:
                names = {r[0] for r in q(c, "SELECT database_name FROM sys.availability_databases_cluster")}
                self.assertTrue(set(ODD) <= names)
                self.assertIn("DB0012", names)
                rows = q(c, "SELECT name, is_master_key_encrypted_by_server FROM sys.databases "
                            f"WHERE name = {qs(ODD[0])}")
                self.assertEqual(rows, [(ODD[0], True)])

    def test_odd_names_everywhere(self):
        with connect(self.sim.port(0)) as c:
            for n in ODD:
                self.assertEqual(q(c, f"SELECT DB_NAME(DB_ID({qs(n)}))"), [(n,)])
                self.assertEqual(q(c, f"SELECT name FROM {qi(n)}.sys.certificates"), [("DMKAGENT_TEST_CERT",)])
                self.assertEqual(q(c, f"SELECT COUNT(*) FROM {qi(n)}.sys.symmetric_keys"), [(1,)])
                q(c, f"USE {qi(n)}")
                self.assertEqual(q(c, "SELECT DB_NAME()"), [(n,)])
                q(c, "USE master")
        # sp_control_dbmasterkey_password: RPC with @db_name, and EXEC in a batch, on a secondary
        with connect(self.sim.port(1)) as c:
            for k, n in enumerate(ODD):
                pw = f"Odd#Passw0rd-{k}"
                if k % 2:
                    c.cursor().callproc("sp_control_dbmasterkey_password",
                                        {"@db_name": n, "@password": pw, "@action": "add"})
                else:
                    q(c, f"EXEC sp_control_dbmasterkey_password @db_name = {qs(n)}, @password = {qs(pw)}, "
                         "@action = N'add'")
                idents = {r[0] for r in q(c, "SELECT credential_identity FROM sys.credentials")}
                self.assertIn(n, idents)
            num, _sev, _m = sqlerr(c, "EXEC sp_control_dbmasterkey_password @db_name = N'we]ird', "
                                      "@password = N'Odd#Passw0rd-0', @action = N'add'")
            self.assertEqual(num, 15010)

    def test_register_and_verify_shape(self):
        """What register and verify do on an extra database: a credential on a secondary opens the DMK
        there; the certificate's private key is then usable."""
        with connect(self.sim.port(2)) as c:
            q(c, "EXEC sp_control_dbmasterkey_password @db_name = N'DB0003', @password = "
                 f"{qs(DMK_PW)}, @action = N'add'")
        with connect(self.sim.port(2), database="DB0003") as c:
            r = q(c, "SELECT DECRYPTBYCERT(CERT_ID('DMKAGENT_TEST_CERT'), "
                     "ENCRYPTBYCERT(CERT_ID('DMKAGENT_TEST_CERT'), N'probe'))")
            self.assertEqual(r[0][0], "probe".encode("utf-16-le"))
        with connect(self.sim.port(1), database="DB0004") as c:    # no credential on node 2 for DB0004
            r = q(c, "SELECT DECRYPTBYCERT(CERT_ID('DMKAGENT_TEST_CERT'), "
                     "ENCRYPTBYCERT(CERT_ID('DMKAGENT_TEST_CERT'), N'probe'))")
            self.assertEqual(r, [(None,)])
            self.assertEqual(q(c, f"OPEN MASTER KEY DECRYPTION BY PASSWORD = {qs(DMK_PW)}"), None)

    def test_exec_procedure_named_by_variable(self):
        """EXEC @module_name_var args (T-SQL's form; sql_dmk_password_many uses it to keep its add RPCs
        short): the procedure the variable names runs with the arguments, positional or named."""
        with connect(self.sim.port(2)) as c:
            q(c, "DECLARE @s sysname = N'sp_control_dbmasterkey_password'; "
                 f"EXEC @s N'DB0005', {qs(DMK_PW)}, N'add'")
            num, _sev, _m = sqlerr(c, "DECLARE @s sysname = N'sp_control_dbmasterkey_password'; "
                                      f"EXEC @s @db_name = N'DB0005', @password = {qs(DMK_PW)}, @action = N'add'")
            self.assertEqual(num, 15594)          # the same procedure: already there
            num, _sev, _m = sqlerr(c, "DECLARE @s sysname = N'sp_no_such_proc'; EXEC @s 1")
            self.assertEqual(num, 2812)
        with connect(self.sim.port(2), database="DB0005") as c:
            r = q(c, "SELECT DECRYPTBYCERT(CERT_ID('DMKAGENT_TEST_CERT'), "
                     "ENCRYPTBYCERT(CERT_ID('DMKAGENT_TEST_CERT'), N'probe'))")
            self.assertEqual(r[0][0], "probe".encode("utf-16-le"))

    def test_writes_only_on_primary(self):
        with connect(self.sim.port(1), database="DB0005") as c:
            num, _s, _m = sqlerr(c, "CREATE CERTIFICATE X WITH SUBJECT = 'x'")
            self.assertEqual(num, 3906)


class ScratchDatabases(unittest.TestCase):
    def test_create_drop_and_keys(self):
        with SqlSim(nodes=2, dmk_password=DMK_PW, extra=["--extra-databases", "1"]) as sim:
            name = "scratch ]' é"
            with connect(sim.port(1)) as c:           # a secondary: the scratch database is local, writable
                q(c, f"CREATE DATABASE {qi(name)}")
                self.assertEqual(sqlerr(c, f"CREATE DATABASE {qi(name)}")[0], 1801)
                self.assertEqual(sqlerr(c, "CREATE DATABASE [DB0001]")[0], 1801)
                rows = q(c, f"SELECT name, replica_id, group_database_id FROM sys.databases WHERE name = {qs(name)}")
                self.assertEqual(rows, [(name, None, None)])
                self.assertEqual(q(c, f"SELECT database_name FROM sys.availability_databases_cluster "
                                      f"WHERE database_name = {qs(name)}"), [])
                self.assertEqual(q(c, f"SELECT sys.fn_hadr_is_primary_replica({qs(name)})"), [(None,)])
                # DMK backup of an AG database (readable here; needs the DMK open: by password)
                q(c, "USE DB0001")
                q(c, f"OPEN MASTER KEY DECRYPTION BY PASSWORD = {qs(DMK_PW)}")
                enc = q(c, "SELECT CERTENCODED(CERT_ID('DMKAGENT_TEST_CERT')), "
                           "CERTPRIVATEKEY(CERT_ID('DMKAGENT_TEST_CERT'), N'Copy#Passw0rd-1')")[0]
                self.assertIsNotNone(enc[1])
                q(c, f"USE {qi(name)}")
                q(c, "CREATE MASTER KEY ENCRYPTION BY PASSWORD = N'Scratch#Passw0rd-1'")
                q(c, f"CREATE CERTIFICATE DMKAGENT_TEST_CERT FROM BINARY = 0x{enc[0].hex()} WITH PRIVATE KEY "
                     f"(BINARY = 0x{enc[1].hex()}, DECRYPTION BY PASSWORD = N'Copy#Passw0rd-1')")
                self.assertEqual(q(c, "SELECT pvt_key_encryption_type FROM sys.certificates"), [("MK",)])
                r = q(c, "SELECT DECRYPTBYCERT(CERT_ID('DMKAGENT_TEST_CERT'), "
                         "ENCRYPTBYCERT(CERT_ID('DMKAGENT_TEST_CERT'), N'hi'))")
                self.assertEqual(r[0][0], "hi".encode("utf-16-le"))
                # sp_control works on a scratch database too
                q(c, f"EXEC sp_control_dbmasterkey_password @db_name = {qs(name)}, "
                     "@password = N'Scratch#Passw0rd-1', @action = N'add'")
                q(c, "USE master")
            with connect(sim.port(0)) as c:                # not on the other node
                self.assertEqual(sqlerr(c, f"USE {qi(name)}")[0], 911)
            with connect(sim.port(0), database="DB0001") as c:   # primary: back up the DMK
                q(c, "BACKUP MASTER KEY TO FILE = N'C:\\Windows\\Temp\\db1.dmk' "
                     "ENCRYPTION BY PASSWORD = N'File#Passw0rd-1'")
                q(c, "USE master")
                q(c, "CREATE DATABASE [restore test]")
                q(c, "USE [restore test]")
                q(c, "RESTORE MASTER KEY FROM FILE = N'C:\\Windows\\Temp\\db1.dmk' DECRYPTION BY PASSWORD = "
                     "N'File#Passw0rd-1' ENCRYPTION BY PASSWORD = N'Restored#Passw0rd-1'")
                g1 = q(c, "SELECT key_guid FROM sys.symmetric_keys")
                g2 = q(c, "SELECT key_guid FROM DB0001.sys.symmetric_keys")
                self.assertEqual(g1, g2)
                # in use by this session: 3702; system and AG databases cannot be dropped
                self.assertEqual(sqlerr(c, "DROP DATABASE [restore test]")[0], 3702)
                q(c, "USE master")
                self.assertEqual(sqlerr(c, "DROP DATABASE master")[0], 3708)
                self.assertEqual(sqlerr(c, "DROP DATABASE DB0001")[0], 3752)
                self.assertEqual(sqlerr(c, "DROP DATABASE nosuch")[0], 3701)
                q(c, "DROP DATABASE IF EXISTS nosuch")
                q(c, "DROP DATABASE [restore test]")
                self.assertEqual(sqlerr(c, "USE [restore test]")[0], 911)
                q(c, "CREATE DATABASE s2 ON PRIMARY (NAME = s2, FILENAME = 'C:\\x\\s2.mdf') "
                     "COLLATE SQL_Latin1_General_CP1_CI_AS WITH TRUSTWORTHY ON; SELECT 1")
                self.assertEqual(q(c, "SELECT COUNT(*) FROM sys.databases WHERE name = 's2'"), [(1,)])
            sim.stop()
            # a restart resumes the scratch databases (per node)
            with SqlSim(nodes=2, state=sim.state) as sim2:
                with connect(sim2.port(1), database=name) as c:
                    self.assertEqual(q(c, "SELECT name FROM sys.certificates"), [("DMKAGENT_TEST_CERT",)])
                with connect(sim2.port(0)) as c:
                    self.assertEqual(q(c, "SELECT COUNT(*) FROM sys.databases WHERE name = 's2'"), [(1,)])

    def test_permission(self):
        with SqlSim(nodes=1, scenario="empty") as sim:
            with connect(sim.port(0)) as c:
                q(c, "CREATE LOGIN plain WITH PASSWORD = N'Plain#Passw0rd-1'")
            with connect(sim.port(0), user="plain", password="Plain#Passw0rd-1") as c:
                num, _s, msg = sqlerr(c, "CREATE DATABASE nope")
                self.assertEqual(num, 262)
                self.assertIn("CREATE DATABASE permission denied", msg)


class LatencyAndStats(unittest.TestCase):
    def test_round_trips_and_latency(self):
        with SqlSim(nodes=2, extra=["--latency-ms", "100"]) as sim:
            t0 = time.time()
            c = connect(sim.port(0))
            t_conn = time.time() - t0
            t0 = time.time()
            # one request message with three statements: one latency
            q(c, "SELECT 1; SELECT 2; SELECT 3")
            t_req = time.time() - t0
            c.close()
            self.assertGreaterEqual(t_req, 0.099)
            self.assertLess(t_req, 0.19)
            self.assertGreaterEqual(t_conn, 0.099)      # the login
            self.assertLess(t_conn, 0.19)               # the handshake costs nothing by default
            s = sim.control("GET", "/stats")
            n1 = s["by_node"]["SQLNODE1"]
            self.assertEqual(n1["connections"], 1)
            self.assertEqual(n1["statements"], 3)
            self.assertEqual(n1["connect_round_trips"], 4)   # PRELOGIN, 2 TLS 1.2 flights, LOGIN7
            pc = [x for x in s["per_connection"] if x["node"] == "SQLNODE1"]
            self.assertEqual(len(pc), 1)
            self.assertEqual(pc[0]["statements"], 3)
            self.assertEqual(pc[0]["round_trips"] - pc[0]["connect_round_trips"], pc[0]["requests"])
            # service time: sqlsim's own clock, the injected latency left out (bench/README.md)
            self.assertGreater(pc[0]["service_ms"], 0)
            self.assertLess(pc[0]["service_ms"], 150)    # two latency sleeps (login, request) were 200 ms
            self.assertFalse(pc[0]["via_listener"])
            self.assertAlmostEqual(n1["service_ms"], pc[0]["service_ms"], places=3)
            sim.control("POST", "/faults", {"latency_handshake": True})
            t0 = time.time()
            c = connect(sim.port(1))
            t_conn = time.time() - t0
            c.close()
            self.assertGreaterEqual(t_conn, 0.399)      # every connect round trip pays it
            pc = [x for x in sim.control("GET", "/stats")["per_connection"] if x["node"] == "SQLNODE2"]
            self.assertLess(pc[0]["service_ms"], 300)    # not the 400 ms of handshake latency
            sim.control("POST", "/stats/reset")
            self.assertEqual(sim.control("GET", "/stats")["by_node"], {})

    def test_state_written_only_on_change(self):
        with SqlSim(nodes=3, dmk_password=DMK_PW, extra=["--extra-databases", "3"]) as sim:
            def mtimes():
                out = {}
                for root, _d, files in os.walk(sim.state):
                    for f in files:
                        if f.endswith(".json"):
                            p = os.path.join(root, f)
                            out[os.path.relpath(p, sim.state)] = os.stat(p).st_mtime_ns
                return out
            before = mtimes()
            time.sleep(0.02)
            with connect(sim.port(2)) as c:
                q(c, "SELECT * FROM sys.databases")
                q(c, f"EXEC sp_control_dbmasterkey_password @db_name = N'DB0002', @password = {qs(DMK_PW)}, "
                     "@action = N'add'")
            after = mtimes()
            changed = sorted(k for k in after if after[k] != before.get(k))
            self.assertEqual(changed, ["node2/master.json"])


if __name__ == "__main__":
    main()
