"""Catalog views and DMVs: each returns (columns, rows); columns are (name, 'type(size)')."""
import base64
import datetime
import hashlib
import uuid

from .state import SYSTEM_DBS


def _dt(s):
    if s is None:
        return None
    if isinstance(s, datetime.datetime):
        return s
    return datetime.datetime.fromisoformat(s)


def _g(s):
    return None if s is None else uuid.UUID(s)


SERVER_SCOPED = {
    "databases", "credentials", "master_key_passwords", "database_recovery_status", "availability_groups",
    "availability_replicas", "dm_hadr_availability_replica_states", "dm_hadr_database_replica_states",
    "availability_databases_cluster", "dm_hadr_availability_group_states", "availability_group_listeners",
    "server_principals", "sql_logins", "server_permissions", "server_role_members", "openkeys",
    "dm_exec_sessions", "dm_exec_connections",
}


def view(ex, name, db):
    """ex: the Executor (session, node, state); db: the database dict for database-scoped views."""
    fn = globals().get("v_" + name)
    if fn is None:
        return None
    if name.startswith("dm_") and name != "dm_exec_sessions" and not ex.server_perm("VIEW SERVER STATE"):
        from .errors import SqlError
        raise SqlError(300, "VIEW SERVER STATE", "server", "master")
    return fn(ex, db)


def v_databases(ex, db):
    cols = [("name", "sysname"), ("database_id", "int"), ("source_database_id", "int"), ("owner_sid", "varbinary(85)"),
            ("create_date", "datetime"), ("compatibility_level", "tinyint"), ("collation_name", "sysname"),
            ("user_access", "tinyint"), ("user_access_desc", "nvarchar(60)"), ("is_read_only", "bit"),
            ("state", "tinyint"), ("state_desc", "nvarchar(60)"), ("recovery_model", "tinyint"),
            ("recovery_model_desc", "nvarchar(60)"), ("is_master_key_encrypted_by_server", "bit"),
            ("is_encrypted", "bit"), ("replica_id", "uniqueidentifier"), ("group_database_id", "uniqueidentifier")]
    rows = []
    for d in ex.all_databases():
        ag = ex.is_ag_db(d)
        dmk = d.get("dmk")
        by_smk = bool(dmk and any(e["kind"] == "smk" for e in dmk["encryptions"]))
        rows.append([d["name"], d["database_id"], None, b"\x01", _dt(d["create_date"]), 150,
                     "SQL_Latin1_General_CP1_CI_AS", 0, "MULTI_USER", False, 0, "ONLINE",
                     1 if ag else 3, "FULL" if ag else "SIMPLE", by_smk, False,
                     _g(ex.local_replica()["replica_id"]) if ag else None,
                     _g(d.get("group_database_id")) if ag else None])
    return cols, rows


def v_symmetric_keys(ex, db):
    cols = [("name", "sysname"), ("principal_id", "int"), ("symmetric_key_id", "int"), ("key_length", "int"),
            ("key_algorithm", "char(2)"), ("algorithm_desc", "nvarchar(60)"), ("create_date", "datetime"),
            ("modify_date", "datetime"), ("key_guid", "uniqueidentifier"), ("key_thumbprint", "varbinary(32)"),
            ("provider_type", "nvarchar(120)"), ("cryptographic_provider_guid", "uniqueidentifier"),
            ("cryptographic_provider_algid", "varbinary(8000)")]
    rows = []
    if db["name"] == "master":
        smk = ex.node.d["smk"]
        rows.append(["##MS_ServiceMasterKey##", 1, 102, 256, "A3", "AES_256", _dt(smk["create_date"]),
                     _dt(smk["create_date"]), _g(smk["key_guid"]), None, None, None, None])
    dmk = db.get("dmk")
    if dmk:
        rows.append(["##MS_DatabaseMasterKey##", 1, 101, 256, "A3", "AES_256", _dt(dmk["create_date"]),
                     _dt(dmk["modify_date"]), _g(dmk["key_guid"]), None, None, None, None])
    return cols, rows


