#!/usr/bin/python3
"""The command line contract: --help everywhere, exit codes, messages, no secret on any output."""
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import unittest

DMK = os.environ.get("DMKAGENT", "build/dmkagent")
CANARY = "Canary-Pw-7f3e9a1c!"


def run(*args, stdin=None, env=None):
    e = dict(os.environ)
    e.pop("DMKAGENT_CONFIG", None)
    if env:
        e.update(env)
    p = subprocess.run([DMK, *args], input=stdin, capture_output=True, text=True, env=e, timeout=60)
    return p.returncode, p.stdout, p.stderr


class Cli(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def conf(self, text, mode=0o600):
        path = os.path.join(self.d, "dmkagent.conf")
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def base(self):
        return (f"[agent]\nstate_dir = {self.d}/state\naudit_log = {self.d}/audit.jsonl\n"
                "[store hcv]\ntype = hashicorp-vault\naddress = https://127.0.0.1:1\n"
                "auth = token\ntoken = env:NO_SUCH_TOKEN_VAR\n")

    def test_help_and_version(self):
        rc, out, _ = run("--help")
        self.assertEqual(rc, 0)
        self.assertIn("Exit codes", out)
        for cmd in ["config check", "audit verify", "genpass", "store check", "store put", "store show"]:
            rc, out, err = run(*cmd.split(), "--help")
            self.assertEqual(rc, 0, cmd)
            self.assertIn("usage: dmkagent [global options] " + cmd.split()[0], out)
        rc, out, _ = run("--version")
        self.assertEqual(rc, 0)
        self.assertRegex(out, r"^dmkagent \d+\.\d+\.\d+")

    def test_usage_errors_exit_2(self):
        self.assertEqual(run()[0], 2)
        rc, _, err = run("frobnicate")
        self.assertEqual(rc, 2)
        self.assertIn("unknown command 'frobnicate'", err)
        self.assertEqual(run("--output", "xml", "genpass", "--dry-run")[0], 2)
        rc, _, err = run("-c", "/nonexistent", "genpass")
        self.assertEqual(rc, 2)
        self.assertIn("--dry-run", err)

    def test_config_check(self):
        p = self.conf(self.base())
        rc, out, err = run("-c", p, "config check")
        self.assertEqual(rc, 0, err)
        self.assertIn("valid", out)
        rc, out, err = run("-c", p, "--output", "json", "config", "check")
        self.assertEqual(rc, 0, err)
        model = json.loads(out)
        self.assertEqual(model["stores"][0]["type"], "hashicorp-vault")
        self.assertEqual(model["stores"][0]["settings"]["token"], "env:NO_SUCH_TOKEN_VAR")

    def test_config_literal_secret_never_echoed(self):
        p = self.conf(self.base() + "[ag AG1]\nlistener = h\nlogin = x\n"
                      f"login_password = {CANARY}\n")
        rc, out, err = run("-c", p, "config", "check")
        self.assertEqual(rc, 2)
        self.assertIn("dmkagent.conf:12: 'login_password' holds a literal secret", err)
        self.assertNotIn(CANARY, err + out)

    def test_config_group_writable_refused(self):
        p = self.conf(self.base(), mode=0o620)
        rc, _, err = run("-c", p, "config", "check")
        self.assertEqual(rc, 2)
        self.assertIn("writable by group or others", err)

    def test_config_other_owner_refused(self):
        # A file another user can write names the servers secrets go to.
        if os.geteuid() != 0:
            self.skipTest("needs root to give the file to another user")
        p = self.conf(self.base(), mode=0o644)
        os.chown(p, 65534, 65534)
        rc, _, err = run("-c", p, "config", "check")
        self.assertEqual(rc, 2)
        self.assertIn(p + ": owned by uid 65534", err)
        os.chown(p, 0, 0)
        os.chmod(self.d, 0o777)
        rc, _, err = run("-c", p, "config", "check")
        self.assertEqual(rc, 2)
        self.assertIn(f"its folder {os.path.realpath(self.d)} is writable", err)
        os.chmod(self.d, 0o700)
        self.assertEqual(run("-c", p, "config", "check")[0], 0)

    def test_config_file_ref_mode(self):
        secret = os.path.join(self.d, "s")
        with open(secret, "w") as f:
            f.write("x")
        os.chmod(secret, 0o644)
        p = self.conf(self.base() + f"[ag AG1]\nlistener = h\nlogin = x\nlogin_password = file:{secret}\n")
        rc, _, err = run("-c", p, "config", "check")
        self.assertEqual(rc, 2)
        self.assertIn("readable or writable by group or others", err)
        os.chmod(secret, 0o600)
        self.assertEqual(run("-c", p, "config", "check")[0], 0)

    def test_genpass_dry_run(self):
        rc, out, _ = run("-c", "/nonexistent", "genpass", "--dry-run", "--length", "20")
        self.assertEqual(rc, 0)
        self.assertIn("length:    20", out)
        rc, out, _ = run("-c", "/nonexistent", "--output", "json", "genpass", "--dry-run")
        self.assertEqual(json.loads(out)["length"], 32)
        self.assertEqual(run("-c", "/nonexistent", "genpass", "--dry-run", "--length", "7")[0], 2)

    def test_audit_verify_exit_codes(self):
        log = os.path.join(self.d, "a.jsonl")
        with open(log, "w") as f:
            f.write('{"seq":1,"prev":"%s"}\n' % ("0" * 64))
        rc, out, err = run("-c", "/nonexistent", "audit", "verify", log)
        self.assertEqual(rc, 0, err)
        self.assertIn("1 records, hash chain intact", out)
        with open(log, "a") as f:
            f.write('{"seq":2,"prev":"%s"}\n' % ("0" * 64))
        rc, _, err = run("-c", "/nonexistent", "audit", "verify", log)
        self.assertEqual(rc, 1)
        self.assertIn("a.jsonl:2: hash chain broken", err)

    def test_lock_held_exit_4_and_canary(self):
        p = self.conf(self.base())
        os.makedirs(f"{self.d}/state", mode=0o700)
        fd = os.open(f"{self.d}/state/dmkagent.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        rc, out, err = run("-c", p, "store", "put", "hcv:sql/x", stdin=CANARY + "\n")
        self.assertEqual(rc, 4, err)
        self.assertIn("another dmkagent run holds", err)
        os.close(fd)
        # the store cannot open: a clear error, and the canary is nowhere
        rc, out, err = run("-c", p, "store", "put", "hcv:sql/x", stdin=CANARY + "\n")
        self.assertNotEqual(rc, 0)
        self.assertNotIn(CANARY, out + err)
        with open(f"{self.d}/audit.jsonl") as f:
            log = f.read()
        self.assertNotIn(CANARY, log)
        self.assertIn('"action":"store-put"', log)
        self.assertEqual(run("-c", "/nonexistent", "audit", "verify", f"{self.d}/audit.jsonl")[0], 0)

    def test_env_secrets_leave_environment(self):
        """VAULT_TOKEN, AZURE_CLIENT_SECRET and env: references are taken out
        of the environment, and their bytes out of /proc/PID/environ (the
        initial stack copy that unsetenv leaves alone), while the agent runs."""
        import socket
        import time
        lsn = socket.socket()
        lsn.bind(("127.0.0.1", 0))
        lsn.listen(4)
        port = lsn.getsockname()[1]
        canaries = {"VAULT_TOKEN": "hvs.CanaryVaultTok-51c9e2",
                    "AZURE_CLIENT_SECRET": "CanaryAzSecret-7d2f44",
                    "AZURE_CLIENT_CERTIFICATE_PASSWORD": "CanaryCertPw-0a9b33",
                    "DMK_TEST_BOOT_TOKEN": "CanaryEnvRef-e41f08"}
        text = (f"[agent]\nstate_dir = {self.d}/state\naudit_log = {self.d}/audit.jsonl\n"
                f"[store hcv]\ntype = hashicorp-vault\naddress = https://127.0.0.1:{port}\n"
                "auth = token\ntoken = env:DMK_TEST_BOOT_TOKEN\ntimeout = 20s\n"
                f"[store hcv2]\ntype = hashicorp-vault\naddress = https://127.0.0.1:{port}\n"
                "auth = token\ntimeout = 20s\n")
        p = self.conf(text)
        e = dict(os.environ)
        e.pop("DMKAGENT_CONFIG", None)
        e.update(canaries)
        proc = subprocess.Popen([DMK, "-c", p, "store", "check"], env=e, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            # The agent is inside a store call once it connects (and hangs in
            # the TLS handshake: this listener never answers).
            lsn.settimeout(30)
            conn, _ = lsn.accept()
            time.sleep(0.2)
            with open(f"/proc/{proc.pid}/environ", "rb") as f:
                env = f.read()
            conn.close()
        finally:
            proc.kill()
            out, err = proc.communicate(timeout=30)
            lsn.close()
        self.assertIn(b"PATH=", env)
        for name, value in canaries.items():
            # (not assertNotIn: it would print the whole environment)
            self.assertFalse(value.encode() in env, f"{name} in /proc/PID/environ")
            self.assertFalse(value[:12].encode() in env, f"part of {name} in /proc/PID/environ")
        for value in canaries.values():
            self.assertNotIn(value.encode(), out + err)

    def test_store_put_policy(self):
        p = self.conf(self.base())
        rc, out, err = run("-c", p, "store", "put", "hcv:sql/x", stdin="short\n")
        self.assertEqual(rc, 1)
        self.assertIn("too short", err)
        self.assertNotIn("short\n", out)
        rc, _, err = run("-c", p, "store", "put", "nostore:sql/x", stdin=CANARY)
        self.assertEqual(rc, 2)
        self.assertIn("no [store nostore]", err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
