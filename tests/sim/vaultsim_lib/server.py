"""HTTPS front end, fault injection and the plain-HTTP control endpoint."""
import argparse
import collections
import json
import os
import signal
import sys
import threading
import time
import urllib.parse

from common import httpsd
from common.control import ControlServer

from .core import Resp, Vault
from .util import rfc1123

REDACT = {"x-vault-token", "authorization", "cookie"}


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.fail = None          # dict(status, count, retry_after, path_prefix, message, skip)
        self.latency_ms = 0
        self.drop = 0
        self.counts = collections.Counter()
        self.by_path = collections.Counter()
        self.by_status = collections.Counter()
        self.last = collections.deque(maxlen=100)
        self.total = 0
        self.service = httpsd.ServiceClock()     # the HTTPS server's (main() shares it)

    def take_fail(self, path):
        with self.lock:
            f = self.fail
            if not f:
                return None
            pp = f.get("path_prefix")
            if pp:
                p1 = path.split("?")[0]
                p2 = p1[4:] if p1.startswith("/v1/") else p1
                if not (p1.startswith(pp) or p2.startswith(pp.lstrip("/")) or p2.startswith(pp)):
                    return None
            if f.get("skip", 0) > 0:      # the first skip matching requests still pass
                f["skip"] -= 1
                return None
            if f["count"] > 0:
                f["count"] -= 1
                if f["count"] == 0:
                    self.fail = None
            return dict(f)

    def take_drop(self):
        with self.lock:
            if self.drop > 0:
                self.drop -= 1
                return True
            return False


def fault_response(f, path):
    st = int(f.get("status", 500))
    msg = f.get("message")
    hdrs = {}
    if st == 429:
        body = {"errors": [msg or f"request path \"{path.split('?')[0][4:]}\": rate limit quota exceeded"]}
        ra = int(f.get("retry_after", 1) or 0)
        if ra:
            hdrs["Retry-After"] = str(ra)
            hdrs["X-Ratelimit-Limit"] = "1"
            hdrs["X-Ratelimit-Remaining"] = "0"
            hdrs["X-Ratelimit-Reset"] = rfc1123(time.time() + ra)
    elif st == 503:
        body = {"errors": [msg or "Vault is sealed"]}
        if f.get("retry_after"):
            hdrs["Retry-After"] = str(int(f["retry_after"]))
    elif st == 500:
        body = {"errors": [msg or "1 error occurred:\n\t* internal error\n\n"]}
    else:
        body = {"errors": [msg] if msg else []}
        if f.get("retry_after"):
            hdrs["Retry-After"] = str(int(f["retry_after"]))
    return Resp(st, body, hdrs)


class VaultHandler(httpsd.Handler):
    server_version = "vaultsim"
    sys_version = ""

    def log_message(self, fmt, *args):
        sys.stderr.write("vaultsim: %s\n" % (fmt % args))

    def _send(self, resp, head=False):
        body = b""
        if resp.body is not None:
            body = json.dumps(resp.body).encode() + b"\n"
        self.send_response(resp.status)
        self.send_header("Cache-Control", "no-store")
        if resp.body is not None:
            self.send_header("Content-Type", "application/json")
        for k, val in resp.headers.items():
            self.send_header(k, val)
        self.send_header("Content-Length", "0" if head else str(len(body)))
        self.end_headers()
        if not head and resp.status != 204:
            self.wfile.write(body)

    def _go(self):
        srv = self.server
        faults = srv.faults
        raw = self.read_body()
        if raw is None:
            return
        method = self.command.upper()
        parsed = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
        hdrs = {k.lower(): v for k, v in self.headers.items()}
        key = f"{method} {parsed.path}"
        with faults.lock:
            faults.total += 1
            faults.counts[key] += 1
            faults.by_path[parsed.path] += 1
        if faults.latency_ms:
            httpsd.latency_sleep(faults.latency_ms / 1000.0)
        status = None
        try:
            if faults.take_drop():
                status = "dropped"
                self.drop_connection()
                return
            f = faults.take_fail(parsed.path)
            if f:
                resp = fault_response(f, parsed.path)
                status = resp.status
                self._send(resp, method == "HEAD")
                return
            active = getattr(faults, "standby_active", None)
            if active and parsed.path.startswith("/v1/") and not parsed.path.startswith(
                    ("/v1/sys/health", "/v1/sys/leader", "/v1/sys/seal-status")):
                # A standby with request forwarding off: 307 to the active node's address, the same
                # path and query, no body (vault/http/handler.go respondStandby)
                loc = active + parsed.path + (("?" + parsed.query) if parsed.query else "")
                resp = Resp(307, None, headers={"Location": loc})
                status = 307
                self._send(resp, method == "HEAD")
                return
            if not parsed.path.startswith("/v1/"):
                resp = Resp(404, {"errors": []})
                status = 404
                self._send(resp)
                return
            if method == "GET" and query.get("list", "").lower() in ("true", "1"):
                method = "LIST"
            data = {}
            if raw.strip():
                ctype = hdrs.get("content-type", "")
                try:
                    data = json.loads(raw)
                except ValueError as e:
                    if "x-www-form-urlencoded" in ctype:
                        data = {k: v[-1] for k, v in urllib.parse.parse_qs(raw.decode()).items()}
                    else:
                        resp = Resp(400, {"errors": [f"failed to parse JSON input: {e}"]})
                        status = 400
                        self._send(resp)
                        return
            if method == "PATCH":
                ctype = hdrs.get("content-type", "").split(";")[0].strip()
                if ctype != "application/merge-patch+json":
                    resp = Resp(415, {"errors": [f"PATCH requires Content-Type of application/merge-patch+json, "
                                                 f"provided \"{ctype}\""]})
                    status = 415
                    self._send(resp)
                    return
            if method in ("GET", "LIST", "HEAD") and not data:
                data = {k: v for k, v in query.items() if k != "list"}
            peer = None
            try:
                peer = self.connection.getpeercert(binary_form=True)
            except (AttributeError, ValueError):
                peer = None
            resp = srv.vault.handle(method, parsed.path[4:], query, hdrs, data, peer, self.client_address[0])
            status = resp.status
            self._send(resp, method == "HEAD")
        finally:
            with faults.lock:
                faults.by_status[str(status)] += 1
                faults.last.append({"time": time.time(), "method": method, "path": parsed.path,
                                    "query": parsed.query, "status": status,
                                    "headers": {k: ("<redacted>" if k.lower() in REDACT else v)
                                                for k, v in self.headers.items()}})
            self.log_message("%s %s -> %s", method, parsed.path, status)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_LIST = do_HEAD = _go


