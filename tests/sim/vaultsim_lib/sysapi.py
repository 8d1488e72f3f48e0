"""sys/ endpoints."""
import copy
import time

from . import policy as pol
from .core import (UNSUPPORTED_OP, UNSUPPORTED_PATH, VERSION, Resp, VaultError, _auth_mount, _mount, _norm_ns,
                   _public, _split_mount, bad, envelope, notfound, ok)
from .util import SYS_DEFAULT_TTL, SYS_MAX_TTL, as_bool, parse_duration, rfc3339

AUTH_TYPES = {"approle", "kubernetes", "jwt", "oidc", "cert", "userpass"}


def _unsupported_op():
    return VaultError(405, [UNSUPPORTED_OP])


def health_body(v):
    return {"initialized": True, "sealed": v.sealed, "standby": v.sealed, "performance_standby": False,
            "replication_performance_mode": "disabled", "replication_dr_mode": "disabled",
            "server_time_utc": int(time.time()), "version": VERSION, "enterprise": False,
            "cluster_name": v.st["cluster_name"], "cluster_id": v.st["cluster_id"],
            "echo_duration_ms": 0, "clock_skew_ms": 0}


def seal_status(v):
    b = {"type": "shamir", "initialized": True, "sealed": v.sealed, "t": 1, "n": 1, "progress": 0, "nonce": "",
         "version": VERSION, "build_date": "2024-02-28T17:07:34Z", "migration": False,
         "recovery_seal": False, "storage_type": "file"}
    if not v.sealed:
        b["cluster_name"] = v.st["cluster_name"]
        b["cluster_id"] = v.st["cluster_id"]
    return b


def _with_top(data, **kw):
    """Some legacy sys endpoints also copy data's keys to the top level of the body."""
    body = envelope(data, **kw)
    for k, val in data.items():
        if k not in body:
            body[k] = val
    return Resp(200, body)


def _code(q, name, default):
    if name in q:
        try:
            return int(q[name])
        except ValueError:
            raise bad(f"unable to parse {name}")
    return default


