"""The secret store: names are case-insensitive, every PUT makes a new
32-hex version, DELETE is a soft delete (Recoverable+Purgeable, 90 days),
recover restores, purge removes. Persisted to <state>/secrets.json after
every change (atomic rename)."""
import json
import os
import threading
import time
import uuid

RECOVERABLE_DAYS = 90
RECOVERY_LEVEL = "Recoverable+Purgeable"


class Store:
    def __init__(self, path):
        self.path = path
        self.lock = threading.RLock()
        self.secrets = {}          # lower name -> record
        if os.path.exists(path):
            with open(path) as f:
                self.secrets = json.load(f).get("secrets", {})

    def save(self):
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"secrets": self.secrets}, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)

    # -- lookups ----------------------------------------------------------
    def record(self, name):
        return self.secrets.get(name.lower())

    @staticmethod
    def latest(rec):
        return rec["versions"][-1]

    @staticmethod
    def find_version(rec, version):
        version = version.lower()
        for v in rec["versions"]:
            if v["version"] == version:
                return v
        return None

    @staticmethod
    def is_deleted(rec):
        return rec is not None and rec.get("deleted") is not None

    @staticmethod
    def delete_pending(rec, now=None):
        d = rec.get("deleted") if rec else None
        return bool(d) and d.get("pending_until", 0) > (now or time.time())

    # -- mutations (callers hold self.lock) ------------------------------
    pinned_created = None      # control POST /pin-created

    def set(self, name, value, content_type=None, tags=None, attrs=None):
        now = int(time.time()) if self.pinned_created is None else self.pinned_created
        rec = self.secrets.get(name.lower())
        if rec is None:
            rec = {"name": name, "versions": [], "deleted": None}
            self.secrets[name.lower()] = rec
        attrs = attrs or {}
        ver = {"version": uuid.uuid4().hex, "value": value, "contentType": content_type,
               "tags": tags, "enabled": attrs.get("enabled", True) is not False,
               "nbf": attrs.get("nbf"), "exp": attrs.get("exp"), "created": now, "updated": now}
        rec["versions"].append(ver)
        self.save()
        return rec, ver

    def update(self, rec, ver, body):
        if "contentType" in body:
            ver["contentType"] = body["contentType"]
        if "tags" in body:
            ver["tags"] = body["tags"]
        attrs = body.get("attributes") or {}
        for k in ("enabled", "nbf", "exp"):
            if k in attrs:
                ver[k] = attrs[k] if k != "enabled" else attrs[k] is not False
        ver["updated"] = int(time.time())
        self.save()

    def delete(self, rec, pending_ms=0):
        now = int(time.time())
        rec["deleted"] = {"deletedDate": now,
                          "scheduledPurgeDate": now + RECOVERABLE_DAYS * 86400,
                          "pending_until": time.time() + pending_ms / 1000.0}
        self.save()

    def recover(self, rec):
        rec["deleted"] = None
        self.save()

    def purge(self, rec):
        del self.secrets[rec["name"].lower()]
        self.save()

    # -- rendering ---------------------------------------------------------
    @staticmethod
    def attributes(ver):
        a = {"enabled": ver["enabled"]}
        if ver.get("nbf") is not None:
            a["nbf"] = ver["nbf"]
        if ver.get("exp") is not None:
            a["exp"] = ver["exp"]
        a["created"] = ver["created"]
        a["updated"] = ver["updated"]
        a["recoveryLevel"] = RECOVERY_LEVEL
        a["recoverableDays"] = RECOVERABLE_DAYS
        return a

    def bundle(self, base, rec, ver, with_value=True):
        b = {}
        if with_value:
            b["value"] = ver["value"]
        if ver.get("contentType") is not None:
            b["contentType"] = ver["contentType"]
        b["id"] = f"{base}/secrets/{rec['name']}/{ver['version']}"
        b["attributes"] = self.attributes(ver)
        if ver.get("tags") is not None:
            b["tags"] = ver["tags"]
        return b

    def item(self, base, rec, ver, versioned):
        i = {"id": f"{base}/secrets/{rec['name']}" + (f"/{ver['version']}" if versioned else "")}
        i["attributes"] = self.attributes(ver)
        if ver.get("tags") is not None:
            i["tags"] = ver["tags"]
        if ver.get("contentType") is not None:
            i["contentType"] = ver["contentType"]
        return i

    def deleted_bundle(self, base, rec):
        ver = self.latest(rec)
        d = {"recoveryId": f"{base}/deletedsecrets/{rec['name']}",
             "deletedDate": rec["deleted"]["deletedDate"],
             "scheduledPurgeDate": rec["deleted"]["scheduledPurgeDate"]}
        d.update(self.bundle(base, rec, ver, with_value=False))
        return d

    def deleted_item(self, base, rec):
        ver = self.latest(rec)
        d = {"recoveryId": f"{base}/deletedsecrets/{rec['name']}",
             "deletedDate": rec["deleted"]["deletedDate"],
             "scheduledPurgeDate": rec["deleted"]["scheduledPurgeDate"]}
        d.update(self.item(base, rec, ver, versioned=False))
        return d
