"""sqlsim: SQL Server availability-group simulator speaking TDS 7.1-7.4 over TLS.

See tests/sim/README.md (## sqlsim) for the command line, the modelled behaviour and the control API.
"""
import argparse
import collections
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback

from . import control, tds
from .errors import DropConnection, SqlError
from .executor import Executor, Out, Session, ReturnSignal
from .state import State
from .transport import Closed, Transport, make_tls_context


def log(*a):
    sys.stderr.write("sqlsim: " + " ".join(str(x) for x in a) + "\n")
    sys.stderr.flush()


class Faults:
    def __init__(self):
        self.clear()

    def clear(self):
        self.latency_ms = 0
        self.drop_after_statements = None     # int K: drop the connection at statement K+1
        self.drop_at_pattern = None           # regex
        self.drop_when = "before"             # before | after (executed, but never answered)
        self.drop_node = None
        self.failover_at_statement = None
        self.failover_target = None
        self.latency_handshake = getattr(self, "latency_handshake", False)   # survives clear (an option)
        self.downgrade = False
        self.encrypt_not_sup = False
        self.report_unencrypted = False       # dm_exec_connections says FALSE (tests the client's second line)
        self.statements = 0                   # statements seen since the faults were set

    def to_json(self):
        return {k: v for k, v in self.__dict__.items()}


