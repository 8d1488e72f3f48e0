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
	util_strlcpy(out->name, str_of(ags, found, "name"), sizeof(out->name));
	util_strlcpy(out->group_id, str_of(ags, found, "group_id"), sizeof(out->group_id));

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
		util_strlcpy(ids[out->nreplicas], str_of(reps, i, "replica_id"), sizeof(ids[0]));
		util_strlcpy(r->name, str_of(reps, i, "replica_server_name"), sizeof(r->name));
		util_strlcpy(r->endpoint_url, str_of(reps, i, "endpoint_url"), sizeof(r->endpoint_url));
		util_strlcpy(r->routing_url, str_of(reps, i, "read_only_routing_url"),
		    sizeof(r->routing_url));
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
			util_strlcpy(r->role, str_of(states, i, "role_desc"), sizeof(r->role));
			util_strlcpy(r->sync_health, str_of(states, i, "synchronization_health_desc"),
			    sizeof(r->sync_health));
			r->connected = int_of(states, i, "connected_state", 0) == 1;
		}

	for (i = 0; i < gstates->nrows; i++)
		if (strcasecmp(str_of(gstates, i, "group_id"), out->group_id) == 0)
			util_strlcpy(out->primary, str_of(gstates, i, "primary_replica"),
			    sizeof(out->primary));
	if (out->primary[0] == '\0')
		for (j = 0; j < out->nreplicas; j++)
			if (strcasecmp(out->replicas[j].role, "PRIMARY") == 0)
				util_strlcpy(out->primary, out->replicas[j].name, sizeof(out->primary));

	if ((out->databases = calloc(dbs->nrows + 1, sizeof(*out->databases))) == NULL) {
		rc = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (i = n = 0; i < dbs->nrows; i++)
		if (strcasecmp(str_of(dbs, i, "group_id"), out->group_id) == 0)
			util_strlcpy(out->databases[n++], str_of(dbs, i, "database_name"),
			    sizeof(out->databases[0]));
	out->ndatabases = n;
	rc = 0;
out:
	if (rc != 0)
		sql_ag_free(out);
	free(ids);
	return rc;
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

		if (st != NULL && sql_stmt_raw(st, Q_AGS ";\n" Q_REPS ";\n" Q_STATES ";\n" Q_GSTATES
		    ";\n" Q_DBS ";\n") == 0 && sql_exec_sets(s, st, &sets, &ns, &e2) == 0) {
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

int
sql_replica_address(const struct sql_replica *r, char *host, size_t hostlen, int *port)
{
	const char *u = r->routing_url, *h, *colon, *end;
	char *e;
	long p;
	size_t n;

	if (strncasecmp(u, "tcp://", 6) == 0) {
		h = u + 6;
		if (*h == '[') {
			end = strchr(h, ']');
			if (end == NULL)
				return DMK_ERR_BADINPUT;
			colon = end[1] == ':' ? end + 1 : NULL;
			h++;
			n = (size_t)(end - h);
		} else {
			colon = strrchr(h, ':');
			n = colon ? (size_t)(colon - h) : strlen(h);
		}
		p = 1433;
		if (colon != NULL) {
			p = strtol(colon + 1, &e, 10);
			if (e == colon + 1 || (*e != '\0' && *e != '/') || p <= 0 || p > 65535)
				return DMK_ERR_BADINPUT;
		}
		if (n == 0 || n >= hostlen)
			return DMK_ERR_BADINPUT;
		memcpy(host, h, n);
		host[n] = '\0';
		*port = (int)p;
		return 0;
	}
	/* No routing URL: the server name (a named instance's "\INST" dropped)
	 * on the default port; the agent applies configured overrides first. */
	n = strcspn(r->name, "\\");
	if (n == 0 || n >= hostlen)
		return DMK_ERR_BADINPUT;
	memcpy(host, r->name, n);
	host[n] = '\0';
	*port = 1433;
	return 0;
}
