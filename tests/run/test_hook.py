#!/usr/bin/python3
"""dmkagent hook serve end to end against sqlsim + azuresim: both Event Grid
handshakes (the Event Grid schema's SubscriptionValidationEvent and
CloudEvents' OPTIONS), 401 on a wrong or missing key, 400 on a malformed body,
an answer within a second, a SecretNewVersionCreated event for a version
written outside dmkagent converges, a replayed event is acted on once,
SecretNearExpiry rotates, events for secrets not configured are acknowledged
and not acted on, a full queue answers 503 with Retry-After, nothing from a
request reaches the log but ids, and SIGTERM ends it with exit 0."""
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import unittest
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "rotate"))
import rotlib  # noqa: E402
from rotlib import opens  # noqa: E402
import lab as _labmod  # noqa: E402
from azlab import AzureLab, secret_name, API  # noqa: E402
from tests.sim.common.harness import free_port_block  # noqa: E402

SECRET = secret_name("CM_P01")


from tests.sim.common.harness import wait_for as _wait_for  # noqa: E402

def wait_for(what, cond, timeout=120):
    return _wait_for(what, cond, timeout)


def kv_event(etype, name=SECRET, vault="vault", eid=None, cloud=False):
    data = {"Id": f"https://{vault}.vault.azure.net/secrets/{name}/0123456789abcdef",
            "VaultName": vault, "ObjectType": "Secret", "ObjectName": name,
            "Version": "0123456789abcdef", "NBF": None, "EXP": None}
    eid = eid or str(uuid.uuid4())
    if cloud:
        return {"specversion": "1.0", "type": etype, "id": eid,
                "source": f"/subscriptions/x/resourceGroups/y/providers/Microsoft.KeyVault/vaults/{vault}",
                "subject": name, "time": "2026-12-06T12:00:00Z", "data": data}
    return {"id": eid, "topic": "/subscriptions/x/resourceGroups/y/providers/Microsoft.KeyVault/vaults/"
            + vault, "subject": name, "eventType": etype, "eventTime": "2026-12-06T12:00:00Z",
            "data": data, "dataVersion": "1", "metadataVersion": "1"}


