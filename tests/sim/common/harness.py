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


def free_port_block(n):
    """A base port with n consecutive free ports on 127.0.0.1."""
    for _ in range(200):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        base = s.getsockname()[1]
        s.close()
        if base + n >= 65000:
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
            return base
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
