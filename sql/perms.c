/*
 * perms.c: what the login may do, asked without doing it: one SELECT of
 * HAS_PERMS_BY_NAME per permission (doctor).  Reads only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "sql_int.h"

/* Columns per SELECT: keeps a statement far below any batch limit. */
#define PERMS_PER_SELECT 64

int
sql_has_perms(struct sql_session *s, struct sql_perm *p, size_t n, struct dmk_err *err)
{
	struct sql_result *res = NULL;
	struct sql_stmt *st;
	size_t i, k, m;
	char col[16];
	int r = 0;

	for (i = 0; i < n; i++)
		p[i].have = -1;
	for (i = 0; i < n && r == 0; i += m) {
		m = n - i < PERMS_PER_SELECT ? n - i : PERMS_PER_SELECT;
		st = sql_stmt_new();
		sql_stmt_raw(st, "SELECT ");
		for (k = 0; k < m; k++) {
			const struct sql_perm *q = &p[i + k];
			if (k > 0)
				sql_stmt_raw(st, ", ");
			sql_stmt_raw(st, "HAS_PERMS_BY_NAME(");
			/* the server itself: securable and class NULL (as the docs say) */
			if (q->securable == NULL)
				sql_stmt_raw(st, "NULL, NULL, ");
			else {
				sql_stmt_nstr(st, q->securable, err);
				sql_stmt_raw(st, ", ");
				sql_stmt_nstr(st, q->cls, err);
				sql_stmt_raw(st, ", ");
			}
			sql_stmt_nstr(st, q->permission, err);
			sql_stmt_raw(st, ") AS p");
			sql_stmt_int(st, (long long)k);
		}
		if ((r = sql_exec_once(s, st, "reading the login's permissions", &res, err)) != 0)
			break;
		for (k = 0; k < m && res != NULL && res->nrows > 0; k++) {
			const struct sql_value *v;
			snprintf(col, sizeof(col), "p%zu", k);
			if ((v = sql_cell(res, 0, col)) != NULL && v->type == SQLT_INT)
				p[i + k].have = v->i != 0;
		}
		sql_result_free(res);
		res = NULL;
	}
	return r;
}
