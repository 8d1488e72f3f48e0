"""A lab on loopback: a test PKI, vaultsim and sqlsim, and a dmkagent
configuration pointing at them.  The integration tests, the demo and the
benchmark all start from here.

    with Lab(nodes=3) as lab:
        lab.put_dmk_password()          # through `dmkagent store put`, from stdin
        rc, out, err = lab.agent("register")
        lab.check_query(node=1)         # the seed runbook's check, as primary
"""
import json
import os
import secrets
import shutil
import string
import subprocess
import sys
import tempfile
import urllib.request

SRC = os.environ.get("SRCDIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, SRC)

from tests.sim.common.harness import PY, Sim, free_port_block  # noqa: E402
from tests.sim.common.pki import make_pki  # noqa: E402

# Run by hand: the test build (failpoints) when there is one, else build/.
DMK = os.environ.get("DMKAGENT") or next(
    (p for p in (os.path.join(SRC, d, "dmkagent") for d in ("build-test", "build"))
     if os.path.exists(p)), os.path.join(SRC, "build", "dmkagent"))


def strong_password(n=24):
    """A password SQL Server's policy accepts, with quotes and non-ASCII in it."""
    alphabet = string.ascii_letters + string.digits + "!#%*+-=?@^_"
    core = "".join(secrets.choice(alphabet) for _ in range(n))
    return "Aa1'é" + core


def write_secret(path, value):
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(value)
    return path


class Lab:
    def __init__(self, nodes=3, scenario="configmgr", dmk_password=None, latency_ms=0,
                 readable="yes", keep=False, extra_sql_args=(), server_cert="server", vaultsim=None,
                 listener_host="127.0.0.1", node_certs=None):
        self.nodes = nodes
        self.scenario = scenario
        self.dmk_password = dmk_password or strong_password()
        self.sa_password = strong_password()
        self.latency_ms = latency_ms
        self.readable = readable
        self.keep = keep or bool(os.environ.get("DMKAGENT_KEEP_LAB"))
        self.extra_sql_args = list(extra_sql_args)
        self.server_cert = server_cert      # "server", "wrongname" or "untrusted" (pki.py)
        self.vaultsim = vaultsim or os.path.join(SRC, "tests/sim/vaultsim")   # another entry point (bench)
        self.sims = []
        self.listener_host = listener_host  # "localhost" for certificates without an IP address
        self.node_certs = node_certs or {}  # node index -> another pki.py certificate for it

    # ---- set-up ----
    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="dmklab-")
        os.chmod(self.dir, 0o700)
        self.pki = make_pki(os.path.join(self.dir, "pki"))
        self.ca = self.pki["ca_pem"]
        try:
            self._start_vault()
            self._start_sql()
            self.write_config()
        except Exception:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *a):
        for s in reversed(self.sims):
            s.stop()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            sys.stderr.write(f"lab kept in {self.dir}\n")

    def _start_vault(self):
        port = free_port_block(2)
        self.root_token = "hvs." + secrets.token_urlsafe(24)
        tok = write_secret(os.path.join(self.dir, "vault-root-token"), self.root_token)
        self.vault = Sim([PY, self.vaultsim, "--state",
                          os.path.join(self.dir, "vault"), "--port", str(port),
                          "--tls-cert", self.pki["server_pem"], "--tls-key", self.pki["server_key"],
                          "--root-token-file", tok, "--control-port", str(port + 1)],
                         log_path=os.path.join(self.dir, "vaultsim.log")).__enter__()
        self.sims.append(self.vault)

    def _start_sql(self):
        n = self.nodes
        base = free_port_block(n + 2)
        sa = write_secret(os.path.join(self.dir, "sa-password"), self.sa_password)
        argv = [PY, os.path.join(SRC, "tests/sim/sqlsim"), "--state", os.path.join(self.dir, "sql"),
                "--nodes", str(n), "--port", str(base),
                "--tls-cert", self.pki[self.server_cert + "_pem"],
                "--tls-key", self.pki[self.server_cert + "_key"], "--sa-password-file", sa,
                "--scenario", self.scenario, "--readable-secondaries", self.readable]
        if self.dmk_password is not None and self.scenario == "configmgr":
            argv += ["--dmk-password-file",
                     write_secret(os.path.join(self.dir, "dmk-password"), self.dmk_password)]
        if self.latency_ms:
            argv += ["--latency-ms", str(self.latency_ms)]
        for idx, name in sorted(self.node_certs.items()):
            argv += ["--node-tls", f"{idx}:{self.pki[name + '_pem']}:{self.pki[name + '_key']}"]
        argv += self.extra_sql_args
        self.sql = Sim(argv, timeout=60, log_path=os.path.join(self.dir, "sqlsim.log")).__enter__()
        self.sims.append(self.sql)
        self.sql_ready = self.sql.ready

    # The store: Vault here; a subclass (tests/rotate/azlab.py) puts the
    # passwords in another store by overriding _start_vault, store_section
    # and dmk_ref, and nothing else.
    def store_section(self):
        return (f"[store hcv]\ntype = hashicorp-vault\naddress = {self.vault.ready['address']}\n"
                f"ca_file = {self.ca}\nauth = token\n"
                f"token = file:{os.path.join(self.dir, 'vault-root-token')}\n")

    def dmk_ref(self, label):
        return f"hcv:sql/ag1/{label.lower()}/dmk#password"

    def write_config(self, ca=None, login="sa", login_password_file=None, extra_ag="",
                     databases=None, agent_extra=""):
        self.state_dir = os.path.join(self.dir, "state")
        self.audit_log = os.path.join(self.dir, "audit.jsonl")
        dbs = databases if databases is not None else [("CM_P01", None)]
        text = (f"[agent]\nstate_dir = {self.state_dir}\naudit_log = {self.audit_log}\n{agent_extra}"
                + self.store_section() +
                f"[ag AG1]\nlistener = {self.listener_host}:{self.sql_ready['listener_port']}\n"
                f"login = {login}\n"
                f"login_password = file:{login_password_file or os.path.join(self.dir, 'sa-password')}\n"
                f"ca_file = {ca or self.ca}\nconnect_timeout = 10s\nquery_timeout = 30s\n{extra_ag}")
        for name, label in dbs:
            lab = label or name.replace("/", "_")
            text += f"[database AG1/{lab}]\n"
            if label:
                text += f"name = {name}\n"
            text += f"dmk_password = {self.dmk_ref(lab)}\n"
        self.config = os.path.join(self.dir, "dmkagent.conf")
        with open(os.open(self.config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(text)
        return self.config

    # ---- driving the agent ----
    def agent(self, *args, stdin=None, timeout=180, env=None):
        e = dict(os.environ)
        e.pop("DMKAGENT_CONFIG", None)
        e.update(env or {})
        p = subprocess.run([DMK, "-c", self.config, *args], input=stdin, capture_output=True,
                           text=True, timeout=timeout, env=e)
        self.last = (p.returncode, p.stdout, p.stderr)
        return p.returncode, p.stdout, p.stderr

    def put_dmk_password(self, value=None, ref="hcv:sql/ag1/cm_p01/dmk#password", overwrite=False):
        args = ["store", "put"] + (["--overwrite"] if overwrite else []) + [ref]
        rc, out, err = self.agent(*args, stdin=(value or self.dmk_password) + "\n")
        if rc != 0:
            raise RuntimeError(f"store put failed ({rc}): {err}")
        return out

    # ---- simulator control ----
    def control(self, path, body=None, sim=None):
        sim = sim or self.sql
        port = sim.ready["control_port"]
        data = json.dumps(body or {}).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            txt = r.read().decode()
            return json.loads(txt) if txt else {}

    # ---- talking to SQL directly, as a DBA would (python3-tds) ----
    def connect(self, node=None, port=None, database=None):
        import pytds
        if port is None:
            port = self.sql_ready["listener_port"] if node is None else self.sql_ready["nodes"][node]["port"]
        return pytds.connect("localhost", port=port, user="sa", password=self.sa_password,
                             cafile=self.ca, validate_host=True, enc_login_only=False,
                             autocommit=True, database=database, login_timeout=15, timeout=30)

    def query(self, sql, node=None, database=None):
        with self.connect(node=node, database=database) as c:
            cur = c.cursor()
            cur.execute(sql)
            try:
                return cur.fetchall()
            except Exception:
                return []

    def failover(self, node):
        """ALTER AVAILABILITY GROUP ... FAILOVER on the target, as the docs say."""
        self.query("ALTER AVAILABILITY GROUP [AG1] FAILOVER", node=node)

    def check_query(self, node=None):
        """The seed runbook's check: plaintext when the DMK opens, NULLs when not."""
        return self.query("SELECT TOP 5 RecoveryAndHardwareCore.DecryptString(RecoveryKey, DEFAULT) "
                          "FROM RecoveryAndHardwareCore_Keys ORDER BY LastUpdateTime DESC",
                          node=node, database="CM_P01")

    def credentials(self, node):
        return [r[0] for r in self.query("SELECT c.name FROM sys.master_key_passwords m JOIN "
                                         "sys.credentials c ON c.credential_id = m.credential_id",
                                         node=node)]

    def audit_triggers(self):
        """The why.trigger of every audit record (what started each run)."""
        out = set()
        for line in self.audit_text().splitlines():
            try:
                out.add((json.loads(line).get("why") or {}).get("trigger"))
            except ValueError:
                pass
        return out

    def audit_text(self):
        try:
            with open(self.audit_log) as f:
                return f.read()
        except OSError:
            return ""
