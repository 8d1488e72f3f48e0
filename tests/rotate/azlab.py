"""The lab of tests/integration/lab.py with the DMK password in Azure Key
Vault (tests/sim/azuresim) instead of Vault, and the store as the rotation
tests inspect it: versions in creation order with their dmkagent-state tag
and value, read over Key Vault's REST API with a token minted by the
simulator's control API (never through dmkagent)."""
import functools
import json
import os
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from lab import Lab, SRC, write_secret  # noqa: E402
from tests.sim.common.harness import PY, Sim, free_port_block  # noqa: E402

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "3c4e2f00-1b5a-4c1e-9d0a-5e8f3a2b1c0d"
API = "7.4"


def secret_name(label):
    """The Key Vault secret name of a database's DMK password (names are [0-9a-zA-Z-])."""
    return "sql-ag1-" + label.lower().replace("_", "-") + "-dmk"


class AzureLab(Lab):
    """Lab with `[store akv] type = azure-key-vault` (client secret auth) and
    `dmk_password = akv:sql-ag1-<db>-dmk` for every database: only the store
    differs from Lab (its simulator, its section, its references)."""

    def _start_vault(self):
        port = free_port_block(2)
        self.client_secret = "Az-rot-" + os.urandom(12).hex()
        sims = write_secret(os.path.join(self.dir, "azure-sim-secrets"), self.client_secret + "\n")
        self.client_secret_file = write_secret(os.path.join(self.dir, "azure-client-secret"),
                                               self.client_secret + "\n")
        self.azure = Sim([PY, os.path.join(SRC, "tests/sim/azuresim"), "--state",
                          os.path.join(self.dir, "azure"), "--port", str(port),
                          "--tls-cert", self.pki["server_pem"], "--tls-key", self.pki["server_key"],
                          "--tenant", TENANT, "--client-id", CLIENT, "--client-secret-file", sims,
                          "--control-port", str(port + 1)],
                         log_path=os.path.join(self.dir, "azuresim.log")).__enter__()
        self.sims.append(self.azure)
        self.vault = self.azure         # Lab.control(sim=lab.vault) reaches the store's simulator

    def store_section(self):
        r = self.azure.ready
        return (f"[store akv]\ntype = azure-key-vault\nvault_url = {r['vault_url']}\n"
                f"ca_file = {self.ca}\nchallenge_resource_verification = no\ntimeout = 20s\n"
                f"auth = client-secret\ntenant_id = {TENANT}\nclient_id = {CLIENT}\n"
                f"authority_host = {r['authority_host']}\n"
                f"client_secret = file:{self.client_secret_file}\n")

    def dmk_ref(self, label):
        return "akv:" + secret_name(label)

    def put_dmk_password(self, value=None, ref=None, overwrite=False):
        return super().put_dmk_password(value, ref or "akv:" + secret_name("CM_P01"), overwrite)

    # ---- the store, as the tests read it ----
    def _token(self):
        if getattr(self, "_tok", None) is None:
            self._tok = self.control("/token", {}, sim=self.azure)["access_token"]
        return self._tok

    def kv_get(self, path, query=""):
        ctx = ssl.create_default_context(cafile=self.ca)
        url = self.azure.ready["vault_url"].rstrip("/") + path + f"?api-version={API}" + query
        req = urllib.request.Request(url, headers={"Authorization": "Bearer " + self._token()})
        with urllib.request.urlopen(req, timeout=20, context=ctx) as r:
            return json.loads(r.read().decode())

    def store_versions(self, label="CM_P01"):
        """[(version id, state, password)] of every enabled version, oldest first (the agent's
        dmkagent-order tag between two versions it wrote, else Key Vault's created time)."""
        name = secret_name(label)
        items, path, query = [], f"/secrets/{name}/versions", "&maxresults=25"
        while True:
            try:
                page = self.kv_get(path, query)
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    return []
                raise
            items += page.get("value") or []
            nxt = page.get("nextLink")
            if not nxt:
                break
            u = urllib.parse.urlsplit(nxt)
            path = u.path
            query = "&" + "&".join(p for p in u.query.split("&") if not p.startswith("api-version="))
        out = []
        for i, it in enumerate(items):
            if not (it.get("attributes") or {}).get("enabled", True):
                continue
            vid = it["id"].rsplit("/", 1)[1]
            b = self.kv_get(f"/secrets/{name}/{vid}")
            tags = b.get("tags") or {}
            out.append(((b["attributes"]["created"], tags.get("dmkagent-order"), i), vid,
                        tags.get("dmkagent-state", ""), b["value"]))

        # Key Vault lists versions in no documented order (azuresim: by id) and `created` has one-second
        # resolution: the agent's own dmkagent-order decides between two versions it wrote, as in azkv.c
        def cmp(a, b):
            (ca, oa, ia), (cb, ob, ib) = a[0], b[0]
            if oa and ob and oa != ob:
                return -1 if oa < ob else 1
            if ca != cb:
                return -1 if ca < cb else 1
            return (ia > ib) - (ia < ib)
        out.sort(key=functools.cmp_to_key(cmp))
        return [(vid, st, pw) for _k, vid, st, pw in out]

    def store_current(self):
        vs = self.store_versions()
        if vs and vs[-1][1] == "pending":
            vs = vs[:-1]
        for vid, state, pw in reversed(vs):
            if state in ("", "current"):
                return vid, pw
        return None, None
