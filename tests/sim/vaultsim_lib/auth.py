"""Auth methods: token, approle, kubernetes, jwt/oidc (JWT login only), cert, userpass."""
import fnmatch
import hmac
import json
import time

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from . import jwtv
from .core import (UNSUPPORTED_OP, UNSUPPORTED_PATH, Resp, VaultError, bad, denied, notfound, ok)
from .util import as_bool, as_int, as_list, new_uuid, parse_duration, rfc3339


def _unsupported_op():
    return VaultError(405, [UNSUPPORTED_OP])


def _unsupported_path():
    return VaultError(404, [UNSUPPORTED_PATH])


def handle_auth(v, req, m, sub):
    t = m["type"]
    if t == "token":
        return token_backend(v, req, m, sub)
    if t == "approle":
        return approle_backend(v, req, m, sub)
    if t == "kubernetes":
        return kubernetes_backend(v, req, m, sub)
    if t in ("jwt", "oidc"):
        return jwt_backend(v, req, m, sub)
    if t == "cert":
        return cert_backend(v, req, m, sub)
    if t == "userpass":
        return userpass_backend(v, req, m, sub)
    raise _unsupported_path()


def _data(req):
    d = req.data if isinstance(req.data, dict) else {}
    if req.method in ("GET", "LIST", "HEAD"):
        d = dict(req.query, **d)
    return d


# ---------------------------------------------------------------- shared token fields
TOKEN_FIELDS_DEFAULT = {"token_ttl": 0, "token_max_ttl": 0, "token_policies": [], "token_period": 0,
                        "token_num_uses": 0, "token_explicit_max_ttl": 0, "token_no_default_policy": False,
                        "token_type": "default", "token_bound_cidrs": []}


def parse_token_fields(role, d):
    for k, val in TOKEN_FIELDS_DEFAULT.items():
        role.setdefault(k, val if not isinstance(val, list) else [])
    if "token_policies" in d:
        role["token_policies"] = as_list(d["token_policies"])
    elif "policies" in d:
        role["token_policies"] = as_list(d["policies"])
    for f, alias in (("token_ttl", "ttl"), ("token_max_ttl", "max_ttl"), ("token_period", "period"),
                     ("token_explicit_max_ttl", None)):
        if f in d:
            role[f] = parse_duration(d[f])
        elif alias and alias in d:
            role[f] = parse_duration(d[alias])
    if "token_num_uses" in d:
        role["token_num_uses"] = as_int(d["token_num_uses"])
    if "token_no_default_policy" in d:
        role["token_no_default_policy"] = as_bool(d["token_no_default_policy"])
    if "token_type" in d:
        role["token_type"] = d["token_type"] or "default"
    if "token_bound_cidrs" in d:
        role["token_bound_cidrs"] = as_list(d["token_bound_cidrs"])
    if role["token_max_ttl"] and role["token_ttl"] > role["token_max_ttl"]:
        raise bad("\"token_ttl\" value must be less than \"token_max_ttl\" value")


def token_fields_out(role):
    out = {k: role.get(k, dv) for k, dv in TOKEN_FIELDS_DEFAULT.items()}
    out["policies"] = out["token_policies"]
    out["period"] = out["token_period"]
    return out


def issue_login(v, req, m, role, display_name, meta, entity_key, mount_type):
    ent = m["store"].setdefault("entities", {})
    if entity_key not in ent:
        ent[entity_key] = new_uuid()
    max_ttl = role.get("token_max_ttl") or m["config"].get("max_lease_ttl") or 0
    ttl = role.get("token_ttl") or m["config"].get("default_lease_ttl") or 0
    te = v.create_token(req.ns, role.get("token_policies") or [], ttl=ttl, max_ttl=max_ttl,
                        explicit_max_ttl=role.get("token_explicit_max_ttl") or 0,
                        period=role.get("token_period") or 0, num_uses=role.get("token_num_uses") or 0,
                        parent="", renewable=True, path=req.mount_path + "login",
                        display_name=display_name, meta=meta,
                        no_default=role.get("token_no_default_policy", False), entity_id=ent[entity_key])
    return ok(None, auth=v.auth_block(te), mount_type=mount_type)


def _roles(m, key="roles"):
    return m["store"].setdefault(key, {})


def _list_resp(keys, mount_type):
    if not keys:
        raise notfound()
    return ok({"keys": sorted(keys)}, mount_type=mount_type)


