#!/usr/bin/python3
"""The relay's loopback port serves only this process's own FreeTDS.

A racer (another local client) watches the agent's listening sockets in
/proc and connects to each relay port the moment it appears, speaking
PRELOGIN like FreeTDS would.  The agent must still succeed, and the racer
must get nothing: no byte, only a closed connection.  In a failpoints build
the relay holds its port open for a moment before FreeTDS connects
(DMKAGENT_TEST_RELAY_DELAY_MS), so the racer wins the race every time; a
run in which the racer never got in is reported as skipped, not passed.
"""
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab import DMK, Lab  # noqa: E402


def agent_listen_ports(pid):
    """127.0.0.1 ports the process listens on (its relays), from /proc."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        with open(f"/proc/{pid}/net/tcp") as f:
            rows = f.read().splitlines()[1:]
    except OSError:
        return []
    ports = []
    for row in rows:
        p = row.split()
        if len(p) > 9 and p[3] == "0A" and p[9] in inodes and p[1].startswith("0100007F:"):
            ports.append(int(p[1].split(":")[1], 16))
    return ports


PRELOGIN = bytes([0x00, 0, 11, 0, 6, 0x01, 0, 17, 0, 1, 0xff]) + bytes(6) + b"\x01"
PRELOGIN_PKT = struct.pack(">BBHHBB", 0x12, 1, 8 + len(PRELOGIN), 0, 1, 0) + PRELOGIN


class Racer(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.stop = threading.Event()
        self.connections = 0     # connections the relay accepted from us
        self.received = b""      # every byte any of them sent us
        self.tried = set()
        self.threads = []        # one per connection attempt

    def one(self, port):
        s = socket.socket()
        s.settimeout(3)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            return
        try:
            self.connections += 1
            s.sendall(PRELOGIN_PKT)
            while True:
                b = s.recv(4096)
                if not b:
                    break
                self.received += b
        except OSError:
            pass
        finally:
            s.close()

    def run(self):
        while not self.stop.is_set():
            for port in agent_listen_ports(self.pid):
                if port not in self.tried:
                    self.tried.add(port)
                    # hammer it: a few connections, in parallel
                    for _ in range(3):
                        t = threading.Thread(target=self.one, args=(port,), daemon=True)
                        t.start()
                        self.threads.append(t)
            time.sleep(0.002)


class RelayPeer(unittest.TestCase):
    def run_raced(self, lab, *args):
        env = dict(os.environ, DMKAGENT_TEST_RELAY_DELAY_MS="300")
        env.pop("DMKAGENT_CONFIG", None)
        p = subprocess.Popen([DMK, "-c", lab.config, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        racer = Racer(p.pid)
        racer.start()
        try:
            out, err = p.communicate(timeout=180)
        finally:
            racer.stop.set()
            racer.join(5)
        for t in racer.threads:   # the racer's last connections see their close
            t.join(10)
            if t.is_alive():
                raise AssertionError("a racer connection never saw its close")
        return p.returncode, out, err, racer

    def test_racer_gets_nothing(self):
        with Lab(nodes=3) as lab:
            lab.put_dmk_password()
            total = 0
            for cmd in (["register"], ["verify"], ["status"]):
                rc, out, err, racer = self.run_raced(lab, *cmd)
                what = f"{cmd}: exit {rc}\n{out}{err}"
                self.assertEqual(rc, 0, what)
                self.assertEqual(racer.received, b"", what + f"\nthe racer got {racer.received[:64]!r}")
                total += racer.connections
                print(f"{cmd[0]}: the racer was accepted {racer.connections} time(s) on "
                      f"{len(racer.tried)} relay port(s)")
                if racer.connections:
                    self.assertIn("not this process's own FreeTDS", err, what)
            if total == 0:
                from tests.sim.common.harness import failpoints_expected
                if failpoints_expected():
                    self.fail("the racer never reached a relay port in a failpoints build")
                self.skipTest("the racer never reached a relay port (not a failpoints build)")


if __name__ == "__main__":
    from tests.sim.common.harness import run_unittests
    run_unittests()
