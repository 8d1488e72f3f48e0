#!/usr/bin/python3
"""Opt-in: the read-only commands against real servers.

    DMKAGENT_REAL_CONFIG=/etc/dmkagent/test.conf meson test -C build --suite real

The configuration points at a real AG listener and a real store holding the
DMK password of a test database.  With DMKAGENT_REAL_REGISTER=1 the test also
runs `register` (it only adds credentials).  Without the variable: skipped (77).
"""
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
sys.exit(1 if failed else 0)