# ---------------------------------------------------------------- token
def token_backend(v, req, m, sub):
    d = _data(req)
    meth = req.method
    caller = req.token
    if sub in ("create", "create-orphan") or sub.startswith("create/"):
        if meth not in ("POST", "PUT"):
            raise _unsupported_op()
        is_root = "root" in caller["policies"]
        orphan = sub == "create-orphan" or as_bool(d.get("no_parent"))
        if sub != "create-orphan" and as_bool(d.get("no_parent")) and not is_root:
            caps = v.caps_of(caller, req.ns, req.path)
            if "sudo" not in caps:
                raise bad("root or sudo privileges required to create orphan token")
        if "policies" in d and d["policies"] is not None:
            policies = as_list(d["policies"])
        else:
            policies = [p for p in caller["policies"]]
        if not is_root:
            parent_set = set(caller["policies"])
            for p in policies:
                if p != "default" and p not in parent_set:
                    raise bad("child policies must be subset of parent")
        if d.get("id") and not is_root:
            raise bad("root or sudo privileges required to specify token id")
        dn = d.get("display_name")
        display = "token" + ("-" + str(dn).lower().replace(" ", "-") if dn else "")
        ttl = parse_duration(d.get("ttl") or d.get("lease"))
        ttype = d.get("type") or "service"
        if ttype not in ("service", "batch"):
            raise bad(f"unsupported token type \"{ttype}\"")
        te = v.create_token(req.ns, policies, ttl=ttl, explicit_max_ttl=parse_duration(d.get("explicit_max_ttl")),
                            period=parse_duration(d.get("period")), num_uses=as_int(d.get("num_uses")),
                            parent="" if orphan else caller["id"], renewable=as_bool(d.get("renewable"), True),
                            path="auth/token/" + sub, display_name=display, meta=d.get("meta"),
                            no_default=as_bool(d.get("no_default_policy")), token_type=ttype)
        if d.get("id"):
            v.st["tokens"].pop(te["id"])
            te["id"] = str(d["id"])
            v.st["tokens"][te["id"]] = te
        r = ok(None, auth=v.auth_block(te), mount_type="token")
        r.wrapped_accessor = te["accessor"]
        return r
    if sub == "lookup-self":
        return ok(v.token_lookup_data(caller), mount_type="token")
    if sub == "lookup":
        tok = d.get("token")
        if not tok:
            if meth == "GET":
                return ok(v.token_lookup_data(caller), mount_type="token")
            raise bad("missing token")
        te = v._valid_token(tok)
        if te is None:
            raise VaultError(403, ["bad token"])
        return ok(v.token_lookup_data(te), mount_type="token")
    if sub == "lookup-accessor":
        te = v._by_accessor(d.get("accessor") or "")
        if te is None:
            raise bad("invalid accessor")
        return ok(v.token_lookup_data(te, show_id=False), mount_type="token")
    if sub in ("renew-self", "renew", "renew-accessor"):
        if meth not in ("POST", "PUT"):
            raise _unsupported_op()
        if sub == "renew-self":
            te = caller
        elif sub == "renew":
            if not d.get("token"):
                raise bad("missing token")
            te = v._valid_token(d["token"])
            if te is None:
                raise bad("invalid token")
        else:
            te = v._by_accessor(d.get("accessor") or "")
            if te is None:
                raise bad("invalid accessor")
        inc = parse_duration(d.get("increment"))
        warnings = v.renew(te, inc)
        auth = v.auth_block(te)
        if sub == "renew-accessor":
            auth["client_token"] = ""
        return ok(None, auth=auth, warnings=warnings, mount_type="token")
    if sub in ("revoke-self", "revoke", "revoke-accessor", "revoke-orphan"):
        if meth not in ("POST", "PUT"):
            raise _unsupported_op()
        if sub == "revoke-self":
            v._revoke(caller["id"])
        elif sub == "revoke-accessor":
            te = v._by_accessor(d.get("accessor") or "")
            if te is None:
                raise bad("invalid accessor")
            v._revoke(te["id"])
        else:
            if not d.get("token"):
                raise bad("missing token")
            if v.st["tokens"].get(d["token"]):
                v._revoke(d["token"], orphan_children=(sub == "revoke-orphan"))
        return Resp(204)
    if sub == "accessors":
        if meth != "LIST":
            raise _unsupported_op()
        return _list_resp([te["accessor"] for te in v.st["tokens"].values() if te["ns"] == req.ns], "token")
    raise _unsupported_path()


