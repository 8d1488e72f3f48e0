"""Shared helpers for the sqlsim fidelity tests: a throwaway PKI, a running simulator, clients."""
import json
import os
import shutil
import sys
import tempfile
import unittest
import urllib.request

SRCDIR = os.environ.get("SRCDIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
if SRCDIR not in sys.path:
    sys.path.insert(0, SRCDIR)

from tests.sim.common.harness import PY, SKIP, Sim, free_port_block  # noqa: E402,F401
from tests.sim.common.pki import make_pki  # noqa: E402

SQLSIM = os.path.join(SRCDIR, "tests", "sim", "sqlsim")
SA_PW = "Sa_Passw0rd!2024"
DMK_PW = "Dmk-Known#Passw0rd1"

_pki = None


def pki():
    global _pki
    if _pki is None:
        d = tempfile.mkdtemp(prefix="sqlsim-pki-")
        _pki = make_pki(d)
        _pki["dir"] = d
    return _pki


class SqlSim:
    """with SqlSim(nodes=3, dmk_password=DMK_PW) as s: s.ready, s.port(i), s.listener, s.control(...)"""

    def __init__(self, nodes=3, scenario="configmgr", dmk_password=None, extra=(), state=None):
        self.tmp = tempfile.mkdtemp(prefix="sqlsim-")
        self.state = state or os.path.join(self.tmp, "state")
        self.nodes = nodes
        self.scenario = scenario
        self.dmk_password = dmk_password
        self.extra = list(extra)
        self.sim = None

    def argv(self):
        p = pki()
        sa = os.path.join(self.tmp, "sa.txt")
        with open(sa, "w") as f:
            f.write(SA_PW + "\n")
        self.base = free_port_block(self.nodes + 2)
        a = [SQLSIM, "--state", self.state, "--nodes", str(self.nodes), "--port", str(self.base),
             "--tls-cert", p["server_pem"], "--tls-key", p["server_key"], "--sa-password-file", sa,
             "--scenario", self.scenario]
        if self.dmk_password:
            dp = os.path.join(self.tmp, "dmk.txt")
            with open(dp, "w") as f:
                f.write(self.dmk_password + "\n")
            a += ["--dmk-password-file", dp]
        return a + self.extra

    def start(self):
        self.sim = Sim(self.argv(), timeout=30, log_path=os.path.join(self.tmp, "sqlsim.log")).__enter__()
        self.ready = self.sim.ready
        return self

    def stop(self):
        if self.sim:
            self.sim.stop()
            self.sim = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()
        if os.environ.get("SQLSIM_KEEP") is None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def port(self, i):
        return self.ready["nodes"][i]["port"]

    @property
    def listener(self):
        return self.ready["listener_port"]

    def control(self, method, path, body=None):
        url = f"http://127.0.0.1:{self.ready['control_port']}{path}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read().decode())

    def log(self):
        try:
            return open(os.path.join(self.tmp, "sqlsim.log")).read()
        except OSError:
            return ""


def connect(port, user="sa", password=SA_PW, database=None, **kw):
    import pytds
    args = dict(port=port, user=user, password=password, cafile=pki()["ca_pem"], validate_host=True,
                enc_login_only=False, autocommit=True, login_timeout=10, timeout=20)
    if database:
        args["database"] = database
    args.update(kw)
    return pytds.connect("localhost", **args)


def q(conn, sql, params=None):
    with conn.cursor() as c:
        c.execute(sql, params)
        try:
            return c.fetchall()
        except Exception:
            return None


def sqlerr(conn, sql, params=None):
    """Run sql expecting a server error: returns (number, severity, message)."""
    import pytds
    try:
        with conn.cursor() as c:
            c.execute(sql, params)
            try:
                c.fetchall()
            except pytds.ProgrammingError:
                pass
    except pytds.Error as e:
        return getattr(e, "number", None), getattr(e, "severity", None), getattr(e, "text", str(e))
    return None, None, None


def main():
    """Run the calling module's tests; print a summary; exit 0/1 (77 is raised by the module itself)."""
    import __main__
    suite = unittest.defaultTestLoader.loadTestsFromModule(__main__)
    res = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    print(f"summary: {res.testsRun} run, {len(res.failures)} failures, {len(res.errors)} errors, "
          f"{len(res.skipped)} skipped")
    sys.exit(0 if res.wasSuccessful() else 1)
