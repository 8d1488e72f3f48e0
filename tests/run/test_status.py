#!/usr/bin/python3
"""status and verify show the whole state (issue 15): an unfinished rotation
(its step and since when), extra or stale credentials per replica, the store
version in force and the one registered on each replica, last rotation and
next due, last backup and last passed restore test, the version headroom;
verify warns (text and JSON) about an unfinished rotation or extra
credentials and keeps its exit code.  On Vault every key the agent writes
gets max_versions, and a write that would drop a version still in force is
refused."""
import json
import os
import re
import ssl
import sys
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "rotate"))
import rotlib  # noqa: E402
from rotlib import Lab, store_versions, opens, vault_get  # noqa: E402
from azlab import AzureLab  # noqa: E402
from tests.sim.common.harness import run_unittests  # noqa: E402

DMK_ESCROW = f"{rotlib.PATH}-backup-dmk"


def edit_config(lab, db_lines="", store_lines=""):
    """Add lines to [database AG1/CM_P01] and [store hcv]."""
    with open(lab.config) as f:
        text = f.read()
    for line in (db_lines + store_lines).splitlines():
        key = line.split("=")[0].strip()
        text = re.sub(rf"^{re.escape(key)} = [^\n]*\n", "", text, flags=re.M)
    if db_lines:
        text = re.sub(r"(dmk_password = [^\n]*\n)", lambda m: m.group(1) + db_lines, text, count=1)
    if store_lines:
        text = text.replace("[store hcv]\n", "[store hcv]\n" + store_lines, 1)
    with open(lab.config, "w") as f:
        f.write(text)


def vault_post(lab, path, body):
    ctx = ssl.create_default_context(cafile=lab.ca)
    req = urllib.request.Request(lab.vault.ready["address"] + "/v1/" + path,
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"X-Vault-Token": lab.root_token,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=20, context=ctx) as r:
        txt = r.read()
        return json.loads(txt) if txt else {}


def status_json(lab, *args):
    rc, out, err = lab.agent("--output", "json", "status", *args)
    try:
        return rc, json.loads(out), err
    except ValueError:
        raise AssertionError(f"status --output json: not JSON (exit {rc}): {out!r} {err!r}")


def db_entry(doc, name="CM_P01"):
    dbs = doc["ags"][0].get("databases")
    if dbs is None:
        raise AssertionError(f"no per-database entry in {json.dumps(doc['ags'][0])[:2000]}")
    return [d for d in dbs if d["database"] == name][0]


def replica_dbs(doc, name="CM_P01"):
    return {r["name"]: [d for d in r["databases"] if d["database"] == name][0]
            for r in doc["ags"][0]["replicas"] if r["reached"]}


