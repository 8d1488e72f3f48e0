"""Start a simulator, wait for its one JSON ready line, stop it.

    with Sim([path, args...], timeout=20) as sim:
        sim.ready   # the parsed ready line
Stderr goes to a log file beside the state directory (shown on failure).
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import select
import socket

PY = "/usr/bin/python3"     # Debian's python3: python3-tds, -hvac, -cryptography live here

SKIP = 77


def run_unittests():
    """unittest.main for meson: exit 1 on any failure or error, 77 when every
    test was skipped (meson then counts a skip, not a pass), else 0."""
    import unittest
    prog = unittest.main(exit=False, verbosity=2)
    res = prog.result
    if not res.wasSuccessful():
        sys.exit(1)
    if res.testsRun > 0 and len(res.skipped) == res.testsRun:
        sys.exit(SKIP)
    sys.exit(0)


def wait_for(what, cond, timeout=90, every=0.1):
    """Poll cond until it is true (its value is returned), or fail naming what."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def failpoints_expected():
    """This build is a test build (meson -Dfailpoints=true): a binary without
    failpoints there is a broken build, to be failed, never skipped."""
    return os.environ.get("DMKAGENT_EXPECT_FAILPOINTS") == "1"


_RESERVATIONS = "/tmp/dmkagent-test-ports"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def free_port_block(n):
    """A base port with n consecutive free ports on 127.0.0.1.

    Tests run in parallel, so a port that is free now can be taken before the
    simulator binds it.  Two precautions: the block is chosen below the
    kernel's ephemeral range (client sockets of other tests never land
    there), and it is reserved in a shared file, under flock, for as long as
    this process lives.
    """
    import fcntl
    import random
    lo, hi = 20000, 32000
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            eph = int(f.read().split()[0])
            hi = min(hi, eph - 1)
    except (OSError, ValueError):
        pass
    fd = os.open(_RESERVATIONS, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "r+") as f:
            taken = []
            for line in f.read().splitlines():
                try:
                    b, m, pid = (int(x) for x in line.split())
                except ValueError:
                    continue
                if _pid_alive(pid):
                    taken.append((b, m, pid))
            for _ in range(500):
                base = random.randrange(lo, hi - n)
                if any(base < b + m and b < base + n for b, m, _ in taken):
                    continue
                ok = True
                for p in range(base, base + n):
                    t = socket.socket()
                    try:
                        t.bind(("127.0.0.1", p))
                    except OSError:
                        ok = False
                    finally:
                        t.close()
                    if not ok:
                        break
                if ok:
                    taken.append((base, n, os.getpid()))
                    f.seek(0)
                    f.truncate()
                    f.write("".join(f"{b} {m} {pid}\n" for b, m, pid in taken))
                    return base
    finally:
        os.close(fd)
    raise RuntimeError("no free port block")


class Sim:
    def __init__(self, argv, timeout=30, log_path=None, env=None):
        self.argv = argv
        self.timeout = timeout
        self.log_path = log_path or tempfile.mktemp(prefix="sim-", suffix=".log")
        self.env = env
        self.proc = None
        self.ready = None

    def __enter__(self):
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL, env=self.env)
        deadline = time.time() + self.timeout
        line = b""
        while time.time() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                ch = os.read(self.proc.stdout.fileno(), 1)
                if not ch:
                    break
                if ch == b"\n":
                    break
                line += ch
            elif self.proc.poll() is not None:
                break
        if not line:
            self.stop()
            sys.stderr.write(open(self.log_path, errors="replace").read())
            raise RuntimeError(f"simulator did not become ready: {self.argv[0]}")
        self.ready = json.loads(line)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()

    def __exit__(self, *a):
        self.stop()

    def log_text(self):
        try:
            return open(self.log_path, errors="replace").read()
        except OSError:
            return ""
