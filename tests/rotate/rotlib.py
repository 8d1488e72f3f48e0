"""Helpers shared by the rotation tests: the store as Vault sees it, the
"nothing lost" invariant, and the checks after a run converged."""
import json
import os
import ssl
import sys
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import lab as _labmod  # noqa: E402
from lab import Lab  # noqa: E402,F401


def _snapshot_binary():
    """Run a private copy of dmkagent: the build directory is shared, and a
    relink in the middle of a long matrix would make exec fail (EACCES)."""
    import atexit
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="dmkrot-bin-")
    dst = os.path.join(d, "dmkagent")
    shutil.copy2(_labmod.DMK, dst)
    _labmod.DMK = dst
    atexit.register(shutil.rmtree, d, True)


_snapshot_binary()


def have_failpoints():
    """The binary honours DMKAGENT_FAILPOINT (a test build: build-test/,
    build-san/, meson -Dfailpoints=true); build/ has none."""
    try:
        with open(_labmod.DMK, "rb") as f:
            return b"failpoint %s: killing myself" in f.read()
    except OSError:
        return False


def needs_failpoints(fn):
    """Run fn only with failpoints: skip on a build without them, fail on a
    test build (meson -Dfailpoints=true) that lacks them."""
    import functools
    from tests.sim.common.harness import failpoints_expected

    @functools.wraps(fn)
    def wrapper(self, *a, **kw):
        if not have_failpoints():
            if failpoints_expected():
                self.fail(f"{_labmod.DMK} has no failpoints, though this build is meant to")
            self.skipTest("dmkagent built without -Dfailpoints=true (use build-test/)")
        return fn(self, *a, **kw)
    return wrapper

KV = "secret"
PATH = "sql/ag1/cm_p01/dmk"


def vault_get(lab, path):
    ctx = ssl.create_default_context(cafile=lab.ca)
    req = urllib.request.Request(lab.vault.ready["address"] + "/v1/" + path,
                                 headers={"X-Vault-Token": lab.root_token})
    with urllib.request.urlopen(req, timeout=20, context=ctx) as r:
        return json.loads(r.read().decode())


def store_versions(lab, path=None):
    """[(num, state, password)] of every live version (of the lab's DMK
    password, or of KV/path), oldest first."""
    path = path or PATH
    try:
        md = vault_get(lab, f"{KV}/metadata/{path}")["data"]
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return []
        raise
    cm = md.get("custom_metadata") or {}
    out = []
    for k, v in sorted(md["versions"].items(), key=lambda kv: int(kv[0])):
        if v.get("deletion_time") or v.get("destroyed"):
            continue
        d = vault_get(lab, f"{KV}/data/{path}?version={k}")["data"]["data"]
        out.append((int(k), cm.get(f"v{k}.dmkagent-state", ""), d["password"]))
    return out


def store_current(lab):
    """The version in force, as dmk_password_current picks it."""
    vs = store_versions(lab)
    if vs and vs[-1][1] == "pending":
        vs = vs[:-1]
    for num, state, pw in reversed(vs):
        if state in ("", "current"):
            return num, pw
    return None, None


def opens(lab, pw):
    """OPEN MASTER KEY on the primary with this password."""
    lit = pw.replace("'", "''")
    try:
        lab.query(f"USE CM_P01; OPEN MASTER KEY DECRYPTION BY PASSWORD = N'{lit}'; CLOSE MASTER KEY")
        return True
    except Exception as e:  # 15313
        if "15313" in str(e) or "not encrypted using the specified decryptor" in str(e):
            return False
        raise


def remember_plaintext(lab):
    """Note what the runbook's check decrypts now (the DMK opens): later
    checks must decrypt the same known ciphertexts to the same plaintext."""
    rows = lab.check_query()
    if not rows or any(r[0] is None for r in rows):
        raise AssertionError(f"the check query decrypts nothing to remember: {rows}")
    lab.known_plaintext = [r[0] for r in rows]
    return lab.known_plaintext


def decrypts_everywhere(lab, nodes_up):
    """Fail over to each node that is up and run the runbook's check there;
    ends on the first node of nodes_up.  With remember_plaintext() called
    before, each node must decrypt to exactly that plaintext.  Returns a
    list of problems."""
    bad = []
    order = list(nodes_up[1:]) + [nodes_up[0]]
    names = [x["name"] for x in lab.sql_ready["nodes"]]
    known = getattr(lab, "known_plaintext", None)
    for n in order:
        if lab.control("/status")["primary"] != names[n]:
            try:
                lab.failover(n)
            except Exception as e:
                bad.append(f"failover to node {n}: {e}")
                continue
        if lab.control("/status")["primary"] != names[n]:
            bad.append(f"failover to node {n}: {lab.control('/status')['primary']} is primary")
            continue
        rows = lab.check_query()
        if not rows or any(r[0] is None for r in rows):
            bad.append(f"node {n} as primary: check query gave NULLs {rows}")
        elif known is not None and [r[0] for r in rows] != known:
            bad.append(f"node {n} as primary: the known ciphertexts decrypt to something else")
    return bad


def invariant(lab, nodes_up):
    """Nothing lost: some password the store holds (current or pending) opens
    the DMK, and every replica opens it after a failover."""
    bad = []
    vs = store_versions(lab)
    live = [(n, s, p) for n, s, p in vs if s in ("", "current", "pending", "retiring")]
    if not any(opens(lab, p) for _, _, p in live):
        bad.append(f"no store password opens the DMK (versions {[(n, s) for n, s, _ in vs]})")
    bad += decrypts_everywhere(lab, nodes_up)
    return bad