# ---------------------------------------------------------------- approle
def approle_backend(v, req, m, sub):
    d = _data(req)
    meth = req.method
    roles = _roles(m)
    sids = m["store"].setdefault("secret_ids", {})
    parts = sub.split("/")
    if sub == "login":
        if meth not in ("POST", "PUT"):
            raise _unsupported_op()
        role_id = d.get("role_id")
        if not role_id:
            raise bad("missing role_id")
        name = next((n for n, r in roles.items() if r["role_id"] == role_id), None)
        if name is None:
            raise bad("invalid role or secret ID")
        role = roles[name]
        meta = {"role_name": name}
        if role.get("bind_secret_id", True):
            sid = d.get("secret_id")
            if not sid:
                raise bad("missing secret_id")
            ent = sids.get(sid)
            if ent is None or ent["role"] != name:
                raise bad("invalid role or secret ID")
            if ent.get("expiration") and ent["expiration"] <= time.time():
                del sids[sid]
                raise bad("invalid role or secret ID")
            if ent.get("cidr_list") and not _cidr_ok(req.remote, ent["cidr_list"]):
                raise bad(f"source address \"{req.remote}\" unauthorized by CIDR restrictions on the secret ID")
            if ent["num_uses"] > 0:
                ent["num_uses"] -= 1
                if ent["num_uses"] == 0:
                    del sids[sid]
            if ent.get("metadata"):
                meta.update(ent["metadata"])
        if role.get("secret_id_bound_cidrs") and not _cidr_ok(req.remote, role["secret_id_bound_cidrs"]):
            raise bad(f"source address \"{req.remote}\" unauthorized by CIDR restrictions on the role: "
                      f"{', '.join(role['secret_id_bound_cidrs'])}")
        return issue_login(v, req, m, role, "approle", meta, role_id, "approle")
    if parts[0] == "role":
        if len(parts) == 1:
            if meth != "LIST":
                raise _unsupported_op()
            return _list_resp(list(roles), "approle")
        name = parts[1].lower()
        role = roles.get(name)
        rest = "/".join(parts[2:])
        if rest == "":
            if meth in ("GET", "HEAD"):
                if role is None:
                    raise notfound()
                out = {"bind_secret_id": role["bind_secret_id"], "local_secret_ids": False,
                       "secret_id_bound_cidrs": role.get("secret_id_bound_cidrs") or None,
                       "secret_id_num_uses": role["secret_id_num_uses"], "secret_id_ttl": role["secret_id_ttl"]}
                out.update(token_fields_out(role))
                return ok(out, mount_type="approle")
            if meth in ("POST", "PUT"):
                new = role is None
                r = dict(role or {"role_id": new_uuid(), "bind_secret_id": True, "secret_id_num_uses": 0,
                                  "secret_id_ttl": 0, "secret_id_bound_cidrs": []})
                if "bind_secret_id" in d:
                    r["bind_secret_id"] = as_bool(d["bind_secret_id"])
                if "secret_id_num_uses" in d:
                    r["secret_id_num_uses"] = as_int(d["secret_id_num_uses"])
                    if r["secret_id_num_uses"] < 0:
                        raise bad("secret_id_num_uses cannot be negative")
                if "secret_id_ttl" in d:
                    r["secret_id_ttl"] = parse_duration(d["secret_id_ttl"])
                if "secret_id_bound_cidrs" in d:
                    r["secret_id_bound_cidrs"] = as_list(d["secret_id_bound_cidrs"])
                if "role_id" in d and d["role_id"]:
                    r["role_id"] = str(d["role_id"])
                parse_token_fields(r, d)
                if not r["bind_secret_id"] and not r.get("secret_id_bound_cidrs") and not r.get("token_bound_cidrs"):
                    raise bad("at least one constraint should be enabled on the role")
                roles[name] = r
                return Resp(204)
            if meth == "DELETE":
                roles.pop(name, None)
                for s in [s for s, e in sids.items() if e["role"] == name]:
                    del sids[s]
                return Resp(204)
            raise _unsupported_op()
        if role is None:
            if rest == "role-id" and meth == "GET":
                raise notfound()
            raise bad(f"role \"{name}\" does not exist")
        if rest == "role-id":
            if meth in ("GET", "HEAD"):
                return ok({"role_id": role["role_id"]}, mount_type="approle")
            if meth in ("POST", "PUT"):
                if not d.get("role_id"):
                    raise bad("missing role_id")
                role["role_id"] = str(d["role_id"])
                return Resp(204)
            raise _unsupported_op()
        if rest in ("secret-id", "custom-secret-id"):
            if meth == "LIST" and rest == "secret-id":
                return _list_resp([e["accessor"] for e in sids.values() if e["role"] == name], "approle")
            if meth not in ("POST", "PUT"):
                raise _unsupported_op()
            if rest == "custom-secret-id":
                sid = d.get("secret_id")
                if not sid:
                    raise bad("missing secret_id")
                if sid in sids:
                    raise bad("SecretID is already registered")
            else:
                sid = new_uuid()
            md = d.get("metadata") or {}
            if isinstance(md, str):
                try:
                    md = json.loads(md) if md else {}
                except ValueError:
                    raise bad("failed to parse metadata")
            ttl = parse_duration(d["ttl"]) if d.get("ttl") not in (None, "") else role["secret_id_ttl"]
            if role["secret_id_ttl"] and ttl > role["secret_id_ttl"]:
                raise bad("ttl cannot be longer than the role's secret_id_ttl")
            uses = as_int(d["num_uses"]) if d.get("num_uses") not in (None, "") else role["secret_id_num_uses"]
            now = time.time()
            ent = {"role": name, "accessor": new_uuid(), "ttl": ttl, "num_uses": uses, "creation": now,
                   "expiration": (now + ttl) if ttl else None, "metadata": md or {},
                   "cidr_list": as_list(d.get("cidr_list")), "token_bound_cidrs": as_list(d.get("token_bound_cidrs")),
                   "orig_num_uses": uses}
            sids[sid] = ent
            r = ok({"secret_id": sid, "secret_id_accessor": ent["accessor"], "secret_id_ttl": ttl,
                    "secret_id_num_uses": uses}, mount_type="approle")
            r.wrapped_accessor = ent["accessor"]
            return r
        if rest in ("secret-id/lookup", "secret-id/destroy", "secret-id-accessor/lookup",
                    "secret-id-accessor/destroy"):
            if "accessor" in rest:
                acc = d.get("secret_id_accessor")
                if not acc:
                    raise bad("missing secret_id_accessor")
                sid = next((s for s, e in sids.items() if e["accessor"] == acc and e["role"] == name), None)
                if sid is None:
                    raise bad(f"failed to find accessor entry for secret_id_accessor: \"{acc}\"")
            else:
                sid = d.get("secret_id")
                if not sid:
                    raise bad("missing secret_id")
            ent = sids.get(sid)
            if ent and ent.get("expiration") and ent["expiration"] <= time.time():
                del sids[sid]
                ent = None
            if rest.endswith("destroy"):
                if ent and ent["role"] == name:
                    del sids[sid]
                return Resp(204)
            if ent is None or ent["role"] != name:
                return Resp(204)
            return ok({"cidr_list": ent["cidr_list"], "creation_time": rfc3339(ent["creation"]),
                       "expiration_time": rfc3339(ent["expiration"]) if ent["expiration"] else "0001-01-01T00:00:00Z",
                       "last_updated_time": rfc3339(ent["creation"]), "metadata": ent["metadata"],
                       "secret_id_accessor": ent["accessor"], "secret_id_num_uses": ent["num_uses"],
                       "secret_id_ttl": ent["ttl"], "token_bound_cidrs": ent["token_bound_cidrs"]},
                      mount_type="approle")
        raise _unsupported_path()
    raise _unsupported_path()


