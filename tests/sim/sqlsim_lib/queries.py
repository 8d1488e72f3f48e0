"""SELECT: sources (catalog views, user tables, joins, subqueries, OPENROWSET), projection, grouping,
ordering and result column types."""
import datetime
import uuid


from . import catalog, tds
from .errors import SqlError
from .executil import type_of


class QueriesMixin:
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


# statement kind -> handler
STATEMENTS = {
    "select": QueriesMixin.x_select,
}
