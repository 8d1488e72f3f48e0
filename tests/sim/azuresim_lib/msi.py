"""Managed identity token endpoints.

IMDS         GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=R
             header Metadata: true; optional client_id | object_id | msi_res_id (mi_res_id)
App Service  GET /msi/token?api-version=2019-08-01&resource=R  header X-IDENTITY-HEADER
Azure Arc    GET /arc/metadata/identity/oauth2/token?api-version=2019-11-01&resource=R
             header Metadata: true; 401 + WWW-Authenticate: Basic realm=<key file>,
             then Authorization: Basic <file contents>
"""
import hmac
import os
import secrets
import threading
import time
import uuid

from .util import Response, resource_known

IMDS_PATH = "/metadata/identity/oauth2/token"
APPSERVICE_PATH = "/msi/token"
ARC_PATH = "/arc/metadata/identity/oauth2/token"
ARC_KEY_TTL = 300


def imds_error(status, error, desc, extra=None):
    return Response(status, {"error": error, "error_description": desc},
                    [("Server", "IMDS/150.870.65.1544")] + list(extra or []))


class ManagedIdentity:
    def __init__(self, sim):
        self.sim = sim
        self.arc_lock = threading.Lock()
        self.arc_keys = {}       # contents -> (path, expiry)

    def pick_identity(self, req):
        """-> identity dict or None (not found)."""
        cid = req.q("client_id")
        oid = req.q("object_id") or req.q("principal_id")
        rid = req.q("msi_res_id") or req.q("mi_res_id")
        given = [x for x in (cid, oid, rid) if x]
        if len(given) > 1:
            return "ambiguous"
        for ident in self.sim.identities:
            if cid and ident["client_id"].lower() == cid.lower():
                return ident
            if oid and ident["object_id"].lower() == oid.lower():
                return ident
            if rid and ident["resource_id"].lower() == rid.lower():
                return ident
        if given:
            return None
        return self.sim.identities[0]      # the system-assigned identity

    def mint(self, ident, resource):
        token, claims = self.sim.tokens.mint(
            self.sim.tenant, ident["client_id"], ident["object_id"], resource, appidacr="2",
            extra={"xms_mirid": ident["resource_id"]})
        return token, claims

    # -- IMDS ---------------------------------------------------------------
    def imds(self, req, arc=False):
        if req.method != "GET":
            return imds_error(405, "invalid_request", "Method not allowed")
        if (req.header("Metadata") or "").lower() != "true":
            return imds_error(400, "bad_request_102", "Required metadata header not specified")
        api = req.q("api-version")
        if not api:
            return imds_error(400, "invalid_request", "Required query variable 'api-version' is missing")
        ok_versions = ("2019-11-01", "2020-06-01", "2021-02-01") if arc else \
            ("2018-02-01", "2019-03-11", "2019-08-01", "2019-11-01", "2020-06-01", "2021-02-01",
             "2021-05-01", "2021-10-01", "2021-12-13", "2023-07-01")
        if api not in ok_versions:
            return imds_error(400, "invalid_request", f"Invalid api-version '{api}'")
        if arc:
            gate = self.arc_gate(req)
            if gate is not None:
                return gate
        resource = req.q("resource")
        if not resource:
            return imds_error(400, "invalid_request", "Required audience parameter not specified")
        ident = self.pick_identity(req)
        if ident == "ambiguous":
            return imds_error(400, "invalid_request",
                              "Only one of client_id, object_id or msi_res_id may be specified")
        if ident is None:
            return imds_error(400, "invalid_request", "Identity not found")
        req.audit_client_id = ident["client_id"]
        if not resource_known(resource):
            return imds_error(400, "invalid_resource",
                              f"AADSTS500011: The resource principal named {resource} was not found in "
                              f"the tenant named {self.sim.tenant}. This can happen if the application "
                              "has not been installed by the administrator of the tenant or consented to "
                              "by any user in the tenant. You might have sent your authentication request "
                              "to the wrong tenant.")
        token, c = self.mint(ident, resource)
        life = c["exp"] - c["iat"]
        return Response(200, {"access_token": token, "refresh_token": "", "client_id": ident["client_id"],
                              "expires_in": str(life), "expires_on": str(c["exp"]),
                              "ext_expires_in": str(life), "not_before": str(c["nbf"]),
                              "resource": resource, "token_type": "Bearer"},
                        [("Server", "IMDS/150.870.65.1544")])

    # -- Arc ------------------------------------------------------------------
    def arc_gate(self, req):
        auth = req.header("Authorization") or ""
        now = time.time()
        with self.arc_lock:
            for k, (p, exp) in list(self.arc_keys.items()):
                if exp < now:
                    del self.arc_keys[k]
                    try:
                        os.unlink(p)
                    except OSError:
                        pass
            if auth.lower().startswith("basic "):
                presented = auth.split(None, 1)[1].strip()
                for k in self.arc_keys:
                    if hmac.compare_digest(k, presented):
                        return None
            key = secrets.token_hex(32)
            d = self.sim.arc_key_dir
            os.makedirs(d, exist_ok=True)
            path = os.path.join(d, f"{uuid.uuid4()}.key")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            with os.fdopen(fd, "w") as f:
                f.write(key)
            self.arc_keys[key] = (path, now + ARC_KEY_TTL)
        return Response(401, {"error": "unauthorized_client",
                              "error_description": "Authorization header is missing or invalid; read "
                                                   "the key file named in WWW-Authenticate"},
                        [("WWW-Authenticate", f"Basic realm={path}")])

    # -- App Service ------------------------------------------------------------
    def appservice(self, req):
        def err(status, message):
            return Response(status, {"statusCode": status, "message": message,
                                      "correlationId": str(uuid.uuid4())})
        if req.method != "GET":
            return err(405, "Method not allowed")
        hdr = req.header("X-IDENTITY-HEADER")
        if hdr is None or not hmac.compare_digest(hdr, self.sim.identity_header):
            return err(401 if hdr else 400, "The X-IDENTITY-HEADER header is missing or invalid.")
        api = req.q("api-version")
        if api != "2019-08-01":
            return err(400, f"Unsupported or missing api-version '{api or ''}'. Use 2019-08-01.")
        resource = req.q("resource")
        if not resource:
            return err(400, "Required parameter 'resource' not specified.")
        ident = self.pick_identity(req)
        if ident in (None, "ambiguous"):
            return err(400, "Unable to load the proper Managed Identity.")
        req.audit_client_id = ident["client_id"]
        if not resource_known(resource):
            return err(400, f"AADSTS500011: The resource principal named {resource} was not found in "
                            f"the tenant named {self.sim.tenant}.")
        token, c = self.mint(ident, resource)
        return Response(200, {"access_token": token, "expires_on": str(c["exp"]),
                              "resource": resource, "token_type": "Bearer",
                              "client_id": ident["client_id"], "not_before": str(c["nbf"])})
