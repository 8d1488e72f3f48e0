"""azuresim main: argument parsing, the Sim object, TLS server, ready line."""
import argparse
import json
import os
import secrets
import signal
import sys
import threading
import time
import urllib.parse
import uuid

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from common import httpsd

from . import jwtutil
from .control import start_control
from .entra import Entra
from .keyvault import KeyVault, kv_error
from .msi import ManagedIdentity, IMDS_PATH, APPSERVICE_PATH, ARC_PATH, imds_error
from .store import Store
from .util import (ALL_OPS, Audit, Faults, Grants, Request, Response, TokenService)

NS = uuid.UUID("6f0f3a46-6b1e-4a4e-9a57-0d6d1c6c0a11")


def derived(*parts):
    return str(uuid.uuid5(NS, "/".join(parts)))


class Sim:
    def __init__(self, args):
        self.args = args
        self.service = httpsd.ServiceClock()     # shared by its HTTPS servers (/stats service_ms)
        self.state = os.path.abspath(args.state)
        os.makedirs(self.state, exist_ok=True)
        self.port = args.port
        self.tenant = args.tenant
        self.tenant_domains = [d.lower() for d in (args.tenant_domain or [])]
        self.client_id = args.client_id.lower()
        self.vault_name = args.vault_name
        self.authority = args.authority_host or f"https://127.0.0.1:{self.port}"
        self.app_object_id = derived("app", self.tenant, self.client_id)
        self.secret_files = args.client_secret_file
        self.client_certs = []
        for p in args.client_cert or []:
            self.client_certs += jwtutil.load_certs(p)
        self.identities = [
            {"kind": "system", "client_id": (args.mi_client_id or derived("mi-system", self.tenant)).lower(),
             "object_id": derived("mi-system-oid", self.tenant)},
            {"kind": "user", "client_id": (args.user_mi_client_id or derived("mi-user", self.tenant)).lower(),
             "object_id": derived("mi-user-oid", self.tenant)},
        ]
        rg = "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/azuresim/providers"
        self.identities[0]["resource_id"] = f"{rg}/Microsoft.Compute/virtualMachines/azuresim-vm"
        self.identities[1]["resource_id"] = \
            f"{rg}/Microsoft.ManagedIdentity/userAssignedIdentities/azuresim-uami"
        self.identity_header = args.identity_header or secrets.token_hex(16)
        self.arc_key_dir = os.path.abspath(args.arc_key_dir or os.path.join(self.state, "arc-tokens"))
        os.makedirs(self.arc_key_dir, exist_ok=True)
        self.log_lock = threading.Lock()
        self.store = Store(os.path.join(self.state, "secrets.json"))
        self.tokens = TokenService(self.state, args.token_lifetime)
        defaults = {self.client_id: list(ALL_OPS)}
        for i in self.identities:
            defaults[i["client_id"]] = list(ALL_OPS)
        self.grants = Grants(os.path.join(self.state, "grants.json"), defaults)
        self.faults = Faults()
        self.audit = Audit(os.path.join(self.state, "audit.jsonl"))
        self.setup_federation(args)
        self.kv = KeyVault(self)
        self.entra = Entra(self)
        self.msi = ManagedIdentity(self)
        self.ready = {}

    # -- configuration helpers ---------------------------------------------
    def setup_federation(self, args):
        self.federated_issuer = args.federated_issuer
        self.federated_subject = args.federated_subject
        key_path = args.federated_issuer_key or os.path.join(self.state, "federated-issuer.key")
        if not os.path.exists(key_path):
            k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        self.federated_issuer_key = os.path.abspath(key_path)
        self.federated_public_key, self.federated_private_key = jwtutil.load_public_key(key_path)
        self.federated_token_file = os.path.join(self.state, "federated-token")
        if self.federated_private_key is not None:
            self.write_federated_token()

    def write_federated_token(self, sub=None, aud=None, lifetime=3600, write=True):
        if self.federated_private_key is None:
            raise ValueError("no federated issuer private key available")
        now = int(time.time())
        claims = {"aud": [aud or "api://AzureADTokenExchange"], "iss": self.federated_issuer,
                  "sub": sub or self.federated_subject, "iat": now, "nbf": now, "exp": now + lifetime,
                  "jti": str(uuid.uuid4())}
        tok = jwtutil.sign(self.federated_private_key, {"typ": "JWT", "kid": "azuresim-oidc"}, claims)
        if write:
            tmp = self.federated_token_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(tok)
            os.replace(tmp, self.federated_token_file)
        return tok

    def client_secrets(self):
        out = set()
        for p in self.secret_files:
            try:
                with open(p) as f:
                    for line in f.read().splitlines():
                        if line.strip():
                            out.add(line.strip())
            except OSError as e:
                self.log(f"cannot read client secret file {p}: {e}")
        return out

    def app_known(self, client_id):
        return client_id.lower() == self.client_id

    def log(self, msg):
        with self.log_lock:
            sys.stderr.write(f"azuresim: {time.strftime('%H:%M:%S')} {msg}\n")
            sys.stderr.flush()

    # -- dispatch ------------------------------------------------------------
    def surface(self, path):
        lp = path.lower()
        if lp.startswith(ARC_PATH) or lp.startswith("/arc/"):
            return "arc"
        if lp.startswith(IMDS_PATH) or lp.startswith("/metadata/"):
            return "imds"
        if lp.startswith(APPSERVICE_PATH):
            return "appservice"
        if lp == "/secrets" or lp.startswith("/secrets/") or lp == "/deletedsecrets" \
                or lp.startswith("/deletedsecrets/"):
            return "keyvault"
        if lp.startswith("/common/discovery") or "/oauth2/" in lp or "/v2.0/" in lp \
                or "/.well-known/" in lp or "/discovery/" in lp:
            return "entra"
        return "other"

    def fault_response(self, surface, req, rule):
        status = rule["status"]
        extra = []
        if rule.get("retry_after") is not None:
            extra.append(("Retry-After", str(rule["retry_after"])))
        if surface == "keyvault" or surface == "other":
            code, msg = {429: ("Throttled", "Request was not processed because too many requests "
                                            "were received. Reason: VaultRequestTypeLimitReached"),
                         500: ("InternalServerError", "An internal server error occurred."),
                         503: ("ServiceUnavailable", "The service is temporarily unavailable. "
                                                     "Please retry later.")}.get(
                status, ("Error", f"Injected failure with status {status}."))
            return kv_error(req, status, code, msg, extra_headers=extra)
        if surface == "entra":
            if status == 429:
                return self.entra.error(req, 429, "temporarily_unavailable", 50196,
                                        "The server terminated an operation because it encountered a "
                                        "client request loop.", extra)
            return self.entra.error(req, status, "temporarily_unavailable", 90033,
                                    "A transient error has occurred. Please try again.", extra)
        if surface == "appservice":
            return Response(status, {"statusCode": status, "message": "Injected failure",
                                     "correlationId": str(uuid.uuid4())}, extra)
        desc = {429: "Too many requests", 404: "IMDS is updating. Please retry."}.get(
            status, "Internal server error")
        return imds_error(status, "server_error" if status >= 500 else "too_many_requests"
                          if status == 429 else "not_found", desc, extra)

    def handle(self, req, plain=False):
        surface = self.surface(req.path)
        if plain and surface not in ("imds", "arc", "appservice"):
            resp = Response(404, {"error": "not_found", "error_description": "Not found"})
            self.audit.add("other", req, 404)
            return resp
        ms = self.faults.latency_ms(req)
        if ms:
            httpsd.latency_sleep(ms / 1000.0)
        if self.faults.take(self.faults.drop_rules, req):
            self.audit.add(surface, req, 0, fault="drop")
            return Response.DROP
        rule = self.faults.take(self.faults.fail_rules, req)
        if rule:
            resp = self.fault_response(surface, req, rule)
            self.audit.add(surface, req, resp.status, fault="fail")
            return resp
        try:
            if surface == "keyvault":
                resp = self.kv.handle(req)
            elif surface == "entra":
                resp = self.entra.handle(req)
            elif surface == "imds":
                resp = self.msi.imds(req) if req.path.rstrip("/").lower() == IMDS_PATH else \
                    imds_error(404, "not_found", "The requested resource was not found")
            elif surface == "arc":
                resp = self.msi.imds(req, arc=True) if req.path.rstrip("/").lower() == ARC_PATH else \
                    imds_error(404, "not_found", "The requested resource was not found")
            elif surface == "appservice":
                resp = self.msi.appservice(req)
            else:
                # unknown paths answer like Key Vault would (the vault host is the default)
                resp = kv_error(req, 404, "NotFound", f"The requested resource {req.path} was not found.")
        except Exception as e:        # a bug in the sim must not hang the client
            import traceback
            traceback.print_exc()
            resp = Response(500, {"error": {"code": "InternalServerError", "message": f"azuresim bug: {e}"}})
        self.audit.add(surface if surface != "entra" or "/token" not in req.path else "entra-token",
                       req, resp.status)
        return resp


