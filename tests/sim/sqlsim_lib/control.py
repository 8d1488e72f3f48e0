"""Control endpoint: HTTP/JSON on 127.0.0.1 (see README.md, ## sqlsim, Control endpoint)."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ControlServer:
    def __init__(self, server, port):
        self.server = server
        sim = server

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, code, obj):
                body = json.dumps(obj, default=str).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                if not n:
                    return {}
                return json.loads(self.rfile.read(n).decode() or "{}")

            def do_GET(self):
                try:
                    code, obj = sim_get(sim, self.path)
                except Exception as e:   # never crash the simulator
                    code, obj = 500, {"error": str(e)}
                self._send(code, obj)

            def do_POST(self):
                try:
                    code, obj = sim_post(sim, self.path, self._body())
                except (ValueError, KeyError, TypeError) as e:
                    code, obj = 400, {"error": str(e)}
                except Exception as e:
                    code, obj = 500, {"error": str(e)}
                self._send(code, obj)

            def do_DELETE(self):
                if self.path.rstrip("/") == "/faults":
                    sim.faults.clear()
                    return self._send(200, sim.faults.to_json())
                self._send(404, {"error": "not found"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), H)
        self.httpd.daemon_threads = True

    def start(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _node_idx(sim, ref):
    for n in sim.state.nodes:
        if n.name.lower() == str(ref).lower() or str(n.idx) == str(ref):
            return n.idx
    raise KeyError(f"no node {ref}")


def status(sim):
    st = sim.state
    return {"ag": st.ag["name"], "primary": st.nodes[st.ag["primary"]].name,
            "readable_secondaries": st.ag["readable"], "force_encryption": sim.force_encryption,
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


def sim_get(sim, path):
    p = path.split("?")[0].rstrip("/")
    with sim.state.lock:
        if p in ("", "/status"):
            return 200, status(sim)
        if p == "/stats":
            return 200, sim.stats_json()
        if p == "/faults":
            return 200, sim.faults.to_json()
    return 404, {"error": "not found"}


FAULT_KEYS = {"latency_ms": int, "latency_handshake": bool, "drop_after_statements": int, "drop_at_pattern": str, "drop_when": str,
              "drop_node": str, "failover_at_statement": int, "failover_target": str, "downgrade": bool,
              "encrypt_not_sup": bool, "report_unencrypted": bool}


def sim_post(sim, path, body):
    p = path.split("?")[0].rstrip("/")
    if p == "/faults":
        f = sim.faults
        for k, v in body.items():
            if k == "force_encryption":
                sim.force_encryption = bool(v)
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
        return 200, out
    if p == "/faults/clear":
        sim.faults.clear()
        return 200, sim.faults.to_json()
    if p == "/stats/reset":
        sim.reset_stats()
        return 200, {}
    if p == "/failover":
        idx = _node_idx(sim, body.get("target", (sim.state.ag["primary"] + 1) % len(sim.state.nodes)))
        sim.failover(idx)
        return 200, status(sim)
    parts = p.strip("/").split("/")
    if len(parts) == 3 and parts[0] == "nodes" and parts[2] in ("down", "up"):
        idx = _node_idx(sim, parts[1])
        if parts[2] == "down":
            sim.node_down(idx)
        else:
            sim.node_up(idx)
        return 200, status(sim)
    return 404, {"error": "not found"}