class Hook(unittest.TestCase):
    def setUp(self):
        self.lab = lab = AzureLab(nodes=3).__enter__()
        try:
            lab.put_dmk_password()
            self.assertEqual(lab.agent("register")[0], 0, lab.last)
            self.key = "hk-" + os.urandom(16).hex()
            keyfile = _labmod.write_secret(os.path.join(lab.dir, "hook-key"), self.key + "\n")
            tlskey = _labmod.write_secret(os.path.join(lab.dir, "hook-tls.key"),
                                          open(lab.pki["server_key"]).read())
            self.port = free_port_block(1)
            self.vault = lab.azure.ready["vault_url"].split("://")[1].split(".")[0].split(":")[0]
            with open(lab.config, "a") as f:
                f.write(f"[hook]\nlisten = 127.0.0.1:{self.port}\ntls_cert = {lab.pki['server_pem']}\n"
                        f"tls_key = file:{tlskey}\nqueue = 1\n" + self.auth_config(keyfile))
            self.errf = open(os.path.join(lab.dir, "hook.err"), "w+")
            self.outf = open(os.path.join(lab.dir, "hook.out"), "w+")
            import socket
            import tempfile
            self.sockdir = tempfile.mkdtemp(prefix="dmkhook-")
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.bind(os.path.join(self.sockdir, "notify"))
            self.sock.settimeout(10)
            e = dict(os.environ)
            e["NOTIFY_SOCKET"] = os.path.join(self.sockdir, "notify")
            self.proc = subprocess.Popen([_labmod.DMK, "-c", lab.config, "-v", "hook", "serve"],
                                         stdout=self.outf, stderr=self.errf, env=e)
            wait_for("the hook to listen", self._listening, timeout=30)
        except BaseException:
            self.tearDown()
            raise

    def tearDown(self):
        p = getattr(self, "proc", None)
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
        for f in (getattr(self, "errf", None), getattr(self, "outf", None),
                  getattr(self, "sock", None)):
            if f:
                f.close()
        if getattr(self, "sockdir", None):
            import shutil
            shutil.rmtree(self.sockdir, ignore_errors=True)
        self.lab.__exit__(None, None, None)

    def auth_config(self, keyfile):
        return f"key = file:{keyfile}\n"

    def _listening(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"hook serve exited {self.proc.returncode}: {self.log()}")
        return "listening on" in self.log()

    def log(self):
        self.errf.flush()
        with open(self.errf.name) as f:
            return f.read()

    def request(self, method, body=None, code="right", headers=None, raw=None):
        ctx = ssl.create_default_context(cafile=self.lab.ca)
        c = http.client.HTTPSConnection("localhost", self.port, context=ctx, timeout=10)
        q = "" if code is None else "?code=" + (self.key if code == "right" else code)
        h = dict(headers or {})
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        t0 = time.monotonic()
        c.request(method, "/api/events" + q, body=data, headers=h)
        r = c.getresponse()
        out = r.read().decode()
        dt = time.monotonic() - t0
        c.close()
        return r.status, dict(r.getheaders()), out, dt

    def write_version(self, password):
        """A new Key Vault version written outside dmkagent (no tags).  Key Vault's
        `created` has one-second resolution and its listing order is undocumented, so
        an untagged version written in the same second as one of the agent's cannot be
        ordered against it (dmkagent.conf(5)); an operator's write comes later than
        that, and so does this one."""
        lab = self.lab
        time.sleep(1.1)
        ctx = ssl.create_default_context(cafile=lab.ca)
        url = lab.azure.ready["vault_url"].rstrip("/") + f"/secrets/{SECRET}?api-version={API}"
        req = urllib.request.Request(url, data=json.dumps({"value": password}).encode(), method="PUT",
                                     headers={"Authorization": "Bearer " + lab._token(),
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=20, context=ctx) as r:
            return json.loads(r.read().decode())["id"].rsplit("/", 1)[1]

    def runs(self):
        return self.lab.audit_text().count('"run-start"')

    def test_handshakes_auth_and_errors(self):
        self.assertEqual(self.sock.recv(4096), b"READY=1", "no readiness for systemd")
        # Event Grid schema: the validation event
        code = str(uuid.uuid4()).upper()
        ev = {"id": str(uuid.uuid4()), "topic": "/subscriptions/x", "subject": "",
              "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
              "eventTime": "2026-12-06T12:00:00Z", "dataVersion": "2", "metadataVersion": "1",
              "data": {"validationCode": code,
                       "validationUrl": "https://rp-eastus2.eventgrid.azure.net/api/updatestatus"}}
        st, hd, out, dt = self.request("POST", [ev], headers={"aeg-event-type": "SubscriptionValidation"})
        self.assertEqual(st, 200, out)
        self.assertEqual(json.loads(out), {"validationResponse": code})
        self.assertLess(dt, 1.0)
        # CloudEvents: the OPTIONS handshake
        st, hd, out, dt = self.request("OPTIONS", headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
        self.assertEqual(st, 200, out)
        self.assertEqual(hd.get("WebHook-Allowed-Origin"), "eventgrid.azure.net")
        # the key
        for bad in (None, "wrong", self.key[:-1], self.key + "x", ""):
            st, _, out, _ = self.request("POST", [ev], code=bad)
            self.assertEqual(st, 401, (bad, out))
            st, _, out, _ = self.request("OPTIONS", code=bad,
                                         headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
            self.assertEqual(st, 401, (bad, out))
        # malformed
        for raw in (b"{not json", b"42", b"[]", json.dumps([{"id": "x"}]).encode(),
                    json.dumps([{"id": "a b", "eventType": "Microsoft.KeyVault.SecretNearExpiry",
                                 "data": {"ObjectName": SECRET}}]).encode(),
                    json.dumps([{"id": "x1", "eventType": "Microsoft.KeyVault.SecretNearExpiry",
                                 "data": {}}]).encode()):
            st, _, out, _ = self.request("POST", raw=raw)
            self.assertEqual(st, 400, (raw, out))
        st, _, out, _ = self.request("OPTIONS")
        self.assertEqual(st, 400, "OPTIONS without WebHook-Request-Origin")
        # not configured: acknowledged, not acted on
        before = self.runs()
        st, _, out, _ = self.request("POST", [kv_event("Microsoft.KeyVault.SecretNewVersionCreated",
                                                       name="someone-elses-secret", vault=self.vault)])
        self.assertEqual(st, 200, out)
        st, _, out, _ = self.request("POST", [kv_event("Microsoft.Storage.BlobCreated")])
        self.assertEqual(st, 200, out)
        # the hook decides before it answers, and says so: nothing queued
        wait_for("the hook to acknowledge both without acting", lambda: all(
            m in self.log() for m in ("not a configured DMK password; acknowledged",
                                      "a type dmkagent does not act on; acknowledged")),
            timeout=10)
        self.assertNotIn(": queued", self.log())
        self.assertEqual(self.runs(), before, "acted on an event for a secret not configured")
        log = self.log()
        for s in (self.key, code, "someone-elses-secret", "BlobCreated", "eventgrid.azure.net",
                  self.lab.dmk_password):
            self.assertNotIn(s, log, "the request echoed into the log")
        # SIGTERM: exit 0
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.proc.wait(timeout=20), 0, self.log())

    def test_new_version_event_converges_once(self):
        lab = self.lab
        old = lab.dmk_password
        new = _labmod.strong_password()
        self.write_version(new)
        eid = str(uuid.uuid4())
        ev = kv_event("Microsoft.KeyVault.SecretNewVersionCreated", vault=self.vault, eid=eid)
        st, _, out, dt = self.request("POST", [ev])
        self.assertEqual(st, 200, out)
        self.assertLess(dt, 1.0, "the hook did the work before answering")
        wait_for("the new version to be applied",
                 lambda: [s for _, s, _ in lab.store_versions()] == ["retired", "current"])
        vs = lab.store_versions()
        self.assertEqual(vs[-1][2], new, "the hook wrote a password of its own")
        self.assertTrue(opens(lab, new))
        self.assertFalse(opens(lab, old))
        for n in range(3):
            self.assertEqual(len(lab.credentials(n)), 1)
        wait_for("the run to end", lambda: "done" in self.log())
        # the audit records name the event that started the run
        self.assertIn(f"hook event {eid} (new version)", lab.audit_triggers())
        runs = self.runs()
        # replayed: acknowledged, not acted on again
        queued = self.log().count(": queued")
        st, _, out, _ = self.request("POST", [ev])
        self.assertEqual(st, 200, out)
        wait_for("the hook to take the replay as already received",
                 lambda: "already received" in self.log(), timeout=10)
        self.assertEqual(self.log().count(": queued"), queued, "a replayed event was queued")
        self.assertEqual(self.runs(), runs, "a replayed event ran again")
        # SecretNearExpiry (CloudEvents schema): rotates now
        st, _, out, _ = self.request("POST", kv_event("Microsoft.KeyVault.SecretNearExpiry",
                                                      vault=self.vault, cloud=True),
                                     headers={"Content-Type": "application/cloudevents+json"})
        self.assertEqual(st, 200, out)
        wait_for("a rotation", lambda: [s for _, s, _ in lab.store_versions()] ==
                 ["retired", "retired", "current"])
        self.assertEqual(lab.agent("verify")[0], 0, lab.last)
        for pw in [old, new, self.key] + [p for _, _, p in lab.store_versions()]:
            self.assertNotIn(pw, self.log())
            self.assertNotIn(pw, lab.audit_text())

    def test_queue_full_is_503(self):
        lab = self.lab
        lab.control("/faults", {"latency_ms": 150})
        try:
            runs = self.runs()
            first = kv_event("Microsoft.KeyVault.SecretNearExpiry", vault=self.vault)
            self.assertEqual(self.request("POST", [first])[0], 200)
            wait_for("the worker to start", lambda: "queued" in self.log(), timeout=10)
            # the worker took it (its run began): the queue (1) is empty again
            wait_for("the worker's run to begin", lambda: self.runs() > runs, timeout=30)
            second = kv_event("Microsoft.KeyVault.SecretExpired", vault=self.vault)
            self.assertEqual(self.request("POST", [second])[0], 200)
            third = kv_event("Microsoft.KeyVault.SecretNearExpiry", vault=self.vault)
            st, hd, out, dt = self.request("POST", [third])
            self.assertEqual(st, 503, out)
            self.assertEqual(hd.get("Retry-After"), "30")
            self.assertLess(dt, 1.0)
        finally:
            lab.control("/faults", {"latency_ms": 0})
        wait_for("both rotations", lambda: [s for _, s, _ in lab.store_versions()] ==
                 ["retired", "retired", "current"], timeout=240)
        self.assertIn("EXPIRED", self.log())
        # the refused event was not recorded as seen: its retry is taken
        wait_for("the worker to be idle", lambda: self.log().count(": done") >= 2, timeout=120)
        self.assertEqual(self.request("POST", [third])[0], 200)
        wait_for("the retried event's rotation", lambda: len(lab.store_versions()) == 4 and
                 lab.store_versions()[-1][1] == "current" and
                 [s for _, s, _ in lab.store_versions()].count("retired") == 3, timeout=240)


class HookEntra(Hook):
    """[hook] auth = entra: Entra ID bearer tokens checked against the tenant's
    published keys (azuresim's discovery/v2.0/keys); no code parameter."""
    AUD = "api://dmkagent-hook"

    def auth_config(self, keyfile):
        import azlab
        return (f"auth = entra\naudience = {self.AUD}\ntenant = {azlab.TENANT}\n"
                f"authority_host = {self.lab.azure.ready['authority_host']}\nca_file = {self.lab.ca}\n")

    def token(self, **kw):
        body = {"resource": self.AUD}
        body.update(kw)
        return self.lab.control("/token", body, sim=self.lab.azure)["access_token"]

    def test_handshakes_auth_and_errors(self):
        good = self.token()
        code = str(uuid.uuid4())
        ev = [{"id": str(uuid.uuid4()), "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
               "data": {"validationCode": code}}]
        auth = lambda t: {"Authorization": "Bearer " + t}  # noqa: E731
        st, hd, out, _ = self.request("POST", ev, code=None)
        self.assertEqual(st, 401, out)
        self.assertEqual(hd.get("WWW-Authenticate"), "Bearer")
        head, claims, sig = good.split(".")
        bad_sig = head + "." + claims + "." + ("A" if sig[0] != "A" else "B") + sig[1:]
        for what, tok in (("another audience", self.token(resource="https://vault.azure.net")),
                          ("another tenant", self.token(tenant="00000000-0000-0000-0000-000000000001")),
                          ("expired", self.token(lifetime=-120)),
                          ("bad signature", bad_sig), ("garbage", "a.b.c"), ("empty", "")):
            st, _, out, _ = self.request("POST", ev, code=None, headers=auth(tok))
            self.assertEqual(st, 401, (what, out))
        st, _, out, dt = self.request("POST", ev, code=None, headers=auth(good))
        self.assertEqual(st, 200, out)
        self.assertEqual(json.loads(out), {"validationResponse": code})
        self.assertLess(dt, 1.0)
        st, hd, out, _ = self.request("OPTIONS", code=None, headers={
            **auth(good), "WebHook-Request-Origin": "eventgrid.azure.net"})
        self.assertEqual(st, 200, out)
        self.assertEqual(hd.get("WebHook-Allowed-Origin"), "eventgrid.azure.net")
        # a rotation on a SecretNearExpiry event with a good token
        st, _, out, _ = self.request("POST", [kv_event("Microsoft.KeyVault.SecretNearExpiry",
                                                       vault=self.vault)], code=None, headers=auth(good))
        self.assertEqual(st, 200, out)
        wait_for("a rotation", lambda: [s for _, s, _ in self.lab.store_versions()] ==
                 ["retired", "current"])
        for t in (good, bad_sig, claims):
            self.assertNotIn(t, self.log())
        self.proc.send_signal(signal.SIGTERM)
        self.assertEqual(self.proc.wait(timeout=60), 0, self.log())

    def test_new_version_event_converges_once(self):
        self.skipTest("the code parameter's test covers it")

    def test_queue_full_is_503(self):
        self.skipTest("the code parameter's test covers it")


if __name__ == "__main__":
    if not os.path.exists(_labmod.DMK):
        print("dmkagent not built")
        sys.exit(77)
    if not rotlib.have_pytds():
        print("python3-tds missing: skipping")
        sys.exit(77)
    unittest.main(verbosity=2)
