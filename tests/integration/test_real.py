#!/usr/bin/python3
"""Opt-in: the read-only commands against real servers.

    DMKAGENT_REAL_CONFIG=/etc/dmkagent/test.conf meson test -C build --suite real

The configuration points at a real AG listener and a real store holding the
DMK password of a test database.  With DMKAGENT_REAL_REGISTER=1 the test also
runs `register` (it only adds credentials).  Then every replica of `status --output json` must be
reached, and how its address was found is printed.  Without the variable: skipped (77).
"""
import json
import os
import subprocess
import sys

conf = os.environ.get("DMKAGENT_REAL_CONFIG")
if not conf:
    print("DMKAGENT_REAL_CONFIG not set: real-server tests skipped")
    sys.exit(77)
dmk = os.environ.get("DMKAGENT", "build/dmkagent")
steps = [["config", "check"], ["store", "check"], ["status"]]
if os.environ.get("DMKAGENT_REAL_REGISTER") == "1":
    steps += [["register"]]
steps += [["verify"]]
failed = 0
for s in steps:
    p = subprocess.run([dmk, "-c", conf, *s], capture_output=True, text=True, timeout=600)
    print(f"$ dmkagent {' '.join(s)} -> {p.returncode}\n{p.stdout}{p.stderr}")
    failed += p.returncode != 0
# Every replica placed and reached, and how its address was found (README: How replicas are found).
p = subprocess.run([dmk, "-c", conf, "--output", "json", "status"], capture_output=True, text=True,
                   timeout=600)
try:
    for ag in json.loads(p.stdout)["ags"]:
        for r in ag.get("replicas") or []:
            print(f"{ag['name']}: {r['name']} {r['role']} {r['address']} ({r['address_from']}), "
                  f"certificate name {r['tls_name']}, reached {r['reached']}")
            failed += not r["reached"] or r["address_from"] == "none"
except (ValueError, KeyError) as e:
    print(f"status --output json: unreadable ({e}): {p.stdout[:2000]}{p.stderr[:2000]}")
    failed += 1
sys.exit(1 if failed else 0)
