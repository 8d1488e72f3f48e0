#!/usr/bin/python3
"""Exit codes and messages a DBA (and cron, and monitoring) can trust, each
scenario of issue 15 against sqlsim + vaultsim, with the SQL login's
password in a file: reference (so only the DMK passwords come from the
store):

- Vault stopped: every command exits 5 (status too, never 0 with "-");
- a wrong Vault token: every command exits 1, names the credential to fix,
  promises no rerun and blames no replica; rotate's JSON outcome is not
  "locked";
- a database that is not in the AG: exit 1 naming it, no rerun promise, no
  status rows for it;
- a reference whose path does not exist (a typo): "no such secret at REF",
  exit 1 everywhere (store check too); rotate does not advise recover;
  recover without --password-unknown changes nothing in SQL Server or the
  store, with it gives the DMK a new password and says so first;
- backup --smk without smk_backup_password after escrowing others: 3, not 2;
- a SQL login failure is printed once and names the reference that holds the
  login's password;
- the JSON of register and rotate says "database" as status and verify do.
"""
import json
import os
import sys
import unittest
import urllib.error

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "rotate"))
import rotlib  # noqa: E402
from rotlib import Lab  # noqa: E402
from azlab import AzureLab  # noqa: E402
from tests.sim.common.harness import run_unittests  # noqa: E402

# Every command that touches a store or an availability group.
EVERY = [["store", "check"], ["register"], ["verify"], ["status"], ["rotate"], ["recover"],
         ["backup"], ["run"]]
RERUN = ("rerun", "finishes the rest", "next run", "try again", "try later")
BLAME = ("not every replica can open every DMK", "gaps found")
TYPO = "hcv:sql/ag1/cm_p0l/dmk#password"


def sql_state(lab):
    """What SQL Server holds for CM_P01: the DMK, its encryptions (by kind)
    and the credentials of every replica."""
    st = lab.control("/status")
    db = st["databases"]["CM_P01"]
    return (db["dmk_key_guid"], sorted(e["kind"] for e in db["dmk_encryptions"]),
            [sorted(c["name"] for c in n["credentials"]) for n in st["nodes"]])


def vault_versions(lab, path):
    """The version numbers Vault holds at path ([] when there is no secret)."""
    try:
        md = rotlib.vault_get(lab, f"{rotlib.KV}/metadata/{path}")["data"]
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return []
        raise
    return sorted(int(k) for k in md["versions"])


