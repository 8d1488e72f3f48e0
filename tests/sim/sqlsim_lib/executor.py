"""Statement execution against the catalog state, producing TDS tokens.

The Executor is put together from one mixin per kind of statement (flow, procs, databases, keys,
principals, ag, queries) plus the expression evaluator (expr).  Each statement module has a
STATEMENTS table (statement kind -> handler); procs.py has PROCEDURES (procedure name -> handler).
This module keeps the session, the token collector, the shared helpers (databases, permissions,
files) and batch execution."""
import datetime
import os
import uuid

from . import ag, databases, expr, flow, keys, principals, procs, queries, tds
from . import state as st
from .errors import SqlError
from .executil import ReturnSignal
from .sqlparse import SqlSyntax, parse

STATEMENTS = {}
for _m in (flow, databases, keys, principals, ag, queries):
    assert not set(_m.STATEMENTS) & set(STATEMENTS), _m.__name__
    STATEMENTS.update(_m.STATEMENTS)

class Session:
    def __init__(self, node, login, ver, spid, readonly_intent=False, appname="", hostname=""):
        self.node = node
        self.login = login
        self.ver = ver
        self.spid = spid
        self.db = "master"
        self.open_keys = {}      # db name -> (key_guid, opened iso)
        self.vars = {}
        self.readonly_intent = readonly_intent
        self.appname = appname
        self.hostname = hostname
        self.rowcount = 0
        self.error = 0
        self.killed = False
        self.connect_time = datetime.datetime.utcnow()
        self.connection_id = uuid.uuid4()
        self.client_port = None
        self.local_port = None


class Out:
    """Token collector.  DONE-type entries are finalised (MORE bits) at the end."""

    def __init__(self, ver, server_name):
        self.ver = ver
        self.items = []
        self.server_name = server_name

    def raw(self, b):
        self.items.append(b)

    def error(self, e, proc=""):
        self.items.append(tds.tok_error(e.number, e.state, e.cls, e.msg, self.server_name, proc or e.proc,
                                        e.line, self.ver))

    def info(self, number, msg, cls=0, state=1, proc=""):
        self.items.append(tds.tok_info(number, state, cls, msg, self.server_name, proc, 1, self.ver))

    def done(self, status=0, count=0, curcmd=0, token=0xFD):
        self.items.append(["done", status, curcmd, count, token])

    def result(self, cols, rows):
        self.items.append(tds.tok_colmetadata(cols, self.ver))
        for r in rows:
            self.items.append(tds.tok_row(cols, r, self.ver))

    def has_done(self):
        return any(isinstance(i, list) for i in self.items)

    def build(self, more_last=False):
        dones = [k for k, i in enumerate(self.items) if isinstance(i, list)]
        out = b""
        for k, i in enumerate(self.items):
            if isinstance(i, list):
                _, status, curcmd, count, token = i
                if k != dones[-1] or more_last:
                    status |= tds.DONE_MORE
                out += tds.tok_done(status, curcmd, count, self.ver, token)
            else:
                out += i
        return out

