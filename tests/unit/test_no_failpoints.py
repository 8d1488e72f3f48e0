#!/usr/bin/python3
"""build/ is what the demo runs and `meson install` installs: its dmkagent
must have no failpoints (no DMKAGENT_FAILPOINT, no SIGKILL at a step
boundary).  Skipped (77) when build/ is not configured, or when this test
runs from build/ itself configured as a test build (-Dfailpoints=true)."""
import json
import os
import subprocess
import sys

SRC = os.environ.get("SRCDIR") or os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
HERE = os.path.realpath(os.environ.get("BUILDDIR", ""))
BUILD = os.path.join(SRC, "build")
MARKERS = (b"DMKAGENT_FAILPOINT", b"failpoint %s: killing myself")


def failpoints_option(builddir):
    try:
        p = subprocess.run(["meson", "introspect", "--buildoptions", builddir],
                           capture_output=True, text=True, timeout=60)
        for o in json.loads(p.stdout):
            if o["name"] == "failpoints":
                return o["value"]
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    return None


def main():
    if not os.path.isfile(os.path.join(BUILD, "build.ninja")):
        print(f"{BUILD} is not configured: skipped")
        return 77
    opt = failpoints_option(BUILD)
    if os.path.realpath(BUILD) == HERE and opt:
        print(f"{BUILD} is configured as a test build (-Dfailpoints=true): skipped")
        return 77
    binary = os.path.join(BUILD, "dmkagent")
    if not os.path.isfile(binary):
        print(f"{binary} not built: skipped")
        return 77
    if opt:
        print(f"FAIL: {BUILD} is configured with -Dfailpoints=true; scripts/setup.sh "
              "builds it without (the test builds are build-test/ and build-san/)")
        return 1
    with open(binary, "rb") as f:
        data = f.read()
    found = [m.decode() for m in MARKERS if m in data]
    if found:
        print(f"FAIL: {binary} has failpoints: {', '.join(found)} (stale build? run ninja -C {BUILD})")
        return 1
    print(f"{binary}: no failpoints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
