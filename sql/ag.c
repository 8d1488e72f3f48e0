/*
 * ag.c: the availability-group statements the agent sends besides
 * discovery (discover.c): a planned failover to the connected replica and
 * the poll of its role.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "sql_int.h"

int
sql_ag_failover(struct sql_session *s, const char *ag, struct dmk_err *err)
{
	struct sql_stmt *st = sql_stmt_new();

	sql_stmt_raw(st, "ALTER AVAILABILITY GROUP ");
	sql_stmt_ident(st, ag, err);
	sql_stmt_raw(st, " FAILOVER");
	return sql_exec_once(s, st, NULL, NULL, err);
}

int
sql_local_role(struct sql_session *s, char *out, size_t outlen, struct dmk_err *err)
{
	struct sql_result *res = NULL;
	const struct sql_value *v;
	int r;

	if (outlen > 0)
		out[0] = '\0';
	if ((r = sql_query(s, "SELECT role_desc FROM sys.dm_hadr_availability_replica_states "
	    "WHERE is_local = 1", &res, err)) == 0 && res != NULL && res->nrows > 0 &&
	    (v = sql_cell(res, 0, "role_desc")) != NULL && v->type == SQLT_STR)
		util_strlcpy(out, v->s, outlen);
	sql_result_free(res);
	return r;
}
