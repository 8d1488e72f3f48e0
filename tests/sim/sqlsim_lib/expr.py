"""Expression evaluation: operators, comparisons, CAST/CONVERT, system variables, built-in functions."""
import base64
import datetime
import os
import re
import uuid


from . import tds
from . import state as st
from .errors import SqlError


class ExprMixin:
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
        # The server itself is securable NULL with class NULL (the docs' example A:
        # HAS_PERMS_BY_NAME(null, null, 'VIEW SERVER STATE')), or class SERVER.
        server = securable is None and cls is None
        cls = (cls or "").upper()
        perm = (perm or "").upper()
        if cls == "SERVER" or server:
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
