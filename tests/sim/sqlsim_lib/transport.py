"""A TDS connection's byte transport: plain socket, or TLS carried inside PRELOGIN
packets (ssl.MemoryBIO), then raw TLS records (tds-notes.md section 3)."""
import select
import ssl
import struct
import time

from common.httpsd import tls_context

from . import tds


class Closed(Exception):
    pass


def make_tls_context(cert, key, strict=False):
    # TDS 7.x runs TLS <= 1.2; FreeTDS/GnuTLS breaks with 1.3 (tds-notes.md section 3).
    # TDS 8.0 (strict): TLS 1.2 or 1.3 before any TDS byte, ALPN "tds/8.0".
    if not strict:
        return tls_context(cert, key, tls12_only=True)
    ctx = tls_context(cert, key)
    ctx.set_alpn_protocols(["tds/8.0"])
    return ctx


class Transport:
    def __init__(self, sock):
        self.sock = sock
        self.tls = None
        self.inb = self.outb = None
        self.plain = b""        # decrypted bytes not yet consumed
        self.raw = b""          # socket bytes not yet consumed (plain mode)
        self.packet_size = 4096
        self.closed = False
        # service time (bench/README.md): the time between a receive returning and the next one
        # starting, reported to on_busy(seconds); the waits for the client are not in it
        self.on_busy = None
        self._busy_since = time.monotonic()

    def busy_mark(self, start):
        """Close the running busy interval (start=False, before a blocking wait) or open one."""
        now = time.monotonic()
        if not start and self._busy_since is not None:
            if self.on_busy:
                self.on_busy(now - self._busy_since)
            self._busy_since = None
        elif start:
            self._busy_since = now

    # -------------------------------------------------------- raw bytes
    def _sock_recv(self):
        self.busy_mark(False)
        try:
            d = self.sock.recv(65536)
        except OSError:
            d = b""
        self.busy_mark(True)
        if not d:
            raise Closed()
        return d

    def _fill(self):
        if self.tls is None:
            self.raw += self._sock_recv()
            return
        while True:
            try:
                d = self.tls.read(65536)
                if d:
                    self.plain += d
                    return
                raise Closed()
            except ssl.SSLWantReadError:
                self.inb.write(self._sock_recv())
            except ssl.SSLError:
                raise Closed()

    def _buf(self):
        return self.plain if self.tls is not None else self.raw

    def _read_exact(self, n):
        while len(self._buf()) < n:
            self._fill()
        if self.tls is not None:
            b, self.plain = self.plain[:n], self.plain[n:]
        else:
            b, self.raw = self.raw[:n], self.raw[n:]
        return b

    def readable(self, timeout):
        """True if a packet (or part of one) is waiting."""
        if self._buf():
            return True
        if self.tls is not None and self.tls.pending():
            return True
        try:
            r, _, _ = select.select([self.sock], [], [], timeout)
        except (OSError, ValueError):
            return True
        return bool(r)

    def _send_raw(self, data):
        if self.tls is not None:
            self.tls.write(data)
            data = self.outb.read()
        try:
            self.sock.sendall(data)
        except OSError:
            raise Closed()

    # -------------------------------------------------------- packets
    def read_packet(self):
        hdr = self._read_exact(8)
        typ, status, length = hdr[0], hdr[1], struct.unpack(">H", hdr[2:4])[0]
        if length < 8:
            raise Closed()
        payload = self._read_exact(length - 8)
        return typ, status, payload

    def read_message(self, on_packet=None):
        """(type, status_of_last, payload) of one message (packets up to EOM)."""
        data = b""
        while True:
            typ, status, payload = self.read_packet()
            if on_packet:
                on_packet(typ)
            data += payload
            if typ == tds.PT_ATTN:
                return typ, status, data
            if status & tds.ST_EOM:
                return typ, status, data

    def send_message(self, typ, payload, packet_size=None, spid=51):
        size = (packet_size or self.packet_size) - 8
        chunks = [payload[i:i + size] for i in range(0, len(payload), size)] or [b""]
        out = b""
        for i, c in enumerate(chunks):
            st = tds.ST_EOM if i == len(chunks) - 1 else 0
            out += struct.pack(">BBHHBB", typ, st, len(c) + 8, spid, (i + 1) & 0xFF, 0) + c
        self._send_raw(out)

    # -------------------------------------------------------- TLS inside PRELOGIN
    def tls_handshake(self, ctx, first_payload, before_reply=None):
        """first_payload: the payload of the 0x12 packet(s) that began the handshake.
        before_reply(): called before each flight sent in answer to a client flight (latency)."""
        before_reply = before_reply or (lambda: None)
        self.inb, self.outb = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(self.inb, self.outb, server_side=True)
        self.inb.write(first_payload)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                out = self.outb.read()
                if out:
                    before_reply()
                    self.send_message(tds.PT_PRELOGIN, out, packet_size=4096)
                typ, _st, payload = self.read_message()
                if typ != tds.PT_PRELOGIN:
                    raise Closed()
                self.inb.write(payload)
            except (ssl.SSLError, OSError) as e:
                out = self.outb.read()
                if out:
                    try:
                        self.send_message(tds.PT_PRELOGIN, out, packet_size=4096)
                    except Closed:
                        pass
                raise Closed(str(e))
        out = self.outb.read()
        if out:
            before_reply()
            self.send_message(tds.PT_PRELOGIN, out, packet_size=4096)
        # any bytes read past the last handshake packet belong to TLS
        if self.raw:
            self.inb.write(self.raw)
            self.raw = b""
        self.tls = obj

    # -------------------------------------------------------- TDS 8.0: TLS first
    def tls_handshake_raw(self, ctx):
        """TLS straight on the socket before any TDS byte.  Whatever is not a TLS ClientHello (a
        TDS 7.x PRELOGIN) fails the handshake: the alert OpenSSL makes is sent, then Closed."""
        self.inb, self.outb = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(self.inb, self.outb, server_side=True)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                out = self.outb.read()
                if out:
                    self._sock_send(out)
                self.inb.write(self._sock_recv())
            except (ssl.SSLError, OSError) as e:
                out = self.outb.read()
                if out:
                    try:
                        self._sock_send(out)
                    except Closed:
                        pass
                raise Closed(str(e))
        out = self.outb.read()
        if out:
            self._sock_send(out)
        self.tls = obj
        return obj.selected_alpn_protocol(), obj.version()

    def _sock_send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            raise Closed()

    def drop_tls(self):
        """Login-only encryption: discard the TLS object, continue in plaintext."""
        self.tls = None
        self.plain = b""

    def close(self):
        self.closed = True
        try:
            self.sock.shutdown(2)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
