#!/usr/bin/python3
"""sqlsim's real-world shapes, raw: --server-names, --shape no-routing-urls / null-role-disconnected /
null-primary-on-secondary, the SQL Server Browser responder (SSRP, [MC-SQLR]) and its misbehaviour
modes, and --strict (TDS 8.0: a TDS 7.x client is refused; TLS first with ALPN tds/8.0 works)."""
import os
import socket
import ssl
import struct
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from simtest import SqlSim, connect, main, pki, q  # noqa: E402

try:
    import pytds  # noqa: F401
except ImportError:
    print("python3-tds missing")
    sys.exit(77)


def ssrp(port, payload, timeout=1.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(payload, ("127.0.0.1", port))
        return s.recvfrom(4096)[0]
    except socket.timeout:
        return None
    finally:
        s.close()


class Shapes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.sim = SqlSim(nodes=3, extra=["--server-names", "SQLNODE1\\INST1,SQLNODE2\\INST2,SQLNODE3",
                                         "--browser-port", "0", "--shape", "no-routing-urls",
                                         "--shape", "null-role-disconnected",
                                         "--shape", "null-primary-on-secondary"]).start()
        cls.bport = cls.sim.ready["browser_port"]

    @classmethod
    def tearDownClass(cls):
        cls.sim.stop()

    def tearDown(self):
        self.sim.control("POST", "/browser", {"mode": "normal"})
        self.sim.control("POST", "/nodes/2/up", {})

    def test_names_and_no_routing_urls(self):
        self.assertEqual(self.sim.ready["replica_names"], ["SQLNODE1\\INST1", "SQLNODE2\\INST2", "SQLNODE3"])
        with connect(self.sim.port(0)) as c:
            rows = q(c, "SELECT replica_server_name, read_only_routing_url FROM sys.availability_replicas")
            self.assertEqual(sorted(rows), [("SQLNODE1\\INST1", None), ("SQLNODE2\\INST2", None),
                                            ("SQLNODE3", None)])
            self.assertEqual(q(c, "SELECT @@SERVERNAME")[0][0], "SQLNODE1\\INST1")

    def test_browser_answers(self):
        r = ssrp(self.bport, b"\x04INST2\x00")
        self.assertEqual(r[0], 0x05)
        n = struct.unpack("<H", r[1:3])[0]
        self.assertEqual(n, len(r) - 3)
        data = r[3:].decode()
        self.assertTrue(data.endswith(";;"), data)
        f = data[:-2].split(";")
        d = dict(zip(f[0::2], f[1::2]))
        self.assertEqual((d["ServerName"], d["InstanceName"], d["tcp"]),
                         ("SQLNODE2", "INST2", str(self.sim.port(1))))
        self.assertIsNone(ssrp(self.bport, b"\x04NOSUCH\x00"))       # silence, as the service
        r = ssrp(self.bport, b"\x03")
        self.assertIn(b"InstanceName;INST1;", r)
        self.assertIn(b"InstanceName;INST2;", r)
        self.sim.control("POST", "/browser", {"mode": "silent"})
        self.assertIsNone(ssrp(self.bport, b"\x04INST1\x00"))
        self.sim.control("POST", "/browser", {"mode": "garbage"})
        r = ssrp(self.bport, b"\x04INST1\x00")
        self.assertNotEqual(struct.unpack("<H", r[1:3])[0], len(r) - 3)
        self.sim.control("POST", "/nodes/1/down", {})
        self.sim.control("POST", "/browser", {"mode": "normal"})
        self.assertIsNone(ssrp(self.bport, b"\x04INST2\x00"))      # a stopped instance is not announced
        self.sim.control("POST", "/nodes/1/up", {})

    def test_null_role_and_null_primary(self):
        self.sim.control("POST", "/nodes/2/down", {})
        with connect(self.sim.port(0)) as c:
            rows = dict(q(c, "SELECT r.replica_server_name, s.role_desc FROM sys.dm_hadr_availability_replica_states s "
                             "JOIN sys.availability_replicas r ON r.replica_id = s.replica_id"))
            self.assertEqual(rows["SQLNODE3"], None)
            self.assertEqual(rows["SQLNODE2\\INST2"], "SECONDARY")
            self.assertEqual(q(c, "SELECT primary_replica FROM sys.dm_hadr_availability_group_states")[0][0],
                             "SQLNODE1\\INST1")
        with connect(self.sim.port(1)) as c:
            self.assertEqual(q(c, "SELECT primary_replica FROM sys.dm_hadr_availability_group_states")[0][0],
                             None)


class Strict(unittest.TestCase):
    def test_strict_refuses_tds7_and_takes_tls_first(self):
        with SqlSim(nodes=1, extra=["--strict"]) as sim:
            with self.assertRaises(Exception):
                connect(sim.port(0), login_timeout=5)
            st = sim.control("GET", "/stats")
            self.assertGreaterEqual(st["refused_not_strict"], 1)
            # TLS first, with ALPN tds/8.0 and TLS 1.3; then a PRELOGIN inside TLS is answered
            ctx = ssl.create_default_context(cafile=pki()["ca_pem"])
            ctx.set_alpn_protocols(["tds/8.0"])
            with socket.create_connection(("127.0.0.1", sim.port(0)), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as t:
                    self.assertEqual(t.selected_alpn_protocol(), "tds/8.0")
                    self.assertEqual(t.version(), "TLSv1.3")
                    body = bytes([0, 0, 11, 0, 6, 1, 0, 17, 0, 1, 0xFF, 16, 0, 0, 0, 0, 0, 4])
                    t.sendall(struct.pack(">BBHHBB", 0x12, 1, 8 + len(body), 0, 1, 0) + body)
                    hdr = t.recv(8)
                    self.assertEqual(hdr[0], 0x04)
            st = sim.control("GET", "/stats")
            self.assertEqual(st["strict_alpn"], {"tds/8.0": 1})


if __name__ == "__main__":
    main()
