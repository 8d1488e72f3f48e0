/*
 * discover.c: ask an availability group what it is made of, through a
 * session to its listener or any replica: the replicas with their roles
 * and routing URLs, the primary, the databases.
 *
 * The catalog views are read whole with fixed queries and matched on
 * group_id here, so no AG name is ever spliced into a query.  On a
 * secondary, sys.dm_hadr_availability_replica_states has only the local
 * row: the other replicas keep role "" (unknown).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/dmk.h"
#include "sql_int.h"

static const char *
str_of(const struct sql_result *r, size_t row, const char *col)
{
	const struct sql_value *v = sql_cell(r, row, col);

	return v != NULL && v->type == SQLT_STR ? v->s : "";
}

/*
 * Copy a catalog string into a fixed field.  One that does not fit is
 * refused, never cut: a cut replica or database name is another name.
 */
static int
take(char *dst, size_t size, const struct sql_result *r, size_t row, const char *col,
    const char *who, struct dmk_err *err)
{
	const char *v = str_of(r, row, col);
	size_t n = strlen(v);

	if (n >= size)
		return dmk_errf(err, DMK_ERR_PROTOCOL, "%s: the catalog's %s is %zu bytes long "
		    "(at most %zu here)", who, col, n, size - 1);
	memcpy(dst, v, n + 1);
	return 0;
}

static long long
int_of(const struct sql_result *r, size_t row, const char *col, long long dflt)
{
	const struct sql_value *v = sql_cell(r, row, col);

	return v != NULL && v->type == SQLT_INT ? v->i : dflt;
}

void
sql_ag_free(struct sql_ag *ag)
{
	if (ag == NULL)
		return;
	free(ag->replicas);
	free(ag->databases);
	ag->replicas = NULL;
	ag->databases = NULL;
	ag->nreplicas = ag->ndatabases = 0;
}

/* The catalog reads of discovery: fixed text, no data in it. */
#define Q_AGS "SELECT group_id, name FROM sys.availability_groups"
#define Q_REPS "SELECT replica_id, group_id, replica_server_name, endpoint_url, " \
	"read_only_routing_url, secondary_role_allow_connections FROM sys.availability_replicas"
#define Q_STATES "SELECT replica_id, group_id, role_desc, connected_state, " \
	"synchronization_health_desc FROM sys.dm_hadr_availability_replica_states"
#define Q_GSTATES "SELECT group_id, primary_replica FROM sys.dm_hadr_availability_group_states"
#define Q_DBS "SELECT group_id, database_name FROM sys.availability_databases_cluster"

