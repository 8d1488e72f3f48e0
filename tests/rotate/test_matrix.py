#!/usr/bin/python3
"""The rotation fault matrix: every step boundary of `dmkagent rotate` (and of
`rotate --regenerate`, `recover` and `backup`) against each fault: the agent
SIGKILLed there (failpoint), then the rerun meets a failover, a sealed store, a
429ing store or a replica down; plus SQL connections dropped at each step's
statement and failovers in the middle of a run.  Per cell: the "nothing lost"
invariant right at the fault, then a clean rerun exits 0 and everything has
converged (no manual step); for backup also: the store's newest escrows are
complete and match SQL Server, and the restore test passes.

"Converged" (rotlib.converged) is the final state of SQL Server and the
store, not an exit code: the store marks exactly one version current, nothing
pending; its password opens the DMK and no other store version does; the DMK
has exactly one password (besides one nobody knows, in the recover lab); every
replica holds exactly one credential of the DMK's family, holding the current
password; every node, made primary, opens the DMK by itself and decrypts the
known ciphertexts to the plaintext noted at the start; verify and the audit
chain pass.  Regenerate cells each run in a lab of their own; recover cells
each start from a password that is unknown for real (reset_unknown); a
mid-run failover cell checks that the failover happened.

DMKAGENT_MATRIX=backup,regenerate (say) runs only those groups, for work on
one of them; the default test runs them all."""
import base64
import hashlib
import json
import os
import sys
import time
import traceback
import urllib.error

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rotlib  # noqa: E402
from rotlib import Lab, invariant, converged  # noqa: E402

BOUNDARIES = ["after-lease", "after-prove", "after-backup", "after-pending", "after-add",
              "after-register",
              "after-verify", "after-mark-current", "after-verify-mark", "after-drop-primary",
              "after-drop-replicas", "after-retire", "after-release"]
RECOVER_BOUNDARIES = ["after-lease", "after-backup", "after-pending", "after-add",
                      "after-register", "after-verify", "after-mark-current", "after-release"]
KILLED = -9

results = []   # (group, cell, ok, detail, seconds)


def cell(group, name, fn):
    t = time.time()
    try:
        problems = fn() or []
    except Exception as e:
        problems = [f"exception: {e!r}\n{traceback.format_exc()}"]
    dt = time.time() - t
    results.append((group, name, not problems, "; ".join(problems), dt))
    sys.stderr.write(f"{'ok  ' if not problems else 'FAIL'} {group:10} {name:42} {dt:5.1f}s"
                     f"{'' if not problems else '  ' + '; '.join(problems)[:600]}\n")


def cmd_args(cmd):
    """recover with no secret at the reference needs --password-unknown."""
    return [cmd, "--password-unknown"] if cmd == "recover" else [cmd]


def kill_at(lab, cmd, boundary):
    rc, out, err = lab.agent(*cmd_args(cmd), env={"DMKAGENT_FAILPOINT": f"{cmd}:{boundary}"})
    if rc != KILLED:
        return [f"{cmd}:{boundary}: expected SIGKILL, exit {rc}: {out} {err}"]
    return []


def finish(lab, cmd="rotate", nodes=(0, 1, 2)):
    bad = []
    rc, out, err = lab.agent(*cmd_args(cmd))
    if rc != 0:
        bad.append(f"rerun exit {rc}: {out} {err}")
    return bad + converged(lab, nodes)


def clean_faults(lab):
    lab.control("/faults/clear", {})
    lab.control("/clear", {}, sim=lab.vault)
    lab.control("/unseal", {}, sim=lab.vault)
    for n in range(lab.nodes):
        lab.control(f"/nodes/{n}/up", {})