def v_key_encryptions(ex, db):
    cols = [("key_id", "int"), ("thumbprint", "varbinary(32)"), ("crypt_type", "char(4)"),
            ("crypt_type_desc", "nvarchar(60)"), ("crypt_property", "varbinary(max)")]
    rows = []
    dmk = db.get("dmk")
    if dmk:
        for e in dmk["encryptions"]:
            if e["kind"] == "smk":
                rows.append([101, None, "ESKM", "ENCRYPTION BY MASTER KEY",
                             hashlib.sha256((dmk["material"] + e["smk"]).encode()).digest()])
            else:
                rows.append([101, None, "ESP2", "ENCRYPTION BY PASSWORD V2",
                             bytes.fromhex(e["hash"]) + bytes.fromhex(e["salt"])])
    return cols, rows


def v_certificates(ex, db):
    cols = [("name", "sysname"), ("certificate_id", "int"), ("principal_id", "int"),
            ("pvt_key_encryption_type", "char(2)"), ("pvt_key_encryption_type_desc", "nvarchar(60)"),
            ("is_active_for_begin_dialog", "bit"), ("issuer_name", "nvarchar(442)"),
            ("cert_serial_number", "nvarchar(64)"), ("sid", "varbinary(85)"), ("string_sid", "nvarchar(128)"),
            ("subject", "nvarchar(4000)"), ("expiry_date", "datetime"), ("start_date", "datetime"),
            ("thumbprint", "varbinary(32)"), ("attested_by", "nvarchar(260)"),
            ("pvt_key_last_backup_date", "datetime"), ("key_length", "int")]
    rows = []
    for name, c in sorted(db["certificates"].items(), key=lambda kv: kv[1]["certificate_id"]):
        p = c.get("prot")
        t, desc = ("NA", "NO_PRIVATE_KEY") if not p else \
            (("MK", "ENCRYPTED_BY_MASTER_KEY") if p["kind"] == "MK" else ("PW", "ENCRYPTED_BY_PASSWORD"))
        sid = b"\x01\x06\x00\x00\x00\x00\x00\x09\x01\x00\x00\x00" + bytes.fromhex(c["thumbprint"])
        serial = " ".join(c["serial"][i:i + 2] for i in range(0, len(c["serial"]), 2))
        rows.append([name, c["certificate_id"], c["principal_id"], t, desc, True, c["issuer"], serial, sid,
                     "S-1-9-1-" + str(int(c["thumbprint"][:8], 16)), c["subject"], _dt(c["expiry"]),
                     _dt(c["start"]), bytes.fromhex(c["thumbprint"]), None, _dt(c.get("backup_date")),
                     c["key_length"]])
    return cols, rows


def v_credentials(ex, db):
    cols = [("credential_id", "int"), ("name", "sysname"), ("credential_identity", "nvarchar(4000)"),
            ("create_date", "datetime"), ("modify_date", "datetime"), ("target_type", "nvarchar(100)"),
            ("target_id", "int")]
    rows = []
    if ex.server_perm("VIEW ANY DEFINITION") or ex.server_perm("ALTER ANY CREDENTIAL"):
        for cid, c in sorted(ex.node.d["credentials"].items(), key=lambda kv: int(kv[0])):
            rows.append([int(cid), c["name"], c["identity"], _dt(c["create_date"]), _dt(c["create_date"]), None, 0])
    return cols, rows


def v_master_key_passwords(ex, db):
    cols = [("credential_id", "int"), ("family_guid", "uniqueidentifier")]
    rows = []
    if ex.server_perm("VIEW ANY DEFINITION") or ex.server_perm("ALTER ANY CREDENTIAL"):
        for cid, c in sorted(ex.node.d["credentials"].items(), key=lambda kv: int(kv[0])):
            if c.get("family_guid"):
                rows.append([int(cid), _g(c["family_guid"])])
    return cols, rows


def v_database_recovery_status(ex, db):
    cols = [("database_id", "int"), ("database_guid", "uniqueidentifier"), ("family_guid", "uniqueidentifier"),
            ("last_log_backup_lsn", "bigint"), ("recovery_fork_guid", "uniqueidentifier"),
            ("first_recovery_fork_guid", "uniqueidentifier"), ("fork_point_lsn", "bigint")]
    rows = []
    for d in ex.all_databases():
        if d["name"] == "tempdb":
            continue
        rows.append([d["database_id"], _g(d["database_guid"]), _g(d["family_guid"]), None,
                     _g(d["family_guid"]), _g(d["family_guid"]), None])
    return cols, rows


