"""KV secrets engines: version 1 (plain) and version 2 (versioned), as the kv plugin behaves."""
import copy
import time

from .core import KV2_INVALID_PATH, UNSUPPORTED_OP, Resp, VaultError, bad, envelope, notfound, ok, _merge_patch
from .util import as_bool, as_int, go_duration, parse_duration, rfc3339


def _list_keys(names, prefix):
    out = set()
    for n in names:
        if n.startswith(prefix):
            rest = n[len(prefix):]
            if not rest:
                continue
            out.add(rest.split("/")[0] + "/" if "/" in rest else rest)
    return sorted(out)


def _unsupported():
    return VaultError(405, [UNSUPPORTED_OP])


# ------------------------------------------------------------------ KV v1
def handle_kv1(v, req, m, sub, store, mount_type, lease):
    meth = req.method
    if meth == "LIST":
        prefix = sub if (sub == "" or sub.endswith("/")) else sub + "/"
        keys = _list_keys(store.keys(), prefix)
        if not keys:
            raise notfound()
        return ok({"keys": keys}, mount_type=mount_type)
    key = sub.rstrip("/")
    if not key:
        raise VaultError(405, [UNSUPPORTED_OP]) if meth != "GET" else notfound()
    if meth in ("GET", "HEAD"):
        if key not in store:
            raise notfound()
        d = store[key]
        ld = lease
        if "ttl" in d:
            try:
                ld = parse_duration(d["ttl"])
            except ValueError:
                pass
        return ok(copy.deepcopy(d), mount_type=mount_type, lease_duration=ld)
    if meth in ("POST", "PUT"):
        if not isinstance(req.data, dict) or not req.data:
            raise bad("missing data fields")
        store[key] = copy.deepcopy(req.data)
        return Resp(204)
    if meth == "DELETE":
        store.pop(key, None)
        return Resp(204)
    raise _unsupported()


# ------------------------------------------------------------------ KV v2
def _conf(m):
    return m["store"].setdefault("config", {"max_versions": 0, "cas_required": False, "delete_version_after": 0})


def _keys(m):
    return m["store"].setdefault("keys", {})


def _is_deleted(ver):
    return ver.get("deletion_ts") is not None and ver["deletion_ts"] <= time.time()


def _ver_meta(k, n, ver):
    return {"created_time": ver["created_time"], "custom_metadata": k.get("custom_metadata"),
            "deletion_time": ver["deletion_time"], "destroyed": ver["destroyed"], "version": n}


def _parse_versions(data):
    vs = data.get("versions") if isinstance(data, dict) else None
    if vs is None or vs == [] or vs == "":
        raise bad("no version number provided")
    if isinstance(vs, (int, str)):
        vs = [vs]
    try:
        return [int(x) for x in (vs if isinstance(vs, list) else str(vs).split(","))]
    except (TypeError, ValueError):
        raise bad("error parsing versions")


def _max_versions(m, k):
    return k.get("max_versions") or _conf(m).get("max_versions") or 10


def _dva(m, k):
    d = k.get("delete_version_after") or 0
    if not d:
        d = _conf(m).get("delete_version_after") or 0
    return d


def _new_key(now_s):
    return {"versions": {}, "current_version": 0, "oldest_version": 0, "max_versions": 0,
            "cas_required": False, "delete_version_after": 0, "custom_metadata": None,
            "created_time": now_s, "updated_time": now_s}


def _check_cas(m, k, data):
    opts = data.get("options") or {}
    if not isinstance(opts, dict):
        raise bad("error parsing check-and-set parameter")
    cas = opts.get("cas")
    required = _conf(m).get("cas_required") or (k is not None and k.get("cas_required"))
    if cas is None:
        if required:
            raise bad("check-and-set parameter required for this call")
        return
    try:
        cas = int(cas)
    except (TypeError, ValueError):
        raise bad("error parsing check-and-set parameter")
    cur = k["current_version"] if k else 0
    if cas != cur:
        raise bad("check-and-set parameter did not match the current version")