class Status(unittest.TestCase):
    @rotlib.needs_failpoints
    def test_unfinished_rotation_and_extra_credentials(self):
        with Lab(nodes=3) as lab:
            lab.put_dmk_password()
            self.assertEqual(lab.agent("register")[0], 0, lab.last)
            rc, doc, err = status_json(lab)
            self.assertEqual(rc, 0, err)
            d = db_entry(doc)
            self.assertIsNone(d["unfinished_rotation"], d)
            self.assertEqual(d["store_version"], "1")
            self.assertEqual(d["warnings"], [])
            for rep, x in replica_dbs(doc).items():
                self.assertEqual(x["registered_version"], "1", (rep, x))
                self.assertEqual(x["extra_credentials"], 0, (rep, x))
                self.assertFalse(x["stale"], (rep, x))
            # a rotation killed after the new credential is on every replica
            t0 = time.time()
            rc, out, err = lab.agent("rotate", "--no-backup",
                                     env={"DMKAGENT_FAILPOINT": "rotate:after-register"})
            self.assertNotEqual(rc, 0, out + err)
            self.assertEqual([s for _, s, _ in store_versions(lab)], ["current", "pending"])
            creds = [len(lab.credentials(n)) for n in range(3)]
            self.assertTrue(all(c > 1 for c in creds), creds)
            rc, doc, err = status_json(lab)
            self.assertEqual(rc, 0, err)
            d = db_entry(doc)
            u = d["unfinished_rotation"]
            self.assertIsNotNone(u, d)
            self.assertEqual(u["step"], "apply", u)
            self.assertEqual(u["mode"], "rotate", u)
            self.assertEqual((u["new_version"], u["old_version"]), ("2", "1"), u)
            since = time.mktime(time.strptime(u["since"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
            self.assertLess(abs(since - t0), 120, u)
            self.assertEqual(d["store_version"], "1", d)
            reps = replica_dbs(doc)
            self.assertEqual(len(reps), 3, reps)
            for rep, x in reps.items():
                self.assertEqual(x["extra_credentials"], x["credentials"] - 1, x)
                self.assertGreaterEqual(x["extra_credentials"], 1, (rep, x))
                self.assertEqual(len(x["credential_names"]), x["credentials"], x)
            self.assertTrue(any("unfinished" in w for w in d["warnings"]), d["warnings"])
            self.assertTrue(any("credentials for this DMK" in w for w in d["warnings"]), d["warnings"])
            rc, out, err = lab.agent("status")
            self.assertEqual(rc, 0, out + err)
            self.assertIn("UNFINISHED rotate: step apply", out)
            self.assertIn("EXTRA CREDENTIALS", out)
            # verify: the same exit code as before, but it warns
            rc_text, vout, verr = lab.agent("verify")
            # every replica can still open the DMK (the old password is in force
            # and registered): verify passes, as before, and warns
            self.assertEqual(rc_text, 0, vout + verr)
            self.assertIn("warning: CM_P01: an unfinished rotation (rotate; step apply", vout,
                          vout + verr)
            self.assertIn("credentials for this DMK", vout, vout + verr)
            rc, out, err = lab.agent("--output", "json", "verify")
            self.assertEqual(rc, rc_text, out + err)
            vd = db_entry(json.loads(out))
            self.assertTrue(any("unfinished" in w for w in vd["warnings"]), vd)
            self.assertTrue(any("credentials for this DMK" in w for w in vd["warnings"]), vd)
            # finished: nothing unfinished, one credential each, no warnings
            rc, out, err = lab.agent("rotate", "--no-backup")
            self.assertEqual(rc, 0, out + err)
            rc, doc, err = status_json(lab)
            d = db_entry(doc)
            self.assertIsNone(d["unfinished_rotation"], d)
            self.assertEqual(d["store_version"], "2", d)
            self.assertEqual(d["warnings"], [], d)
            for rep, x in replica_dbs(doc).items():
                self.assertEqual((x["extra_credentials"], x["registered_version"], x["stale"]),
                                 (0, "2", False), (rep, x))
            rc, out, err = lab.agent("--output", "json", "verify")
            self.assertEqual(rc, 0, out + err)
            self.assertEqual(db_entry(json.loads(out))["warnings"], [])

    def test_stale_credential(self):
        """A version written after register: every replica's credential holds
        one that is no longer in force."""
        with Lab(nodes=3) as lab:
            lab.put_dmk_password()
            self.assertEqual(lab.agent("register")[0], 0, lab.last)
            lab.put_dmk_password(value="Written-Later-pw-0123456789", overwrite=True)
            rc, doc, err = status_json(lab)
            self.assertEqual(rc, 0, err)
            d = db_entry(doc)
            self.assertEqual(d["store_version"], "2", d)
            for rep, x in replica_dbs(doc).items():
                self.assertEqual((x["registered_version"], x["stale"]), ("1", True), (rep, x))
            self.assertEqual(len([w for w in d["warnings"] if "version 2 is in force" in w]), 3,
                             d["warnings"])
            rc, out, err = lab.agent("status")
            self.assertEqual(out.count("registered 1 (STALE)"), 3, out)

    def test_rotation_backup_restore_test_and_headroom(self):
        with Lab(nodes=3) as lab:
            lab.put_dmk_password()
            self.assertEqual(lab.agent("register")[0], 0, lab.last)
            edit_config(lab, db_lines="rotate_every = 30d\n")
            rc, doc, err = status_json(lab)
            d = db_entry(doc)
            self.assertIsNone(d["last_backup"], d)
            self.assertIsNone(d["last_restore_test"], d)
            t1 = time.time()
            self.assertEqual(lab.agent("rotate")[0], 0, lab.last)      # takes a backup first
            rc, doc, err = status_json(lab)
            self.assertEqual(rc, 0, err)
            d = db_entry(doc)

            def ts(s):
                return time.mktime(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
            self.assertLess(abs(ts(d["last_rotation"]) - t1), 120, d)
            self.assertAlmostEqual(ts(d["next_due"]) - ts(d["last_rotation"]), 30 * 86400, delta=1)
            self.assertIsNotNone(d["last_backup"], d)
            self.assertIsNone(d["last_restore_test"], d)
            self.assertEqual(lab.agent("backup", "--restore-test")[0], 0, lab.last)
            rc, doc, err = status_json(lab)
            d = db_entry(doc)
            self.assertIsNotNone(d["last_restore_test"], d)
            self.assertGreaterEqual(ts(d["last_restore_test"]), ts(d["last_backup"]) - 2, d)
            # Vault: the agent set its max_versions (default 100) on what it wrote
            md = vault_get(lab, f"{rotlib.KV}/metadata/{rotlib.PATH}")["data"]
            self.assertEqual(md["max_versions"], 100, md)
            self.assertEqual(vault_get(lab, f"{rotlib.KV}/metadata/{DMK_ESCROW}")["data"]
                             ["max_versions"], 100)
            v = d["versions"]
            self.assertEqual((v["count"], v["limit"]), (len(md["versions"]), 100), v)
            self.assertEqual(v["oldest_kept"], "2", v)       # the version in force
            self.assertEqual(v["headroom"], 100 - 2 + 1, v)
            rc, out, err = lab.agent("status")
            self.assertIn("next rotation due", out)
            self.assertRegex(out, r"last backup \d{4}-")
            self.assertRegex(out, r"last passed restore test \d{4}-")
            self.assertRegex(out, r"versions: 2 held, 100 kept; headroom 99 write")

    def test_write_that_would_drop_the_version_in_force_is_refused(self):
        with Lab(nodes=3) as lab:
            edit_config(lab, store_lines="max_versions = 3\n")
            lab.put_dmk_password()
            self.assertEqual(lab.agent("register")[0], 0, lab.last)
            md = vault_get(lab, f"{rotlib.KV}/metadata/{rotlib.PATH}")["data"]
            self.assertEqual(md["max_versions"], 3, md)
            # two versions written outside dmkagent and retired: version 1 stays in force
            for pw in ("Abandoned-1-xxxxxxxxxxxx", "Abandoned-2-xxxxxxxxxxxx"):
                vault_post(lab, f"{rotlib.KV}/data/{rotlib.PATH}", {"data": {"password": pw}})
            cm = {f"v{n}.dmkagent-state": "retired" for n in (2, 3)}
            vault_post(lab, f"{rotlib.KV}/metadata/{rotlib.PATH}", {"custom_metadata": cm})
            rc, doc, err = status_json(lab)
            d = db_entry(doc)
            self.assertEqual(d["store_version"], "1", d)
            self.assertEqual((d["versions"]["limit"], d["versions"]["count"],
                              d["versions"]["headroom"], d["versions"]["oldest_kept"]),
                             (3, 3, 0, "1"), d)
            self.assertTrue(any("would be dropped" in w for w in d["warnings"]), d)
            creds_before = [sorted(lab.credentials(n)) for n in range(3)]
            rc, out, err = lab.agent("rotate", "--no-backup")
            self.assertEqual(rc, 1, out + err)
            self.assertIn("would delete version 1 for good", out + err)
            self.assertIn(rotlib.PATH, out + err)
            # nothing written, nothing lost: version 1 is there and opens the DMK
            vs = store_versions(lab)
            self.assertEqual([n for n, _, _ in vs], [1, 2, 3], vs)
            self.assertTrue(opens(lab, vs[0][2]))
            self.assertEqual([sorted(lab.credentials(n)) for n in range(3)], creds_before)
            # with room, the rotation goes through
            edit_config(lab, store_lines="max_versions = 10\n")
            rc, out, err = lab.agent("rotate", "--no-backup")
            self.assertEqual(rc, 0, out + err)
            md = vault_get(lab, f"{rotlib.KV}/metadata/{rotlib.PATH}")["data"]
            self.assertEqual(md["max_versions"], 10, md)


    @rotlib.needs_failpoints
    def test_azure_keeps_every_version(self):
        """Azure Key Vault keeps every version: no limit, no headroom; the
        unfinished rotation shows the same way."""
        with AzureLab(nodes=3) as lab:
            lab.put_dmk_password()
            self.assertEqual(lab.agent("register")[0], 0, lab.last)
            rc, out, err = lab.agent("rotate", "--no-backup",
                                     env={"DMKAGENT_FAILPOINT": "rotate:after-register"})
            self.assertNotEqual(rc, 0, out + err)
            rc, doc, err = status_json(lab)
            self.assertEqual(rc, 0, err)
            d = db_entry(doc)
            self.assertEqual(d["unfinished_rotation"]["step"], "apply", d)
            self.assertEqual((d["versions"]["count"], d["versions"]["limit"],
                              d["versions"]["headroom"]), (2, None, None), d)
            rc, out, err = lab.agent("status")
            self.assertIn("versions: 2 held; the store keeps them all", out)


if __name__ == "__main__":
    if not rotlib.have_pytds():
        print("python3-tds missing: skipped")
        sys.exit(77)
    run_unittests()
