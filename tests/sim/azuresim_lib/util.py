"""Shared plumbing: request/response objects, the token service, grants,
faults and the audit trail."""
import datetime
import json
import os
import threading
import time
import uuid

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from . import jwtutil

ALL_OPS = ["get", "set", "list", "delete", "update", "recover", "purge"]
VAULT_RESOURCE = "https://vault.azure.net"
KNOWN_RESOURCES = {
    "https://vault.azure.net", "https://management.azure.com", "https://management.core.windows.net",
    "https://database.windows.net", "https://storage.azure.com", "https://graph.microsoft.com",
}


def resource_known(resource):
    return resource.rstrip("/").lower() in KNOWN_RESOURCES


def now_ts():
    return int(time.time())


class Request:
    def __init__(self, method, path, query, headers, body, host, client):
        self.method = method
        self.path = path                # decoded path, no query
        self.raw_path = None
        self.query = query              # dict name -> list of values
        self.headers = headers          # email.message.Message (case-insensitive)
        self.body = body
        self.host = host
        self.client = client
        self.audit_client_id = None     # filled by handlers for the audit trail

    def q(self, name, default=None):
        v = self.query.get(name)
        return v[0] if v else default

    def header(self, name, default=None):
        return self.headers.get(name, default)


class Response:
    DROP = "drop"

    def __init__(self, status, body=b"", headers=None, content_type="application/json; charset=utf-8"):
        self.status = status
        if isinstance(body, (dict, list)):
            body = json.dumps(body, separators=(",", ":")).encode()
        elif isinstance(body, str):
            body = body.encode()
        self.body = body
        self.headers = list(headers or [])
        if body and content_type:
            self.headers.insert(0, ("Content-Type", content_type))


