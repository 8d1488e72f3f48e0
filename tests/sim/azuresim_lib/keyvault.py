"""Azure Key Vault secrets data plane.

Order of checks on every request (as the service behaves for SDKs):
 1. Authorization: missing/non-Bearer -> 401 AKV10000 + challenge; invalid or
    expired token -> 401 + challenge; wrong audience -> 401 AKV10022;
    token from another tenant -> 401 AKV10032.
 2. api-version: missing/unknown -> 400 BadParameter.
 3. Routing, RBAC-lite (403 ForbiddenByRbac), then the operation.
"""
import json
import re
import time
import urllib.parse
import uuid

from .util import Response, VAULT_RESOURCE
from . import jwtutil

NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
VERSION_RE = re.compile(r"^[0-9a-fA-F]{32}$")
API_VERSIONS = {"7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01"}
API_VERSION_RE = re.compile(r"^7\.[0-6](-preview(\.\d+)?)?$|^20\d\d-\d\d-\d\d(-preview)?$")
LATEST = "2025-07-01"
MAX_VALUE = 25 * 1024
MAX_TAGS = 15
RBAC_ACTIONS = {
    "get": "Microsoft.KeyVault/vaults/secrets/getSecret/action",
    "set": "Microsoft.KeyVault/vaults/secrets/setSecret/action",
    "list": "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
    "delete": "Microsoft.KeyVault/vaults/secrets/delete",
    "update": "Microsoft.KeyVault/vaults/secrets/update/action",
    "recover": "Microsoft.KeyVault/vaults/secrets/recover/action",
    "purge": "Microsoft.KeyVault/vaults/deletedSecrets/delete",
    "getdeleted": "Microsoft.KeyVault/vaults/deletedSecrets/read",
}
NOT_FOUND_MSG = ("A secret with (name/id) {name} was not found in this key vault. If you recently "
                 "deleted this secret you may be able to recover it using the correct recovery "
                 "command. For help resolving this issue, please see "
                 "https://go.microsoft.com/fwlink/?linkid=2125182")


def kv_headers(req, extra=None):
    h = [("Cache-Control", "no-cache"), ("Pragma", "no-cache"), ("Expires", "-1"),
         ("x-ms-keyvault-region", "simulated"),
         ("x-ms-request-id", str(uuid.uuid4())),
         ("x-ms-keyvault-service-version", "1.9.0.0"),
         ("x-ms-keyvault-network-info", f"conn_type=Ipv4;addr={req.client};act_addr_fam=InterNetwork;"),
         ("Strict-Transport-Security", "max-age=31536000;includeSubDomains"),
         ("X-Content-Type-Options", "nosniff")]
    crid = req.header("x-ms-client-request-id")
    if crid:
        h.append(("x-ms-client-request-id", crid))
    return h + list(extra or [])


def kv_error(req, status, code, message, inner=None, extra_headers=None):
    err = {"code": code, "message": message}
    if inner:
        err["innererror"] = {"code": inner}
    return Response(status, {"error": err}, kv_headers(req, extra_headers))


def ok(req, status, body):
    return Response(status, body, kv_headers(req))