def rotate_group(lab):
    for b in BOUNDARIES:
        def kill(b=b):
            bad = kill_at(lab, "rotate", b)
            bad += invariant(lab, [0, 1, 2])
            return bad + finish(lab)
        cell("kill", b, kill)

        def kill_failover(b=b):
            bad = kill_at(lab, "rotate", b)
            lab.control("/failover", {})            # the next node becomes primary
            bad += invariant(lab, [1, 2, 0])
            lab.control("/failover", {})
            return bad + finish(lab)
        cell("failover", b, kill_failover)

        def kill_sealed(b=b):
            bad = kill_at(lab, "rotate", b)
            lab.control("/seal", {}, sim=lab.vault)
            rc, out, err = lab.agent("rotate")
            if rc == 0:
                bad.append(f"rotate with the store sealed exited 0: {out}")
            lab.control("/unseal", {}, sim=lab.vault)
            bad += invariant(lab, [0, 1, 2])
            return bad + finish(lab)
        cell("sealed", b, kill_sealed)

        def kill_429(b=b):
            bad = kill_at(lab, "rotate", b)
            lab.control("/fail", {"status": 429, "count": -1, "retry_after": 0}, sim=lab.vault)
            rc, out, err = lab.agent("rotate")
            if rc == 0:
                bad.append(f"rotate with the store answering 429 exited 0: {out}")
            lab.control("/clear", {}, sim=lab.vault)
            bad += invariant(lab, [0, 1, 2])
            return bad + finish(lab)
        cell("store-429", b, kill_429)

        def kill_node_down(b=b):
            bad = kill_at(lab, "rotate", b)
            lab.control("/nodes/2/down", {})
            rc, out, err = lab.agent("rotate")
            if rc not in (0, 3):
                bad.append(f"rotate with a replica down: exit {rc} (want 3, or 0 when nothing "
                           f"was left to do on replicas): {out} {err}")
            bad += invariant(lab, [0, 1])
            lab.control("/nodes/2/up", {})
            return bad + finish(lab)
        cell("node-down", b, kill_node_down)


SQL_DROPS = [
    ("OPEN MASTER KEY", "before"), ("OPEN MASTER KEY", "after"),
    ("ALTER MASTER KEY ADD", "before"), ("ALTER MASTER KEY ADD", "after"),
    ("EXEC sp_control_dbmasterkey_password", "before"), ("EXEC sp_control_dbmasterkey_password", "after"),
    ("ALTER MASTER KEY DROP", "before"), ("ALTER MASTER KEY DROP", "after"),
    ("FROM sys.master_key_passwords", "before"),
]


def failed_over(lab, k, want):
    """The failover sqlsim was told to make at statement k happened: the
    fault fired and the AG's primary is now want (sys.dm_hadr's view)."""
    if lab.control("/faults").get("failover_at_statement") is not None:
        return [f"the run sent fewer than {k} statements: no failover happened"]
    role = lab.query("SELECT r.role_desc FROM sys.dm_hadr_availability_replica_states AS r "
                     "WHERE r.is_local = 1", node=[x["name"] for x in
                                                   lab.sql_ready["nodes"]].index(want))
    primary = lab.control("/status")["primary"]
    if primary != want or not role or role[0][0] != "PRIMARY":
        return [f"after the failover at statement {k} the primary is {primary} "
                f"({want} says {role}), want {want}"]
    return []


def sql_group(lab):
    for pat, when in SQL_DROPS:
        def drop(pat=pat, when=when):
            bad = []
            lab.control("/faults", {"drop_at_pattern": pat, "drop_when": when})
            rc, out, err = lab.agent("rotate")
            if rc == 0:
                bad.append(f"rotate exited 0 though its connection was dropped ({pat}, {when})")
            if lab.control("/faults").get("drop_at_pattern"):
                bad.append(f"rotate never sent {pat}: no connection was dropped")
            lab.control("/faults/clear", {})
            bad += invariant(lab, [0, 1, 2])
            return bad + finish(lab)
        cell("sql-drop", f"{pat} ({when})", drop)
    for k in (3, 8, 14, 20, 28, 40):
        def mid_failover(k=k):
            bad = []
            names = [x["name"] for x in lab.sql_ready["nodes"]]
            before = lab.control("/status")["primary"]
            lab.control("/faults", {"failover_at_statement": k})
            lab.agent("rotate")        # may fail or finish: either way nothing is lost
            bad += failed_over(lab, k, names[(names.index(before) + 1) % len(names)])
            lab.control("/faults/clear", {})
            bad += invariant(lab, [0, 1, 2])
            return bad + finish(lab)
        cell("mid-failover", f"at statement {k}", mid_failover)
    for n in (1, 2):
        def down_mid(n=n):
            bad = []
            lab.control(f"/nodes/{n}/down", {})
            rc, out, err = lab.agent("rotate")
            if rc != 3:
                bad.append(f"rotate with node {n} down: exit {rc}, want 3: {out} {err}")
            bad += invariant(lab, [x for x in range(3) if x != n])
            lab.control(f"/nodes/{n}/up", {})
            return bad + finish(lab)
        cell("node-down", f"node {n} down for a whole run", down_mid)


REGEN_BOUNDARIES = ["after-backup", "after-pending", "after-register", "after-regenerate",
                    "after-verify", "after-mark-current", "after-verify-mark",
                    "after-drop-replicas", "after-retire"]
skipped = []


