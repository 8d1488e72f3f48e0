"""Catalog state: nodes (SMK, master with logins and credentials), the replicated
user databases, persistence under --state (JSON, written atomically)."""
import base64
import datetime
import hashlib
import json
import os
import re
import secrets
import threading
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.x509.oid import NameOID

SYSTEM_DBS = ("master", "tempdb", "model", "msdb")
SYS_DB_IDS = {"master": 1, "tempdb": 2, "model": 3, "msdb": 4}


def now():
    return datetime.datetime.utcnow().replace(microsecond=(datetime.datetime.utcnow().microsecond // 1000) * 1000)


def newguid():
    return str(uuid.uuid4()).upper()


def pw_hash(salt, pw):
    return hashlib.sha256(bytes.fromhex(salt) + pw.encode("utf-16-le")).hexdigest()


def pw_encryption(pw):
    salt = secrets.token_hex(16)
    return {"kind": "pw", "salt": salt, "hash": pw_hash(salt, pw), "created": now().isoformat()}


def pw_matches(enc, pw):
    return enc["kind"] == "pw" and pw is not None and pw_hash(enc["salt"], pw) == enc["hash"]


# ---------------------------------------------------------------- file formats

def _kdf(pw, salt):
    return PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=20000).derive(
        pw.encode("utf-16-le"))


def seal(obj_bytes, pw, fmt):
    salt, nonce = os.urandom(16), os.urandom(12)
    ct = AESGCM(_kdf(pw, salt)).encrypt(nonce, obj_bytes, fmt.encode())
    return json.dumps({"format": fmt, "salt": salt.hex(), "nonce": nonce.hex(),
                       "ct": base64.b64encode(ct).decode()}).encode()


class BadFormat(Exception):
    pass


class BadPassword(Exception):
    pass


def unseal(data, pw, fmt):
    try:
        j = json.loads(data.decode())
        if j.get("format") != fmt:
            raise BadFormat()
        salt, nonce, ct = bytes.fromhex(j["salt"]), bytes.fromhex(j["nonce"]), base64.b64decode(j["ct"])
    except (ValueError, KeyError, UnicodeDecodeError, AttributeError):
        raise BadFormat()
    try:
        return AESGCM(_kdf(pw or "", salt)).decrypt(nonce, ct, fmt.encode())
    except Exception:
        raise BadPassword()


PVK_FMT = "sqlsim-private-key-1"
DMK_FMT = "sqlsim-database-master-key-1"
SMK_FMT = "sqlsim-service-master-key-1"


# ---------------------------------------------------------------- certificates

def make_certificate(subject, start=None, expiry=None):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    start = start or now()
    expiry = expiry or (start + datetime.timedelta(days=365))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(expiry)
            .sign(key, hashes.SHA256()))
    return cert, key


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


_KEY_CACHE = {}
_PUB_CACHE = {}


def load_key(pem):
    """Parsed private keys are cached by their PEM text: loading an RSA key checks it (tens of ms), and
    the probes (DECRYPTBYCERT) run once per database per replica.  Callers never mutate key objects."""
    k = _KEY_CACHE.get(pem)
    if k is None:
        k = serialization.load_pem_private_key(pem.encode(), None)
        if len(_KEY_CACHE) > 4096:
            _KEY_CACHE.clear()
        _KEY_CACHE[pem] = k
    return k


def cert_public_key(der_b64):
    k = _PUB_CACHE.get(der_b64)
    if k is None:
        k = x509.load_der_x509_certificate(base64.b64decode(der_b64)).public_key()
        if len(_PUB_CACHE) > 4096:
            _PUB_CACHE.clear()
        _PUB_CACHE[der_b64] = k
    return k


def cert_record(cert_der, key_pem_text, prot, cid, principal_id):
    cert = x509.load_der_x509_certificate(cert_der)
    subj = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    iss = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return {
        "certificate_id": cid, "principal_id": principal_id,
        "der": base64.b64encode(cert_der).decode(),
        "key": key_pem_text,          # the private key; protection says who may use it
        "prot": prot,                 # None | {"kind":"MK","dmk":key_guid} | {"kind":"PW", salt, hash}
        "subject": subj[0].value if subj else cert.subject.rfc4514_string(),
        "issuer": iss[0].value if iss else cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "start": cert.not_valid_before.isoformat(),
        "expiry": cert.not_valid_after.isoformat(),
        "thumbprint": hashlib.sha1(cert_der).hexdigest(),
        "key_length": cert.public_key().key_size,
        "backup_date": None,
    }