def v_availability_groups(ex, db):
    ag = ex.state.ag
    cols = [("group_id", "uniqueidentifier"), ("name", "sysname"), ("resource_id", "nvarchar(40)"),
            ("resource_group_id", "nvarchar(40)"), ("failure_condition_level", "int"),
            ("health_check_timeout", "int"), ("automated_backup_preference", "tinyint"),
            ("automated_backup_preference_desc", "nvarchar(60)"), ("version", "smallint"),
            ("basic_features", "bit"), ("dtc_support", "bit"), ("db_failover", "bit"), ("is_distributed", "bit"),
            ("cluster_type", "tinyint"), ("cluster_type_desc", "nvarchar(60)"),
            ("required_synchronized_secondaries_to_commit", "int"), ("sequence_number", "bigint"),
            ("is_contained", "bit")]
    return cols, [[_g(ag["group_id"]), ag["name"], ag["resource_id"].lower(), ag["resource_id"].lower(), 3, 30000,
                   2, "SECONDARY", 1, False, False, True, False, 0, "WSFC", 0, ag.get("sequence", 1), False]]


def _allow(ex):
    r = ex.state.ag["readable"]
    return {"no": (0, "NO"), "read_only": (1, "READ_ONLY"), "all": (2, "ALL")}[r]


def v_availability_replicas(ex, db):
    ag = ex.state.ag
    cols = [("replica_id", "uniqueidentifier"), ("group_id", "uniqueidentifier"), ("replica_metadata_id", "int"),
            ("replica_server_name", "nvarchar(256)"), ("owner_sid", "varbinary(85)"),
            ("endpoint_url", "nvarchar(128)"), ("availability_mode", "tinyint"),
            ("availability_mode_desc", "nvarchar(60)"), ("failover_mode", "tinyint"),
            ("failover_mode_desc", "nvarchar(60)"), ("session_timeout", "int"),
            ("primary_role_allow_connections", "tinyint"), ("primary_role_allow_connections_desc", "nvarchar(60)"),
            ("secondary_role_allow_connections", "tinyint"),
            ("secondary_role_allow_connections_desc", "nvarchar(60)"), ("create_date", "datetime"),
            ("modify_date", "datetime"), ("backup_priority", "int"), ("read_only_routing_url", "nvarchar(256)"),
            ("seeding_mode", "tinyint"), ("seeding_mode_desc", "nvarchar(60)"),
            ("read_write_routing_url", "nvarchar(256)")]
    rows = []
    a, ad = _allow(ex)
    routing = "no-routing-urls" not in ex.server.shapes
    for i, r in enumerate(ag["replicas"]):
        rows.append([_g(r["replica_id"]), _g(ag["group_id"]), 65536 + i, r["name"], b"\x01",
                     f"TCP://{r['name'].lower()}.sim.local:5022", 1, "SYNCHRONOUS_COMMIT", 0, "AUTOMATIC", 10, 2,
                     "ALL", a, ad, _dt(ag["create_date"]), _dt(ag["create_date"]), 50,
                     f"TCP://127.0.0.1:{ex.state.base_port + i}" if routing else None, 1, "AUTOMATIC", None])
    return cols, rows


def _replica_visible(ex, i):
    return ex.node.idx == ex.state.ag["primary"] or i == ex.node.idx


def v_dm_hadr_availability_replica_states(ex, db):
    ag = ex.state.ag
    cols = [("replica_id", "uniqueidentifier"), ("group_id", "uniqueidentifier"), ("is_local", "bit"),
            ("role", "tinyint"), ("role_desc", "nvarchar(60)"), ("operational_state", "tinyint"),
            ("operational_state_desc", "nvarchar(60)"), ("connected_state", "tinyint"),
            ("connected_state_desc", "nvarchar(60)"), ("recovery_health", "tinyint"),
            ("recovery_health_desc", "nvarchar(60)"), ("synchronization_health", "tinyint"),
            ("synchronization_health_desc", "nvarchar(60)"), ("last_connect_error_number", "int"),
            ("last_connect_error_description", "nvarchar(1024)"), ("last_connect_error_timestamp", "datetime")]
    rows = []
    for i, r in enumerate(ag["replicas"]):
        if not _replica_visible(ex, i):
            continue
        prim = i == ag["primary"]
        up = ex.state.nodes[i].up
        local = i == ex.node.idx
        # SQL Server: a remote replica the primary cannot reach has role NULL ("not local and
        # disconnected"), not its last known role
        norole = not up and not local and "null-role-disconnected" in ex.server.shapes
        rows.append([_g(r["replica_id"]), _g(ag["group_id"]), local, None if norole else 1 if prim else 2,
                     None if norole else "PRIMARY" if prim else "SECONDARY",
                     (2 if up else 4) if local else None, ("ONLINE" if up else "OFFLINE") if local else None,
                     1 if up else 0, "CONNECTED" if up else "DISCONNECTED",
                     1 if local else None, "ONLINE" if local else None,
                     2 if up else 0, "HEALTHY" if up else "NOT_HEALTHY", None, None, None])
    return cols, rows