int
sql_ag_from_rows(const char *who, const char *ag_name, const struct sql_result *ags,
    const struct sql_result *reps, const struct sql_result *states,
    const struct sql_result *gstates, const struct sql_result *dbs, struct sql_ag *out,
    struct dmk_err *err)
{
	char (*ids)[40] = NULL;   /* replica_id per replica */
	size_t i, j, found = SIZE_MAX, n;
	int rc;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < ags->nrows; i++) {
		if (ag_name != NULL && *ag_name != '\0' &&
		    strcasecmp(str_of(ags, i, "name"), ag_name) != 0)
			continue;
		if (found != SIZE_MAX) {
			rc = dmk_errf(err, DMK_ERR_CONFIG, "%s: more than one availability group here; "
			    "name the one to use", who);
			goto out;
		}
		found = i;
	}
	if (found == SIZE_MAX) {
		if (ag_name != NULL && *ag_name != '\0')
			rc = dmk_errf(err, DMK_ERR_NOTFOUND, "%s: no availability group named '%s'",
			    who, ag_name);
		else
			rc = dmk_errf(err, DMK_ERR_NOTFOUND, "%s: this server is in no availability group",
			    who);
		goto out;
	}
	if ((rc = take(out->name, sizeof(out->name), ags, found, "name", who, err)) != 0 ||
	    (rc = take(out->group_id, sizeof(out->group_id), ags, found, "group_id", who, err)) != 0)
		goto out;

	if ((out->replicas = calloc(reps->nrows + 1, sizeof(*out->replicas))) == NULL ||
	    (ids = calloc(reps->nrows + 1, sizeof(*ids))) == NULL) {
		rc = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < reps->nrows; i++) {
		struct sql_replica *r;

		if (strcasecmp(str_of(reps, i, "group_id"), out->group_id) != 0)
			continue;
		r = &out->replicas[out->nreplicas];
		if ((rc = take(ids[out->nreplicas], sizeof(ids[0]), reps, i, "replica_id", who,
		    err)) != 0 ||
		    (rc = take(r->name, sizeof(r->name), reps, i, "replica_server_name", who, err)) != 0 ||
		    (rc = take(r->endpoint_url, sizeof(r->endpoint_url), reps, i, "endpoint_url", who,
		    err)) != 0 ||
		    (rc = take(r->routing_url, sizeof(r->routing_url), reps, i,
		    "read_only_routing_url", who, err)) != 0)
			goto out;
		r->secondary_allow = (int)int_of(reps, i, "secondary_role_allow_connections", 0);
		out->nreplicas++;
	}
	if (out->nreplicas == 0) {
		rc = dmk_errf(err, DMK_ERR_PROTOCOL, "%s: availability group '%s' lists no replicas",
		    who, out->name);
		goto out;
	}

	for (i = 0; i < states->nrows; i++)
		for (j = 0; j < out->nreplicas; j++) {
			struct sql_replica *r = &out->replicas[j];

			if (strcasecmp(str_of(states, i, "replica_id"), ids[j]) != 0)
				continue;
			if ((rc = take(r->role, sizeof(r->role), states, i, "role_desc", who,
			    err)) != 0 || (rc = take(r->sync_health, sizeof(r->sync_health), states,
			    i, "synchronization_health_desc", who, err)) != 0)
				goto out;
			r->connected = int_of(states, i, "connected_state", 0) == 1;
		}

	for (i = 0; i < gstates->nrows; i++)
		if (strcasecmp(str_of(gstates, i, "group_id"), out->group_id) == 0 &&
		    (rc = take(out->primary, sizeof(out->primary), gstates, i, "primary_replica", who,
		    err)) != 0)
			goto out;
	if (out->primary[0] == '\0')
		for (j = 0; j < out->nreplicas; j++)
			if (strcasecmp(out->replicas[j].role, "PRIMARY") == 0)
				util_strlcpy(out->primary, out->replicas[j].name, sizeof(out->primary));

	if ((out->databases = calloc(dbs->nrows + 1, sizeof(*out->databases))) == NULL) {
		rc = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (i = n = 0; i < dbs->nrows; i++)
		if (strcasecmp(str_of(dbs, i, "group_id"), out->group_id) == 0 &&
		    (rc = take(out->databases[n++], sizeof(out->databases[0]), dbs, i,
		    "database_name", who, err)) != 0)
			goto out;
	out->ndatabases = n;
	rc = 0;
out:
	if (rc != 0)
		sql_ag_free(out);
	free(ids);
	return rc;
}

#define Q_ALL Q_AGS ";\n" Q_REPS ";\n" Q_STATES ";\n" Q_GSTATES ";\n" Q_DBS ";\n"

int
sql_add_discovery(struct sql_stmt *st, struct dmk_err *err)
{
	sql_stmt_raw(st, Q_ALL);
	return sql_stmt_error(st, err);
}

int
sql_discovery_from_sets(struct sql_session *s, const char *ag_name,
    struct sql_result *const *sets, size_t nsets, struct sql_ag *out, struct dmk_err *err)
{
	memset(out, 0, sizeof(*out));
	if (nsets < 5)
		return dmk_errf(err, DMK_ERR_PROTOCOL, "%s: discovery answered %zu result sets, "
		    "not 5", sql_session_name(s), nsets);
	return sql_ag_from_rows(sql_session_name(s), ag_name, sets[0], sets[1], sets[2], sets[3],
	    sets[4], out, err);
}

