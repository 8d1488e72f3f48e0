#!/usr/bin/python3
"""A hostile TDS server: answers every connection with one kind of bad
PRELOGIN, TLS or framing, for the tests of what dmkagent does with it.

    hostile_tds.py --mode MODE [--port N]
The login-* modes complete PRELOGIN and TLS properly (--tls-cert,
--tls-key) and misbehave only inside TLS, answering FreeTDS's LOGIN7; the
result-* modes log in and answer the first batch with a value that does not
fit its type; the strict-* modes are TDS 8.0 (TLS first, ALPN tds/8.0) and
misbehave in the PRELOGIN answer inside TLS.
Prints one JSON line {"port": N, "mode": MODE} when listening, then serves
until SIGTERM.  Each connection is handled in a thread of its own, so a
client that retries meets the same fault.  Not a simulator: it knows only
enough TDS to be wrong in a precise way.
"""
import argparse
import json
import os
import signal
import socket
import ssl
import struct
import sys
import threading
import time

PRELOGIN, REPLY = 0x12, 0x04
EOM = 0x01


def packet(ptype, payload, status=EOM, length=None):
    n = len(payload) + 8 if length is None else length
    return struct.pack(">BBHHBB", ptype, status, n, 0, 1, 0) + payload


def prelogin_answer(enc=0x01, version=b"\x10\x00\x03\xe8\x00\x00"):
    """A well-formed PRELOGIN answer: VERSION, ENCRYPTION, INSTOPT, THREADID, MARS."""
    hdr = 5 * 5 + 1
    opts = [(0x00, version), (0x01, bytes([enc])), (0x02, b"\x00"), (0x03, b""), (0x04, b"\x00")]
    table, data, off = b"", b"", hdr
    for tok, val in opts:
        table += struct.pack(">BHH", tok, off, len(val))
        data += val
        off += len(val)
    return table + b"\xff" + data


def recv_exact(c, n):
    b = b""
    while len(b) < n:
        k = c.recv(n - len(b))
        if not k:
            raise EOFError
        b += k
    return b


def read_message(c):
    """One TDS message (packets up to EOM); returns (type, payload)."""
    data, first = b"", None
    while True:
        h = recv_exact(c, 8)
        t, st, n = h[0], h[1], struct.unpack(">H", h[2:4])[0]
        first = t if first is None else first
        data += recv_exact(c, max(0, n - 8))
        if st & EOM:
            return first, data


def hold(c, secs=60):
    """Keep the connection open and say nothing (until the client goes)."""
    c.settimeout(secs)
    try:
        while c.recv(65536):
            pass
    except (OSError, socket.timeout):
        pass


GARBAGE = bytes((i * 37 + 11) & 0xff for i in range(65527))