def v_dm_hadr_availability_group_states(ex, db):
    ag = ex.state.ag
    cols = [("group_id", "uniqueidentifier"), ("primary_replica", "varchar(128)"),
            ("primary_recovery_health", "tinyint"), ("primary_recovery_health_desc", "nvarchar(60)"),
            ("secondary_recovery_health", "tinyint"), ("secondary_recovery_health_desc", "nvarchar(60)"),
            ("synchronization_health", "tinyint"), ("synchronization_health_desc", "nvarchar(60)")]
    allup = all(n.up for n in ex.state.nodes)
    # "NULL = Not the primary replica or unable to communicate with the WSFC failover cluster"
    prim = ag["replicas"][ag["primary"]]["name"]
    if ex.node.idx != ag["primary"] and "null-primary-on-secondary" in ex.server.shapes:
        prim = None
    return cols, [[_g(ag["group_id"]), prim, 1, "ONLINE", None, None,
                   2 if allup else 1, "HEALTHY" if allup else "PARTIALLY_HEALTHY"]]


def v_availability_databases_cluster(ex, db):
    ag = ex.state.ag
    cols = [("group_id", "uniqueidentifier"), ("group_database_id", "uniqueidentifier"),
            ("database_name", "nvarchar(128)"), ("truncation_lsn", "bigint")]
    return cols, [[_g(ag["group_id"]), _g(d["group_database_id"]), n, None]
                  for n, d in ag["databases"].items()]


def v_dm_hadr_database_replica_states(ex, db):
    ag = ex.state.ag
    cols = [("database_id", "int"), ("group_id", "uniqueidentifier"), ("replica_id", "uniqueidentifier"),
            ("group_database_id", "uniqueidentifier"), ("is_local", "bit"), ("is_primary_replica", "bit"),
            ("synchronization_state", "tinyint"), ("synchronization_state_desc", "nvarchar(60)"),
            ("is_commit_participant", "bit"), ("synchronization_health", "tinyint"),
            ("synchronization_health_desc", "nvarchar(60)"), ("database_state", "tinyint"),
            ("database_state_desc", "nvarchar(60)"), ("is_suspended", "bit"), ("suspend_reason", "tinyint"),
            ("suspend_reason_desc", "nvarchar(60)"), ("last_commit_time", "datetime")]
    rows = []
    for n, d in ag["databases"].items():
        for i, r in enumerate(ag["replicas"]):
            if not _replica_visible(ex, i):
                continue
            up = ex.state.nodes[i].up
            rows.append([d["database_id"], _g(ag["group_id"]), _g(r["replica_id"]), _g(d["group_database_id"]),
                         i == ex.node.idx, i == ag["primary"], 2 if up else 0,
                         "SYNCHRONIZED" if up else "NOT SYNCHRONIZING", True, 2 if up else 0,
                         "HEALTHY" if up else "NOT_HEALTHY", 0 if up else None, "ONLINE" if up else None,
                         False, None, None, None])
    return cols, rows


def v_availability_group_listeners(ex, db):
    ag = ex.state.ag
    cols = [("group_id", "uniqueidentifier"), ("listener_id", "nvarchar(36)"), ("dns_name", "nvarchar(63)"),
            ("port", "int"), ("is_conformant", "bit"), ("ip_configuration_string_from_cluster", "nvarchar(4000)")]
    return cols, [[_g(ag["group_id"]), ag["resource_id"].lower(), ag["name"].lower() + "-listener",
                   ex.state.base_port + len(ag["replicas"]), True, "('IP Address: 127.0.0.1')"]]


