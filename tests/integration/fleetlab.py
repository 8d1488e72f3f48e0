"""A fleet on loopback: many availability groups, one sqlsim process per AG (each its own
cluster of `nodes` replicas) sharing one vaultsim and one test PKI, and dmkagent
configurations naming every AG.  The fleet test and bench/fleet start from here.

    with FleetLab(ags=6, nodes=2) as fl:
        fl.put_passwords()
        rc, out, err = fl.agent("run", "--shard", "0/3", state="pod0")

Every process of the agent gets its own state_dir and audit log (`state=`), as
separate machines or pods would; they share the store (and its leases).
"""
import concurrent.futures
import json
import os
import time

from lab import DMK, Lab, PY, SRC, Sim, free_port_block, write_secret  # noqa: F401

import subprocess


class FleetLab(Lab):
    def __init__(self, ags=6, nodes=2, databases=0, latency_ms=0, extra_sql_args=(), **kw):
        super().__init__(nodes=nodes, latency_ms=latency_ms, extra_sql_args=extra_sql_args, **kw)
        self.nags = ags
        self.ndbs = databases          # 0: the configmgr scenario's CM_P01 only; else DB0001..
        self.sqls = []

    def ag_name(self, k):
        return f"FLEET{k + 1:02d}"

    def db_names(self):
        return ["CM_P01"] if not self.ndbs else [f"DB{i:04d}" for i in range(1, self.ndbs + 1)]

    def ref(self, k, db):
        return f"hcv:sql/{self.ag_name(k).lower()}/{db.lower()}/dmk#password"

    def _start_one(self, k):
        base = free_port_block(self.nodes + 2)
        sa = os.path.join(self.dir, "sa-password")
        argv = [PY, os.path.join(SRC, "tests/sim/sqlsim"), "--state", os.path.join(self.dir, f"sql{k}"),
                "--nodes", str(self.nodes), "--port", str(base),
                "--tls-cert", self.pki["server_pem"], "--tls-key", self.pki["server_key"],
                "--sa-password-file", sa, "--scenario", "configmgr", "--ag-name", self.ag_name(k),
                "--dmk-password-file", os.path.join(self.dir, "dmk-password"),
                "--readable-secondaries", self.readable]
        if self.ndbs:
            argv += ["--extra-databases", str(self.ndbs)]
        if self.latency_ms:
            argv += ["--latency-ms", str(self.latency_ms)]
        argv += self.extra_sql_args
        return Sim(argv, timeout=120, log_path=os.path.join(self.dir, f"sqlsim{k}.log")).__enter__()

    def _start_sql(self):
        write_secret(os.path.join(self.dir, "sa-password"), self.sa_password)
        write_secret(os.path.join(self.dir, "dmk-password"), self.dmk_password)
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            futs = [ex.submit(self._start_one, k) for k in range(self.nags)]
            for f in futs:
                try:
                    self.sqls.append(f.result())
                except Exception:
                    for g in futs:
                        if g.done() and not g.exception() and g.result() not in self.sqls:
                            self.sqls.append(g.result())
                    self.sims.extend(self.sqls)
                    raise
        self.sims.extend(self.sqls)
        self.sql = self.sqls[0]
        self.sql_ready = self.sql.ready

    def write_config(self, state="state", agent_extra="", **_kw):
        """The configuration of one agent process: state_dir and audit log under state/."""
        sdir = os.path.join(self.dir, state)
        os.makedirs(sdir, mode=0o700, exist_ok=True)
        text = (f"[agent]\nstate_dir = {sdir}/state\naudit_log = {sdir}/audit.jsonl\n{agent_extra}"
                + self.store_section())
        for k, s in enumerate(self.sqls):
            ag = self.ag_name(k)
            text += (f"[ag {ag}]\nlistener = 127.0.0.1:{s.ready['listener_port']}\nlogin = sa\n"
                     f"login_password = file:{os.path.join(self.dir, 'sa-password')}\n"
                     f"ca_file = {self.ca}\nconnect_timeout = 10s\nquery_timeout = 60s\n")
            for db in self.db_names():
                text += f"[database {ag}/{db}]\ndmk_password = {self.ref(k, db)}\n"
        path = os.path.join(sdir, "dmkagent.conf")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(text)
        if state == "state":
            self.config = path
            self.state_dir = f"{sdir}/state"
            self.audit_log = f"{sdir}/audit.jsonl"
        return path

    def audit_path(self, state):
        return os.path.join(self.dir, state, "audit.jsonl")

    def audit(self, state):
        try:
            with open(self.audit_path(state)) as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def popen(self, *args, state="state", env=None):
        """Start dmkagent with the configuration of `state` (written on first use)."""
        cfg = os.path.join(self.dir, state, "dmkagent.conf")
        if not os.path.exists(cfg):
            self.write_config(state=state)
        e = dict(os.environ)
        e.pop("DMKAGENT_CONFIG", None)
        e.pop("JOB_COMPLETION_INDEX", None)
        e.update(env or {})
        return subprocess.Popen([DMK, "-c", cfg, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=e)

    def agent(self, *args, state="state", env=None, stdin=None, timeout=300):
        if stdin is not None:
            if not os.path.exists(os.path.join(self.dir, state, "dmkagent.conf")):
                self.write_config(state=state)
            return super().agent(*args, stdin=stdin, timeout=timeout, env=env)
        p = self.popen(*args, state=state, env=env)
        out, err = p.communicate(timeout=timeout)
        self.last = (p.returncode, out, err)
        return p.returncode, out, err

    def put_passwords(self, workers=4):
        """Every AG's database passwords into the store, through `dmkagent store put`."""
        if not os.path.exists(os.path.join(self.dir, "state", "dmkagent.conf")):
            self.write_config()
        refs = [self.ref(k, db) for k in range(self.nags) for db in self.db_names()]

        def put(r):
            for _ in range(20):
                rc, _o, err = Lab.agent(self, "--wait", "30", "store", "put", "--overwrite", r,
                                        stdin=self.dmk_password + "\n")
                if rc == 0:
                    return
                time.sleep(0.1)
            raise RuntimeError(f"store put {r}: {err}")
        with concurrent.futures.ThreadPoolExecutor(workers) as ex:
            list(ex.map(put, refs))

    def query_ag(self, k, sql, node=0, database=None):
        import pytds
        port = self.sqls[k].ready["nodes"][node]["port"]
        with pytds.connect("localhost", port=port, user="sa", password=self.sa_password, cafile=self.ca,
                           validate_host=True, enc_login_only=False, autocommit=True, database=database,
                           login_timeout=15, timeout=30) as c:
            cur = c.cursor()
            cur.execute(sql)
            try:
                return cur.fetchall()
            except Exception:
                return []