def handle_sys(v, req):
    rp = req.path.rstrip("/")
    meth = req.method
    d = req.data if isinstance(req.data, dict) else {}
    q = req.query
    nss = req.nsstate

    if rp == "sys/health":
        if meth not in ("GET", "HEAD"):
            raise _unsupported_op()
        status = _code(q, "sealedcode", 503) if v.sealed else _code(q, "activecode", 200)
        return Resp(status, None if meth == "HEAD" else health_body(v))
    if rp == "sys/seal-status":
        return Resp(200, seal_status(v))
    if rp == "sys/init":
        return Resp(200, {"initialized": True})
    if rp == "sys/leader":
        return Resp(200, {"ha_enabled": False, "is_self": False, "active_time": "0001-01-01T00:00:00Z",
                          "leader_address": "", "leader_cluster_address": "", "performance_standby": False,
                          "performance_standby_last_remote_wal": 0})
    if rp == "sys/unseal":
        if meth not in ("PUT", "POST"):
            raise _unsupported_op()
        if as_bool(d.get("reset")):
            return Resp(200, seal_status(v))
        if not d.get("key"):
            raise bad("'key' must be specified in request body as JSON, or 'reset' set to true")
        v.sealed = False
        return Resp(200, seal_status(v))
    if rp == "sys/seal":
        if meth not in ("PUT", "POST"):
            raise _unsupported_op()
        v.sealed = True
        return Resp(204)

    # ------------------------------------------------------------ mounts
    if rp == "sys/mounts":
        if meth not in ("GET", "HEAD"):
            raise _unsupported_op()
        data = {k: _public(m) for k, m in sorted(nss["mounts"].items())}
        return _with_top(data, mount_type="system")
    if rp.startswith("sys/mounts/"):
        mp = rp[len("sys/mounts/"):]
        tune = False
        if mp.endswith("/tune"):
            mp, tune = mp[:-5], True
        mp = mp.strip("/") + "/"
        m = nss["mounts"].get(mp)
        if tune:
            if m is None:
                raise bad(f"cannot fetch sysview for path \"{mp}\"")
            if meth in ("GET", "HEAD"):
                c = m["config"]
                return _with_top({"default_lease_ttl": c.get("default_lease_ttl") or SYS_DEFAULT_TTL,
                                  "max_lease_ttl": c.get("max_lease_ttl") or SYS_MAX_TTL,
                                  "force_no_cache": False, "description": m["description"],
                                  "options": m.get("options")}, mount_type="system")
            if "description" in d:
                m["description"] = d["description"]
            for f in ("default_lease_ttl", "max_lease_ttl"):
                if f in d:
                    m["config"][f] = parse_duration(d[f])
            opts = d.get("options")
            if isinstance(opts, dict) and m["type"] == "kv" and "version" in opts:
                newv = str(opts["version"])
                oldv = str((m.get("options") or {}).get("version", "1"))
                if newv == "2" and oldv != "2":
                    _upgrade_kv(m)
                elif newv != oldv:
                    raise bad("cannot downgrade mount from KV version 2 to 1")
            return Resp(204)
        if meth in ("GET", "HEAD"):
            if m is None:
                raise bad(f"No secret engine mount at {mp}")
            return ok(_public(m), mount_type="system")
        if meth in ("POST", "PUT"):
            mtype = d.get("type")
            if not mtype:
                raise bad("'type' must be specified")
            if mp.startswith("auth/") or mp == "auth/":
                raise bad("cannot mount under auth/")
            for existing in nss["mounts"]:
                if mp.startswith(existing) or existing.startswith(mp):
                    raise bad(f"path is already in use at {existing}")
            opts = d.get("options") or {}
            if not isinstance(opts, dict):
                raise bad("options must be a map")
            opts = {k: str(val) for k, val in opts.items()}
            if mtype == "kv-v2":
                mtype = "kv"
                opts["version"] = "2"
            if mtype == "kv" and "version" not in opts:
                opts["version"] = "1"
            m = _mount(mtype, opts or None, d.get("description", ""))
            cfg = d.get("config") or {}
            for f in ("default_lease_ttl", "max_lease_ttl"):
                if f in cfg:
                    m["config"][f] = parse_duration(cfg[f])
            nss["mounts"][mp] = m
            return Resp(204)
        if meth == "DELETE":
            if mp in ("sys/", "cubbyhole/", "identity/"):
                raise bad(f"cannot unmount \"{mp}\"")
            nss["mounts"].pop(mp, None)
            return Resp(204)
        raise _unsupported_op()

    if rp == "sys/auth":
        if meth not in ("GET", "HEAD"):
            raise _unsupported_op()
        data = {k: _public(m) for k, m in sorted(nss["auth"].items())}
        return _with_top(data, mount_type="system")
    if rp.startswith("sys/auth/"):
        mp = rp[len("sys/auth/"):]
        tune = False
        if mp.endswith("/tune"):
            mp, tune = mp[:-5], True
        mp = mp.strip("/") + "/"
        m = nss["auth"].get(mp)
        if tune:
            if m is None:
                raise bad(f"cannot fetch sysview for path \"auth/{mp}\"")
            if meth in ("GET", "HEAD"):
                c = m["config"]
                return _with_top({"default_lease_ttl": c.get("default_lease_ttl") or SYS_DEFAULT_TTL,
                                  "max_lease_ttl": c.get("max_lease_ttl") or SYS_MAX_TTL,
                                  "force_no_cache": False, "description": m["description"],
                                  "options": m.get("options"), "token_type": "default-service"},
                                 mount_type="system")
            for f in ("default_lease_ttl", "max_lease_ttl"):
                if f in d:
                    m["config"][f] = parse_duration(d[f])
            return Resp(204)
        if meth in ("GET", "HEAD"):
            if m is None:
                raise bad(f"No auth engine at {mp}")
            return ok(_public(m), mount_type="system")
        if meth in ("POST", "PUT"):
            mtype = d.get("type")
            if not mtype:
                raise bad("'type' must be specified")
            if mtype not in AUTH_TYPES:
                raise bad(f"plugin not found in the catalog: {mtype}")
            if mp == "token/":
                raise bad("token credential backend cannot be instantiated")
            for existing in nss["auth"]:
                if mp.startswith(existing) or existing.startswith(mp):
                    raise bad(f"path is already in use at auth/{existing}")
            m = _auth_mount("jwt" if mtype == "oidc" else mtype, d.get("description", ""))
            m["type"] = mtype
            cfg = d.get("config") or {}
            for f in ("default_lease_ttl", "max_lease_ttl"):
                if f in cfg:
                    m["config"][f] = parse_duration(cfg[f])
            nss["auth"][mp] = m
            return Resp(204)
        if meth == "DELETE":
            if mp == "token/":
                raise bad("token credential backend cannot be disabled")
            nss["auth"].pop(mp, None)
            return Resp(204)
        raise _unsupported_op()

    if rp == "sys/internal/ui/mounts":
        secret, auth = {}, {}
        te = None
        tok = v._token_from_headers(req)
        if tok:
            te = v._valid_token(tok)
        for k, m in nss["mounts"].items():
            if te and ("root" in te["policies"] or v.acl_for(te).any_under(req.ns[len(te["ns"]):] + k)):
                secret[k] = _public(m)
        for k, m in nss["auth"].items():
            if te and ("root" in te["policies"] or v.acl_for(te).any_under(req.ns[len(te["ns"]):] + "auth/" + k)):
                auth[k] = _public(m)
        return ok({"secret": secret, "auth": auth}, mount_type="system")
    if rp.startswith("sys/internal/ui/mounts/"):
        target = rp[len("sys/internal/ui/mounts/"):]
        te = req.token
        if target.startswith("auth/"):
            mp, m = _split_mount(nss["auth"], target[5:])
            mp = "auth/" + mp if mp else None
        else:
            mp, m = _split_mount(nss["mounts"], target)
        msg = f"preflight capability check returned 403, please ensure client's policies grant access to path \"{target.rstrip('/')}/\""
        if m is None:
            raise VaultError(403, [msg])
        if "root" not in te["policies"] and not v.acl_for(te).any_under(req.ns[len(te["ns"]):] + mp):
            raise VaultError(403, [msg])
        data = _public(m)
        data["path"] = mp
        return ok(data, mount_type="system")

    # ------------------------------------------------------------ policies
    for base, legacy in (("sys/policies/acl", False), ("sys/policy", True)):
        if rp == base:
            if meth not in ("GET", "LIST", "HEAD"):
                raise _unsupported_op()
            names = sorted(set(nss["policies"]) | {"root"})
            if legacy:
                return _with_top({"keys": names, "policies": names}, mount_type="system")
            return ok({"keys": names, "policies": names}, mount_type="system")
        if rp.startswith(base + "/"):
            name = rp[len(base) + 1:].lower()
            if meth in ("GET", "HEAD"):
                if name == "root":
                    text = ""
                elif name in nss["policies"]:
                    text = nss["policies"][name]
                else:
                    raise notfound()
                if legacy:
                    return _with_top({"name": name, "rules": text}, mount_type="system")
                return ok({"name": name, "policy": text}, mount_type="system")
            if meth in ("POST", "PUT"):
                text = d.get("policy") if d.get("policy") is not None else d.get("rules")
                if not text:
                    raise bad("'policy' parameter not supplied or empty")
                if name == "root":
                    raise bad("cannot update \"root\" policy")
                if name == "response-wrapping":
                    raise bad("cannot update \"response-wrapping\" policy")
                try:
                    pol.parse_policy(text)
                except pol.PolicyError as e:
                    raise bad(f"failed to parse policy: {e}")
                nss["policies"][name] = text
                v._acl_cache.clear()
                return Resp(204)
            if meth == "DELETE":
                if name == "root":
                    raise bad("cannot delete \"root\" policy")
                if name == "default":
                    raise bad("cannot delete \"default\" policy")
                nss["policies"].pop(name, None)
                return Resp(204)
            raise _unsupported_op()

    # ------------------------------------------------------------ capabilities
    if rp in ("sys/capabilities-self", "sys/capabilities", "sys/capabilities-accessor"):
        if meth not in ("POST", "PUT"):
            raise _unsupported_op()
        paths = d.get("paths", d.get("path"))
        if isinstance(paths, str):
            paths = [p for p in paths.split(",") if p]
        if not paths:
            raise bad("missing paths")
        if rp == "sys/capabilities-self":
            te = req.token
        elif rp == "sys/capabilities":
            te = v._valid_token(d.get("token", "") or "")
            if te is None:
                raise bad("invalid token")
        else:
            te = v._by_accessor(d.get("accessor", "") or "")
            if te is None:
                raise bad("invalid accessor")
        data = {}
        for p in paths:
            data[p] = v.caps_of(te, req.ns, p.lstrip("/"))
        if len(paths) == 1:
            data["capabilities"] = data[paths[0]]
        return _with_top(data, mount_type="system")

    # ------------------------------------------------------------ wrapping
    if rp == "sys/wrapping/lookup":
        tok = d.get("token") or v._token_from_headers(req)
        wt = v._wrapping_token(tok)
        return ok({"creation_path": wt["path"], "creation_time": rfc3339(wt["creation_time"]),
                   "creation_ttl": wt["ttl"]}, mount_type="system")
    if rp == "sys/wrapping/wrap":
        if meth not in ("POST", "PUT"):
            raise _unsupported_op()
        if not req.headers.get("x-vault-wrap-ttl"):
            req.headers["x-vault-wrap-ttl"] = "300"
        return ok(copy.deepcopy(d), mount_type="system")
    if rp == "sys/wrapping/rewrap":
        wt = v._wrapping_token(d.get("token", ""))
        stored = wt["wrapping"]
        v._revoke(wt["id"])
        r = Resp(200, stored)
        if not req.headers.get("x-vault-wrap-ttl"):
            req.headers["x-vault-wrap-ttl"] = str(wt["ttl"])
        return r

    # ------------------------------------------------------------ namespaces (enterprise API)
    if rp == "sys/namespaces":
        if meth not in ("GET", "LIST"):
            raise _unsupported_op()
        kids = sorted(n[len(req.ns):] for n in v.st["namespaces"]
                      if n.startswith(req.ns) and n != req.ns and n[len(req.ns):].count("/") == 1)
        if not kids:
            raise notfound()
        return ok({"keys": kids, "key_info": {k: {"id": v.st["namespaces"][req.ns + k]["id"], "path": req.ns + k,
                                                  "custom_metadata": {}} for k in kids}}, mount_type="system")
    if rp.startswith("sys/namespaces/"):
        name = _norm_ns(rp[len("sys/namespaces/"):])
        full = req.ns + name
        if meth in ("POST", "PUT"):
            v._create_ns(full)
        elif meth == "DELETE":
            for n in list(v.st["namespaces"]):
                if n.startswith(full):
                    del v.st["namespaces"][n]
            return Resp(204)
        if full not in v.st["namespaces"]:
            raise notfound()
        return ok({"id": v.st["namespaces"][full]["id"], "path": full, "custom_metadata": {}}, mount_type="system")

    if rp == "sys/version-history":
        return ok({"keys": [VERSION], "key_info": {VERSION: {"build_date": "2024-02-28T17:07:34Z",
                                                            "previous_version": None,
                                                            "timestamp_installed": rfc3339()}}})
    raise VaultError(404, [UNSUPPORTED_PATH])


def _upgrade_kv(m):
    old = m["store"].get("kv", {})
    now = rfc3339()
    keys = m["store"].setdefault("keys", {})
    for k, val in old.items():
        keys[k] = {"versions": {"1": {"data": val, "created_time": now, "deletion_time": "", "deletion_ts": None,
                                      "destroyed": False}},
                   "current_version": 1, "oldest_version": 0, "max_versions": 0, "cas_required": False,
                   "delete_version_after": 0, "custom_metadata": None, "created_time": now, "updated_time": now}
    m["store"].pop("kv", None)
    m["options"] = dict(m.get("options") or {}, version="2")
