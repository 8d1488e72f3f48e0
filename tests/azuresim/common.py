"""Shared set-up for the azuresim fidelity tests: a PKI, a secret file, and
a running simulator (tests.sim.common.harness.Sim)."""
import http.client
import json
import os
import shutil
import ssl
import sys
import tempfile
import urllib.parse

SRCDIR = os.environ.get("SRCDIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, SRCDIR)

from tests.sim.common.harness import Sim, free_port_block, PY, SKIP  # noqa: E402
from tests.sim.common.pki import make_pki  # noqa: E402

AZURESIM = os.path.join(SRCDIR, "tests", "sim", "azuresim")
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "0e3b4a8c-5d6f-4e21-9a7b-1c2d3e4f5a6b"
SECRET = "Zx9~simulated.client-secret_value"


class Env:
    """A running azuresim with its own temp dir. Use as a context manager."""

    def __init__(self, extra_args=None):
        self.extra = extra_args or []

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="azuresim-test-")
        self.pki = make_pki(os.path.join(self.dir, "pki"))
        self.secret_file = os.path.join(self.dir, "client-secret")
        with open(self.secret_file, "w") as f:
            f.write(SECRET + "\n")
        base = free_port_block(3)
        self.port, self.cport, self.hport = base, base + 1, base + 2
        argv = [PY, AZURESIM, "--state", os.path.join(self.dir, "state"), "--port", str(self.port),
                "--tls-cert", self.pki["server_pem"], "--tls-key", self.pki["server_key"],
                "--tenant", TENANT, "--client-id", CLIENT_ID, "--client-secret-file", self.secret_file,
                "--client-cert", self.pki["client_pem"], "--control-port", str(self.cport),
                "--imds-http-port", str(self.hport)] + self.extra
        self.sim = Sim(argv, log_path=os.path.join(self.dir, "azuresim.log")).__enter__()
        self.ready = self.sim.ready
        self.ctx = ssl.create_default_context(cafile=self.pki["ca_pem"])
        return self

    def __exit__(self, *a):
        self.sim.stop()
        if self.sim.proc and self.sim.proc.stdout:
            self.sim.proc.stdout.close()
        if a[0] is not None:
            sys.stderr.write(self.sim.log_text()[-4000:])
        if os.environ.get("AZURESIM_KEEP"):
            sys.stderr.write(f"azuresim test dir kept: {self.dir}\n")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- raw HTTP -----------------------------------------------------------
    def request(self, method, path, body=None, headers=None, port=None, tls=True):
        """-> (status, headers (lower-case dict), body bytes)."""
        if tls:
            c = http.client.HTTPSConnection("127.0.0.1", port or self.port, context=self.ctx, timeout=20)
        else:
            c = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=20)
        h = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = body.encode()
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        c.close()
        return r.status, hdrs, data

    def json(self, method, path, body=None, headers=None, **kw):
        st, h, data = self.request(method, path, body, headers, **kw)
        return st, h, (json.loads(data) if data else None)

    def token(self, secret=SECRET, scope="https://vault.azure.net/.default", client_id=CLIENT_ID):
        form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": client_id,
                                       "client_secret": secret, "scope": scope})
        st, _, b = self.json("POST", f"/{TENANT}/oauth2/v2.0/token", form,
                             {"Content-Type": "application/x-www-form-urlencoded"})
        assert st == 200, (st, b)
        return b["access_token"]

    def kv(self, method, path, body=None, token=None, api="7.5", headers=None):
        h = dict(headers or {})
        if token is not False:
            h["Authorization"] = "Bearer " + (token or self.token())
        sep = "&" if "?" in path else "?"
        p = path + (f"{sep}api-version={api}" if api else "")
        return self.json(method, p, body, h)

    def control(self, method, path, body=None):
        return self.json(method, path, body, port=self.cport, tls=False)
