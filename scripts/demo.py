#!/usr/bin/python3
"""The demo: what a DBA does with dmkagent, against the simulators."""
import os
import sys

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("SRCDIR", SRC)
os.environ.setdefault("DMKAGENT", os.path.join(SRC, "build", "dmkagent"))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
from lab import Lab  # noqa: E402


def step(title):
    print(f"\n=== {title}")


def show(cmd, rc, out, err):
    print(f"$ dmkagent {cmd}   (exit {rc})")
    sys.stdout.write(out)
    if err.strip():
        sys.stdout.write(err)


def main():
    failed = 0
    with Lab(nodes=3) as lab:
        print(f"Availability group AG1: {', '.join(n['name'] for n in lab.sql_ready['nodes'])}, "
              f"listener 127.0.0.1:{lab.sql_ready['listener_port']}; Vault at {lab.vault.ready['address']}")
        step("The DBA stores the DMK password in Vault (from standard input, never argv)")
        out = lab.put_dmk_password()
        show("store put hcv:sql/ag1/cm_p01/dmk#password < password", 0, out, "")
        show("store show hcv:sql/ag1/cm_p01/dmk#password", *lab.agent("store", "show", "hcv:sql/ag1/cm_p01/dmk#password"))

        step("Before: fail over to SQLNODE2, the runbook's check query returns NULLs")
        lab.failover(1)
        print("  rows:", [r[0] for r in lab.check_query()])
        lab.failover(0)

        step("verify finds the gap")
        show("verify", *lab.agent("verify"))

        step("register on every replica (the password is proven on the primary first)")
        rc, out, err = lab.agent("register")
        show("register", rc, out, err)
        failed += rc != 0
        show("register   (again: nothing changes)", *lab.agent("register"))

        step("verify")
        rc, out, err = lab.agent("verify")
        show("verify", rc, out, err)
        failed += rc != 0

        step("After: fail over to each node, the check query decrypts everywhere")
        for n in [1, 2, 0]:
            lab.failover(n)
            rows = [r[0] for r in lab.check_query()]
            ok = rows and all(r is not None for r in rows)
            failed += not ok
            print(f"  primary {lab.sql_ready['nodes'][n]['name']}: {len(rows)} rows, "
                  f"{'plaintext' if ok else 'NULL'}: {rows[:2]}")

        step("status")
        show("status", *lab.agent("status"))
        step("the audit trail")
        show(f"audit verify {os.path.basename(lab.audit_log)}", *lab.agent("audit", "verify", lab.audit_log))
    print("\ndemo " + ("succeeded" if failed == 0 else f"FAILED ({failed} step(s))"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