def _cidr_ok(addr, cidrs):
    import ipaddress
    try:
        a = ipaddress.ip_address(addr)
    except ValueError:
        return False
    for c in cidrs:
        try:
            if a in ipaddress.ip_network(c, strict=False):
                return True
        except ValueError:
            continue
    return False


def _glob_in(value, patterns):
    return any(p == "*" or fnmatch.fnmatchcase(value, p) for p in patterns)


def _role_crud(v, req, m, parts, build, out, mount_type):
    roles = _roles(m)
    meth = req.method
    if len(parts) == 1:
        if meth != "LIST":
            raise _unsupported_op()
        return _list_resp(list(roles), mount_type)
    if len(parts) != 2:
        raise _unsupported_path()
    name = parts[1].lower()
    if meth in ("GET", "HEAD"):
        if name not in roles:
            raise notfound()
        return ok(out(roles[name]), mount_type=mount_type)
    if meth in ("POST", "PUT"):
        r = dict(roles.get(name) or {})
        build(r, _data(req), name not in roles)
        parse_token_fields(r, _data(req))
        roles[name] = r
        return Resp(204)
    if meth == "DELETE":
        roles.pop(name, None)
        return Resp(204)
    raise _unsupported_op()


# ---------------------------------------------------------------- kubernetes
def kubernetes_backend(v, req, m, sub):
    d = _data(req)
    meth = req.method
    parts = sub.split("/")
    cfg = m["store"].get("config")
    if sub == "config":
        if meth in ("GET", "HEAD"):
            if cfg is None:
                raise notfound()
            out = {k: cfg.get(k) for k in ("kubernetes_host", "kubernetes_ca_cert", "pem_keys", "issuer",
                                           "disable_iss_validation", "disable_local_ca_jwt")}
            out["token_reviewer_jwt_set"] = bool(cfg.get("token_reviewer_jwt"))
            return ok(out, mount_type="kubernetes")
        if meth in ("POST", "PUT"):
            host = d.get("kubernetes_host")
            if not host:
                raise bad("no host provided")
            pems = as_list(d.get("pem_keys")) if isinstance(d.get("pem_keys"), list) else \
                ([d["pem_keys"]] if d.get("pem_keys") else [])
            try:
                jwtv.load_keys(pems)
            except jwtv.JWTError as e:
                raise bad(str(e))
            m["store"]["config"] = {"kubernetes_host": host, "kubernetes_ca_cert": d.get("kubernetes_ca_cert", ""),
                                    "token_reviewer_jwt": d.get("token_reviewer_jwt", ""), "pem_keys": pems,
                                    "issuer": d.get("issuer", ""),
                                    "disable_iss_validation": as_bool(d.get("disable_iss_validation"), True),
                                    "disable_local_ca_jwt": as_bool(d.get("disable_local_ca_jwt"), False)}
            return Resp(204)
        raise _unsupported_op()
    if parts[0] == "role":
        def build(r, dd, new):
            for f in ("bound_service_account_names", "bound_service_account_namespaces"):
                if f in dd:
                    r[f] = as_list(dd[f])
            if "audience" in dd:
                r["audience"] = dd["audience"] or ""
            r.setdefault("audience", "")
            r.setdefault("alias_name_source", dd.get("alias_name_source") or "serviceaccount_uid")
            if not r.get("bound_service_account_names"):
                raise bad("\"bound_service_account_names\" can not be empty")
            if not r.get("bound_service_account_namespaces") and not dd.get("bound_service_account_namespace_selector"):
                raise bad("\"bound_service_account_namespaces\" can not be empty")
            if len(r["bound_service_account_names"]) > 1 and "*" in r["bound_service_account_names"]:
                raise bad("can not mix \"*\" with values")

        def out(r):
            o = {k: r.get(k) for k in ("bound_service_account_names", "bound_service_account_namespaces",
                                       "audience", "alias_name_source")}
            o.update(token_fields_out(r))
            return o
        return _role_crud(v, req, m, parts, build, out, "kubernetes")
    if sub == "login":
        if meth not in ("POST", "PUT"):
            raise _unsupported_op()
        rname = d.get("role")
        if not rname:
            raise bad("missing role")
        token = d.get("jwt")
        if not token:
            raise bad("missing jwt")
        role = _roles(m).get(str(rname).lower())
        if role is None:
            raise bad(f"invalid role name \"{rname}\"")
        if cfg is None:
            raise bad("could not load backend configuration")
        if not cfg.get("pem_keys"):
            # Real Vault would call the TokenReview API here; the simulator cannot.
            raise VaultError(403, [PERM_DENIED_K8S])
        try:
            claims = jwtv.verify(token, cfg["pem_keys"])
        except jwtv.JWTError:
            raise denied()
        now = time.time()
        if "exp" in claims and now > float(claims["exp"]) + 60:
            raise denied()
        if "nbf" in claims and now < float(claims["nbf"]) - 60:
            raise denied()
        if cfg.get("issuer") and not cfg.get("disable_iss_validation") and claims.get("iss") != cfg["issuer"]:
            raise denied()
        if role.get("audience"):
            aud = claims.get("aud")
            auds = aud if isinstance(aud, list) else [aud]
            if role["audience"] not in auds:
                raise denied()
        k8s = claims.get("kubernetes.io") if isinstance(claims.get("kubernetes.io"), dict) else None
        if k8s:
            ns = k8s.get("namespace", "")
            sa = k8s.get("serviceaccount") or {}
            name, uid, secret = sa.get("name", ""), sa.get("uid", ""), ""
        else:
            ns = claims.get("kubernetes.io/serviceaccount/namespace", "")
            name = claims.get("kubernetes.io/serviceaccount/service-account.name", "")
            uid = claims.get("kubernetes.io/serviceaccount/service-account.uid", "")
            secret = claims.get("kubernetes.io/serviceaccount/secret.name", "")
        if not name or not ns:
            raise denied()
        if not _glob_in(name, role.get("bound_service_account_names", [])):
            raise VaultError(403, ["service account name not authorized"])
        if not _glob_in(ns, role.get("bound_service_account_namespaces", [])):
            raise VaultError(403, ["namespace not authorized"])
        meta = {"role": str(rname).lower(), "service_account_name": name, "service_account_namespace": ns,
                "service_account_secret_name": secret, "service_account_uid": uid}
        return issue_login(v, req, m, role, f"{m['type']}-{ns}-{name}", meta, uid or f"{ns}/{name}", "kubernetes")
    raise _unsupported_path()


