"""CREATE DATABASE and DROP DATABASE (scratch databases, not in the AG)."""
from . import state as st
from .errors import SqlError


class DatabasesMixin:
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


# statement kind -> handler
STATEMENTS = {
    "create_database": DatabasesMixin.x_create_database,
    "drop_database": DatabasesMixin.x_drop_database,
}