def fresh_lab():
    """A lab of its own, registered, its plaintext known: a cell that fails
    cannot leave its state to the next one."""
    lab = Lab(nodes=3).__enter__()
    try:
        lab.put_dmk_password()
        rc, out, err = lab.agent("register")
        if rc != 0:
            raise RuntimeError(f"register exit {rc}: {out} {err}")
        rotlib.remember_plaintext(lab)
    except BaseException:
        lab.__exit__(None, None, None)
        raise
    return lab


def dmk_key_guid(lab):
    return lab.control("/status")["databases"][rotlib.DB]["dmk_key_guid"]


def regenerated(lab, key_before, version_before):
    """The regeneration happened and only once: a new DMK (key_guid), the
    store one version further, that version current."""
    bad = []
    if dmk_key_guid(lab) == key_before:
        bad.append("the DMK was not regenerated (same key_guid)")
    num, _ = rotlib.store_current(lab)
    if num != version_before + 1:
        bad.append(f"store version {num} current, want {version_before + 1} "
                   f"(one regeneration): {[(n, s) for n, s, _ in rotlib.store_versions(lab)]}")
    return bad


def regen_cell(name, fn):
    """One regenerate cell in a fresh lab, given the DMK's key_guid and the
    store's version before."""
    def run():
        lab = fresh_lab()
        try:
            return fn(lab, dmk_key_guid(lab), rotlib.store_current(lab)[0])
        finally:
            lab.__exit__(None, None, None)
    cell("regenerate", name, run)


def regenerate_group():
    """rotate --regenerate, SIGKILLed at each of its boundaries, then a
    failover and a plain rerun that finishes it; each cell in a lab of its
    own, and each asserts that exactly one regeneration happened.  Killed
    after its backup (nothing recorded yet) the rerun is rotate
    --regenerate again; killed after retire (all done) a plain rerun
    rotates anew."""
    def plain(lab, key, ver):
        rc, out, err = lab.agent("rotate", "--regenerate")
        bad = [] if rc == 0 else [f"rotate --regenerate exit {rc}: {out} {err}"]
        bad += regenerated(lab, key, ver)
        return bad + converged(lab)
    regen_cell("no fault", plain)

    for b in REGEN_BOUNDARIES:
        def kill(lab, key, ver, b=b):
            rc, out, err = lab.agent("rotate", "--regenerate",
                                     env={"DMKAGENT_FAILPOINT": f"rotate:{b}"})
            bad = [] if rc == KILLED else [f"expected SIGKILL at {b}, exit {rc}: {out} {err}"]
            bad += invariant(lab, [0, 1, 2])
            lab.control("/failover", {})
            if b == "after-backup":
                rc, out, err = lab.agent("rotate", "--regenerate")
                if rc != 0:
                    bad.append(f"rotate --regenerate rerun exit {rc}: {out} {err}")
            elif b == "after-retire":
                # all done but the lease's release: the rerun rotates anew
                bad += regenerated(lab, key, ver)
                key, ver = dmk_key_guid(lab), ver + 1
                rc, out, err = lab.agent("rotate")
                if rc != 0 or "rotated" not in out:
                    bad.append(f"rerun exit {rc}, want a new rotation: {out} {err}")
                if dmk_key_guid(lab) != key or rotlib.store_current(lab)[0] != ver + 1:
                    bad.append("the rerun's rotation regenerated, or did not write one version")
                return bad + converged(lab)
            else:
                rc, out, err = lab.agent("rotate")
                if rc != 0:
                    bad.append(f"rerun exit {rc}: {out} {err}")
                elif "finished" not in out:
                    bad.append(f"the rerun did not finish the regeneration: {out}")
            bad += regenerated(lab, key, ver)
            return bad + converged(lab)
        regen_cell(b, kill)
    # Killed inside the backup that rotate --regenerate takes first
    # (backup_database(): backup.c's boundaries): nothing is regenerated
    # yet; the rerun backs up again and regenerates.
    for b in ("after-escrow-cert", "after-readback-dmk", "after-database"):
        def kill_in_backup(lab, key, ver, b=b):
            rc, out, err = lab.agent("rotate", "--regenerate",
                                     env={"DMKAGENT_FAILPOINT": f"backup:{b}"})
            bad = [] if rc == KILLED else [f"expected SIGKILL at backup:{b}, exit {rc}: {out} {err}"]
            bad += invariant(lab, [0, 1, 2])
            if dmk_key_guid(lab) != key or rotlib.store_current(lab)[0] != ver:
                bad.append("killed in its backup, rotate --regenerate had changed the DMK "
                           "or the store already")
            rc, out, err = lab.agent("rotate", "--regenerate")
            if rc != 0:
                bad.append(f"rotate --regenerate rerun exit {rc}: {out} {err}")
            bad += regenerated(lab, key, ver)
            return bad + converged(lab)
        regen_cell(f"kill backup:{b}", kill_in_backup)