def control_routes(vault, f):
    """The control endpoint (plain HTTP, README.md ## vaultsim): (method, path) -> handler."""
    def stats(req):
        with f.lock:
            return 200, {"total": f.total, "requests": dict(f.counts), "by_path": dict(f.by_path),
                         "by_status": dict(f.by_status), "last": list(f.last),
                         "sealed": vault.sealed, "latency_ms": f.latency_ms, "drop": f.drop,
                         "fail": f.fail, **f.service.snapshot()}

    def health(req):
        return 200, {"ok": True, "sealed": vault.sealed}

    def ok(fn):
        def route(req):
            fn(req.body, req.path)
            return 200, {"ok": True}
        return route

    def seal(d, p):
        with vault.lock:
            vault.sealed = p == "/seal"

    def fail(d, p):
        with f.lock:
            st = int(d.get("status", 500))
            if st == 0:
                f.fail = None
            else:
                f.fail = {"status": st, "count": int(d.get("count", 1)),
                          "retry_after": d.get("retry_after"), "path_prefix": d.get("path_prefix"),
                          "message": d.get("message"), "skip": int(d.get("skip", 0) or 0)}

    def latency(d, p):
        f.latency_ms = int(d.get("ms", 0))

    def standby(d, p):
        # {"active": "https://host:port"}: act as a standby that redirects there; null: active again
        f.standby_active = (d.get("active") or "").rstrip("/") or None

    def drop(d, p):
        with f.lock:
            f.drop = int(d.get("count", 1))

    def expire_tokens(d, p):
        with vault.lock:
            now = time.time()
            for te in vault.st["tokens"].values():
                if not te.get("root_file"):
                    te["expire_at"] = now - 1
            vault.save()

    def reset(d, p):
        with f.lock:
            f.fail = None
            f.drop = 0
            f.latency_ms = 0
            if p == "/reset" or d.get("stats"):
                f.counts.clear()
                f.by_path.clear()
                f.by_status.clear()
                f.last.clear()
                f.total = 0
                f.service.snapshot(reset=True)

    return {("GET", "/stats"): stats, ("GET", "/health"): health, ("GET", ""): health,
            ("POST", "/seal"): ok(seal), ("POST", "/unseal"): ok(seal), ("POST", "/fail"): ok(fail),
            ("POST", "/latency"): ok(latency), ("POST", "/drop"): ok(drop),
            ("POST", "/expire-tokens"): ok(expire_tokens), ("POST", "/reset"): ok(reset),
            ("POST", "/clear"): ok(reset), ("POST", "/standby"): ok(standby)}


def _log(msg):
    sys.stderr.write(f"vaultsim: {msg}\n")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="vaultsim", description="HashiCorp Vault simulator")
    ap.add_argument("--state", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls-cert", required=True)
    ap.add_argument("--tls-key", required=True)
    ap.add_argument("--root-token-file", required=True)
    ap.add_argument("--control-port", type=int, default=None)
    ap.add_argument("--client-ca", default=None)
    a = ap.parse_args(argv)
    os.makedirs(a.state, exist_ok=True)
    with open(a.root_token_file) as fh:
        root = fh.read().strip()
    if not root:
        sys.exit("vaultsim: empty root token file")
    vault = Vault(a.state, root)
    ctx = httpsd.tls_context(a.tls_cert, a.tls_key, client_ca=a.client_ca)
    faults = Faults()
    # the connection keeps the 30 s handshake timeout: an idle keep-alive connection is closed
    srv = httpsd.Server(("127.0.0.1", a.port), VaultHandler, ctx, log=_log, keep_timeout=True)
    srv.vault, srv.faults = vault, faults
    srv.service = faults.service
    cport = a.control_port if a.control_port is not None else a.port + 1
    csrv = ControlServer(cport, control_routes(vault, faults),
                         log=lambda msg: sys.stderr.write(f"vaultsim-control: {msg}\n"),
                         not_found=lambda p: {"error": "unknown control path"},
                         bad_json=lambda e: {"error": "bad json"}).start()

    def stop(signum, frame):
        with vault.lock:
            vault.save()
        sys.stderr.write("vaultsim: stopping\n")
        sys.stderr.flush()
        os._exit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    port = srv.server_address[1]
    sys.stdout.write(json.dumps({"port": port, "address": f"https://127.0.0.1:{port}",
                                 "control_port": csrv.port, "pid": os.getpid()}) + "\n")
    sys.stdout.flush()
    srv.serve_forever()
