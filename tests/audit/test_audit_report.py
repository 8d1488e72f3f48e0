#!/usr/bin/python3
"""Compliance-audited rollovers end to end against sqlsim + vaultsim:
--reason/--ticket into records and store markers, require_ticket, the
auditor's report in every format (one interrupted-and-resumed rollover
appears once with both runs, every replica in it), a tampered or truncated
log refused, a signed report that verifies (and a changed byte that does
not), and records shipped as RFC 5424 to a syslog listener, none lost while
it was down."""
import csv
import hashlib
import html.parser
import io
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "rotate"))
import rotlib  # noqa: E402
from rotlib import Lab  # noqa: E402

REASON = "quarterly rollover, CAB approved: 'yes' <script>alert(1)</script> & \"more\""
TICKET = "CHG0012345"
REPLICAS = ["SQLNODE1", "SQLNODE2", "SQLNODE3"]


def markers(lab, version):
    md = rotlib.vault_get(lab, f"{rotlib.KV}/metadata/{rotlib.PATH}")["data"]
    cm = md.get("custom_metadata") or {}
    p = f"v{version}."
    return {k[len(p):]: v for k, v in cm.items() if k.startswith(p)}


def records(lab):
    return [json.loads(x) for x in lab.audit_text().splitlines() if x.strip()]


class Page(html.parser.HTMLParser):
    """Every tag and attribute, and the text, of an HTML page."""
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.extend((tag, k, v or "") for k, v in attrs)

    def handle_data(self, data):
        self.text.append(data)