def cert_encrypt(der_b64, data):
    return cert_public_key(der_b64).encrypt(data, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()),
                                                        algorithm=hashes.SHA1(), label=None))


def cert_decrypt(key_pem_text, data):
    try:
        return load_key(key_pem_text).decrypt(data, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()),
                                                                 algorithm=hashes.SHA1(), label=None))
    except Exception:
        return None


# ---------------------------------------------------------------- databases

def new_database(name, dbid):
    return {
        "name": name, "database_id": dbid, "database_guid": newguid(), "family_guid": newguid(),
        "group_database_id": None, "create_date": now().isoformat(),
        "dmk": None, "certificates": {}, "next_cert_id": 256,
        "principals": {
            "dbo": {"principal_id": 1, "type": "S", "login": "sa", "owner": None},
            "guest": {"principal_id": 2, "type": "S", "login": None, "owner": None},
            "INFORMATION_SCHEMA": {"principal_id": 3, "type": "S", "login": None, "owner": None},
            "sys": {"principal_id": 4, "type": "S", "login": None, "owner": None},
            "public": {"principal_id": 0, "type": "R", "login": None, "owner": 1},
            "db_owner": {"principal_id": 16384, "type": "R", "login": None, "owner": 1, "fixed": True},
            "db_datareader": {"principal_id": 16390, "type": "R", "login": None, "owner": 1, "fixed": True},
            "db_datawriter": {"principal_id": 16391, "type": "R", "login": None, "owner": 1, "fixed": True},
        },
        "next_principal_id": 5, "members": [],          # [role_name, member_name]
        "permissions": [],     # {class, major, perm, grantee, grantor, state}
        "tables": {},
        "functions": [],
    }


class Node:
    def __init__(self, idx, d):
        self.idx = idx
        self.d = d        # persistent dict
        self.up = True

    @property
    def name(self):
        return self.d["name"]


def new_node(idx, base_port, sa_password):
    master = new_database("master", 1)
    dbs = {"master": master}
    for n in ("tempdb", "model", "msdb"):
        dbs[n] = new_database(n, SYS_DB_IDS[n])
    return {
        "name": f"SQLNODE{idx + 1}",
        "smk": {"key_guid": newguid(), "material": secrets.token_hex(32), "create_date": now().isoformat()},
        "logins": {"sa": {"password": sa_password, "sid": "01", "principal_id": 1, "sysadmin": True,
                          "perms": [], "create_date": now().isoformat(), "disabled": False,
                          "default_database": "master"}},
        "next_login_id": 256,
        "credentials": {},        # id(str) -> {name, identity, secret, create_date, family_guid}
        "next_credential_id": 65536,
        "system_dbs": dbs,
        "local_dbs": {},          # databases created with CREATE DATABASE on this node (not in the AG)
    }