def vault_api(lab, method, path, body):
    """A call to Vault's HTTP API as root (policies, tokens)."""
    import ssl
    import urllib.request
    ctx = ssl.create_default_context(cafile=lab.ca)
    req = urllib.request.Request(lab.vault.ready["address"] + "/v1/" + path,
                                 data=json.dumps(body).encode(), method=method,
                                 headers={"X-Vault-Token": lab.root_token,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=20, context=ctx) as r:
        txt = r.read()
        return json.loads(txt) if txt else None


def set_config(lab, old, new):
    with open(lab.config) as f:
        text = f.read()
    assert old in text, (old, text)
    with open(lab.config, "w") as f:
        f.write(text.replace(old, new))


class Outcomes(unittest.TestCase):
    def setUp(self):
        self.lab = Lab(nodes=3).__enter__()
        self.lab.put_dmk_password()
        rc, out, err = self.lab.agent("register")
        self.assertEqual(rc, 0, out + err)

    def tearDown(self):
        self.lab.__exit__(None, None, None)

    def assertNoRerun(self, text):
        for w in RERUN:
            self.assertNotIn(w, text, "a lasting error promises that a rerun helps")

    def assertNoBlame(self, text):
        for w in BLAME:
            self.assertNotIn(w, text, "the replicas are blamed for a store or login failure")

    def json_of(self, *args):
        rc, out, err = self.lab.agent("--output", "json", *args)
        try:
            return rc, json.loads(out), err
        except ValueError:
            raise AssertionError(f"{args}: not JSON (exit {rc}): {out!r} {err!r}")

    # ---- a store that cannot be reached: 5, in every command ----
    def test_vault_stopped_is_5_everywhere(self):
        lab = self.lab
        lab.vault.stop()
        for cmd in EVERY:
            with self.subTest(cmd=cmd):
                rc, out, err = lab.agent(*cmd)
                self.assertEqual(rc, 5, f"{cmd}: {out}{err}")
                self.assertNoBlame(out + err)
        # status: not 0 with "store version -"
        rc, doc, err = self.json_of("status")
        self.assertEqual((rc, doc["exit"], doc["complete"]), (5, 5, False), doc)
        self.assertIn("unreachable", doc["error"])
        self.assertIn("unreachable", err, "stderr says 'reported above' of nothing")
        # rotate: the lease could not be taken because Vault is down, not
        # because another holder has it
        rc, doc, err = self.json_of("rotate")
        self.assertEqual(rc, 5, (doc, err))
        [db] = doc["ags"][0]["databases"]
        self.assertNotEqual(db["outcome"], "locked", db)

    # ---- credentials refused: 1, naming what to fix ----
    def test_wrong_vault_token_is_1_and_names_the_token(self):
        lab = self.lab
        tok = os.path.join(lab.dir, "vault-root-token")
        with open(tok, "w") as f:
            f.write("hvs.not-the-right-token-0123456789")
        for cmd in EVERY:
            with self.subTest(cmd=cmd):
                rc, out, err = lab.agent(*cmd)
                self.assertEqual(rc, 1, f"{cmd}: {out}{err}")
                self.assertIn(f"token = file:{tok}", out + err, "the credential to fix is not named")
                self.assertIn("[store hcv]", out + err)
                self.assertNoRerun(out + err)
                self.assertNoBlame(out + err)
        rc, doc, err = self.json_of("rotate")
        self.assertEqual((rc, doc["exit"]), (1, 1), (doc, err))
        [db] = doc["ags"][0]["databases"]
        self.assertNotEqual(db["outcome"], "locked", "an auth failure reported as a lock")
        rc, doc, err = self.json_of("verify")
        self.assertEqual((rc, doc["exit"]), (1, 1), (doc, err))
        self.assertIn(f"token = file:{tok}", doc["error"])
        self.assertNoBlame(doc["error"])

    def test_vault_permission_denied_is_1_and_names_the_token(self):
        """A valid token whose policies do not reach the DMK's path: Vault
        403 permission denied."""
        lab = self.lab
        vault_api(lab, "PUT", "sys/policies/acl/elsewhere",
                  {"policy": 'path "secret/data/elsewhere/*" { capabilities = ["read"] }'})
        tok = vault_api(lab, "POST", "auth/token/create",
                        {"policies": ["elsewhere"], "ttl": "1h"})["auth"]["client_token"]
        path = os.path.join(lab.dir, "vault-other-token")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(tok)
        set_config(lab, "token = file:" + os.path.join(lab.dir, "vault-root-token"),
                   "token = file:" + path)
        for cmd in [["register"], ["verify"], ["status"], ["rotate"], ["backup"], ["run"]]:
            with self.subTest(cmd=cmd):
                rc, out, err = lab.agent(*cmd)
                self.assertEqual(rc, 1, f"{cmd}: {out}{err}")
                self.assertIn("permission denied", out + err)
                self.assertIn(f"token = file:{path}", out + err, "the credential is not named")
                self.assertNoRerun(out + err)
                self.assertNoBlame(out + err)
                self.assertNotIn(tok, out + err)

    # ---- a database that is not in the AG ----
    def test_database_not_in_ag_is_1_without_rows(self):
        lab = self.lab
        lab.write_config(databases=[("CM_P01", None), ("NOPE", None)])
        lab.put_dmk_password(ref="hcv:sql/ag1/nope/dmk#password")   # only the AG is wrong
        for cmd in [["register"], ["verify"], ["status"], ["rotate"], ["recover"], ["run"],
                    ["backup", "--database", "NOPE"]]:
            with self.subTest(cmd=cmd):
                rc, out, err = lab.agent(*cmd)
                self.assertEqual(rc, 1, f"{cmd}: {out}{err}")
                self.assertIn("database NOPE is not in availability group AG1", out + err)
                self.assertNoRerun(out + err)
        rc, doc, err = self.json_of("status")
        self.assertEqual(rc, 1, (doc, err))
        self.assertIn("NOPE", doc["error"])
        rows = [d["database"] for r in doc["ags"][0]["replicas"] for d in r["databases"]]
        self.assertEqual(sorted(set(rows)), ["CM_P01"], "status invented rows for NOPE")
        rc, doc, err = self.json_of("verify")
        rows = [d["database"] for r in doc["ags"][0]["replicas"] for d in r["databases"]]
        self.assertNotIn("NOPE", rows)
        # the same key for a database in every command's JSON
        for cmd in (["rotate", "--dry-run"], ["register", "--dry-run"]):
            rc, doc, err = self.json_of(*cmd)
            dbs = doc["ags"][0]["databases"]
            self.assertEqual(sorted(d["database"] for d in dbs), ["CM_P01", "NOPE"], (cmd, doc))
            self.assertFalse(any("name" in d for d in dbs), f"{cmd}: 'name' for a database")

    # ---- a reference whose path does not exist (a typo) ----
    def test_typo_in_reference(self):
        lab = self.lab
        set_config(lab, "hcv:sql/ag1/cm_p01/dmk#password", TYPO)
        before_sql, before_store = sql_state(lab), vault_versions(lab, rotlib.PATH)
        for cmd in EVERY + [["store", "show", TYPO]]:
            with self.subTest(cmd=cmd):
                rc, out, err = lab.agent(*cmd)
                self.assertEqual(rc, 1, f"{cmd}: {out}{err}")
                self.assertIn(f"no such secret at {TYPO}", out + err)
                self.assertNoRerun(out + err)
                if cmd == ["store", "check"]:
                    self.assertNotRegex(out, r"\bok\b", "store check passed a missing secret")
                if cmd == ["rotate"]:
                    self.assertNotIn("recover", out + err, "rotate advises recover for a typo")
        # recover without the flag: nothing changed, in SQL Server or the store
        rc, out, err = lab.agent("recover")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("--password-unknown", err)
        self.assertEqual(sql_state(lab), before_sql, "recover changed SQL Server on a typo")
        self.assertEqual((vault_versions(lab, rotlib.PATH), vault_versions(lab, "sql/ag1/cm_p0l/dmk")),
                         (before_store, []), "recover wrote to the store on a typo")
        # with --password-unknown: says what it adds, then adds it
        rc, out, err = lab.agent("recover", "--password-unknown")
        self.assertEqual(rc, 0, out + err)
        self.assertIn("adding a new password to the DMK", out)
        self.assertIn("a credential for it on each of 3 replica(s)", out)
        self.assertLess(out.index("adding a new password"), out.index("store version 1 is current"),
                        out)
        after = sql_state(lab)
        self.assertEqual(after[1], sorted(before_sql[1] + ["pw"]))
        self.assertEqual([len(c) for c in after[2]], [len(c) + 1 for c in before_sql[2]])
        self.assertEqual(vault_versions(lab, "sql/ag1/cm_p0l/dmk"), [1])

    # ---- exit 2 means nothing changed ----
    def test_backup_smk_partial_is_3(self):
        rc, doc, err = self.json_of("backup", "--smk")
        self.assertGreater(doc["escrowed"], 0, (doc, err))
        self.assertEqual((rc, doc["exit"]), (3, 3), (doc, err))
        self.assertIn("smk_backup_password", err)

    # ---- a SQL login failure: once, naming the reference ----
    def test_sql_login_failure_once_naming_the_reference(self):
        lab = self.lab
        pwfile = os.path.join(lab.dir, "sa-password")
        with open(pwfile, "w") as f:
            f.write("Not-the-sa-password-1")
        for cmd in [c for c in EVERY if c != ["store", "check"]]:
            with self.subTest(cmd=cmd):
                rc, out, err = lab.agent(*cmd)
                self.assertEqual(rc, 1, f"{cmd}: {out}{err}")
                self.assertEqual((out + err).count("18456"), 1, f"{cmd}: {out}{err}")
                self.assertIn(f"file:{pwfile}", err, "the login password's reference is not named")
                self.assertIn("login_password in [ag AG1]", err)
                self.assertNoRerun(out + err)
                self.assertNoBlame(out + err)
        rc, doc, err = self.json_of("status")
        self.assertEqual(rc, 1)
        self.assertIn(f"file:{pwfile}", doc["error"])
        self.assertEqual(err.count("18456"), 1, err)


class AzureOutcomes(unittest.TestCase):
    """The same causes with the DMK password in Azure Key Vault (azuresim):
    a client secret refused is 1 naming it, Key Vault stopped is 5, a
    missing secret is "no such secret at" in store check too."""

    def setUp(self):
        self.lab = AzureLab(nodes=3).__enter__()
        self.lab.put_dmk_password()
        rc, out, err = self.lab.agent("register")
        self.assertEqual(rc, 0, out + err)

    def tearDown(self):
        self.lab.__exit__(None, None, None)

    def test_client_secret_refused_is_1_and_named(self):
        lab = self.lab
        with open(lab.client_secret_file, "w") as f:
            f.write("Az-wrong-secret-000\n")
        for cmd in EVERY:
            with self.subTest(cmd=cmd):
                rc, out, err = lab.agent(*cmd)
                self.assertEqual(rc, 1, f"{cmd}: {out}{err}")
                self.assertIn(f"client_secret = file:{lab.client_secret_file}", out + err)
                for w in RERUN + BLAME:
                    self.assertNotIn(w, out + err)

    def test_key_vault_stopped_is_5(self):
        lab = self.lab
        lab.azure.stop()
        for cmd in EVERY:
            with self.subTest(cmd=cmd):
                rc, out, err = lab.agent(*cmd)
                self.assertEqual(rc, 5, f"{cmd}: {out}{err}")

    def test_missing_secret_in_store_check(self):
        lab = self.lab
        set_config(lab, "akv:sql-ag1-cm-p01-dmk", "akv:sql-ag1-cm-p0l-dmk")
        for cmd in (["store", "check"], ["status"], ["rotate"]):
            with self.subTest(cmd=cmd):
                rc, out, err = lab.agent(*cmd)
                self.assertEqual(rc, 1, f"{cmd}: {out}{err}")
                self.assertIn("no such secret at akv:sql-ag1-cm-p0l-dmk", out + err)


if __name__ == "__main__":
    run_unittests()
