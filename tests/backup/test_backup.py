#!/usr/bin/python3
"""dmkagent backup end to end: certificate, DMK and SMK backups escrowed in
vaultsim, read back and restored into scratch databases on sqlsim."""
import base64
import hashlib
import json
import os
import ssl
import sys
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from lab import Lab  # noqa: E402

CERT = "BitLockerManagement_CERT"
DMK_REF = "sql/ag1/cm_p01/dmk"


def slug_hash(name):
    return hashlib.sha256(name.encode()).hexdigest()[:8]


CERT_PATH = f"{DMK_REF}-backup-cert-bitlockermanagement-cert-{slug_hash(CERT)}"
DMK_PATH = f"{DMK_REF}-backup-dmk"


class Backup(unittest.TestCase):
    nodes = 3

    def setUp(self):
        self.lab = Lab(nodes=self.nodes).__enter__()
        self.lab.put_dmk_password()

    def tearDown(self):
        self.lab.__exit__(None, None, None)

    # ---- helpers ----
    def config(self, db_extra="", ag_extra=""):
        lab = self.lab
        lab.write_config(extra_ag=ag_extra)
        with open(lab.config, "a") as f:
            f.write(db_extra)

    def vault(self, path, method="GET", body=None):
        lab = self.lab
        ctx = ssl.create_default_context(cafile=lab.ca)
        req = urllib.request.Request(lab.vault.ready["address"] + "/v1/" + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"X-Vault-Token": lab.root_token,
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=30) as r:
                return json.loads(r.read().decode())
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def kv(self, path, version=None):
        d = self.vault(f"secret/data/{path}" + (f"?version={version}" if version else ""))
        return None if d is None else d["data"]

    def escrow(self, path, version=None):
        d = self.kv(path, version)
        return json.loads(d["data"]["password"]), d["metadata"]

    def markers(self, path, version):
        md = self.vault(f"secret/metadata/{path}")["data"]["custom_metadata"] or {}
        p = f"v{version}."
        return {k[len(p):]: v for k, v in md.items() if k.startswith(p)}

    def password(self, path, version=None):
        return self.kv(path, version)["data"]["password"]

    def assertNoCanary(self, *secrets):
        rc, out, err = self.lab.last
        audit = self.lab.audit_text()
        for s in secrets:
            self.assertTrue(s)
            self.assertNotIn(s, out)
            self.assertNotIn(s, err)
            self.assertNotIn(s, audit)

    def audit_records(self):
        return [json.loads(line) for line in self.lab.audit_text().splitlines() if line.strip()]

    def sql(self, stmts, node=None, database=None):
        """Several statements on one connection; the rows of the last one."""
        with self.lab.connect(node=node, database=database) as c:
            cur = c.cursor()
            rows = []
            for s in stmts:
                cur.execute(s)
                try:
                    rows = cur.fetchall()
                except Exception:
                    rows = []
            return rows

    # ---- tests ----
    def test_backup_escrows_cert_and_dmk_and_they_restore(self):
        lab = self.lab
        # Configured backup passwords that do not exist yet: generated, created with CAS 0.
        self.config("cert_backup_password = hcv:sql/ag1/cm_p01/cert-backup#password\n"
                    "dmk_backup_password = hcv:sql/ag1/cm_p01/dmk-backup#password\n")
        rc, out, err = lab.agent("backup", "--restore-test")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("2 backup(s) escrowed", out)
        self.assertIn("same thumbprint", out)
        self.assertIn("same key_guid", out)
        self.assertIn("stays on SQLNODE1", out)
        certpw = self.password("sql/ag1/cm_p01/cert-backup")
        dmkpw = self.password("sql/ag1/cm_p01/dmk-backup")
        self.assertNotEqual(certpw, dmkpw)
        for p in ("sql/ag1/cm_p01/cert-backup", "sql/ag1/cm_p01/dmk-backup"):
            md = self.vault(f"secret/metadata/{p}")["data"]
            self.assertEqual(md["current_version"], 1)
            self.assertEqual(self.markers(p, 1).get("dmkagent-kind"), "backup-password")
        self.assertNoCanary(lab.dmk_password, lab.sa_password, certpw, dmkpw)

        # The certificate escrow: bytes, metadata, markers.
        thumb, cert_id = self.sql([f"SELECT thumbprint, certificate_id FROM sys.certificates "
                                   f"WHERE name = N'{CERT}'"], database="CM_P01")[0]
        guid = self.sql(["SELECT key_guid FROM sys.symmetric_keys WHERE name = "
                         "N'##MS_DatabaseMasterKey##'"], database="CM_P01")[0][0]
        guid = str(guid).upper()
        v, meta = self.escrow(CERT_PATH)
        self.assertEqual(meta["version"], 1)
        self.assertEqual(v["format"], "dmkagent-backup-1")
        self.assertEqual(v["kind"], "cert-backup")
        self.assertEqual(v["name"], CERT)
        self.assertEqual(v["database"], "CM_P01")
        self.assertEqual(v["node"], "SQLNODE1")
        self.assertEqual(v["thumbprint"], "0x" + bytes(thumb).hex())
        self.assertEqual(v["dmk_key_guid"].upper(), guid)
        self.assertEqual(v["password_reference"], "hcv:sql/ag1/cm_p01/cert-backup#password")
        self.assertEqual(v["password_version"], "1")
        der = base64.b64decode(v["certificate"])
        pvk = base64.b64decode(v["private_key"])
        self.assertEqual(hashlib.sha1(der).digest(), bytes(thumb))
        # The escrowed bytes are treated as secrets too: never printed or audited.
        self.assertNoCanary(v["private_key"][:40], pvk.hex()[:40])
        mk = self.markers(CERT_PATH, 1)
        self.assertEqual(mk["dmkagent-kind"], "cert-backup")
        self.assertEqual(mk["dmkagent-thumbprint"], v["thumbprint"])
        self.assertEqual(mk["dmkagent-key-guid"].upper(), guid)
        self.assertEqual(mk["dmkagent-node"], "SQLNODE1")
        self.assertIn("dmkagent-time", mk)

        # The DMK escrow.
        d, dmeta = self.escrow(DMK_PATH)
        self.assertEqual(d["kind"], "dmk-backup")
        self.assertEqual(d["key_guid"].upper(), guid)
        self.assertTrue(d["server_file"].startswith("C:\\Windows\\Temp\\dmkagent-"))
        self.assertEqual(self.markers(DMK_PATH, 1)["dmkagent-key-guid"].upper(), guid)

        # The restore test left no scratch database behind.
        names = [r[0] for r in self.sql(["SELECT name FROM sys.databases"])]
        self.assertFalse([n for n in names if n.startswith("dmkagent_restore")], names)

        # As a DBA would: recreate the certificate from the escrowed bytes in another database.
        self.sql(["CREATE DATABASE [bk_check]", "USE [bk_check]",
                  "CREATE MASTER KEY ENCRYPTION BY PASSWORD = N'Scratch-Pw-1234!'",
                  "CREATE CERTIFICATE [copy] FROM BINARY = 0x" + der.hex() +
                  " WITH PRIVATE KEY (BINARY = 0x" + pvk.hex() + ", DECRYPTION BY PASSWORD = N'" +
                  certpw.replace("'", "''") + "')"])
        t2 = self.sql(["SELECT thumbprint FROM sys.certificates WHERE name = N'copy'"],
                      database="bk_check")
        self.assertEqual(bytes(t2[0][0]), bytes(thumb))
        # ... and the DMK from the file the backup left on the primary (T-SQL cannot
        # write the escrowed bytes back; they equal the file).
        blob = self.sql([f"SELECT BulkColumn FROM OPENROWSET(BULK N'{d['server_file']}', "
                         f"SINGLE_BLOB) AS a"])[0][0]
        self.assertEqual(bytes(blob), base64.b64decode(d["data"]))
        self.sql(["CREATE DATABASE [bk_dmk]", "USE [bk_dmk]",
                  f"RESTORE MASTER KEY FROM FILE = N'{d['server_file']}' DECRYPTION BY PASSWORD = N'" +
                  dmkpw.replace("'", "''") + "' ENCRYPTION BY PASSWORD = N'Scratch-Pw-1234!'"])
        g2 = self.sql(["SELECT key_guid FROM sys.symmetric_keys WHERE name = "
                       "N'##MS_DatabaseMasterKey##'"], database="bk_dmk")
        self.assertEqual(str(g2[0][0]).upper(), guid)
        self.sql(["USE master", "DROP DATABASE [bk_check], [bk_dmk]"])

        # One audit record per backup, naming the store reference and version.
        recs = self.audit_records()
        cert_recs = [r for r in recs if r["action"] == "backup-certificate"]
        dmk_recs = [r for r in recs if r["action"] == "backup-dmk"]
        self.assertEqual(len(cert_recs), 1)
        self.assertEqual(len(dmk_recs), 1)
        self.assertEqual(cert_recs[0]["outcome"], "escrowed")
        self.assertEqual(cert_recs[0]["keys"]["cert_thumbprint"], v["thumbprint"])
        self.assertEqual(cert_recs[0]["keys"]["version"], "1")
        self.assertEqual(cert_recs[0]["target"]["replica"], "SQLNODE1")
        self.assertEqual(dmk_recs[0]["keys"]["dmk_key_guid"].upper(), guid)
        self.assertEqual(len([r for r in recs if r["action"] == "backup-password"]), 2)
        self.assertEqual(len([r for r in recs if r["action"] == "restore-test" and
                              r["outcome"] == "passed"]), 2)
        rc, out, err = lab.agent("audit", "verify", lab.audit_log)
        self.assertEqual(rc, 0, err)

    def test_second_run_adds_versions(self):
        lab = self.lab
        rc, out, err = lab.agent("backup")
        self.assertEqual(rc, 0, out + err)
        first, _ = self.escrow(CERT_PATH, 1)
        first_dmk, _ = self.escrow(DMK_PATH, 1)
        # Default backup passwords beside the DMK password, generated once.
        certpw = self.password(f"{DMK_REF}-backup-password-cert")
        rc, out, err = lab.agent("--output", "json", "backup")
        self.assertEqual(rc, 0, out + err)
        res = json.loads(out)
        items = res["ags"][0]["backups"]
        self.assertEqual({i["kind"]: (i["version"], i["previous_version"]) for i in items},
                         {"cert-backup": ("2", "1"), "dmk-backup": ("2", "1")})
        self.assertEqual(self.vault(f"secret/metadata/{CERT_PATH}")["data"]["current_version"], 2)
        # Version 1 is still there, unchanged; the backup password was not regenerated.
        again, _ = self.escrow(CERT_PATH, 1)
        self.assertEqual(again, first)
        self.assertEqual(self.escrow(DMK_PATH, 1)[0], first_dmk)
        self.assertNotEqual(self.escrow(DMK_PATH, 2)[0]["server_file"], first_dmk["server_file"])
        self.assertEqual(self.password(f"{DMK_REF}-backup-password-cert"), certpw)
        self.assertEqual(self.vault(f"secret/metadata/{DMK_REF}-backup-password-cert")
                         ["data"]["current_version"], 1)
        self.assertNoCanary(lab.dmk_password, certpw)

    def test_existing_backup_password_is_used(self):
        lab = self.lab
        pw = "Backup-Pw-" + os.urandom(6).hex() + "!"
        lab.put_dmk_password(value=pw, ref="hcv:sql/ag1/cm_p01/cert-backup#password")
        self.config("cert_backup_password = hcv:sql/ag1/cm_p01/cert-backup#password\n")
        rc, out, err = lab.agent("backup", "--database", "CM_P01", "--restore-test")
        self.assertEqual(rc, 0, out + err)
        self.assertEqual(self.vault("secret/metadata/sql/ag1/cm_p01/cert-backup")
                         ["data"]["current_version"], 1)
        v, _ = self.escrow(CERT_PATH)
        self.assertEqual(v["password_version"], "1")
        self.assertNoCanary(pw, lab.dmk_password)

    def test_smk_every_node(self):
        lab = self.lab
        self.config(ag_extra="smk_backup_password = hcv:sql/ag1/smk-backup#password\n")
        rc, out, err = lab.agent("backup", "--smk")
        self.assertEqual(rc, 0, out + err)
        self.assertIn(f"{2 + self.nodes} backup(s) escrowed", out)
        smkpw = self.password("sql/ag1/smk-backup")
        for n in range(self.nodes):
            node = f"SQLNODE{n + 1}"
            path = f"sql/ag1/smk-backup-backup-smk-sqlnode{n + 1}-{slug_hash(node)}"
            v, _ = self.escrow(path)
            self.assertEqual(v["kind"], "smk-backup")
            self.assertEqual(v["node"], node)
            guid = self.sql(["SELECT key_guid FROM master.sys.symmetric_keys WHERE name = "
                             "N'##MS_ServiceMasterKey##'"], node=n)[0][0]
            self.assertEqual(v["key_guid"].upper(), str(guid).upper())
            self.assertEqual(self.markers(path, 1)["dmkagent-node"], node)
            blob = self.sql([f"SELECT BulkColumn FROM OPENROWSET(BULK N'{v['server_file']}', "
                             f"SINGLE_BLOB) AS a"], node=n)[0][0]
            self.assertEqual(bytes(blob), base64.b64decode(v["data"]))
            # The backup restores on its node (same key: nothing changes).
            self.sql([f"RESTORE SERVICE MASTER KEY FROM FILE = N'{v['server_file']}' "
                      "DECRYPTION BY PASSWORD = N'" + smkpw.replace("'", "''") + "'"], node=n)
        recs = [r for r in self.audit_records() if r["action"] == "backup-smk"]
        self.assertEqual(sorted(r["target"]["replica"] for r in recs),
                         [f"SQLNODE{n + 1}" for n in range(self.nodes)])
        self.assertNoCanary(smkpw, lab.dmk_password)

    def test_wrong_dmk_password_still_backs_up_through_the_smk(self):
        lab = self.lab
        lab.put_dmk_password(value="Wrong-Password-123!", overwrite=True)
        rc, out, err = lab.agent("backup", "--restore-test")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("does not open", out + err)
        self.assertIn("2 backup(s) escrowed", out)
        self.assertIn("same thumbprint", out)
        self.assertNoCanary("Wrong-Password-123!", lab.dmk_password)

    def test_smk_without_password_configured(self):
        rc, out, err = self.lab.agent("backup", "--smk")
        self.assertNotEqual(rc, 0, out + err)
        self.assertIn("smk_backup_password", out + err)

    def test_sql_error_is_clear(self):
        lab = self.lab
        weak = "zqxjkvbwpq"   # one character class: SQL Server's policy refuses it
        # written straight into Vault: `dmkagent store put` would refuse it
        self.vault("secret/data/sql/ag1/cm_p01/dmk-backup", "POST", {"data": {"password": weak}})
        self.config("dmk_backup_password = hcv:sql/ag1/cm_p01/dmk-backup#password\n")
        rc, out, err = lab.agent("backup")
        self.assertIn(rc, (1, 3), out + err)
        self.assertIn("Msg 15118", out + err)
        self.assertIsNone(self.kv(DMK_PATH))
        self.assertNoCanary(weak, lab.dmk_password)

    def test_store_down(self):
        lab = self.lab
        lab.vault.stop()
        rc, out, err = lab.agent("backup")
        self.assertEqual(rc, 5, out + err)
        self.assertIn("CM_P01", out + err)
        self.assertNoCanary(lab.dmk_password)

    def test_unknown_database(self):
        rc, out, err = self.lab.agent("backup", "--database", "NOPE")
        self.assertEqual(rc, 2, out + err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
