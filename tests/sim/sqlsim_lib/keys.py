"""Database master keys (opening rules, CREATE/ALTER/OPEN/CLOSE/DROP/BACKUP/RESTORE MASTER KEY), the service
master key and certificates."""
import base64
import datetime
import json
import os
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from . import state as st
from .errors import SqlError
from .executil import check_policy


class KeysMixin:
    # ========================================================= DMK opening rules
    def open_dmk(self, db):
        """Documented order: session-opened key, local SMK, then each credential whose family_guid matches.
        A credential open re-encrypts the DMK by the local SMK where the database is writable."""
        dmk = db.get("dmk")
        if not dmk:
            return False
        ok = self.sess.open_keys.get(db["name"])
        if ok and ok[0] == dmk["key_guid"]:
            return True
        smk = self.node.d["smk"]["key_guid"]
        if any(e["kind"] == "smk" and e["smk"] == smk for e in dmk["encryptions"]):
            return True
        creds = sorted(self.node.d["credentials"].items(), key=lambda kv: int(kv[0]))
        for _cid, c in creds:
            if c.get("family_guid", "").upper() != db["family_guid"].upper():
                continue
            if any(st.pw_matches(e, c["secret"]) for e in dmk["encryptions"]):
                if self.writable(db):
                    dmk["encryptions"] = [e for e in dmk["encryptions"] if e["kind"] != "smk"]
                    dmk["encryptions"].append({"kind": "smk", "smk": smk, "node": self.node.idx})
                    self.state.dirty = True
                return True
        return False

    def cert_key_usable(self, db, cert, password=None):
        p = cert.get("prot")
        if not p:
            return False
        if p["kind"] == "PW":
            return password is not None and st.pw_matches(p, password)
        if password is not None:
            return False
        return self.open_dmk(db) and p["dmk"] == db["dmk"]["key_guid"]

    # ========================================================= master key statements
    def _dmk_db(self, need_control=True, write=True):
        db = self.cur_db()
        if db["name"] == "tempdb":
            raise SqlError(15151, "symmetric key", "master key")
        if need_control and not self.db_control(db):
            raise SqlError(15151, "symmetric key", "master key")
        if write:
            self.need_write(db)
        return db

    def x_create_mk(self, s, out, tok):
        db = self.cur_db()
        if not self.db_control(db):
            raise SqlError(15247)
        self.need_write(db)
        if db.get("dmk"):
            raise SqlError(15578)
        pw = self.eval(s["password"], {})
        check_policy(pw)
        db["dmk"] = {"key_guid": st.newguid(), "material": secrets.token_hex(32),
                     "create_date": st.now().isoformat(), "modify_date": st.now().isoformat(),
                     "encryptions": [st.pw_encryption(pw),
                                     {"kind": "smk", "smk": self.node.d["smk"]["key_guid"], "node": self.node.idx}]}
        self.state.dirty = True
        out.done(0, token=tok)

    def _reencrypt_certs(self, db, old_guid, new_guid, lose):
        for c in db["certificates"].values():
            p = c.get("prot")
            if p and p["kind"] == "MK":
                if p["dmk"] == old_guid and not lose:
                    p["dmk"] = new_guid
                # otherwise the private key stays bound to a key that no longer exists: lost

    def x_alter_mk(self, s, out, tok):
        db = self._dmk_db()
        dmk = db.get("dmk")
        if not dmk:
            raise SqlError(15151, "symmetric key", "master key")
        act = s["action"]
        if act == "regenerate":
            pw = self.eval(s["password"], {})
            opened = self.open_dmk(db)
            if not opened and not s["force"]:
                raise SqlError(15581)
            check_policy(pw)
            had_smk = any(e["kind"] == "smk" for e in dmk["encryptions"])
            old = dmk["key_guid"]
            dmk["key_guid"] = st.newguid()
            dmk["material"] = secrets.token_hex(32)
            dmk["modify_date"] = st.now().isoformat()
            dmk["encryptions"] = [st.pw_encryption(pw)]
            if had_smk:
                dmk["encryptions"].append({"kind": "smk", "smk": self.node.d["smk"]["key_guid"],
                                           "node": self.node.idx})
            self._reencrypt_certs(db, old, dmk["key_guid"], lose=not opened)
            self.sess.open_keys.pop(db["name"], None)
        elif act == "add":
            if not self.open_dmk(db):
                raise SqlError(15581)
            if s["by"] == "smk":
                smk = self.node.d["smk"]["key_guid"]
                if any(e["kind"] == "smk" and e["smk"] == smk for e in dmk["encryptions"]):
                    raise SqlError(15579, "master key", "service master key")
                dmk["encryptions"] = [e for e in dmk["encryptions"] if e["kind"] != "smk"]
                dmk["encryptions"].append({"kind": "smk", "smk": smk, "node": self.node.idx})
            else:
                pw = self.eval(s["password"], {})
                check_policy(pw)
                if any(st.pw_matches(e, pw) for e in dmk["encryptions"]):
                    raise SqlError(15579, "password", "")
                dmk["encryptions"].append(st.pw_encryption(pw))
        else:
            if s["by"] == "smk":
                if not any(e["kind"] == "smk" for e in dmk["encryptions"]):
                    raise SqlError(15151, "symmetric key", "service master key")
                dmk["encryptions"] = [e for e in dmk["encryptions"] if e["kind"] != "smk"]
            else:
                pw = self.eval(s["password"], {})
                match = [e for e in dmk["encryptions"] if st.pw_matches(e, pw)]
                if not match:
                    raise SqlError(15313)
                if len([e for e in dmk["encryptions"] if e["kind"] == "pw"]) <= 1:
                    raise SqlError(15558, "master key", "password", "")
                dmk["encryptions"].remove(match[0])
        dmk["modify_date"] = st.now().isoformat()
        self.state.dirty = True
        out.done(0, token=tok)

    def x_open_mk(self, s, out, tok):
        db = self.cur_db()
        if not self.db_control(db):
            raise SqlError(15151, "symmetric key", "master key")
        dmk = db.get("dmk")
        if not dmk:
            raise SqlError(15151, "symmetric key", "master key")
        pw = self.eval(s["password"], {})
        if not any(st.pw_matches(e, pw) for e in dmk["encryptions"]):
            raise SqlError(15313)
        self.sess.open_keys[db["name"]] = (dmk["key_guid"], st.now().isoformat())
        out.done(0, token=tok)

    def x_close_mk(self, s, out, tok):
        if s.get("all"):
            self.sess.open_keys.clear()
        else:
            db = self.cur_db()
            if db["name"] not in self.sess.open_keys:
                raise SqlError(15315, "##MS_DatabaseMasterKey##")
            del self.sess.open_keys[db["name"]]
        out.done(0, token=tok)

    def x_drop_mk(self, s, out, tok):
        db = self._dmk_db()
        if not db.get("dmk"):
            raise SqlError(15151, "symmetric key", "master key")
        for name, c in sorted(db["certificates"].items(), key=lambda kv: kv[1]["certificate_id"]):
            p = c.get("prot")
            if p and p["kind"] == "MK":
                raise SqlError(15580, "master key", "certificate", name)
        db["dmk"] = None
        self.sess.open_keys.pop(db["name"], None)
        self.state.dirty = True
        out.done(0, token=tok)

    def x_backup_mk(self, s, out, tok):
        db = self._dmk_db(write=False)
        if s.get("url"):
            raise SqlError(3201, msg="Cannot open backup device. Operating system error 50(The request is not "
                                     "supported.).", cls=16)
        dmk = db.get("dmk")
        if not dmk:
            raise SqlError(15151, "symmetric key", "master key")
        if not self.open_dmk(db):
            raise SqlError(15581)
        pw = self.eval(s["password"], {})
        check_policy(pw)
        winpath, real = self.path(s["file"])
        blob = json.dumps({"key_guid": dmk["key_guid"], "material": dmk["material"],
                           "create_date": dmk["create_date"]}).encode()
        self.write_new_file(winpath, real, st.seal(blob, pw, st.DMK_FMT))
        out.done(0, token=tok)

    def x_restore_mk(self, s, out, tok):
        db = self._dmk_db()
        winpath, real = self.path(s["file"])
        dpw = self.eval(s["dec"], {})
        epw = self.eval(s["enc"], {})
        try:
            with open(real, "rb") as f:
                data = f.read()
            k = json.loads(st.unseal(data, dpw, st.DMK_FMT))
        except (OSError, st.BadFormat, st.BadPassword, ValueError):
            raise SqlError(15317)
        check_policy(epw)
        cur = db.get("dmk")
        opened = bool(cur) and self.open_dmk(db)
        if cur and not opened and not s["force"]:
            raise SqlError(15329)
        had_smk = bool(cur) and any(e["kind"] == "smk" for e in cur["encryptions"])
        if cur and cur["key_guid"] == k["key_guid"]:
            out.info(15588, "The old and new master keys are identical. No data re-encryption is required.",
                     cls=10)
        new = {"key_guid": k["key_guid"], "material": k["material"], "create_date": k["create_date"],
               "modify_date": st.now().isoformat(), "encryptions": [st.pw_encryption(epw)]}
        if had_smk:
            new["encryptions"].append({"kind": "smk", "smk": self.node.d["smk"]["key_guid"], "node": self.node.idx})
        if cur:
            self._reencrypt_certs(db, cur["key_guid"], new["key_guid"], lose=not opened)
        db["dmk"] = new
        self.sess.open_keys.pop(db["name"], None)
        self.state.dirty = True
        out.done(0, token=tok)

    # ========================================================= service master key
    def _need_control_server(self):
        if not self.sysadmin():
            raise SqlError(15247)

    def _smk_reencrypt(self, old, new):
        for db in self.all_databases():
            dmk = db.get("dmk")
            if not dmk or not self.writable(db):
                continue
            for e in dmk["encryptions"]:
                if e["kind"] == "smk" and e["smk"] == old:
                    e["smk"] = new

    def x_alter_smk(self, s, out, tok):
        self._need_control_server()
        smk = self.node.d["smk"]
        old = smk["key_guid"]
        smk["key_guid"] = st.newguid()
        smk["material"] = secrets.token_hex(32)
        smk["create_date"] = st.now().isoformat()
        self._smk_reencrypt(old, smk["key_guid"])
        self.state.dirty = True
        out.done(0, token=tok)

    def x_backup_smk(self, s, out, tok):
        self._need_control_server()
        pw = self.eval(s["password"], {})
        check_policy(pw)
        winpath, real = self.path(s["file"])
        self.write_new_file(winpath, real, st.seal(json.dumps(self.node.d["smk"]).encode(), pw, st.SMK_FMT))
        out.done(0, token=tok)

    def x_restore_smk(self, s, out, tok):
        self._need_control_server()
        winpath, real = self.path(s["file"])
        pw = self.eval(s["password"], {})
        try:
            with open(real, "rb") as f:
                k = json.loads(st.unseal(f.read(), pw, st.SMK_FMT))
        except (OSError, st.BadFormat, st.BadPassword, ValueError):
            raise SqlError(15317)
        old = self.node.d["smk"]["key_guid"]
        if old == k["key_guid"]:
            out.info(15588, "The old and new master keys are identical. No data re-encryption is required.",
                     cls=10)
        self.node.d["smk"] = k
        self._smk_reencrypt(old, k["key_guid"])
        self.state.dirty = True
        out.done(0, token=tok)

    # ========================================================= certificates
    def _cert(self, db, name):
        for n, c in db["certificates"].items():
            if n.lower() == name.lower():
                return n, c
        return None, None

    def _controlled_cert(self, db, name):
        """(name, record) of a certificate the caller controls; otherwise 15151, whether or not it exists."""
        n, c = self._cert(db, name)
        if not c or not self.cert_control(db, c):
            raise SqlError(15151, "certificate", name)
        return n, c

    def _read_key_file(self, expr):
        """The certificate or private key file named by expr; 15208 if it cannot be read."""
        _w, real = self.path(expr)
        try:
            with open(real, "rb") as f:
                return f.read()
        except OSError:
            raise SqlError(15208)

    def _read_pvk(self, pk, cert_pub):
        """pk options -> private key PEM (decrypted by DECRYPTION BY PASSWORD)."""
        if "file" in pk:
            data = self._read_key_file(pk["file"])
        else:
            data = self.eval(pk["binary"], {})
            if not isinstance(data, bytes):
                raise SqlError(15208)
        dpw = self.eval(pk["dec"], {}) if "dec" in pk else None
        try:
            pem = st.unseal(data, dpw, st.PVK_FMT).decode()
        except st.BadFormat:
            raise SqlError(15208)
        except st.BadPassword:
            raise SqlError(15465)
        key = st.load_key(pem)
        if key.public_key().public_numbers() != cert_pub.public_numbers():
            raise SqlError(15474)
        return pem

    def _protect(self, db, pk_enc_pw):
        if pk_enc_pw is not None:
            check_policy(pk_enc_pw)
            e = st.pw_encryption(pk_enc_pw)
            e["kind"] = "PW"
            return e
        if not self.open_dmk(db):
            raise SqlError(15581)
        return {"kind": "MK", "dmk": db["dmk"]["key_guid"]}

    def x_create_cert(self, s, out, tok):
        db = self.cur_db()
        if not self.db_perm(db, "CREATE CERTIFICATE"):
            raise SqlError(262, "CREATE CERTIFICATE", db["name"])
        self.need_write(db)
        if self._cert(db, s["name"])[0]:
            raise SqlError(15232, s["name"])
        owner = 1
        if s["owner"]:
            p = None
            for n, pr in db["principals"].items():
                if n.lower() == s["owner"].lower():
                    p = pr
            if p is None:
                raise SqlError(15151, "user", s["owner"])
            owner = p["principal_id"]
        if "from" in s:
            kind, src = s["from"]
            if kind == "file":
                data = self._read_key_file(src)
            else:
                data = self.eval(src, {})
            try:
                if isinstance(data, bytes) and data.startswith(b"-----BEGIN"):
                    cert = x509.load_pem_x509_certificate(data)
                else:
                    cert = x509.load_der_x509_certificate(data)
            except Exception:
                raise SqlError(15208)
            der = cert.public_bytes(serialization.Encoding.DER)
            import hashlib
            tp = hashlib.sha1(der).hexdigest()
            if any(c["thumbprint"] == tp for c in db["certificates"].values()):
                raise SqlError(15232, s["name"])
            pem, prot = None, None
            if "pk" in s:
                pem = self._read_pvk(s["pk"], cert.public_key())
                encpw = self.eval(s["pk"]["enc"], {}) if "enc" in s["pk"] else None
                prot = self._protect(db, encpw)
        else:
            opts = {k: self.eval(v, {}) for k, v in s["opts"].items()}

            def dt(v):
                v = str(v).strip()
                for fmt in ("%Y%m%d", "%Y-%m-%d", "%m/%d/%Y", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"):
                    try:
                        return datetime.datetime.strptime(v, fmt)
                    except ValueError:
                        pass
                raise SqlError(241, msg="Conversion failed when converting date and/or time from character string.")
            start = dt(opts["start_date"]) if "start_date" in opts else None
            expiry = dt(opts["expiry_date"]) if "expiry_date" in opts else None
            encpw = self.eval(s["enc_pw"], {}) if s.get("enc_pw") else None
            prot = self._protect(db, encpw)
            cert, key = st.make_certificate(str(opts["subject"]), start, expiry)
            der = cert.public_bytes(serialization.Encoding.DER)
            pem = st.key_pem(key)
        cid = db["next_cert_id"]
        db["next_cert_id"] += 1
        db["certificates"][s["name"]] = st.cert_record(der, pem, prot, cid, owner)
        self.state.dirty = True
        out.done(0, token=tok)

    def x_alter_cert(self, s, out, tok):
        db = self.cur_db()
        name, c = self._controlled_cert(db, s["name"])
        self.need_write(db)
        if s["remove"]:
            c["prot"] = None
            c["key"] = None
        else:
            pk = s["pk"]
            dpw = self.eval(pk["dec"], {}) if "dec" in pk else None
            if "file" in pk or "binary" in pk:
                cert = x509.load_der_x509_certificate(base64.b64decode(c["der"]))
                c["key"] = self._read_pvk(pk, cert.public_key())
            elif not self.cert_key_usable(db, c, dpw):
                raise SqlError(15465 if dpw is not None else 15581)
            encpw = self.eval(pk["enc"], {}) if "enc" in pk else None
            c["prot"] = self._protect(db, encpw)
        self.state.dirty = True
        out.done(0, token=tok)

    def x_drop_certificate(self, s, out, tok):
        db = self.cur_db()
        name, c = self._cert(db, s["name"])
        if not c or not self.cert_control(db, c):
            if s.get("if_exists") and not c:
                out.done(0, token=tok)
                return
            raise SqlError(15151, "certificate", s["name"])
        self.need_write(db)
        del db["certificates"][name]
        db["permissions"] = [p for p in db["permissions"]
                             if not (p["class"] == 25 and p["major"] == c["certificate_id"])]
        self.state.dirty = True
        out.done(0, token=tok)

    def x_backup_cert(self, s, out, tok):
        db = self.cur_db()
        name, c = self._controlled_cert(db, s["name"])
        winpath, real = self.path(s["file"])
        pk = s.get("pk")
        files = [(winpath, real, base64.b64decode(c["der"]))]
        if pk:
            if not c.get("prot") or not c.get("key"):
                raise SqlError(15246, name)
            if "enc" not in pk:
                raise SqlError(102, "PRIVATE")
            dpw = self.eval(pk["dec"], {}) if "dec" in pk else None
            if c["prot"]["kind"] == "MK":
                if not self.open_dmk(db):
                    raise SqlError(15581)
                if c["prot"]["dmk"] != db["dmk"]["key_guid"]:
                    raise SqlError(15466)
            elif not st.pw_matches(c["prot"], dpw):
                raise SqlError(15465)
            encpw = self.eval(pk["enc"], {})
            check_policy(encpw)
            kw, kreal = self.path(pk["file"])
            if os.path.exists(kreal):
                raise SqlError(15240, kw)
            files.append((kw, kreal, st.seal(c["key"].encode(), encpw, st.PVK_FMT)))
        if os.path.exists(real):
            raise SqlError(15240, winpath)
        for w, r, data in files:
            self.write_new_file(w, r, data)
        if pk and self.writable(db):
            c["backup_date"] = st.now().isoformat()
            self.state.dirty = True
        out.done(0, token=tok)


# statement kind -> handler
STATEMENTS = {
    "create_mk": KeysMixin.x_create_mk,
    "alter_mk": KeysMixin.x_alter_mk,
    "open_mk": KeysMixin.x_open_mk,
    "close_mk": KeysMixin.x_close_mk,
    "drop_mk": KeysMixin.x_drop_mk,
    "backup_mk": KeysMixin.x_backup_mk,
    "restore_mk": KeysMixin.x_restore_mk,
    "alter_smk": KeysMixin.x_alter_smk,
    "backup_smk": KeysMixin.x_backup_smk,
    "restore_smk": KeysMixin.x_restore_smk,
    "create_cert": KeysMixin.x_create_cert,
    "alter_cert": KeysMixin.x_alter_cert,
    "drop_certificate": KeysMixin.x_drop_certificate,
    "backup_cert": KeysMixin.x_backup_cert,
}
