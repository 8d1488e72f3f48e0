/*
 * Fuzz target: audit report over hostile records.  A log without audit_key
 * verifies whatever its writer chained, so every record the report reads
 * may be anything that parses as JSON: the rollover builder, the policy and
 * the syslog form must not trust a member's type or presence.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/dmk.h"
#include "core/buf.h"
#include "agent/auditrep.h"
#include "agent/auditship.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct arep_db dbs[2] = { { "AG1", "DB", 86400, 0 }, { "AG1", "DB2", 0, 3600 } };
	struct arep_filter f = { 0, 0, NULL, NULL };
	json_t *recs = json_array(), *all, *ros, *pol;
	const char *p = (const char *)data, *end = p + size, *nl;
	struct dmk_err e;
	struct buf b;

	buf_init(&b, 0);
	while (p < end) {
		json_t *j;
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			nl = end;
		if ((j = json_loadb(p, (size_t)(nl - p), 0, NULL)) != NULL) {
			json_array_append_new(recs, j);
			audit_ship_format(p, (size_t)(nl - p), &b, &e);
		}
		p = nl + 1;
	}
	all = arep_rollovers(recs, NULL);
	f.database = "DB";
	ros = arep_rollovers(recs, &f);
	pol = arep_policy(all, recs, dbs, 2, 1800000000);
	json_decref(pol);
	json_decref(ros);
	json_decref(all);
	json_decref(recs);
	buf_free(&b);
	return 0;
}
