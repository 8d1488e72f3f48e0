"""TDS 7.1-7.4 wire encoding: packets, tokens, types (see /work/shared/docs/tds-notes.md)."""
import datetime
import struct
import uuid

# packet types
PT_BATCH, PT_REPLY, PT_RPC, PT_ATTN, PT_BULK, PT_TM, PT_LOGIN7, PT_SSPI, PT_PRELOGIN = \
    0x01, 0x04, 0x03, 0x06, 0x07, 0x0E, 0x10, 0x11, 0x12
ST_EOM, ST_IGNORE = 0x01, 0x02

# TDS versions, ordered
V71, V72, V73A, V73B, V74 = 0x71000001, 0x72090002, 0x730A0003, 0x730B0003, 0x74000004
VERSIONS = [V71, V72, V73A, V73B, V74]

ENC_OFF, ENC_ON, ENC_NOT_SUP, ENC_REQ = 0, 1, 2, 3

COLLATION = bytes.fromhex("0904D00034")   # SQL_Latin1_General_CP1_CI_AS

DONE_FINAL, DONE_MORE, DONE_ERROR, DONE_INXACT, DONE_COUNT, DONE_ATTN, DONE_SRVERROR = \
    0, 1, 2, 4, 0x10, 0x20, 0x100


def negotiate_version(client_ver):
    """min(requested, 7.4) as an exact constant."""
    hi = client_ver >> 24
    if client_ver in VERSIONS:
        return client_ver
    if hi >= 0x74 or client_ver == 0x08000000:
        return V74 if client_ver != 0x08000000 else V74
    if hi == 0x73:
        return V73B if (client_ver >> 16) & 0xFF >= 0x0B else V73A
    if hi == 0x72:
        return V72
    return V71