PERM_DENIED_K8S = "1 error occurred:\n\t* permission denied\n\n"


# ---------------------------------------------------------------- jwt / oidc
def jwt_backend(v, req, m, sub):
    d = _data(req)
    meth = req.method
    parts = sub.split("/")
    cfg = m["store"].get("config")
    if sub == "config":
        if meth in ("GET", "HEAD"):
            if cfg is None:
                raise notfound()
            return ok(dict(cfg), mount_type=m["type"])
        if meth in ("POST", "PUT"):
            keys = d.get("jwt_validation_pubkeys")
            keys = keys if isinstance(keys, list) else as_list(keys) if keys else []
            srcs = [bool(keys), bool(d.get("oidc_discovery_url")), bool(d.get("jwks_url"))]
            if sum(srcs) != 1:
                raise bad("exactly one of 'jwt_validation_pubkeys', 'jwks_url' or 'oidc_discovery_url' must be set")
            if keys:
                try:
                    jwtv.load_keys(keys)
                except jwtv.JWTError as e:
                    raise bad(str(e))
            m["store"]["config"] = {"jwt_validation_pubkeys": keys, "bound_issuer": d.get("bound_issuer", ""),
                                    "default_role": d.get("default_role", ""),
                                    "jwt_supported_algs": as_list(d.get("jwt_supported_algs")),
                                    "oidc_discovery_url": d.get("oidc_discovery_url", ""),
                                    "jwks_url": d.get("jwks_url", ""), "oidc_client_id": d.get("oidc_client_id", ""),
                                    "namespace_in_state": True, "provider_config": {}}
            return Resp(204)
        raise _unsupported_op()
    if parts[0] == "role":
        def build(r, dd, new):
            if "role_type" in dd or new:
                r["role_type"] = dd.get("role_type") or "oidc"
            if r["role_type"] not in ("jwt", "oidc"):
                raise bad("invalid 'role_type': " + str(r["role_type"]))
            for f in ("bound_audiences", "allowed_redirect_uris"):
                if f in dd:
                    r[f] = as_list(dd[f])
                r.setdefault(f, [])
            for f in ("user_claim", "bound_subject", "groups_claim"):
                if f in dd:
                    r[f] = dd[f] or ""
                r.setdefault(f, "")
            for f in ("bound_claims", "claim_mappings"):
                if f in dd:
                    r[f] = dd[f] or None
                r.setdefault(f, None)
            if "bound_claims_type" in dd:
                r["bound_claims_type"] = dd["bound_claims_type"]
            r.setdefault("bound_claims_type", "string")
            for f in ("expiration_leeway", "not_before_leeway", "clock_skew_leeway"):
                if f in dd:
                    r[f] = parse_duration(dd[f])
                r.setdefault(f, 0)
            if not r["user_claim"]:
                raise bad("a user claim must be defined on the role")
            if r["role_type"] == "oidc" and not r["allowed_redirect_uris"]:
                raise bad("'allowed_redirect_uris' must be set if 'role_type' is 'oidc' or unspecified.")
            if r["role_type"] == "jwt" and not (r["bound_audiences"] or r["bound_subject"] or r["bound_claims"]
                                                 or dd.get("bound_cidrs") or dd.get("token_bound_cidrs")):
                raise bad("must have at least one bound constraint when creating/updating a role")

        def out(r):
            o = {k: r.get(k) for k in ("role_type", "bound_audiences", "user_claim", "bound_subject",
                                       "bound_claims", "bound_claims_type", "claim_mappings", "groups_claim",
                                       "allowed_redirect_uris", "expiration_leeway", "not_before_leeway",
                                       "clock_skew_leeway")}
            o.update(token_fields_out(r))
            return o
        return _role_crud(v, req, m, parts, build, out, m["type"])
    if sub == "login":
        if meth not in ("POST", "PUT"):
            raise _unsupported_op()
        if cfg is None:
            raise bad("could not load configuration")
        token = d.get("jwt")
        if not token:
            raise bad("missing token")
        rname = d.get("role") or cfg.get("default_role")
        if not rname:
            raise bad("missing role")
        role = _roles(m).get(str(rname).lower())
        if role is None:
            raise bad(f"role \"{rname}\" could not be found")
        if role["role_type"] == "oidc":
            raise bad("role with oidc role_type is not allowed")
        if not cfg.get("jwt_validation_pubkeys"):
            raise bad("sim: only jwt_validation_pubkeys is supported for JWT verification")
        try:
            claims = jwtv.verify(token, cfg["jwt_validation_pubkeys"], cfg.get("jwt_supported_algs") or None)
        except jwtv.JWTError as e:
            raise bad(f"error validating token: {e}")
        now = time.time()

        def lw(val, dflt):
            return 0 if val == -1 else (val or dflt)
        skew = lw(role.get("clock_skew_leeway", 0), 60)
        if "exp" in claims and now > float(claims["exp"]) + lw(role.get("expiration_leeway", 0), 150) + skew:
            raise bad("error validating claims: validation failed, token is expired (exp)")
        if "nbf" in claims and now < float(claims["nbf"]) - lw(role.get("not_before_leeway", 0), 150) - skew:
            raise bad("error validating claims: validation failed, token not valid yet (nbf)")
        if "iat" in claims and now < float(claims["iat"]) - skew:
            raise bad("error validating claims: validation failed, token issued in the future (iat)")
        if cfg.get("bound_issuer") and claims.get("iss") != cfg["bound_issuer"]:
            raise bad("error validating claims: validation failed, invalid issuer claim (iss)")
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else ([aud] if aud else [])
        if role.get("bound_audiences"):
            if not set(auds) & set(role["bound_audiences"]):
                raise bad("error validating claims: validation failed, invalid audience claim (aud)")
        elif auds:
            raise bad("error validating claims: audience claim found in JWT but no audiences bound to the role")
        if role.get("bound_subject") and claims.get("sub") != role["bound_subject"]:
            raise bad("sub claim does not match bound subject")
        for ck, cv in (role.get("bound_claims") or {}).items():
            want = cv if isinstance(cv, list) else [cv]
            got = claims
            for seg in ck.lstrip("/").split("/"):
                got = got.get(seg) if isinstance(got, dict) else None
            gots = got if isinstance(got, list) else [got]
            glob = role.get("bound_claims_type") == "glob"
            if not any(g is not None and any((fnmatch.fnmatchcase(str(g), str(w)) if glob else str(g) == str(w))
                                             for w in want) for g in gots):
                raise bad(f"error validating claims: claim \"{ck}\" does not match any associated bound claim values")
        uc = role["user_claim"]
        user = claims.get(uc)
        if user is None:
            raise bad(f"claim \"{uc}\" not found in token")
        meta = {"role": str(rname).lower()}
        for src, dst in (role.get("claim_mappings") or {}).items():
            if src in claims:
                meta[dst] = str(claims[src])
        return issue_login(v, req, m, role, f"{m['type']}-{user}", meta, str(user), m["type"])
    raise _unsupported_path()