class TokenService:
    """Mints RS256 access tokens and validates the ones it minted.
    The key persists under the state dir, so tokens survive a restart;
    /expire-tokens bumps a generation number that every token carries."""

    def __init__(self, state_dir, lifetime):
        self.lifetime = lifetime
        self.lock = threading.Lock()
        kp = os.path.join(state_dir, "token-signing.key")
        if os.path.exists(kp):
            with open(kp, "rb") as f:
                self.key = serialization.load_pem_private_key(f.read(), password=None)
        else:
            self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            fd = os.open(kp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(self.key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        der = self.key.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        import hashlib
        self.kid = jwtutil.b64u(hashlib.sha1(der).digest())
        self.gen_path = os.path.join(state_dir, "token-generation")
        self.generation = int(open(self.gen_path).read()) if os.path.exists(self.gen_path) else 1
        self.issued = 0

    def expire_all(self):
        with self.lock:
            self.generation += 1
            with open(self.gen_path, "w") as f:
                f.write(str(self.generation))

    def mint(self, tenant, client_id, object_id, resource, appidacr="1", lifetime=None, extra=None):
        now = now_ts()
        life = self.lifetime if lifetime is None else lifetime
        claims = {"aud": resource, "iss": f"https://sts.windows.net/{tenant}/", "iat": now,
                  "nbf": now, "exp": now + life, "aio": "sim", "appid": client_id,
                  "appidacr": appidacr, "idp": f"https://sts.windows.net/{tenant}/",
                  "idtyp": "app", "oid": object_id, "rh": "sim", "sub": object_id,
                  "tid": tenant, "uti": uuid.uuid4().hex[:22], "ver": "1.0",
                  "sim_gen": self.generation}
        if extra:
            claims.update(extra)
        with self.lock:
            self.issued += 1
        return jwtutil.sign(self.key, {"typ": "JWT", "alg": "RS256", "x5t": self.kid,
                                       "kid": self.kid}, claims), claims

    def validate(self, token):
        """-> (claims, None) or (None, reason) where reason is one of
        'malformed', 'signature', 'expired', 'notyet'."""
        try:
            header, claims, si, sig = jwtutil.split(token)
        except jwtutil.JWTError:
            return None, "malformed"
        if header.get("alg") != "RS256" or \
                not jwtutil.verify_signature(self.key.public_key(), "RS256", si, sig):
            return None, "signature"
        now = now_ts()
        if claims.get("sim_gen") != self.generation or int(claims.get("exp", 0)) <= now:
            return None, "expired"
        if int(claims.get("nbf", 0)) > now + 300:
            return None, "notyet"
        return claims, None


class Grants:
    def __init__(self, path, defaults):
        self.path = path
        self.lock = threading.Lock()
        self.defaults = {k: list(v) for k, v in defaults.items()}
        self.grants = dict(self.defaults)
        if os.path.exists(path):
            with open(path) as f:
                self.grants.update(json.load(f))

    def allowed(self, client_id, op):
        with self.lock:
            return op in self.grants.get((client_id or "").lower(), [])

    def set(self, client_id, ops):
        with self.lock:
            self.grants[client_id.lower()] = [o for o in ops if o in ALL_OPS] if ops != ["all"] \
                else list(ALL_OPS)
            self._save()

    def reset(self):
        with self.lock:
            self.grants = dict(self.defaults)
            self._save()

    def snapshot(self):
        with self.lock:
            return {k: list(v) for k, v in self.grants.items()}

    def _save(self):
        with open(self.path, "w") as f:
            json.dump(self.grants, f, indent=1)


class Faults:
    """Injected failures: status replies, dropped connections, latency,
    and a delay during which a deleted secret is 'being deleted'."""

    def __init__(self):
        self.lock = threading.Lock()
        self.fail_rules = []     # dicts: status, count, retry_after, path_prefix, method
        self.drop_rules = []     # dicts: count, path_prefix
        self.latency = []        # dicts: ms, path_prefix
        self.delete_delay_ms = 0

    @staticmethod
    def _match(rule, req):
        pp = rule.get("path_prefix")
        if pp and not req.path.startswith(pp):
            return False
        m = rule.get("method")
        return not m or m.upper() == req.method

    def take(self, rules, req):
        with self.lock:
            for r in rules:
                if r["count"] != 0 and self._match(r, req):
                    if r["count"] > 0:
                        r["count"] -= 1
                    return dict(r)
            rules[:] = [r for r in rules if r["count"] != 0]
        return None

    def latency_ms(self, req):
        with self.lock:
            return sum(r["ms"] for r in self.latency if self._match(r, req))

    def snapshot(self):
        with self.lock:
            return {"fail": [dict(r) for r in self.fail_rules if r["count"] != 0],
                    "drop": [dict(r) for r in self.drop_rules if r["count"] != 0],
                    "latency": [dict(r) for r in self.latency],
                    "delete_delay_ms": self.delete_delay_ms}

    def clear(self):
        with self.lock:
            self.fail_rules.clear()
            self.drop_rules.clear()
            self.latency.clear()
            self.delete_delay_ms = 0


class Audit:
    """Method, path, status, whether Authorization was sent: never bodies,
    header values or secret values. Also appended to <state>/audit.jsonl."""

    def __init__(self, path):
        self.lock = threading.Lock()
        self.entries = []
        self.seq = 0
        self.path = path

    def add(self, surface, req, status, fault=None):
        with self.lock:
            self.seq += 1
            e = {"seq": self.seq, "time": round(time.time(), 3), "surface": surface,
                 "method": req.method, "path": req.path,
                 "query": sorted(k for k in req.query),
                 "status": status,
                 "authorization": req.header("Authorization") is not None,
                 "client_id": req.audit_client_id}
            if fault:
                e["fault"] = fault
            self.entries.append(e)
            try:
                with open(self.path, "a") as f:
                    f.write(json.dumps(e) + "\n")
            except OSError:
                pass

    def since(self, seq=0):
        with self.lock:
            return [dict(e) for e in self.entries if e["seq"] > seq]

    def clear(self):
        with self.lock:
            self.entries.clear()

    def stats(self):
        with self.lock:
            s = {"total": len(self.entries), "with_authorization": 0, "without_authorization": 0,
                 "by_surface": {}, "by_status": {}, "token_requests": 0, "last_seq": self.seq}
            for e in self.entries:
                s["with_authorization" if e["authorization"] else "without_authorization"] += 1
                s["by_surface"][e["surface"]] = s["by_surface"].get(e["surface"], 0) + 1
                s["by_status"][str(e["status"])] = s["by_status"].get(str(e["status"]), 0) + 1
                if e["surface"] in ("entra-token", "imds", "appservice", "arc") and e["method"] in ("GET", "POST") \
                        and e["status"] == 200 and "token" in e["path"]:
                    s["token_requests"] += 1
            return s


def aad_timestamp():
    return datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M:%SZ")
