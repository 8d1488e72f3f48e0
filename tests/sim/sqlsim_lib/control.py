"""Control endpoint: HTTP/JSON on 127.0.0.1 (see README.md, ## sqlsim, Control endpoint)."""
from common.control import ControlServer as _Control


class ControlServer:
    def __init__(self, server, port):
        self.server = server
        sim = server

        def locked(fn):
            def route(req):
                with sim.state.lock:
                    return 200, fn()
            return route

        def delete_faults(req):
            sim.faults.clear()
            return 200, sim.faults.to_json()

        routes = {("GET", ""): locked(lambda: status(sim)),
                  ("GET", "/status"): locked(lambda: status(sim)),
                  ("GET", "/stats"): locked(sim.stats_json),
                  ("GET", "/faults"): locked(sim.faults.to_json),
                  ("DELETE", "/faults"): delete_faults}
        for path, fn in POST_ROUTES.items():
            routes[("POST", path)] = (lambda fn: lambda req: fn(sim, req))(fn)
        self.ctl = _Control(port, routes, json_default=str)

    def start(self):
        self.ctl.start()

    def stop(self):
        self.ctl.stop()


def _node_idx(sim, ref):
    for n in sim.state.nodes:
        if n.name.lower() == str(ref).lower() or str(n.idx) == str(ref):
            return n.idx
    raise KeyError(f"no node {ref}")


def status(sim):
    st = sim.state
    return {"ag": st.ag["name"], "primary": st.nodes[st.ag["primary"]].name,
            "readable_secondaries": st.ag["readable"], "force_encryption": sim.force_encryption,
            "strict": sim.strict,
            "nodes": [{"name": n.name, "port": st.base_port + n.idx, "up": n.up,
                       "role": "PRIMARY" if n.idx == st.ag["primary"] else "SECONDARY",
                       "smk_guid": n.d["smk"]["key_guid"],
                       "credentials": [{"credential_id": int(k), "name": c["name"], "family_guid": c.get("family_guid")}
                                       for k, c in sorted(n.d["credentials"].items())],
                       "sessions": len(sim.sessions_of(n))}
                      for n in st.nodes],
            "databases": {name: {"family_guid": d["family_guid"],
                                 "dmk_key_guid": d["dmk"]["key_guid"] if d.get("dmk") else None,
                                 "dmk_encryptions": [{"kind": e["kind"],
                                                      "smk_node": (st.nodes[e["node"]].name if e["kind"] == "smk"
                                                                   and e.get("node") is not None else None)}
                                                     for e in (d["dmk"]["encryptions"] if d.get("dmk") else [])],
                                 "certificates": sorted(d["certificates"])}
                          for name, d in st.ag["databases"].items()},
            "faults": sim.faults.to_json()}


FAULT_KEYS = {"latency_ms": int, "latency_handshake": bool, "drop_after_statements": int, "drop_at_pattern": str, "drop_when": str,
              "drop_node": str, "failover_at_statement": int, "failover_target": str, "downgrade": bool,
              "encrypt_not_sup": bool, "report_unencrypted": bool}


def post_faults(sim, req):
    body = req.body
    f = sim.faults
    for k, v in body.items():
        if k == "force_encryption":
            sim.force_encryption = bool(v)
            continue
        if k == "strict":
            sim.strict = bool(v)
            continue
        if k == "readable_secondaries":
            v = {"yes": "all", "all": "all", "no": "no", "read_only": "read_only",
                 "read-only": "read_only"}[str(v).lower()]
            with sim.state.lock:
                sim.state.ag["readable"] = v
                sim.state.save()
            continue
        if k not in FAULT_KEYS:
            raise KeyError(f"unknown fault {k}")
        setattr(f, k, None if v is None else FAULT_KEYS[k](v))
        if k in ("drop_after_statements", "failover_at_statement"):
            f.statements = 0
    if "drop_when" in body and body["drop_when"] not in ("before", "after"):
        raise ValueError("drop_when must be before or after")
    out = f.to_json()
    out["force_encryption"] = sim.force_encryption
    out["strict"] = sim.strict
    return 200, out


def post_faults_clear(sim, req):
    sim.faults.clear()
    return 200, sim.faults.to_json()


def post_stats_reset(sim, req):
    sim.reset_stats()
    return 200, {}


def post_failover(sim, req):
    idx = _node_idx(sim, req.body.get("target", (sim.state.ag["primary"] + 1) % len(sim.state.nodes)))
    sim.failover(idx)
    return 200, status(sim)


def post_node_down(sim, req):
    sim.node_down(_node_idx(sim, req.args["node"]))
    return 200, status(sim)


def post_node_up(sim, req):
    sim.node_up(_node_idx(sim, req.args["node"]))
    return 200, status(sim)


def post_browser(sim, req):
    if sim.browser is None:
        raise ValueError("no --browser-port")
    mode = req.body.get("mode", "normal")
    if mode not in ("normal", "silent", "garbage", "other-instance", "no-tcp"):
        raise ValueError("mode: normal, silent, garbage, other-instance or no-tcp")
    sim.browser.mode = mode
    return 200, {"mode": mode, "requests": sim.browser.requests}


def post_shape(sim, req):
    shapes = req.body.get("shapes", [])
    known = {"no-routing-urls", "null-role-disconnected", "null-primary-on-secondary"}
    if not set(shapes) <= known:
        raise ValueError(f"shapes: {sorted(known)}")
    sim.shapes = set(shapes)
    return 200, {"shapes": sorted(sim.shapes)}


# path -> handler(sim, req) -> (status, object)
POST_ROUTES = {
    "/faults": post_faults,
    "/faults/clear": post_faults_clear,
    "/stats/reset": post_stats_reset,
    "/failover": post_failover,
    "/nodes/{node}/down": post_node_down,
    "/nodes/{node}/up": post_node_up,
    "/browser": post_browser,
    "/shape": post_shape,
}
