#!/usr/bin/python3
"""vaultsim keeps KV v2 versions as Vault documents it: a key's max_versions
(metadata), else the mount's (its /config), else 10; a write beyond the limit
deletes the oldest versions for good (no data, gone from the metadata,
oldest_version moves), soft-deleted and destroyed versions count too; the
metadata endpoint reports max_versions and a metadata write changes only
the fields it names.  Raw HTTP (standard library), and once through
python3-hvac's KV v2 client where it is installed."""
import base64
import json
import os
import shutil
import ssl
import sys
import tempfile
import unittest
import urllib.error
import urllib.request

SRCDIR = os.environ.get("SRCDIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, SRCDIR)

from tests.sim.common.harness import PY, Sim, free_port_block, run_unittests  # noqa: E402
from tests.sim.common.pki import make_pki  # noqa: E402

SIM = os.path.join(SRCDIR, "tests", "sim", "vaultsim")
ROOT = "root-" + base64.b32encode(os.urandom(10)).decode().lower()


class MaxVersions(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="vaultsim-maxv-")
        pki = make_pki(os.path.join(cls.tmp, "pki"))
        rootfile = os.path.join(cls.tmp, "root-token")
        with open(rootfile, "w") as f:
            f.write(ROOT + "\n")
        port = free_port_block(2)
        cls.sim = Sim([PY, SIM, "--state", os.path.join(cls.tmp, "state"), "--port", str(port),
                       "--tls-cert", pki["server_pem"], "--tls-key", pki["server_key"],
                       "--root-token-file", rootfile], timeout=20,
                      log_path=os.path.join(cls.tmp, "vaultsim.log")).__enter__()
        cls.addr = cls.sim.ready["address"]
        cls.ctx = ssl.create_default_context(cafile=pki["ca_pem"])
        cls._ca = pki["ca_pem"]

    @classmethod
    def tearDownClass(cls):
        cls.sim.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def raw(self, method, path, body=None):
        h = {"X-Vault-Token": ROOT}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(self.addr + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=10) as r:
                txt = r.read()
                return r.status, (json.loads(txt) if txt else None)
        except urllib.error.HTTPError as e:
            txt = e.read()
            return e.code, (json.loads(txt) if txt else None)

    def write(self, key, n, mount="secret"):
        for i in range(n):
            st, _ = self.raw("POST", f"/v1/{mount}/data/{key}", {"data": {"v": str(i)}})
            self.assertEqual(st, 200)

    def meta(self, key, mount="secret"):
        st, body = self.raw("GET", f"/v1/{mount}/metadata/{key}")
        self.assertEqual(st, 200, body)
        return body["data"]

    def test_default_keeps_ten_and_deletes_the_oldest_for_good(self):
        self.write("mv/default", 12)
        md = self.meta("mv/default")
        self.assertEqual(md["max_versions"], 0)          # the key does not say
        self.assertEqual(sorted(int(k) for k in md["versions"]), list(range(3, 13)))
        self.assertEqual(md["current_version"], 12)
        self.assertEqual(md["oldest_version"], 3)
        st, body = self.raw("GET", "/v1/secret/data/mv/default?version=1")
        self.assertEqual(st, 404, body)                  # gone: not deleted, not destroyed
        st, body = self.raw("GET", "/v1/secret/data/mv/default?version=3")
        self.assertEqual((st, body["data"]["data"]), (200, {"v": "2"}))

    def test_key_setting_wins_and_other_fields_stay(self):
        self.write("mv/key", 1)
        cm = {"owner": "dba"}
        self.assertIn(self.raw("POST", "/v1/secret/metadata/mv/key", {"custom_metadata": cm})[0],
                      (200, 204))
        self.assertIn(self.raw("POST", "/v1/secret/metadata/mv/key", {"max_versions": 3})[0],
                      (200, 204))
        md = self.meta("mv/key")
        self.assertEqual((md["max_versions"], md["custom_metadata"]), (3, cm))
        self.write("mv/key", 4)                          # versions 2..5
        md = self.meta("mv/key")
        self.assertEqual(sorted(int(k) for k in md["versions"]), [3, 4, 5])
        self.assertEqual(md["custom_metadata"], cm)      # a custom_metadata-only write kept max_versions too
        self.assertIn(self.raw("POST", "/v1/secret/metadata/mv/key", {"custom_metadata": {"a": "b"}})[0],
                      (200, 204))
        self.assertEqual(self.meta("mv/key")["max_versions"], 3)

    def test_mount_setting_applies_when_the_key_says_0(self):
        st, _ = self.raw("POST", "/v1/sys/mounts/kvm", {"type": "kv", "options": {"version": "2"}})
        self.assertIn(st, (200, 204))
        self.assertIn(self.raw("POST", "/v1/kvm/config", {"max_versions": 2})[0], (200, 204))
        st, cfg = self.raw("GET", "/v1/kvm/config")
        self.assertEqual((st, cfg["data"]["max_versions"]), (200, 2))
        self.write("k", 3, mount="kvm")
        self.assertEqual(sorted(int(k) for k in self.meta("k", mount="kvm")["versions"]), [2, 3])
        # the key's own setting wins over the mount's
        self.raw("POST", "/v1/kvm/metadata/k", {"max_versions": 4})
        self.write("k", 3, mount="kvm")
        self.assertEqual(sorted(int(k) for k in self.meta("k", mount="kvm")["versions"]), [3, 4, 5, 6])

    def test_deleted_and_destroyed_versions_count(self):
        self.raw("POST", "/v1/secret/metadata/mv/del", {"max_versions": 3})
        self.write("mv/del", 3)
        self.assertIn(self.raw("POST", "/v1/secret/delete/mv/del", {"versions": [1]})[0], (200, 204))
        self.assertIn(self.raw("PUT", "/v1/secret/destroy/mv/del", {"versions": [2]})[0], (200, 204))
        self.write("mv/del", 1)
        md = self.meta("mv/del")
        self.assertEqual(sorted(int(k) for k in md["versions"]), [2, 3, 4])
        self.assertTrue(md["versions"]["2"]["destroyed"])

    def test_through_hvac(self):
        """The same through python3-hvac's KV v2 client, as an operator's tooling."""
        try:
            import hvac
        except ImportError:
            self.skipTest("python3-hvac not installed")
        c = hvac.Client(url=self.addr, token=ROOT, verify=self._ca)
        for i in range(3):
            c.secrets.kv.v2.create_or_update_secret("mv/hvac", secret={"v": str(i)})
        c.secrets.kv.v2.update_metadata("mv/hvac", max_versions=2)
        md = c.secrets.kv.v2.read_secret_metadata("mv/hvac")["data"]
        self.assertEqual(md["max_versions"], 2)
        c.secrets.kv.v2.create_or_update_secret("mv/hvac", secret={"v": "3"})
        md = c.secrets.kv.v2.read_secret_metadata("mv/hvac")["data"]
        self.assertEqual(sorted(int(k) for k in md["versions"]), [3, 4])
        with self.assertRaises(hvac.exceptions.InvalidPath):
            c.secrets.kv.v2.read_secret_version("mv/hvac", version=1)


if __name__ == "__main__":
    run_unittests()
