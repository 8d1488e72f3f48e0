/*
 * fuzz_discover.c: AG discovery from catalog rows a server sends.  The
 * input is five result sets (sys.availability_groups, availability_replicas,
 * dm_hadr_availability_replica_states, dm_hadr_availability_group_states,
 * availability_databases_cluster) as text, turned into struct sql_result
 * and given to sql_ag_from_rows(); each replica found then goes through
 * sql_replica_address() (host and port from the routing URL or the server
 * name), and the last set through creds_of().
 *
 * Format: the first line is the AG name asked for ("" for none); then the
 * sets, separated by a line "--".  A set's first line is its column names,
 * the others its rows; fields are separated by '|'.  A field "#N" is an
 * integer, "~" is NULL, anything else a string.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "sql/sql_int.h"
#include "agent/replicas.h"

#define MAXCOLS 16
#define MAXROWS 64

static char *
dupn(const char *s, size_t n)
{
	char *d = malloc(n + 1);

	if (d != NULL) {
		memcpy(d, s, n);
		d[n] = '\0';
	}
	return d;
}

/* Split [p, end) at '|' into at most max fields. */
static size_t
fields(const char *p, const char *end, const char **f, size_t *fl, size_t max)
{
	size_t n = 0;

	while (n < max) {
		const char *bar = memchr(p, '|', (size_t)(end - p));
		const char *e = bar ? bar : end;

		f[n] = p;
		fl[n++] = (size_t)(e - p);
		if (bar == NULL)
			break;
		p = bar + 1;
	}
	return n;
}

/* One set from the lines in [p, end). */
static struct sql_result *
set_of(const char *p, const char *end)
{
	struct sql_result *r;
	const char *f[MAXCOLS], *nl;
	size_t fl[MAXCOLS], i, n;

	if ((r = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	nl = memchr(p, '\n', (size_t)(end - p));
	if (nl == NULL)
		nl = end;
	n = p < nl ? fields(p, nl, f, fl, MAXCOLS) : 0;
	if ((r->cols = calloc(n + 1, sizeof(*r->cols))) == NULL ||
	    (r->cells = calloc(n * MAXROWS + 1, sizeof(*r->cells))) == NULL)
		goto fail;
	for (i = 0; i < n; i++)
		if ((r->cols[r->ncols++] = dupn(f[i], fl[i])) == NULL)
			goto fail;
	p = nl < end ? nl + 1 : end;
	while (p < end && r->nrows < MAXROWS) {
		struct sql_value *row = &r->cells[r->nrows * r->ncols];

		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			nl = end;
		n = fields(p, nl, f, fl, r->ncols);
		r->nrows++;
		for (i = 0; i < n; i++) {
			if (fl[i] == 1 && f[i][0] == '~')
				continue;
			if (fl[i] > 0 && f[i][0] == '#') {
				row[i].type = SQLT_INT;
				row[i].i = strtoll(f[i] + 1, NULL, 10);  /* stops at the NUL we hold in data */
				continue;
			}
			row[i].type = SQLT_STR;
			if ((row[i].s = dupn(f[i], fl[i])) == NULL)
				goto fail;
			row[i].len = fl[i];
		}
		p = nl < end ? nl + 1 : end;
	}
	return r;
fail:
	sql_result_free(r);
	return NULL;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sql_result *rs[5] = { NULL, NULL, NULL, NULL, NULL };
	const char *p, *end, *nl, *sep;
	char *buf, *agname = NULL, names[8][160], host[256];
	struct sql_ag ag;
	struct dmk_err err;
	size_t i, k;
	int port;

	/* NUL-terminated, so that strtoll() stops inside the input. */
	if ((buf = dupn((const char *)data, size)) == NULL)
		return 0;
	p = buf;
	end = buf + size;
	nl = memchr(p, '\n', size);
	if (nl == NULL)
		nl = end;
	if (nl > p && (agname = dupn(p, (size_t)(nl - p))) == NULL)
		goto out;
	p = nl < end ? nl + 1 : end;
	for (k = 0; k < 5; k++) {
		sep = NULL;
		for (const char *q = p; q + 2 <= end; q++)
			if ((q == p || q[-1] == '\n') && q[0] == '-' && q[1] == '-' &&
			    (q + 2 == end || q[2] == '\n')) {
				sep = q;
				break;
			}
		if ((rs[k] = set_of(p, sep ? sep : end)) == NULL)
			goto out;
		p = sep ? (sep + 2 < end ? sep + 3 : end) : end;
	}
	if (sql_ag_from_rows("fuzz", agname, rs[0], rs[1], rs[2], rs[3], rs[4], &ag, &err) == 0) {
		for (i = 0; i < ag.nreplicas; i++)
			if (sql_replica_address(&ag.replicas[i], host, sizeof(host), &port) == 0 &&
			    (port <= 0 || port > 65535 || host[0] == '\0'))
				abort();
		sql_ag_free(&ag);
	}
	creds_of(rs[4], "fam", names);
out:
	for (k = 0; k < 5; k++)
		sql_result_free(rs[k]);
	free(agname);
	free(buf);
	return 0;
}