def v_server_principals(ex, db):
    cols = [("name", "sysname"), ("principal_id", "int"), ("sid", "varbinary(85)"), ("type", "char(1)"),
            ("type_desc", "nvarchar(60)"), ("is_disabled", "bit"), ("create_date", "datetime"),
            ("modify_date", "datetime"), ("default_database_name", "sysname")]
    rows = [["sysadmin", 3, b"\x03", "R", "SERVER_ROLE", False, None, None, None],
            ["public", 2, b"\x02", "R", "SERVER_ROLE", False, None, None, None]]
    for n, l in ex.node.d["logins"].items():
        rows.append([n, l["principal_id"], bytes.fromhex(l["sid"]), "S", "SQL_LOGIN", l.get("disabled", False),
                     _dt(l["create_date"]), _dt(l["create_date"]), l.get("default_database", "master")])
    return cols, rows


def v_sql_logins(ex, db):
    cols, rows = v_server_principals(ex, db)
    return cols, [r for r in rows if r[3] == "S"]


def v_server_role_members(ex, db):
    cols = [("role_principal_id", "int"), ("member_principal_id", "int")]
    return cols, [[3, l["principal_id"]] for l in ex.node.d["logins"].values() if l.get("sysadmin")]


def v_server_permissions(ex, db):
    cols = [("class", "tinyint"), ("class_desc", "nvarchar(60)"), ("major_id", "int"), ("minor_id", "int"),
            ("grantee_principal_id", "int"), ("grantor_principal_id", "int"), ("type", "char(4)"),
            ("permission_name", "nvarchar(128)"), ("state", "char(1)"), ("state_desc", "nvarchar(60)")]
    rows = []
    for l in ex.node.d["logins"].values():
        for p in l.get("perms", []):
            rows.append([100, "SERVER", 0, 0, l["principal_id"], 1, p[:4], p, "G", "GRANT"])
    return cols, rows


def v_openkeys(ex, db):
    cols = [("database_id", "int"), ("database_name", "nvarchar(128)"), ("key_id", "int"),
            ("key_name", "nvarchar(128)"), ("key_guid", "uniqueidentifier"), ("opened_date", "datetime"),
            ("status", "bit")]
    rows = []
    for dbn, (guid, when) in ex.sess.open_keys.items():
        d = ex.find_db(dbn)
        if d is None:
            continue
        ok = bool(d.get("dmk") and d["dmk"]["key_guid"] == guid)
        rows.append([d["database_id"], dbn, 101, "##MS_DatabaseMasterKey##", _g(guid), _dt(when), ok])
    return cols, rows


def v_dm_exec_sessions(ex, db):
    cols = [("session_id", "smallint"), ("login_name", "nvarchar(128)"), ("database_id", "smallint"),
            ("program_name", "nvarchar(128)"), ("host_name", "nvarchar(128)")]
    rows = []
    for s in ex.server.sessions_of(ex.node):
        d = ex.find_db(s.db)
        rows.append([s.spid, s.login, d["database_id"] if d else None, s.appname, s.hostname])
    return cols, rows


def v_database_principals(ex, db):
    cols = [("name", "sysname"), ("principal_id", "int"), ("type", "char(1)"), ("type_desc", "nvarchar(60)"),
            ("default_schema_name", "sysname"), ("create_date", "datetime"), ("modify_date", "datetime"),
            ("owning_principal_id", "int"), ("sid", "varbinary(85)"), ("is_fixed_role", "bit"),
            ("authentication_type", "int"), ("authentication_type_desc", "nvarchar(60)")]
    rows = []
    for n, p in sorted(db["principals"].items(), key=lambda kv: kv[1]["principal_id"]):
        role = p["type"] == "R"
        rows.append([n, p["principal_id"], p["type"], "DATABASE_ROLE" if role else "SQL_USER",
                     None if role else "dbo", None, None, p.get("owner") if role else None,
                     None if role else hashlib.sha1(n.encode()).digest()[:16], bool(p.get("fixed")),
                     None if role else (0 if p.get("without_login") or not p.get("login") else 1),
                     None if role else ("NONE" if p.get("without_login") or not p.get("login") else "INSTANCE")])
    return cols, rows