class Report(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lab = Lab(nodes=3).__enter__()
        lab = cls.lab
        lab.put_dmk_password()
        rc, out, err = lab.agent("register")
        assert rc == 0, out + err
        # killed once every replica has the new password; the next run finishes it
        rc, out, err = lab.agent("rotate", "--reason", REASON, "--ticket", TICKET,
                                 env={"DMKAGENT_FAILPOINT": "rotate:after-register"})
        assert rc != 0, out + err
        rc, out, err = lab.agent("rotate", "--ticket", TICKET)
        assert rc == 0, out + err
        cls.rid = markers(lab, 2)["dmkagent-rotation"]

    @classmethod
    def tearDownClass(cls):
        cls.lab.__exit__(None, None, None)

    def report(self, *args):
        return self.lab.agent("audit", "report", *args)

    def mine(self, rollovers):
        return [r for r in rollovers if r["rotation"] == self.rid]

    def test_markers_and_records(self):
        m = markers(self.lab, 2)
        self.assertEqual(m.get("dmkagent-reason"), REASON)
        self.assertEqual(m.get("dmkagent-ticket"), TICKET)
        recs = records(self.lab)
        rot = [r for r in recs if r["action"].startswith("rotate-") and
               r["keys"].get("rotation") == self.rid]
        self.assertTrue(rot)
        first = [r for r in rot if r["why"].get("reason") == REASON]
        self.assertTrue(first, "the reason is not in the records")
        for r in rot:
            self.assertEqual(r["why"]["ticket"], TICKET)
            self.assertEqual(r["credential"]["sql"], "sa")
            self.assertIn("hashicorp-vault auth=token", r["credential"]["store"])
            self.assertTrue(r["actor"]["user"] and r["actor"]["host"])
        text = self.lab.audit_text()
        for n, _state, pw in rotlib.store_versions(self.lab):
            self.assertNotIn(pw, text, f"version {n}'s password is in the audit log")
        self.assertNotIn(self.lab.sa_password, text)

    def test_json(self):
        rc, out, err = self.report("--output", "json")
        self.assertEqual(rc, 0, out + err)
        doc = json.loads(out)
        self.assertTrue(doc["integrity"]["ok"])
        self.assertEqual(doc["integrity"]["checkpoint"], f"seq {len(records(self.lab))} holds")
        ros = self.mine(doc["rollovers"])
        self.assertEqual(len(ros), 1, "the interrupted rollover is not listed exactly once")
        ro = ros[0]
        self.assertEqual(ro["outcome"], "completed")
        self.assertEqual((ro["old_version"], ro["new_version"]), ("1", "2"))
        self.assertEqual((ro["reason"], ro["ticket"]), (REASON, TICKET))
        self.assertEqual(len(ro["runs"]), 2)
        self.assertTrue(ro["runs"][0]["interrupted"])
        self.assertTrue(ro["runs"][1]["resumed"])
        self.assertEqual(ro["runs"][1]["outcome"], "ok")
        self.assertEqual(sorted(r["name"] for r in ro["replicas"]), REPLICAS)
        for r in ro["replicas"]:
            self.assertEqual((r["registered"], r["verified"], r["old_revoked"]),
                             ("added", "ok", "dropped"), r)
        self.assertEqual(ro["backup"]["outcome"], "escrowed")
        self.assertTrue(ro["backup"]["version"])
        self.assertEqual(ro["credential"]["sql"], "sa")
        self.assertEqual([p["database"] for p in doc["policy"]], ["CM_P01"])
        # filters
        rc, out, _ = self.report("--output", "json", "--database", "NOPE")
        self.assertEqual(json.loads(out)["rollovers"], [])
        rc, out, _ = self.report("--output", "json", "--until", "2000-01-01")
        self.assertEqual(json.loads(out)["rollovers"], [])
        rc, out, _ = self.report("--output", "json", "--since", "2000-01-01", "--ag", "AG1")
        self.assertEqual(len(self.mine(json.loads(out)["rollovers"])), 1)
        rc, out, err = self.report("--since", "yesterday")
        self.assertEqual(rc, 2, out + err)

    def test_text(self):
        rc, out, err = self.report()
        self.assertEqual(rc, 0, out + err)
        self.assertTrue(out.splitlines()[0].startswith("integrity: ok"), out)
        self.assertEqual(out.count(f"rotation {self.rid}"), 1)
        for s in [REASON, TICKET, "interrupted", "resumed"] + REPLICAS:
            self.assertIn(s, out)

    def test_csv(self):
        rc, out, err = self.report("--output", "csv")
        self.assertEqual(rc, 0, out + err)
        rows = list(csv.DictReader(io.StringIO(out, newline="")))
        self.assertIn("replica", rows[0])
        mine = [r for r in rows if r["rotation"] == self.rid]
        self.assertEqual(sorted(r["replica"] for r in mine), REPLICAS)
        for r in mine:
            self.assertEqual((r["reason"], r["ticket"], r["outcome"]), (REASON, TICKET, "completed"))
            self.assertEqual((r["registered"], r["verified"], r["old_revoked"]), ("added", "ok", "dropped"))
            self.assertEqual(len(r["runs"].split()), 2)
            self.assertEqual(len(r["interrupted_runs"].split()), 1)

    def test_html(self):
        rc, out, err = self.report("--output", "html")
        self.assertEqual(rc, 0, out + err)
        p = Page()
        p.feed(out)
        p.close()
        self.assertNotIn("script", p.tags)
        for tag, k, v in p.attrs:
            self.assertFalse(k.startswith("on"), (tag, k, v))
            if k in ("src", "href", "action", "data", "srcset", "poster"):
                self.assertTrue(v.startswith("#"), f"external reference {tag} {k}={v}")
        self.assertNotIn("<link", out)
        self.assertNotRegex(out, r"url\(")
        self.assertNotIn("@import", out)
        text = "".join(p.text)
        for s in [REASON, TICKET, self.rid, "Summary", "Timeline", "Details"] + REPLICAS:
            self.assertIn(s, text)
        for h in ("table", "ol", "h2"):
            self.assertIn(h, p.tags)

    def test_signed(self):
        d = self.lab.dir
        key, pub = os.path.join(d, "report.key"), os.path.join(d, "report.pub")
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", key], check=True,
                       capture_output=True)
        os.chmod(key, 0o600)
        subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-out", pub], check=True,
                       capture_output=True)
        rep = os.path.join(d, "report.html")
        rc, out, err = self.report("--output", "html", "--sign", f"file:{key}", "--out", rep)
        self.assertEqual(rc, 0, out + err)
        self.assertTrue(os.path.exists(rep + ".sig"))
        with open(rep + ".sig") as f:
            self.assertNotIn("PRIVATE", f.read())
        rc, out, err = self.lab.agent("audit", "verify-report", rep, "--pubkey", pub)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("good Ed25519 signature", out)
        with open(rep, "rb") as f:
            data = bytearray(f.read())
        data[len(data) // 2] ^= 0x01
        bad = os.path.join(d, "report-changed.html")
        with open(bad, "wb") as f:
            f.write(data)
        rc, out, err = self.lab.agent("audit", "verify-report", bad, "--pubkey", pub,
                                      "--signature", rep + ".sig")
        self.assertEqual(rc, 1, out + err)
        self.assertIn("BAD signature", err)
        # another key
        key2, pub2 = os.path.join(d, "other.key"), os.path.join(d, "other.pub")
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", key2], check=True,
                       capture_output=True)
        subprocess.run(["openssl", "pkey", "-in", key2, "-pubout", "-out", pub2], check=True,
                       capture_output=True)
        rc, out, err = self.lab.agent("audit", "verify-report", rep, "--pubkey", pub2)
        self.assertEqual(rc, 1, out + err)
        # --sign without a place for the signature
        rc, out, err = self.report("--sign", f"file:{key}")
        self.assertEqual(rc, 2, out + err)
        # not an Ed25519 key: refused before any report is written
        rsa = os.path.join(d, "rsa.key")
        subprocess.run(["openssl", "genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:1024",
                        "-out", rsa], check=True, capture_output=True)
        os.chmod(rsa, 0o600)
        nope = os.path.join(d, "unsigned.txt")
        rc, out, err = self.report("--sign", f"file:{rsa}", "--out", nope)
        self.assertEqual(rc, 2, out + err)
        self.assertIn("not an Ed25519 key", err)
        self.assertFalse(os.path.exists(nope))

    def test_tampered_copy_refused(self):
        d = self.lab.dir
        lines = self.lab.audit_text().splitlines(True)
        copy = os.path.join(d, "tampered.jsonl")
        i = len(lines) // 2
        lines2 = list(lines)
        lines2[i] = lines2[i].replace('"outcome":"', '"outcome":"x', 1)
        with open(copy, "w") as f:
            f.writelines(lines2)
        for fmt in ("text", "json", "csv", "html"):
            rc, out, err = self.report(copy, "--output", fmt)
            self.assertEqual(rc, 1, f"{fmt}: {out}{err}")
            self.assertIn("INTEGRITY FAILED" if fmt != "json" else '{"integrity":{"ok":false',
                          out.splitlines()[0], fmt)
            self.assertNotIn(self.rid, out, fmt)

    def test_zz_truncated_refused(self):
        """Last: cuts the lab's own log (the checkpoint notices)."""
        lab = self.lab
        shutil.copy(lab.audit_log, lab.audit_log + ".keep")
        try:
            lines = lab.audit_text().splitlines(True)
            with open(lab.audit_log, "w") as f:
                f.writelines(lines[:-2])
            rc, out, err = self.report("--output", "csv")
            self.assertEqual(rc, 1, out + err)
            self.assertIn("INTEGRITY FAILED", out.splitlines()[0])
            self.assertIn("missing at the end", out.splitlines()[0])
            rc, out, err = self.report()
            self.assertEqual(rc, 1, out + err)
            self.assertTrue(out.startswith("INTEGRITY FAILED"), out)
        finally:
            shutil.move(lab.audit_log + ".keep", lab.audit_log)


