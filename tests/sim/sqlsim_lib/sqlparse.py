"""T-SQL subset: tokenizer and recursive-descent parser.

Anything it cannot parse raises SqlSyntax(near) -> error 102 "Incorrect syntax near '...'."
"""
import re


class SqlSyntax(Exception):
    def __init__(self, near):
        super().__init__(near)
        self.near = near


class Tok:
    __slots__ = ("kind", "val", "text", "pos")

    def __init__(self, kind, val, text, pos):
        self.kind, self.val, self.text, self.pos = kind, val, text, pos

    def __repr__(self):
        return f"Tok({self.kind},{self.val!r})"


_OPS = ["<>", "!=", "<=", ">=", "!<", "!>", "::", "+=", "-=", "(", ")", ",", ".", ";", "=", "<", ">", "*",
        "+", "-", "/", "%", "&", "|", "^", "~"]


# opening -> (token kind, closing character); a doubled closing character stands for itself
_QUOTES = {"'": ("str", "'"), "N'": ("str", "'"), "[": ("qident", "]"), '"': ("qident", '"')}


def _scan_quoted(s, start, j, close):
    """The one scanner for N'...', '...', [...] and "..." tokens: the body starts at j.
    Returns (value with doubled closers undone, index after the closer)."""
    n = len(s)
    buf = []
    while True:
        k = s.find(close, j)
        if k < 0:
            raise SqlSyntax(s[start:start + 30])
        buf.append(s[j:k])
        if k + 1 < n and s[k + 1] == close:
            buf.append(close)
            j = k + 2
            continue
        return "".join(buf), k + 1


def tokenize(s):
    toks = []
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c.isspace():
            i += 1
            continue
        if s.startswith("--", i):
            j = s.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if s.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if s.startswith("/*", j):
                    depth += 1
                    j += 2
                elif s.startswith("*/", j):
                    depth -= 1
                    j += 2
                else:
                    j += 1
            if depth:
                raise SqlSyntax(s[i:i + 20])
            i = j
            continue
        start = i
        if c in "Nn" and i + 1 < n and s[i + 1] == "'":
            c = "N'"
        if c in _QUOTES:
            kind, close = _QUOTES[c]
            val, i = _scan_quoted(s, start, start + len(c), close)
            toks.append(Tok(kind, val, s[start:i], start))
            continue
        if c == "0" and i + 1 < n and s[i + 1] in "xX":
            m = re.compile(r"0[xX]([0-9a-fA-F]*)").match(s, i)
            h = m.group(1)
            if len(h) % 2:
                h = "0" + h
            toks.append(Tok("bin", bytes.fromhex(h), m.group(0), start))
            i = m.end()
            continue
        if c.isdigit() or (c == "." and i + 1 < n and s[i + 1].isdigit()):
            m = re.compile(r"\d*\.?\d*([eE][+-]?\d+)?").match(s, i)
            t = m.group(0)
            v = float(t) if ("." in t or "e" in t.lower()) else int(t)
            toks.append(Tok("num", v, t, start))
            i = m.end()
            continue
        if c == "@":
            m = re.compile(r"@@?[A-Za-z0-9_#@$]*").match(s, i)
            t = m.group(0)
            toks.append(Tok("sysvar" if t.startswith("@@") else "var", t.lower(), t, start))
            i = m.end()
            continue
        if c.isalpha() or c in "_#":
            m = re.compile(r"[A-Za-z_#][A-Za-z0-9_#@$]*").match(s, i)
            t = m.group(0)
            toks.append(Tok("ident", t, t, start))
            i = m.end()
            continue
        for op in _OPS:
            if s.startswith(op, i):
                toks.append(Tok("op", op, op, start))
                i += len(op)
                break
        else:
            raise SqlSyntax(c)
    toks.append(Tok("eof", None, "", n))
    return toks


# words that end an expression / cannot be a bare alias
RESERVED = set("""add all alter and any as asc authorization backup begin between break by cascade case check
checkpoint close clustered collate column commit compute constraint contains continue convert create cross current
cursor database deallocate declare default delete deny desc distinct drop else end escape except exec execute exists
exit fetch file for foreign from full function goto grant group having holdlock identity if in index inner insert
intersect into is join key kill left like merge national nocheck not null of off on open option or order outer over
percent pivot primary print proc procedure public raiserror read restore return revert revoke right rollback rowcount
save schema select set some table then to top tran transaction trigger truncate union unique update use values
varying view waitfor when where while with go throw""".split())

STMT_START = set("""select use create alter drop open close backup restore grant revoke deny exec execute declare
set if begin end print waitfor commit rollback insert update delete with throw raiserror return save""".split())


