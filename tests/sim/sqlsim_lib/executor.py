"""Statement execution against the catalog state, producing TDS tokens."""
import base64
import datetime
import json
import os
import re
import secrets
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import catalog, tds
from . import state as st
from .errors import SqlError
from .sqlparse import SqlSyntax, parse

SERVER_PERMS = {"CONTROL SERVER", "VIEW ANY DEFINITION", "VIEW SERVER STATE", "ALTER ANY CREDENTIAL",
                "ALTER ANY LOGIN", "ALTER ANY AVAILABILITY GROUP", "ADMINISTER BULK OPERATIONS",
                "VIEW ANY DATABASE", "CONNECT SQL", "ALTER ANY DATABASE", "CREATE ANY DATABASE"}


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


def type_of(s):
    m = re.match(r"^(\w+)(?:\((max|\d+)\))?$", s)
    name, size = m.group(1), m.group(2)
    if size == "max":
        size = -1
    elif size is not None:
        size = int(size)
    return tds.parse_type(name, size)


class ReturnSignal(Exception):
    def __init__(self, value):
        self.value = value


def check_policy(pw):
    if pw is None:
        return
    if len(pw) < 8:
        raise SqlError(15116)
    if len(pw) > 128:
        raise SqlError(15117)
    classes = sum([any(c.isupper() for c in pw), any(c.islower() for c in pw), any(c.isdigit() for c in pw),
                   any(not c.isalnum() for c in pw)])
    if classes < 3:
        raise SqlError(15118)