class RequireTicket(unittest.TestCase):
    def test_refused_without_ticket(self):
        with Lab(nodes=2) as lab:
            lab.write_config(agent_extra="require_ticket = yes\n")
            with self.assertRaises(RuntimeError):
                lab.put_dmk_password()      # store put: no ticket
            self.assertEqual(rotlib.store_versions(lab), [])
            rc, out, err = lab.agent("store", "put", "--ticket", "CHG0", "--reason", "seed",
                                     "hcv:sql/ag1/cm_p01/dmk#password", stdin=lab.dmk_password + "\n")
            self.assertEqual(rc, 0, out + err)
            self.assertEqual(markers(lab, 1).get("dmkagent-ticket"), "CHG0")
            self.assertEqual(markers(lab, 1).get("dmkagent-reason"), "seed")
            before_log = lab.audit_text()
            before = rotlib.store_versions(lab)
            for cmd in (["register"], ["rotate"], ["backup"], ["rotate", "--reason", "r"],
                        ["verify", "--failover-test"], ["recover"]):
                rc, out, err = lab.agent(*cmd)
                self.assertEqual(rc, 2, f"{cmd}: {out}{err}")
                self.assertIn("--ticket", err)
            self.assertEqual(lab.audit_text(), before_log, "a refused run wrote to the audit log")
            self.assertEqual(rotlib.store_versions(lab), before)
            rc, out, err = lab.agent("rotate", "--dry-run")
            self.assertNotEqual(rc, 2, out + err)
            # read-only commands need none, and take none
            rc, out, err = lab.agent("verify")
            self.assertNotEqual(rc, 2, out + err)
            rc, out, err = lab.agent("status", "--ticket", "CHG1")
            self.assertEqual(rc, 2, out + err)
            rc, out, err = lab.agent("register", "--ticket", "bad ticket")
            self.assertEqual(rc, 2, out + err)
            rc, out, err = lab.agent("register", "--ticket", "CHG1")
            self.assertEqual(rc, 0, out + err)
            rc, out, err = lab.agent("rotate", "--ticket", "CHG2", "--reason", "x" * 257)
            self.assertEqual(rc, 2, out + err)
            rc, out, err = lab.agent("rotate", "--ticket", "CHG2")
            self.assertEqual(rc, 0, out + err)
            self.assertEqual(markers(lab, 2).get("dmkagent-ticket"), "CHG2")
            # a scheduled run says so
            rc, out, err = lab.agent("rotate", "--if-due", "--ticket", "CHG3")
            self.assertEqual(rc, 0, out + err)
            start = [r for r in records(lab) if r["action"] == "run-start"][-1]
            self.assertEqual(start["why"], {"ticket": "CHG3", "trigger": "schedule (--if-due)"})


