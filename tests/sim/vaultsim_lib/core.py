"""The simulated Vault: state, routing, ACL enforcement and the endpoint handlers.

Nothing here touches sockets: handle() takes a parsed request and returns
(status, headers, body).  server.py does HTTP/TLS and fault injection.
"""
import copy
import json
import os
import threading
import time

from . import policy as pol
from .util import (SYS_DEFAULT_TTL, SYS_MAX_TTL, DurationError, go_duration,
                   new_token, new_uuid, parse_duration, rand_b62, rfc3339)

VERSION = "1.15.6"
PERM_DENIED = "1 error occurred:\n\t* permission denied\n\n"
INVALID_TOKEN = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"
UNSUPPORTED_PATH = "1 error occurred:\n\t* unsupported path\n\n"
UNSUPPORTED_OP = "1 error occurred:\n\t* unsupported operation\n\n"
WRAP_INVALID = "wrapping token is not valid or does not exist"
KV2_INVALID_PATH = ("Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate "
                    "API endpoints to use. If using the Vault CLI, use 'vault kv get' for this operation.")


class VaultError(Exception):
    def __init__(self, status, errors=None, body=None, headers=None):
        super().__init__(status, errors)
        self.status = status
        self.errors = [] if errors is None else errors
        self.body = body
        self.headers = headers or {}


def bad(msg):
    return VaultError(400, [msg])


def denied():
    return VaultError(403, [PERM_DENIED])


def notfound():
    return VaultError(404, [])


class Resp:
    def __init__(self, status=200, body=None, headers=None, wrapped_accessor=""):
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.wrapped_accessor = wrapped_accessor


def envelope(data=None, auth=None, warnings=None, mount_type="", lease_duration=0, renewable=False,
             lease_id=""):
    return {"request_id": new_uuid(), "lease_id": lease_id, "renewable": renewable,
            "lease_duration": lease_duration, "data": data, "wrap_info": None,
            "warnings": warnings or None, "auth": auth, "mount_type": mount_type}


def ok(data=None, **kw):
    return Resp(200, envelope(data, **kw))


NO_CONTENT = None  # placeholder; use Resp(204)


class Request:
    def __init__(self, method, path, data, query, headers, peer_cert=None, remote="127.0.0.1"):
        self.method = method
        self.path = path          # relative to the namespace, no leading slash
        self.data = data
        self.query = query
        self.headers = headers
        self.peer_cert = peer_cert
        self.remote = remote
        self.ns = ""
        self.token = None
        self.nsstate = None
        self.mount = None
        self.mount_path = ""


def _mount(mtype, options, desc):
    return {"type": mtype, "description": desc, "accessor": f"{mtype}_{rand_b62(8).lower()}",
            "uuid": new_uuid(), "config": {"default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": False},
            "options": options, "local": False, "seal_wrap": False, "external_entropy_access": False,
            "plugin_version": "", "running_plugin_version": f"v{VERSION}+builtin.vault", "running_sha256": "",
            "store": {}}


def _auth_mount(mtype, desc):
    m = _mount(mtype, None, desc)
    m["accessor"] = f"auth_{mtype}_{rand_b62(8).lower()}"
    if mtype == "token":
        m["config"]["token_type"] = "default-service"
    return m


def _new_ns():
    return {
        "mounts": {
            "cubbyhole/": _mount("cubbyhole", None, "per-token private secret storage"),
            "identity/": _mount("identity", None, "identity store"),
            "secret/": _mount("kv", {"version": "2"}, "key/value secret storage"),
            "sys/": _mount("system", None, "system endpoints used for control, policy and debugging"),
        },
        "auth": {"token/": _auth_mount("token", "token based credentials")},
        "policies": {"default": pol.DEFAULT_POLICY},
        "id": rand_b62(5),
    }


def _public(m):
    return {k: v for k, v in m.items() if k != "store"}


def _split_mount(table, path):
    """Longest mount prefix of path in table -> (mount_path, mount) or (None, None)."""
    best = None
    p = path if path.endswith("/") else path + "/"
    for mp in table:
        if p.startswith(mp) and (best is None or len(mp) > len(best)):
            best = mp
    return (best, table[best]) if best else (None, None)


def _norm_ns(ns):
    ns = (ns or "").strip().strip("/")
    return ns + "/" if ns else ""


def _merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge_patch(out.get(k), v)
    return out


