#!/usr/bin/python3
"""npm tedious 19 against sqlsim over verified TLS; exits 77 when node or tedious is missing."""
import json
import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from simtest import DMK_PW, SA_PW, SKIP, SRCDIR, SqlSim, main, pki  # noqa: E402

NODE = shutil.which("node")
MOD = os.path.join(SRCDIR, "tests", "js", "node_modules", "tedious")
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tedious_client.js")


class Tedious(unittest.TestCase):
    def test_tedious(self):
        with SqlSim(nodes=2, dmk_password=DMK_PW) as sim:
            p = subprocess.run([NODE, SCRIPT, str(sim.port(0)), pki()["ca_pem"], SA_PW], capture_output=True,
                               text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            r = json.loads(p.stdout.strip().splitlines()[-1])
            self.assertNotIn("error", r, r)
            self.assertEqual(r["server"], "SQLNODE1")
            self.assertEqual(len(r["check"]), 5)
            self.assertTrue(all(isinstance(x, str) and len(x) == 55 for x in r["check"]), r["check"])
            self.assertEqual(r["types"][0], True)
            self.assertIsNone(r["types"][1])
            self.assertEqual(r["types"][2], "9000000000")
            self.assertEqual(r["types"][3], "x'y")
            self.assertEqual(r["types"][4], "abcd")
            self.assertEqual(r["types"][5].upper(), "6F9619FF-8B86-D011-B42D-00C04FC964FF")
            self.assertEqual(r["param"], [["CM_P01"]])
            self.assertEqual(r["status"], 0)
            self.assertEqual(r["dup"], 15594)
            self.assertEqual(r["syntax"], 102)
            self.assertEqual(r["creds"], 1)
            self.assertEqual(r["wrong_ca"], "refused")


if __name__ == "__main__":
    if not NODE or not os.path.isdir(MOD):
        print("node or tedious missing: skipped")
        sys.exit(SKIP)
    main()
