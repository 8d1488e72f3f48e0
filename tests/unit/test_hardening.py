#!/usr/bin/python3
"""The built dmkagent carries the hardening meson.build asks for: a PIE
(ELF type DYN), full RELRO (a GNU_RELRO segment and BIND_NOW), stack
canaries (__stack_chk_fail imported) and, in an optimised build without
sanitizers, _FORTIFY_SOURCE (some __*_chk function imported).

    test_hardening.py OPTIMIZATION B_SANITIZE    (meson passes both)
Exit 0 all present, 1 one is missing, 77 skipped (no readelf, no binary).
"""
import os
import re
import shutil
import subprocess
import sys

SKIP = 77


def readelf(*args):
    return subprocess.run(["readelf", "-W", *args], capture_output=True, text=True,
                          check=True).stdout


def main():
    optimization = sys.argv[1] if len(sys.argv) > 1 else "2"
    sanitize = sys.argv[2] if len(sys.argv) > 2 else "none"
    exe = os.environ.get("DMKAGENT", "")
    if not shutil.which("readelf"):
        print("SKIP: no readelf")
        return SKIP
    if not os.path.isfile(exe):
        print(f"SKIP: no agent binary at {exe!r}")
        return SKIP
    hdr, dyn, seg = readelf("-h", exe), readelf("-d", exe), readelf("-l", exe)
    syms = readelf("--dyn-syms", exe)
    failed = []

    def check(ok, what):
        print(("ok - " if ok else "not ok - ") + what)
        if not ok:
            failed.append(what)

    check(re.search(r"Type:\s+DYN", hdr) is not None, "PIE (ELF type DYN)")
    check("GNU_RELRO" in seg, "a GNU_RELRO segment")
    check(re.search(r"\(BIND_NOW\)|\(FLAGS\)\s.*\bBIND_NOW\b|\(FLAGS_1\)\s.*\bNOW\b", dyn)
          is not None, "BIND_NOW (full RELRO)")
    check(re.search(r"\b__stack_chk_fail\b", syms) is not None,
          "__stack_chk_fail imported (-fstack-protector-strong)")
    if optimization in ("0", "g", "plain"):
        print(f"# skipping the _FORTIFY_SOURCE check: -O{optimization} build "
              "(glibc fortifies only with optimisation)")
    elif sanitize not in ("", "none"):
        print(f"# skipping the _FORTIFY_SOURCE check: sanitizer build ({sanitize}), "
              "which leaves fortification to the sanitizers")
    else:
        chk = sorted(set(re.findall(r"\b(__\w+_chk)\b", syms)) - {"__stack_chk_fail"})
        check(bool(chk), "fortified functions imported (_FORTIFY_SOURCE): "
              + (", ".join(chk[:6]) or "none"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