def tls_handshake(c, cert, key):
    """The server side of TDS's TLS: handshake records inside PRELOGIN packets."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out, server_side=True)
    while True:
        _, data = read_message(c)
        inc.write(data)
        try:
            tls.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        flight = out.read()
        if flight:
            c.sendall(packet(PRELOGIN, flight))
        if done:
            return tls, inc, out


def tls_read_packet(c, tls, inc):
    """One TDS packet of plaintext from raw TLS records after the handshake."""
    buf = b""
    while True:
        try:
            buf += tls.read(65536)
        except ssl.SSLWantReadError:
            k = c.recv(65536)
            if not k:
                raise EOFError
            inc.write(k)
            continue
        if len(buf) >= 8 and len(buf) >= struct.unpack(">H", buf[2:4])[0]:
            return buf


def tls_send(c, tls, out, data):
    tls.write(data)
    c.sendall(out.read())


def b_varchar(text):
    u = text.encode("utf-16-le")
    return bytes([len(text)]) + u


def login_ack():
    """LOGINACK: TDS 7.4, a program name and version."""
    body = b"\x01" + bytes([0x74, 0, 0, 4]) + b_varchar("hostile") + bytes([16, 0, 0, 0])
    return b"\xad" + struct.pack("<H", len(body)) + body


def done(status=0, rows=0):
    return b"\xfd" + struct.pack("<HHQ", status, 0, rows)


COLLATION = bytes([0x09, 0x04, 0xd0, 0x00, 0x34])


def bad_result(mode):
    """One column, one row, with a value that does not fit its type."""
    if mode == "result-bad-int":
        # INTN declared 4 bytes wide, the row's value 1 byte long
        meta = struct.pack("<IH", 0, 0x0001) + b"\x26\x04" + b_varchar("encrypt_option")
        row = b"\xd1" + b"\x01\x07"
    else:
        # NVARCHAR with a NUL inside
        val = "TRUE\0x".encode("utf-16-le")
        meta = (struct.pack("<IH", 0, 0x0001) + b"\xe7" + struct.pack("<H", 80) + COLLATION
                + b_varchar("encrypt_option"))
        row = b"\xd1" + struct.pack("<H", len(val)) + val
    return b"\x81" + struct.pack("<H", 1) + meta + row


def serve_login(c, mode, cert, key):
    c.sendall(packet(REPLY, prelogin_answer()))
    tls, inc, out = tls_handshake(c, cert, key)
    login = tls_read_packet(c, tls, inc)          # FreeTDS's LOGIN7, through the relay
    if login[0] != 0x10:
        raise SystemExit(f"expected LOGIN7, got packet type {login[0]:#x}")
    if mode == "login-garbage":
        # a LOGINACK token whose length runs far past the packet, then noise
        tls_send(c, tls, out, packet(REPLY, b"\xad\xff\xff" + GARBAGE[:200]))
        hold(c)
    elif mode == "login-oversized":
        tls_send(c, tls, out, packet(REPLY, GARBAGE, length=65535))
        hold(c)
    elif mode == "login-short-length":
        tls_send(c, tls, out, struct.pack(">BBHHBB", REPLY, EOM, 4, 0, 1, 0) + b"\x00" * 16)
        hold(c)
    elif mode.startswith("result-"):
        tls_send(c, tls, out, packet(REPLY, login_ack() + done()))
        batch = tls_read_packet(c, tls, inc)     # the session's first batch
        if batch[0] != 0x01:
            raise SystemExit(f"expected a SQL batch, got packet type {batch[0]:#x}")
        tls_send(c, tls, out, packet(REPLY, bad_result(mode) + done(status=0x10, rows=1)))
        hold(c)
    elif mode == "login-close":
        pass
    elif mode == "login-silent":
        hold(c, 120)


def serve_strict(c, mode, cert, key):
    """TDS 8.0: a proper TLS-first handshake (ALPN tds/8.0), then a bad PRELOGIN answer inside it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["tds/8.0"])
    t = ctx.wrap_socket(c, server_side=True)
    read_message(t)                     # the PRELOGIN, inside TLS
    if mode == "strict-prelogin-offsets":
        pl = bytearray(prelogin_answer())
        struct.pack_into(">H", pl, 6, 0xfff0)
        t.sendall(packet(REPLY, bytes(pl)))
        hold(t)
    elif mode == "strict-oversized":
        t.sendall(packet(REPLY, GARBAGE[:4000], status=0) * 70)    # > 256 KiB without EOM
        hold(t)
    elif mode == "strict-close":
        t.close()
    elif mode == "strict-silent":
        hold(t, 120)