class Handler(httpsd.Handler):
    server_version = "azuresim"

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):
        self.server.sim.log(f"{self.client_address[0]} " + (fmt % args))

    def dispatch(self):
        sim = self.server.sim
        body = self.read_body()
        if body is None:
            return
        u = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        path = urllib.parse.unquote(u.path) or "/"
        host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_address[1]}"
        req = Request(self.command, path, query, self.headers, body, host, self.client_address[0])
        resp = sim.handle(req, plain=self.server.plain)
        if resp is Response.DROP:
            self.drop_connection()
            return
        self.send_response(resp.status)
        for k, v in resp.headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = dispatch


def https_server(port, sim, ctx, plain=False):
    srv = httpsd.Server(("127.0.0.1", port), Handler, ctx, log=sim.log)
    srv.sim, srv.plain = sim, plain
    srv.service = sim.service
    return srv


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="azuresim", description=__doc__)
    ap.add_argument("--state", required=True, help="state directory (secrets, keys, audit)")
    ap.add_argument("--port", type=int, required=True, help="HTTPS port on 127.0.0.1")
    ap.add_argument("--tls-cert", required=True)
    ap.add_argument("--tls-key", required=True)
    ap.add_argument("--tenant", required=True, help="the tenant id (GUID)")
    ap.add_argument("--tenant-domain", action="append", default=[],
                    help="a domain name of the tenant (contoso.onmicrosoft.com): the token and OpenID "
                         "configuration endpoints take it for the tenant id (repeatable)")
    ap.add_argument("--client-id", required=True, help="the application (client) id")
    ap.add_argument("--client-secret-file", required=True, action="append",
                    help="file whose non-empty lines are valid client secrets (re-read on each "
                         "request; repeatable)")
    ap.add_argument("--client-cert", action="append",
                    help="PEM certificate(s) registered on the app for client assertions (repeatable)")
    ap.add_argument("--control-port", type=int, help="plain-HTTP control port (default port+1)")
    ap.add_argument("--imds-http-port", type=int,
                    help="also serve IMDS/App Service/Arc over plain HTTP on this port")
    ap.add_argument("--vault-name", default="azuresim", help="vault name used in RBAC messages")
    ap.add_argument("--authority-host", help="authority URL advertised (default https://127.0.0.1:PORT)")
    ap.add_argument("--token-lifetime", type=int, default=3599, help="access token lifetime (s)")
    ap.add_argument("--identity-header", help="App Service X-IDENTITY-HEADER value (default random)")
    ap.add_argument("--arc-key-dir", help="where Arc challenge key files go (default STATE/arc-tokens)")
    ap.add_argument("--mi-client-id", help="client id of the system-assigned managed identity")
    ap.add_argument("--user-mi-client-id", help="client id of the user-assigned managed identity")
    ap.add_argument("--federated-issuer", default="https://oidc.azuresim.invalid/",
                    help="issuer accepted for federated (workload identity) assertions")
    ap.add_argument("--federated-subject", default="system:serviceaccount:default:dmkagent",
                    help="subject accepted for federated assertions")
    ap.add_argument("--federated-issuer-key",
                    help="PEM key (private, public or certificate) of the federated issuer "
                         "(default: generated at STATE/federated-issuer.key)")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    sim = Sim(args)
    srv = https_server(args.port, sim, httpsd.tls_context(args.tls_cert, args.tls_key))
    cport = args.control_port or args.port + 1
    ctl = start_control(sim, cport)
    servers = [srv, ctl]
    base = f"https://127.0.0.1:{args.port}"
    ready = {
        "vault_url": base, "authority_host": sim.authority, "tenant": sim.tenant,
        "client_id": sim.client_id, "token_endpoint": f"{sim.authority}/{sim.tenant}/oauth2/v2.0/token",
        "imds_endpoint": f"{base}{IMDS_PATH}", "identity_endpoint": f"{base}{APPSERVICE_PATH}",
        "identity_header": sim.identity_header,
        "arc_identity_endpoint": f"{base}{ARC_PATH}", "arc_imds_endpoint": f"{base}/arc",
        "arc_key_dir": sim.arc_key_dir,
        "mi_client_id": sim.identities[0]["client_id"], "mi_object_id": sim.identities[0]["object_id"],
        "mi_resource_id": sim.identities[0]["resource_id"],
        "user_mi_client_id": sim.identities[1]["client_id"],
        "user_mi_object_id": sim.identities[1]["object_id"],
        "user_mi_resource_id": sim.identities[1]["resource_id"],
        "federated_issuer": sim.federated_issuer, "federated_subject": sim.federated_subject,
        "federated_issuer_key": sim.federated_issuer_key,
        "federated_token_file": sim.federated_token_file if sim.federated_private_key else None,
        "control_port": cport, "control_url": f"http://127.0.0.1:{cport}",
        "port": args.port, "state": sim.state, "pid": os.getpid(),
    }
    if args.imds_http_port:
        servers.append(https_server(args.imds_http_port, sim, None, plain=True).start())
        hb = f"http://127.0.0.1:{args.imds_http_port}"
        ready.update({"imds_http_endpoint": f"{hb}{IMDS_PATH}",
                      "identity_http_endpoint": f"{hb}{APPSERVICE_PATH}",
                      "arc_identity_http_endpoint": f"{hb}{ARC_PATH}"})
    sim.ready = ready

    stop = threading.Event()

    def on_term(signum, frame):
        stop.set()
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    srv.start()
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    sim.log(f"listening on {base} (control http://127.0.0.1:{cport}), tenant {sim.tenant}")
    while not stop.wait(0.5):
        pass
    sim.log("stopping")
    for s in servers:
        s.stop()
    return 0
