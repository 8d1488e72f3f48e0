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

    def test_help_for_every_command(self):
        import re
        rc, out, _ = run("--help")
        listed = re.findall(r"^  ([a-z]+(?: [a-z]+)?)\s{2,}\S", out.split("Commands:", 1)[1], re.M)
        self.assertIn("rotate", listed)
        self.assertIn("store put", listed)
        self.assertIn("doctor", listed)
        for cmd in listed:
            rc, out, err = run(*cmd.split(), "--help")
            self.assertEqual(rc, 0, cmd)
            self.assertIn("usage: dmkagent [global options] " + cmd, out, cmd)

    def test_unknown_subcommand_named(self):
        rc, _, err = run("store", "frob")
        self.assertEqual(rc, 2)
        self.assertIn("unknown store command 'frob'", err)
        self.assertIn("check, put, show", err)
        rc, _, err = run("config")
        self.assertEqual(rc, 2)
        self.assertIn("'config' needs a command", err)
        rc, _, err = run("rotat")
        self.assertEqual(rc, 2)
        self.assertIn("unknown command 'rotat' (did you mean 'rotate'?)", err)

    def test_unknown_option_named(self):
        path = self.conf(self.base() + "[ag AG1]\nlistener = 127.0.0.1:1\nlogin = x\n"
                         "login_password = file:/nonexistent\n")
        for cmd in ["status", "register", "verify", "rotate", "recover", "backup"]:
            rc, _, err = run("-c", path, cmd, "--bogus")
            self.assertEqual(rc, 2, cmd)
            self.assertIn("unknown option '--bogus'", err, cmd)

    def test_store_put_takes_exactly_one_line(self):
        path = self.conf(self.base())
        for value in ["Two-Lines-1!\nSecond-Line-2!\n", "Trailing-Line-1!\n\n"]:
            rc, out, err = run("-c", path, "store", "put", "hcv:sql/x#password", stdin=value)
            self.assertEqual(rc, 2, err)
            self.assertIn("more than one line", err)
            self.assertNotIn("Second-Line", out + err)
        rc, _, err = run("-c", path, "store", "put", "hcv:sql/x#password", stdin="\n")
        self.assertEqual(rc, 2)
        self.assertIn("empty", err)

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

    # ---- the audit log's tail: checkpoint, rotation, runs ----
    def keyed(self):
        key = os.path.join(self.d, "audit.key")
        with open(os.open(key, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write("audit-key-0123456789\n")
        return self.conf(self.base().replace("[store hcv]", f"audit_key = file:{key}\n[store hcv]"))

    def one_run(self, p):
        """A run that writes run-start, store-put (failed: no store) and run-end."""
        return run("-c", p, "store", "put", "hcv:sql/x", stdin=CANARY + "\n")

    def test_audit_cut_then_extend(self):
        p = self.keyed()
        log = f"{self.d}/audit.jsonl"
        for _ in range(2):
            self.assertEqual(self.one_run(p)[0], 2)
        rc, out, err = run("-c", p, "audit", "verify", log)
        self.assertEqual(rc, 0, err)
        self.assertIn("6 records, hash chain intact, MACs verified", out)
        with open(log) as f:
            first = f.readline()
        with open(log, "w") as f:
            f.write(first)
        # the next run refuses to chain onto the cut log, and says why
        rc, out, err = self.one_run(p)
        self.assertEqual(rc, 1, err)
        self.assertIn(f"{log}: the log ends at seq 1 but its checkpoint", err)
        self.assertIn("missing at the end (truncated); refusing to append", err)
        with open(log) as f:
            self.assertEqual(f.read(), first)
        rc, out, err = run("-c", p, "audit", "verify", log)
        self.assertEqual(rc, 1, out)
        self.assertIn(f"{log}:1: the log ends here at seq 1, but the checkpoint", err)
        self.assertIn("truncated", err)
        self.assertNotIn("intact", out)
        # an empty log with a checkpoint that is not
        open(log, "w").close()
        rc, out, err = run("-c", p, "audit", "verify", log)
        self.assertEqual(rc, 1, out)
        self.assertIn(f"{log}: empty, but the checkpoint", err)
        # the operator accepts the log on purpose: recorded, then runs go on
        rc, out, err = run("-c", p, "audit", "reset-checkpoint", "--reason", "restored by hand")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.one_run(p)[0], 2)
        rc, out, err = run("-c", p, "audit", "verify")
        self.assertEqual(rc, 0, err)
        self.assertIn("checkpoint-reset (reason: restored by hand; the checkpoint said seq 6)", out)
        self.assertEqual(run("-c", p, "audit", "reset-checkpoint")[0], 2)

    def test_audit_macs_not_checked_without_key(self):
        p = self.keyed()
        self.one_run(p)
        rc, out, err = run("-c", "/nonexistent", "audit", "verify", f"{self.d}/audit.jsonl")
        self.assertEqual(rc, 0, err)
        self.assertNotIn("MACs verified", out)
        self.assertIn("MACs present but not checked: no audit_key", out)
        self.assertIn("checkpoint: not compared", out)
        # a key, but nothing it could check: no claim either
        os.unlink(f"{self.d}/audit.jsonl")
        open(f"{self.d}/empty.jsonl", "w").close()
        rc, out, err = run("-c", p, "audit", "verify", f"{self.d}/empty.jsonl")
        self.assertEqual(rc, 0, err)
        self.assertNotIn("MACs verified", out)

    def test_audit_rotation(self):
        p = self.keyed()
        log, old = f"{self.d}/audit.jsonl", f"{self.d}/audit.jsonl.1"
        self.one_run(p)
        os.rename(log, old)
        open(log, "w").close()          # logrotate create
        self.one_run(p)
        rc, out, err = run("-c", p, "audit", "verify", old, log)
        self.assertEqual(rc, 0, err)
        self.assertIn(f"{log}: 4 records, hash chain intact (continues the previous file), "
                      "MACs verified", out)
        rc, out, err = run("-c", p, "--output", "json", "audit", "verify", old, log)
        self.assertEqual(rc, 0, err)
        j = json.loads(out)
        self.assertEqual((j["file"], j["records"], j["chain"], j["mac"], j["head_seq"]),
                         (log, 7, "ok", "ok", 7))
        self.assertEqual(j["checkpoint"], "seq 7")
        self.assertEqual([f["continues"] for f in j["files"]], [False, True])
        rc, out, err = run("-c", p, "audit", "verify", log)
        self.assertEqual(rc, 0, err)
        self.assertIn(f"{log}:1 continues a previous log file at seq 4", out)
        rc, out, err = run("-c", p, "audit", "verify", log, old)
        self.assertEqual(rc, 1, out)
        self.assertIn(f"{old}:1: does not continue {log}", err)
        with open(log) as f:
            rec = json.loads(f.readline())
        self.assertEqual((rec["seq"], rec["action"]), (4, "log-continues"))

    def test_audit_run_without_end(self):
        import hashlib

        def chain(actions):
            prev, out = "0" * 64, []
            for i, (act, rid, *about) in enumerate(actions, 1):
                rec = {"seq": i, "run_id": rid, "action": act}
                if about:
                    rec["about_run"] = about[0]
                rec["prev"] = prev
                line = json.dumps(rec, separators=(",", ":"))
                out.append(line + "\n")
                prev = hashlib.sha256(line.encode()).hexdigest()
            return "".join(out)
        log = os.path.join(self.d, "a.jsonl")
        with open(log, "w") as f:
            f.write(chain([("run-start", "a" * 32), ("register", "a" * 32),
                           ("run-start", "b" * 32), ("run-end", "b" * 32)]))
        rc, out, err = run("-c", "/nonexistent", "audit", "verify", log)
        self.assertEqual(rc, 1, out)
        self.assertIn(f"a.jsonl:1: run {'a' * 32} started here has no run-end", err)
        self.assertIn("a.jsonl:3", err)
        # the agent's own record of a killed run makes it a note, not a failure
        with open(log, "w") as f:
            f.write(chain([("run-start", "a" * 32), ("register", "a" * 32),
                           ("run-interrupted", "b" * 32, "a" * 32), ("run-start", "b" * 32)]))
        rc, out, err = run("-c", "/nonexistent", "audit", "verify", log)
        self.assertEqual(rc, 0, err)
        self.assertIn(f"a.jsonl:1: run {'a' * 32} was interrupted", out)
        self.assertIn(f"a.jsonl:4: run {'b' * 32} has no run-end yet", out)

    def test_env_secrets_leave_environment(self):
        """VAULT_TOKEN, AZURE_CLIENT_SECRET and env: references are taken out
        of the environment, and their bytes out of /proc/PID/environ (the
        initial stack copy that unsetenv leaves alone), while the agent runs."""
        import socket
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
            # the TLS handshake: this listener never answers); it took the
            # secrets out of its environment before (main.c, ctx.c), so the
            # connection is the event to wait for.
            lsn.settimeout(30)
            conn, _ = lsn.accept()
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