class State:
    """All simulator state.  Guarded by self.lock (an RLock); every statement runs under it."""

    def __init__(self, statedir):
        self.dir = statedir
        self.lock = threading.RLock()
        self.ag = None
        self.nodes = []
        self.dirty = False            # anything may have changed: save() compares and writes what differs
        self.dirty_nodes = set()      # only these nodes' master.json changed (mark_node)
        self._written = {}            # path -> digest of the content last written

    # ------------------------------------------------------ persistence
    # Compact JSON (the C encoder), and a file is rewritten only when its content changed: with a hundred
    # databases the replicated copies are large, and most statements (sp_control_dbmasterkey_password) only
    # change one node's master.json (mark_node).
    @staticmethod
    def _dump(obj):
        return json.dumps(obj, sort_keys=True, separators=(",", ":"))

    def _write(self, path, obj, text=None):
        text = self._dump(obj) if text is None else text
        digest = hashlib.sha256(text.encode()).digest()
        if self._written.get(path) == digest and os.path.exists(path):
            return
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._written[path] = digest

    def mark_node(self, node):
        """Only this node's own state (master.json: SMK, logins, credentials, local databases) changed."""
        self.dirty_nodes.add(node.idx)

    def flush(self):
        """Persist what the last statement changed, if anything."""
        if self.dirty:
            self.save()
        elif self.dirty_nodes:
            with self.lock:
                for i in sorted(self.dirty_nodes):
                    nd = os.path.join(self.dir, f"node{i}")
                    os.makedirs(nd, exist_ok=True)
                    self._write(os.path.join(nd, "master.json"), self.nodes[i].d)
                self.dirty_nodes.clear()

    def save(self):
        with self.lock:
            os.makedirs(self.dir, exist_ok=True)
            # each node's copy of the replicated databases (sync commit: identical): serialised once
            replica = '{"databases":' + self._dump(self.ag["databases"]) + "}"
            for n in self.nodes:
                nd = os.path.join(self.dir, f"node{n.idx}")
                os.makedirs(nd, exist_ok=True)
                self._write(os.path.join(nd, "master.json"), n.d)
                self._write(os.path.join(nd, "replica.json"), None, replica)
            self._write(os.path.join(self.dir, "ag.json"), self.ag)
            self.dirty = False
            self.dirty_nodes.clear()

    def load_or_init(self, args, sa_password, dmk_password):
        agp = os.path.join(self.dir, "ag.json")
        if os.path.exists(agp):
            with open(agp) as f:
                self.ag = json.load(f)
            for i in range(len(self.ag["replicas"])):
                with open(os.path.join(self.dir, f"node{i}", "master.json")) as f:
                    nd = json.load(f)
                nd["logins"]["sa"]["password"] = sa_password
                nd.setdefault("local_dbs", {})
                self.nodes.append(Node(i, nd))
            return False
        self.ag = {
            "name": args.ag_name, "group_id": newguid(), "resource_id": newguid(),
            "primary": 0, "readable": "all" if args.readable_secondaries == "yes" else
            ("read_only" if args.readable_secondaries in ("read-only", "read_only") else "no"),
            "replicas": [{"replica_id": newguid(), "name": f"SQLNODE{i + 1}"} for i in range(args.nodes)],
            "databases": {}, "next_db_id": 5, "create_date": now().isoformat(),
        }
        for i in range(args.nodes):
            self.nodes.append(Node(i, new_node(i, args.port, sa_password)))
        names = [x for x in (getattr(args, "server_names", None) or "").split(",") if x]
        if names:
            if len(names) != args.nodes:
                raise SystemExit("sqlsim: --server-names needs one name per node")
            for i, nm in enumerate(names):
                self.ag["replicas"][i]["name"] = nm
                self.nodes[i].d["name"] = nm
        if args.scenario == "configmgr":
            self.make_configmgr("CM_P01", dmk_password)
        extra = [f"DB{i:04d}" for i in range(1, (getattr(args, "extra_databases", 0) or 0) + 1)]
        extra += list(getattr(args, "database_name", None) or [])
        if extra:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)   # shared: fast start
            for name in extra:
                self.make_test_db(name, dmk_password, key)
        self.save()
        return True

    # ------------------------------------------------------ helpers
    def primary(self):
        return self.nodes[self.ag["primary"]]

    def node_port(self, idx):
        return self.base_port + idx

    def fs_path(self, node, winpath):
        """Map a Windows (or POSIX) path into the node's folder under --state."""
        p = winpath.replace("/", "\\")
        m = re.match(r"^([A-Za-z]):\\(.*)$", p)
        if m:
            parts = [m.group(1).upper()] + [x for x in m.group(2).split("\\") if x]
        elif p.startswith("\\"):
            parts = [x for x in p.split("\\") if x]
        else:
            parts = ["C", "Program Files", "Microsoft SQL Server", "MSSQL15.MSSQLSERVER", "MSSQL", "DATA"] + \
                [x for x in p.split("\\") if x]
        parts = [x for x in parts if x not in (".", "..")]
        return os.path.join(self.dir, f"node{node.idx}", "fs", *parts)

    # ------------------------------------------------------ scenario
    def make_configmgr(self, dbname, dmk_password):
        db = new_database(dbname, self.ag["next_db_id"])
        self.ag["next_db_id"] += 1
        db["group_database_id"] = newguid()
        prim = self.primary()
        dmk = {"key_guid": newguid(), "material": secrets.token_hex(32), "create_date": now().isoformat(),
               "modify_date": now().isoformat(),
               "encryptions": [pw_encryption(dmk_password or secrets.token_urlsafe(24)),
                               {"kind": "smk", "smk": prim.d["smk"]["key_guid"], "node": prim.idx}]}
        db["dmk"] = dmk
        for u in ("RecoveryAndHardwareCore", "RecoveryAndHardwareRead", "RecoveryAndHardwareWrite"):
            db["principals"][u] = {"principal_id": db["next_principal_id"], "type": "S", "login": None,
                                   "owner": None, "without_login": True}
            db["next_principal_id"] += 1
        # the schema RecoveryAndHardwareCore is modelled by the function's qualified name
        cert, key = make_certificate("BitLocker Management",
                                     expiry=datetime.datetime(2039, 10, 22))
        der = cert.public_bytes(serialization.Encoding.DER)
        cid = db["next_cert_id"]
        db["next_cert_id"] += 1
        rec = cert_record(der, key_pem(key), {"kind": "MK", "dmk": dmk["key_guid"]}, cid,
                          db["principals"]["RecoveryAndHardwareCore"]["principal_id"])
        db["certificates"]["BitLockerManagement_CERT"] = rec
        for u in ("RecoveryAndHardwareRead", "RecoveryAndHardwareWrite", "RecoveryAndHardwareCore"):
            db["permissions"].append({"class": 25, "major": cid, "perm": "CONTROL",
                                      "grantee": db["principals"][u]["principal_id"], "grantor": 1,
                                      "state": "G"})
        rows = []
        base = datetime.datetime(2024, 1, 1, 8, 0, 0)
        for i in range(7):
            plain = "-".join("%06d" % secrets.randbelow(1000000) for _ in range(8))
            rows.append({"Id": i + 1, "RecoveryKeyId": newguid(),
                         "RecoveryKey": base64.b64encode(cert_encrypt(rec["der"], plain.encode("utf-16-le"))).decode(),
                         "LastUpdateTime": (base + datetime.timedelta(days=i)).isoformat(),
                         "_plain": plain})
        db["tables"]["RecoveryAndHardwareCore_Keys"] = {
            "schema": "dbo",
            "columns": [["Id", "int"], ["RecoveryKeyId", "uniqueidentifier"], ["RecoveryKey", "varbinary"],
                        ["LastUpdateTime", "datetime"]],
            "rows": rows}
        db["functions"] = ["RecoveryAndHardwareCore.DecryptString"]
        self.ag["databases"][dbname] = db

    def make_test_db(self, dbname, dmk_password, key=None):
        """An AG database for --extra-databases / --database-name: a DMK encrypted by the primary's SMK and
        by the --dmk-password-file password (or one nobody knows), and the certificate DMKAGENT_TEST_CERT
        whose private key is under the DMK.  key: an RSA key to reuse (one per start keeps start-up fast;
        the certificates still differ: own serial number, so own thumbprint)."""
        if any(n.lower() == dbname.lower() for n in self.ag["databases"]) or dbname.lower() in SYSTEM_DBS:
            raise ValueError(f"duplicate database name {dbname!r}")
        db = new_database(dbname, self.ag["next_db_id"])
        self.ag["next_db_id"] += 1
        db["group_database_id"] = newguid()
        prim = self.primary()
        dmk = {"key_guid": newguid(), "material": secrets.token_hex(32), "create_date": now().isoformat(),
               "modify_date": now().isoformat(),
               "encryptions": [pw_encryption(dmk_password or secrets.token_urlsafe(24)),
                               {"kind": "smk", "smk": prim.d["smk"]["key_guid"], "node": prim.idx}]}
        db["dmk"] = dmk
        key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        start = now()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dmkagent test")])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=3650))
                .sign(key, hashes.SHA256()))
        der = cert.public_bytes(serialization.Encoding.DER)
        cid = db["next_cert_id"]
        db["next_cert_id"] += 1
        db["certificates"]["DMKAGENT_TEST_CERT"] = cert_record(der, key_pem(key),
                                                               {"kind": "MK", "dmk": dmk["key_guid"]}, cid, 1)
        self.ag["databases"][dbname] = db
        return db