class Server:
    def __init__(self, args):
        self.args = args
        self.state = State(args.state)
        self.state.base_port = args.port
        self.faults = Faults()
        self.faults.latency_ms = args.latency_ms or 0
        self.faults.latency_handshake = bool(args.latency_handshake)
        self.faults.downgrade = bool(args.downgrade)
        self.force_encryption = bool(args.force_encryption)
        self.tls_ctx = make_tls_context(args.tls_cert, args.tls_key)
        self.node_tls = {}
        self.node_tls_strict = {}
        for spec in args.node_tls or []:
            i, cert, key = spec.split(":", 2)
            self.node_tls[int(i)] = make_tls_context(cert, key)
            self.node_tls_strict[int(i)] = make_tls_context(cert, key, strict=True)
        self.tls_ctx_strict = make_tls_context(args.tls_cert, args.tls_key, strict=True)
        self.strict = bool(args.strict)
        self.shapes = set(args.shape or [])
        self.browser = None
        self.stats_lock = threading.Lock()
        self.stats = {}
        self.reset_stats()
        self.conns = set()            # live ConnHandler
        self.conns_lock = threading.Lock()
        self.listeners = {}           # node idx or "listener" -> socket
        self.stopping = threading.Event()
        self.next_spid = 51

    def kerberos_accept(self, token):
        """(client principal, answer token) for one Kerberos/SPNEGO initial token."""
        if not self.args.kerberos_keytab:
            raise ValueError("no --kerberos-keytab: integrated login is not configured")
        import gssapi
        creds = gssapi.Credentials(usage="accept", store={"keytab": self.args.kerberos_keytab})
        ctx = gssapi.SecurityContext(creds=creds, usage="accept")
        out = ctx.step(token)
        if not ctx.complete:
            raise ValueError("the security context needs more than one round")
        return str(ctx.initiator_name), out or b""

    def reset_stats(self):
        with self.stats_lock:
            self.stats = {"connections": 0, "tls_handshakes": 0, "logins_ok": 0, "logins_failed": 0,
                          "plaintext_packets_after_login": 0, "plaintext_logins": 0, "login_only_sessions": 0,
                          "full_tls_sessions": 0, "unencrypted_sessions": 0, "requests": 0, "statements": 0,
                          "attentions": 0, "dropped_by_fault": 0, "refused_encryption": 0,
                          "strict_sessions": 0, "refused_not_strict": 0, "refused_strict_client": 0,
                          "strict_alpn": {}, "strict_tls_version": {}, "kerberos_logins": 0,
                          "kerberos_refused": 0,
                          "prelogin_client_encryption": {}, "prelogin_server_encryption": {},
                          "round_trips": 0, "connect_round_trips": 0, "rpcs": 0, "by_node": {},
                          "per_connection": collections.deque(maxlen=5000)}

    def node_stat(self, node, k, n=1):
        with self.stats_lock:
            m = self.stats["by_node"].setdefault(node.name, {"connections": 0, "logins_ok": 0, "requests": 0,
                                                             "statements": 0, "rpcs": 0, "round_trips": 0,
                                                             "connect_round_trips": 0, "service_ms": 0.0})
            m[k] += n

    def stats_json(self):
        with self.stats_lock:
            out = {k: (list(v) if isinstance(v, collections.deque) else v) for k, v in self.stats.items()}
            return json.loads(json.dumps(out))

    def stat(self, k, n=1):
        with self.stats_lock:
            self.stats[k] = self.stats.get(k, 0) + n

    def stat_map(self, k, key):
        with self.stats_lock:
            m = self.stats[k]
            m[key] = m.get(key, 0) + 1

    # ------------------------------------------------------------ listeners
    def bind(self, port):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(64)
        return s

    def start_listener(self, key, port):
        s = self.bind(port)
        self.listeners[key] = s
        threading.Thread(target=self.accept_loop, args=(key, s), daemon=True).start()

    def accept_loop(self, key, s):
        while not self.stopping.is_set():
            try:
                c, _a = s.accept()
            except OSError:
                return
            if key == "listener":
                node = self.state.primary()
                if not node.up:
                    c.close()
                    continue
            else:
                node = self.state.nodes[key]
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            h = ConnHandler(self, c, node, via_listener=(key == "listener"))
            threading.Thread(target=h.run, daemon=True).start()

    def node_down(self, idx):
        n = self.state.nodes[idx]
        n.up = False
        s = self.listeners.pop(idx, None)
        if s:
            try:
                s.shutdown(socket.SHUT_RDWR)     # wakes the blocked accept(); stops listening
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        self.kill(lambda h: h.node is n)

    def node_up(self, idx):
        n = self.state.nodes[idx]
        if n.up and idx in self.listeners:
            return
        n.up = True
        self.start_listener(idx, self.state.base_port + idx)

    def kill(self, pred, except_sess=None):
        with self.conns_lock:
            hs = list(self.conns)
        for h in hs:
            if pred(h) and (except_sess is None or h.sess is not except_sess):
                h.transport.close()

    def sessions_of(self, node):
        with self.conns_lock:
            return [h.sess for h in self.conns if h.node is node and h.sess]

    # ------------------------------------------------------------ AG
    def failover(self, target_idx, initiator=None):
        with self.state.lock:
            old = self.state.ag["primary"]
            if old == target_idx:
                return False
            self.state.ag["primary"] = target_idx
            self.state.ag["sequence"] = self.state.ag.get("sequence", 1) + 1
            self.state.save()
        log(f"failover: {self.state.nodes[old].name} -> {self.state.nodes[target_idx].name}")
        agdbs = {n.lower() for n in self.state.ag["databases"]}
        # role change: sessions using an AG database on the old and new primary, and listener sessions, end
        self.kill(lambda h: h.via_listener or
                  (h.node.idx in (old, target_idx) and h.sess is not None and h.sess.db.lower() in agdbs),
                  except_sess=initiator)
        return True

    # ------------------------------------------------------------ faults
    def statement_hook(self, sess, text):
        f = self.faults
        self.stat("statements")
        self.node_stat(sess.node, "statements")
        h = getattr(sess, "handler", None)
        if h is not None:
            h.cstats["statements"] += 1
        with self.state.lock:
            if f.drop_node is not None and f.drop_node != sess.node.name:
                applies = False
            else:
                applies = True
            f.statements += 1
            n = f.statements
            if f.failover_at_statement is not None and n >= f.failover_at_statement:
                tgt = f.failover_target
                f.failover_at_statement = None
                idx = None
                for nd in self.state.nodes:
                    if tgt is not None and (nd.name.lower() == str(tgt).lower() or str(nd.idx) == str(tgt)):
                        idx = nd.idx
                if idx is None:
                    idx = (self.state.ag["primary"] + 1) % len(self.state.nodes)
                self.failover(idx, initiator=sess)
            if applies and f.drop_after_statements is not None and n > f.drop_after_statements:
                f.drop_after_statements = None
                self.stat("dropped_by_fault")
                raise DropConnection()
            if applies and f.drop_at_pattern and re.search(f.drop_at_pattern, text, re.I | re.S):
                f.drop_at_pattern = None
                if f.drop_when == "after":
                    sess.drop_after_answer = True
                else:
                    self.stat("dropped_by_fault")
                    raise DropConnection()

    def wait_interruptible(self, sess, secs):
        h = getattr(sess, "handler", None)
        end = time.time() + secs
        while time.time() < end:
            if h is not None and h.check_attention(min(0.05, max(0, end - time.time()))):
                raise AttentionSignal()
            elif h is None:
                time.sleep(min(0.05, max(0, end - time.time())))

    # ------------------------------------------------------------ main
    def run(self):
        args = self.args
        sa = open(args.sa_password_file).read().strip("\r\n")
        dmk = open(args.dmk_password_file).read().strip("\r\n") if args.dmk_password_file else None
        created = self.state.load_or_init(args, sa, dmk)
        for princ in args.kerberos_login or []:
            for nd in self.state.nodes:
                if princ not in nd.d["logins"]:
                    nd.d["logins"][princ] = {"password": None, "sid": "0105" + format(nd.d["next_login_id"], "04x"),
                                             "principal_id": nd.d["next_login_id"], "sysadmin": True,
                                             "perms": [], "create_date": "2024-01-01T00:00:00", "disabled": False,
                                             "default_database": "master", "windows": True}
                    nd.d["next_login_id"] += 1
        if args.kerberos_login:
            self.state.save()
        log("state", "created" if created else "resumed", args.state)
        n = len(self.state.nodes)
        for i in range(n):
            self.start_listener(i, args.port + i)
        self.start_listener("listener", args.port + n)
        cport = args.control_port or (args.port + n + 1)
        self.control = control.ControlServer(self, cport)
        self.control.start()
        if args.browser_port is not None:
            from .browser import Browser
            self.browser = Browser(self, args.browser_port)
            self.browser.start()
        ready = {"ag": self.state.ag["name"],
                 "nodes": [{"name": nd.name, "port": args.port + nd.idx} for nd in self.state.nodes],
                 "listener_port": args.port + n, "control_port": cport,
                 "replica_names": [r["name"] for r in self.state.ag["replicas"]],
                 "browser_port": self.browser.port if self.browser else None,
                 "databases": sorted(self.state.ag["databases"].keys())}
        sys.stdout.write(json.dumps(ready) + "\n")
        sys.stdout.flush()
        signal.signal(signal.SIGTERM, lambda *a: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *a: self.stopping.set())
        while not self.stopping.wait(0.5):
            pass
        log("stopping")
        for s in list(self.listeners.values()):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        self.control.stop()
        self.kill(lambda h: True)
        with self.state.lock:
            self.state.save()
        return 0


