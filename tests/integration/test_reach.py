#!/usr/bin/python3
"""Reaching every replica of an AG shaped as real ones are: no read-only routing URLs, named
instances whose port SQL Server Browser announces (UDP, here on a port of its own), certificates
issued to DNS names only, a server name completed to an FQDN by `domain` or by the resolver's
canonical name.  dmkagent against sqlsim's shapes (--server-names, --shape, --browser-port,
--node-tls).

The FQDN tests need names that resolve to 127.0.0.1 without touching /etc/hosts: they run the
agent under nss_wrapper (Debian's libnss-wrapper, NSS_WRAPPER_HOSTS) and are skipped without it."""
import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab import Lab  # noqa: E402

NSS_WRAPPER = next((p for p in ("/usr/lib/x86_64-linux-gnu/libnss_wrapper.so",
                                "/usr/lib/aarch64-linux-gnu/libnss_wrapper.so",
                                "/usr/lib/libnss_wrapper.so") if os.path.exists(p)), None)


def named_lab(names, shapes=("no-routing-urls",), node_certs=None, nodes=3):
    args = ["--server-names", ",".join(names), "--browser-port", "0"]
    for s in shapes:
        args += ["--shape", s]
    lab = Lab(nodes=nodes, server_cert="dnsonly", listener_host="localhost",
              extra_sql_args=args, node_certs=node_certs).__enter__()
    lab.browser_port = lab.sql_ready["browser_port"]
    return lab


class NamedInstances(unittest.TestCase):
    """localhost\\INSTn: the resolver's canonical name of localhost, the port from the Browser."""

    def setUp(self):
        self.names = ["localhost\\INST1", "localhost\\INST2", "localhost\\INST3"]
        self.lab = named_lab(self.names)
        self.cfg(f"browser_port = {self.lab.browser_port}\n")
        self.lab.put_dmk_password()

    def tearDown(self):
        self.lab.__exit__(None, None, None)

    def cfg(self, extra):
        self.lab.write_config(extra_ag=extra)

    def status_json(self):
        rc, out, err = self.lab.agent("--output", "json", "status")
        return rc, json.loads(out) if out.strip() else None, out + err

    def test_browser_port_reaches_every_replica_and_status_says_how(self):
        lab = self.lab
        rc, out, err = lab.agent("register")
        self.assertEqual(rc, 0, out + err)
        rc, out, err = lab.agent("status")
        self.assertEqual(rc, 0, out + err)
        for i, nd in enumerate(lab.sql_ready["nodes"]):
            self.assertIn(f"localhost:{nd['port']} (server name + canonical name + SQL Server Browser)",
                          out)
        rc, js, txt = self.status_json()
        self.assertEqual(rc, 0, txt)
        reps = js["ags"][0]["replicas"] if "ags" in js else js[0]["replicas"]
        self.assertEqual(sorted(r["name"] for r in reps), sorted(self.names))
        for r in reps:
            self.assertTrue(r["reached"], r)
            self.assertEqual(r["address_from"], "server name + canonical name + SQL Server Browser")
            self.assertEqual(r["tls_name"], "localhost")

    def test_configured_replica_wins_and_silent_browser_is_named(self):
        lab = self.lab
        lab.control("/browser", {"mode": "silent"})
        p2 = lab.sql_ready["nodes"][1]["port"]
        lab.write_config(extra_ag=f"browser_port = {lab.browser_port}\n"
                         f"replica localhost\\INST2 = localhost:{p2}\n")
        rc, out, err = lab.agent("status")
        self.assertEqual(rc, 3, out + err)
        self.assertIn(f"localhost:{p2} (configured)", out)
        self.assertIn(f"SQL Server Browser at localhost:{lab.browser_port} did not answer for "
                      "instance INST1", out)
        self.assertIn("set 'replica localhost\\INST1 = HOST:PORT' in [ag AG1]", out)

    def test_hostile_browser_answers_are_refused(self):
        lab = self.lab
        for mode, why in (("garbage", "RESP_SIZE does not match the datagram"),
                          ("other-instance", "the answer is about another instance"),
                          ("no-tcp", "the instance does not listen on TCP")):
            lab.control("/browser", {"mode": mode})
            rc, out, err = lab.agent("status")
            self.assertEqual(rc, 3, mode + out + err)
            self.assertIn(why, out, mode)
            self.assertNotIn("(server name + canonical name + SQL Server Browser)  NOT", out)

    def test_tls_name_for_the_whole_ag(self):
        lab = self.lab
        # every certificate here carries sqlnode2.sim.test too: checked instead of the host name
        lab.write_config(extra_ag=f"browser_port = {lab.browser_port}\ntls_name = sqlnode2.sim.test\n")
        rc, js, txt = self.status_json()
        self.assertEqual(rc, 0, txt)
        lab.write_config(extra_ag=f"browser_port = {lab.browser_port}\ntls_name = other.sim.test\n")
        rc, out, err = lab.agent("status")
        self.assertNotEqual(rc, 0, out + err)
        self.assertIn("not accepted for 'other.sim.test': hostname mismatch: it is for "
                      "DNS:localhost, DNS:sqlnode1.sim.test", out + err)


