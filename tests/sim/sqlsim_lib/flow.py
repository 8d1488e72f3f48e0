"""Control-flow statements: DECLARE/SET, IF, BEGIN...END, TRY/CATCH, PRINT, WAITFOR, RETURN,
RAISERROR/THROW, USE and EXEC."""
from . import tds
from .errors import SqlError
from .executil import ReturnSignal


class FlowMixin:
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
        if s.get("name_expr") is not None:
            v = self.eval(s["name_expr"], {})
            if not isinstance(v, str) or not v:
                raise SqlError(2812, str(v))
            name = v.split(".")[-1].strip("[]")
        else:
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


# statement kind -> handler
STATEMENTS = {
    "noop": FlowMixin.x_noop,
    "setopt": FlowMixin.x_setopt,
    "declare": FlowMixin.x_declare,
    "setvar": FlowMixin.x_setvar,
    "if": FlowMixin.x_if,
    "block": FlowMixin.x_block,
    "try": FlowMixin.x_try,
    "print": FlowMixin.x_print,
    "waitfor": FlowMixin.x_waitfor,
    "return": FlowMixin.x_return,
    "raiserror": FlowMixin.x_raiserror,
    "throw": FlowMixin.x_throw,
    "use": FlowMixin.x_use,
    "exec_dynamic": FlowMixin.x_exec_dynamic,
    "exec": FlowMixin.x_exec,
}
