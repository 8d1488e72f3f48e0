"""Small helpers: Go-style durations, RFC3339 times, ids."""
import base64
import datetime
import os
import re
import time
import uuid

SYS_DEFAULT_TTL = 768 * 3600   # Vault's default_lease_ttl / max_lease_ttl (32 days)
SYS_MAX_TTL = 768 * 3600

_DUR_RE = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h|d)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}


class DurationError(ValueError):
    pass


def parse_duration(v, default=0):
    """Vault parseutil.ParseDurationSecond: ints are seconds, strings may be Go durations."""
    if v is None or v == "":
        return default
    if isinstance(v, bool):
        raise DurationError("invalid duration")
    if isinstance(v, (int, float)):
        return int(v)
    s = str(v).strip()
    if re.fullmatch(r"-?\d+", s):
        return int(s)
    pos = 0
    total = 0.0
    for m in _DUR_RE.finditer(s):
        if m.start() != pos:
            raise DurationError(f"time: invalid duration \"{s}\"")
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise DurationError(f"time: invalid duration \"{s}\"")
    return int(total)


def go_duration(sec):
    """time.Duration.String() for a number of seconds."""
    if sec == 0:
        return "0s"
    neg = sec < 0
    sec = abs(sec)
    if sec < 1:
        ms = sec * 1000
        out = (f"{ms:.6f}".rstrip("0").rstrip(".") + "ms") if ms >= 1 else \
            (f"{sec*1e6:.3f}".rstrip("0").rstrip(".") + "µs")
    else:
        h = int(sec // 3600)
        m = int((sec % 3600) // 60)
        s = sec - h * 3600 - m * 60
        ss = (f"{s:.9f}".rstrip("0").rstrip(".")) if s != int(s) else str(int(s))
        if h:
            out = f"{h}h{m}m{ss}s"
        elif m:
            out = f"{m}m{ss}s"
        else:
            out = f"{ss}s"
    return ("-" if neg else "") + out


def rfc3339(ts=None):
    """Go's RFC3339Nano (trailing zeros of the fraction trimmed), UTC."""
    if ts is None:
        ts = time.time()
    ns = int(round(ts * 1e9))
    sec, frac = divmod(ns, 10**9)
    d = datetime.datetime.fromtimestamp(sec, datetime.timezone.utc)
    base = d.strftime("%Y-%m-%dT%H:%M:%S")
    f = f"{frac:09d}".rstrip("0")
    return base + ("." + f if f else "") + "Z"


def rfc1123(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")


def new_uuid():
    return str(uuid.uuid4())


def rand_b62(n):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    out = []
    while len(out) < n:
        for b in os.urandom(n * 2):
            if b < 248:
                out.append(alphabet[b % 62])
                if len(out) == n:
                    break
    return "".join(out)


def new_token(prefix="hvs."):
    return prefix + rand_b62(24)


def b64url_decode(s):
    s = s + "=" * (-len(s) % 4)
    return base64.urlsafe_b64decode(s.encode())


def as_bool(v, default=False):
    if v is None:
        return default
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return v != 0
    s = str(v).strip().lower()
    if s in ("1", "t", "true", "yes", "y"):
        return True
    if s in ("0", "f", "false", "no", "n", ""):
        return False
    raise ValueError(f"cannot parse '{v}' as bool")


def as_list(v):
    """Vault TypeCommaStringSlice: list, or comma separated string."""
    if v is None:
        return []
    if isinstance(v, list):
        out = []
        for x in v:
            out.extend(as_list(x) if isinstance(x, str) and "," in x else [str(x)])
        return [x.strip() for x in out if str(x).strip() != ""]
    if isinstance(v, str):
        return [x.strip() for x in v.split(",") if x.strip()]
    return [str(v)]


def as_int(v, default=0):
    if v is None or v == "":
        return default
    if isinstance(v, bool):
        raise ValueError("expected int")
    return int(v)