# ---- backup (agent/backup.c's and restore_test.c's step boundaries, backup:after-*) ----

# Per database (backup --restore-test), then the SMKs (--smk).
BACKUP_BOUNDARIES = ["after-password", "after-dmk-file", "after-escrow-cert",
                     "after-readback-cert", "after-escrow-dmk", "after-readback-dmk",
                     "after-database", "after-restore-scratch", "after-restore-test",
                     "after-smk-files", "after-escrow-smk", "after-readback-smk"]
SMK_BOUNDARIES = {"after-smk-files", "after-escrow-smk", "after-readback-smk"}
# A sealed / 429ing store on the rerun costs the agent's whole retry budget
# (~7 s a cell): for backup only at these boundaries (one per kind of step).
BACKUP_STORE_FAULTS_AT = ["after-password", "after-escrow-cert", "after-readback-dmk",
                          "after-restore-scratch", "after-escrow-smk"]
BACKUP = ("backup", "--restore-test", "--smk")
SMK_REF = "hcv:sql/ag1/smk-backup#password"
SCRATCH = "dmkagent_restore_test_"


def backup_config(lab, tag=None):
    """The lab's configuration with smk_backup_password; with a tag, every
    backup password at a reference of its own that does not exist yet (so a
    run generates them: the after-password boundary)."""
    if tag is None:
        lab.write_config(extra_ag=f"smk_backup_password = {SMK_REF}\n")
        return
    lab.write_config(extra_ag=f"smk_backup_password = hcv:sql/ag1/bkpw-{tag}-smk#password\n")
    with open(lab.config, "a") as f:
        f.write(f"cert_backup_password = hcv:sql/ag1/cm_p01/bkpw-{tag}-cert#password\n"
                f"dmk_backup_password = hcv:sql/ag1/cm_p01/bkpw-{tag}-dmk#password\n")


def _ref_path(ref):
    assert ref.startswith("hcv:") and ref.endswith("#password"), ref
    return ref[len("hcv:"):-len("#password")]


def _kv(lab, path, version):
    d = rotlib.vault_get(lab, f"{rotlib.KV}/data/{path}?version={version}")["data"]
    return d["data"]["password"]


def _sql_rows(lab, sql, node=None, database=None):
    return lab.query(sql, node=node, database=database)


def _guid(v):
    return str(v).upper().strip("{}")