class StoreIdentity(unittest.TestCase):
    """The AppRole's role name, as Vault named it at login, is in the records."""
    def test_approle_role_name(self):
        import urllib.request
        with Lab(nodes=2) as lab:
            ctx = ssl.create_default_context(cafile=lab.ca)

            def api(method, path, body=None):
                req = urllib.request.Request(lab.vault.ready["address"] + "/v1/" + path,
                                             data=None if body is None else json.dumps(body).encode(),
                                             method=method, headers={"X-Vault-Token": lab.root_token})
                with urllib.request.urlopen(req, timeout=20, context=ctx) as r:
                    txt = r.read().decode()
                    return json.loads(txt) if txt else None
            lab.put_dmk_password()
            api("PUT", "sys/policies/acl/dmk", {"policy": 'path "secret/*" { capabilities = '
                                                '["create", "read", "update", "list"] }'})
            api("POST", "sys/auth/approle", {"type": "approle"})
            api("POST", "auth/approle/role/dmkrotator", {"token_policies": ["dmk"], "token_ttl": "20m"})
            role_id = api("GET", "auth/approle/role/dmkrotator/role-id")["data"]["role_id"]
            secret_id = api("POST", "auth/approle/role/dmkrotator/secret-id", {})["data"]["secret_id"]
            sid = os.path.join(lab.dir, "secret-id")
            with open(os.open(sid, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
                f.write(secret_id)
            lab.write_config()
            with open(lab.config) as f:
                text = f.read()
            text = re.sub(r"auth = token\ntoken = [^\n]*\n",
                          f"auth = approle\nrole_id = {role_id}\nsecret_id = file:{sid}\n", text)
            with open(lab.config, "w") as f:
                f.write(text)
            rc, out, err = lab.agent("register", "--ticket", "CHG9")
            self.assertEqual(rc, 0, out + err)
            regs = [r for r in records(lab) if r["action"] == "register"]
            self.assertTrue(regs)
            for r in regs:
                self.assertIn("auth=approle", r["credential"]["store"])
                self.assertIn("role_name=dmkrotator", r["credential"]["store"])
                self.assertEqual(r["credential"]["sql"], "sa")
            self.assertNotIn(secret_id, lab.audit_text())
            self.assertNotIn(role_id, lab.audit_text())


class AzureMarkers(unittest.TestCase):
    """Azure Key Vault: the reason (at its longest: a tag value holds 256
    characters) and the ticket as tags of the new version, and the Entra
    client id in the records; the rollover in the report."""
    def test_reason_ticket_tags(self):
        from azlab import AzureLab, CLIENT, secret_name
        reason = ("quarterly rollover " * 20)[:256]
        with AzureLab(nodes=2) as lab:
            lab.put_dmk_password()
            rc, out, err = lab.agent("register")
            self.assertEqual(rc, 0, out + err)
            rc, out, err = lab.agent("rotate", "--reason", reason, "--ticket", "CHG42")
            self.assertEqual(rc, 0, out + err)
            newest = lab.store_versions()[-1][0]
            tags = lab.kv_get(f"/secrets/{secret_name('CM_P01')}/{newest}").get("tags") or {}
            self.assertEqual(tags.get("dmkagent-reason"), reason)
            self.assertEqual(tags.get("dmkagent-ticket"), "CHG42")
            recs = [r for r in records(lab) if r["action"] == "rotate-pending"]
            self.assertEqual(len(recs), 1)
            self.assertIn(f"client_id={CLIENT}", recs[0]["credential"]["store"])
            self.assertEqual(recs[0]["why"], {"reason": reason, "ticket": "CHG42"})
            rc, out, err = lab.agent("audit", "report", "--output", "json")
            self.assertEqual(rc, 0, out + err)
            ros = json.loads(out)["rollovers"]
            self.assertEqual(len(ros), 1)
            self.assertEqual((ros[0]["reason"], ros[0]["ticket"], ros[0]["outcome"]),
                             (reason, "CHG42", "completed"))
            self.assertEqual(sorted(r["name"] for r in ros[0]["replicas"]), ["SQLNODE1", "SQLNODE2"])
            rc, out, err = lab.agent("store", "show", "akv:sql-ag1-cm-p01-dmk")
            self.assertEqual(rc, 0, out + err)
            self.assertIn("CHG42", out)
            self.assertIn(reason[:40], out)


RFC5424 = re.compile(r'^<(\d+)>1 (\S+) (\S+) dmkagent (\d+) (\S+) '
                     r'\[dmkagent@32473 seq="(\d+)" hash="([0-9a-f]{64})" record="((?:[^"\\\]]|\\["\\\]])*)"\] '
                     r'(\S+) (.*)$', re.S)


def parse_5424(msg):
    m = RFC5424.match(msg)
    if m is None:
        raise AssertionError(f"not RFC 5424 as expected: {msg[:200]!r}")
    record = re.sub(r'\\(["\\\]])', r"\1", m.group(8))
    return {"pri": int(m.group(1)), "time": m.group(2), "host": m.group(3), "pid": int(m.group(4)),
            "msgid": m.group(5), "seq": int(m.group(6)), "hash": m.group(7), "record": record}


class UnixListener:
    def __init__(self, path):
        self.path = path
        self.msgs = []
        self.sock = None

    def start(self):
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.stop_flag = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop_flag:
            try:
                self.msgs.append(self.sock.recv(1 << 17).decode())
            except socket.timeout:
                continue
            except OSError:
                return

    def stop(self):
        self.stop_flag = True
        self.t.join()
        self.sock.close()
        os.unlink(self.path)


class TlsListener:
    """RFC 5425: octet-counted frames over TLS."""
    def __init__(self, cert, key):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(5)
        self.srv.settimeout(0.2)
        self.port = self.srv.getsockname()[1]
        self.msgs = []
        self.stop_flag = False
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop_flag:
            try:
                c, _ = self.srv.accept()
            except socket.timeout:
                continue
            try:
                c.settimeout(10)
                s = self.ctx.wrap_socket(c, server_side=True)
                buf = b""
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    buf += d
                    while b" " in buf:
                        n, rest = buf.split(b" ", 1)
                        if len(rest) < int(n):
                            break
                        self.msgs.append(rest[:int(n)].decode())
                        buf = rest[int(n):]
                s.close()
            except (OSError, ssl.SSLError):
                pass

    def stop(self):
        self.stop_flag = True
        self.t.join()
        self.srv.close()


def wait_for(pred, timeout=10):
    """The harness's wait_for: every record shipped (fails naming it)."""
    from tests.sim.common.harness import wait_for as _wait_for
    return _wait_for("the syslog listener to receive every audit record", pred, timeout)


class Syslog(unittest.TestCase):
    def check_all_shipped(self, lab, msgs):
        lines = [x for x in lab.audit_text().splitlines() if x.strip()]
        got = {}
        for m in msgs:
            p = parse_5424(m)
            self.assertEqual(p["pri"], 85)
            self.assertRegex(p["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
            got[p["seq"]] = p
        self.assertEqual(sorted(got), list(range(1, len(lines) + 1)), "records lost or extra")
        for i, line in enumerate(lines, 1):
            p = got[i]
            self.assertEqual(p["record"], line)
            self.assertEqual(p["hash"], hashlib.sha256(line.encode()).hexdigest())
            rec = json.loads(line)
            self.assertEqual(p["msgid"], rec["action"][:32])
            self.assertEqual(p["host"], rec["actor"]["host"])
        return got

    def test_unix_and_listener_down(self):
        with Lab(nodes=2) as lab:
            sockpath = os.path.join(lab.dir, "log.sock")
            lab.write_config(agent_extra=f"audit_syslog = unix:{sockpath}\n")
            lst = UnixListener(sockpath)
            lst.start()
            lab.put_dmk_password()
            rc, out, err = lab.agent("register", "--reason", "initial", "--ticket", "CHG7")
            self.assertEqual(rc, 0, out + err)
            self.assertTrue(wait_for(lambda: len(lst.msgs) >= len(records(lab))))
            got = self.check_all_shipped(lab, lst.msgs)
            self.assertTrue(any(json.loads(p["record"]).get("why", {}).get("ticket") == "CHG7"
                                for p in got.values()))
            # the listener goes away: the rotation is not held up, nothing is lost
            lst.stop()
            n_before = len(lst.msgs)
            t0 = time.time()
            rc, out, err = lab.agent("rotate", "--ticket", "CHG8")
            self.assertEqual(rc, 0, out + err)
            self.assertLess(time.time() - t0, 60)
            self.assertIn("audit_syslog", err)
            self.assertEqual(len(lst.msgs), n_before)
            # the missed delivery is itself on the record
            fails = [r for r in records(lab) if r["action"] == "audit-syslog"]
            self.assertEqual(len(fails), 1)
            self.assertEqual(fails[0]["outcome"], "failed")
            self.assertIn(sockpath, fails[0]["error"])
            rc, out, err = lab.agent("audit", "ship")
            self.assertEqual(rc, 5, out + err)
            lst.start()
            rc, out, err = lab.agent("audit", "ship")
            self.assertEqual(rc, 0, out + err)
            self.assertTrue(wait_for(lambda: len(lst.msgs) >= len(records(lab))))
            self.check_all_shipped(lab, lst.msgs)
            # nothing is sent twice
            rc, out, err = lab.agent("audit", "ship")
            self.assertEqual(rc, 0, out + err)
            self.assertIn(" 0 record(s) sent", out)
            lst.stop()

    def test_udp(self):
        with Lab(nodes=2) as lab:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.5)
            msgs = []
            try:
                lab.write_config(agent_extra=f"audit_syslog = udp:127.0.0.1:{sock.getsockname()[1]}\n")
                lab.put_dmk_password()
                rc, out, err = lab.agent("register")
                self.assertEqual(rc, 0, out + err)
                while True:
                    try:
                        msgs.append(sock.recv(1 << 17).decode())
                    except socket.timeout:
                        break
                self.check_all_shipped(lab, msgs)
            finally:
                sock.close()

    def test_tcp_tls(self):
        with Lab(nodes=2) as lab:
            lst = TlsListener(lab.pki["server_pem"], lab.pki["server_key"])
            try:
                lab.write_config(agent_extra=f"audit_syslog = tcp+tls:localhost:{lst.port}\n"
                                             f"audit_syslog_ca = {lab.ca}\n")
                lab.put_dmk_password()
                rc, out, err = lab.agent("register")
                self.assertEqual(rc, 0, out + err)
                self.assertNotIn("audit_syslog", err)
                self.assertTrue(wait_for(lambda: len(lst.msgs) >= len(records(lab))))
                self.check_all_shipped(lab, lst.msgs)
            finally:
                lst.stop()
            # an untrusted server is refused (reported; the run itself succeeds)
            lst = TlsListener(lab.pki["untrusted_pem"], lab.pki["untrusted_key"])
            try:
                lab.write_config(agent_extra=f"audit_syslog = tcp+tls:localhost:{lst.port}\n"
                                             f"audit_syslog_ca = {lab.ca}\n")
                rc, out, err = lab.agent("register")
                self.assertEqual(rc, 0, out + err)
                self.assertIn("TLS handshake failed", err)
                self.assertEqual(lst.msgs, [])
            finally:
                lst.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
