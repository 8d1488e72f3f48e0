#!/usr/bin/python3
"""TDS protocol fidelity with pytds (python3-tds 1.11) and a raw TLS client: encryption negotiation, login,
batches, RPC (named/positional, sp_executesql, several RPCs in one request), tokens, types, attention."""
import os
import socket
import ssl
import struct
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from simtest import DMK_PW, SA_PW, SqlSim, connect, main, pki, q, sqlerr  # noqa: E402

import pytds  # noqa: E402

sim = None


def setUpModule():
    global sim
    sim = SqlSim(nodes=2, dmk_password=DMK_PW).start()


def tearDownModule():
    sim.stop()


# ------------------------------------------------------------------ a minimal raw TDS client
class Raw:
    def __init__(self, port, enc=1, tls=True):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.tls = None
        self.buf = b""
        self.send(0x12, self.prelogin(enc))
        typ, data = self.recv()
        self.server_enc = self._enc(data)
        if tls and self.server_enc in (0, 1, 3):
            ctx = ssl.create_default_context(cafile=pki()["ca_pem"])
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
            self.inb, self.outb = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = ctx.wrap_bio(self.inb, self.outb, server_hostname="localhost")
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self.send(0x12, self.outb.read())
                    _t, d = self.recv()
                    self.inb.write(d)
            self.tls = obj

    @staticmethod
    def prelogin(enc):
        opts = [(0, b"\x0f\x00\x00\x00\x00\x00"), (1, bytes([enc])), (2, b"\x00"), (3, b"\x00" * 4), (4, b"\x00")]
        hl = 5 * len(opts) + 1
        hdr, body = b"", b""
        for t, d in opts:
            hdr += struct.pack(">BHH", t, hl + len(body), len(d))
            body += d
        return hdr + b"\xff" + body

    @staticmethod
    def _enc(data):
        i = 0
        while data[i] != 0xFF:
            t, off, ln = struct.unpack(">BHH", data[i:i + 5])
            if t == 1:
                return data[off]
            i += 5
        return None

    def _raw_send(self, b):
        if self.tls:
            self.tls.write(b)
            b = self.outb.read()
        self.s.sendall(b)

    def send(self, typ, payload):
        self._raw_send(struct.pack(">BBHHBB", typ, 1, len(payload) + 8, 0, 1, 0) + payload)

    def _read(self, n):
        while len(self.buf) < n:
            d = self.s.recv(65536)
            if not d:
                raise EOFError()
            if self.tls:
                self.inb.write(d)
                try:
                    while True:
                        self.buf += self.tls.read(65536)
                except ssl.SSLWantReadError:
                    pass
            else:
                self.buf += d
        b, self.buf = self.buf[:n], self.buf[n:]
        return b

    def recv(self):
        data = b""
        while True:
            h = self._read(8)
            ln = struct.unpack(">H", h[2:4])[0]
            data += self._read(ln - 8)
            if h[1] & 1:
                return h[0], data

    def login(self, user="sa", password=SA_PW):
        def s(x):
            return x.encode("utf-16-le")

        def pw(x):
            return bytes((((b << 4) & 0xF0) | (b >> 4)) ^ 0xA5 for b in x.encode("utf-16-le"))
        fields = [s("rawhost"), s(user), pw(password), s("raw"), s("localhost"), b"", s("raw"), b"", b""]
        fixed = 94
        data = b""
        offs = []
        for f in fields:
            offs.append((fixed + len(data), len(f) // 2))
            data += f
        hdr = struct.pack("<IIIIII", 0, 0x74000004, 4096, 0, 0, 0) + bytes([0xE0, 0x03, 0, 0]) + \
            struct.pack("<iI", 0, 0x409)
        for i, (o, n) in enumerate(offs[:5]):
            hdr += struct.pack("<HH", o, n)
        hdr += struct.pack("<HH", 0, 0)              # extension
        hdr += struct.pack("<HH", *offs[6]) + struct.pack("<HH", *offs[5]) + struct.pack("<HH", offs[7][0], 0)
        hdr += b"\x00" * 6 + struct.pack("<HH", 0, 0) + struct.pack("<HH", 0, 0) + struct.pack("<HH", 0, 0) + \
            struct.pack("<I", 0)
        assert len(hdr) == fixed, len(hdr)
        pkt = hdr + data
        pkt = struct.pack("<I", len(pkt)) + pkt[4:]
        self.send(0x10, pkt)
        return self.recv()[1]

    def close(self):
        self.s.close()


ALL_HEADERS = bytes.fromhex("16000000120000000200") + b"\x00" * 8 + b"\x01\x00\x00\x00"


def nvarchar_param(name, value):
    n = name.encode("utf-16-le")
    v = value.encode("utf-16-le")
    return bytes([len(name)]) + n + b"\x00" + b"\xE7" + struct.pack("<H", 8000) + bytes.fromhex("0904D00034") + \
        struct.pack("<H", len(v)) + v


class Protocol(unittest.TestCase):
    def test_types_nulls_rowcounts(self):
        with connect(sim.port(0)) as c, c.cursor() as cur:
            cur.execute("SELECT CAST(1 AS bit) AS b, CAST(NULL AS nvarchar(10)) AS n, CAST(5000000000 AS bigint) AS big,"
                        " CAST(7 AS int) AS i, N'\u00e9t\u00e9' AS s, 0x00FF AS v, "
                        "CAST('6F9619FF-8B86-D011-B42D-00C04FC964FF' AS uniqueidentifier) AS g, "
                        "CAST('2024-05-06 07:08:09' AS datetime) AS d, SYSUTCDATETIME() AS d2, "
                        "CAST(NULL AS varbinary(10)) AS nv, CAST(NULL AS uniqueidentifier) AS ng")
            r = cur.fetchall()[0]
            self.assertEqual(r[:7], (True, None, 5000000000, 7, "\u00e9t\u00e9", b"\x00\xff",
                                     uuid.UUID("6F9619FF-8B86-D011-B42D-00C04FC964FF")))
            self.assertEqual(r[7].year, 2024)
            self.assertEqual((r[9], r[10]), (None, None))
            cur.execute("SELECT name FROM sys.databases ORDER BY database_id")
            self.assertEqual([x[0] for x in cur.fetchall()], ["master", "tempdb", "model", "msdb", "CM_P01"])
            self.assertEqual(cur.rowcount, 5)

    def test_multiple_statements_and_result_sets(self):
        with connect(sim.port(0)) as c, c.cursor() as cur:
            cur.execute("SELECT 1 AS a; SELECT 2 AS b, 3 AS c\n-- comment\n/* block */ SELECT 'x''y' AS d")
            self.assertEqual(cur.fetchall(), [(1,)])
            cur.nextset()
            self.assertEqual(cur.fetchall(), [(2, 3)])
            cur.nextset()
            self.assertEqual(cur.fetchall(), [("x'y",)])

    def test_parameters_via_sp_executesql(self):
        with connect(sim.port(0)) as c:
            self.assertEqual(q(c, "SELECT name FROM sys.databases WHERE name = %s AND database_id = %s",
                               ("CM_P01", 5)), [("CM_P01",)])
            self.assertEqual(q(c, "SELECT DB_ID(%s)", ("CM_P01",)), [(5,)])

    def test_rpc_by_name_positional_and_named(self):
        with connect(sim.port(1)) as c, c.cursor() as cur:
            cur.callproc("sp_control_dbmasterkey_password", ("CM_P01", "Rpc#Passw0rd-1", "add"))
            self.assertEqual(cur.get_proc_return_status(), 0)
            cur.callproc("sp_control_dbmasterkey_password", {"@db_name": "CM_P01", "@password": "Rpc#Passw0rd-1",
                                                             "@action": "drop"})
            self.assertEqual(q(c, "SELECT COUNT(*) FROM sys.master_key_passwords"), [(0,)])
            with self.assertRaises(pytds.OperationalError) as cm:
                cur.callproc("sp_control_dbmasterkey_password", ("CM_P01", "Rpc#Passw0rd-1", "drop"))
            self.assertEqual(cm.exception.number, 15595)
            self.assertEqual(cm.exception.procname, "sp_control_dbmasterkey_password")

    def test_large_result_spans_packets(self):
        with connect(sim.port(0), database="CM_P01") as c:
            r = q(c, "SELECT CERTENCODED(CERT_ID('BitLockerManagement_CERT')), c.name, c.thumbprint, "
                     "c.cert_serial_number FROM sys.certificates c CROSS JOIN sys.databases d CROSS JOIN "
                     "sys.availability_replicas")
            self.assertEqual(len(r), 10)
            from cryptography import x509
            import hashlib
            cert = x509.load_der_x509_certificate(r[0][0])
            self.assertEqual(hashlib.sha1(r[0][0]).digest(), r[0][2])
            self.assertEqual(cert.subject.rfc4514_string(), "CN=BitLocker Management")

    def test_attention_cancels_request(self):
        with connect(sim.port(0), timeout=1) as c:
            t0 = time.time()
            with self.assertRaises(pytds.TimeoutError):
                q(c, "WAITFOR DELAY '00:00:05'")
            self.assertLess(time.time() - t0, 4)
        with connect(sim.port(0), timeout=5) as c:
            self.assertEqual(q(c, "SELECT 1"), [(1,)])
        self.assertGreaterEqual(sim.control("GET", "/stats")["attentions"], 1)

    def test_login_only_encryption(self):
        before = sim.control("GET", "/stats")
        with connect(sim.port(0)) as c:
            self.assertEqual(q(c, "SELECT encrypt_option FROM sys.dm_exec_connections WHERE session_id = @@SPID"),
                             [("TRUE",)])
        with connect(sim.port(0), enc_login_only=True) as c:
            self.assertEqual(q(c, "SELECT @@SERVERNAME"), [("SQLNODE1",)])
            self.assertEqual(q(c, "SELECT encrypt_option FROM sys.dm_exec_connections WHERE session_id = @@SPID"),
                             [("FALSE",)])
        after = sim.control("GET", "/stats")
        self.assertEqual(after["login_only_sessions"], before["login_only_sessions"] + 1)
        self.assertGreater(after["plaintext_packets_after_login"], before["plaintext_packets_after_login"])

    def test_raw_several_rpcs_in_one_request(self):
        r = Raw(sim.port(0))
        self.assertEqual(r.server_enc, 1)
        resp = r.login()
        self.assertIn(b"\xAD", resp)       # LOGINACK
        call = b"\x1f\x00" + "sp_control_dbmasterkey_password".encode("utf-16-le") + b"\x00\x00"
        p = nvarchar_param("@db_name", "CM_P01") + nvarchar_param("@password", "Multi#Rpc-1") + \
            nvarchar_param("@action", "add")
        p2 = nvarchar_param("@db_name", "CM_P01") + nvarchar_param("@password", "Multi#Rpc-1") + \
            nvarchar_param("@action", "drop")
        r.send(0x03, ALL_HEADERS + call + p + b"\xff" + call + p2)
        _t, data = r.recv()
        # two RETURNSTATUS 0 and two DONEPROC, the first with MORE
        self.assertEqual(data.count(b"\x79\x00\x00\x00\x00"), 2, data.hex())
        self.assertTrue(data.endswith(b"\xfe\x00\x00\x00\x00" + b"\x00" * 8), data.hex())
        self.assertIn(b"\xfe\x01\x00", data)
        # attention after completion is still acknowledged with DONE_ATTN
        r._raw_send(bytes.fromhex("0601000800000100"))
        _t, data = r.recv()
        self.assertEqual(data[:3], b"\xfd\x20\x00")
        r.close()

    def test_client_without_tls(self):
        with connect(sim.port(0), cafile=None) as c:      # pytds sends NOT_SUP without cafile
            self.assertEqual(q(c, "SELECT 1"), [(1,)])
        r = Raw(sim.port(0), enc=2)
        self.assertEqual(r.server_enc, 2)
        r.close()
        r = Raw(sim.port(0), enc=0, tls=False)
        self.assertEqual(r.server_enc, 0)
        r.close()

    def test_force_encryption(self):
        sim.control("POST", "/faults", {"force_encryption": True})
        try:
            r = Raw(sim.port(0), enc=2, tls=False)
            self.assertEqual(r.server_enc, 3)      # REQ: the client must quit
            with self.assertRaises((EOFError, ConnectionError, OSError)):
                r.login()
                r.recv()
            r.close()
            r = Raw(sim.port(0), enc=0)             # OFF -> REQ, full encryption
            self.assertEqual(r.server_enc, 3)
            self.assertIn(b"\xAD", r.login())
            r.close()
            with connect(sim.port(0)) as c:
                self.assertEqual(q(c, "SELECT 1"), [(1,)])
        finally:
            sim.control("POST", "/faults", {"force_encryption": False})

    def test_tds_versions_pytds(self):
        from pytds import tds_base
        for v in (tds_base.TDS71, tds_base.TDS72, tds_base.TDS73, tds_base.TDS74):
            with connect(sim.port(0), tds_version=v) as c:
                self.assertEqual(q(c, "SELECT name FROM sys.databases WHERE database_id = 5"), [("CM_P01",)])

    def test_use_and_envchange(self):
        with connect(sim.port(0)) as c:
            q(c, "USE [CM_P01]")
            self.assertEqual(q(c, "SELECT DB_NAME()"), [("CM_P01",)])
            self.assertEqual(sqlerr(c, "USE nosuchdb")[0], 911)

    def test_dmk_open_probe_by_certificate(self):
        probe = ("USE [CM_P01]; SELECT CASE WHEN DECRYPTBYCERT(CERT_ID(N'BitLockerManagement_CERT'), "
                 "ENCRYPTBYCERT(CERT_ID(N'BitLockerManagement_CERT'), N'dmkagent-probe')) IS NULL THEN 0 ELSE 1 END "
                 "AS opened")
        with connect(sim.port(0)) as c:
            self.assertEqual(q(c, probe), [(1,)])
        with connect(sim.port(1)) as c:        # readable secondary without a credential: the DMK does not open
            self.assertEqual(q(c, probe), [(0,)])
            q(c, f"OPEN MASTER KEY DECRYPTION BY PASSWORD = '{DMK_PW}'")
            self.assertEqual(q(c, probe), [(1,)])
            self.assertEqual(len(q(c, "SELECT * FROM sys.openkeys")), 1)
            q(c, "CLOSE MASTER KEY")
            self.assertEqual(q(c, probe), [(0,)])

    def test_parser_breadth(self):
        with connect(sim.port(0), database="CM_P01") as c:
            self.assertEqual(q(c, "DECLARE @x nvarchar(50) = N'BitLockerManagement_CERT'; "
                                  "IF EXISTS (SELECT 1 FROM sys.certificates WHERE name = @x) "
                                  "BEGIN SELECT 'yes' AS r END ELSE SELECT 'no' AS r"), [("yes",)])
            self.assertEqual(q(c, "DECLARE @sql nvarchar(max); SET @sql = N'SELECT COUNT(*) FROM sys.databases "
                                  "WHERE name LIKE ''C%'''; EXEC (@sql)"), [(1,)])
            self.assertEqual(q(c, "EXEC sp_executesql N'SELECT @a + 1', N'@a int', @a = 41"), [(42,)])
            self.assertEqual(q(c, "SELECT [name] FROM \"sys\".[databases] WHERE database_id IN (1, 5) AND "
                                  "name <> 'master' OR name IS NULL"), [("CM_P01",)])
            r = q(c, "SELECT r.replica_server_name, s.role_desc FROM sys.availability_replicas AS r "
                     "INNER JOIN sys.dm_hadr_availability_replica_states s ON r.replica_id = s.replica_id "
                     "ORDER BY r.replica_server_name DESC")
            self.assertEqual(r, [("SQLNODE2", "SECONDARY"), ("SQLNODE1", "PRIMARY")])
            self.assertEqual(q(c, "SELECT CASE WHEN COUNT(*) >= 3 THEN 1 ELSE 0 END FROM sys.database_permissions "
                                  "WHERE permission_name = 'CONTROL' AND class = 25"), [(1,)])
            self.assertEqual(q(c, "SELECT QUOTENAME(N'a]b'), CONVERT(varchar(10), 0x0A0B, 1), ISNULL(NULL, 3)"),
                             [("[a]]b]", "0x0A0B", 3)])


if __name__ == "__main__":
    main()
