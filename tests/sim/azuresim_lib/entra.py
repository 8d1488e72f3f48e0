"""Entra ID (v2 endpoint) for confidential clients.

POST /{tenant}/oauth2/v2.0/token   client_credentials with client_secret
                                   (post or HTTP Basic), client_assertion
                                   (certificate: RS256+x5t / PS256+x5t#S256),
                                   or a federated assertion (workload identity)
GET  /{tenant}/v2.0/.well-known/openid-configuration
GET  /{tenant}/discovery/v2.0/keys
GET  /common/discovery/instance
"""
import base64
import binascii
import time
import urllib.parse
import uuid

from .util import Response, aad_timestamp, resource_known
from . import jwtutil

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FED_AUDIENCE = "api://AzureADTokenExchange"
CERT_DOC = "Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials ."


def aad_headers():
    return [("Cache-Control", "no-store, no-cache"), ("Pragma", "no-cache"), ("Expires", "-1"),
            ("Strict-Transport-Security", "max-age=31536000; includeSubDomains"),
            ("X-Content-Type-Options", "nosniff"), ("x-ms-request-id", str(uuid.uuid4())),
            ("x-ms-ests-server", "azuresim")]


class Entra:
    def __init__(self, sim):
        self.sim = sim

    def error(self, req, status, error, code, text, extra_headers=None):
        trace, corr, ts = str(uuid.uuid4()), req.header("client-request-id") or str(uuid.uuid4()), aad_timestamp()
        body = {"error": error,
                "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\n"
                                     f"Correlation ID: {corr}\r\nTimestamp: {ts}",
                "error_codes": [code], "timestamp": ts, "trace_id": trace, "correlation_id": corr,
                "error_uri": f"{self.sim.authority}/error?code={code}"}
        return Response(status, body, aad_headers() + list(extra_headers or []))

    def tenant_not_found(self, req, tenant):
        return self.error(req, 400, "invalid_request", 90002,
                          f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant "
                          "ID and are signing into the correct cloud. Check with your subscription "
                          "administrator, this may happen if there are no active subscriptions for the tenant.")

    def handle(self, req):
        parts = req.path.strip("/").split("/")
        if req.path.rstrip("/") == "/common/discovery/instance" and req.method == "GET":
            return self.instance_discovery(req)
        tenant = parts[0]
        rest = "/".join(parts[1:])
        # a verified domain of the tenant stands for its id, on every endpoint
        if tenant.lower() in self.sim.tenant_domains:
            tenant = self.sim.tenant
        if rest in ("oauth2/v2.0/token", "oauth2/token") and req.method == "POST":
            if tenant.lower() != self.sim.tenant.lower():
                return self.tenant_not_found(req, tenant)
            return self.token(req, v1=(rest == "oauth2/token"))
        if rest in ("v2.0/.well-known/openid-configuration", ".well-known/openid-configuration") \
                and req.method == "GET":
            if tenant.lower() not in (self.sim.tenant.lower(), "common", "organizations"):
                return self.tenant_not_found(req, tenant)
            return self.openid_config(req, tenant)
        if rest in ("discovery/v2.0/keys", "discovery/keys") and req.method == "GET":
            return Response(200, {"keys": [jwtutil.rsa_jwk(self.sim.tokens.key.public_key(),
                                                            self.sim.tokens.kid)]}, aad_headers())
        return self.error(req, 404, "invalid_request", 900561,
                          f"The endpoint only accepts POST requests. Received a {req.method} request."
                          if rest.startswith("oauth2") else "The requested endpoint does not exist.")

    # ------------------------------------------------------------------
    def instance_discovery(self, req):
        host = urllib.parse.urlsplit(self.sim.authority).netloc
        t = self.sim.tenant
        return Response(200, {
            "tenant_discovery_endpoint": f"{self.sim.authority}/{t}/v2.0/.well-known/openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host,
                          "aliases": [host, "localhost:" + str(self.sim.port), "127.0.0.1:" + str(self.sim.port)]}]},
            aad_headers())

    def openid_config(self, req, tenant):
        a = self.sim.authority
        t = self.sim.tenant if tenant.lower() == self.sim.tenant.lower() else "{tenantid}"
        base = f"{a}/{tenant}"
        return Response(200, {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                      "client_secret_basic"],
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{a}/{t}/v2.0",
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
                                 "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat",
                                 "auth_time", "acr", "nonce", "preferred_username", "name", "tid",
                                 "ver", "at_hash", "c_hash", "email"],
            "kerberos_endpoint": f"{base}/kerberos",
            "tenant_region_scope": "WW",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net"}, aad_headers())

    # ------------------------------------------------------------------
    def token(self, req, v1=False):
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return self.error(req, 400, "invalid_request", 900144,
                              "The request body must contain the following parameter: 'grant_type'.")
        try:
            form = urllib.parse.parse_qs(req.body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            form = {}
        f = {k: v[0] for k, v in form.items()}
        client_id, secret = f.get("client_id"), f.get("client_secret")
        basic = req.header("Authorization")
        if basic and basic.lower().startswith("basic "):
            try:
                cid, _, sec = base64.b64decode(basic.split(None, 1)[1]).decode().partition(":")
                client_id = client_id or urllib.parse.unquote_plus(cid)
                secret = secret or urllib.parse.unquote_plus(sec)
            except (ValueError, UnicodeDecodeError):
                pass
        req.audit_client_id = client_id
        grant = f.get("grant_type")
        if not grant:
            return self.error(req, 400, "invalid_request", 900144,
                              "The request body must contain the following parameter: 'grant_type'.")
        if grant != "client_credentials":
            return self.error(req, 400, "unsupported_grant_type", 70003,
                              f"The app requested an unsupported grant type '{grant}'.")
        if not client_id:
            return self.error(req, 400, "invalid_request", 900144,
                              "The request body must contain the following parameter: 'client_id'.")
        # resource: v2 takes scope=<resource>/.default (MSAL adds openid profile offline_access)
        if v1:
            resource = f.get("resource")
            if not resource:
                return self.error(req, 400, "invalid_request", 900144,
                                  "The request body must contain the following parameter: 'resource'.")
        else:
            scopes = (f.get("scope") or "").split()
            if not scopes:
                return self.error(req, 400, "invalid_request", 900144,
                                  "The request body must contain the following parameter: 'scope'.")
            defaults = [s for s in scopes if s.endswith("/.default")]
            others = [s for s in scopes if not s.endswith("/.default")
                      and s not in ("openid", "profile", "offline_access", "email")]
            if not defaults or others:
                bad = (others or scopes)[0]
                return self.error(req, 400, "invalid_scope", 1002012,
                                  f"The provided value for scope {bad} is not valid. Client credential "
                                  "flows must have a scope value with /.default suffixed to the "
                                  "resource identifier (application ID URI).")
            resource = defaults[0][:-len("/.default")]
        if not self.sim.app_known(client_id):
            return self.error(req, 400, "unauthorized_client", 700016,
                              f"Application with identifier '{client_id}' was not found in the directory "
                              f"'{self.sim.tenant}'. This can happen if the application has not been "
                              "installed by the administrator of the tenant or consented to by any user "
                              "in the tenant. You may have sent your authentication request to the wrong tenant.")
        assertion = f.get("client_assertion")
        if assertion is not None:
            if f.get("client_assertion_type") != ASSERTION_TYPE:
                return self.error(req, 400, "invalid_request", 900144,
                                  "The request body must contain the following parameter: "
                                  "'client_assertion_type'.")
            err, acr = self.check_assertion(req, client_id, assertion)
            if err:
                return err
        elif secret is not None:
            if secret not in self.sim.client_secrets():
                return self.error(req, 401, "invalid_client", 7000215,
                                  "Invalid client secret provided. Ensure the secret being sent in the "
                                  "request is the client secret value, not the client secret ID, for a "
                                  f"secret added to app '{client_id}'.")
            acr = "1"
        else:
            return self.error(req, 401, "invalid_client", 7000218,
                              "The request body must contain the following parameter: "
                              "'client_assertion' or 'client_secret'.")
        if not resource_known(resource):
            return self.error(req, 400, "invalid_resource", 500011,
                              f"The resource principal named {resource} was not found in the tenant "
                              f"named {self.sim.tenant}. This can happen if the application has not been "
                              "installed by the administrator of the tenant or consented to by any user "
                              "in the tenant. You might have sent your authentication request to the wrong tenant.")
        token, claims = self.sim.tokens.mint(self.sim.tenant, client_id.lower(),
                                             self.sim.app_object_id, resource, appidacr=acr)
        life = claims["exp"] - claims["iat"]
        body = {"token_type": "Bearer", "expires_in": life, "ext_expires_in": life,
                "access_token": token}
        if v1:
            body = {"token_type": "Bearer", "expires_in": str(life), "ext_expires_in": str(life),
                    "expires_on": str(claims["exp"]), "not_before": str(claims["nbf"]),
                    "resource": resource, "access_token": token}
        self.sim.log(f"issued token to {client_id} for {resource}")
        return Response(200, body, aad_headers())

    # ------------------------------------------------------------------
    def check_assertion(self, req, client_id, assertion):
        """-> (error Response or None, appidacr)."""
        try:
            header, claims, si, sig = jwtutil.split(assertion)
        except jwtutil.JWTError as e:
            return self.error(req, 400, "invalid_client", 50027,
                              f"JWT token is invalid or malformed. ({e})"), None
        iss = claims.get("iss")
        if isinstance(iss, str) and iss.lower() == client_id.lower():
            return self.check_cert_assertion(req, client_id, header, claims, si, sig), "2"
        if iss == self.sim.federated_issuer:
            return self.check_federated(req, client_id, header, claims, si, sig), "2"
        return self.error(req, 400, "invalid_client", 700211,
                          f"No matching federated identity record found for presented assertion issuer "
                          f"'{iss}'. Please check your federated identity credential Subject, Audience and "
                          "Issuer against the presented assertion. "
                          "https://learn.microsoft.com/entra/workload-id/workload-identity-federation"), None

    def time_window(self, req, claims):
        now = int(time.time())
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
        if not isinstance(exp, (int, float)):
            return self.error(req, 400, "invalid_client", 50027,
                              "JWT token is invalid or malformed. (missing 'exp' claim)")
        fmt = lambda t: time.strftime("%m/%d/%Y %H:%M:%S", time.gmtime(t))
        if exp < now - 300 or (isinstance(nbf, (int, float)) and nbf > now + 300):
            return self.error(req, 400, "invalid_client", 700024,
                              f"Client assertion is not within its valid time range. Current time: "
                              f"{fmt(now)}, assertion valid from {fmt(nbf or 0)}, expiry time of "
                              f"assertion {fmt(exp)}. {CERT_DOC}")
        return None

    def check_cert_assertion(self, req, client_id, header, claims, si, sig):
        alg = header.get("alg")
        certs = self.sim.client_certs
        if not certs:
            return self.error(req, 401, "invalid_client", 700027,
                              "Client assertion failed signature validation. Trace: no certificate "
                              "credential is registered on the application.")
        match = None

        def thumb(v):
            # Entra takes the thumbprint base64url or standard base64, padded or not (MSAL for Python,
            # as in Debian's python3-msal, sends standard base64 with '=' padding)
            if not isinstance(v, str) or not v:
                return None
            try:
                return base64.b64decode(v.replace("-", "+").replace("_", "/") + "=" * (-len(v) % 4),
                                        validate=True)
            except (ValueError, binascii.Error):
                return None
        x5t, x5t256 = thumb(header.get("x5t")), thumb(header.get("x5t#S256"))
        for c in certs:
            s1, s256 = (thumb(t) for t in jwtutil.cert_thumbprints(c))
            if alg in ("RS256", "PS256") and ((x5t is not None and x5t == s1) or
                                              (x5t256 is not None and x5t256 == s256)):
                match = c
        if match is None:
            tp = header.get("x5t#S256") or header.get("x5t")
            return self.error(req, 401, "invalid_client", 700027,
                              "The certificate with identifier used to sign the client assertion is not "
                              f"registered on application. [Reason - The key was not found., Thumbprint of "
                              f"key used by client: '{tp}', Please visit the Azure Portal, Graph Explorer "
                              "or directly use MS Graph to see configured keys for app Id "
                              f"'{client_id}'.]")
        if alg not in ("RS256", "PS256") or not jwtutil.verify_signature(match.public_key(), alg, si, sig):
            return self.error(req, 401, "invalid_client", 700027,
                              "Client assertion failed signature validation.")
        if claims.get("sub", "").lower() != client_id.lower():
            return self.error(req, 401, "invalid_client", 700021,
                              "Client assertion application identifier doesn't match 'client_id' "
                              f"parameter. {CERT_DOC}")
        err = self.time_window(req, claims)
        if err:
            return err
        aud = claims.get("aud")
        if not self.aud_ok(aud):
            return self.error(req, 401, "invalid_client", 700023,
                              f"Client assertion audience claim does not match Realm issuer. {CERT_DOC}")
        if not claims.get("jti"):
            return self.error(req, 400, "invalid_client", 50027,
                              "JWT token is invalid or malformed. (missing 'jti' claim)")
        self.sim.log(f"client assertion accepted: alg {alg}, "
                     f"{'x5t#S256' if 'x5t#S256' in header else 'x5t'}")
        return None

    def aud_ok(self, aud):
        if isinstance(aud, list):
            aud = aud[0] if len(aud) == 1 else None
        if not isinstance(aud, str):
            return False
        u = urllib.parse.urlsplit(aud)
        if u.scheme != "https" or u.port not in (self.sim.port, None) or \
                u.hostname not in ("127.0.0.1", "localhost", urllib.parse.urlsplit(self.sim.authority).hostname):
            return False
        t = self.sim.tenant.lower()
        return u.path.rstrip("/").lower() in (f"/{t}/oauth2/v2.0/token", f"/{t}/v2.0",
                                              f"/{t}/oauth2/token")

    def check_federated(self, req, client_id, header, claims, si, sig):
        if not jwtutil.verify_signature(self.sim.federated_public_key, header.get("alg"), si, sig):
            return self.error(req, 401, "invalid_client", 700027,
                              "Client assertion failed signature validation.")
        err = self.time_window(req, claims)
        if err:
            return err
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if FED_AUDIENCE not in auds:
            return self.error(req, 400, "invalid_client", 700212,
                              f"No matching federated identity record found for presented assertion "
                              f"audience '{aud}'. Please note that the matching is done using a "
                              "case-sensitive comparison. Check your federated identity credential "
                              "Subject, Audience and Issuer against the presented assertion.")
        if claims.get("sub") != self.sim.federated_subject:
            return self.error(req, 400, "invalid_client", 700213,
                              f"No matching federated identity record found for presented assertion "
                              f"subject '{claims.get('sub')}'. Please note that the matching is done using "
                              "a case-sensitive comparison. Check your federated identity credential "
                              "Subject, Audience and Issuer against the presented assertion.")
        self.sim.log(f"federated assertion accepted: iss {claims.get('iss')}, sub {claims.get('sub')}")
        return None