# ---------------------------------------------------------------- cert
def _load_certs(pem):
    out = []
    text = pem if isinstance(pem, str) else pem.decode()
    for chunk in text.split("-----END CERTIFICATE-----"):
        if "-----BEGIN CERTIFICATE-----" in chunk:
            out.append(x509.load_pem_x509_certificate((chunk.strip() + "\n-----END CERTIFICATE-----\n").encode()))
    return out


def _signed_by(child, issuer):
    if child.issuer != issuer.subject:
        return False
    pub = issuer.public_key()
    try:
        if isinstance(pub, rsa.RSAPublicKey):
            pub.verify(child.signature, child.tbs_certificate_bytes, padding.PKCS1v15(),
                       child.signature_hash_algorithm)
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(child.signature, child.tbs_certificate_bytes, ec.ECDSA(child.signature_hash_algorithm))
        elif isinstance(pub, ed25519.Ed25519PublicKey):
            pub.verify(child.signature, child.tbs_certificate_bytes)
        else:
            return False
        return True
    except (InvalidSignature, ValueError):
        return False


def _cn(cert):
    try:
        return cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value
    except IndexError:
        return ""


def _keyid(cert, ext_cls, attr):
    try:
        val = getattr(cert.extensions.get_extension_for_class(ext_cls).value, attr)
        return ":".join(f"{b:02x}" for b in val) if val else ""
    except x509.ExtensionNotFound:
        return ""


