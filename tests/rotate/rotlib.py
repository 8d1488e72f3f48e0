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


def store_versions(lab):
    """[(num, state, password)] of every live version, oldest first."""
    try:
        md = vault_get(lab, f"{KV}/metadata/{PATH}")["data"]
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return []
        raise
    cm = md.get("custom_metadata") or {}
    out = []
    for k, v in sorted(md["versions"].items(), key=lambda kv: int(kv[0])):
        if v.get("deletion_time") or v.get("destroyed"):
            continue
        d = vault_get(lab, f"{KV}/data/{PATH}?version={k}")["data"]["data"]
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


def decrypts_everywhere(lab, nodes_up):
    """Fail over to each node that is up and run the runbook's check there;
    ends on the first node of nodes_up.  Returns a list of problems."""
    bad = []
    order = list(nodes_up[1:]) + [nodes_up[0]]
    names = [x["name"] for x in lab.sql_ready["nodes"]]
    for n in order:
        if lab.control("/status")["primary"] != names[n]:
            try:
                lab.failover(n)
            except Exception as e:
                bad.append(f"failover to node {n}: {e}")
                continue
        rows = lab.check_query()
        if not rows or any(r[0] is None for r in rows):
            bad.append(f"node {n} as primary: check query gave NULLs {rows}")
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


def converged(lab, nodes_up=(0, 1, 2)):
    """After a clean run: the store's current password opens the DMK, nothing
    pending, verify passes, every node decrypts as primary, audit intact."""
    bad = []
    vs = store_versions(lab)
    if vs and vs[-1][1] == "pending":
        bad.append(f"a version is still pending: {[(n, s) for n, s, _ in vs]}")
    if any(s == "retiring" for _, s, _ in vs):
        bad.append(f"a version is still retiring: {[(n, s) for n, s, _ in vs]}")
    num, pw = store_current(lab)
    if pw is None or not opens(lab, pw):
        bad.append(f"the store's current version {num} does not open the DMK")
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