class AttentionSignal(Exception):
    pass


class ConnHandler:
    def __init__(self, server, sock, node, via_listener=False):
        self.server = server
        self.sock = sock
        self.node = node
        self.via_listener = via_listener
        self.transport = Transport(sock)
        self.sess = None
        self.mode = "none"          # full | login-only | none
        self.logged_in = False
        self.pending_attention = False
        self.cstats = {"node": node.name, "spid": None, "round_trips": 0, "connect_round_trips": 0,
                       "requests": 0, "statements": 0, "rpcs": 0, "closed": False,
                       "via_listener": via_listener, "service_ms": 0.0}
        self.transport.on_busy = self.busy

    def busy(self, secs):
        """Service time: the transport's busy intervals (between a receive and the next wait), less the
        injected latency sleeps (slept() subtracts them); per connection and per node."""
        ms = secs * 1000.0
        self.cstats["service_ms"] += ms
        self.server.node_stat(self.node, "service_ms", ms)

    def slept(self, t0):
        ms = (time.monotonic() - t0) * 1000.0
        self.cstats["service_ms"] -= ms
        self.server.node_stat(self.node, "service_ms", -ms)

    def round_trip(self, sleep=True):
        """One client message answered: count it and (when latency is set) sleep once."""
        srv = self.server
        srv.stat("round_trips")
        srv.node_stat(self.node, "round_trips")
        self.cstats["round_trips"] += 1
        if not self.logged_in:
            srv.stat("connect_round_trips")
            srv.node_stat(self.node, "connect_round_trips")
            self.cstats["connect_round_trips"] += 1
        if sleep:
            self.latency()

    def handshake_round_trip(self):
        self.round_trip(sleep=self.server.faults.latency_handshake)

    def run(self):
        srv = self.server
        srv.stat("connections")
        srv.node_stat(self.node, "connections")
        with srv.conns_lock:
            srv.conns.add(self)
        with srv.stats_lock:
            srv.stats["per_connection"].append(self.cstats)
        try:
            self.handshake_and_login()
            while True:
                typ, status, payload = self.transport.read_message(on_packet=self.count_packet)
                self.handle(typ, status, payload)
        except (Closed, DropConnection):
            pass
        except Exception:
            log("connection error:", traceback.format_exc())
        finally:
            with srv.conns_lock:
                srv.conns.discard(self)
            self.cstats["closed"] = True
            self.transport.close()

    def count_packet(self, typ):
        if self.logged_in and self.transport.tls is None:
            self.server.stat("plaintext_packets_after_login")

    # ------------------------------------------------------------ PRELOGIN / TLS / LOGIN7
    def strict_handshake_and_login(self):
        """TDS 8.0: TLS first (1.2 or 1.3, ALPN tds/8.0), then PRELOGIN and LOGIN7 inside it."""
        srv = self.server
        t = self.transport
        ctx = srv.tls_ctx_strict if self.via_listener else srv.node_tls_strict.get(self.node.idx,
                                                                                   srv.tls_ctx_strict)
        try:
            alpn, version = t.tls_handshake_raw(ctx)
        except Closed:
            srv.stat("refused_not_strict")
            raise
        srv.stat("tls_handshakes")
        srv.stat("strict_sessions")
        srv.stat_map("strict_alpn", str(alpn))
        srv.stat_map("strict_tls_version", str(version))
        typ, _st, payload = t.read_message()
        if typ != tds.PT_PRELOGIN:
            raise Closed()
        opts = tds.decode_prelogin(payload)
        cenc = opts.get(0x01, b"\x02")[:1]
        srv.stat_map("prelogin_client_encryption", str(cenc[0] if cenc else None))
        self.handshake_round_trip()
        t.send_message(tds.PT_REPLY, tds.encode_prelogin(tds.ENC_REQ), packet_size=4096)
        self.mode = "full"
        typ, _st, payload = t.read_message()
        if typ != tds.PT_LOGIN7:
            raise Closed()
        self.login(payload)

    def handshake_and_login(self):
        srv = self.server
        t = self.transport
        if srv.strict:
            return self.strict_handshake_and_login()
        typ, _st, payload = t.read_message()
        if typ == 0x16:
            srv.stat("refused_strict_client")
            raise Closed()      # a TLS ClientHello (TDS 8.0): SQL Server before 2022 just closes
        if typ != tds.PT_PRELOGIN:
            raise Closed()
        opts = tds.decode_prelogin(payload)
        cenc = opts.get(0x01, b"\x02")[:1]
        cenc = cenc[0] & 0x7F if cenc else tds.ENC_NOT_SUP
        srv.stat_map("prelogin_client_encryption", str(cenc))
        f = srv.faults
        if f.downgrade:
            senc = tds.ENC_OFF
        elif f.encrypt_not_sup:
            senc = tds.ENC_NOT_SUP
        elif cenc in (tds.ENC_ON, tds.ENC_REQ):
            senc = tds.ENC_ON
        elif cenc == tds.ENC_OFF:
            senc = tds.ENC_REQ if srv.force_encryption else tds.ENC_OFF
        else:
            senc = tds.ENC_REQ if srv.force_encryption else tds.ENC_NOT_SUP
        srv.stat_map("prelogin_server_encryption", str(senc))
        self.handshake_round_trip()
        t.send_message(tds.PT_REPLY, tds.encode_prelogin(senc), packet_size=4096)
        if senc in (tds.ENC_ON, tds.ENC_REQ):
            self.mode = "full"
        elif senc == tds.ENC_OFF:
            self.mode = "login-only"
        else:
            self.mode = "none"
        typ, _st, payload = t.read_message()
        if typ == tds.PT_PRELOGIN and senc != tds.ENC_NOT_SUP:
            ctx = srv.tls_ctx if self.via_listener else srv.node_tls.get(self.node.idx, srv.tls_ctx)
            t.tls_handshake(ctx, payload, before_reply=self.handshake_round_trip)
            srv.stat("tls_handshakes")
            typ, _st, payload = t.read_message()
        elif typ == tds.PT_LOGIN7:
            if self.mode == "full" and not (f.downgrade or f.encrypt_not_sup):
                srv.stat("refused_encryption")
                raise Closed()
            if self.mode == "full":
                self.mode = "none"
            srv.stat("plaintext_logins")
            self.mode = "none"
        if typ != tds.PT_LOGIN7:
            raise Closed()
        self.login(payload)

    def login(self, payload):
        srv = self.server
        t = self.transport
        try:
            lg = tds.decode_login7(payload)
        except Exception:
            raise Closed()
        ver = tds.negotiate_version(lg["tds_version"])
        if self.mode == "login-only":
            t.drop_tls()
            srv.stat("login_only_sessions")
        elif self.mode == "full":
            srv.stat("full_tls_sessions")
        else:
            srv.stat("unencrypted_sessions")
        node = self.node
        server_name = node.name
        if self.via_listener:
            node = srv.state.primary()
            self.node = node
            server_name = node.name

        def fail(errs):
            srv.stat("logins_failed")
            body = b""
            for e in errs:
                body += tds.tok_error(e.number, e.state, e.cls, e.msg, server_name, "", 1, ver)
            body += tds.tok_done(tds.DONE_ERROR, 0, 0, max(ver, tds.V72))
            t.send_message(tds.PT_REPLY, body)
            raise Closed()

        sspi_answer = b""
        if lg["integrated"]:
            # Integrated login: a Kerberos (or SPNEGO) token in LOGIN7, accepted with the service keytab
            # (python3-gssapi); the client principal is the login.  One round: the acceptor's token (the
            # AP-REP of mutual authentication) goes back in an SSPI token before LOGINACK.
            try:
                principal, sspi_answer = srv.kerberos_accept(lg["sspi"])
            except Exception as e:
                log(f"{node.name}: Kerberos login refused: {e}")
                srv.stat("kerberos_refused")
                fail([SqlError(18452, state=1)])
            lg["username"] = principal
            srv.stat("kerberos_logins")
        with srv.state.lock:
            l = node.d["logins"].get(lg["username"])
            if l is None:
                for n, v in node.d["logins"].items():
                    if n.lower() == lg["username"].lower():
                        l = v
                        lg["username"] = n
        if l is None or l.get("disabled") or (not lg["integrated"] and l["password"] != lg["password"]) \
                or (lg["integrated"] and not l.get("windows")) or (not lg["integrated"] and l.get("windows")):
            fail([SqlError(18456, lg["username"], state=1)])
        with srv.conns_lock:
            spid = srv.next_spid
            srv.next_spid += 1
        sess = Session(node, lg["username"], ver, spid, lg["readonly_intent"], lg["appname"], lg["hostname"])
        sess.handler = self
        sess.drop_after_answer = False
        try:
            sess.client_port = self.sock.getpeername()[1]
            sess.local_port = self.sock.getsockname()[1]
        except OSError:
            pass
        ex = Executor(srv, sess)
        dbname = lg["database"] or l.get("default_database") or "master"
        with srv.state.lock:
            db = ex.find_db(dbname)
            try:
                if db is None:
                    raise SqlError(4060, dbname)
                ex.check_readable(db)
                if not ex.db_user(db):
                    raise SqlError(4060, dbname)
            except SqlError as e:
                errs = [e] if e.number != 4060 else [e]
                errs.append(SqlError(18456, lg["username"], state=1))
                fail(errs)
        sess.db = db["name"]
        packet_size = max(512, min(32767, lg["packet_size"] or 4096))
        body = tds.tok_envchange_str(1, sess.db, "master")
        body += tds.tok_info(5701, 2, 0, f"Changed database context to '{sess.db}'.", server_name, "", 1, ver)
        body += tds.tok_envchange_bytes(7, tds.COLLATION, b"")
        body += tds.tok_envchange_str(2, "us_english", "")
        body += tds.tok_info(5703, 1, 0, "Changed language setting to us_english.", server_name, "", 1, ver)
        if sspi_answer:
            body = tds.tok_sspi(sspi_answer) + body
        body += tds.tok_loginack(ver)
        if 0x0A in lg["features"]:
            body += tds.tok_featureextack_utf8()
        body += tds.tok_envchange_str(4, str(packet_size), "4096")
        body += tds.tok_done(0, 0, 0, ver)
        self.round_trip()
        t.send_message(tds.PT_REPLY, body, packet_size=4096)
        t.packet_size = packet_size
        self.sess = sess
        self.ex = ex
        self.ver = ver
        self.logged_in = True
        self.cstats["spid"] = spid
        srv.stat("logins_ok")
        srv.node_stat(node, "logins_ok")
        log(f"{node.name}: login {lg['username']} spid {spid} tds {ver:08x} mode {self.mode}")

    # ------------------------------------------------------------ requests
    def latency(self):
        ms = self.server.faults.latency_ms
        if ms:
            t0 = time.monotonic()
            time.sleep(ms / 1000.0)
            self.slept(t0)

    def check_attention(self, timeout):
        """Poll for an ATTENTION packet while a request is in progress."""
        if self.pending_attention:
            return True
        if not self.transport.readable(timeout):
            return False
        typ, status, _p = self.transport.read_packet()
        if typ == tds.PT_ATTN:
            self.pending_attention = True
            self.server.stat("attentions")
            return True
        return False

    def send_attention_ack(self):
        self.pending_attention = False
        self.transport.send_message(tds.PT_REPLY, tds.tok_done(tds.DONE_ATTN, 0, 0, self.ver))

    def handle(self, typ, status, payload):
        srv = self.server
        t = self.transport
        if typ == tds.PT_ATTN:
            srv.stat("attentions")
            self.send_attention_ack()
            return
        if status & tds.ST_IGNORE:
            t.send_message(tds.PT_REPLY, tds.tok_done(0, 0, 0, self.ver))
            return
        srv.stat("requests")
        srv.node_stat(self.node, "requests")
        self.cstats["requests"] += 1
        self.round_trip(sleep=False)
        sess = self.sess
        if not self.node.up:
            raise Closed()
        out = Out(self.ver, self.node.name)
        # latency once per request message (= per round trip), interruptible by attention
        ms = srv.faults.latency_ms
        if ms:
            end = time.time() + ms / 1000.0
            t0 = time.monotonic()
            while time.time() < end:
                if self.check_attention(min(0.05, max(0, end - time.time()))):
                    self.slept(t0)
                    self.send_attention_ack()
                    return
            self.slept(t0)
        try:
            if typ == tds.PT_BATCH:
                hdr = tds.skip_all_headers(payload, self.ver)
                text = payload[hdr:].decode("utf-16-le", "replace")
                if os.environ.get("SQLSIM_TRACE"):
                    with open(os.environ["SQLSIM_TRACE"], "a") as tf:
                        # a debugging aid (bench/README.md); N'...' literals never reach it
                        shown = re.sub(r"N'(?:[^']|'')*'", "N'?'", text)[:120]
                        tf.write(f"{self.node.name} {id(self)} BATCH {shown!r}\n")
                self.ex.run_batch(text, out, hook=srv.statement_hook)
                if not out.has_done():
                    out.done(0)
            elif typ == tds.PT_RPC:
                if os.environ.get("SQLSIM_TRACE"):
                    with open(os.environ["SQLSIM_TRACE"], "a") as tf:
                        tf.write(f"{self.node.name} {id(self)} RPC\n")
                try:
                    calls = tds.decode_rpc(payload, self.ver)
                except Exception as e:
                    log("bad RPC:", e)
                    out.error(SqlError(8009, msg="The incoming tabular data stream (TDS) remote procedure call "
                                                 "(RPC) protocol stream is incorrect.", cls=16))
                    out.done(tds.DONE_ERROR)
                    calls = []
                for k, call in enumerate(calls):
                    self.rpc(call, out, last=(k == len(calls) - 1))
            elif typ == tds.PT_TM:
                # transaction manager request: acknowledge begin/commit/rollback (not modelled)
                hdr = tds.skip_all_headers(payload, self.ver)
                req = int.from_bytes(payload[hdr:hdr + 2], "little") if len(payload) >= hdr + 2 else 0
                if req == 5:
                    out.raw(tds.tok_envchange_bytes(8, b"\x01" + b"\x00" * 7, b""))
                elif req in (7, 8):
                    out.raw(tds.tok_envchange_bytes(9 if req == 7 else 10, b"", b"\x01" + b"\x00" * 7))
                out.done(0)
            else:
                raise Closed()
        except AttentionSignal:
            self.send_attention_ack()
            return
        if getattr(sess, "drop_after_answer", False):
            sess.drop_after_answer = False
            srv.stat("dropped_by_fault")
            raise DropConnection()
        if self.pending_attention:
            self.send_attention_ack()
            return
        t.send_message(tds.PT_REPLY, out.build())

    def rpc(self, call, out, last):
        srv = self.server
        name = call["name"]
        if call["procid"] is not None:
            name = {10: "sp_executesql", 11: "sp_prepare", 12: "sp_execute", 13: "sp_prepexec",
                    15: "sp_unprepare"}.get(call["procid"], f"proc#{call['procid']}")
        params = [(pn or None, v) for pn, _t, v, _o in call["params"]]
        srv.stat("rpcs")
        srv.node_stat(self.node, "rpcs")
        self.cstats["rpcs"] += 1
        srv.statement_hook(self.sess, "EXEC " + name)
        pname = name.split(".")[-1].strip("[]")
        status = 0
        failed = False
        sub = Out(self.ver, self.node.name)
        try:
            with srv.state.lock:
                try:
                    status = self.ex.call_proc(pname, params, sub, 0xFF)
                finally:
                    srv.state.flush()
        except SqlError as e:
            e.proc = pname if pname.lower() != "sp_executesql" else ""
            sub.error(e)
            failed = True
            status = 1
        except ReturnSignal as r:
            status = r.value
        for it in sub.items:
            if isinstance(it, list):
                it[1] |= tds.DONE_MORE
            out.items.append(it)
        if any(isinstance(i, bytes) and i[:1] == b"\xAA" for i in sub.items):
            failed = True
        out.raw(tds.tok_returnstatus(status if isinstance(status, int) else 0))
        out.done((tds.DONE_ERROR if failed else 0), token=0xFE)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="sqlsim", description="SQL Server availability-group simulator (TDS over TLS)")
    p.add_argument("--state", required=True)
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls-cert", required=True)
    p.add_argument("--tls-key", required=True)
    p.add_argument("--sa-password-file", required=True)
    p.add_argument("--scenario", choices=["configmgr", "empty"], default="configmgr")
    p.add_argument("--dmk-password-file")
    p.add_argument("--ag-name", default="AG1")
    p.add_argument("--readable-secondaries", choices=["yes", "no", "read-only", "read_only"], default="yes")
    p.add_argument("--force-encryption", action="store_true")
    p.add_argument("--latency-ms", type=int, default=0)
    p.add_argument("--latency-handshake", action="store_true",
                   help="also sleep --latency-ms before the PRELOGIN answer and each TLS handshake flight "
                        "(every round trip of a connect pays the latency, as on a real network)")
    p.add_argument("--extra-databases", type=int, default=0, metavar="N",
                   help="N more AG databases DB0001..DBnnnn with a DMK and DMKAGENT_TEST_CERT")
    p.add_argument("--database-name", action="append", default=[], metavar="NAME",
                   help="an AG database with exactly this name (repeatable)")
    p.add_argument("--control-port", type=int)
    p.add_argument("--server-names", metavar="N1,N2,...",
                   help="replica_server_name of each node (e.g. localhost\\INST1): NetBIOS names, "
                        "SERVER\\INSTANCE for named instances")
    p.add_argument("--shape", action="append", default=[],
                   choices=["no-routing-urls", "null-role-disconnected", "null-primary-on-secondary"],
                   help="present a real-world catalog shape (repeatable)")
    p.add_argument("--browser-port", type=int, help="answer SQL Server Browser (SSRP) on this UDP port (0: any free one, in the ready line)")
    p.add_argument("--node-tls", action="append", default=[], metavar="IDX:CERT:KEY",
                   help="another certificate for one node")
    p.add_argument("--kerberos-keytab", metavar="FILE",
                   help="accept integrated (Kerberos) logins with this service keytab (read at each login)")
    p.add_argument("--kerberos-login", action="append", default=[], metavar="PRINCIPAL",
                   help="a Windows login (sysadmin) for this Kerberos principal, e.g. dmkagent@DMK.TEST")
    p.add_argument("--strict", action="store_true",
                   help="Force Strict Encryption (TDS 8.0): TLS before any TDS byte; PRELOGIN in the clear is "
                        "refused")
    p.add_argument("--downgrade", action="store_true",
                   help="attacker downgrade: answer ENCRYPT_OFF to every client (see README)")
    a = p.parse_args(argv)
    if a.nodes < 1 or a.nodes > 16:
        p.error("--nodes must be 1..16")
    if a.extra_databases < 0 or a.extra_databases > 9999:
        p.error("--extra-databases must be 0..9999")
    seen = {"master", "tempdb", "model", "msdb"} | ({"cm_p01"} if a.scenario == "configmgr" else set())
    seen |= {f"db{i:04d}" for i in range(1, a.extra_databases + 1)}
    for n in a.database_name:
        if not n or len(n) > 128:
            p.error(f"--database-name must be 1..128 characters: {n!r}")
        if n.lower() in seen:
            p.error(f"--database-name {n!r}: a database with that name already exists")
        seen.add(n.lower())
    return a


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.makedirs(args.state, exist_ok=True)
    return Server(args).run()