class KeyVault:
    def __init__(self, sim):
        self.sim = sim
        self.store = sim.store

    # ------------------------------------------------------------------
    def challenge_header(self):
        return ("WWW-Authenticate",
                f'Bearer authorization="{self.sim.authority}/{self.sim.tenant}", '
                f'resource="{VAULT_RESOURCE}"')

    def unauthorized(self, req, message):
        return kv_error(req, 401, "Unauthorized", message, extra_headers=[self.challenge_header()])

    def authenticate(self, req):
        """-> (claims, None) or (None, Response)."""
        auth = req.header("Authorization")
        if not auth or not auth.lower().startswith(("bearer ", "pop ")) or not auth.split(None, 1)[1:]:
            return None, self.unauthorized(req, "AKV10000: Request is missing a Bearer or PoP token.")
        token = auth.split(None, 1)[1].strip()
        claims, why = self.sim.tokens.validate(token)
        if claims is None:
            if why == "expired":
                return None, self.unauthorized(req, "[TokenExpired] Error validating token: 'S2S12086'.")
            if why == "malformed":
                return None, self.unauthorized(req, "AKV10000: Request is missing a Bearer or PoP token.")
            return None, self.unauthorized(req, "[InvalidSignature] Error validating token: 'S2S12005'.")
        aud = str(claims.get("aud", ""))
        if aud.rstrip("/") != VAULT_RESOURCE:
            return None, self.unauthorized(
                req, f"AKV10022: Invalid audience. Expected {VAULT_RESOURCE}, found: {aud}.")
        if str(claims.get("tid", "")).lower() != self.sim.tenant.lower():
            return None, self.unauthorized(
                req, f"AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{self.sim.tenant}/, "
                     f"https://sts.windows.net/{self.sim.tenant}/, found {claims.get('iss')}.")
        return claims, None

    def forbidden(self, req, claims, op, name):
        res = (f"/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/azuresim/providers/"
               f"microsoft.keyvault/vaults/{self.sim.vault_name}")
        if name:
            res += f"/secrets/{name.lower()}"
        msg = ("Caller is not authorized to perform action on resource.\r\n"
               "If role assignments, deny assignments or role definitions were changed recently, "
               "please observe propagation time.\r\n"
               f"Caller: appid={claims.get('appid')};oid={claims.get('oid')};iss={claims.get('iss')}\r\n"
               f"Action: '{RBAC_ACTIONS[op]}'\r\n"
               f"Resource: '{res}'\r\n"
               "Assignment: (not found)\r\n"
               "DenyAssignmentId: null\r\n"
               "DecisionReason: null \r\n"
               f"Vault: {self.sim.vault_name};location=simulated\r\n")
        return kv_error(req, 403, "Forbidden", msg, "ForbiddenByRbac")

    # ------------------------------------------------------------------
    def handle(self, req):
        claims, err = self.authenticate(req)
        if err:
            return err
        req.audit_client_id = claims.get("appid")
        api = req.q("api-version")
        if api is None or api == "":
            return kv_error(req, 400, "BadParameter", "The 'api-version' query parameter is missing.")
        if api not in API_VERSIONS and not API_VERSION_RE.match(api):
            return kv_error(req, 400, "BadParameter",
                            f"The specified version ({api}) is not recognized. Consider using the "
                            f"latest supported version ({LATEST}).")
        parts = req.path.split("/")[1:]
        # a single trailing slash is what the JS SDK sends for "latest version"
        if len(parts) > 1 and parts[-1] == "":
            parts = parts[:-1]
        coll = parts[0].lower()
        m = req.method
        if coll == "secrets":
            if len(parts) == 1 and m == "GET":
                return self.op(req, claims, "list", None, self.list_secrets, api)
            if len(parts) >= 2:
                name = parts[1]
                if not NAME_RE.match(name):
                    return kv_error(req, 400, "BadParameter",
                                    f"The request URI contains an invalid name: {name}")
                if len(parts) == 2:
                    if m == "PUT":
                        return self.op(req, claims, "set", name, self.set_secret)
                    if m == "GET":
                        return self.op(req, claims, "get", name, self.get_secret, "")
                    if m == "PATCH":
                        return self.op(req, claims, "update", name, self.update_secret, "")
                    if m == "DELETE":
                        return self.op(req, claims, "delete", name, self.delete_secret)
                if len(parts) == 3:
                    if parts[2].lower() == "versions" and m == "GET":
                        return self.op(req, claims, "list", name, self.list_versions, api)
                    if m == "GET":
                        return self.op(req, claims, "get", name, self.get_secret, parts[2])
                    if m == "PATCH":
                        return self.op(req, claims, "update", name, self.update_secret, parts[2])
        elif coll == "deletedsecrets":
            if len(parts) == 1 and m == "GET":
                return self.op(req, claims, "list", None, self.list_deleted, api)
            if len(parts) >= 2:
                name = parts[1]
                if not NAME_RE.match(name):
                    return kv_error(req, 400, "BadParameter",
                                    f"The request URI contains an invalid name: {name}")
                if len(parts) == 2 and m == "GET":
                    return self.op(req, claims, "getdeleted", name, self.get_deleted)
                if len(parts) == 2 and m == "DELETE":
                    return self.op(req, claims, "purge", name, self.purge)
                if len(parts) == 3 and parts[2].lower() == "recover" and m == "POST":
                    return self.op(req, claims, "recover", name, self.recover)
        return kv_error(req, 405 if len(parts) >= 1 and coll in ("secrets", "deletedsecrets") else 404,
                        "BadParameter" if coll in ("secrets", "deletedsecrets") else "NotFound",
                        f"The requested resource or operation {m} {req.path} is not supported.")

    def op(self, req, claims, op, name, fn, *args):
        # reading a deleted secret needs 'list' or 'get' (deletedSecrets/read): accept either
        check = ["get", "list"] if op == "getdeleted" else [op]
        if not any(self.sim.grants.allowed(claims.get("appid"), o) for o in check):
            return self.forbidden(req, claims, op, name)
        with self.store.lock:
            if name is None:
                return fn(req, *args)
            return fn(req, name, *args)

    def base(self, req):
        return f"https://{req.host}"

    def body_json(self, req):
        if not req.body:
            return None, kv_error(req, 400, "BadParameter", "The request body is missing.")
        try:
            b = json.loads(req.body)
        except ValueError:
            return None, kv_error(req, 400, "BadParameter", "The request body is not valid JSON.")
        if not isinstance(b, dict):
            return None, kv_error(req, 400, "BadParameter", "The request body must be a JSON object.")
        return b, None

    def check_meta(self, req, body):
        tags = body.get("tags")
        if tags is not None:
            if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in tags.items()):
                return kv_error(req, 400, "BadParameter", "Tags must be a map of strings.")
            if len(tags) > MAX_TAGS:
                return kv_error(req, 400, "BadParameter",
                                f"The number of tags exceeds the maximum of {MAX_TAGS}.")
            if any(len(k) > 256 or len(v) > 256 for k, v in tags.items()):
                return kv_error(req, 400, "BadParameter",
                                "Tag names and values must be at most 256 characters.")
        ct = body.get("contentType")
        if ct is not None and (not isinstance(ct, str) or len(ct) > 255):
            return kv_error(req, 400, "BadParameter", "contentType must be a string of at most 255 characters.")
        attrs = body.get("attributes")
        if attrs is not None:
            if not isinstance(attrs, dict):
                return kv_error(req, 400, "BadParameter", "attributes must be an object.")
            for k in ("nbf", "exp"):
                if attrs.get(k) is not None and not isinstance(attrs[k], int):
                    return kv_error(req, 400, "BadParameter",
                                    f"Property attributes.{k} must be an integer (Unix time).")
            if "enabled" in attrs and attrs["enabled"] is not None and not isinstance(attrs["enabled"], bool):
                return kv_error(req, 400, "BadParameter", "Property attributes.enabled must be a boolean.")
        return None

    def not_found(self, req, name):
        return kv_error(req, 404, "SecretNotFound", NOT_FOUND_MSG.format(name=name))

    def live(self, name):
        rec = self.store.record(name)
        if rec is None or self.store.is_deleted(rec):
            return None
        return rec

    # -- operations -------------------------------------------------------
    def set_secret(self, req, name):
        body, err = self.body_json(req)
        if err:
            return err
        value = body.get("value")
        if not isinstance(value, str):
            return kv_error(req, 400, "BadParameter", "Property 'value' is required and must be a string.")
        if len(value.encode("utf-8")) > MAX_VALUE:
            return kv_error(req, 400, "BadParameter",
                            f"The secret value exceeds the maximum size of {MAX_VALUE} bytes.")
        err = self.check_meta(req, body)
        if err:
            return err
        rec = self.store.record(name)
        if self.store.is_deleted(rec):
            if self.store.delete_pending(rec):
                return kv_error(req, 409, "Conflict", f"Secret {name} is currently being deleted.",
                                "ObjectIsBeingDeleted")
            return kv_error(req, 409, "Conflict",
                            f"Secret {name} is currently in a deleted but recoverable state, and its "
                            "name cannot be reused; in this state, the secret can only be recovered "
                            "or purged.", "ObjectIsDeletedButRecoverable")
        rec, ver = self.store.set(rec["name"] if rec else name, value, body.get("contentType"),
                                  body.get("tags"), body.get("attributes"))
        self.sim.log(f"set secret {rec['name']} version {ver['version']}")
        return ok(req, 200, self.store.bundle(self.base(req), rec, ver))

    def resolve(self, req, name, version):
        rec = self.live(name)
        if rec is None:
            return None, None, self.not_found(req, name)
        if version:
            ver = self.store.find_version(rec, version) if VERSION_RE.match(version) else None
            if ver is None:
                return None, None, kv_error(
                    req, 404, "SecretNotFound",
                    NOT_FOUND_MSG.format(name=f"{name}/{version}").replace(
                        "(name/id) ", "(name/id) "))
        else:
            ver = self.store.latest(rec)
        return rec, ver, None

    def get_secret(self, req, name, version):
        rec, ver, err = self.resolve(req, name, version)
        if err:
            return err
        if not ver["enabled"]:
            return kv_error(req, 403, "Forbidden", "Operation get is not allowed on a disabled secret.",
                            "SecretDisabled")
        return ok(req, 200, self.store.bundle(self.base(req), rec, ver))

    def update_secret(self, req, name, version):
        body, err = self.body_json(req)
        if err:
            return err
        err = self.check_meta(req, body)
        if err:
            return err
        rec, ver, err = self.resolve(req, name, version)
        if err:
            return err
        self.store.update(rec, ver, body)
        return ok(req, 200, self.store.bundle(self.base(req), rec, ver, with_value=False))

    def delete_secret(self, req, name):
        rec = self.live(name)
        if rec is None:
            return self.not_found(req, name)
        self.store.delete(rec, self.sim.faults.delete_delay_ms)
        self.sim.log(f"soft-deleted secret {rec['name']}")
        return ok(req, 200, self.store.deleted_bundle(self.base(req), rec))

    def deleted_record(self, req, name):
        rec = self.store.record(name)
        if not self.store.is_deleted(rec) or self.store.delete_pending(rec):
            return None, kv_error(req, 404, "SecretNotFound", f"Deleted Secret not found: {name}")
        return rec, None

    def get_deleted(self, req, name):
        rec, err = self.deleted_record(req, name)
        if err:
            return err
        return ok(req, 200, self.store.deleted_bundle(self.base(req), rec))

    def recover(self, req, name):
        rec, err = self.deleted_record(req, name)
        if err:
            return err
        self.store.recover(rec)
        return ok(req, 200, self.store.bundle(self.base(req), rec, self.store.latest(rec),
                                              with_value=False))

    def purge(self, req, name):
        rec, err = self.deleted_record(req, name)
        if err:
            return err
        self.store.purge(rec)
        return Response(204, b"", kv_headers(req))

    # -- paging -----------------------------------------------------------
    def page(self, req, api, items, path):
        mr = req.q("maxresults")
        if mr is None or mr == "":
            n = 25
        else:
            try:
                n = int(mr)
            except ValueError:
                n = 0
            if n < 1 or n > 25:
                return kv_error(req, 400, "BadParameter",
                                "The value of the maxresults parameter must be between 1 and 25.")
        start = 0
        tok = req.q("$skiptoken")
        if tok:
            try:
                start = int(json.loads(jwtutil.b64u_dec(tok))["o"])
            except (ValueError, KeyError, TypeError):
                return kv_error(req, 400, "BadParameter", "The skip token is not valid.")
        chunk = items[start:start + n]
        nxt = None
        if start + n < len(items):
            token = jwtutil.b64u(json.dumps({"o": start + n}).encode())
            q = urllib.parse.urlencode([("api-version", api), ("$skiptoken", token),
                                        ("maxresults", str(n))], safe="$")
            host = req.host if ":" in req.host else req.host + ":443"
            nxt = f"https://{host}{path}?{q}"
        return ok(req, 200, {"value": chunk, "nextLink": nxt})

    def list_secrets(self, req, api):
        base = self.base(req)
        items = [self.store.item(base, r, self.store.latest(r), versioned=False)
                 for r in sorted(self.store.secrets.values(), key=lambda r: r["name"].lower())
                 if not self.store.is_deleted(r)]
        return self.page(req, api, items, "/secrets")

    def list_versions(self, req, name, api):
        rec = self.live(name)
        if rec is None:
            # the service answers an empty list for an unknown name
            return self.page(req, api, [], f"/secrets/{name}/versions")
        base = self.base(req)
        # The service documents no order for versions (it is not creation order, and `created` has
        # one-second resolution): here by version id, so a client relying on list order is caught.
        items = [self.store.item(base, rec, v, versioned=True)
                 for v in sorted(rec["versions"], key=lambda v: v["version"])]
        return self.page(req, api, items, f"/secrets/{name}/versions")

    def list_deleted(self, req, api):
        base = self.base(req)
        items = [self.store.deleted_item(base, r)
                 for r in sorted(self.store.secrets.values(), key=lambda r: r["name"].lower())
                 if self.store.is_deleted(r) and not self.store.delete_pending(r)]
        return self.page(req, api, items, "/deletedsecrets")