def escrow_problems(lab, out, smk=True, nodes_up=(0, 1, 2)):
    """The rerun's JSON report and the store agree, and both agree with SQL
    Server: every certificate under the DMK, the DMK and (smk) each node's
    SMK have their newest escrow version written by this run, readable,
    well formed, with markers, its backup password in the store, the
    certificate's bytes hashing to the thumbprint SQL Server shows, the
    key_guids SQL Server shows, the DMK/SMK bytes equal to the file on the
    node; the restore test passed; no scratch database is left.  A node
    not in nodes_up must be reported as not backed up, and the run as
    incomplete."""
    bad = []
    try:
        rep = json.loads(out)
    except ValueError:
        return [f"backup --output json printed no JSON: {out[:300]}"]
    names = [x["name"] for x in lab.sql_ready["nodes"]]
    down = {names[n] for n in range(len(names)) if n not in nodes_up}
    if rep.get("complete") is not (not down):
        bad.append(f"backup report complete={rep.get('complete')} with nodes {sorted(down)} "
                   f"down: {out[:600]}")
    items = [i for ag in rep.get("ags", []) for i in ag.get("backups", [])]
    primary = lab.control("/status")["primary"]
    certs = {r[0]: "0x" + bytes(r[1]).hex() for r in _sql_rows(
        lab, "SELECT name, thumbprint FROM sys.certificates WHERE pvt_key_encryption_type = 'MK'",
        database="CM_P01")}
    dmk_guid = _guid(_sql_rows(lab, "SELECT key_guid FROM sys.symmetric_keys WHERE name = "
                               "N'##MS_DatabaseMasterKey##'", database="CM_P01")[0][0])
    if not certs:
        bad.append("no certificate under the DMK in CM_P01 (the lab changed?)")
    seen = {"cert-backup": set(), "dmk-backup": set(), "smk-backup": set()}
    for it in items:
        kind = it.get("kind")
        what = f"{kind} {it.get('name') or it.get('node')}"
        if kind == "smk-backup" and it.get("node") in down:
            if it.get("ok"):
                bad.append(f"{what}: reported escrowed though the node is down")
            continue
        if not it.get("ok"):
            bad.append(f"{what}: not escrowed: {it.get('error')}")
            continue
        if kind in ("cert-backup", "dmk-backup") and it.get("restore_test") != "passed":
            bad.append(f"{what}: restore test {it.get('restore_test')}: {it.get('restore_note')}")
        path = _ref_path(it["reference"])
        try:
            md = rotlib.vault_get(lab, f"{rotlib.KV}/metadata/{path}")["data"]
            val = json.loads(_kv(lab, path, it["version"]))
            pw = _kv(lab, _ref_path(it["password_reference"]), it["password_version"])
        except (urllib.error.HTTPError, ValueError, KeyError) as e:
            bad.append(f"{what}: the store's copy is not readable: {e!r}")
            continue
        if str(md["current_version"]) != str(it["version"]):
            bad.append(f"{what}: the store's newest version is {md['current_version']}, "
                       f"the rerun wrote {it['version']}")
        if not pw:
            bad.append(f"{what}: empty backup password")
        cm = md.get("custom_metadata") or {}
        mk = {k.split(".", 1)[1]: v for k, v in cm.items() if k.startswith(f"v{it['version']}.")}
        if mk.get("dmkagent-kind") != kind or not mk.get("dmkagent-time") or \
                mk.get("dmkagent-password-version") != it["password_version"] or \
                mk.get("dmkagent-node") != it["node"]:
            bad.append(f"{what}: markers wrong: {mk}")
        if val.get("format") != "dmkagent-backup-1" or val.get("kind") != kind or \
                val.get("node") != it["node"] or \
                val.get("password_reference") != it["password_reference"] or \
                val.get("password_version") != it["password_version"]:
            bad.append(f"{what}: escrowed value's facts wrong: "
                       f"{ {k: v for k, v in val.items() if k not in ('certificate', 'private_key', 'data')} }")
        if kind == "cert-backup":
            seen[kind].add(val.get("name"))
            der = base64.b64decode(val.get("certificate", ""))
            if not val.get("private_key"):
                bad.append(f"{what}: no private key escrowed")
            if "0x" + hashlib.sha1(der).hexdigest() != val.get("thumbprint") or \
                    certs.get(val.get("name")) != val.get("thumbprint"):
                bad.append(f"{what}: thumbprint {val.get('thumbprint')} vs SQL Server's "
                           f"{certs.get(val.get('name'))} / SHA-1 of the bytes")
            if _guid(val.get("dmk_key_guid")) != dmk_guid:
                bad.append(f"{what}: dmk_key_guid {val.get('dmk_key_guid')}, the DMK's {dmk_guid}")
            if val.get("node") != primary:
                bad.append(f"{what}: node {val.get('node')}, the primary is {primary}")
        else:
            node = names.index(val["node"]) if val.get("node") in names else None
            if node is None:
                bad.append(f"{what}: unknown node {val.get('node')}")
                continue
            seen[kind].add(val["node"])
            if kind == "dmk-backup":
                want = dmk_guid
            else:
                want = _guid(_sql_rows(lab, "SELECT key_guid FROM master.sys.symmetric_keys "
                                       "WHERE name = N'##MS_ServiceMasterKey##'", node=node)[0][0])
            if _guid(val.get("key_guid")) != want:
                bad.append(f"{what}: key_guid {val.get('key_guid')}, SQL Server's {want}")
            f = val.get("server_file", "").replace("'", "''")
            blob = _sql_rows(lab, f"SELECT BulkColumn FROM OPENROWSET(BULK N'{f}', SINGLE_BLOB) AS a",
                             node=node)
            if not blob or bytes(blob[0][0]) != base64.b64decode(val.get("data", "")):
                bad.append(f"{what}: the escrowed bytes differ from {val.get('server_file')} "
                           f"on {val['node']}")
    if seen["cert-backup"] != set(certs):
        bad.append(f"certificates escrowed {sorted(seen['cert-backup'])}, under the DMK "
                   f"{sorted(certs)}")
    if seen["dmk-backup"] != {primary}:
        bad.append(f"DMK backups from {sorted(seen['dmk-backup'])}, want one from {primary}")
    if smk and seen["smk-backup"] != {names[n] for n in nodes_up}:
        bad.append(f"SMK backups from {sorted(seen['smk-backup'])}, want "
                   f"{sorted(names[n] for n in nodes_up)}")
    for d in sorted(down):
        if not any(i.get("kind") == "smk-backup" and i.get("node") == d for i in items):
            bad.append(f"the report says nothing of {d}'s SMK (the node is down)")
    left = [r[0] for r in _sql_rows(lab, "SELECT name FROM sys.databases") if r[0].startswith(SCRATCH)]
    if left:
        bad.append(f"scratch databases left on the primary: {left}")
    return bad


