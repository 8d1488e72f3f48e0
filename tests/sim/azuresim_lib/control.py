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
from common.control import ControlServer

from .util import ALL_OPS


def routes(sim):
    """(method, path) -> handler(req) -> (status, object)."""
    f = sim.faults

    def health(req):
        return 200, {"ok": True}

    def ready(req):
        return 200, sim.ready

    def stats(req):
        s = sim.audit.stats()
        s["tokens_issued"] = sim.tokens.issued
        s["token_generation"] = sim.tokens.generation
        s.update(sim.service.snapshot())
        return 200, s

    def audit(req):
        since = int(req.query.get("since", ["0"])[0])
        return 200, {"entries": sim.audit.since(since)}

    def faults(req):
        return 200, f.snapshot()

    def grants(req):
        return 200, sim.grants.snapshot()

    def secrets(req):
        with sim.store.lock:
            out = []
            for r in sim.store.secrets.values():
                out.append({"name": r["name"], "deleted": r.get("deleted") is not None,
                            "versions": [{"version": v["version"], "enabled": v["enabled"],
                                          "tags": v.get("tags"), "created": v["created"],
                                          "updated": v["updated"], "nbf": v.get("nbf"),
                                          "exp": v.get("exp")} for v in r["versions"]]})
        return 200, {"secrets": out}

    def fail(req):
        b = req.body
        rule = {"status": int(b.get("status", 503)), "count": int(b.get("count", 1)),
                "retry_after": b.get("retry_after"), "path_prefix": b.get("path_prefix"),
                "method": b.get("method")}
        with f.lock:
            f.fail_rules.append(rule)
        return 200, {"ok": True, "rule": rule}

    def drop(req):
        b = req.body
        rule = {"count": int(b.get("count", 1)), "path_prefix": b.get("path_prefix"),
                "method": b.get("method")}
        with f.lock:
            f.drop_rules.append(rule)
        return 200, {"ok": True, "rule": rule}

    def latency(req):
        b = req.body
        ms = int(b.get("ms", 0))
        with f.lock:
            if ms <= 0:
                f.latency.clear()
            else:
                f.latency.append({"ms": ms, "path_prefix": b.get("path_prefix"),
                                  "method": b.get("method")})
        return 200, {"ok": True}

    def delete_delay(req):
        with f.lock:
            f.delete_delay_ms = int(req.body.get("ms", 0))
        return 200, {"ok": True}

    def reset(req):
        f.clear()
        return 200, {"ok": True}

    def pin_created(req):
        # every version written from now on gets this `created` (null: the clock again), so that
        # versions share one second as quick writes do on the real service
        v = req.body.get("created")
        sim.store.pinned_created = None if v is None else int(v)
        return 200, {"ok": True}

    def reset_audit(req):
        sim.audit.clear()
        sim.service.snapshot(reset=True)
        return 200, {"ok": True}

    def expire_tokens(req):
        sim.tokens.expire_all()
        return 200, {"ok": True, "generation": sim.tokens.generation}

    def set_grants(req):
        cid = req.body.get("client_id")
        ops = req.body.get("ops")
        if not isinstance(cid, str) or not isinstance(ops, list):
            return 400, {"error": "need client_id (string) and ops (list)"}
        bad = [o for o in ops if o not in ALL_OPS and o != "all"]
        if bad:
            return 400, {"error": f"unknown ops {bad}; known: {ALL_OPS}"}
        sim.grants.set(cid, ops)
        return 200, {"ok": True, "grants": sim.grants.snapshot()}

    def reset_grants(req):
        sim.grants.reset()
        return 200, {"ok": True, "grants": sim.grants.snapshot()}

    def token(req):
        b = req.body
        cid = b.get("client_id", sim.client_id)
        tok, c = sim.tokens.mint(b.get("tenant", sim.tenant), cid, b.get("object_id", sim.app_object_id),
                                 b.get("resource", "https://vault.azure.net"),
                                 lifetime=b.get("lifetime"))
        return 200, {"access_token": tok, "expires_on": c["exp"]}

    def federated_token(req):
        b = req.body
        tok = sim.write_federated_token(sub=b.get("sub"), aud=b.get("aud"),
                                        lifetime=int(b.get("lifetime", 3600)),
                                        write=b.get("write", True))
        return 200, {"token": tok, "file": sim.federated_token_file}

    return {("GET", "/health"): health, ("GET", "/ready"): ready, ("GET", "/stats"): stats,
            ("GET", "/audit"): audit, ("GET", "/faults"): faults, ("GET", "/grants"): grants,
            ("GET", "/secrets"): secrets,
            ("POST", "/fail"): fail, ("POST", "/drop"): drop, ("POST", "/latency"): latency,
            ("POST", "/delete-delay"): delete_delay, ("POST", "/reset"): reset,
            ("POST", "/reset-audit"): reset_audit, ("POST", "/expire-tokens"): expire_tokens,
            ("POST", "/grants"): set_grants, ("POST", "/reset-grants"): reset_grants,
            ("POST", "/token"): token, ("POST", "/federated-token"): federated_token,
            ("POST", "/pin-created"): pin_created}


def start_control(sim, port):
    return ControlServer(port, routes(sim), log=lambda msg: sim.log("control: " + msg),
                         server_version="azuresim-control",
                         not_found=lambda p: {"error": f"unknown control path {p}"},
                         bad_json=lambda e: {"error": f"bad JSON: {e}"}).start()
