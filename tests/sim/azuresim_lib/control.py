"""Control API: plain HTTP JSON on 127.0.0.1:<control_port>.

GET  /health                 {"ok":true}
GET  /ready                  the ready line again
GET  /stats                  request counts (by surface, by status, with/without Authorization)
GET  /audit[?since=SEQ]      {"entries":[{seq,time,surface,method,path,query(names only),status,
                              authorization(bool),client_id,fault?}]}  - never values
POST /reset-audit            clear the audit trail and counters
GET  /faults                 the active fault rules
POST /fail      {"status":429|500|503|..., "count":K (default 1, -1 = forever),
                 "retry_after":N (optional: Retry-After header), "path_prefix":"/secrets" (optional),
                 "method":"GET" (optional)}
POST /drop      {"count":K, "path_prefix":opt}  close the connection without a response
POST /latency   {"ms":N, "path_prefix":opt}      (ms 0 removes all latency rules)
POST /delete-delay {"ms":N}  after DELETE the secret is 'being deleted' for N ms
                             (GET /deletedsecrets -> 404, PUT -> 409 ObjectIsBeingDeleted)
POST /reset                  clear all faults
POST /expire-tokens          every token issued so far is now expired (401 at Key Vault)
GET  /grants                 {"<client id>":[ops...]}
POST /grants    {"client_id":..., "ops":[get,set,list,delete,update,recover,purge] | ["all"]}
POST /reset-grants           back to the defaults (every known identity has all ops)
GET  /secrets                names, version ids, enabled/deleted flags - no values
POST /token     {"client_id":opt, "resource":opt, "lifetime":opt, "tenant":opt}
                 -> {"access_token":...} minted directly (e.g. a wrong-audience token)
POST /federated-token {"sub":opt, "aud":opt, "lifetime":opt}
                 -> {"token":...}; also rewrites the federated token file
"""
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .util import ALL_OPS


class ControlHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "azuresim-control"

    def log_message(self, fmt, *args):
        self.server.sim.log("control: " + (fmt % args))

    def reply(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        sim = self.server.sim
        u = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(u.query)
        p = u.path.rstrip("/")
        if p == "/health":
            return self.reply(200, {"ok": True})
        if p == "/ready":
            return self.reply(200, sim.ready)
        if p == "/stats":
            s = sim.audit.stats()
            s["tokens_issued"] = sim.tokens.issued
            s["token_generation"] = sim.tokens.generation
            return self.reply(200, s)
        if p == "/audit":
            since = int(q.get("since", ["0"])[0])
            return self.reply(200, {"entries": sim.audit.since(since)})
        if p == "/faults":
            return self.reply(200, sim.faults.snapshot())
        if p == "/grants":
            return self.reply(200, sim.grants.snapshot())
        if p == "/secrets":
            with sim.store.lock:
                out = []
                for r in sim.store.secrets.values():
                    out.append({"name": r["name"], "deleted": r.get("deleted") is not None,
                                "versions": [{"version": v["version"], "enabled": v["enabled"],
                                              "tags": v.get("tags"), "created": v["created"],
                                              "updated": v["updated"], "nbf": v.get("nbf"),
                                              "exp": v.get("exp")} for v in r["versions"]]})
            return self.reply(200, {"secrets": out})
        return self.reply(404, {"error": f"unknown control path {p}"})

    def do_POST(self):
        sim = self.server.sim
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            b = json.loads(raw) if raw.strip() else {}
            if not isinstance(b, dict):
                raise ValueError("body must be an object")
        except ValueError as e:
            return self.reply(400, {"error": f"bad JSON: {e}"})
        p = urllib.parse.urlsplit(self.path).path.rstrip("/")
        f = sim.faults
        try:
            if p == "/fail":
                rule = {"status": int(b.get("status", 503)), "count": int(b.get("count", 1)),
                        "retry_after": b.get("retry_after"), "path_prefix": b.get("path_prefix"),
                        "method": b.get("method")}
                with f.lock:
                    f.fail_rules.append(rule)
                return self.reply(200, {"ok": True, "rule": rule})
            if p == "/drop":
                rule = {"count": int(b.get("count", 1)), "path_prefix": b.get("path_prefix"),
                        "method": b.get("method")}
                with f.lock:
                    f.drop_rules.append(rule)
                return self.reply(200, {"ok": True, "rule": rule})
            if p == "/latency":
                ms = int(b.get("ms", 0))
                with f.lock:
                    if ms <= 0:
                        f.latency.clear()
                    else:
                        f.latency.append({"ms": ms, "path_prefix": b.get("path_prefix"),
                                          "method": b.get("method")})
                return self.reply(200, {"ok": True})
            if p == "/delete-delay":
                with f.lock:
                    f.delete_delay_ms = int(b.get("ms", 0))
                return self.reply(200, {"ok": True})
            if p == "/reset":
                f.clear()
                return self.reply(200, {"ok": True})
            if p == "/reset-audit":
                sim.audit.clear()
                return self.reply(200, {"ok": True})
            if p == "/expire-tokens":
                sim.tokens.expire_all()
                return self.reply(200, {"ok": True, "generation": sim.tokens.generation})
            if p == "/grants":
                cid = b.get("client_id")
                ops = b.get("ops")
                if not isinstance(cid, str) or not isinstance(ops, list):
                    return self.reply(400, {"error": "need client_id (string) and ops (list)"})
                bad = [o for o in ops if o not in ALL_OPS and o != "all"]
                if bad:
                    return self.reply(400, {"error": f"unknown ops {bad}; known: {ALL_OPS}"})
                sim.grants.set(cid, ops)
                return self.reply(200, {"ok": True, "grants": sim.grants.snapshot()})
            if p == "/reset-grants":
                sim.grants.reset()
                return self.reply(200, {"ok": True, "grants": sim.grants.snapshot()})
            if p == "/token":
                cid = b.get("client_id", sim.client_id)
                tok, c = sim.tokens.mint(b.get("tenant", sim.tenant), cid, b.get("object_id", sim.app_object_id),
                                         b.get("resource", "https://vault.azure.net"),
                                         lifetime=b.get("lifetime"))
                return self.reply(200, {"access_token": tok, "expires_on": c["exp"]})
            if p == "/federated-token":
                tok = sim.write_federated_token(sub=b.get("sub"), aud=b.get("aud"),
                                                lifetime=int(b.get("lifetime", 3600)),
                                                write=b.get("write", True))
                return self.reply(200, {"token": tok, "file": sim.federated_token_file})
        except (TypeError, ValueError) as e:
            return self.reply(400, {"error": str(e)})
        return self.reply(404, {"error": f"unknown control path {p}"})


def start_control(sim, port):
    srv = ThreadingHTTPServer(("127.0.0.1", port), ControlHandler)
    srv.daemon_threads = True
    srv.sim = sim
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    return srv