class Executor(flow.FlowMixin, procs.ProcsMixin, databases.DatabasesMixin, keys.KeysMixin,
               principals.PrincipalsMixin, ag.AgMixin, queries.QueriesMixin, expr.ExprMixin):
    def __init__(self, server, sess):
        self.server = server
        self.state = server.state
        self.sess = sess

    @property
    def node(self):
        return self.sess.node

    # ========================================================= helpers: databases, permissions
    def local_replica(self):
        return self.state.ag["replicas"][self.node.idx]

    def all_databases(self):
        dbs = [self.node.d["system_dbs"][n] for n in st.SYSTEM_DBS]
        dbs += list(self.state.ag["databases"].values())
        dbs += list(self.node.d.get("local_dbs", {}).values())
        return dbs

    def find_db(self, name):
        if name is None:
            return None
        for n in st.SYSTEM_DBS:
            if n == name.lower():
                return self.node.d["system_dbs"][n]
        low = name.lower()
        for n, d in self.state.ag["databases"].items():
            if n.lower() == low:
                return d
        for n, d in self.node.d.get("local_dbs", {}).items():
            if n.lower() == low:
                return d
        return None

    def is_ag_db(self, db):
        return db["name"] not in st.SYSTEM_DBS and not db.get("local")

    def is_primary(self):
        return self.node.idx == self.state.ag["primary"]

    def writable(self, db):
        return not self.is_ag_db(db) or self.is_primary()

    def check_readable(self, db):
        if not self.is_ag_db(db) or self.is_primary():
            return
        r = self.state.ag["readable"]
        if r == "no":
            raise SqlError(976, db["name"])
        if r == "read_only" and not self.sess.readonly_intent:
            raise SqlError(978, db["name"])

    def need_write(self, db):
        if not self.writable(db):
            raise SqlError(3906, db["name"])

    def login_rec(self):
        return self.node.d["logins"].get(self.sess.login)

    def sysadmin(self):
        l = self.login_rec()
        return bool(l and (l.get("sysadmin") or "CONTROL SERVER" in l.get("perms", [])))

    def server_perm(self, perm):
        l = self.login_rec()
        return self.sysadmin() or bool(l and perm in l.get("perms", []))

    def db_user(self, db):
        if self.sysadmin():
            return "dbo"
        for n, p in db["principals"].items():
            if p["type"] == "S" and p.get("login") and p["login"].lower() == self.sess.login.lower():
                return n
        if db["name"] in ("master", "tempdb", "msdb"):
            return "guest"      # guest is enabled in these system databases
        return None

    def _roles_of(self, db, user):
        return {r for r, m in db["members"] if m == user} | {"public"}

    def db_perm(self, db, perm, cls=0, major=0):
        if self.sysadmin():
            return True
        u = self.db_user(db)
        if not u:
            return False
        if u == "dbo" or "db_owner" in self._roles_of(db, u):
            return True
        ids = {db["principals"][u]["principal_id"]} | {db["principals"][r]["principal_id"]
                                                       for r in self._roles_of(db, u) if r in db["principals"]}
        for p in db["permissions"]:
            if p["grantee"] in ids and p["state"] in ("G", "W"):
                if p["class"] == 0 and p["perm"] == "CONTROL":
                    return True
                if p["class"] == cls and p["major"] == major and p["perm"] in (perm, "CONTROL"):
                    return True
        return False

    def db_control(self, db):
        return self.db_perm(db, "CONTROL")

    def cert_control(self, db, cert):
        if self.db_control(db):
            return True
        u = self.db_user(db)
        if u and db["principals"][u]["principal_id"] == cert["principal_id"]:
            return True
        return self.db_perm(db, "CONTROL", 25, cert["certificate_id"])

    def cur_db(self):
        db = self.find_db(self.sess.db)
        if db is None:
            raise SqlError(911, self.sess.db)
        return db

    # ========================================================= files
    def path(self, expr):
        p = self.eval(expr, {})
        if not isinstance(p, str):
            raise SqlError(102, "FILE")
        return p, self.state.fs_path(self.node, p)

    def write_new_file(self, winpath, real, data):
        if os.path.exists(real):
            raise SqlError(15240, winpath)
        os.makedirs(os.path.dirname(real), exist_ok=True)
        with open(real, "wb") as f:
            f.write(data)

    # ========================================================= batches
    def run_batch(self, text, out, hook=None, in_proc=False):
        """Parse and execute one batch; errors become ERROR tokens."""
        try:
            stmts = parse(text)
        except SqlSyntax as e:
            out.error(SqlError(102, e.near))
            out.done(tds.DONE_ERROR, token=0xFF if in_proc else 0xFD)
            return False
        ok = True
        for s in stmts:
            if hook:
                hook(self.sess, s.get("text", ""))
            try:
                if not self.run_stmt(s, out, in_proc):
                    ok = False
            except ReturnSignal:
                break           # RETURN ends the batch
        return ok

    def run_stmt(self, s, out, in_proc=False):
        tok = 0xFF if in_proc else 0xFD
        try:
            with self.state.lock:
                try:
                    self.stmt(s, out, tok)
                finally:
                    # Persisted once per request: statements inside a procedure (sp_executesql)
                    # are flushed by the RPC that called it, as a commit would group them.
                    if not in_proc:
                        self.state.flush()
            self.sess.error = 0
            return True
        except ReturnSignal:
            raise
        except SqlError as e:
            self.sess.error = e.number
            out.error(e)
            out.done(tds.DONE_ERROR, token=tok)
            return False

    def stmt(self, s, out, tok):
        k = s["kind"]
        fn = STATEMENTS.get(k)
        if fn is None:
            raise SqlError(102, s.get("text", k)[:20])
        fn(self, s, out, tok)
