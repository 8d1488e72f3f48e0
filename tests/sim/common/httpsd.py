"""Threaded HTTP(S) servers for the simulators (vaultsim, azuresim, and every control endpoint).

    ctx = tls_context(cert_pem, key_pem[, client_ca=PEM])   # certificates from common/pki.py
    srv = Server(("127.0.0.1", port), MyHandler, ctx, log=log)   # ctx None: plain HTTP
    srv.start()  (serve_forever in a daemon thread) ... srv.stop()

MyHandler subclasses Handler: HTTP/1.1, TCP_NODELAY, read_body() with a size limit
(Content-Length or chunked) and send_json().  The TLS handshake runs in the worker
thread, so a stalled client cannot block accept().
"""
import json
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 8 << 20       # far above anything a simulator accepts (Key Vault values: 25 KiB)


def tls_context(cert, key, client_ca=None, tls12_only=False):
    """Server context: TLS 1.2 or later (exactly 1.2 with tls12_only, as TDS needs);
    with client_ca a client certificate is asked for but not required."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls12_only:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


_slept = threading.local()


def latency_sleep(seconds):
    """An injected latency: sleep, and keep it out of the request's service time (ServiceClock)."""
    t0 = time.monotonic()
    time.sleep(seconds)
    _slept.s = getattr(_slept, "s", 0.0) + time.monotonic() - t0


class ServiceClock:
    """Time a simulator spent serving requests, from its own clock, without the injected latency
    sleeps: exposed in the simulators' /stats as service_ms (bench/README.md)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.secs = 0.0
        self.served = 0

    def add(self, secs):
        with self.lock:
            self.secs += max(0.0, secs)
            self.served += 1

    def snapshot(self, reset=False):
        with self.lock:
            out = {"service_ms": round(self.secs * 1000.0, 3), "served": self.served}
            if reset:
                self.secs, self.served = 0.0, 0
            return out


class Handler(BaseHTTPRequestHandler):
    # Like the real services (Go's net/http sets TCP_NODELAY): without it the body,
    # sent after the headers, waits for the client's delayed ACK (~40 ms a request).
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    max_body = MAX_BODY

    # Service time: from the request line read to the response flushed, minus the injected latency
    # sleeps (latency_sleep); the waits for the client (and the TLS handshake) are not in it.
    def parse_request(self):
        self._t_service = time.monotonic()
        _slept.s = 0.0
        return super().parse_request()

    def handle_one_request(self):
        self._t_service = None
        try:
            super().handle_one_request()
        finally:
            if self._t_service is not None:
                self.server.service.add(time.monotonic() - self._t_service - getattr(_slept, "s", 0.0))

    def read_body(self):
        """The request body (Content-Length or chunked), or None after a reply of 413
        (larger than max_body) or 400 (malformed length); the connection then closes."""
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            out = b""
            while True:
                line = self.rfile.readline()
                try:
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                except ValueError:
                    return self._refuse(400, "bad chunk size")
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                if len(out) + size > self.max_body:
                    return self._refuse(413, "request body too large")
                out += self.rfile.read(size)
                self.rfile.read(2)
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return self._refuse(400, "bad Content-Length")
        if n > self.max_body:
            return self._refuse(413, "request body too large")
        return self.rfile.read(n) if n > 0 else b""

    def _refuse(self, code, why):
        self.close_connection = True
        self.send_json(code, {"error": why})
        return None

    def drop_connection(self):
        """An injected fault: close the connection without a response."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def send_json(self, code, obj, default=None, headers=()):
        data = json.dumps(obj, default=default).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Server(ThreadingHTTPServer):
    """ctx: an SSLContext, or None for plain HTTP.  io_timeout: socket timeout during
    the handshake and, with keep_timeout, for the whole connection afterwards.
    log(msg) gets handshake failures."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, ctx=None, log=None, io_timeout=30, keep_timeout=False):
        super().__init__(addr, handler)
        self.ctx = ctx
        self.log = log or (lambda msg: sys.stderr.write(msg + "\n"))
        self.io_timeout = io_timeout
        self.keep_timeout = keep_timeout
        self.thread = None
        self.service = ServiceClock()

    def finish_request(self, request, client_address):
        if self.ctx is not None:
            try:
                request.settimeout(self.io_timeout)
                request = self.ctx.wrap_socket(request, server_side=True)
                if not self.keep_timeout:
                    request.settimeout(None)
            except (ssl.SSLError, OSError) as e:
                self.log(f"TLS handshake from {client_address[0]} failed: {e}")
                return
        try:
            super().finish_request(request, client_address)
        finally:
            if self.ctx is not None:
                try:
                    request.close()
                except OSError:
                    pass

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    @property
    def port(self):
        return self.server_address[1]

    def start(self):
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.shutdown()
        self.server_close()