def us_varchar(s):
    b = s.encode("utf-16-le")
    return struct.pack("<H", len(b) // 2) + b


def b_varchar(s):
    b = s.encode("utf-16-le")
    return struct.pack("<B", len(b) // 2) + b


# ---------------------------------------------------------------- tokens

def tok_envchange_str(typ, new, old):
    body = struct.pack("<B", typ) + b_varchar(new) + b_varchar(old)
    return b"\xE3" + struct.pack("<H", len(body)) + body


def tok_envchange_bytes(typ, new, old):
    body = struct.pack("<B", typ) + struct.pack("<B", len(new)) + new + struct.pack("<B", len(old)) + old
    return b"\xE3" + struct.pack("<H", len(body)) + body


def tok_msg(token, number, state, cls, msg, server, proc, line, ver):
    body = struct.pack("<iBB", number, state, cls) + us_varchar(msg) + b_varchar(server) + b_varchar(proc)
    body += struct.pack("<i", line) if ver >= V72 else struct.pack("<H", line)
    return bytes([token]) + struct.pack("<H", len(body)) + body


def tok_error(number, state, cls, msg, server, proc="", line=1, ver=V74):
    return tok_msg(0xAA, number, state, cls, msg, server, proc, line, ver)


def tok_info(number, state, cls, msg, server, proc="", line=1, ver=V74):
    return tok_msg(0xAB, number, state, cls, msg, server, proc, line, ver)


def tok_sspi(blob):
    return bytes([0xED]) + struct.pack("<H", len(blob)) + blob


def tok_loginack(ver, progname="Microsoft SQL Server", progver=(15, 0, 4375 >> 8, 4375 & 0xFF)):
    pn = b_varchar(progname)
    body = b"\x01" + struct.pack(">I", ver) + pn + bytes(progver)
    return b"\xAD" + struct.pack("<H", len(body)) + body


def tok_done(status=0, curcmd=0, rowcount=0, ver=V74, token=0xFD):
    if ver >= V72:
        return bytes([token]) + struct.pack("<HHQ", status, curcmd, rowcount)
    return bytes([token]) + struct.pack("<HHI", status, curcmd, rowcount & 0xFFFFFFFF)


def tok_returnstatus(v):
    return b"\x79" + struct.pack("<i", v)


def tok_featureextack_utf8():
    return b"\xAE" + b"\x0A" + struct.pack("<I", 1) + b"\x01" + b"\xFF"


# ---------------------------------------------------------------- types

class SqlType:
    """A result column type: kind in int,bigint,smallint,tinyint,bit,nvarchar,varchar,
    varbinary,uniqueidentifier,datetime,datetime2; size in chars/bytes, -1 = max."""

    def __init__(self, kind, size=None):
        self.kind = kind
        self.size = size

    def __repr__(self):
        return f"SqlType({self.kind},{self.size})"


def parse_type(name, size=None):
    n = name.lower()
    if n == "sysname":
        return SqlType("nvarchar", 128)
    if n in ("nchar",):
        n = "nvarchar"
    if n in ("char",):
        n = "varchar"
    if n in ("binary", "image", "timestamp", "rowversion"):
        n = "varbinary"
    if n in ("ntext", "xml"):
        n, size = "nvarchar", -1
    if n == "text":
        n, size = "varchar", -1
    if n in ("date", "smalldatetime"):
        n = "datetime"
    if n in ("datetimeoffset",):
        n = "datetime2"
    if n in ("numeric", "decimal", "money", "smallmoney", "float", "real"):
        n = "bigint"
    if n in ("nvarchar", "varchar", "varbinary") and size is None:
        size = 30 if n != "varbinary" else 30
    return SqlType(n, size)


def _maxbytes(t):
    if t.kind == "nvarchar":
        return 0xFFFF if t.size == -1 or (t.size or 0) > 4000 else 2 * max(1, t.size or 1)
    return 0xFFFF if t.size == -1 or (t.size or 0) > 8000 else max(1, t.size or 1)


def eff_kind(t, ver):
    if t.kind == "datetime2" and ver < V73A:
        return "datetime"
    return t.kind


def type_info(t, ver):
    k = eff_kind(t, ver)
    if k in ("int", "bigint", "smallint", "tinyint"):
        return b"\x26" + bytes([{"int": 4, "bigint": 8, "smallint": 2, "tinyint": 1}[k]])
    if k == "bit":
        return b"\x68\x01"
    if k == "uniqueidentifier":
        return b"\x24\x10"
    if k == "datetime":
        return b"\x6F\x08"
    if k == "datetime2":
        return b"\x2A\x07"
    if k == "nvarchar":
        return b"\xE7" + struct.pack("<H", _maxbytes(t)) + COLLATION
    if k == "varchar":
        return b"\xA7" + struct.pack("<H", _maxbytes(t)) + COLLATION
    if k == "varbinary":
        return b"\xA5" + struct.pack("<H", _maxbytes(t))
    raise ValueError(k)


def _plp(data):
    if data is None:
        return b"\xFF" * 8
    out = struct.pack("<Q", len(data))
    if data:
        out += struct.pack("<I", len(data)) + data
    return out + b"\x00\x00\x00\x00"


_EPOCH1900 = datetime.datetime(1900, 1, 1)
_EPOCH1 = datetime.datetime(1, 1, 1)


def to_bytes_value(t, v):
    """Python value -> bytes for varbinary."""
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, str):
        return v.encode("utf-16-le")
    if isinstance(v, bool):
        return bytes([int(v)])
    if isinstance(v, int):
        return struct.pack(">i", v) if -2**31 <= v < 2**31 else struct.pack(">q", v)
    if isinstance(v, uuid.UUID):
        return v.bytes_le
    return str(v).encode("utf-16-le")


def to_str_value(v):
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, uuid.UUID):
        return str(v).upper()
    if isinstance(v, datetime.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("latin-1")
    return str(v)


def encode_value(t, v, ver):
    k = eff_kind(t, ver)
    if k in ("int", "bigint", "smallint", "tinyint"):
        if v is None:
            return b"\x00"
        n = {"int": 4, "bigint": 8, "smallint": 2, "tinyint": 1}[k]
        return bytes([n]) + int(v).to_bytes(n, "little", signed=(k != "tinyint"))
    if k == "bit":
        return b"\x00" if v is None else b"\x01" + bytes([1 if v else 0])
    if k == "uniqueidentifier":
        if v is None:
            return b"\x00"
        if not isinstance(v, uuid.UUID):
            v = uuid.UUID(str(v))
        return b"\x10" + v.bytes_le
    if k == "datetime":
        if v is None:
            return b"\x00"
        d = v - _EPOCH1900
        days = d.days
        secs = d.seconds + d.microseconds / 1e6
        ticks = int(round(secs * 300))
        return b"\x08" + struct.pack("<iI", days, ticks)
    if k == "datetime2":
        if v is None:
            return b"\x00"
        d = v - _EPOCH1
        t100 = (d.seconds * 10**6 + d.microseconds) * 10
        return b"\x08" + t100.to_bytes(5, "little") + d.days.to_bytes(3, "little")
    if k in ("nvarchar", "varchar", "varbinary"):
        if v is not None:
            if k == "varbinary":
                data = to_bytes_value(t, v)
            elif k == "nvarchar":
                data = to_str_value(v).encode("utf-16-le")
            else:
                data = to_str_value(v).encode("cp1252", "replace")
        else:
            data = None
        if _maxbytes(t) == 0xFFFF:
            return _plp(data)
        if data is None:
            return b"\xFF\xFF"
        return struct.pack("<H", len(data)) + data
    raise ValueError(k)


def tok_colmetadata(cols, ver):
    """cols: list of (name, SqlType)."""
    out = b"\x81" + struct.pack("<H", len(cols))
    for name, t in cols:
        ut = struct.pack("<I", 0) if ver >= V72 else struct.pack("<H", 0)
        out += ut + struct.pack("<H", 0x0001 | 0x0008) + type_info(t, ver) + b_varchar(name)
    return out


def tok_row(cols, row, ver):
    if ver >= V73B and any(v is None for v in row):
        n = len(cols)
        bm = bytearray((n + 7) // 8)
        body = b""
        for i, ((_, t), v) in enumerate(zip(cols, row)):
            if v is None:
                bm[i // 8] |= 1 << (i % 8)
            else:
                body += encode_value(t, v, ver)
        return b"\xD2" + bytes(bm) + body
    return b"\xD1" + b"".join(encode_value(t, v, ver) for (_, t), v in zip(cols, row))


# ---------------------------------------------------------------- decoding client data

class Reader:
    def __init__(self, data, pos=0):
        self.d = data
        self.p = pos

    def left(self):
        return len(self.d) - self.p

    def take(self, n):
        if self.p + n > len(self.d):
            raise ValueError("truncated")
        b = self.d[self.p:self.p + n]
        self.p += n
        return b

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack("<H", self.take(2))[0]

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def u64(self):
        return struct.unpack("<Q", self.take(8))[0]

    def bvarchar(self):
        n = self.u8()
        return self.take(2 * n).decode("utf-16-le")

    def usvarchar(self):
        n = self.u16()
        return self.take(2 * n).decode("utf-16-le")


def skip_all_headers(data, ver):
    if ver < V72 or len(data) < 4:
        return 0
    total = struct.unpack("<I", data[:4])[0]
    if 4 <= total <= len(data):
        return total
    return 0


def decode_login7(data):
    r = {}
    (r["length"], r["tds_version"], r["packet_size"], _pv, _pid, _cid) = struct.unpack("<IIIIII", data[:24])
    r["opt1"], r["opt2"], r["type_flags"], r["opt3"] = data[24], data[25], data[26], data[27]

    def field(off):
        ib, cch = struct.unpack("<HH", data[off:off + 4])
        return ib, cch

    def s(off):
        ib, cch = field(off)
        return data[ib:ib + 2 * cch].decode("utf-16-le", "replace")

    r["hostname"] = s(36)
    r["username"] = s(40)
    ib, cch = field(44)
    raw = bytearray(data[ib:ib + 2 * cch])
    for i in range(len(raw)):
        b = raw[i] ^ 0xA5
        raw[i] = ((b << 4) & 0xF0) | (b >> 4)
    r["password"] = bytes(raw).decode("utf-16-le", "replace")
    r["appname"] = s(48)
    r["servername"] = s(52)
    r["database"] = s(68)
    r["language"] = s(64)
    r["readonly_intent"] = bool(r["type_flags"] & 0x20)
    # fIntSecurity (OptionFlags2 0x80): the SSPI blob (ibSSPI/cbSSPI at 78, cbSSPILong at 90)
    r["integrated"] = bool(r["opt2"] & 0x80)
    r["sspi"] = b""
    if r["integrated"]:
        ib, cb = struct.unpack("<HH", data[78:82])
        if cb == 0xFFFF and len(data) >= 94:
            cb = struct.unpack("<I", data[90:94])[0]
        if ib + cb > len(data):
            raise ValueError("SSPI blob past the end of LOGIN7")
        r["sspi"] = bytes(data[ib:ib + cb])
    r["features"] = []
    if r["opt3"] & 0x10:
        try:
            ib, cb = field(56)
            off = struct.unpack("<I", data[ib:ib + 4])[0]
            while off < len(data) and data[off] != 0xFF:
                fid = data[off]
                ln = struct.unpack("<I", data[off + 1:off + 5])[0]
                r["features"].append(fid)
                off += 5 + ln
        except Exception:
            pass
    return r


def decode_prelogin(data):
    opts = {}
    i = 0
    while i < len(data) and data[i] != 0xFF:
        tok = data[i]
        off, ln = struct.unpack(">HH", data[i + 1:i + 5])
        opts[tok] = data[off:off + ln]
        i += 5
    return opts


def encode_prelogin(enc, version=(15, 0, 4375, 0)):
    opts = [
        (0x00, bytes([version[0], version[1]]) + struct.pack(">H", version[2]) + struct.pack("<H", version[3])),
        (0x01, bytes([enc])),
        (0x02, b"\x00"),
        (0x03, b""),
        (0x04, b"\x00"),
    ]
    hdr_len = 5 * len(opts) + 1
    hdr = b""
    body = b""
    for tok, d in opts:
        hdr += struct.pack(">BHH", tok, hdr_len + len(body), len(d))
        body += d
    return hdr + b"\xFF" + body


# RPC parameter decoding ------------------------------------------------

def _read_plp(r):
    total = r.u64()
    if total == 0xFFFFFFFFFFFFFFFF:
        return None
    out = b""
    while True:
        n = r.u32()
        if n == 0:
            break
        out += r.take(n)
    return out


def read_typed_value(r):
    """Read TYPE_INFO + value; returns (typename, python value)."""
    t = r.u8()
    fixed = {0x30: ("tinyint", 1), 0x34: ("smallint", 2), 0x38: ("int", 4), 0x7F: ("bigint", 8),
             0x32: ("bit", 1), 0x3E: ("float", 8), 0x3B: ("real", 4), 0x3D: ("datetime", 8),
             0x3A: ("smalldatetime", 4), 0x3C: ("money", 8), 0x7A: ("smallmoney", 4)}
    if t == 0x1F:
        return "null", None
    if t in fixed:
        name, n = fixed[t]
        b = r.take(n)
        return name, _decode_fixed(name, b)
    if t in (0x26, 0x68, 0x6D, 0x6E, 0x6F):   # INTN BITN FLTN MONEYN DATETIMN
        r.u8()
        n = r.u8()
        if n == 0:
            return "int", None
        b = r.take(n)
        if t == 0x26:
            return "int", int.from_bytes(b, "little", signed=(n != 1))
        if t == 0x68:
            return "bit", bool(b[0])
        if t == 0x6D:
            return "float", struct.unpack("<d" if n == 8 else "<f", b)[0]
        if t == 0x6E:
            return "money", int(_decode_fixed("money" if n == 8 else "smallmoney", b))
        return "datetime", _decode_fixed("datetime" if n == 8 else "smalldatetime", b)
    if t == 0x24:
        r.u8()
        n = r.u8()
        return "uniqueidentifier", (uuid.UUID(bytes_le=r.take(16)) if n == 16 else None)
    if t in (0x6A, 0x6C, 0x37, 0x3F):   # DECIMALN NUMERICN
        r.u8()
        _prec = r.u8()
        scale = r.u8()
        n = r.u8()
        if n == 0:
            return "numeric", None
        b = r.take(n)
        v = int.from_bytes(b[1:], "little")
        if b[0] == 0:
            v = -v
        return "numeric", v if scale == 0 else v / (10 ** scale)
    if t == 0x28:   # DATEN
        n = r.u8()
        if n == 0:
            return "date", None
        days = int.from_bytes(r.take(3), "little")
        return "date", _EPOCH1 + datetime.timedelta(days=days)
    if t in (0x29, 0x2A, 0x2B):
        scale = r.u8()
        n = r.u8()
        if n == 0:
            return "datetime2", None
        b = r.take(n)
        tl = {0: 3, 1: 3, 2: 3, 3: 4, 4: 4, 5: 5, 6: 5, 7: 5}[scale]
        units = int.from_bytes(b[:tl], "little")
        secs = units / (10 ** scale)
        if t == 0x29:
            return "time", secs
        days = int.from_bytes(b[tl:tl + 3], "little")
        return "datetime2", _EPOCH1 + datetime.timedelta(days=days, seconds=secs)
    if t in (0xE7, 0xEF, 0xA7, 0xAF, 0xA5, 0xAD):
        maxlen = r.u16()
        if t in (0xE7, 0xEF, 0xA7, 0xAF):
            r.take(5)
        if maxlen == 0xFFFF:
            data = _read_plp(r)
        else:
            n = r.u16()
            data = None if n == 0xFFFF else r.take(n)
        if data is None:
            return {0xE7: "nvarchar", 0xEF: "nvarchar", 0xA7: "varchar", 0xAF: "varchar"}.get(t, "varbinary"), None
        if t in (0xE7, 0xEF):
            return "nvarchar", data.decode("utf-16-le", "replace")
        if t in (0xA7, 0xAF):
            return "varchar", data.decode("cp1252", "replace")
        return "varbinary", data
    if t in (0x23, 0x63, 0x22):   # TEXT NTEXT IMAGE
        r.u32()
        if t != 0x22:
            r.take(5)
        nparts = r.u8()
        for _ in range(nparts):
            r.usvarchar()
        # value
        tl = r.u8()
        if tl == 0:
            return "text", None
        r.take(tl)
        r.take(8)
        n = r.u32()
        data = r.take(n)
        if t == 0x63:
            return "nvarchar", data.decode("utf-16-le", "replace")
        if t == 0x23:
            return "varchar", data.decode("cp1252", "replace")
        return "varbinary", data
    if t == 0xF1:   # XML
        schema = r.u8()
        if schema:
            r.bvarchar()
            r.bvarchar()
            r.usvarchar()
        data = _read_plp(r)
        return "nvarchar", None if data is None else data.decode("utf-16-le", "replace")
    raise ValueError(f"unsupported parameter type 0x{t:02X}")


def _decode_fixed(name, b):
    if name in ("tinyint",):
        return b[0]
    if name in ("smallint", "int", "bigint"):
        return int.from_bytes(b, "little", signed=True)
    if name == "bit":
        return bool(b[0])
    if name == "float":
        return struct.unpack("<d", b)[0]
    if name == "real":
        return struct.unpack("<f", b)[0]
    if name == "datetime":
        days, ticks = struct.unpack("<iI", b)
        return _EPOCH1900 + datetime.timedelta(days=days, seconds=ticks / 300)
    if name == "smalldatetime":
        days, mins = struct.unpack("<HH", b)
        return _EPOCH1900 + datetime.timedelta(days=days, minutes=mins)
    if name == "money":
        hi, lo = struct.unpack("<iI", b)
        return ((hi << 32) | lo) / 10000
    if name == "smallmoney":
        return struct.unpack("<i", b)[0] / 10000
    return None


def decode_rpc(data, ver):
    """Returns a list of calls: dict(name=str|None, procid=int|None, params=[(name, type, value, output)])."""
    r = Reader(data, skip_all_headers(data, ver))
    calls = []
    while r.left() > 0:
        n = r.u16()
        if n == 0xFFFF:
            procid, name = r.u16(), None
        else:
            name, procid = r.take(2 * n).decode("utf-16-le"), None
        r.u16()  # option flags
        params = []
        while r.left() > 0:
            b = r.d[r.p]
            if b in (0xFF, 0x80, 0xFE) and (ver >= V72 or b != 0xFF):
                r.p += 1
                break
            pname = r.bvarchar()
            status = r.u8()
            tname, val = read_typed_value(r)
            params.append((pname, tname, val, bool(status & 1)))
        calls.append({"name": name, "procid": procid, "params": params})
    return calls