def _add_version(v, m, path, k, payload):
    now = time.time()
    now_s = rfc3339(now)
    keys = _keys(m)
    if k is None:
        k = _new_key(now_s)
        keys[path] = k
    n = k["current_version"] + 1
    ver = {"data": payload, "created_time": now_s, "deletion_time": "", "deletion_ts": None, "destroyed": False}
    dva = _dva(m, k)
    if dva:
        ver["deletion_ts"] = now + dva
        ver["deletion_time"] = rfc3339(now + dva)
    k["versions"][str(n)] = ver
    k["current_version"] = n
    k["updated_time"] = now_s
    maxv = _max_versions(m, k)
    nums = sorted(int(x) for x in k["versions"])
    if len(nums) > maxv:
        for x in nums[:len(nums) - maxv]:
            del k["versions"][str(x)]
        k["oldest_version"] = min(int(x) for x in k["versions"])
    return ok({"created_time": now_s, "custom_metadata": k.get("custom_metadata"), "deletion_time": ver["deletion_time"],
               "destroyed": False, "version": n}, mount_type="kv")


def _meta_body(k):
    return {"cas_required": k["cas_required"], "created_time": k["created_time"],
            "current_version": k["current_version"], "custom_metadata": k.get("custom_metadata"),
            "delete_version_after": go_duration(k.get("delete_version_after") or 0),
            "max_versions": k["max_versions"], "oldest_version": k["oldest_version"],
            "updated_time": k["updated_time"],
            "versions": {n: {"created_time": ver["created_time"], "deletion_time": ver["deletion_time"],
                             "destroyed": ver["destroyed"]}
                         for n, ver in sorted(k["versions"].items(), key=lambda x: int(x[0]))}}


def _validate_custom_metadata(cm):
    if cm is None:
        return None
    if not isinstance(cm, dict):
        raise bad("custom_metadata must be a map of strings")
    errs = []
    if len(cm) > 64:
        errs.append(f"payload must contain at most 64 keys, provided {len(cm)}")
    for kk, vv in cm.items():
        if vv is not None and not isinstance(vv, str):
            raise bad("custom_metadata must be a map of strings")
        # KV plugin path_metadata.go: keys 1..128 bytes, values 1..512 bytes (vault-azure-api.md A)
        if kk == "":
            errs.append("custom_metadata validation failed: keys cannot be empty")
        if vv == "":
            errs.append(f"custom_metadata validation failed: value for key \"{kk}\" cannot be empty")
        if len(kk) > 128:
            errs.append(f"length of key \"{kk}\" is {len(kk)} but exceeds the maximum key length of 128 bytes")
        if vv is not None and len(vv.encode()) > 512:
            errs.append(f"length of value for key \"{kk}\" is {len(vv.encode())} but exceeds the maximum value length of 512 bytes")
    if errs:
        raise bad("%d error%s occurred:\n%s\n\n" % (len(errs), "" if len(errs) == 1 else "s",
                                                    "\n".join("\t* " + e for e in errs)))
    return cm


def _apply_meta_fields(k, d):
    if "max_versions" in d and d["max_versions"] is not None:
        k["max_versions"] = as_int(d["max_versions"])
    if "cas_required" in d and d["cas_required"] is not None:
        k["cas_required"] = as_bool(d["cas_required"])
    if "delete_version_after" in d and d["delete_version_after"] is not None:
        k["delete_version_after"] = parse_duration(d["delete_version_after"])