def backup_finish(lab):
    """The rerun: backup --restore-test --smk completes by itself; the escrows
    are complete and verify; every DMK still opens with the store's password
    and decrypts on every node; verify and the audit chain pass."""
    bad = []
    rc, out, err = lab.agent("--output", "json", *BACKUP)
    if rc != 0:
        bad.append(f"backup rerun exit {rc}: {out[-600:]} {err[-600:]}")
    bad += escrow_problems(lab, out)
    return bad + converged(lab)


def backup_kill(lab, b):
    """SIGKILL at backup:b; the SMK boundaries only with --smk."""
    args = BACKUP if b in SMK_BOUNDARIES else BACKUP[:2]
    rc, out, err = lab.agent(*args, env={"DMKAGENT_FAILPOINT": f"backup:{b}"})
    if rc != KILLED:
        return [f"backup:{b}: expected SIGKILL, exit {rc}: {out[-400:]} {err[-400:]}"]
    return []


def backup_group(lab):
    fresh = [0]

    def setup(b):
        if b == "after-password":
            fresh[0] += 1        # passwords that do not exist yet
            backup_config(lab, tag=str(fresh[0]))

    for b in BACKUP_BOUNDARIES:
        def kill(b=b):
            setup(b)
            bad = backup_kill(lab, b)
            bad += invariant(lab, [0, 1, 2])
            return bad + backup_finish(lab)
        cell("bk-kill", b, kill)

        def kill_failover(b=b):
            setup(b)
            bad = backup_kill(lab, b)
            lab.control("/failover", {})            # the rerun backs up on the next node
            bad += invariant(lab, [1, 2, 0])
            return bad + backup_finish(lab)
        cell("bk-failover", b, kill_failover)

        def kill_node_down(b=b):
            setup(b)
            bad = backup_kill(lab, b)
            lab.control("/nodes/2/down", {})
            rc, out, err = lab.agent("--output", "json", *BACKUP)
            if rc not in (3, 5):
                bad.append(f"backup --smk with a replica down: exit {rc}, want 3 (incomplete) "
                           f"or 5 (a server unreachable): {out[-400:]} {err[-400:]}")
            else:
                # the databases' backups and the reachable SMKs are there all the same
                bad += escrow_problems(lab, out, nodes_up=(0, 1))
            bad += invariant(lab, [0, 1])
            lab.control("/nodes/2/up", {})
            return bad + backup_finish(lab)
        cell("bk-node-down", b, kill_node_down)

        if b not in BACKUP_STORE_FAULTS_AT:
            continue

        def kill_sealed(b=b):
            setup(b)
            bad = backup_kill(lab, b)
            lab.control("/seal", {}, sim=lab.vault)
            rc, out, err = lab.agent(*BACKUP)
            if rc != 5:
                bad.append(f"backup with the store sealed: exit {rc}, want 5: {out[-400:]}")
            lab.control("/unseal", {}, sim=lab.vault)
            bad += invariant(lab, [0, 1, 2])
            return bad + backup_finish(lab)
        cell("bk-sealed", b, kill_sealed)

        def kill_429(b=b):
            setup(b)
            bad = backup_kill(lab, b)
            lab.control("/fail", {"status": 429, "count": -1, "retry_after": 0}, sim=lab.vault)
            rc, out, err = lab.agent(*BACKUP)
            if rc != 5:
                bad.append(f"backup with the store answering 429: exit {rc}, want 5: {out[-400:]}")
            lab.control("/clear", {}, sim=lab.vault)
            bad += invariant(lab, [0, 1, 2])
            return bad + backup_finish(lab)
        cell("bk-store-429", b, kill_429)
    not_run = [b for b in BACKUP_BOUNDARIES if b not in BACKUP_STORE_FAULTS_AT]
    skipped.append("backup: sealed store and 429 on the rerun only after "
                   f"{', '.join(BACKUP_STORE_FAULTS_AT)}; not after {', '.join(not_run)} "
                   "(runtime; SIGKILL, failover and a replica down run at every boundary)")

    # SQL connections dropped at each backup statement, before it runs or
    # after it ran but before its answer.
    for pat, when in BACKUP_SQL_DROPS:
        def drop(pat=pat, when=when):
            bad = []
            lab.control("/faults", {"drop_at_pattern": pat, "drop_when": when})
            rc, out, err = lab.agent(*BACKUP)
            if rc == 0:
                bad.append(f"backup exited 0 though its connection was dropped ({pat}, {when})")
            if lab.control("/faults").get("drop_at_pattern"):
                bad.append(f"backup never sent {pat}")
            lab.control("/faults/clear", {})
            bad += invariant(lab, [0, 1, 2])
            return bad + backup_finish(lab)
        cell("bk-sql-drop", f"{pat} ({when})", drop)
    for k in BACKUP_MID_FAILOVER:
        def mid_failover(k=k):
            lab.control("/faults", {"failover_at_statement": k})
            lab.agent(*BACKUP)      # may fail or finish: either way nothing is lost
            bad = [] if lab.control("/faults").get("failover_at_statement") is None else \
                [f"backup ran fewer than {k} statements: no failover happened"]
            lab.control("/faults/clear", {})
            bad += invariant(lab, [0, 1, 2])
            return bad + backup_finish(lab)
        cell("bk-mid-failover", f"at statement {k}", mid_failover)
    backup_config(lab)


