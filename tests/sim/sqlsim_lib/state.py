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


def load_key(pem):
    return serialization.load_pem_private_key(pem.encode(), None)


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
    cert = x509.load_der_x509_certificate(base64.b64decode(der_b64))
    return cert.public_key().encrypt(data, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()),
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
    }


class State:
    """All simulator state.  Guarded by self.lock (an RLock); every statement runs under it."""

    def __init__(self, statedir):
        self.dir = statedir
        self.lock = threading.RLock()
        self.ag = None
        self.nodes = []
        self.dirty = False

    # ------------------------------------------------------ persistence
    def _write(self, path, obj):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def save(self):
        with self.lock:
            os.makedirs(self.dir, exist_ok=True)
            for n in self.nodes:
                nd = os.path.join(self.dir, f"node{n.idx}")
                os.makedirs(nd, exist_ok=True)
                self._write(os.path.join(nd, "master.json"), n.d)
                # each node's copy of the replicated databases (sync commit: identical)
                self._write(os.path.join(nd, "replica.json"), {"databases": self.ag["databases"]})
            self._write(os.path.join(self.dir, "ag.json"), self.ag)
            self.dirty = False

    def load_or_init(self, args, sa_password, dmk_password):
        agp = os.path.join(self.dir, "ag.json")
        if os.path.exists(agp):
            with open(agp) as f:
                self.ag = json.load(f)
            for i in range(len(self.ag["replicas"])):
                with open(os.path.join(self.dir, f"node{i}", "master.json")) as f:
                    nd = json.load(f)
                nd["logins"]["sa"]["password"] = sa_password
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
        if args.scenario == "configmgr":
            self.make_configmgr("CM_P01", dmk_password)
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