class CertificateMismatch(unittest.TestCase):
    def test_name_resolves_but_certificate_is_for_another_name(self):
        # node 1 presents wrongname.pem (DNS:wrong.example) for localhost
        lab = named_lab(["localhost\\INST1", "localhost\\INST2"], nodes=2,
                        node_certs={1: "wrongname"})
        try:
            lab.write_config(extra_ag=f"browser_port = {lab.browser_port}\n")
            lab.put_dmk_password()
            rc, out, err = lab.agent("status")
            self.assertEqual(rc, 3, out + err)
            self.assertIn("the server's TLS certificate is not accepted for 'localhost': "
                          "hostname mismatch: it is for DNS:wrong.example (set 'tls_name'", out)
            self.assertIn("set 'tls_name'", out)
            self.assertEqual(out.count("NOT REACHED"), 1, out)
        finally:
            lab.__exit__(None, None, None)


class CatalogShapes(unittest.TestCase):
    """A disconnected remote replica's role is NULL; primary_replica is NULL on a secondary."""

    def setUp(self):
        self.lab = Lab(nodes=3, extra_sql_args=["--shape", "null-primary-on-secondary",
                                                "--shape", "null-role-disconnected"]).__enter__()
        self.lab.put_dmk_password()

    def tearDown(self):
        self.lab.__exit__(None, None, None)

    def test_disconnected_replica_role_unknown(self):
        lab = self.lab
        rc, out, err = lab.agent("register")
        self.assertEqual(rc, 0, out + err)
        lab.control("/nodes/2/down", {})
        rc, out, err = lab.agent("status")
        self.assertEqual(rc, 3, out + err)
        self.assertRegex(out, r"SQLNODE3 +UNKNOWN +127\.0\.0\.1:\d+ \(routing URL\)  NOT REACHED")
        self.assertRegex(out, r"SQLNODE2 +SECONDARY")
        rc, out, err = lab.agent("--output", "json", "status")
        reps = {r["name"]: r for r in json.loads(out)["ags"][0]["replicas"]}
        self.assertEqual(reps["SQLNODE3"]["role"], "UNKNOWN")
        self.assertEqual(reps["SQLNODE1"]["role"], "PRIMARY")
        self.assertEqual(reps["SQLNODE1"]["address_from"], "routing URL")
        self.assertEqual(reps["SQLNODE1"]["tls_name"], "127.0.0.1")

    def test_listener_on_a_secondary_is_named(self):
        lab = self.lab
        lab.sql_ready = dict(lab.sql_ready, listener_port=lab.sql_ready["nodes"][1]["port"])
        lab.write_config()
        for cmd in ("status", "register"):
            rc, out, err = lab.agent(cmd)
            self.assertEqual(rc, 2, out + err)
            self.assertIn(f"127.0.0.1:{lab.sql_ready['listener_port']} answered from SQLNODE2, "
                          "which does not know the primary; set 'listener' in [ag AG1]", err)
        self.assertEqual(lab.credentials(1), [])