BACKUP_SQL_DROPS = [
    ("CERTPRIVATEKEY", "before"), ("CERTPRIVATEKEY", "after"),
    ("BACKUP MASTER KEY", "before"), ("BACKUP MASTER KEY", "after"),
    ("CREATE DATABASE", "after"), ("RESTORE MASTER KEY", "after"),
    ("CREATE CERTIFICATE", "after"), ("DROP DATABASE", "before"),
    ("BACKUP SERVICE MASTER KEY", "before"), ("BACKUP SERVICE MASTER KEY", "after"),
]
BACKUP_MID_FAILOVER = (2, 5, 8, 12)


def unknown_lab():
    lab = Lab(nodes=3)
    lab.dmk_password = None      # sqlsim then makes one nobody knows
    return lab


def recover_group():
    """recover on a DMK whose password nobody knows (ConfigMgr's way).  Each
    cell starts from that state for real (reset_unknown), killed at each of
    recover's boundaries, and at its failover to the node whose SMK opens
    the DMK; the rerun recovers and converges."""
    with unknown_lab() as lab:
        rotlib.remember_plaintext(lab)
        for b in RECOVER_BOUNDARIES:
            def kill(b=b):
                i = RECOVER_BOUNDARIES.index(b)
                bad = reset_unknown(lab)
                bad += kill_at(lab, "recover", b)
                rows = lab.check_query()
                if [r[0] for r in rows] != lab.known_plaintext:
                    bad.append(f"the primary no longer decrypts: {rows}")
                vs = rotlib.store_versions(lab)
                if i < RECOVER_BOUNDARIES.index("after-pending") and vs:
                    bad.append(f"killed before writing its password, recover left store "
                               f"versions {[(n, s) for n, s, _ in vs]}")
                if i >= RECOVER_BOUNDARIES.index("after-add"):
                    if not any(rotlib.opens(lab, p) for _, s2, p in vs if s2 in ("", "current", "pending")):
                        bad.append("the password added to the DMK is not in the store")
                if i >= RECOVER_BOUNDARIES.index("after-register"):
                    bad += rotlib.decrypts_everywhere(lab, [0, 1, 2])
                return bad + finish(lab, "recover")
            cell("recover", f"kill {b}", kill)

        def kill_after_failover():
            bad = reset_unknown(lab)
            names = [x["name"] for x in lab.sql_ready["nodes"]]
            lab.failover(1)             # node 1's SMK does not open the DMK
            if [r[0] for r in lab.check_query() if r[0]]:
                bad.append("node 1 opens the DMK by itself: no failover to test")
            bad += kill_at(lab, "recover", "after-failover")
            primary = lab.control("/status")["primary"]
            if primary == names[1]:
                bad.append("recover was killed after its failover, but node 1 is still primary")
            if rotlib.store_versions(lab):
                bad.append("recover wrote to the store before it found a node that opens")
            return bad + finish(lab, "recover")
        cell("recover", "kill after-failover", kill_after_failover)