class Vault:
    def __init__(self, state_dir, root_token):
        self.lock = threading.RLock()
        self.state_dir = state_dir
        self.state_file = os.path.join(state_dir, "vaultsim-state.json")
        self.sealed = False
        self.root_token = root_token
        self._acl_cache = {}
        if os.path.exists(self.state_file):
            with open(self.state_file) as f:
                self.st = json.load(f)
        else:
            self.st = {"tokens": {}, "namespaces": {"": _new_ns()}, "cluster_id": new_uuid(),
                       "cluster_name": "vault-cluster-" + rand_b62(8).lower()}
        if root_token not in self.st["tokens"]:
            self._store_token({"id": root_token, "accessor": rand_b62(24), "policies": ["root"],
                               "parent": "", "ns": "", "creation_time": time.time(), "ttl": 0,
                               "expire_at": None, "explicit_max_ttl": 0, "period": 0, "num_uses": 0,
                               "orphan": True, "renewable": False, "path": "auth/token/root",
                               "display_name": "root", "meta": None, "type": "service",
                               "root_file": True, "entity_id": ""})
        self.save()

    # ----------------------------------------------------------------- persistence
    def save(self):
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.st, f)
        os.replace(tmp, self.state_file)

    # ----------------------------------------------------------------- tokens
    def _store_token(self, te):
        self.st["tokens"][te["id"]] = te

    def _valid_token(self, tid):
        te = self.st["tokens"].get(tid)
        if not te:
            return None
        if te.get("expire_at") is not None and te["expire_at"] <= time.time():
            self._revoke(tid)
            return None
        return te

    def _by_accessor(self, acc):
        for te in list(self.st["tokens"].values()):
            if te["accessor"] == acc:
                return self._valid_token(te["id"])
        return None

    def _revoke(self, tid, orphan_children=False):
        te = self.st["tokens"].pop(tid, None)
        if not te:
            return
        for child in [t for t in self.st["tokens"].values() if t.get("parent") == tid]:
            if orphan_children:
                child["parent"] = ""
                child["orphan"] = True
            else:
                self._revoke(child["id"])
        for ns in self.st["namespaces"].values():
            ns["mounts"].get("cubbyhole/", {}).get("store", {}).pop(tid, None)

    def create_token(self, ns, policies, ttl=0, max_ttl=0, explicit_max_ttl=0, period=0, num_uses=0,
                     parent="", renewable=True, path="auth/token/create", display_name="token", meta=None,
                     no_default=False, entity_id="", token_type="service", extra=None):
        pols = sorted(set(p.strip().lower() for p in policies if p.strip()))
        if "root" in pols:
            pols = ["root"]
        elif not no_default and "default" not in pols:
            pols = sorted(pols + ["default"])
        now = time.time()
        sysmax = max_ttl if max_ttl > 0 else SYS_MAX_TTL
        if explicit_max_ttl > 0 and explicit_max_ttl < sysmax:
            sysmax = explicit_max_ttl
        if period > 0:
            eff = period if explicit_max_ttl <= 0 else min(period, explicit_max_ttl)
        elif ttl > 0:
            eff = min(ttl, sysmax)
        elif pols == ["root"] and explicit_max_ttl <= 0:
            eff = 0
        else:
            eff = min(SYS_DEFAULT_TTL, sysmax)
        te = {"id": new_token("hvs." if token_type == "service" else "hvb."), "accessor": rand_b62(24),
              "policies": pols, "parent": parent, "ns": ns, "creation_time": now, "ttl": eff,
              "expire_at": (now + eff) if eff > 0 else None, "explicit_max_ttl": explicit_max_ttl,
              "max_ttl": max_ttl, "period": period, "num_uses": num_uses, "orphan": not parent,
              "renewable": bool(renewable) and eff > 0, "path": path, "display_name": display_name,
              "meta": meta or None, "type": token_type, "entity_id": entity_id}
        if extra:
            te.update(extra)
        self._store_token(te)
        return te

    def auth_block(self, te, mount_type=""):
        return {"client_token": te["id"], "accessor": te["accessor"], "policies": te["policies"],
                "token_policies": te["policies"], "metadata": te.get("meta"),
                "lease_duration": self._remaining(te), "renewable": te["renewable"],
                "entity_id": te.get("entity_id", ""), "token_type": te.get("type", "service"),
                "orphan": te["orphan"], "mfa_requirement": None, "num_uses": te["num_uses"]}

    @staticmethod
    def _remaining(te):
        if te.get("expire_at") is None:
            return 0
        return max(0, int(round(te["expire_at"] - time.time())))

    def token_lookup_data(self, te, show_id=True):
        d = {"accessor": te["accessor"], "creation_time": int(te["creation_time"]),
             "creation_ttl": te["ttl"], "display_name": te["display_name"], "entity_id": te.get("entity_id", ""),
             "expire_time": rfc3339(te["expire_at"]) if te.get("expire_at") is not None else None,
             "explicit_max_ttl": te.get("explicit_max_ttl", 0), "id": te["id"] if show_id else "",
             "issue_time": rfc3339(te["creation_time"]), "meta": te.get("meta"), "num_uses": te["num_uses"],
             "orphan": te["orphan"], "path": te["path"], "policies": te["policies"],
             "renewable": te["renewable"], "ttl": self._remaining(te), "type": te.get("type", "service")}
        if te.get("period"):
            d["period"] = te["period"]
        if te.get("last_renewal"):
            d["last_renewal"] = rfc3339(te["last_renewal"])
            d["last_renewal_time"] = int(te["last_renewal"])
        if te.get("role"):
            d["role"] = te["role"]
        return d

    def renew(self, te, increment):
        if not te["renewable"]:
            raise bad("lease is not renewable")
        now = time.time()
        warnings = []
        start = te["creation_time"]
        maxttl = te.get("max_ttl") or SYS_MAX_TTL
        exp_max = te.get("explicit_max_ttl") or 0
        if exp_max and exp_max < maxttl:
            maxttl = exp_max
        if te.get("period"):
            ttl = te["period"]
            if exp_max:
                limit = start + exp_max
                if now + ttl > limit:
                    capped = int(limit - now)
                    warnings.append(f"TTL of \"{go_duration(ttl)}\" exceeded the effective max_ttl of "
                                    f"\"{go_duration(capped)}\"; TTL value is capped accordingly")
                    ttl = capped
        else:
            ttl = increment if increment > 0 else (te["ttl"] or SYS_DEFAULT_TTL)
            limit = start + maxttl
            if limit < now:
                raise bad("past the max TTL, cannot renew")
            if now + ttl > limit:
                capped = int(limit - now)
                warnings.append(f"TTL of \"{go_duration(ttl)}\" exceeded the effective max_ttl of "
                                f"\"{go_duration(capped)}\"; TTL value is capped accordingly")
                ttl = capped
        if ttl <= 0:
            raise bad("past the max TTL, cannot renew")
        te["expire_at"] = now + ttl
        te["last_renewal"] = now
        return warnings

    # ----------------------------------------------------------------- ACL
    def acl_for(self, te):
        ns = self.st["namespaces"].get(te["ns"], {})
        texts = []
        for p in te["policies"]:
            if p == "response-wrapping":
                texts.append(pol.RESPONSE_WRAPPING_POLICY)
            elif p in ns.get("policies", {}):
                texts.append(ns["policies"][p])
        key = tuple(texts)
        acl = self._acl_cache.get(key)
        if acl is None:
            acl = pol.ACL(texts)
            if len(self._acl_cache) > 256:
                self._acl_cache.clear()
            self._acl_cache[key] = acl
        return acl

    def _policy_path(self, req, te, path=None):
        """Path relative to the token's namespace."""
        full = req.ns + (req.path if path is None else path)
        return full[len(te["ns"]):]

    def caps_of(self, te, req_ns, path):
        if "root" in te["policies"]:
            return ["root"]
        full = req_ns + path
        if not full.startswith(te["ns"]):
            return ["deny"]
        caps = self.acl_for(te).capabilities(full[len(te["ns"]):])
        if not caps or "deny" in caps:
            return ["deny"]
        return sorted(caps)

    # ----------------------------------------------------------------- entry point
    def handle(self, method, path, query, headers, data, peer_cert=None, remote="127.0.0.1"):
        """path: after /v1/.  Returns Resp."""
        with self.lock:
            try:
                resp = self._handle(method, path, query, headers, data, peer_cert, remote)
            except VaultError as e:
                body = e.body if e.body is not None else {"errors": e.errors}
                resp = Resp(e.status, body, e.headers)
            except (DurationError, ValueError, TypeError) as e:
                resp = Resp(400, {"errors": [str(e)]})
            if method not in ("GET", "HEAD", "LIST") or getattr(self, "_dirty", False):
                self._dirty = False
                self.save()
            return resp

    def _resolve_ns(self, hdr_ns, path):
        full = _norm_ns(hdr_ns) + path
        if hdr_ns and _norm_ns(hdr_ns) not in self.st["namespaces"]:
            self._create_ns(_norm_ns(hdr_ns))
        best = ""
        for ns in self.st["namespaces"]:
            if ns and full.startswith(ns) and len(ns) > len(best):
                best = ns
        return best, full[len(best):]

    def _create_ns(self, ns):
        parts = ns.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            p = "/".join(parts[:i]) + "/"
            if p not in self.st["namespaces"]:
                self.st["namespaces"][p] = _new_ns()
                self._dirty = True

    UNAUTH_EXACT = {"sys/health", "sys/seal-status", "sys/unseal", "sys/init", "sys/leader",
                    "sys/wrapping/lookup", "sys/internal/ui/mounts"}
    SEALED_OK = {"sys/health", "sys/seal-status", "sys/unseal", "sys/init", "sys/leader"}

    def _handle(self, method, path, query, headers, data, peer_cert, remote):
        path = path.lstrip("/")
        ns, rel = self._resolve_ns(headers.get("x-vault-namespace", ""), path)
        if self.sealed and rel.rstrip("/") not in self.SEALED_OK:
            raise VaultError(503, ["Vault is sealed"])
        req = Request(method, rel, data, query, headers, peer_cert, remote)
        req.ns = ns
        req.nsstate = self.st["namespaces"][ns]
        rp = rel.rstrip("/")
        unauth = rp in self.UNAUTH_EXACT
        if rp.startswith("auth/"):
            mp, m = _split_mount(req.nsstate["auth"], rp[5:])
            if m and m["type"] != "token":
                sub = (rp[5:] + "/")[len(mp):].rstrip("/")
                if sub == "login" or sub.startswith("login/"):
                    unauth = True
        if rp == "sys/wrapping/unwrap":
            return self.sys_unwrap(req)
        if not unauth:
            te = self._authenticate(req)
            req.token = te
            self._authorize(req, te)
        resp = self._route(req)
        if req.token is not None and req.token.get("num_uses", 0) > 0 and req.token["id"] in self.st["tokens"]:
            req.token["num_uses"] -= 1
            self._dirty = True
            if req.token["num_uses"] == 0:
                req.token["num_uses"] = -1   # marks "used up"
                self._revoke(req.token["id"])
        wrap = headers.get("x-vault-wrap-ttl")
        if wrap and resp.status == 200 and isinstance(resp.body, dict) and "request_id" in resp.body \
                and (resp.body.get("data") is not None or resp.body.get("auth") is not None):
            resp = self._wrap(req, resp, wrap)
        return resp

    def _token_from_headers(self, req):
        tok = req.headers.get("x-vault-token", "")
        if not tok:
            a = req.headers.get("authorization", "")
            if a.lower().startswith("bearer "):
                tok = a[7:].strip()
        return tok

    def _authenticate(self, req):
        tok = self._token_from_headers(req)
        if not tok:
            raise denied()
        te = self._valid_token(tok)
        if te is None or te.get("num_uses", 0) < 0:
            raise VaultError(403, [INVALID_TOKEN])
        if not req.ns.startswith(te["ns"]):
            raise VaultError(403, [INVALID_TOKEN])
        return te

    SUDO_PREFIXES = ("sys/auth/", "sys/audit", "sys/raw", "sys/rotate", "sys/seal", "sys/step-down",
                     "auth/token/accessors", "auth/token/revoke-orphan", "sys/mounts/cubbyhole")

    def _operation(self, req):
        m = req.method
        if m in ("GET", "HEAD"):
            return "read"
        if m == "LIST":
            return "list"
        if m == "DELETE":
            return "delete"
        if m == "PATCH":
            return "patch"
        return "create" if not self._exists(req) else "update"

    def _authorize(self, req, te):
        rp = req.path.rstrip("/")
        if rp.startswith("sys/internal/ui/mounts/"):
            return   # checked by the handler (preflight)
        if "root" in te["policies"]:
            return
        op = self._operation(req)
        acl = self.acl_for(te)
        ppath = self._policy_path(req, te)
        caps = acl.capabilities(ppath)
        if "deny" in caps:
            raise denied()
        if op == "create" and "create" not in caps:
            raise denied()
        if op != "create" and op not in caps:
            raise denied()
        if any(rp == p.rstrip("/") or rp.startswith(p) for p in self.SUDO_PREFIXES) and "sudo" not in caps:
            raise denied()

    def _exists(self, req):
        """Vault's ExistenceCheck: decides create vs update for POST/PUT."""
        rp = req.path.rstrip("/")
        nss = req.nsstate
        for pfx in ("sys/policies/acl/", "sys/policy/"):
            if rp.startswith(pfx):
                return rp[len(pfx):].lower() in nss["policies"]
        if rp.startswith("auth/"):
            mp, m = _split_mount(nss["auth"], rp[5:])
            if not m:
                return False
            sub = (rp[5:] + "/")[len(mp):].rstrip("/")
            parts = sub.split("/")
            if len(parts) == 2 and parts[0] in ("role", "certs"):
                return parts[1].lower() in m["store"].get("roles", {})
            return True
        if rp.startswith("sys/"):
            return True
        mp, m = _split_mount(nss["mounts"], rp)
        if not m:
            return True
        sub = (rp + "/")[len(mp):].rstrip("/")
        if m["type"] == "kv" and str((m.get("options") or {}).get("version", "1")) == "2":
            for pfx in ("data/", "metadata/"):
                if sub.startswith(pfx):
                    return sub[len(pfx):] in m["store"].get("keys", {})
            return True
        if m["type"] == "kv":
            return sub in m["store"].get("kv", {})
        if m["type"] == "cubbyhole":
            tok = self._token_from_headers(req)
            return sub in m["store"].get(tok, {})
        return True

    # ----------------------------------------------------------------- routing
    def _route(self, req):
        rp = req.path
        if rp.startswith("sys/") or rp == "sys":
            from .sysapi import handle_sys
            return handle_sys(self, req)
        if rp.startswith("auth/"):
            mp, m = _split_mount(req.nsstate["auth"], rp[5:].rstrip("/"))
            if not m:
                raise VaultError(404, [f"no handler for route \"{rp}\". route entry not found."])
            sub = (rp[5:].rstrip("/") + "/")[len(mp):].rstrip("/")
            req.mount, req.mount_path = m, "auth/" + mp
            from . import auth
            return auth.handle_auth(self, req, m, sub)
        mp, m = _split_mount(req.nsstate["mounts"], rp.rstrip("/"))
        if not m:
            raise VaultError(404, [f"no handler for route \"{rp}\". route entry not found."])
        sub = rp[len(mp):] if rp.startswith(mp) else ""
        req.mount, req.mount_path = m, mp
        from . import kv
        if m["type"] == "kv":
            if str((m.get("options") or {}).get("version", "1")) == "2":
                return kv.handle_kv2(self, req, m, sub)
            return kv.handle_kv1(self, req, m, sub, m["store"].setdefault("kv", {}), "kv", 2764800)
        if m["type"] == "cubbyhole":
            tok = req.token["id"]
            return kv.handle_kv1(self, req, m, sub, m["store"].setdefault(tok, {}), "cubbyhole", 0)
        raise VaultError(404, [UNSUPPORTED_PATH])

    # ----------------------------------------------------------------- wrapping
    def _wrap(self, req, resp, wrap_hdr):
        try:
            ttl = parse_duration(wrap_hdr)
        except DurationError:
            raise bad("error parsing wrap TTL")
        if ttl <= 0:
            return resp
        te = self.create_token(req.ns, ["response-wrapping"], ttl=ttl, num_uses=1, parent="",
                               renewable=False, path=req.path.rstrip("/"), display_name="",
                               no_default=True, extra={"wrapping": resp.body})
        te["renewable"] = False
        wi = {"token": te["id"], "accessor": te["accessor"], "ttl": ttl,
              "creation_time": rfc3339(te["creation_time"]), "creation_path": req.path.rstrip("/"),
              "wrapped_accessor": resp.wrapped_accessor}
        body = envelope(None)
        body["wrap_info"] = wi
        body["mount_type"] = ""
        return Resp(200, body)

    def _wrapping_token(self, tid):
        te = self._valid_token(tid) if tid else None
        if te is None or "wrapping" not in te:
            raise bad(WRAP_INVALID)
        return te

    def sys_unwrap(self, req):
        body_tok = (req.data or {}).get("token") if isinstance(req.data, dict) else None
        hdr_tok = self._token_from_headers(req)
        if body_tok:
            te_caller = self._authenticate(req)
            req.token = te_caller
            if "wrapping" not in te_caller:
                self._authorize(req, te_caller)
            wt = self._wrapping_token(body_tok)
        else:
            if not hdr_tok:
                raise denied()
            wt = self._wrapping_token(hdr_tok)
        stored = copy.deepcopy(wt["wrapping"])
        self._revoke(wt["id"])
        self._dirty = True
        stored["request_id"] = new_uuid()
        stored["wrap_info"] = None
        return Resp(200, stored)