class Executor:
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

    # ========================================================= DMK opening rules
    def open_dmk(self, db):
        """Documented order: session-opened key, local SMK, then each credential whose family_guid matches.
        A credential open re-encrypts the DMK by the local SMK where the database is writable."""
        dmk = db.get("dmk")
        if not dmk:
            return False
        ok = self.sess.open_keys.get(db["name"])
        if ok and ok[0] == dmk["key_guid"]:
            return True
        smk = self.node.d["smk"]["key_guid"]
        if any(e["kind"] == "smk" and e["smk"] == smk for e in dmk["encryptions"]):
            return True
        creds = sorted(self.node.d["credentials"].items(), key=lambda kv: int(kv[0]))
        for _cid, c in creds:
            if c.get("family_guid", "").upper() != db["family_guid"].upper():
                continue
            if any(st.pw_matches(e, c["secret"]) for e in dmk["encryptions"]):
                if self.writable(db):
                    dmk["encryptions"] = [e for e in dmk["encryptions"] if e["kind"] != "smk"]
                    dmk["encryptions"].append({"kind": "smk", "smk": smk, "node": self.node.idx})
                    self.state.dirty = True
                return True
        return False

    def cert_key_usable(self, db, cert, password=None):
        p = cert.get("prot")
        if not p:
            return False
        if p["kind"] == "PW":
            return password is not None and st.pw_matches(p, password)
        if password is not None:
            return False
        return self.open_dmk(db) and p["dmk"] == db["dmk"]["key_guid"]

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
        fn = getattr(self, "x_" + k, None)
        if fn is None:
            raise SqlError(102, s.get("text", k)[:20])
        fn(s, out, tok)

    # ========================================================= control flow
    def x_noop(self, s, out, tok):
        pass

    def x_setopt(self, s, out, tok):
        pass

    def x_declare(self, s, out, tok):
        for name, typ, init in s["decls"]:
            self.sess.vars[name] = self.eval(init, {}) if init is not None else None

    def x_setvar(self, s, out, tok):
        v = self.eval(s["expr"], {})
        if s["var"] not in self.sess.vars:
            raise SqlError(137, s["var"])
        if s["op"] == "+=":
            v = self.arith("+", self.sess.vars[s["var"]], v)
        elif s["op"] == "-=":
            v = self.arith("-", self.sess.vars[s["var"]], v)
        self.sess.vars[s["var"]] = v

    def x_if(self, s, out, tok):
        if self.truth(self.eval(s["cond"], {})):
            self.stmt(s["then"], out, tok)
        elif s["else"] is not None:
            self.stmt(s["else"], out, tok)

    def x_block(self, s, out, tok):
        for x in s["body"]:
            if not self.run_stmt(x, out, tok == 0xFF):
                pass

    def x_try(self, s, out, tok):
        for x in s["body"]:
            try:
                self.stmt(x, out, tok)
            except SqlError as e:
                self.sess.vars["@@_error"] = e
                for c in s["catch"]:
                    self.stmt(c, out, tok)
                return

    def x_print(self, s, out, tok):
        v = self.eval(s["expr"], {})
        out.info(0, tds.to_str_value(v) if v is not None else "", cls=0, state=1)

    def x_waitfor(self, s, out, tok):
        v = str(self.eval(s["expr"], {}))
        h, m, sec = (v.split(":") + ["0", "0"])[:3]
        secs = int(h) * 3600 + int(m) * 60 + float(sec)
        self.state.lock.release()
        try:
            self.server.wait_interruptible(self.sess, secs)
        finally:
            self.state.lock.acquire()
        out.done(0, token=tok)

    def x_return(self, s, out, tok):
        raise ReturnSignal(self.eval(s["expr"], {}) if s["expr"] else 0)

    def x_raiserror(self, s, out, tok):
        a = [self.eval(x, {}) for x in s["args"]]
        sev = int(a[1]) if len(a) > 1 else 16
        e = SqlError(50000, str(a[0]), state=int(a[2]) if len(a) > 2 else 1, cls=sev)
        if sev <= 10:
            out.info(50000, e.msg, cls=sev, state=e.state)
            return
        raise e

    def x_throw(self, s, out, tok):
        a = [self.eval(x, {}) for x in s["args"]]
        raise SqlError(int(a[0]), msg=str(a[1]), state=int(a[2]), cls=16)

    def x_use(self, s, out, tok):
        db = self.find_db(s["db"])
        if db is None:
            raise SqlError(911, s["db"])
        self.check_readable(db)
        if not self.db_user(db) and not self.sysadmin():
            raise SqlError(916, self.sess.login, db["name"])
        old = self.sess.db
        self.sess.db = db["name"]
        out.raw(tds.tok_envchange_str(1, db["name"], old))
        out.info(5701, f"Changed database context to '{db['name']}'.", state=1)
        out.done(0, token=tok)

    def x_exec_dynamic(self, s, out, tok):
        text = self.eval(s["expr"], {})
        if text is None:
            out.done(0, token=tok)
            return
        self.run_batch(str(text), out, in_proc=(tok == 0xFF))

    def x_exec(self, s, out, tok):
        name = s["name"][-1]
        params = []
        for pname, val, outp in s["params"]:
            v = None if val == ("default",) else self.eval(val, {})
            params.append((pname, v))
        status = self.call_proc(name, params, out, tok)
        if s.get("retvar"):
            self.sess.vars[s["retvar"]] = status
        if tok == 0xFD:
            out.done(0, curcmd=0xE0, token=0xFD)

    # ========================================================= procedures
    def call_proc(self, name, params, out, tok):
        """params: [(name or None, value)]; returns the RETURN status."""
        n = name.lower()
        if n == "sp_control_dbmasterkey_password":
            self.sp_control(self.bind(name, params, ["@db_name", "@password", "@action"]), out)
            return 0
        if n == "sp_executesql":
            self.sp_executesql(params, out)
            return 0
        if n == "sp_set_session_context":
            return 0
        raise SqlError(2812, name)

    def bind(self, proc, params, names):
        vals = {}
        for i, (pn, v) in enumerate(params):
            if pn:
                if pn.lower() not in names:
                    raise SqlError(8145, msg=f"{pn} is not a parameter for procedure {proc}.", cls=16)
                vals[pn.lower()] = v
            elif i < len(names):
                vals[names[i]] = v
        for nm in names:
            if nm not in vals:
                raise SqlError(201, proc, nm)
        return vals

    def sp_executesql(self, params, out):
        if not params:
            raise SqlError(201, "sp_executesql", "@statement")
        stmt = params[0][1]
        decl = params[1][1] if len(params) > 1 else None
        names = []
        if decl:
            for part in re.split(r",(?![^(]*\))", decl):
                m = re.match(r"\s*(@\w+)", part)
                if m:
                    names.append(m.group(1).lower())
        saved = self.sess.vars
        self.sess.vars = {}
        try:
            pos = 0
            for pn, v in params[2:]:
                if pn:
                    self.sess.vars[pn.lower()] = v
                elif pos < len(names):
                    self.sess.vars[names[pos]] = v
                pos += 1
            for nm in names:
                self.sess.vars.setdefault(nm, None)
            self.run_batch(stmt or "", out, in_proc=True)
        finally:
            self.sess.vars = saved

    def sp_control(self, p, out):
        dbname, pw, action = p["@db_name"], p["@password"], p["@action"]
        if dbname is None or pw is None or action is None or str(action).lower() not in ("add", "drop"):
            raise SqlError(15600, "sp_control_dbmasterkey_password")
        if dbname.lower() in st.SYSTEM_DBS:
            raise SqlError(15276)
        db = self.find_db(dbname)
        if db is None:
            raise SqlError(15010, dbname)
        readable = True
        try:
            self.check_readable(db)
        except SqlError:
            readable = False
        if not (self.sysadmin() or (readable and self.db_control(db))):
            raise SqlError(15247)
        creds = self.node.d["credentials"]
        fam = db["family_guid"].upper()
        mine = [(cid, c) for cid, c in creds.items() if c.get("family_guid", "").upper() == fam]
        if action.lower() == "add":
            if any(c["secret"] == pw for _, c in mine):
                raise SqlError(15594, db["name"])
            cid = self.node.d["next_credential_id"]
            self.node.d["next_credential_id"] += 1
            creds[str(cid)] = {"name": f"##DBMKEY_{fam}_{st.newguid()}##", "identity": db["name"],
                               "secret": pw, "family_guid": fam, "create_date": st.now().isoformat()}
        else:
            for cid, c in mine:
                if c["secret"] == pw:
                    del creds[cid]
                    break
            else:
                raise SqlError(15595, db["name"])
        self.state.mark_node(self.node)      # credentials live in this node's master

    # ========================================================= scratch databases (not in the AG)
    def x_create_database(self, s, out, tok):
        name = s["name"]
        if not self.server_perm("CREATE ANY DATABASE") and not self.server_perm("ALTER ANY DATABASE"):
            raise SqlError(262, "CREATE DATABASE", "master")
        if len(name) > 128 or not name:
            raise SqlError(103, name[:128]) if name else SqlError(1038)
        if self.find_db(name) is not None:
            raise SqlError(1801, name)
        db = st.new_database(name, self.state.ag["next_db_id"])
        self.state.ag["next_db_id"] += 1
        db["local"] = True
        if self.sess.login.lower() != "sa":
            db["principals"]["dbo"]["login"] = self.sess.login
        self.node.d["local_dbs"][name] = db
        self.state.dirty = True
        out.done(0, token=tok)

    def x_drop_database(self, s, out, tok):
        for name in s["names"]:
            db = self.find_db(name)
            if db is None:
                if s["if_exists"]:
                    continue
                raise SqlError(3701, name)
            if db["name"].lower() in st.SYSTEM_DBS:
                raise SqlError(3708, db["name"])
            if self.is_ag_db(db):
                raise SqlError(3752, db["name"])
            if not self.db_control(db):
                raise SqlError(3701, name)
            if any(x.db.lower() == db["name"].lower() for x in self.server.sessions_of(self.node)):
                raise SqlError(3702, db["name"])
            del self.node.d["local_dbs"][db["name"]]
            # credentials for it stay in master, as on SQL Server (orphaned)
            self.state.dirty = True
        out.done(0, token=tok)

    # ========================================================= master key statements
    def _dmk_db(self, need_control=True, write=True):
        db = self.cur_db()
        if db["name"] == "tempdb":
            raise SqlError(15151, "symmetric key", "master key")
        if need_control and not self.db_control(db):
            raise SqlError(15151, "symmetric key", "master key")
        if write:
            self.need_write(db)
        return db

    def x_create_mk(self, s, out, tok):
        db = self.cur_db()
        if not self.db_control(db):
            raise SqlError(15247)
        self.need_write(db)
        if db.get("dmk"):
            raise SqlError(15578)
        pw = self.eval(s["password"], {})
        check_policy(pw)
        db["dmk"] = {"key_guid": st.newguid(), "material": secrets.token_hex(32),
                     "create_date": st.now().isoformat(), "modify_date": st.now().isoformat(),
                     "encryptions": [st.pw_encryption(pw),
                                     {"kind": "smk", "smk": self.node.d["smk"]["key_guid"], "node": self.node.idx}]}
        self.state.dirty = True
        out.done(0, token=tok)

    def _reencrypt_certs(self, db, old_guid, new_guid, lose):
        for c in db["certificates"].values():
            p = c.get("prot")
            if p and p["kind"] == "MK":
                if p["dmk"] == old_guid and not lose:
                    p["dmk"] = new_guid
                # otherwise the private key stays bound to a key that no longer exists: lost

    def x_alter_mk(self, s, out, tok):
        db = self._dmk_db()
        dmk = db.get("dmk")
        if not dmk:
            raise SqlError(15151, "symmetric key", "master key")
        act = s["action"]
        if act == "regenerate":
            pw = self.eval(s["password"], {})
            opened = self.open_dmk(db)
            if not opened and not s["force"]:
                raise SqlError(15581)
            check_policy(pw)
            had_smk = any(e["kind"] == "smk" for e in dmk["encryptions"])
            old = dmk["key_guid"]
            dmk["key_guid"] = st.newguid()
            dmk["material"] = secrets.token_hex(32)
            dmk["modify_date"] = st.now().isoformat()
            dmk["encryptions"] = [st.pw_encryption(pw)]
            if had_smk:
                dmk["encryptions"].append({"kind": "smk", "smk": self.node.d["smk"]["key_guid"],
                                           "node": self.node.idx})
            self._reencrypt_certs(db, old, dmk["key_guid"], lose=not opened)
            self.sess.open_keys.pop(db["name"], None)
        elif act == "add":
            if not self.open_dmk(db):
                raise SqlError(15581)
            if s["by"] == "smk":
                smk = self.node.d["smk"]["key_guid"]
                if any(e["kind"] == "smk" and e["smk"] == smk for e in dmk["encryptions"]):
                    raise SqlError(15579, "master key", "service master key")
                dmk["encryptions"] = [e for e in dmk["encryptions"] if e["kind"] != "smk"]
                dmk["encryptions"].append({"kind": "smk", "smk": smk, "node": self.node.idx})
            else:
                pw = self.eval(s["password"], {})
                check_policy(pw)
                if any(st.pw_matches(e, pw) for e in dmk["encryptions"]):
                    raise SqlError(15579, "password", "")
                dmk["encryptions"].append(st.pw_encryption(pw))
        else:
            if s["by"] == "smk":
                if not any(e["kind"] == "smk" for e in dmk["encryptions"]):
                    raise SqlError(15151, "symmetric key", "service master key")
                dmk["encryptions"] = [e for e in dmk["encryptions"] if e["kind"] != "smk"]
            else:
                pw = self.eval(s["password"], {})
                match = [e for e in dmk["encryptions"] if st.pw_matches(e, pw)]
                if not match:
                    raise SqlError(15313)
                if len([e for e in dmk["encryptions"] if e["kind"] == "pw"]) <= 1:
                    raise SqlError(15558, "master key", "password", "")
                dmk["encryptions"].remove(match[0])
        dmk["modify_date"] = st.now().isoformat()
        self.state.dirty = True
        out.done(0, token=tok)

    def x_open_mk(self, s, out, tok):
        db = self.cur_db()
        if not self.db_control(db):
            raise SqlError(15151, "symmetric key", "master key")
        dmk = db.get("dmk")
        if not dmk:
            raise SqlError(15151, "symmetric key", "master key")
        pw = self.eval(s["password"], {})
        if not any(st.pw_matches(e, pw) for e in dmk["encryptions"]):
            raise SqlError(15313)
        self.sess.open_keys[db["name"]] = (dmk["key_guid"], st.now().isoformat())
        out.done(0, token=tok)

    def x_close_mk(self, s, out, tok):
        if s.get("all"):
            self.sess.open_keys.clear()
        else:
            db = self.cur_db()
            if db["name"] not in self.sess.open_keys:
                raise SqlError(15315, "##MS_DatabaseMasterKey##")
            del self.sess.open_keys[db["name"]]
        out.done(0, token=tok)

    def x_drop_mk(self, s, out, tok):
        db = self._dmk_db()
        if not db.get("dmk"):
            raise SqlError(15151, "symmetric key", "master key")
        for name, c in sorted(db["certificates"].items(), key=lambda kv: kv[1]["certificate_id"]):
            p = c.get("prot")
            if p and p["kind"] == "MK":
                raise SqlError(15580, "master key", "certificate", name)
        db["dmk"] = None
        self.sess.open_keys.pop(db["name"], None)
        self.state.dirty = True
        out.done(0, token=tok)

    def x_backup_mk(self, s, out, tok):
        db = self._dmk_db(write=False)
        if s.get("url"):
            raise SqlError(3201, msg="Cannot open backup device. Operating system error 50(The request is not "
                                     "supported.).", cls=16)
        dmk = db.get("dmk")
        if not dmk:
            raise SqlError(15151, "symmetric key", "master key")
        if not self.open_dmk(db):
            raise SqlError(15581)
        pw = self.eval(s["password"], {})
        check_policy(pw)
        winpath, real = self.path(s["file"])
        blob = json.dumps({"key_guid": dmk["key_guid"], "material": dmk["material"],
                           "create_date": dmk["create_date"]}).encode()
        self.write_new_file(winpath, real, st.seal(blob, pw, st.DMK_FMT))
        out.done(0, token=tok)

    def x_restore_mk(self, s, out, tok):
        db = self._dmk_db()
        winpath, real = self.path(s["file"])
        dpw = self.eval(s["dec"], {})
        epw = self.eval(s["enc"], {})
        try:
            with open(real, "rb") as f:
                data = f.read()
            k = json.loads(st.unseal(data, dpw, st.DMK_FMT))
        except (OSError, st.BadFormat, st.BadPassword, ValueError):
            raise SqlError(15317)
        check_policy(epw)
        cur = db.get("dmk")
        opened = bool(cur) and self.open_dmk(db)
        if cur and not opened and not s["force"]:
            raise SqlError(15329)
        had_smk = bool(cur) and any(e["kind"] == "smk" for e in cur["encryptions"])
        if cur and cur["key_guid"] == k["key_guid"]:
            out.info(15588, "The old and new master keys are identical. No data re-encryption is required.",
                     cls=10)
        new = {"key_guid": k["key_guid"], "material": k["material"], "create_date": k["create_date"],
               "modify_date": st.now().isoformat(), "encryptions": [st.pw_encryption(epw)]}
        if had_smk:
            new["encryptions"].append({"kind": "smk", "smk": self.node.d["smk"]["key_guid"], "node": self.node.idx})
        if cur:
            self._reencrypt_certs(db, cur["key_guid"], new["key_guid"], lose=not opened)
        db["dmk"] = new
        self.sess.open_keys.pop(db["name"], None)
        self.state.dirty = True
        out.done(0, token=tok)

    # ========================================================= service master key
    def _need_control_server(self):
        if not self.sysadmin():
            raise SqlError(15247)

    def _smk_reencrypt(self, old, new):
        for db in self.all_databases():
            dmk = db.get("dmk")
            if not dmk or not self.writable(db):
                continue
            for e in dmk["encryptions"]:
                if e["kind"] == "smk" and e["smk"] == old:
                    e["smk"] = new

    def x_alter_smk(self, s, out, tok):
        self._need_control_server()
        smk = self.node.d["smk"]
        old = smk["key_guid"]
        smk["key_guid"] = st.newguid()
        smk["material"] = secrets.token_hex(32)
        smk["create_date"] = st.now().isoformat()
        self._smk_reencrypt(old, smk["key_guid"])
        self.state.dirty = True
        out.done(0, token=tok)

    def x_backup_smk(self, s, out, tok):
        self._need_control_server()
        pw = self.eval(s["password"], {})
        check_policy(pw)
        winpath, real = self.path(s["file"])
        self.write_new_file(winpath, real, st.seal(json.dumps(self.node.d["smk"]).encode(), pw, st.SMK_FMT))
        out.done(0, token=tok)

    def x_restore_smk(self, s, out, tok):
        self._need_control_server()
        winpath, real = self.path(s["file"])
        pw = self.eval(s["password"], {})
        try:
            with open(real, "rb") as f:
                k = json.loads(st.unseal(f.read(), pw, st.SMK_FMT))
        except (OSError, st.BadFormat, st.BadPassword, ValueError):
            raise SqlError(15317)
        old = self.node.d["smk"]["key_guid"]
        if old == k["key_guid"]:
            out.info(15588, "The old and new master keys are identical. No data re-encryption is required.",
                     cls=10)
        self.node.d["smk"] = k
        self._smk_reencrypt(old, k["key_guid"])
        self.state.dirty = True
        out.done(0, token=tok)

    # ========================================================= certificates
    def _cert(self, db, name):
        for n, c in db["certificates"].items():
            if n.lower() == name.lower():
                return n, c
        return None, None

    def _read_pvk(self, pk, cert_pub):
        """pk options -> private key PEM (decrypted by DECRYPTION BY PASSWORD)."""
        if "file" in pk:
            _w, real = self.path(pk["file"])
            try:
                with open(real, "rb") as f:
                    data = f.read()
            except OSError:
                raise SqlError(15208)
        else:
            data = self.eval(pk["binary"], {})
            if not isinstance(data, bytes):
                raise SqlError(15208)
        dpw = self.eval(pk["dec"], {}) if "dec" in pk else None
        try:
            pem = st.unseal(data, dpw, st.PVK_FMT).decode()
        except st.BadFormat:
            raise SqlError(15208)
        except st.BadPassword:
            raise SqlError(15465)
        key = st.load_key(pem)
        if key.public_key().public_numbers() != cert_pub.public_numbers():
            raise SqlError(15474)
        return pem

    def _protect(self, db, pk_enc_pw):
        if pk_enc_pw is not None:
            check_policy(pk_enc_pw)
            e = st.pw_encryption(pk_enc_pw)
            e["kind"] = "PW"
            return e
        if not self.open_dmk(db):
            raise SqlError(15581)
        return {"kind": "MK", "dmk": db["dmk"]["key_guid"]}

    def x_create_cert(self, s, out, tok):
        db = self.cur_db()
        if not self.db_perm(db, "CREATE CERTIFICATE"):
            raise SqlError(262, "CREATE CERTIFICATE", db["name"])
        self.need_write(db)
        if self._cert(db, s["name"])[0]:
            raise SqlError(15232, s["name"])
        owner = 1
        if s["owner"]:
            p = None
            for n, pr in db["principals"].items():
                if n.lower() == s["owner"].lower():
                    p = pr
            if p is None:
                raise SqlError(15151, "user", s["owner"])
            owner = p["principal_id"]
        if "from" in s:
            kind, src = s["from"]
            if kind == "file":
                _w, real = self.path(src)
                try:
                    with open(real, "rb") as f:
                        data = f.read()
                except OSError:
                    raise SqlError(15208)
            else:
                data = self.eval(src, {})
            try:
                if isinstance(data, bytes) and data.startswith(b"-----BEGIN"):
                    cert = x509.load_pem_x509_certificate(data)
                else:
                    cert = x509.load_der_x509_certificate(data)
            except Exception:
                raise SqlError(15208)
            der = cert.public_bytes(serialization.Encoding.DER)
            import hashlib
            tp = hashlib.sha1(der).hexdigest()
            if any(c["thumbprint"] == tp for c in db["certificates"].values()):
                raise SqlError(15232, s["name"])
            pem, prot = None, None
            if "pk" in s:
                pem = self._read_pvk(s["pk"], cert.public_key())
                encpw = self.eval(s["pk"]["enc"], {}) if "enc" in s["pk"] else None
                prot = self._protect(db, encpw)
        else:
            opts = {k: self.eval(v, {}) for k, v in s["opts"].items()}

            def dt(v):
                v = str(v).strip()
                for fmt in ("%Y%m%d", "%Y-%m-%d", "%m/%d/%Y", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"):
                    try:
                        return datetime.datetime.strptime(v, fmt)
                    except ValueError:
                        pass
                raise SqlError(241, msg="Conversion failed when converting date and/or time from character string.")
            start = dt(opts["start_date"]) if "start_date" in opts else None
            expiry = dt(opts["expiry_date"]) if "expiry_date" in opts else None
            encpw = self.eval(s["enc_pw"], {}) if s.get("enc_pw") else None
            prot = self._protect(db, encpw)
            cert, key = st.make_certificate(str(opts["subject"]), start, expiry)
            der = cert.public_bytes(serialization.Encoding.DER)
            pem = st.key_pem(key)
        cid = db["next_cert_id"]
        db["next_cert_id"] += 1
        db["certificates"][s["name"]] = st.cert_record(der, pem, prot, cid, owner)
        self.state.dirty = True
        out.done(0, token=tok)

    def x_alter_cert(self, s, out, tok):
        db = self.cur_db()
        name, c = self._cert(db, s["name"])
        if not c or not self.cert_control(db, c):
            raise SqlError(15151, "certificate", s["name"])
        self.need_write(db)
        if s["remove"]:
            c["prot"] = None
            c["key"] = None
        else:
            pk = s["pk"]
            dpw = self.eval(pk["dec"], {}) if "dec" in pk else None
            if "file" in pk or "binary" in pk:
                cert = x509.load_der_x509_certificate(base64.b64decode(c["der"]))
                c["key"] = self._read_pvk(pk, cert.public_key())
            elif not self.cert_key_usable(db, c, dpw):
                raise SqlError(15465 if dpw is not None else 15581)
            encpw = self.eval(pk["enc"], {}) if "enc" in pk else None
            c["prot"] = self._protect(db, encpw)
        self.state.dirty = True
        out.done(0, token=tok)

    def x_drop_certificate(self, s, out, tok):
        db = self.cur_db()
        name, c = self._cert(db, s["name"])
        if not c or not self.cert_control(db, c):
            if s.get("if_exists") and not c:
                out.done(0, token=tok)
                return
            raise SqlError(15151, "certificate", s["name"])
        self.need_write(db)
        del db["certificates"][name]
        db["permissions"] = [p for p in db["permissions"]
                             if not (p["class"] == 25 and p["major"] == c["certificate_id"])]
        self.state.dirty = True
        out.done(0, token=tok)

    def x_backup_cert(self, s, out, tok):
        db = self.cur_db()
        name, c = self._cert(db, s["name"])
        if not c or not self.cert_control(db, c):
            raise SqlError(15151, "certificate", s["name"])
        winpath, real = self.path(s["file"])
        pk = s.get("pk")
        files = [(winpath, real, base64.b64decode(c["der"]))]
        if pk:
            if not c.get("prot") or not c.get("key"):
                raise SqlError(15246, name)
            if "enc" not in pk:
                raise SqlError(102, "PRIVATE")
            dpw = self.eval(pk["dec"], {}) if "dec" in pk else None
            if c["prot"]["kind"] == "MK":
                if not self.open_dmk(db):
                    raise SqlError(15581)
                if c["prot"]["dmk"] != db["dmk"]["key_guid"]:
                    raise SqlError(15466)
            elif not st.pw_matches(c["prot"], dpw):
                raise SqlError(15465)
            encpw = self.eval(pk["enc"], {})
            check_policy(encpw)
            kw, kreal = self.path(pk["file"])
            if os.path.exists(kreal):
                raise SqlError(15240, kw)
            files.append((kw, kreal, st.seal(c["key"].encode(), encpw, st.PVK_FMT)))
        if os.path.exists(real):
            raise SqlError(15240, winpath)
        for w, r, data in files:
            self.write_new_file(w, r, data)
        if pk and self.writable(db):
            c["backup_date"] = st.now().isoformat()
            self.state.dirty = True
        out.done(0, token=tok)

    # ========================================================= principals and permissions
    def x_create_login(self, s, out, tok):
        if not self.server_perm("ALTER ANY LOGIN"):
            raise SqlError(15247)
        logins = self.node.d["logins"]
        if any(n.lower() == s["name"].lower() for n in logins):
            raise SqlError(15025, s["name"])
        pw = s["opts"]["password"]
        if str(s["opts"].get("check_policy", "ON")).upper() != "OFF":
            check_policy(pw)
        lid = self.node.d["next_login_id"]
        self.node.d["next_login_id"] += 1
        logins[s["name"]] = {"password": pw, "sid": secrets.token_hex(16), "principal_id": lid,
                             "sysadmin": False, "perms": [], "create_date": st.now().isoformat(),
                             "disabled": False, "default_database": s["opts"].get("default_database", "master")}
        self.state.dirty = True
        out.done(0, token=tok)

    def x_alter_login(self, s, out, tok):
        l = self.node.d["logins"].get(s["name"])
        if not l:
            raise SqlError(15151, "login", s["name"])
        if not self.server_perm("ALTER ANY LOGIN") and s["name"] != self.sess.login:
            raise SqlError(15151, "login", s["name"])
        if "password" in s:
            l["password"] = s["password"]
        if "disable" in s:
            l["disabled"] = s["disable"]
        self.state.dirty = True
        out.done(0, token=tok)

    def x_drop_login(self, s, out, tok):
        if not self.server_perm("ALTER ANY LOGIN"):
            raise SqlError(15151, "login", s["name"])
        if s["name"] not in self.node.d["logins"] or s["name"] == "sa":
            if s.get("if_exists"):
                out.done(0, token=tok)
                return
            raise SqlError(15151, "login", s["name"])
        del self.node.d["logins"][s["name"]]
        self.state.dirty = True
        out.done(0, token=tok)

    def x_create_user(self, s, out, tok):
        db = self.cur_db()
        if not self.db_control(db):
            raise SqlError(15247)
        self.need_write(db)
        if any(n.lower() == s["name"].lower() for n in db["principals"]):
            raise SqlError(15023, s["name"])
        if s["login"] and s["login"] not in self.node.d["logins"]:
            raise SqlError(15007, s["login"])
        db["principals"][s["name"]] = {"principal_id": db["next_principal_id"], "type": "S", "login": s["login"],
                                       "owner": None, "without_login": s["without_login"]}
        db["next_principal_id"] += 1
        self.state.dirty = True
        out.done(0, token=tok)

    def x_create_role(self, s, out, tok):
        db = self.cur_db()
        if not self.db_control(db):
            raise SqlError(15247)
        self.need_write(db)
        if any(n.lower() == s["name"].lower() for n in db["principals"]):
            raise SqlError(15023, s["name"])
        db["principals"][s["name"]] = {"principal_id": 16400 + db["next_principal_id"], "type": "R", "login": None,
                                       "owner": 1}
        db["next_principal_id"] += 1
        self.state.dirty = True
        out.done(0, token=tok)

    def _drop_principal(self, s, out, tok):
        db = self.cur_db()
        if not self.db_control(db):
            raise SqlError(15151, "user", s["name"])
        self.need_write(db)
        if s["name"] not in db["principals"] or s["name"] in ("dbo", "guest", "sys", "INFORMATION_SCHEMA", "public"):
            if s.get("if_exists"):
                out.done(0, token=tok)
                return
            raise SqlError(15151, "user", s["name"])
        pid = db["principals"][s["name"]]["principal_id"]
        del db["principals"][s["name"]]
        db["members"] = [m for m in db["members"] if s["name"] not in m]
        db["permissions"] = [p for p in db["permissions"] if p["grantee"] != pid]
        self.state.dirty = True
        out.done(0, token=tok)

    x_drop_user = _drop_principal
    x_drop_role = _drop_principal

    def x_alter_role(self, s, out, tok):
        db = self.cur_db()
        if not self.db_control(db):
            raise SqlError(15151, "role", s["role"])
        self.need_write(db)
        if s["role"] not in db["principals"] or db["principals"][s["role"]]["type"] != "R":
            raise SqlError(15151, "role", s["role"])
        if s["member"] not in db["principals"]:
            raise SqlError(15151, "user", s["member"])
        pair = [s["role"], s["member"]]
        if s["action"] == "add":
            if pair not in db["members"]:
                db["members"].append(pair)
        elif pair in db["members"]:
            db["members"].remove(pair)
        self.state.dirty = True
        out.done(0, token=tok)

    def x_alter_server_role(self, s, out, tok):
        if not self.sysadmin():
            raise SqlError(15247)
        if s["role"].lower() != "sysadmin":
            raise SqlError(15151, "server role", s["role"])
        l = self.node.d["logins"].get(s["member"])
        if not l:
            raise SqlError(15151, "login", s["member"])
        l["sysadmin"] = s["action"] == "add"
        self.state.dirty = True
        out.done(0, token=tok)

    def x_grant(self, s, out, tok):
        verb = s["verb"]
        target = s["target"]
        if target is None and all(p in SERVER_PERMS for p in s["perms"]):
            if not self.sysadmin():
                raise SqlError(15247)
            for g in s["grantees"]:
                l = self.node.d["logins"].get(g)
                if not l:
                    raise SqlError(15151, "login", g)
                for p in s["perms"]:
                    if verb == "grant" and p not in l["perms"]:
                        l["perms"].append(p)
                    elif verb != "grant" and p in l["perms"]:
                        l["perms"].remove(p)
            self.state.dirty = True
            out.done(0, token=tok)
            return
        db = self.cur_db()
        cls, major = 0, 0
        if target:
            tcls, parts = target
            if tcls == "CERTIFICATE":
                name, c = self._cert(db, parts[-1])
                if not c or not self.cert_control(db, c):
                    raise SqlError(15151, "certificate", parts[-1])
                cls, major = 25, c["certificate_id"]
            elif tcls == "DATABASE":
                d2 = self.find_db(parts[-1])
                if d2 is not db:
                    raise SqlError(15151, "database", parts[-1])
                if not self.db_control(db):
                    raise SqlError(15247)
            else:
                if not self.db_control(db):
                    raise SqlError(15247)
                cls, major = 1, 0
        elif not self.db_control(db):
            raise SqlError(15247)
        self.need_write(db)
        for g in s["grantees"]:
            pr = db["principals"].get(g)
            if pr is None:
                for n, p in db["principals"].items():
                    if n.lower() == g.lower():
                        pr = p
            if pr is None:
                raise SqlError(15151, "user", g)
            for perm in s["perms"]:
                perm = "CONTROL" if perm == "ALL" else perm
                db["permissions"] = [p for p in db["permissions"]
                                     if not (p["class"] == cls and p["major"] == major and p["perm"] == perm
                                             and p["grantee"] == pr["principal_id"])]
                if verb != "revoke":
                    db["permissions"].append({"class": cls, "major": major, "perm": perm,
                                              "grantee": pr["principal_id"], "grantor": 1,
                                              "state": "D" if verb == "deny" else ("W" if s["wgo"] else "G")})
        self.state.dirty = True
        out.done(0, token=tok)

    # ========================================================= availability group
    def x_ag_failover(self, s, out, tok):
        ag = self.state.ag
        if s["ag"].lower() != ag["name"].lower() or not self.server_perm("ALTER ANY AVAILABILITY GROUP"):
            raise SqlError(15151, "availability group", s["ag"])
        if self.is_primary():
            raise SqlError(41122, ag["name"])
        self.server.failover(self.node.idx, initiator=self.sess)
        out.done(0, token=tok)

    # ========================================================= SELECT
    def x_select(self, s, out, tok):
        cols, rows, assigned = self.run_query(s["q"], {}, top_level=True)
        if assigned:
            out.done(0, token=tok)
            return
        out.result(cols, rows)
        self.sess.rowcount = len(rows)
        out.done(tds.DONE_COUNT, count=len(rows), curcmd=0xC1, token=tok)

    # sources --------------------------------------------------------------
    def source_rows(self, src, outer):
        """-> (list of (alias, [colnames], {lower: SqlType}), rows as list of dict (alias, lowercol) -> value)"""
        kind = src[0]
        if kind == "join":
            _, jk, left, right, cond = src
            lmeta, lrows = self.source_rows(left, outer)
            rmeta, rrows = self.source_rows(right, outer)
            meta = lmeta + rmeta
            rows = []
            for lr in lrows:
                matched = False
                for rr in rrows:
                    r = dict(lr)
                    r.update(rr)
                    if cond is None or self.truth(self.eval(cond, self._env(meta, r, outer))):
                        rows.append(r)
                        matched = True
                if not matched and jk in ("left", "full"):
                    r = dict(lr)
                    for a, names, _t in rmeta:
                        for n in names:
                            r[(a, n.lower())] = None
                    rows.append(r)
            if jk in ("right", "full"):
                for rr in rrows:
                    if not any(all(r.get(k) == v for k, v in rr.items()) for r in rows):
                        r = dict(rr)
                        for a, names, _t in lmeta:
                            for n in names:
                                r[(a, n.lower())] = None
                        rows.append(r)
            return meta, rows
        if kind == "subquery":
            _, q, alias = src
            cols, rows, _ = self.run_query(q, outer)
            names = [c[0] for c in cols]
            a = alias.lower()
            return [(a, names, {n.lower(): t for n, t in cols})], \
                [{(a, n.lower()): v for n, v in zip(names, r)} for r in rows]
        if kind == "openrowset":
            _, fexpr, mode, alias = src
            if not self.server_perm("ADMINISTER BULK OPERATIONS"):
                raise SqlError(4834, msg="You do not have permission to use the bulk load statement.", cls=16)
            winpath, real = self.path(fexpr)
            try:
                with open(real, "rb") as f:
                    data = f.read()
            except OSError:
                raise SqlError(4860, winpath)
            a = alias.lower()
            if mode == "single_blob":
                t, v = tds.SqlType("varbinary", -1), data
            elif mode == "single_nclob":
                t, v = tds.SqlType("nvarchar", -1), data.decode("utf-16-le", "replace")
            else:
                t, v = tds.SqlType("varchar", -1), data.decode("cp1252", "replace")
            return [(a, ["BulkColumn"], {"bulkcolumn": t})], [{(a, "bulkcolumn"): v}]
        _, parts, alias, args = src
        cols, rows = self.table(parts)
        a = (alias or parts[-1]).lower()
        names = [c[0] for c in cols]
        types = {n.lower(): type_of(t) for n, t in cols}
        return [(a, names, types)], [{(a, n.lower()): v for n, v in zip(names, r)} for r in rows]

    def table(self, parts):
        obj = parts[-1]
        schema = parts[-2].lower() if len(parts) >= 2 else ""
        dbname = parts[-3] if len(parts) >= 3 else None
        full = ".".join(parts)
        if dbname:
            db = self.find_db(dbname)
            if db is None:
                raise SqlError(911, dbname)
            self.check_readable(db)
        else:
            db = self.cur_db()
        if schema in ("sys", "information_schema") or (schema == "" and obj.lower() in catalog.SERVER_SCOPED
                                                       and False):
            r = catalog.view(self, obj.lower(), db)
            if r is None:
                raise SqlError(208, full)
            return r
        if schema in ("", "dbo"):
            r = catalog.user_table(self, db, obj)
            if r is not None:
                return r
        raise SqlError(208, full)

    def _env(self, meta, row, outer):
        return {"meta": meta, "row": row, "outer": outer}

    def run_query(self, q, outer, top_level=False):
        if "setop" in q:
            lc, lr, _ = self.run_query(q["left"], outer)
            rc, rr, _ = self.run_query(q["right"], outer)
            if q["setop"] == "union":
                rows = lr + rr
                if not q["all"]:
                    seen, uniq = set(), []
                    for r in rows:
                        k = tuple(map(repr, r))
                        if k not in seen:
                            seen.add(k)
                            uniq.append(r)
                    rows = uniq
            elif q["setop"] == "except":
                rows = [r for r in lr if r not in rr]
            else:
                rows = [r for r in lr if r in rr]
            if q.get("order"):
                names = [c[0].lower() for c in lc]
                for e, desc in reversed(q["order"]):
                    idx = names.index(e[1][-1].lower()) if e[0] == "col" else int(e[1]) - 1
                    rows.sort(key=lambda r: self.sortkey(r[idx]), reverse=desc)
            return lc, rows, False
        meta, rows = [], [{}]
        if q["from"]:
            meta, rows = self.source_rows(q["from"][0], outer)
            for src in q["from"][1:]:
                m2, r2 = self.source_rows(src, outer)
                meta = meta + m2
                rows = [dict(a, **b) for a in rows for b in r2]
        if q["where"] is not None:
            rows = [r for r in rows if self.truth(self.eval(q["where"], self._env(meta, r, outer)))]
        # output columns
        items = []
        for it in q["items"]:
            if it[0] == "star":
                found = False
                for a, names, types in meta:
                    if it[1] is None or it[1].lower() == a:
                        found = True
                        for n in names:
                            items.append(("col", ("col", [a, n]), n, types[n.lower()]))
                if not found:
                    raise SqlError(107, msg=f"The column prefix '{it[1]}' does not match with a table name or "
                                            "alias name used in the query.", cls=16)
            elif it[0] == "assign":
                items.append(("assign", it[2], it[1], None))
            else:
                e, alias = it[1], it[2]
                name = alias if alias is not None else (e[1][-1] if e[0] == "col" else "")
                items.append(("expr", e, name, None))
        is_agg = any(self.has_agg(i[1]) for i in items) or q["group"] is not None
        if is_agg:
            groups = {}
            order = []
            for r in rows:
                env = self._env(meta, r, outer)
                key = tuple(repr(self.eval(g, env)) for g in (q["group"] or []))
                if key not in groups:
                    groups[key] = []
                    order.append(key)
                groups[key].append(r)
            if not q["group"] and not rows:
                groups[()] = []
                order = [()]
            grouped = [(groups[k][0] if groups[k] else {}, groups[k]) for k in order]
            if q["having"] is not None:
                grouped = [g for g in grouped if self.truth(self.eval(q["having"], dict(self._env(meta, g[0], outer),
                                                                                         group=g[1])))]
            envs = [dict(self._env(meta, g[0], outer), group=g[1]) for g in grouped]
        else:
            envs = [self._env(meta, r, outer) for r in rows]
        # ORDER BY on source rows (before projection, aliases allowed)
        out_rows = []
        for env in envs:
            vals = [self.eval(i[1], env) for i in items]
            out_rows.append((env, vals))
        if q.get("distinct"):
            seen, uniq = set(), []
            for env, vals in out_rows:
                k = tuple(map(repr, vals))
                if k not in seen:
                    seen.add(k)
                    uniq.append((env, vals))
            out_rows = uniq
        if q.get("order"):
            aliases = {i[2].lower(): k for k, i in enumerate(items) if i[2]}
            for e, desc in reversed(q["order"]):
                def key(ev, e=e):
                    env, vals = ev
                    if e[0] == "lit" and isinstance(e[1], int):
                        return self.sortkey(vals[e[1] - 1])
                    if e[0] == "col" and len(e[1]) == 1 and e[1][0].lower() in aliases:
                        return self.sortkey(vals[aliases[e[1][0].lower()]])
                    return self.sortkey(self.eval(e, env))
                out_rows.sort(key=key, reverse=desc)
        if q.get("top") is not None:
            n = int(self.eval(q["top"], {}))
            out_rows = out_rows[:n]
        if any(i[0] == "assign" for i in items):
            for env, vals in out_rows:
                for i, v in zip(items, vals):
                    if i[0] == "assign":
                        if i[2] not in self.sess.vars:
                            raise SqlError(137, i[2])
                        self.sess.vars[i[2]] = v
            return [], [], True
        cols = []
        for k, i in enumerate(items):
            t = i[3] or self.expr_type(i[1], meta, [v[k] for _, v in out_rows])
            cols.append((i[2], t))
        return cols, [v for _, v in out_rows], False

    def sortkey(self, v):
        if v is None:
            return (0, 0)
        if isinstance(v, str):
            return (1, v.lower())
        if isinstance(v, uuid.UUID):
            return (1, v.bytes)
        if isinstance(v, bool):
            return (1, int(v))
        return (1, v)

    def has_agg(self, e):
        if isinstance(e, list):
            return any(self.has_agg(x) for x in e)
        if not isinstance(e, tuple) or not e:
            return False
        if e[0] == "func" and e[1][-1] in ("count", "max", "min", "sum", "avg", "count_big"):
            return True
        if e[0] in ("subq", "exists"):
            return False
        return any(self.has_agg(x) for x in e if isinstance(x, (tuple, list)))

    FUNC_TYPES = {
        "decryptstring": ("nvarchar", 4000), "certencoded": ("varbinary", -1), "certprivatekey": ("varbinary", -1),
        "db_id": ("int", None), "db_name": ("nvarchar", 128), "cert_id": ("int", None),
        "has_perms_by_name": ("int", None), "serverproperty": ("nvarchar", 128), "key_guid": ("uniqueidentifier", None),
        "suser_sname": ("nvarchar", 128), "user_name": ("nvarchar", 128), "encryptbycert": ("varbinary", 8000),
        "decryptbycert": ("varbinary", 8000), "newid": ("uniqueidentifier", None), "getdate": ("datetime", None),
        "getutcdate": ("datetime", None), "sysdatetime": ("datetime2", None), "sysutcdatetime": ("datetime2", None),
        "count": ("int", None), "is_srvrolemember": ("int", None), "fn_hadr_is_primary_replica": ("bit", None),
        "quotename": ("nvarchar", 258), "len": ("int", None), "datalength": ("int", None),
        "key_id": ("int", None), "is_member": ("int", None), "object_id": ("int", None),
        "hashbytes": ("varbinary", 8000), "cert_prop": ("nvarchar", 4000),
    }

    def expr_type(self, e, meta, values):
        if e[0] == "col":
            try:
                _a, _n, t = self.resolve(e[1], meta, None)
                return t
            except SqlError:
                pass
        if e[0] in ("cast", "convert"):
            name, size = e[2] if e[0] == "cast" else e[1]
            if name in ("nvarchar", "varchar", "varbinary", "nchar", "char", "binary") and size is None:
                size = 30
            return tds.parse_type(name, size)
        if e[0] == "func" and e[1][-1] in self.FUNC_TYPES:
            n, sz = self.FUNC_TYPES[e[1][-1]]
            return tds.SqlType(n, sz)
        if e[0] in ("bin",) and e[1] in ("=", "<>", "<", ">", "<=", ">=", "and", "or"):
            return tds.SqlType("bit")
        for v in values:
            if v is None:
                continue
            if isinstance(v, bool):
                return tds.SqlType("bit")
            if isinstance(v, int):
                return tds.SqlType("int" if -2**31 <= v < 2**31 else "bigint")
            if isinstance(v, float):
                return tds.SqlType("nvarchar", 100)
            if isinstance(v, bytes):
                return tds.SqlType("varbinary", -1 if len(v) > 8000 else 8000)
            if isinstance(v, uuid.UUID):
                return tds.SqlType("uniqueidentifier")
            if isinstance(v, datetime.datetime):
                return tds.SqlType("datetime")
            return tds.SqlType("nvarchar", -1 if len(str(v)) > 4000 else 4000)
        return tds.SqlType("int")

    def resolve(self, parts, meta, row):
        name = parts[-1].lower()
        qual = parts[-2].lower() if len(parts) >= 2 else None
        hits = [(a, n) for a, names, types in meta for n in names
                if n.lower() == name and (qual is None or a == qual)]
        if not hits:
            raise SqlError(207 if qual is None else 4104, ".".join(parts),
                           msg=None if qual is None else
                           f"The multi-part identifier \"{'.'.join(parts)}\" could not be bound.")
        if len(hits) > 1:
            raise SqlError(209, parts[-1])
        a, n = hits[0]
        t = [types for aa, names, types in meta if aa == a][0][n.lower()]
        return a, n, t

    # ========================================================= expressions
    def truth(self, v):
        return v is True

    def col_value(self, parts, env):
        e = env
        while e is not None:
            meta, row = e.get("meta", []), e.get("row", {})
            try:
                a, n, _t = self.resolve(parts, meta, row)
                return row.get((a, n.lower()))
            except SqlError as err:
                if err.number == 209:
                    raise
                e = e.get("outer") or None
                if e is None:
                    raise
        raise SqlError(207, parts[-1])

    def cmp(self, a, b):
        if a is None or b is None:
            return None
        if isinstance(a, uuid.UUID) and isinstance(b, str):
            b = self.to_uuid(b)
        if isinstance(b, uuid.UUID) and isinstance(a, str):
            a = self.to_uuid(a)
        if isinstance(a, str) and isinstance(b, str):
            a, b = a.lower().rstrip(), b.lower().rstrip()
        elif isinstance(a, str) and isinstance(b, (int, float)) and not isinstance(b, bool):
            a = self.to_int(a)
        elif isinstance(b, str) and isinstance(a, (int, float)) and not isinstance(a, bool):
            b = self.to_int(b)
        elif isinstance(a, datetime.datetime) and isinstance(b, str):
            b = datetime.datetime.fromisoformat(b)
        if isinstance(a, bool):
            a = int(a)
        if isinstance(b, bool):
            b = int(b)
        if isinstance(a, uuid.UUID):
            a, b = str(a), str(b)
        try:
            return (a > b) - (a < b)
        except TypeError:
            raise SqlError(8114, type(a).__name__, type(b).__name__)

    def to_uuid(self, s):
        try:
            return uuid.UUID(s.strip("{}"))
        except ValueError:
            raise SqlError(8169, msg="Conversion failed when converting from a character string to "
                                     "uniqueidentifier.", cls=16)

    def to_int(self, s):
        try:
            return int(str(s).strip())
        except ValueError:
            raise SqlError(245, s)

    def arith(self, op, a, b):
        if a is None or b is None:
            return None
        if op == "+" and (isinstance(a, str) or isinstance(b, str)):
            if isinstance(a, str) and isinstance(b, str):
                return a + b
            if isinstance(a, str):
                return self.to_int(a) + b
            return a + self.to_int(b)
        if op == "+" and isinstance(a, bytes) and isinstance(b, bytes):
            return a + b
        a, b = int(a) if isinstance(a, bool) else a, int(b) if isinstance(b, bool) else b
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            if b == 0:
                raise SqlError(8134, msg="Divide by zero error encountered.", cls=16)
            return a // b if isinstance(a, int) and isinstance(b, int) else a / b
        if op == "%":
            return a % b
        if op == "&":
            return a & b
        if op == "|":
            return a | b
        if op == "^":
            return a ^ b
        raise SqlError(102, op)

    def eval(self, e, env):
        k = e[0]
        if k == "lit":
            return e[1]
        if k == "var":
            if e[1] not in self.sess.vars:
                raise SqlError(137, e[1])
            return self.sess.vars[e[1]]
        if k == "sysvar":
            return self.sysvar(e[1])
        if k == "col":
            if len(e[1]) == 1 and not env.get("meta") and e[1][0].lower() in ("default",):
                return None
            return self.col_value(e[1], env)
        if k == "bin":
            op = e[1]
            if op == "and":
                a = self.eval(e[2], env)
                if a is False:
                    return False
                b = self.eval(e[3], env)
                if a is True and b is True:
                    return True
                return False if b is False else None
            if op == "or":
                a = self.eval(e[2], env)
                if a is True:
                    return True
                b = self.eval(e[3], env)
                if b is True:
                    return True
                return False if (a is False and b is False) else None
            a, b = self.eval(e[2], env), self.eval(e[3], env)
            if op in ("=", "<>", "<", ">", "<=", ">="):
                c = self.cmp(a, b)
                if c is None:
                    return None
                return {"=": c == 0, "<>": c != 0, "<": c < 0, ">": c > 0, "<=": c <= 0, ">=": c >= 0}[op]
            return self.arith(op, a, b)
        if k == "not":
            v = self.eval(e[1], env)
            return None if v is None else not v
        if k == "neg":
            v = self.eval(e[1], env)
            return None if v is None else -v
        if k == "bitnot":
            v = self.eval(e[1], env)
            return None if v is None else ~v
        if k == "isnull":
            v = self.eval(e[1], env)
            return (v is not None) if e[2] else (v is None)
        if k == "in":
            v = self.eval(e[1], env)
            if e[2][0] == "list":
                cands = [self.eval(x, env) for x in e[2][1]]
            else:
                _c, rows, _ = self.run_query(e[2][1], env)
                cands = [r[0] for r in rows]
            if v is None:
                return None
            hit = any(self.cmp(v, c) == 0 for c in cands if c is not None)
            return (not hit) if e[3] else hit
        if k == "like":
            v, p = self.eval(e[1], env), self.eval(e[2], env)
            if v is None or p is None:
                return None
            rx = ""
            i = 0
            while i < len(p):
                c = p[i]
                if c == "%":
                    rx += ".*"
                elif c == "_":
                    rx += "."
                elif c == "[":
                    j = p.find("]", i)
                    if j < 0:
                        rx += re.escape(c)
                    else:
                        inner = p[i + 1:j]
                        rx += "[" + ("^" + inner[1:] if inner.startswith("^") else inner) + "]"
                        i = j
                else:
                    rx += re.escape(c)
                i += 1
            hit = re.fullmatch(rx, str(tds.to_str_value(v)), re.I | re.S) is not None
            return (not hit) if e[3] else hit
        if k == "between":
            v, lo, hi = self.eval(e[1], env), self.eval(e[2], env), self.eval(e[3], env)
            a, b = self.cmp(v, lo), self.cmp(v, hi)
            if a is None or b is None:
                return None
            r = a >= 0 and b <= 0
            return (not r) if e[4] else r
        if k == "exists":
            _c, rows, _ = self.run_query(e[1], env)
            return bool(rows)
        if k == "subq":
            _c, rows, _ = self.run_query(e[1], env)
            if len(rows) > 1:
                raise SqlError(512, msg="Subquery returned more than 1 value. This is not permitted when the "
                                        "subquery follows =, !=, <, <= , >, >= or when the subquery is used as "
                                        "an expression.", cls=16)
            return rows[0][0] if rows else None
        if k == "case":
            _, operand, whens, els = e
            ov = self.eval(operand, env) if operand is not None else None
            for c, t in whens:
                if operand is not None:
                    if self.cmp(ov, self.eval(c, env)) == 0:
                        return self.eval(t, env)
                elif self.eval(c, env) is True:
                    return self.eval(t, env)
            return self.eval(els, env) if els is not None else None
        if k == "cast":
            return self.convert(self.eval(e[1], env), e[2], None)
        if k == "convert":
            style = self.eval(e[3], env) if e[3] is not None else None
            return self.convert(self.eval(e[2], env), e[1], style)
        if k == "func":
            return self.func(e[1], e[2], env)
        if k == "star":
            return 1
        if k == "default":
            return None
        raise SqlError(102, str(k))

    def convert(self, v, typ, style):
        name, size = typ
        if v is None:
            return None
        if name in ("int", "bigint", "smallint", "tinyint"):
            if isinstance(v, bytes):
                return int.from_bytes(v, "big", signed=True)
            if isinstance(v, str):
                return self.to_int(v)
            return int(v)
        if name == "bit":
            if isinstance(v, str):
                return v.strip().lower() in ("1", "true")
            return bool(v)
        if name in ("nvarchar", "varchar", "nchar", "char", "sysname", "ntext", "text"):
            if isinstance(v, bytes):
                if style in (1, 2):
                    h = v.hex().upper()
                    return ("0x" + h) if style == 1 else h
                return v.decode("utf-16-le", "replace") if name.startswith("n") or name == "sysname" else \
                    v.decode("cp1252", "replace")
            if isinstance(v, datetime.datetime) and style in (126, 127):
                return v.isoformat()
            s = tds.to_str_value(v)
            if size not in (None, -1) and isinstance(size, int):
                s = s[:size]
            return s
        if name in ("varbinary", "binary"):
            if isinstance(v, str):
                if style in (1, 2):
                    h = v[2:] if v.lower().startswith("0x") else v
                    return bytes.fromhex(h)
                return v.encode("utf-16-le")
            return tds.to_bytes_value(None, v)
        if name == "uniqueidentifier":
            return v if isinstance(v, uuid.UUID) else self.to_uuid(str(v))
        if name in ("datetime", "datetime2", "date", "smalldatetime"):
            if isinstance(v, str):
                try:
                    return datetime.datetime.fromisoformat(v.strip())
                except ValueError:
                    return datetime.datetime.strptime(v.strip(), "%Y%m%d")
            return v
        return v

    def sysvar(self, n):
        n = n.lower()
        if n == "@@servername":
            return self.node.name
        if n == "@@version":
            return ("Microsoft SQL Server 2019 (RTM-CU22) (KB5027702) - 15.0.4375.4 (X64) \n\tsqlsim\n\t"
                    "Developer Edition (64-bit) on Linux (sqlsim)")
        if n == "@@spid":
            return self.sess.spid
        if n == "@@rowcount":
            return self.sess.rowcount
        if n == "@@trancount":
            return 0
        if n == "@@error":
            return self.sess.error
        if n == "@@servicename":
            return "MSSQLSERVER"
        raise SqlError(137, n)

    def agg(self, name, args, env):
        rows = env.get("group", [])
        meta = env.get("meta", [])
        if name in ("count", "count_big"):
            if args and args[0][0] == "star":
                return len(rows)
            return sum(1 for r in rows if self.eval(args[0], dict(env, row=r, group=None)) is not None)
        vals = [self.eval(args[0], dict(env, row=r, group=None)) for r in rows]
        vals = [v for v in vals if v is not None]
        if not vals:
            return None
        if name == "max":
            return max(vals, key=self.sortkey)
        if name == "min":
            return min(vals, key=self.sortkey)
        if name == "sum":
            return sum(vals)
        if name == "avg":
            return sum(vals) // len(vals)

    def func(self, parts, args, env):
        name = parts[-1]
        schema = parts[-2] if len(parts) >= 2 else None
        if name in ("count", "count_big", "max", "min", "sum", "avg"):
            if "group" not in env:
                env = dict(env, group=[env.get("row", {})] if env.get("meta") else [])
            return self.agg(name, args, env)
        A = lambda i: self.eval(args[i], env) if i < len(args) else None  # noqa: E731
        if name == "decryptstring" and (schema or "").lower() == "recoveryandhardwarecore":
            db = self.cur_db()
            if not any(f.lower() == "recoveryandhardwarecore.decryptstring" for f in db.get("functions", [])):
                raise SqlError(4121, msg="Cannot find either column \"RecoveryAndHardwareCore\" or the user-defined "
                                         "function or aggregate \"RecoveryAndHardwareCore.DecryptString\", or the "
                                         "name is ambiguous.", cls=16)
            v = A(0)
            _n, c = self._cert(db, "BitLockerManagement_CERT")
            if v is None or not c or not self.cert_key_usable(db, c):
                return None
            pt = st.cert_decrypt(c["key"], v)
            return None if pt is None else pt.decode("utf-16-le", "replace")
        if name == "serverproperty":
            p = str(A(0)).lower()
            return {"servername": self.node.name, "machinename": self.node.name, "instancename": None,
                    "ishadrenabled": 1, "hadrmanagerstatus": 1, "productversion": "15.0.4375.4",
                    "productmajorversion": "15", "productminorversion": "0", "productlevel": "RTM",
                    "productupdatelevel": "CU22", "edition": "Developer Edition (64-bit)", "engineedition": 3,
                    "isclustered": 0, "computernamephysicalnetbios": self.node.name,
                    "collation": "SQL_Latin1_General_CP1_CI_AS", "isintegratedsecurityonly": 0,
                    "processid": os.getpid()}.get(p)
        if name == "db_id":
            if not args:
                return self.cur_db()["database_id"]
            d = self.find_db(A(0))
            return d["database_id"] if d else None
        if name == "db_name":
            if not args:
                return self.cur_db()["name"]
            for d in self.all_databases():
                if d["database_id"] == A(0):
                    return d["name"]
            return None
        if name in ("suser_sname", "suser_name", "original_login", "system_user", "session_user"):
            return self.sess.login
        if name in ("user_name", "current_user", "user"):
            return self.db_user(self.cur_db()) or "guest"
        if name == "is_srvrolemember":
            return 1 if str(A(0)).lower() == "sysadmin" and self.sysadmin() else 0
        if name == "is_member":
            r = str(A(0))
            db = self.cur_db()
            u = self.db_user(db)
            return 1 if u == "dbo" or (u and r in self._roles_of(db, u)) else 0
        if name == "has_perms_by_name":
            return self.has_perms_by_name(A(0), A(1), A(2))
        if name == "cert_id":
            _n, c = self._cert(self.cur_db(), str(A(0)))
            return c["certificate_id"] if c else None
        if name in ("certencoded", "certprivatekey"):
            db = self.cur_db()
            c = None
            for cc in db["certificates"].values():
                if cc["certificate_id"] == A(0):
                    c = cc
            if c is None:
                return None
            if name == "certencoded":
                return base64.b64decode(c["der"])
            encpw, decpw = A(1), A(2) if len(args) > 2 else None
            if encpw is None or not self.cert_control(db, c) or not self.cert_key_usable(db, c, decpw):
                return None
            return st.seal(c["key"].encode(), encpw, st.PVK_FMT)
        if name == "encryptbycert":
            db = self.cur_db()
            for c in db["certificates"].values():
                if c["certificate_id"] == A(0):
                    v = A(1)
                    if v is None:
                        return None
                    return st.cert_encrypt(c["der"], v.encode("utf-16-le") if isinstance(v, str) else v)
            return None
        if name == "decryptbycert":
            db = self.cur_db()
            for c in db["certificates"].values():
                if c["certificate_id"] == A(0):
                    if A(1) is None or not self.cert_key_usable(db, c, A(2) if len(args) > 2 else None):
                        return None
                    return st.cert_decrypt(c["key"], A(1))
            return None
        if name in ("key_guid", "key_id"):
            db = self.cur_db()
            if str(A(0)) == "##MS_DatabaseMasterKey##" and db.get("dmk"):
                return uuid.UUID(db["dmk"]["key_guid"]) if name == "key_guid" else 101
            return None
        if name == "fn_hadr_is_primary_replica":
            d = self.find_db(A(0))
            if d is None or not self.is_ag_db(d):
                return None
            return self.is_primary()
        if name == "object_id":
            db = self.cur_db()
            n = str(A(0)).split(".")[-1].strip("[]")
            for i, t in enumerate(sorted(db["tables"])):
                if t.lower() == n.lower():
                    return 1000 + i
            return None
        if name in ("getdate", "getutcdate", "sysdatetime", "sysutcdatetime", "current_timestamp"):
            return datetime.datetime.utcnow()
        if name == "newid":
            return uuid.uuid4()
        if name in ("isnull",):
            v = A(0)
            return v if v is not None else A(1)
        if name == "coalesce":
            for i in range(len(args)):
                v = A(i)
                if v is not None:
                    return v
            return None
        if name == "nullif":
            a, b = A(0), A(1)
            return None if self.cmp(a, b) == 0 else a
        if name == "iif":
            return A(1) if A(0) is True else A(2)
        if name in ("upper", "lower"):
            v = A(0)
            return None if v is None else (str(v).upper() if name == "upper" else str(v).lower())
        if name in ("len",):
            v = A(0)
            return None if v is None else len(str(v).rstrip())
        if name == "datalength":
            v = A(0)
            if v is None:
                return None
            return len(v) if isinstance(v, bytes) else len(str(v).encode("utf-16-le"))
        if name == "quotename":
            v = A(0)
            return None if v is None else "[" + str(v).replace("]", "]]") + "]"
        if name in ("ltrim", "rtrim", "trim"):
            v = A(0)
            return None if v is None else {"ltrim": str.lstrip, "rtrim": str.rstrip, "trim": str.strip}[name](str(v))
        if name == "concat":
            return "".join(tds.to_str_value(A(i)) for i in range(len(args)) if A(i) is not None)
        if name == "hashbytes":
            import hashlib
            alg, v = str(A(0)).lower().replace("_", ""), A(1)
            if v is None:
                return None
            data = v.encode("utf-16-le") if isinstance(v, str) else v
            return hashlib.new({"sha1": "sha1", "sha2256": "sha256", "sha2512": "sha512", "md5": "md5"}[alg],
                               data).digest()
        if name == "left":
            v = A(0)
            return None if v is None else v[:A(1)]
        if name == "right":
            v = A(0)
            return None if v is None else v[-A(1):] if A(1) else ""
        if name == "substring":
            v = A(0)
            return None if v is None else v[A(1) - 1:A(1) - 1 + A(2)]
        if name == "replace":
            v = A(0)
            return None if v is None else re.sub(re.escape(A(1)), lambda m: A(2), v, flags=re.I)
        if name in ("error_number", "error_message", "error_severity", "error_state"):
            err = self.sess.vars.get("@@_error")
            if err is None:
                return None
            return {"error_number": err.number, "error_message": err.msg, "error_severity": err.cls,
                    "error_state": err.state}[name]
        raise SqlError(195, ".".join(parts))

    def has_perms_by_name(self, securable, cls, perm):
        cls = (cls or "").upper()
        perm = (perm or "").upper()
        if cls == "SERVER":
            return 1 if self.server_perm(perm) else 0
        if cls == "DATABASE":
            db = self.find_db(securable) if securable else self.cur_db()
            if db is None:
                return None
            if perm in ("ANY", "CONNECT"):
                return 1 if (self.db_user(db) or self.sysadmin()) else 0
            return 1 if self.db_perm(db, perm) else 0
        if cls == "CERTIFICATE":
            db = self.cur_db()
            _n, c = self._cert(db, securable or "")
            if not c:
                return None
            return 1 if (self.cert_control(db, c) or self.db_perm(db, perm, 25, c["certificate_id"])) else 0
        if cls in ("OBJECT", ""):
            return 1 if self.db_control(self.cur_db()) else 0
        return None