class FQDN(unittest.TestCase):
    """SQLNODEn\\INSTn: completed with `domain`, or by the resolver's canonical name (nss_wrapper)."""

    def setUp(self):
        if NSS_WRAPPER is None:
            self.skipTest("libnss-wrapper is not installed (apt-get install libnss-wrapper)")
        self.names = ["SQLNODE1\\INST1", "SQLNODE2\\INST2"]
        self.lab = named_lab(self.names, nodes=2)
        self.hosts = os.path.join(self.lab.dir, "hosts")
        with open(self.hosts, "w") as f:
            f.write("127.0.0.1 sqlnode1.sim.test sqlnode1\n127.0.0.1 sqlnode2.sim.test sqlnode2\n"
                    "127.0.0.1 localhost\n")
        # NSS_WRAPPER_DISABLE_DEEPBIND: RTLD_DEEPBIND does not go with sanitizer runtimes
        self.env = {"LD_PRELOAD": NSS_WRAPPER, "NSS_WRAPPER_HOSTS": self.hosts,
                    "NSS_WRAPPER_DISABLE_DEEPBIND": "1"}
        self.lab.write_config(extra_ag=f"browser_port = {self.lab.browser_port}\n")
        self.lab.put_dmk_password()

    def tearDown(self):
        self.lab.__exit__(None, None, None)

    def test_canonical_name(self):
        rc, out, err = self.lab.agent("status", env=self.env)
        self.assertEqual(rc, 0, out + err)
        for i, nd in enumerate(self.lab.sql_ready["nodes"]):
            self.assertIn(f"sqlnode{i + 1}.sim.test:{nd['port']} (server name + canonical name + "
                          "SQL Server Browser)", out)

    def test_domain(self):
        lab = self.lab
        lab.write_config(extra_ag=f"browser_port = {lab.browser_port}\ndomain = sim.test\n")
        rc, out, err = lab.agent("register", env=self.env)
        self.assertEqual(rc, 0, out + err)
        rc, out, err = lab.agent("status", env=self.env)
        self.assertEqual(rc, 0, out + err)
        for i, nd in enumerate(lab.sql_ready["nodes"]):
            self.assertIn(f"SQLNODE{i + 1}.sim.test:{nd['port']} (server name + domain + "
                          "SQL Server Browser)", out)

    def test_server_name_already_an_fqdn(self):
        lab2 = named_lab(["sqlnode1.sim.test\\INST1", "sqlnode2.sim.test\\INST2"], nodes=2)
        try:
            lab2.write_config(extra_ag=f"browser_port = {lab2.browser_port}\ndomain = ignored.example\n")
            lab2.put_dmk_password()
            rc, out, err = lab2.agent("status", env=self.env)
            self.assertEqual(rc, 0, out + err)
            for i, nd in enumerate(lab2.sql_ready["nodes"]):
                self.assertIn(f"sqlnode{i + 1}.sim.test:{nd['port']} (server name + SQL Server Browser)",
                              out)
        finally:
            lab2.__exit__(None, None, None)

    def test_browser_asked_on_every_address(self):
        """A name with an IPv6 and an IPv4 address, IPv6 first (as a minimal Debian's
        resolver lists localhost): SQL Server Browser answers on one of them only, and
        every address is asked."""
        with open(self.hosts, "w") as f:
            f.write("::1 sqlnode1.sim.test sqlnode1\n::1 sqlnode2.sim.test sqlnode2\n"
                    "127.0.0.1 sqlnode1.sim.test sqlnode1\n127.0.0.1 sqlnode2.sim.test sqlnode2\n"
                    "127.0.0.1 localhost\n")
        rc, out, err = self.lab.agent("status", env=self.env)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("SQL Server Browser)", out)

    def test_unresolvable_name_says_what_to_set(self):
        lab = self.lab
        with open(self.hosts, "w") as f:
            f.write("127.0.0.1 localhost\n")
        rc, out, err = lab.agent("status", env=self.env)
        self.assertEqual(rc, 3, out + err)
        self.assertIn("'SQLNODE1' does not resolve", out)
        self.assertIn("set 'domain' or 'replica SQLNODE1\\INST1 = HOST:PORT' in [ag AG1]", out)


if __name__ == "__main__":
    unittest.main()