DB = "CM_P01"
DMK_KEY_ID = 101          # sys.symmetric_keys' id of ##MS_DatabaseMasterKey##


def _guid(v):
    return str(v).upper().strip("{}")


def family_guid(lab, db=DB):
    """The database's family_guid, as dmkagent reads it (the primary)."""
    rows = lab.query("SELECT d.name, r.family_guid FROM sys.databases AS d JOIN "
                     "sys.database_recovery_status AS r ON r.database_id = d.database_id")
    return next(_guid(f) for n, f in rows if n.lower() == db.lower())


def family_credentials(lab, node, fam):
    """The names of node's DMK credentials of the family fam."""
    return [n for f, n in lab.query(
        "SELECT m.family_guid, c.name FROM sys.master_key_passwords AS m JOIN "
        "sys.credentials AS c ON c.credential_id = m.credential_id", node=node)
        if _guid(f) == fam]


def credential_holds(lab, node, pw, db=DB):
    """Whether node has a DMK credential for db holding exactly pw: adding it
    again answers 15594 (dmkagent's own proof, rotation.c's ensure_new).
    Had it been missing, the one just added is dropped again."""
    lit = pw.replace("'", "''")
    def sql(action):
        return (f"EXEC sp_control_dbmasterkey_password @db_name = N'{db}', "
                f"@password = N'{lit}', @action = N'{action}'")
    try:
        lab.query(sql("add"), node=node)
    except Exception as e:
        if "15594" in str(e) or "already provisioned" in str(e):
            return True
        raise
    lab.query(sql("drop"), node=node)
    return False


def dmk_password_encryptions(lab, db=DB):
    """How many passwords encrypt the DMK (sys.key_encryptions on the primary)."""
    rows = lab.query("SELECT key_id, crypt_type FROM sys.key_encryptions", database=db)
    return sum(1 for k, t in rows if k == DMK_KEY_ID and t.strip() in ("ESKP", "ESP2"))


def revoked(lab, nodes=(0, 1, 2), unknown=None, versions=None, current=None):
    """The rotation revoked what it replaced: no store version but the
    current one opens the DMK on the primary; the DMK has exactly one
    password besides the `unknown` ones nobody knows (sqlsim's own when the
    lab started without a password: recover cannot drop those); every
    replica in nodes has exactly one credential of the DMK's family, and it
    holds the current password.  versions and current: the store's
    [(version, state, password)] and (version, password) when it is not
    this Vault (Key Vault: azlab's store_versions() and store_current())."""
    if unknown is None:
        unknown = 1 if getattr(lab, "dmk_password", "") is None else 0
    bad = []
    vs = store_versions(lab) if versions is None else versions
    num, pw = store_current(lab) if current is None else current
    if pw is None:
        return ["no current version in the store"]
    for n, s, p in vs:
        if n != num and p != pw and opens(lab, p):
            bad.append(f"store version {n} ({s or 'unmarked'}) still opens the DMK: its "
                       f"password was never dropped")
    k = dmk_password_encryptions(lab)
    if k != 1 + unknown:
        bad.append(f"the DMK is encrypted by {k} passwords, want 1 (the current one)"
                   + (f" and {unknown} nobody knows" if unknown else ""))
    fam = family_guid(lab)
    names = [x["name"] for x in lab.sql_ready["nodes"]]
    for n in nodes:
        creds = family_credentials(lab, n, fam)
        if len(creds) != 1:
            bad.append(f"{names[n]} holds {len(creds)} credentials of the DMK's family, want 1: "
                       f"{creds}")
        if not credential_holds(lab, n, pw):
            bad.append(f"{names[n]} has no credential holding the current password "
                       f"(version {num})")
    return bad


def markers_problems(lab):
    """The store's markers: exactly one version current (a store never
    rotated has none marked: then its newest version is the one in force),
    nothing pending or retiring, and it is the version in force."""
    vs = store_versions(lab)
    states = [(n, s) for n, s, _ in vs]
    bad = []
    if any(s == "pending" for _, s, _ in vs):
        bad.append(f"a version is still pending: {states}")
    if any(s == "retiring" for _, s, _ in vs):
        bad.append(f"a version is still retiring: {states}")
    cur = [n for n, s, _ in vs if s == "current"]
    if len(cur) > 1 or (not cur and any(s for _, s, _ in vs)):
        bad.append(f"{len(cur)} versions marked current, want 1: {states}")
    elif cur and store_current(lab)[0] != cur[0]:
        bad.append(f"version {cur[0]} is marked current, version {store_current(lab)[0]} is "
                   f"in force: {states}")
    return bad


def converged(lab, nodes_up=(0, 1, 2), unknown=None):
    """After a clean run: the store's markers say current for exactly one
    version, nothing pending; its password opens the DMK, the old passwords
    and credentials are gone (revoked()), verify passes, every node decrypts
    the known ciphertexts as primary, audit intact."""
    bad = markers_problems(lab)
    num, pw = store_current(lab)
    if pw is None or not opens(lab, pw):
        bad.append(f"the store's current version {num} does not open the DMK")
    else:
        bad += revoked(lab, nodes_up, unknown)
    bad += decrypts_everywhere(lab, list(nodes_up))
    rc, out, err = lab.agent("verify")
    if rc != 0:
        bad.append(f"verify exit {rc}: {out} {err}")
    rc, out, err = lab.agent("audit", "verify", lab.audit_log)
    if rc != 0:
        bad.append(f"audit verify exit {rc}: {err}")
    return bad


def have_pytds():
    try:
        import pytds  # noqa: F401
        return True
    except ImportError:
        return False