def handle_kv2(v, req, m, sub):
    meth = req.method
    data = req.data if isinstance(req.data, dict) else {}
    keys = _keys(m)
    if sub.rstrip("/") == "config":
        c = _conf(m)
        if meth in ("GET", "HEAD"):
            return ok({"cas_required": c["cas_required"], "delete_version_after": go_duration(c["delete_version_after"]),
                       "max_versions": c["max_versions"]}, mount_type="kv")
        if meth in ("POST", "PUT"):
            if "max_versions" in data:
                c["max_versions"] = as_int(data["max_versions"])
            if "cas_required" in data:
                c["cas_required"] = as_bool(data["cas_required"])
            if "delete_version_after" in data:
                c["delete_version_after"] = parse_duration(data["delete_version_after"])
            return Resp(204)
        raise _unsupported()
    op, _, path = sub.partition("/")
    if op not in ("data", "metadata", "delete", "undelete", "destroy", "subkeys"):
        body = envelope(None, warnings=[KV2_INVALID_PATH], mount_type="kv")
        raise VaultError(404, body=body)
    if op == "metadata" and meth == "LIST":
        prefix = path if (path == "" or path.endswith("/")) else path + "/"
        names = _list_keys(keys.keys(), prefix)
        if not names:
            raise notfound()
        return ok({"keys": names}, mount_type="kv")
    path = path.rstrip("/")
    if not path:
        raise VaultError(405, [UNSUPPORTED_OP]) if meth not in ("GET", "HEAD") else notfound()
    k = keys.get(path)
    if op == "data":
        if meth in ("GET", "HEAD"):
            if k is None:
                raise notfound()
            try:
                n = int(req.query.get("version") or data.get("version") or 0)
            except ValueError:
                raise bad("error parsing version")
            if n == 0:
                n = k["current_version"]
            ver = k["versions"].get(str(n))
            if ver is None:
                raise notfound()
            meta = _ver_meta(k, n, ver)
            if ver["destroyed"] or _is_deleted(ver):
                raise VaultError(404, body=envelope({"data": None, "metadata": meta}, mount_type="kv"))
            return ok({"data": copy.deepcopy(ver["data"]), "metadata": meta}, mount_type="kv")
        if meth in ("POST", "PUT"):
            if "data" not in data or data["data"] is None:
                raise bad("no data provided")
            if not isinstance(data["data"], dict):
                raise bad("no data provided")
            _check_cas(m, k, data)
            return _add_version(v, m, path, k, copy.deepcopy(data["data"]))
        if meth == "PATCH":
            if k is None:
                raise notfound()
            cur = k["versions"].get(str(k["current_version"]))
            if cur is None or cur["destroyed"] or _is_deleted(cur):
                raise notfound()
            if "data" not in data or not isinstance(data["data"], dict):
                raise bad("no data provided")
            _check_cas(m, k, data)
            merged = _merge_patch(cur["data"], data["data"])
            return _add_version(v, m, path, k, merged)
        if meth == "DELETE":
            if k is not None:
                cur = k["versions"].get(str(k["current_version"]))
                if cur is not None and not cur["destroyed"] and not _is_deleted(cur):
                    now = time.time()
                    cur["deletion_ts"] = now
                    cur["deletion_time"] = rfc3339(now)
            return Resp(204)
        raise _unsupported()
    if op == "subkeys":
        if meth not in ("GET", "HEAD"):
            raise _unsupported()
        if k is None:
            raise notfound()
        n = int(req.query.get("version") or 0) or k["current_version"]
        depth = int(req.query.get("depth") or 0)
        ver = k["versions"].get(str(n))
        if ver is None:
            raise notfound()
        meta = _ver_meta(k, n, ver)
        if ver["destroyed"] or _is_deleted(ver):
            raise VaultError(404, body=envelope({"subkeys": None, "metadata": meta}, mount_type="kv"))

        def sk(d, lvl):
            out = {}
            for a, b in d.items():
                out[a] = sk(b, lvl + 1) if isinstance(b, dict) and b and (depth == 0 or lvl < depth) else None
            return out
        return ok({"subkeys": sk(ver["data"], 1), "metadata": meta}, mount_type="kv")
    if op in ("delete", "undelete", "destroy"):
        if meth not in ("POST", "PUT"):
            raise _unsupported()
        nums = _parse_versions(data)
        if k is None:
            return Resp(204)
        now = time.time()
        for n in nums:
            ver = k["versions"].get(str(n))
            if ver is None:
                continue
            if op == "delete":
                if not ver["destroyed"] and not _is_deleted(ver):
                    ver["deletion_ts"] = now
                    ver["deletion_time"] = rfc3339(now)
            elif op == "undelete":
                if not ver["destroyed"]:
                    ver["deletion_ts"] = None
                    ver["deletion_time"] = ""
            else:
                ver["destroyed"] = True
                ver["data"] = None
        return Resp(204)
    # metadata
    if meth in ("GET", "HEAD"):
        if k is None:
            raise notfound()
        return ok(_meta_body(k), mount_type="kv")
    if meth in ("POST", "PUT", "PATCH"):
        if meth == "PATCH" and k is None:
            raise notfound()
        cm_given = "custom_metadata" in data
        cm = _validate_custom_metadata(data.get("custom_metadata")) if cm_given else None
        if k is None:
            k = _new_key(rfc3339())
            keys[path] = k
        _apply_meta_fields(k, data)
        if cm_given:
            if meth == "PATCH":
                merged = _merge_patch(k.get("custom_metadata") or {}, cm or {})
                k["custom_metadata"] = merged or None
            else:
                k["custom_metadata"] = {a: b for a, b in (cm or {}).items()} or None
        k["updated_time"] = rfc3339()
        return Resp(204)
    if meth == "DELETE":
        keys.pop(path, None)
        return Resp(204)
    raise _unsupported()
