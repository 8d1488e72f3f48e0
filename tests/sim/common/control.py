"""The simulators' control endpoint: plain HTTP with JSON bodies on 127.0.0.1.

    routes = {("GET", "/stats"): fn, ("POST", "/fail"): fn, ...}
    ctl = ControlServer(port, routes, log=log).start()   ...   ctl.stop()

A route function is fn(req) -> (status, object): req.path, req.query (parse_qs() of the
query string), req.body (the JSON object posted; empty or absent: {}) and req.args (the
path segments a "{name}" in the route's path stood for, by name).  Paths are matched
without the query and without trailing slashes ("/" is "").  A ValueError, KeyError
or TypeError from a route is a 400, anything else a 500, both {"error": str(e)}; an
unknown path gets not_found(path), a method no route has gets 501.
Each simulator keeps its own messages (not_found, bad_json) and log prefix.
"""
import json
import urllib.parse

from .httpsd import Handler, Server


class Request:
    def __init__(self, path, query, body, args):
        self.path, self.query, self.body, self.args = path, query, body, args


def _match(pattern, path):
    ps, xs = pattern.split("/"), path.split("/")
    if len(ps) != len(xs):
        return None
    args = {}
    for p, x in zip(ps, xs):
        if p.startswith("{") and p.endswith("}"):
            args[p[1:-1]] = x
        elif p != x:
            return None
    return args


def _not_found(path):
    return {"error": "not found"}


def _bad_json(e):
    return {"error": str(e)}


class ControlServer:
    def __init__(self, port, routes, log=None, server_version=None, not_found=_not_found,
                 bad_json=_bad_json, json_default=None):
        methods = {m for m, _p in routes}
        patterns = [(m, p, fn) for (m, p), fn in routes.items() if "{" in p]

        def find(method, path):
            fn = routes.get((method, path))
            if fn is not None:
                return fn, {}
            for m, p, f in patterns:
                args = _match(p, path) if m == method else None
                if args is not None:
                    return f, args
            return None, None

        class H(Handler):
            def log_message(self, fmt, *args):
                if log:
                    log(fmt % args)

            def _route(self):
                if self.command not in methods:
                    self.send_error(501, "Unsupported method (%r)" % self.command)
                    return
                path, _, qs = self.path.partition("?")
                path = path.rstrip("/")
                body = {}
                if self.command == "POST":
                    raw = self.read_body()
                    if raw is None:
                        return
                    try:
                        body = json.loads(raw) if raw.strip() else {}
                        if not isinstance(body, dict):
                            raise ValueError("body must be an object")
                    except ValueError as e:
                        return self.send_json(400, bad_json(e), json_default)
                fn, args = find(self.command, path)
                if fn is None:
                    return self.send_json(404, not_found(path), json_default)
                try:
                    code, obj = fn(Request(path, urllib.parse.parse_qs(qs), body, args))
                except (ValueError, KeyError, TypeError) as e:
                    code, obj = 400, {"error": str(e)}
                except Exception as e:     # never crash the simulator
                    code, obj = 500, {"error": str(e)}
                self.send_json(code, obj, json_default)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _route

        if server_version:
            H.server_version = server_version
        self.httpd = Server(("127.0.0.1", port), H, None)

    @property
    def port(self):
        return self.httpd.port

    def start(self):
        self.httpd.start()
        return self

    def stop(self):
        self.httpd.stop()