def cert_backend(v, req, m, sub):
    d = _data(req)
    meth = req.method
    parts = sub.split("/")
    if parts[0] == "certs":
        def build(r, dd, new):
            if "certificate" in dd:
                r["certificate"] = dd["certificate"]
            if not r.get("certificate"):
                raise bad("missing certificate")
            try:
                if not _load_certs(r["certificate"]):
                    raise ValueError
            except ValueError:
                raise bad("failed to parse certificate")
            for f in ("allowed_common_names", "allowed_dns_sans", "allowed_names"):
                if f in dd:
                    r[f] = as_list(dd[f])
                r.setdefault(f, [])
            if "display_name" in dd:
                r["display_name"] = dd["display_name"]
            r.setdefault("display_name", "")

        def out(r):
            o = {k: r.get(k) for k in ("certificate", "allowed_common_names", "allowed_dns_sans", "allowed_names",
                                       "display_name")}
            o.update(token_fields_out(r))
            return o
        return _role_crud(v, req, m, parts, build, out, "cert")
    if sub == "login":
        if meth not in ("POST", "PUT"):
            raise _unsupported_op()
        if not req.peer_cert:
            raise bad("client certificate must be supplied")
        client = x509.load_der_x509_certificate(req.peer_cert)
        roles = _roles(m)
        names = [str(d["name"]).lower()] if d.get("name") else sorted(roles)
        for n in names:
            r = roles.get(n)
            if r is None:
                continue
            trusted = False
            for c in _load_certs(r["certificate"]):
                if c.public_bytes(serialization_der()) == req.peer_cert or _signed_by(client, c):
                    trusted = True
                    break
            if not trusted:
                continue
            acn = r.get("allowed_common_names") or r.get("allowed_names") or []
            if acn and not _glob_in(_cn(client), acn):
                continue
            meta = {"cert_name": n, "common_name": _cn(client), "serial_number": str(client.serial_number),
                    "subject_key_id": _keyid(client, x509.SubjectKeyIdentifier, "digest"),
                    "authority_key_id": _keyid(client, x509.AuthorityKeyIdentifier, "key_identifier")}
            return issue_login(v, req, m, r, r.get("display_name") or n, meta,
                               client.fingerprint(__import__("cryptography.hazmat.primitives.hashes",
                                                             fromlist=["SHA256"]).SHA256()).hex(), "cert")
        raise bad("invalid certificate or no client certificate supplied")
    raise _unsupported_path()


def serialization_der():
    from cryptography.hazmat.primitives import serialization
    return serialization.Encoding.DER


# ---------------------------------------------------------------- userpass
def userpass_backend(v, req, m, sub):
    d = _data(req)
    meth = req.method
    parts = sub.split("/")
    users = _roles(m)
    if parts[0] == "users":
        def build(r, dd, new):
            if "password" in dd:
                r["password"] = dd["password"]
            if not r.get("password"):
                raise bad("missing password")

        def out(r):
            return token_fields_out(r)
        return _role_crud(v, req, m, parts, build, out, "userpass")
    if parts[0] == "login" and len(parts) == 2:
        if meth not in ("POST", "PUT"):
            raise _unsupported_op()
        u = users.get(parts[1].lower())
        if u is None or not hmac.compare_digest(str(d.get("password", "")), u["password"]):
            raise bad("invalid username or password")
        return issue_login(v, req, m, u, f"userpass-{parts[1].lower()}", {"username": parts[1].lower()},
                           parts[1].lower(), "userpass")
    raise _unsupported_path()