def serve(c, mode, cert=None, key=None):
    if mode.startswith("strict-"):
        serve_strict(c, mode, cert, key)
        return
    if mode.startswith("login-") or mode.startswith("result-"):
        read_message(c)
        serve_login(c, mode, cert, key)
        return
    if mode == "silent":
        hold(c, 120)
        return
    read_message(c)                     # the client's PRELOGIN
    if mode == "oversized":
        # the largest length the header can carry, and a payload to match
        c.sendall(packet(REPLY, GARBAGE, length=65535))
        hold(c)
    elif mode == "oversized-valid":
        # a parseable PRELOGIN answer padded to the header's maximum
        pl = prelogin_answer(enc=0x00)
        c.sendall(packet(REPLY, pl + b"\x00" * (65527 - len(pl)), length=65535))
        hold(c)
    elif mode == "short-length":
        c.sendall(struct.pack(">BBHHBB", REPLY, EOM, 4, 0, 1, 0) + b"\x00" * 16)
        hold(c)
    elif mode == "truncated-header":
        c.sendall(bytes([REPLY, EOM, 0x00]))
    elif mode == "truncated-payload":
        c.sendall(packet(REPLY, prelogin_answer(), length=200)[:60])
    elif mode == "endless-packets":
        # packets without EOM, each at the length cap, forever
        try:
            while True:
                c.sendall(packet(REPLY, GARBAGE, status=0, length=65535))
        except OSError:
            pass
    elif mode == "prelogin-offsets":
        pl = bytearray(prelogin_answer())
        struct.pack_into(">H", pl, 6, 0xfff0)          # ENCRYPTION's offset past the end
        c.sendall(packet(REPLY, bytes(pl)))
        hold(c)
    elif mode == "prelogin-lengths":
        pl = bytearray(prelogin_answer())
        struct.pack_into(">H", pl, 3, 0xffff)          # VERSION's length: huge
        struct.pack_into(">H", pl, 8, 0xfff0)          # ENCRYPTION's length: huge
        c.sendall(packet(REPLY, bytes(pl)))
        hold(c)
    elif mode == "prelogin-noterm":
        # option entries all the way, no 0xff
        c.sendall(packet(REPLY, b"\x01\x00\x05\x00\x01" * 12))
        hold(c)
    elif mode == "prelogin-into-table":
        # ENCRYPTION's value read from inside the option table itself
        pl = bytearray(prelogin_answer())
        struct.pack_into(">H", pl, 6, 0)
        c.sendall(packet(REPLY, bytes(pl)))
        hold(c)
    elif mode == "encrypt-garbage":
        c.sendall(packet(REPLY, prelogin_answer(enc=0x7f)))
        hold(c)
    elif mode == "tls-garbage":
        c.sendall(packet(REPLY, prelogin_answer()))
        read_message(c)                 # ClientHello, wrapped
        c.sendall(packet(PRELOGIN, GARBAGE[:3000]))
        hold(c)
    elif mode == "tls-raw-garbage":
        c.sendall(packet(REPLY, prelogin_answer()))
        read_message(c)
        c.sendall(GARBAGE[:3000])
        hold(c)
    elif mode == "tls-oversized":
        c.sendall(packet(REPLY, prelogin_answer()))
        read_message(c)
        c.sendall(packet(PRELOGIN, GARBAGE, length=65535))
        hold(c)
    elif mode == "close-mid-handshake":
        c.sendall(packet(REPLY, prelogin_answer()))
        read_message(c)
    elif mode == "silent-after-prelogin":
        c.sendall(packet(REPLY, prelogin_answer()))
        hold(c, 120)
    else:
        raise SystemExit(f"unknown mode {mode}")


MODES = ["silent", "oversized", "oversized-valid", "short-length", "truncated-header",
         "truncated-payload", "endless-packets", "prelogin-offsets", "prelogin-lengths",
         "prelogin-noterm", "prelogin-into-table", "encrypt-garbage", "tls-garbage",
         "tls-raw-garbage", "tls-oversized", "close-mid-handshake", "silent-after-prelogin",
         "login-garbage", "login-oversized", "login-short-length", "login-close", "login-silent",
         "result-bad-int", "result-nul-string",
         "strict-prelogin-offsets", "strict-oversized", "strict-close", "strict-silent"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", required=True, choices=MODES)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tls-cert", help="for the login-* modes: the server certificate (PEM)")
    ap.add_argument("--tls-key")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *x: os._exit(0))
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", a.port))
    ls.listen(16)
    print(json.dumps({"port": ls.getsockname()[1], "mode": a.mode}), flush=True)

    def one(c):
        try:
            serve(c, a.mode, a.tls_cert, a.tls_key)
        except (EOFError, OSError):
            pass
        finally:
            time.sleep(0.05)
            c.close()

    while True:
        c, _ = ls.accept()
        threading.Thread(target=one, args=(c,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
