"""Logins, users, roles and permissions (GRANT/DENY/REVOKE)."""
import secrets


from . import state as st
from .errors import SqlError
from .executil import check_policy

SERVER_PERMS = {"CONTROL SERVER", "VIEW ANY DEFINITION", "VIEW SERVER STATE", "ALTER ANY CREDENTIAL",
                "ALTER ANY LOGIN", "ALTER ANY AVAILABILITY GROUP", "ADMINISTER BULK OPERATIONS",
                "VIEW ANY DATABASE", "CONNECT SQL", "ALTER ANY DATABASE", "CREATE ANY DATABASE"}


class PrincipalsMixin:
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

    def _db_for_new_principal(self, name):
        """The current database, when the caller may add a principal called name to it."""
        db = self.cur_db()
        if not self.db_control(db):
            raise SqlError(15247)
        self.need_write(db)
        if any(n.lower() == name.lower() for n in db["principals"]):
            raise SqlError(15023, name)
        return db

    def x_create_user(self, s, out, tok):
        db = self._db_for_new_principal(s["name"])
        if s["login"] and s["login"] not in self.node.d["logins"]:
            raise SqlError(15007, s["login"])
        db["principals"][s["name"]] = {"principal_id": db["next_principal_id"], "type": "S", "login": s["login"],
                                       "owner": None, "without_login": s["without_login"]}
        db["next_principal_id"] += 1
        self.state.dirty = True
        out.done(0, token=tok)

    def x_create_role(self, s, out, tok):
        db = self._db_for_new_principal(s["name"])
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
                name, c = self._controlled_cert(db, parts[-1])
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


# statement kind -> handler
STATEMENTS = {
    "create_login": PrincipalsMixin.x_create_login,
    "alter_login": PrincipalsMixin.x_alter_login,
    "drop_login": PrincipalsMixin.x_drop_login,
    "create_user": PrincipalsMixin.x_create_user,
    "create_role": PrincipalsMixin.x_create_role,
    "drop_user": PrincipalsMixin.x_drop_user,
    "drop_role": PrincipalsMixin.x_drop_role,
    "alter_role": PrincipalsMixin.x_alter_role,
    "alter_server_role": PrincipalsMixin.x_alter_server_role,
    "grant": PrincipalsMixin.x_grant,
}
