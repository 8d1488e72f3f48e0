#!/usr/bin/python3
"""Count meson's results (testlog.json of each build) into one closing line:
N passed, N failed, N skipped.  Exit 1 on any failure or when no test ran.
A build whose log is missing ran no test (meson writes none then): that alone
is no failure, but a run in which no build ran a test fails."""
import json
import sys

passed = failed = skipped = 0
for path in sys.argv[1:]:
    try:
        lines = open(path).read().splitlines()
    except OSError:
        print(f"testsummary: {path}: no test ran in this build", file=sys.stderr)
        continue
    for line in lines:
        if not line.strip():
            continue
        r = json.loads(line).get("result", "")
        if r in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif r == "SKIP":
            skipped += 1
        else:
            failed += 1
            print(f"testsummary: {json.loads(line).get('name')}: {r}", file=sys.stderr)
if passed == 0 and failed == 0:
    print("testsummary: no test ran", file=sys.stderr)
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or passed == 0 else 0)
