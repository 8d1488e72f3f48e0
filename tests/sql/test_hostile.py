#!/usr/bin/python3
"""dmkagent against a hostile TDS server (hostile_tds.py): an oversized,
truncated or garbled PRELOGIN, TLS or framing answer, a connection closed
mid-handshake, a silent server.  Each command must end with exit 1 or 5 and
a message naming the server's address, never by a signal or a sanitizer
report, and within its connect timeout.

    python3 test_hostile.py [MODE...]
Exit 0 all passed, 1 a check failed, 77 skipped (no agent binary).
"""
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest

SRC = os.environ.get("SRCDIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, SRC)

from tests.sim.common.harness import PY, Sim, free_port_block  # noqa: E402
from tests.sim.common.pki import make_pki  # noqa: E402

DMK = os.environ.get("DMKAGENT") or os.path.join(SRC, "build", "dmkagent")
SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hostile_tds.py")
CONNECT_TIMEOUT = 3
SLACK = 20          # seconds beyond the connect timeout (sanitizer builds are slow)

# mode: (exit codes allowed, what the message must say)
MODES = {
    "oversized": ({1}, r"PRELOGIN answer cannot be parsed"),
    "oversized-valid": ({1}, r"refused full TLS encryption \(PRELOGIN answered ENCRYPT_OFF\)"),
    "short-length": ({1}, r"not a TDS answer .*shorter than the packet header"),
    "truncated-header": ({5}, r"connection closed waiting for the PRELOGIN answer"),
    "truncated-payload": ({5}, r"connection closed waiting for the PRELOGIN answer"),
    "endless-packets": ({1}, r"answer too large .*larger than 256 KiB"),
    "prelogin-offsets": ({1}, r"PRELOGIN answer cannot be parsed \(an option's value lies outside"),
    "prelogin-lengths": ({1}, r"PRELOGIN answer cannot be parsed \(an option's value lies outside"),
    "prelogin-noterm": ({1}, r"PRELOGIN answer cannot be parsed \(the option table has no terminator"),
    "prelogin-into-table": ({1}, r"PRELOGIN answer cannot be parsed \(an option's value lies outside"),
    "encrypt-garbage": ({1}, r"refused full TLS encryption.*unknown ENCRYPTION value, 0x7f"),
    "tls-garbage": ({1}, r"TLS handshake failed"),
    "tls-raw-garbage": ({1}, r"not a TDS answer during the TLS handshake"),
    "tls-oversized": ({1}, r"TLS handshake failed"),
    "close-mid-handshake": ({5}, r"connection closed during the TLS handshake"),
    "silent": ({5}, r"timed out waiting for the PRELOGIN answer"),
    "silent-after-prelogin": ({5}, r"timed out during the TLS handshake"),
    # past TLS: FreeTDS reads the login answer, through the relay
    "login-garbage": ({5}, r"no answer within 3 s to the login|connection lost"),
    "login-oversized": ({5}, r"connection lost|closed"),
    "login-short-length": ({5}, r"connection lost|closed"),
    "login-close": ({5}, r"connection lost|closed"),
    "login-silent": ({5}, r"no answer within 3 s to the login"),
    # logged in: a result value that does not fit its type.  Past the login a
    # session is named as configured ("AG1 listener"), not by its address.
    "result-bad-int": ({1}, r"AG1 listener: the server sent column encrypt_option: a value "
                       r"whose length does not fit its type"),
    "result-nul-string": ({1}, r"AG1 listener: the server sent column encrypt_option: a "
                          r"string with a NUL character in it"),
    # TDS 8.0 (encrypt = strict): the same checks on the PRELOGIN answer inside TLS
    "strict-prelogin-offsets": ({1}, r"PRELOGIN answer inside TLS cannot be parsed \(an option's "
                                r"value lies outside"),
    "strict-oversized": ({1}, r"answer too large waiting for the PRELOGIN answer inside TLS"),
    "strict-close": ({5}, r"connection closed waiting for the PRELOGIN answer inside TLS"),
    "strict-silent": ({5}, r"timed out waiting for the PRELOGIN answer inside TLS"),
}
COMMANDS = [["verify"], ["status"]]


def write_private(path, text):
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(text)
    return path


class Hostile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="dmkhostile-")
        d = cls.tmp.name
        cls.dir = d
        # A real CA (the TLS modes load it), though no mode shows a certificate.
        cls.pki = make_pki(os.path.join(d, "pki"))
        cls.ca = cls.pki["ca_pem"]
        write_private(os.path.join(d, "sa"), "Sa-Pass-123!\n")
        write_private(os.path.join(d, "dmk"), "Dmk-Pass-123!\n")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def config(self, port, extra=""):
        d = self.dir
        text = (f"[agent]\nstate_dir = {d}/state\naudit_log = {d}/audit.jsonl\n"
                f"[ag AG1]\nlistener = 127.0.0.1:{port}\nlogin = sa\n{extra}"
                f"login_password = file:{d}/sa\nca_file = {self.ca}\n"
                f"connect_timeout = {CONNECT_TIMEOUT}s\nquery_timeout = 5s\n"
                f"[database AG1/CM_P01]\ndmk_password = file:{d}/dmk\n")
        return write_private(os.path.join(d, f"dmkagent-{port}.conf"), text)

    def run_mode(self, mode):
        codes, expect = MODES[mode]
        port = free_port_block(1)
        with Sim([PY, SERVER, "--mode", mode, "--port", str(port), "--tls-cert",
                  self.pki["server_pem"], "--tls-key", self.pki["server_key"]], timeout=20,
                 log_path=os.path.join(self.dir, f"{mode}.log")):
            conf = self.config(port, "encrypt = strict\n" if mode.startswith("strict-") else "")
            for cmd in COMMANDS:
                t0 = time.monotonic()
                try:
                    p = subprocess.run([DMK, "-c", conf, *cmd], capture_output=True, text=True,
                                       timeout=CONNECT_TIMEOUT + SLACK + 30)
                except subprocess.TimeoutExpired:
                    self.fail(f"{mode}: {cmd[0]} hung")
                took = time.monotonic() - t0
                text = p.stdout + p.stderr
                what = f"{mode}: {cmd[0]} exit {p.returncode} after {took:.1f} s\n{text}"
                self.assertGreaterEqual(p.returncode, 0, "killed by a signal: " + what)
                self.assertNotRegex(text, r"AddressSanitizer|runtime error:|LeakSanitizer", what)
                self.assertIn(p.returncode, codes, what)
                if not mode.startswith("result-"):
                    self.assertIn(f"127.0.0.1:{port}", text, what)
                self.assertRegex(text, expect, what)
                self.assertLess(took, CONNECT_TIMEOUT + SLACK, what)


def _add(mode):
    setattr(Hostile, "test_" + mode.replace("-", "_"), lambda self: self.run_mode(mode))


for _m in MODES:
    _add(_m)


if __name__ == "__main__":
    if not os.path.exists(DMK):
        print(f"SKIP: no agent binary at {DMK}")
        sys.exit(77)
    unittest.main(verbosity=2)