int
sql_discover_ag(struct sql_session *s, const char *ag_name, struct sql_ag *out,
    struct dmk_err *err)
{
	static const char *const q[5] = { Q_AGS, Q_REPS, Q_STATES, Q_GSTATES, Q_DBS };
	struct sql_result *rs[5] = { NULL, NULL, NULL, NULL, NULL };
	size_t i;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	sql_session_perm_hint(s, "discovery needs VIEW SERVER STATE and VIEW ANY DEFINITION");
	/* All five in one round trip; on any error, one by one for a precise message. */
	{
		struct sql_stmt *st = sql_stmt_new();
		struct sql_result **sets = NULL;
		struct dmk_err e2;
		size_t ns = 0;

		if (st != NULL && sql_stmt_raw(st, Q_ALL) == 0 && sql_exec_sets(s, st, &sets, &ns,
		    &e2) == 0) {
			if (ns == 5 && sql_call_errors(s, NULL, 0) == 0) {
				for (i = 0; i < 5; i++)
					rs[i] = sets[i];
				free(sets);
			} else
				sql_sets_free(sets, ns);
		}
		sql_stmt_free(st);
	}
	for (i = 0; i < 5 && rc == 0; i++)
		if (rs[i] == NULL)
			rc = sql_query(s, q[i], &rs[i], err);
	if (rc == 0)
		rc = sql_ag_from_rows(sql_session_name(s), ag_name, rs[0], rs[1], rs[2], rs[3],
		    rs[4], out, err);
	sql_session_perm_hint(s, NULL);
	for (i = 0; i < 5; i++)
		sql_result_free(rs[i]);
	return rc;
}

/* A host name's characters (letters, digits, '.', '-', '_'), or an IPv6
 * literal's inside brackets; n bytes at h. */
static int
host_ok(const char *h, size_t n, int v6)
{
	size_t i;

	if (n == 0)
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)h[i];

		if (v6 ? !(isxdigit(c) || c == ':' || c == '.') :
		    !(isalnum(c) || c == '.' || c == '-' || c == '_'))
			return 0;
	}
	return 1;
}

/* "NNNNN" then the end or '/': 1..65535. */
static int
port_of(const char *p, int *port)
{
	long v = 0;
	int nd = 0;

	while (isdigit((unsigned char)*p) && nd < 6) {
		v = v * 10 + (*p++ - '0');
		nd++;
	}
	if (nd == 0 || nd > 5 || (*p != '\0' && *p != '/') || v < 1 || v > 65535)
		return -1;
	*port = (int)v;
	return 0;
}

/*
 * The routing URL is catalog data (anyone who can ALTER AVAILABILITY GROUP
 * writes it): TCP://host[:port][/...] with a plain host name or a
 * bracketed IPv6 literal, nothing else; a host that does not fit hostlen
 * is refused, never cut.
 */
int
sql_replica_address(const struct sql_replica *r, char *host, size_t hostlen, int *port)
{
	const char *u = r->routing_url, *h, *after;
	size_t n;
	int p = 1433, v6 = 0;

	if (strncasecmp(u, "tcp://", 6) == 0) {
		h = u + 6;
		if (*h == '[') {
			h++;
			n = strcspn(h, "]");
			if (h[n] != ']')
				return DMK_ERR_BADINPUT;
			after = h + n + 1;
			v6 = 1;
		} else {
			n = strcspn(h, ":/");
			after = h + n;
		}
		if (*after == ':') {
			if (port_of(after + 1, &p) != 0)
				return DMK_ERR_BADINPUT;
		} else if (*after != '\0' && *after != '/')
			return DMK_ERR_BADINPUT;
		if (!host_ok(h, n, v6) || n >= hostlen)
			return DMK_ERR_BADINPUT;
		memcpy(host, h, n);
		host[n] = '\0';
		*port = p;
		return 0;
	}
	if (u[0] != '\0')
		return DMK_ERR_BADINPUT;   /* a routing URL, but not one we understand */
	/* No routing URL: the server name (a named instance's "\INST" dropped)
	 * on the default port; the agent applies configured overrides first. */
	n = strcspn(r->name, "\\");
	if (!host_ok(r->name, n, 0) || n >= hostlen)
		return DMK_ERR_BADINPUT;
	memcpy(host, r->name, n);
	host[n] = '\0';
	*port = 1433;
	return 0;
}
