"""Stored procedures: sp_control_dbmasterkey_password, sp_executesql, sp_set_session_context."""
import re

from . import state as st
from .errors import SqlError


class ProcsMixin:
    # ========================================================= procedures
    def call_proc(self, name, params, out, tok):
        """params: [(name or None, value)]; returns the RETURN status."""
        fn = PROCEDURES.get(name.lower())
        if fn is None:
            raise SqlError(2812, name)
        return fn(self, name, params, out)

    def proc_control_dbmasterkey_password(self, name, params, out):
        self.sp_control(self.bind(name, params, ["@db_name", "@password", "@action"]), out)
        return 0

    def proc_executesql(self, name, params, out):
        self.sp_executesql(params, out)
        return 0

    def proc_set_session_context(self, name, params, out):
        return 0

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


# procedure name (lower case) -> handler(executor, name as called, params, out) -> RETURN status
PROCEDURES = {
    "sp_control_dbmasterkey_password": ProcsMixin.proc_control_dbmasterkey_password,
    "sp_executesql": ProcsMixin.proc_executesql,
    "sp_set_session_context": ProcsMixin.proc_set_session_context,
}