def reset_unknown(lab):
    """Make the DMK's password unknown for real, as the recover lab began:
    every password the store holds is dropped from the DMK (on the primary,
    whose service master key opens it) and its credential from every
    replica, the store's reference is deleted (metadata and every version),
    and dmkagent's record of what it registered goes.  Returns problems if
    the state is not that: the store empty, no credential of the DMK's
    family anywhere, only the unknown password on the DMK, the primary
    decrypting by its SMK alone."""
    import ssl
    import urllib.request
    bad = []
    names = [x["name"] for x in lab.sql_ready["nodes"]]
    st = lab.control("/status")
    smk = [e["smk_node"] for e in st["databases"][rotlib.DB]["dmk_encryptions"] if e["kind"] == "smk"]
    if not smk:
        return ["no node's service master key opens the DMK: cannot reset"]
    if st["primary"] != smk[0]:
        lab.failover(names.index(smk[0]))
    pws = {p for _, _, p in rotlib.store_versions(lab)}
    for pw in pws:
        lit = pw.replace("'", "''")
        for n in range(lab.nodes):
            try:
                lab.query(f"EXEC sp_control_dbmasterkey_password @db_name = N'{rotlib.DB}', "
                          f"@password = N'{lit}', @action = N'drop'", node=n)
            except Exception as e:
                if "15595" not in str(e) and "not provisioned" not in str(e):
                    raise
        if rotlib.opens(lab, pw):
            lab.query(f"USE {rotlib.DB}; ALTER MASTER KEY DROP ENCRYPTION BY PASSWORD = N'{lit}'")
    ctx = ssl.create_default_context(cafile=lab.ca)
    folder, leaf = rotlib.PATH.rsplit("/", 1)

    def vault(method, path):
        req = urllib.request.Request(lab.vault.ready["address"] + f"/v1/{rotlib.KV}/metadata/{path}",
                                     method=method, headers={"X-Vault-Token": lab.root_token})
        with urllib.request.urlopen(req, timeout=20, context=ctx) as r:
            txt = r.read()
        return json.loads(txt) if txt else {}
    # The password's reference and, next to it, its escrowed backups and
    # their passwords: a backup left from the last cell would be taken for
    # this cell's (the store's newest version is "none" again).
    try:
        keys = vault("LIST", folder + "/")["data"]["keys"]
    except urllib.error.HTTPError as e:
        if e.code != 404:        # 404: nothing stored there yet
            raise
        keys = []
    for k in keys:
        if k == leaf or k.startswith(leaf + "-"):
            vault("DELETE", f"{folder}/{k}")
    try:
        os.unlink(os.path.join(lab.state_dir, "registered.json"))
    except FileNotFoundError:
        pass
    if rotlib.store_versions(lab):
        bad.append("reset: the store still holds versions")
    fam = rotlib.family_guid(lab)
    for n in range(lab.nodes):
        if rotlib.family_credentials(lab, n, fam):
            bad.append(f"reset: {names[n]} still holds a credential of the DMK's family")
    if rotlib.dmk_password_encryptions(lab) != 1:
        bad.append(f"reset: the DMK has {rotlib.dmk_password_encryptions(lab)} passwords, "
                   f"want 1 (the unknown one)")
    if [r[0] for r in lab.check_query()] != lab.known_plaintext:
        bad.append("reset: the primary does not decrypt by its service master key")
    return bad


def want(group):
    only = os.environ.get("DMKAGENT_MATRIX")
    return not only or group in only.split(",")


def main():
    if not rotlib.have_pytds():
        print("python3-tds missing: skipped")
        return 77
    if not rotlib.have_failpoints():
        from tests.sim.common.harness import failpoints_expected
        if failpoints_expected():
            print("dmkagent has no failpoints, though this build is meant to: FAILED")
            return 1
        print("dmkagent built without -Dfailpoints=true (use build-test/): skipped")
        return 77
    t0 = time.time()
    with Lab(nodes=3) as lab:
        lab.put_dmk_password()
        rc, out, err = lab.agent("register")
        if rc != 0:
            print("register failed", out, err)
            return 1
        rotlib.remember_plaintext(lab)
        try:
            if want("rotate"):
                rotate_group(lab)
            if want("sql"):
                sql_group(lab)
            if want("backup"):
                backup_config(lab)
                backup_group(lab)
        finally:
            clean_faults(lab)
    if want("regenerate"):
        try:
            regenerate_group()
        except Exception as e:
            results.append(("regenerate", "setup", False, repr(e), 0))
    if want("recover"):
        try:
            recover_group()
        except Exception as e:
            results.append(("recover", "setup", False, repr(e), 0))
    passed = sum(1 for r in results if r[2])
    print(f"\n{'group':12} {'cell':44} {'result':6} secs")
    for g, n, ok, d, dt in results:
        print(f"{g:12} {n:44} {'pass' if ok else 'FAIL':6} {dt:5.1f}" + ("" if ok else f"  {d[:300]}"))
    for sk in skipped:
        print(f"not run: {sk}")
    print(f"\ncells passed/total: {passed}/{len(results)} in {time.time() - t0:.0f}s")
    return 0 if passed == len(results) and results else 1


if __name__ == "__main__":
    sys.exit(main())