def v_database_permissions(ex, db):
    cols = [("class", "tinyint"), ("class_desc", "nvarchar(60)"), ("major_id", "int"), ("minor_id", "int"),
            ("grantee_principal_id", "int"), ("grantor_principal_id", "int"), ("type", "char(4)"),
            ("permission_name", "nvarchar(128)"), ("state", "char(1)"), ("state_desc", "nvarchar(60)")]
    codes = {"CONTROL": "CL", "ALTER": "AL", "REFERENCES": "RF", "VIEW DEFINITION": "VW", "TAKE OWNERSHIP": "TO",
             "CONNECT": "CO", "SELECT": "SL", "EXECUTE": "EX", "CREATE CERTIFICATE": "CRCF"}
    rows = []
    for p in db["permissions"]:
        cls = {0: "DATABASE", 25: "CERTIFICATE", 1: "OBJECT_OR_COLUMN"}.get(p["class"], "DATABASE")
        rows.append([p["class"], cls, p["major"], 0, p["grantee"], p["grantor"], codes.get(p["perm"], p["perm"][:4]),
                     p["perm"], p["state"], {"G": "GRANT", "W": "GRANT_WITH_GRANT_OPTION", "D": "DENY"}[p["state"]]])
    return cols, rows


def v_database_role_members(ex, db):
    cols = [("role_principal_id", "int"), ("member_principal_id", "int")]
    rows = []
    for role, member in db["members"]:
        if role in db["principals"] and member in db["principals"]:
            rows.append([db["principals"][role]["principal_id"], db["principals"][member]["principal_id"]])
    return cols, rows


def v_schemas(ex, db):
    cols = [("name", "sysname"), ("schema_id", "int"), ("principal_id", "int")]
    rows = [["dbo", 1, 1], ["guest", 2, 2], ["sys", 4, 4]]
    if "RecoveryAndHardwareCore" in db["principals"]:
        rows.append(["RecoveryAndHardwareCore", 5, db["principals"]["RecoveryAndHardwareCore"]["principal_id"]])
    return cols, rows


def v_objects(ex, db):
    cols = [("name", "sysname"), ("object_id", "int"), ("schema_id", "int"), ("type", "char(2)"),
            ("type_desc", "nvarchar(60)")]
    rows = []
    for i, t in enumerate(sorted(db["tables"])):
        rows.append([t, 1000 + i, 1, "U ", "USER_TABLE"])
    for i, f in enumerate(db.get("functions", [])):
        rows.append([f.split(".")[-1], 2000 + i, 5, "FN", "SQL_SCALAR_FUNCTION"])
    return cols, rows


def user_table(ex, db, name):
    t = None
    for tn, tv in db["tables"].items():
        if tn.lower() == name.lower():
            t = tv
    if t is None:
        return None
    cols = []
    for cn, ct in t["columns"]:
        cols.append((cn, {"varbinary": "varbinary(max)"}.get(ct, ct)))
    rows = []
    for r in t["rows"]:
        row = []
        for cn, ct in t["columns"]:
            v = r.get(cn)
            if v is not None:
                if ct == "varbinary":
                    v = base64.b64decode(v)
                elif ct == "uniqueidentifier":
                    v = uuid.UUID(v)
                elif ct == "datetime":
                    v = _dt(v)
            row.append(v)
        rows.append(row)
    return cols, rows


def v_dm_exec_connections(ex, db):
    """encrypt_option is TRUE only for a fully encrypted connection (login-only and none report FALSE)."""
    cols = [("session_id", "int"), ("most_recent_session_id", "int"), ("connect_time", "datetime"),
            ("net_transport", "nvarchar(40)"), ("protocol_type", "nvarchar(40)"), ("protocol_version", "int"),
            ("encrypt_option", "nvarchar(40)"), ("auth_scheme", "nvarchar(40)"), ("client_net_address", "varchar(48)"),
            ("client_tcp_port", "int"), ("local_net_address", "varchar(48)"), ("local_tcp_port", "int"),
            ("connection_id", "uniqueidentifier")]
    rows = []
    for s in ex.server.sessions_of(ex.node):
        h = getattr(s, "handler", None)
        full = bool(h is not None and h.mode == "full" and h.transport.tls is not None)
        if ex.server.faults.report_unencrypted:
            full = False
        rows.append([s.spid, s.spid, s.connect_time, "TCP", "TSQL", s.ver, "TRUE" if full else "FALSE", "SQL",
                     "127.0.0.1", s.client_port, "127.0.0.1", s.local_port, s.connection_id])
    return cols, rows