class Parser:
    def __init__(self, text):
        self.text = text
        self.t = tokenize(text)
        self.i = 0

    # ------------------------------------------------------ token helpers
    def peek(self, k=0):
        return self.t[min(self.i + k, len(self.t) - 1)]

    def next(self):
        tok = self.t[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def fail(self, tok=None):
        tok = tok or self.peek()
        if tok.kind == "eof":
            prev = self.t[self.i - 1] if self.i > 0 else tok
            raise SqlSyntax(prev.text)
        raise SqlSyntax(tok.text)

    def is_kw(self, *words, k=0):
        tok = self.peek(k)
        return tok.kind == "ident" and tok.val.lower() in words

    def accept_kw(self, *words):
        if self.is_kw(*words):
            return self.next().val.lower()
        return None

    def expect_kw(self, *words):
        if not self.is_kw(*words):
            self.fail()
        return self.next().val.lower()

    def is_op(self, *ops, k=0):
        tok = self.peek(k)
        return tok.kind == "op" and tok.val in ops

    def accept_op(self, *ops):
        if self.is_op(*ops):
            return self.next().val
        return None

    def expect_op(self, op):
        if not self.is_op(op):
            self.fail()
        return self.next()

    def ident(self):
        tok = self.peek()
        if tok.kind == "qident" or (tok.kind == "ident"):
            self.next()
            return tok.val
        self.fail()

    def multipart(self):
        parts = [self.ident()]
        while self.is_op("."):
            self.next()
            if self.is_op("."):
                parts.append("")
                continue
            parts.append(self.ident())
        return parts

    def string(self):
        tok = self.peek()
        if tok.kind == "str":
            self.next()
            return tok.val
        self.fail()

    def str_or_var(self):
        tok = self.peek()
        if tok.kind == "str":
            self.next()
            return ("lit", tok.val)
        if tok.kind == "var":
            self.next()
            return ("var", tok.val)
        self.fail()

    # ------------------------------------------------------ batch
    def parse_batch(self):
        stmts = []
        while True:
            while self.accept_op(";"):
                pass
            if self.peek().kind == "eof":
                break
            if self.is_kw("go") and (self.peek(1).kind == "eof" or self.peek(1).kind == "num"):
                self.next()
                if self.peek().kind == "num":
                    self.next()
                continue
            stmts.append(self.statement())
        return stmts

    def statement(self):
        tok = self.peek()
        start = tok.pos
        st = self._statement()
        end = self.peek().pos if self.peek().kind != "eof" else len(self.text)
        st["text"] = self.text[start:end].strip()
        return st

    def _statement(self):
        tok = self.peek()
        if tok.kind != "ident":
            if self.is_op("("):
                return self.select_stmt()
            self.fail()
        w = tok.val.lower()
        if w == "select" or w == "with":
            return self.select_stmt()
        if w == "use":
            self.next()
            return {"kind": "use", "db": self.ident()}
        if w in ("exec", "execute"):
            return self.exec_stmt()
        if w == "declare":
            return self.declare_stmt()
        if w == "set":
            return self.set_stmt()
        if w == "if":
            self.next()
            cond = self.expr()
            then = self.statement()
            els = None
            while self.accept_op(";"):
                pass
            if self.accept_kw("else"):
                els = self.statement()
            return {"kind": "if", "cond": cond, "then": then, "else": els}
        if w == "begin":
            self.next()
            if self.accept_kw("tran", "transaction"):
                if self.peek().kind in ("ident", "qident") and not self.peek().val.lower() in STMT_START:
                    self.next()
                return {"kind": "noop", "what": "begin tran"}
            if self.accept_kw("try"):
                body = []
                while not self.is_kw("end"):
                    while self.accept_op(";"):
                        pass
                    if self.is_kw("end"):
                        break
                    if self.peek().kind == "eof":
                        self.fail()
                    body.append(self.statement())
                self.expect_kw("end")
                self.expect_kw("try")
                while self.accept_op(";"):
                    pass
                self.expect_kw("begin")
                self.expect_kw("catch")
                catch = []
                while not self.is_kw("end"):
                    while self.accept_op(";"):
                        pass
                    if self.is_kw("end"):
                        break
                    if self.peek().kind == "eof":
                        self.fail()
                    catch.append(self.statement())
                self.expect_kw("end")
                self.expect_kw("catch")
                return {"kind": "try", "body": body, "catch": catch}
            body = []
            while not self.is_kw("end"):
                while self.accept_op(";"):
                    pass
                if self.is_kw("end"):
                    break
                if self.peek().kind == "eof":
                    self.fail()
                body.append(self.statement())
            self.expect_kw("end")
            return {"kind": "block", "body": body}
        if w in ("commit", "rollback"):
            self.next()
            self.accept_kw("tran", "transaction", "work")
            return {"kind": "noop", "what": w}
        if w == "print":
            self.next()
            return {"kind": "print", "expr": self.expr()}
        if w == "waitfor":
            self.next()
            self.expect_kw("delay")
            return {"kind": "waitfor", "expr": self.primary()}
        if w == "return":
            self.next()
            e = None
            if not (self.peek().kind == "eof" or self.is_op(";") or
                    (self.peek().kind == "ident" and self.peek().val.lower() in STMT_START)):
                e = self.expr()
            return {"kind": "return", "expr": e}
        if w == "raiserror":
            self.next()
            self.expect_op("(")
            args = [self.expr()]
            while self.accept_op(","):
                args.append(self.expr())
            self.expect_op(")")
            if self.accept_kw("with"):
                self.ident()
                while self.accept_op(","):
                    self.ident()
            return {"kind": "raiserror", "args": args}
        if w == "throw":
            self.next()
            args = [self.expr()]
            while self.accept_op(","):
                args.append(self.expr())
            return {"kind": "throw", "args": args}
        if w == "create":
            return self.create_stmt()
        if w == "alter":
            return self.alter_stmt()
        if w == "drop":
            return self.drop_stmt()
        if w == "open":
            self.next()
            self.expect_kw("master")
            self.expect_kw("key")
            self.expect_kw("decryption")
            self.expect_kw("by")
            self.expect_kw("password")
            self.expect_op("=")
            return {"kind": "open_mk", "password": self.str_or_var()}
        if w == "close":
            self.next()
            if self.accept_kw("all"):
                self.expect_kw("symmetric")
                self.expect_kw("keys")
                return {"kind": "close_mk", "all": True}
            self.expect_kw("master")
            self.expect_kw("key")
            return {"kind": "close_mk"}
        if w == "backup":
            return self.backup_stmt()
        if w == "restore":
            return self.restore_stmt()
        if w in ("grant", "revoke", "deny"):
            return self.grant_stmt()
        self.fail()

    # ------------------------------------------------------ EXEC / DECLARE / SET
    def exec_stmt(self):
        self.next()
        if self.is_op("("):
            self.next()
            e = self.expr()
            self.expect_op(")")
            return {"kind": "exec_dynamic", "expr": e}
        retvar = None
        if self.peek().kind == "var" and self.is_op("=", k=1):
            retvar = self.next().val
            self.next()
        name_expr = None
        if self.peek().kind == "var":
            # EXEC @module_name_var args: the procedure named by a variable's value
            name_expr = self.expr()
            name = None
        else:
            name = self.multipart()
        params = []
        if not self._at_stmt_end():
            while True:
                pname = None
                if self.peek().kind == "var" and self.is_op("=", k=1):
                    pname = self.next().val
                    self.next()
                if self.is_kw("default"):
                    self.next()
                    val = ("default",)
                else:
                    val = self.expr()
                out = bool(self.accept_kw("output", "out"))
                params.append((pname, val, out))
                if not self.accept_op(","):
                    break
        return {"kind": "exec", "name": name, "params": params, "retvar": retvar, "name_expr": name_expr}

    def _at_stmt_end(self):
        tok = self.peek()
        if tok.kind == "eof" or self.is_op(";"):
            return True
        return tok.kind == "ident" and tok.val.lower() in STMT_START | {"else", "end", "go"}

    def typespec(self):
        name = self.ident().lower()
        size = None
        if self.accept_op("("):
            if self.accept_kw("max"):
                size = -1
            else:
                size = self.next().val
                if self.accept_op(","):
                    self.next()
            self.expect_op(")")
        return (name, size)

    def declare_stmt(self):
        self.next()
        decls = []
        while True:
            tok = self.peek()
            if tok.kind != "var":
                self.fail()
            self.next()
            self.accept_kw("as")
            typ = self.typespec()
            init = None
            if self.accept_op("="):
                init = self.expr()
            decls.append((tok.val, typ, init))
            if not self.accept_op(","):
                break
        return {"kind": "declare", "decls": decls}

    def set_stmt(self):
        self.next()
        tok = self.peek()
        if tok.kind == "var":
            self.next()
            op = self.accept_op("=", "+=", "-=")
            if not op:
                self.fail()
            return {"kind": "setvar", "var": tok.val, "op": op, "expr": self.expr()}
        # SET options: consume option words and a value
        words = []
        if self.accept_kw("transaction"):
            self.expect_kw("isolation")
            self.expect_kw("level")
            w = self.expect_kw("read", "repeatable", "serializable", "snapshot")
            if w in ("read", "repeatable"):
                self.expect_kw("committed", "uncommitted", "read")
            return {"kind": "noop", "what": "set isolation"}
        while True:
            if self.peek().kind != "ident":
                self.fail()
            words.append(self.next().val.lower())
            if not self.accept_op(","):
                break
        tok = self.peek()
        if tok.kind in ("ident", "num", "str", "qident") or self.is_op("-"):
            if self.is_op("-"):
                self.next()
            val = self.next().val
        else:
            self.fail()
        return {"kind": "setopt", "opts": words, "value": val}

    # ------------------------------------------------------ CREATE / ALTER / DROP
    def _pw_clause(self):
        self.expect_kw("password")
        self.expect_op("=")
        return self.str_or_var()

    def create_stmt(self):
        self.next()
        if self.accept_kw("master"):
            self.expect_kw("key")
            pw = None
            if self.accept_kw("encryption"):
                self.expect_kw("by")
                pw = self._pw_clause()
            else:
                raise SqlSyntax("KEY")
            return {"kind": "create_mk", "password": pw}
        if self.accept_kw("certificate"):
            name = self.ident()
            st = {"kind": "create_cert", "name": name, "owner": None}
            if self.accept_kw("authorization"):
                st["owner"] = self.ident()
            if self.accept_kw("from"):
                self.accept_kw("executable")
                w = self.expect_kw("file", "binary", "assembly")
                if w == "assembly":
                    self.fail(self.t[self.i - 1])
                self.expect_op("=")
                st["from"] = (w, self.primary())
                if self.accept_kw("with"):
                    if self.accept_kw("format"):
                        self.expect_op("=")
                        st["format"] = self.string()
                        self.expect_op(",")
                    self.expect_kw("private")
                    self.expect_kw("key")
                    st["pk"] = self.pk_options()
                return st
            if self.accept_kw("encryption"):
                self.expect_kw("by")
                st["enc_pw"] = self._pw_clause()
            self.expect_kw("with")
            opts = {}
            while True:
                k = self.expect_kw("subject", "start_date", "expiry_date")
                self.expect_op("=")
                opts[k] = self.str_or_var()
                if not self.accept_op(","):
                    break
            if "subject" not in opts:
                self.fail()
            st["opts"] = opts
            return st
        if self.accept_kw("login"):
            name = self.ident()
            self.expect_kw("with")
            opts = {}
            while True:
                k = self.ident().lower()
                self.expect_op("=")
                tok = self.next()
                opts[k] = tok.val
                if k == "password":
                    while self.is_kw("must_change", "hashed"):
                        self.next()
                if not self.accept_op(","):
                    break
            if "password" not in opts:
                self.fail()
            return {"kind": "create_login", "name": name, "opts": opts}
        if self.accept_kw("user"):
            name = self.ident()
            st = {"kind": "create_user", "name": name, "login": name, "without_login": False}
            if self.accept_kw("for", "from"):
                self.expect_kw("login")
                st["login"] = self.ident()
            elif self.accept_kw("without"):
                self.expect_kw("login")
                st["without_login"] = True
                st["login"] = None
            if self.accept_kw("with"):
                self.expect_kw("default_schema")
                self.expect_op("=")
                self.ident()
            return st
        if self.accept_kw("role"):
            name = self.ident()
            if self.accept_kw("authorization"):
                self.ident()
            return {"kind": "create_role", "name": name}
        if self.accept_kw("database"):
            name = self.ident()
            # ON / LOG ON file specs, COLLATE, WITH options: accepted and ignored (no files are modelled)
            depth = 0
            while self.peek().kind != "eof":
                if depth == 0 and (self.is_op(";") or (self.peek().kind == "ident" and
                                                      self.peek().val.lower() in STMT_START - {"with"})):
                    break
                if self.is_op("("):
                    depth += 1
                elif self.is_op(")"):
                    depth -= 1
                self.next()
            return {"kind": "create_database", "name": name}
        self.fail()

    def pk_options(self):
        self.expect_op("(")
        o = {}
        while True:
            if self.accept_kw("file"):
                self.expect_op("=")
                o["file"] = self.primary()
            elif self.accept_kw("binary"):
                self.expect_op("=")
                o["binary"] = self.primary()
            elif self.accept_kw("decryption"):
                self.expect_kw("by")
                o["dec"] = self._pw_clause()
            elif self.accept_kw("encryption"):
                self.expect_kw("by")
                o["enc"] = self._pw_clause()
            else:
                self.fail()
            if not self.accept_op(","):
                break
        self.expect_op(")")
        return o

    def alter_stmt(self):
        self.next()
        if self.accept_kw("master"):
            self.expect_kw("key")
            force = bool(self.accept_kw("force"))
            if self.accept_kw("regenerate"):
                self.expect_kw("with")
                self.expect_kw("encryption")
                self.expect_kw("by")
                return {"kind": "alter_mk", "action": "regenerate", "force": force, "password": self._pw_clause()}
            if force:
                self.fail()
            act = self.expect_kw("add", "drop")
            self.expect_kw("encryption")
            self.expect_kw("by")
            if self.accept_kw("service"):
                self.expect_kw("master")
                self.expect_kw("key")
                return {"kind": "alter_mk", "action": act, "by": "smk"}
            return {"kind": "alter_mk", "action": act, "by": "pw", "password": self._pw_clause()}
        if self.accept_kw("service"):
            self.expect_kw("master")
            self.expect_kw("key")
            force = bool(self.accept_kw("force"))
            if self.accept_kw("regenerate"):
                return {"kind": "alter_smk", "force": force}
            if not force and self.accept_kw("with"):
                while True:
                    self.expect_kw("old_account", "old_password", "new_account", "new_password")
                    self.expect_op("=")
                    self.string()
                    if not self.accept_op(","):
                        break
                return {"kind": "noop", "what": "alter smk account"}
            self.fail()
        if self.accept_kw("availability"):
            self.expect_kw("group")
            ag = self.ident()
            w = self.expect_kw("failover", "force_failover_allow_data_loss")
            return {"kind": "ag_failover", "ag": ag, "force": w != "failover"}
        if self.accept_kw("server"):
            self.expect_kw("role")
            role = self.ident()
            act = self.expect_kw("add", "drop")
            self.expect_kw("member")
            return {"kind": "alter_server_role", "role": role, "action": act, "member": self.ident()}
        if self.accept_kw("role"):
            role = self.ident()
            act = self.expect_kw("add", "drop")
            self.expect_kw("member")
            return {"kind": "alter_role", "role": role, "action": act, "member": self.ident()}
        if self.accept_kw("certificate"):
            name = self.ident()
            if self.accept_kw("remove"):
                self.expect_kw("private")
                self.expect_kw("key")
                return {"kind": "alter_cert", "name": name, "remove": True}
            self.expect_kw("with")
            self.expect_kw("private")
            self.expect_kw("key")
            return {"kind": "alter_cert", "name": name, "remove": False, "pk": self.pk_options()}
        if self.accept_kw("login"):
            name = self.ident()
            if self.accept_kw("enable", "disable"):
                return {"kind": "alter_login", "name": name, "disable": self.t[self.i - 1].val.lower() == "disable"}
            self.expect_kw("with")
            self.expect_kw("password")
            self.expect_op("=")
            pw = self.string()
            return {"kind": "alter_login", "name": name, "password": pw}
        self.fail()

    def drop_stmt(self):
        self.next()
        if self.accept_kw("master"):
            self.expect_kw("key")
            return {"kind": "drop_mk"}
        if self.accept_kw("database"):
            if_exists = False
            if self.is_kw("if") and self.is_kw("exists", k=1):
                self.next()
                self.next()
                if_exists = True
            names = [self.ident()]
            while self.accept_op(","):
                names.append(self.ident())
            return {"kind": "drop_database", "names": names, "if_exists": if_exists}
        w = self.accept_kw("certificate", "login", "user", "role")
        if not w:
            self.fail()
        if_exists = False
        if self.is_kw("if") and self.is_kw("exists", k=1):
            self.next()
            self.next()
            if_exists = True
        return {"kind": "drop_" + w, "name": self.ident(), "if_exists": if_exists}

    # ------------------------------------------------------ BACKUP / RESTORE
    def backup_stmt(self):
        self.next()
        if self.accept_kw("service"):
            self.expect_kw("master")
            self.expect_kw("key")
            self.expect_kw("to")
            self.expect_kw("file")
            self.expect_op("=")
            f = self.primary()
            self.expect_kw("encryption")
            self.expect_kw("by")
            return {"kind": "backup_smk", "file": f, "password": self._pw_clause()}
        if self.accept_kw("master"):
            self.expect_kw("key")
            self.expect_kw("to")
            w = self.expect_kw("file", "url")
            self.expect_op("=")
            f = self.primary()
            self.expect_kw("encryption")
            self.expect_kw("by")
            return {"kind": "backup_mk", "file": f, "url": w == "url", "password": self._pw_clause()}
        if self.accept_kw("certificate"):
            name = self.ident()
            self.expect_kw("to")
            self.expect_kw("file")
            self.expect_op("=")
            st = {"kind": "backup_cert", "name": name, "file": self.primary()}
            if self.accept_kw("with"):
                if self.accept_kw("format"):
                    self.expect_op("=")
                    st["format"] = self.string()
                    self.expect_op(",")
                self.expect_kw("private")
                self.expect_kw("key")
                st["pk"] = self.pk_options()
            return st
        self.fail()

    def restore_stmt(self):
        self.next()
        if self.accept_kw("service"):
            self.expect_kw("master")
            self.expect_kw("key")
            self.expect_kw("from")
            self.expect_kw("file")
            self.expect_op("=")
            f = self.primary()
            self.expect_kw("decryption")
            self.expect_kw("by")
            pw = self._pw_clause()
            return {"kind": "restore_smk", "file": f, "password": pw, "force": bool(self.accept_kw("force"))}
        if self.accept_kw("master"):
            self.expect_kw("key")
            self.expect_kw("from")
            w = self.expect_kw("file", "url")
            self.expect_op("=")
            f = self.primary()
            self.expect_kw("decryption")
            self.expect_kw("by")
            dpw = self._pw_clause()
            self.expect_kw("encryption")
            self.expect_kw("by")
            epw = self._pw_clause()
            return {"kind": "restore_mk", "file": f, "url": w == "url", "dec": dpw, "enc": epw,
                    "force": bool(self.accept_kw("force"))}
        self.fail()

    # ------------------------------------------------------ GRANT
    def grant_stmt(self):
        verb = self.next().val.lower()
        perms = []
        while True:
            words = []
            while self.peek().kind == "ident" and self.peek().val.lower() not in ("on", "to", "from"):
                words.append(self.next().val.upper())
            if not words:
                self.fail()
            perms.append(" ".join(words))
            if not self.accept_op(","):
                break
        target = None
        if self.accept_kw("on"):
            cls = None
            if self.peek(1).kind == "op" and self.peek(1).val == "::":
                cls = self.ident().upper()
                self.next()
            target = (cls or "OBJECT", self.multipart())
        if verb == "revoke":
            self.expect_kw("from", "to")
        else:
            self.expect_kw("to")
        grantees = [self.ident()]
        while self.accept_op(","):
            grantees.append(self.ident())
        wgo = False
        if self.accept_kw("with"):
            self.expect_kw("grant")
            self.expect_kw("option")
            wgo = True
        if self.accept_kw("cascade"):
            pass
        if self.accept_kw("as"):
            self.ident()
        return {"kind": "grant", "verb": verb, "perms": perms, "target": target, "grantees": grantees, "wgo": wgo}

    # ------------------------------------------------------ SELECT
    def select_stmt(self):
        q = self.select_query()
        return {"kind": "select", "q": q}

    def select_query(self):
        if self.accept_op("("):
            q = self.select_query()
            self.expect_op(")")
        else:
            q = self.select_core()
        while self.is_kw("union", "except", "intersect"):
            op = self.next().val.lower()
            all_ = bool(self.accept_kw("all"))
            rhs = self.select_core()
            q = {"setop": op, "all": all_, "left": q, "right": rhs, "order": None}
        if self.accept_kw("order"):
            self.expect_kw("by")
            order = []
            while True:
                e = self.expr()
                d = self.accept_kw("asc", "desc") or "asc"
                order.append((e, d == "desc"))
                if not self.accept_op(","):
                    break
            q["order"] = order
        return q

    def select_core(self):
        self.expect_kw("select")
        q = {"distinct": False, "top": None, "items": [], "from": [], "where": None, "group": None,
             "having": None, "order": None}
        if self.accept_kw("distinct"):
            q["distinct"] = True
        else:
            self.accept_kw("all")
        if self.accept_kw("top"):
            if self.accept_op("("):
                q["top"] = self.expr()
                self.expect_op(")")
            else:
                q["top"] = self.primary()
            self.accept_kw("percent")
        while True:
            q["items"].append(self.select_item())
            if not self.accept_op(","):
                break
        if self.accept_kw("from"):
            while True:
                q["from"].append(self.table_with_joins())
                if not self.accept_op(","):
                    break
        if self.accept_kw("where"):
            q["where"] = self.expr()
        if self.accept_kw("group"):
            self.expect_kw("by")
            q["group"] = [self.expr()]
            while self.accept_op(","):
                q["group"].append(self.expr())
        if self.accept_kw("having"):
            q["having"] = self.expr()
        return q

    def select_item(self):
        if self.is_op("*"):
            self.next()
            return ("star", None)
        tok, t1, t2 = self.peek(), self.peek(1), self.peek(2)
        if tok.kind in ("ident", "qident") and t1.kind == "op" and t1.val == "." and t2.kind == "op" and t2.val == "*":
            self.next(); self.next(); self.next()
            return ("star", tok.val)
        if tok.kind == "var" and t1.kind == "op" and t1.val == "=":
            self.next(); self.next()
            return ("assign", tok.val, self.expr())
        if tok.kind in ("qident", "str") or (tok.kind == "ident" and tok.val.lower() not in RESERVED):
            if t1.kind == "op" and t1.val == "=":
                self.next(); self.next()
                return ("expr", self.expr(), tok.val)
        e = self.expr()
        alias = None
        if self.accept_kw("as"):
            tok = self.next()
            if tok.kind not in ("ident", "qident", "str"):
                self.fail(tok)
            alias = tok.val
        elif self.peek().kind in ("qident", "str") or (self.peek().kind == "ident" and
                                                      self.peek().val.lower() not in RESERVED):
            alias = self.next().val
        return ("expr", e, alias)

    def table_with_joins(self):
        left = self.table_source()
        while True:
            if self.is_kw("cross") and self.is_kw("join", k=1):
                self.next(); self.next()
                right = self.table_source()
                left = ("join", "cross", left, right, None)
                continue
            if self.is_kw("cross", "outer") and self.is_kw("apply", k=1):
                self.fail()
            kind = None
            if self.is_kw("join"):
                kind = "inner"
            elif self.is_kw("inner") and self.is_kw("join", k=1):
                self.next()
                kind = "inner"
            elif self.is_kw("left", "right", "full"):
                kind = self.next().val.lower()
                self.accept_kw("outer")
                if not self.is_kw("join"):
                    self.fail()
            if not kind:
                return left
            self.expect_kw("join")
            right = self.table_source()
            self.expect_kw("on")
            cond = self.expr()
            left = ("join", kind, left, right, cond)

    def table_source(self):
        if self.is_kw("openrowset"):
            self.next()
            self.expect_op("(")
            self.expect_kw("bulk")
            f = self.primary()
            self.expect_op(",")
            mode = self.expect_kw("single_blob", "single_clob", "single_nclob")
            self.expect_op(")")
            alias = self._alias()
            if alias is None:
                self.fail()
            return ("openrowset", f, mode, alias)
        if self.is_op("("):
            self.next()
            q = self.select_query()
            self.expect_op(")")
            alias = self._alias()
            if alias is None:
                self.fail()
            return ("subquery", q, alias)
        name = self.multipart()
        args = None
        if self.is_op("("):
            self.next()
            args = []
            if not self.is_op(")"):
                args.append(self.expr())
                while self.accept_op(","):
                    args.append(self.expr())
            self.expect_op(")")
        alias = self._alias()
        if self.is_kw("with") and self.is_op("(", k=1):
            self.next(); self.next()
            while not self.is_op(")"):
                self.next()
                if self.peek().kind == "eof":
                    self.fail()
            self.next()
        return ("table", name, alias, args)

    def _alias(self):
        if self.accept_kw("as"):
            return self.ident()
        tok = self.peek()
        if tok.kind == "qident" or (tok.kind == "ident" and tok.val.lower() not in RESERVED and
                                    tok.val.lower() not in ("join", "inner", "left", "right", "full", "cross",
                                                            "outer", "apply", "on")):
            self.next()
            return tok.val
        return None

    # ------------------------------------------------------ expressions
    def expr(self):
        return self.or_expr()

    def or_expr(self):
        e = self.and_expr()
        while self.accept_kw("or"):
            e = ("bin", "or", e, self.and_expr())
        return e

    def and_expr(self):
        e = self.not_expr()
        while self.accept_kw("and"):
            e = ("bin", "and", e, self.not_expr())
        return e

    def not_expr(self):
        if self.accept_kw("not"):
            return ("not", self.not_expr())
        return self.cmp_expr()

    def cmp_expr(self):
        if self.is_kw("exists"):
            self.next()
            self.expect_op("(")
            q = self.select_query()
            self.expect_op(")")
            return ("exists", q)
        e = self.add_expr()
        while True:
            op = self.accept_op("=", "<>", "!=", "<", ">", "<=", ">=", "!<", "!>")
            if op:
                op = {"!=": "<>", "!<": ">=", "!>": "<="}.get(op, op)
                e = ("bin", op, e, self.add_expr())
                continue
            if self.is_kw("is"):
                self.next()
                neg = bool(self.accept_kw("not"))
                self.expect_kw("null")
                e = ("isnull", e, neg)
                continue
            neg = False
            if self.is_kw("not") and self.is_kw("in", "like", "between", k=1):
                self.next()
                neg = True
            if self.accept_kw("in"):
                self.expect_op("(")
                if self.is_kw("select"):
                    lst = ("subq", self.select_query())
                else:
                    items = [self.expr()]
                    while self.accept_op(","):
                        items.append(self.expr())
                    lst = ("list", items)
                self.expect_op(")")
                e = ("in", e, lst, neg)
                continue
            if self.accept_kw("like"):
                pat = self.add_expr()
                if self.accept_kw("escape"):
                    self.primary()
                e = ("like", e, pat, neg)
                continue
            if self.accept_kw("between"):
                lo = self.add_expr()
                self.expect_kw("and")
                hi = self.add_expr()
                e = ("between", e, lo, hi, neg)
                continue
            if neg:
                self.fail()
            return e

    def add_expr(self):
        e = self.mul_expr()
        while True:
            op = self.accept_op("+", "-", "&", "|", "^")
            if not op:
                return e
            e = ("bin", op, e, self.mul_expr())

    def mul_expr(self):
        e = self.unary()
        while True:
            op = self.accept_op("*", "/", "%")
            if not op:
                return e
            e = ("bin", op, e, self.unary())

    def unary(self):
        if self.accept_op("-"):
            return ("neg", self.unary())
        if self.accept_op("+"):
            return self.unary()
        if self.accept_op("~"):
            return ("bitnot", self.unary())
        return self.primary()

    def primary(self):
        tok = self.peek()
        if tok.kind == "str":
            self.next()
            return ("lit", tok.val)
        if tok.kind == "num":
            self.next()
            return ("lit", tok.val)
        if tok.kind == "bin":
            self.next()
            return ("lit", tok.val)
        if tok.kind == "var":
            self.next()
            return ("var", tok.val)
        if tok.kind == "sysvar":
            self.next()
            return ("sysvar", tok.val)
        if tok.kind == "op" and tok.val == "(":
            self.next()
            if self.is_kw("select"):
                q = self.select_query()
                self.expect_op(")")
                return ("subq", q)
            e = self.expr()
            self.expect_op(")")
            return e
        if tok.kind in ("ident", "qident"):
            w = tok.val.lower() if tok.kind == "ident" else None
            if w == "null":
                self.next()
                return ("lit", None)
            if w == "case":
                return self.case_expr()
            if w in ("cast", "try_cast") and self.is_op("(", k=1):
                self.next(); self.next()
                e = self.expr()
                self.expect_kw("as")
                t = self.typespec()
                self.expect_op(")")
                return ("cast", e, t)
            if w in ("convert", "try_convert") and self.is_op("(", k=1):
                self.next(); self.next()
                t = self.typespec()
                self.expect_op(",")
                e = self.expr()
                style = None
                if self.accept_op(","):
                    style = self.expr()
                self.expect_op(")")
                return ("convert", t, e, style)
            if w in ("current_user", "system_user", "session_user", "current_timestamp", "user"):
                self.next()
                return ("func", [w], [])
            if w in RESERVED and w not in ("left", "right", "user", "file", "key", "identity", "default"):
                self.fail()
            name = self.multipart()
            if self.is_op("("):
                self.next()
                args = []
                if self.is_op("*"):
                    self.next()
                    args.append(("star", None))
                elif not self.is_op(")"):
                    self.accept_kw("distinct")
                    while True:
                        if self.is_kw("default"):
                            self.next()
                            args.append(("default",))
                        else:
                            args.append(self.expr())
                        if not self.accept_op(","):
                            break
                self.expect_op(")")
                if self.is_kw("over"):
                    self.fail()
                return ("func", [p.lower() for p in name], args)
            return ("col", name)
        self.fail()

    def case_expr(self):
        self.next()
        operand = None
        if not self.is_kw("when"):
            operand = self.expr()
        whens = []
        while self.accept_kw("when"):
            c = self.expr()
            self.expect_kw("then")
            whens.append((c, self.expr()))
        if not whens:
            self.fail()
        els = None
        if self.accept_kw("else"):
            els = self.expr()
        self.expect_kw("end")
        return ("case", operand, whens, els)


def parse(text):
    return Parser(text).parse_batch()
