"""sql/ against the SQL Server simulator (tests/sim/sqlsim), through sqldrv.

    python3 test_sql_integration.py PATH/TO/sqldrv
Exit 0 all passed, 1 a check failed, 77 skipped (no simulator / cryptography).
Every check can fail: each asserts on the exact code, message and the
simulator's own counters (GET /stats), not only on "it did not crash".
"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import traceback
import urllib.request

SRC = os.environ.get("SRCDIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, SRC)

SKIP = 77
SIM = os.path.join(SRC, "tests", "sim", "sqlsim")

DMK_ERR_UNREACHABLE = -7
DMK_ERR_AUTH = -8
DMK_ERR_DENIED = -9
DMK_ERR_TLS = -13
DMK_ERR_SQL = -14
DMK_ERR_TIMEOUT = -21
DMK_ERR_BADINPUT = -22
DMK_ERR_WRONGPASS = -23

SA_PW = "Sa-Pass-123!"
DMK_PW = "Dmk'Pass \u00e4\u00df]\"--;1"        # quotes, brackets, non-ASCII
NEW_PW = "N3w'P\u00e4ssw\u00f6rd]''x\u65e5"


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: test_sql_integration.py SQLDRV")
    drv = sys.argv[1]
    if not os.path.exists(SIM):
        print("SKIP: no simulator at tests/sim/sqlsim")
        return SKIP
    try:
        from tests.sim.common.pki import make_pki
        from tests.sim.common.harness import Sim, free_port_block
    except ImportError as e:
        print(f"SKIP: {e}")
        return SKIP
    t = T(drv, make_pki, Sim, free_port_block)
    try:
        return t.run()
    finally:
        t.cleanup()


class Fail(Exception):
    pass


def check(cond, what, detail=None):
    if not cond:
        raise Fail(what + (f": {detail}" if detail is not None else ""))


class T:
    def __init__(self, drv, make_pki, Sim, free_port_block):
        self.drv = drv
        self.Sim = Sim
        self.free_port_block = free_port_block
        self.tmp = tempfile.TemporaryDirectory(prefix="sqltest-")
        self.dir = self.tmp.name
        self.pki = make_pki(os.path.join(self.dir, "pki"))
        self.sa = self.write("sa.pw", SA_PW)
        self.dmk = self.write("dmk.pw", DMK_PW)
        self.sims = []

    def write(self, name, text):
        p = os.path.join(self.dir, name)
        with open(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
            f.write(text)
        return p

    def cleanup(self):
        for s in self.sims:
            s.stop()
        self.tmp.cleanup()

    def start_sim(self, nodes=3, cert="server_pem", key="server_key", extra=()):
        base = self.free_port_block(nodes + 3)
        state = tempfile.mkdtemp(dir=self.dir, prefix="state-")
        argv = [SIM, "--state", state, "--nodes", str(nodes), "--port", str(base),
                "--tls-cert", self.pki[cert], "--tls-key", self.pki[key],
                "--sa-password-file", self.sa, "--scenario", "configmgr",
                "--dmk-password-file", self.dmk, "--control-port", str(base + nodes + 1)] + list(extra)
        sim = self.Sim(argv, timeout=30, log_path=os.path.join(self.dir, f"sim-{base}.log"))
        sim.__enter__()
        self.sims.append(sim)
        return sim

    # ---- simulator control ----
    def ctl(self, sim, method, path, body=None):
        url = f"http://127.0.0.1:{sim.ready['control_port']}{path}"
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"{}")

    def stats(self, sim):
        return self.ctl(sim, "GET", "/stats")

    # ---- the driver ----
    def node(self, sim, i):
        n = sim.ready["nodes"][i]
        return n["name"], n["port"]

    def drv_run(self, port, cmd, *args, name="SQLNODE", ca="ca_pem", user="sa", pwfile=None,
                secret=None, opts=(), timeout=60, env=None):
        argv = [self.drv, "--host", "127.0.0.1", "--port", str(port), "--name", name,
                "--user", user, "--password-file", pwfile or self.sa]
        if ca:
            argv += ["--ca", self.pki[ca] if ca in self.pki else ca]
        if secret:
            argv += ["--secret-file", secret]
        argv += list(opts) + [cmd] + list(args)
        p = subprocess.run(argv, capture_output=True, timeout=timeout,
                           env=dict(os.environ, **env) if env else None)
        out = p.stdout.decode("utf-8", "replace").strip()
        try:
            j = json.loads(out.splitlines()[-1]) if out else None
        except ValueError:
            j = None
        if j is None:
            raise Fail(f"sqldrv {cmd} printed no JSON (exit {p.returncode}): {out!r} "
                       f"{p.stderr.decode(errors='replace')!r}")
        err = p.stderr.decode("utf-8", "replace")
        if "Sanitizer" in err or "runtime error:" in err:
            raise Fail(f"sqldrv {cmd}: sanitizer report: {err[-3000:]}")
        j["_raw"] = out + err
        return j

    def no_secret_in(self, j, *secrets):
        for s in secrets:
            check(s not in j["_raw"], "a password appears in the driver's output")

    # ---- the checks ----
    def t_connect_verified(self):
        sim = self.main
        before = self.stats(sim)
        for i in range(3):
            name, port = self.node(sim, i)
            j = self.drv_run(port, "connect", name=name)
            check(j["ok"], f"connect to {name}", j)
            check(j["to_server"] > 0 and j["to_client"] > 0, "relay forwarded nothing", j)
        after = self.stats(sim)
        check(after["full_tls_sessions"] - before.get("full_tls_sessions", 0) == 3,
              "the simulator did not see 3 full-TLS sessions", after)
        check(after["plaintext_packets_after_login"] == 0, "plaintext after login", after)
        check(after["login_only_sessions"] == 0 and after["unencrypted_sessions"] == 0,
              "a session was not fully encrypted", after)
        check(after["prelogin_client_encryption"].get("1", 0) >= 3, "we did not send ENCRYPT_ON", after)

    def t_wrong_ca(self):
        name, port = self.node(self.main, 1)
        before = self.stats(self.main)
        j = self.drv_run(port, "connect", name=name, ca="other-ca_pem")
        check(not j["ok"] and j["code"] == DMK_ERR_TLS, "untrusted CA accepted", j)
        check(j["error"].startswith(f"{name} (127.0.0.1:{port}): ") and "not accepted" in j["error"]
              and "nothing was sent" in j["error"], "message", j["error"])
        after = self.stats(self.main)
        check(after["logins_ok"] == before["logins_ok"] and after["logins_failed"] == before["logins_failed"],
              "a login reached the server", after)

    def t_untrusted_server_cert(self):
        sim = self.start_sim(nodes=1, cert="untrusted_pem", key="untrusted_key")
        name, port = self.node(sim, 0)
        j = self.drv_run(port, "connect", name=name)
        check(not j["ok"] and j["code"] == DMK_ERR_TLS and "not accepted" in j["error"],
              "a certificate from another CA was accepted", j)
        st = self.stats(sim)
        check(st["logins_ok"] == 0 and st["logins_failed"] == 0, "a login reached the server", st)
        sim.stop()

    def t_wrong_name(self):
        sim = self.start_sim(nodes=1, cert="wrongname_pem", key="wrongname_key")
        name, port = self.node(sim, 0)
        j = self.drv_run(port, "connect", name=name)
        check(not j["ok"] and j["code"] == DMK_ERR_TLS and "mismatch" in j["error"]
              and "'127.0.0.1'" in j["error"], "a certificate for another name was accepted", j)
        st = self.stats(sim)
        check(st["logins_ok"] == 0 and st["logins_failed"] == 0, "a login reached the server", st)
        sim.stop()
        # and the other way round: the right certificate, the wrong expected name
        name, port = self.node(self.main, 0)
        j = self.drv_run(port, "connect", name=name, opts=["--tls-name", "wrong.example"])
        check(not j["ok"] and j["code"] == DMK_ERR_TLS and "mismatch" in j["error"], "tls-name ignored", j)
        j = self.drv_run(port, "connect", name=name, opts=["--tls-name", "localhost"])
        check(j["ok"], "tls-name localhost refused", j)

    def downgrade_case(self, fault, answer):
        sim = self.main
        name, port = self.node(sim, 1)
        self.ctl(sim, "POST", "/stats/reset")
        self.ctl(sim, "POST", "/faults", fault)
        try:
            j = self.drv_run(port, "connect", name=name)
        finally:
            self.ctl(sim, "POST", "/faults/clear")
        want = (f"{name} (127.0.0.1:{port}): the server (or something in the path) refused full "
                f"TLS encryption (PRELOGIN answered {answer}); nothing was sent")
        check(not j["ok"] and j["code"] == DMK_ERR_TLS, f"{answer} accepted", j)
        check(j["error"] == want, "message", j["error"])
        st = self.stats(sim)
        check(st["connections"] == 1, "expected exactly one connection", st)
        check(st["prelogin_server_encryption"] == {str({"ENCRYPT_OFF": 0, "ENCRYPT_NOT_SUP": 2}[answer]): 1},
              "the simulator did not answer as asked", st)
        check(st["plaintext_packets_after_login"] == 0 and st["plaintext_logins"] == 0
              and st["logins_ok"] == 0 and st["logins_failed"] == 0 and st["tls_handshakes"] == 0,
              "something was sent after the refused PRELOGIN", st)

    def t_downgrade_off(self):
        self.downgrade_case({"downgrade": True}, "ENCRYPT_OFF")

    def t_downgrade_not_sup(self):
        self.downgrade_case({"encrypt_not_sup": True}, "ENCRYPT_NOT_SUP")

    def t_downgrade_flag(self):
        sim = self.start_sim(nodes=1, extra=["--downgrade"])
        name, port = self.node(sim, 0)
        j = self.drv_run(port, "connect", name=name)
        check(not j["ok"] and j["code"] == DMK_ERR_TLS and "ENCRYPT_OFF" in j["error"], "--downgrade", j)
        st = self.stats(sim)
        check(st["plaintext_packets_after_login"] == 0 and st["logins_ok"] == 0, "sent after refusal", st)
        sim.stop()

    def t_bad_login(self):
        name, port = self.node(self.main, 0)
        bad = self.write("bad.pw", "not-the-password")
        j = self.drv_run(port, "connect", name=name, pwfile=bad)
        check(not j["ok"] and j["code"] == DMK_ERR_AUTH and "Msg 18456" in j["error"], "bad login", j)
        self.no_secret_in(j, "not-the-password")

    def t_discover(self):
        sim = self.main
        j = self.drv_run(sim.ready["listener_port"], "discover", "AG1", name="AG1-listener")
        check(j["ok"], "discover", j)
        ag = j["ag"]
        names = [r["name"] for r in ag["replicas"]]
        check(names == ["SQLNODE1", "SQLNODE2", "SQLNODE3"], "replicas", names)
        check(ag["primary"] == "SQLNODE1", "primary", ag["primary"])
        check(ag["databases"] == ["CM_P01"], "databases", ag["databases"])
        check([r["role"] for r in ag["replicas"]] == ["PRIMARY", "SECONDARY", "SECONDARY"], "roles", ag)
        ports = {n["name"]: n["port"] for n in sim.ready["nodes"]}
        for r in ag["replicas"]:
            check(r.get("port") == ports[r["name"]] and r.get("address") == "127.0.0.1",
                  "routing address", r)
        check(len(ag["group_id"]) == 36, "group_id", ag["group_id"])
        # through a secondary: only its own state row, but the same replicas and primary
        name, port = self.node(sim, 2)
        j = self.drv_run(port, "discover", name=name)
        check(j["ok"] and j["ag"]["primary"] == "SQLNODE1" and len(j["ag"]["replicas"]) == 3,
              "discover via secondary", j)
        j = self.drv_run(port, "discover", "NOSUCHAG", name=name)
        check(not j["ok"] and j["code"] == -10, "unknown AG", j)

    def t_register(self):
        name, port = self.node(self.main, 1)
        k0 = self.drv_run(port, "dbkeys", "CM_P01", name=name)
        check(k0["ok"] and len(k0["family_guid"]) == 36 and k0["dmk_key_guid"], "dbkeys", k0)
        j = self.drv_run(port, "register", "CM_P01", "add", name=name, secret=self.dmk)
        check(j["ok"], "register add", j)
        k1 = self.drv_run(port, "dbkeys", "CM_P01", name=name)
        check(k1["ncredentials"] == k0["ncredentials"] + 1, "no credential added", (k0, k1))
        fam = k1["family_guid"]
        check(all(c.startswith(f"##DBMKEY_{fam}_") for c in k1["credentials"]), "credential names", k1)
        self.no_secret_in(k1, DMK_PW)
        j = self.drv_run(port, "register", "CM_P01", "add", name=name, secret=self.dmk)
        check(not j["ok"] and j["code"] == DMK_ERR_SQL and j["sqlnum"] == 15594
              and j["error"].startswith(f"{name}: Msg 15594, Level 16, State "), "repeat add", j)
        self.no_secret_in(j, DMK_PW)
        # the simulator checks the credential's secret is exactly our password
        st = self.ctl(self.main, "GET", "/status")
        creds = [c for n in st["nodes"] if n["name"] == name for c in n["credentials"]]
        check(len(creds) == k1["ncredentials"], "status credentials", st)
        j = self.drv_run(port, "register", "CM_P01", "drop", name=name, secret=self.dmk)
        check(j["ok"], "register drop", j)
        j = self.drv_run(port, "register", "CM_P01", "drop", name=name, secret=self.dmk)
        check(not j["ok"] and j["sqlnum"] == 15595, "repeat drop", j)
        j = self.drv_run(port, "register", "CM_P01", "add", name=name, secret=self.dmk)
        check(j["ok"], "register again", j)

    def t_probe(self):
        name, port = self.node(self.main, 0)
        j = self.drv_run(port, "probe", "CM_P01", name=name, secret=self.dmk)
        check(j["ok"], "probe with the right password", j)
        wrong = self.write("wrong.pw", "Wr0ng'pass\u00e9")
        j = self.drv_run(port, "probe", "CM_P01", name=name, secret=wrong)
        check(not j["ok"] and j["code"] == DMK_ERR_WRONGPASS and j["sqlnum"] == 15313, "wrong password", j)
        self.no_secret_in(j, "Wr0ng'pass\u00e9", DMK_PW)

    def t_secret_literals(self):
        # sql_stmt_secret: add a password with quotes and non-ASCII by DDL on the
        # primary, then open the key with it (probe, also a literal) on a secondary.
        name, port = self.node(self.main, 0)
        newpw = self.write("new.pw", NEW_PW)
        k0 = self.drv_run(port, "dbkeys", "CM_P01", name=name)
        j = self.drv_run(port, "addpw", "CM_P01", name=name, secret=newpw)
        check(j["ok"], "ALTER MASTER KEY ADD ENCRYPTION BY PASSWORD", j)
        k1 = self.drv_run(port, "dbkeys", "CM_P01", name=name)
        check(k1["npassword_encryptions"] == k0["npassword_encryptions"] + 1, "no password added", (k0, k1))
        j = self.drv_run(port, "probe", "CM_P01", name=name, secret=newpw)
        check(j["ok"], "probe with the new password", j)
        # and through RPC (sp_control_dbmasterkey_password), on another node
        name3, port3 = self.node(self.main, 2)
        j = self.drv_run(port3, "register", "CM_P01", "add", name=name3, secret=newpw)
        check(j["ok"], "register the new password", j)
        # the simulator confirms a credential now opens the key: a probe of a
        # near-miss password must still fail
        near = self.write("near.pw", NEW_PW[:-1])
        j = self.drv_run(port, "probe", "CM_P01", name=name, secret=near)
        check(not j["ok"] and j["code"] == DMK_ERR_WRONGPASS, "near-miss password opened the key", j)

    def t_names(self):
        name, port = self.node(self.main, 0)
        for db in ["we]ird 'db' \u00e9", "a]]b", "x" * 128, "sp ace", "\u65e5\u672c\u8a9e"]:
            j = self.drv_run(port, "use", db, name=name)
            check(not j["ok"] and j["sqlnum"] == 911, f"USE {db!r}", j)
            check(f"Database '{db}' does not exist" in j["error"], "the name did not round-trip", j["error"])
        j = self.drv_run(port, "use", "CM_P01", name=name)
        check(j["ok"] and j["rows"] == [["CM_P01"]], "USE CM_P01", j)
        j = self.drv_run(port, "use", "x" * 129, name=name)
        check(not j["ok"] and j["code"] == DMK_ERR_BADINPUT and "sqlnum" in j and j["sqlnum"] == 0,
              "129 characters not refused before sending", j)
        j = self.drv_run(port, "use", "", name=name)
        check(not j["ok"] and j["code"] == DMK_ERR_BADINPUT, "empty name", j)

    def t_least_privilege(self):
        name, port = self.node(self.main, 0)
        login = "dmk low ]'\u00e9"
        lowpw = "L0w'Pri\u00e9v]\"x"
        pwf = self.write("low.pw", lowpw)
        j = self.drv_run(port, "createlogin", login, name=name, secret=pwf)
        check(j["ok"], "CREATE LOGIN with a quoted name and password literal", j)
        q = login.replace("]", "]]")
        # Fixed test SQL: real SQL Server lets every login into master as guest.
        j = self.drv_run(port, "query", f"CREATE USER [{q}] FOR LOGIN [{q}]", name=name)
        check(j["ok"], "CREATE USER", j)
        j = self.drv_run(port, "query", "SELECT SUSER_SNAME() AS n", name=name, user=login, pwfile=pwf)
        check(j["ok"] and j["rows"] == [[login]], "log in as the new login (its password literal)", j)
        j = self.drv_run(port, "register", "CM_P01", "add", name=name, user=login, pwfile=pwf,
                         secret=self.dmk)
        check(not j["ok"] and j["code"] == DMK_ERR_DENIED and "CONTROL on the database" in j["error"]
              and j["sqlnum"] in (15247, 15151, 229, 300), "least privilege", j)
        self.no_secret_in(j, DMK_PW, lowpw)

    def t_secondary_not_readable(self):
        sim = self.main
        name, port = self.node(sim, 1)
        self.ctl(sim, "POST", "/faults", {"readable_secondaries": "no"})
        try:
            k = self.drv_run(port, "dbkeys", "CM_P01", name=name)
            p = self.drv_run(port, "probe", "CM_P01", name=name, secret=self.dmk)
        finally:
            self.ctl(sim, "POST", "/faults", {"readable_secondaries": "yes"})
        check(k["ok"] and k["readable"] == 0 and k["dmk_key_guid"] == "" and len(k["family_guid"]) == 36,
              "dbkeys on a non-readable secondary", k)
        check(not p["ok"] and p["code"] == DMK_ERR_SQL and p["sqlnum"] in (976, 978)
              and "database not accessible on this secondary" in p["error"], "probe on secondary", p)

    def t_parallel(self):
        eps = [f"{n['name']}=127.0.0.1:{n['port']}" for n in self.main.ready["nodes"]]
        j = self.drv_run(0, "parallel", *eps, name="x")
        check(j["ok"], "parallel", j)
        for r, n in zip(j["results"], self.main.ready["nodes"]):
            check(r["rc"] == 0 and r["servername"] == n["name"], "parallel session", r)

    def t_timeout_and_drop(self):
        sim = self.main
        name, port = self.node(sim, 2)
        self.ctl(sim, "POST", "/faults", {"latency_ms": 2500})
        try:
            j = self.drv_run(port, "dbkeys", "CM_P01", name=name, opts=["--query-timeout", "1"])
        finally:
            self.ctl(sim, "POST", "/faults/clear")
        check(not j["ok"] and j["code"] == DMK_ERR_TIMEOUT, "timeout", j)
        self.ctl(sim, "POST", "/faults", {"drop_after_statements": 2})
        try:
            j = self.drv_run(port, "dbkeys", "CM_P01", name=name, timeout=30)
        finally:
            self.ctl(sim, "POST", "/faults/clear")
        check(not j["ok"] and j["code"] == DMK_ERR_UNREACHABLE, "dropped connection", j)
        j = self.drv_run(port, "connect", name=name)
        check(j["ok"], "connect after faults", j)

    def t_integrated(self):
        # Kerberos cannot run here; what can be checked is that integrated
        # mode is taken (no SQL login sent) and asks for the real server's
        # SPN, not the relay's 127.0.0.1 port.
        sim = self.main
        name, port = self.node(sim, 0)
        before = self.stats(sim)
        argv_env = {"KRB5CCNAME": "FILE:" + os.path.join(self.dir, "no-such-ccache"),
                    "KRB5_CONFIG": os.path.join(self.dir, "no-krb5.conf")}
        j = self.drv_run(port, "connect", name=name, user="", opts=["--integrated"], env=argv_env)
        check(not j["ok"] and j["code"] == DMK_ERR_AUTH and f"MSSQLSvc/127.0.0.1:{port}" in j["error"],
              "integrated login", j)
        after = self.stats(sim)
        check(after["logins_ok"] == before["logins_ok"], "integrated mode logged in somehow", after)

    def t_unreachable(self):
        port = self.free_port_block(1)
        j = self.drv_run(port, "connect", name="GONE")
        check(not j["ok"] and j["code"] == DMK_ERR_UNREACHABLE and j["error"].startswith("GONE (127.0.0.1:"),
              "nothing listening", j)

    def run(self):
        self.main = self.start_sim()
        tests = [m for m in dir(self) if m.startswith("t_")]
        order = ["t_connect_verified", "t_wrong_ca", "t_untrusted_server_cert", "t_wrong_name",
                 "t_downgrade_off", "t_downgrade_not_sup", "t_downgrade_flag", "t_bad_login",
                 "t_discover", "t_register", "t_probe", "t_secret_literals", "t_names",
                 "t_least_privilege", "t_secondary_not_readable", "t_parallel",
                 "t_timeout_and_drop", "t_integrated", "t_unreachable"]
        assert sorted(order) == sorted(tests), set(tests) ^ set(order)
        failed = 0
        for name in order:
            try:
                getattr(self, name)()
                print(f"ok - {name}")
            except Fail as e:
                failed += 1
                print(f"not ok - {name}: {e}")
            except Exception:
                failed += 1
                print(f"not ok - {name}: {traceback.format_exc()}")
        print(f"{len(order) - failed}/{len(order)} passed")
        if failed:
            print("--- simulator log (tail) ---")
            print(self.main.log_text()[-4000:])
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
