/*
 * test_auditrep.c: audit records into rollovers (agent/auditrep.c), the
 * reason and ticket checks (markers.c), and the RFC 5424 form of a record
 * (auditship.c).  Records are written as one compact line each:
 *   "RUN ACTION [ag/db] [replica=R] [v=V] [rot=ID] [out=O] [t=HH:MM]"
 * run-start takes cmd=, reason=, ticket=; run-interrupted about=; ref= a reference.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>

#include "core/dmk.h"
#include "core/buf.h"
#include "agent/auditrep.h"
#include "agent/auditship.h"
#include "agent/markers.h"
#include "agent/config.h"

static json_t *
rec(const char *spec)
{
	char buf[512], *tok, *save, tm[32] = "2026-12-01T10:00:00Z";
	json_t *r = json_object(), *tgt = json_object(), *keys = json_object(), *actor,
	    *why = json_object();
	static long long seq;

	snprintf(buf, sizeof(buf), "%s", spec);
	json_object_set_new(r, "seq", json_integer(++seq));
	json_object_set_new(r, "run_id", json_string(strtok_r(buf, " ", &save)));
	json_object_set_new(r, "action", json_string(strtok_r(NULL, " ", &save)));
	actor = json_pack("{s:s,s:s,s:i}", "user", "ops", "host", "h1", "pid", 42);
	json_object_set_new(r, "actor", actor);
	json_object_set_new(r, "outcome", json_string("ok"));
	json_object_set_new(r, "error", json_null());
	while ((tok = strtok_r(NULL, " ", &save)) != NULL) {
		char *eq = strchr(tok, '='), *slash = strchr(tok, '/');
		if (eq == NULL && slash != NULL) {
			*slash = '\0';
			json_object_set_new(tgt, "ag", json_string(tok));
			json_object_set_new(tgt, "database", json_string(slash + 1));
			continue;
		}
		assert_non_null(eq);
		*eq++ = '\0';
		if (strcmp(tok, "replica") == 0)
			json_object_set_new(tgt, "replica", json_string(eq));
		else if (strcmp(tok, "v") == 0)
			json_object_set_new(keys, "version", json_string(eq));
		else if (strcmp(tok, "ref") == 0)
			json_object_set_new(keys, "reference", json_string(eq));
		else if (strcmp(tok, "rot") == 0)
			json_object_set_new(keys, "rotation", json_string(eq));
		else if (strcmp(tok, "out") == 0 || strcmp(tok, "cmd") == 0)
			json_object_set_new(r, "outcome", json_string(eq));
		else if (strcmp(tok, "about") == 0)
			json_object_set_new(r, "about_run", json_string(eq));
		else if (strcmp(tok, "err") == 0)
			json_object_set_new(r, "error", json_string(eq));
		else if (strcmp(tok, "reason") == 0 || strcmp(tok, "ticket") == 0) {
			for (char *p = eq; *p; p++)
				if (*p == '_')
					*p = ' ';
			json_object_set_new(why, tok, json_string(eq));
		} else if (strcmp(tok, "t") == 0)
			snprintf(tm, sizeof(tm), "2026-12-%sZ", eq);
		else
			fail_msg("bad key %s", tok);
	}
	json_object_set_new(r, "time", json_string(tm));
	json_object_set_new(r, "target", tgt);
	json_object_set_new(r, "keys", keys);
	if (json_object_size(why) > 0)
		json_object_set_new(r, "why", why);
	else
		json_decref(why);
	return r;
}

static json_t *
log_of(const char *const *lines)
{
	json_t *a = json_array();

	for (; *lines != NULL; lines++)
		json_array_append_new(a, rec(*lines));
	return a;
}

static const char *
s(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static json_t *
replica(json_t *ro, const char *name)
{
	json_t *r;
	size_t i;

	json_array_foreach(json_object_get(ro, "replicas"), i, r)
		if (strcmp(s(r, "name"), name) == 0)
			return r;
	fail_msg("no replica %s", name);
	return NULL;
}

/* A rotation killed after registering, finished by the next run: one rollover, two runs. */
static const char *const interrupted[] = {
	"R1 run-start cmd=rotate reason=quarterly_rollover ticket=CHG1 t=01T10:00:00",
	"R1 rotate-lease AG1/DB v=1 out=taken t=01T10:00:01",
	"R1 rotate-prove AG1/DB v=1 out=opens t=01T10:00:02",
	"R1 backup-dmk AG1/DB replica=N1 v=4 out=escrowed t=01T10:00:03",
	"R1 rotate-backup AG1/DB ref=E v=4 rot=X1 out=escrowed t=01T10:00:03",
	"R1 rotate-pending AG1/DB v=2 rot=X1 out=written t=01T10:00:04",
	"R1 rotate-add AG1/DB v=2 rot=X1 out=added t=01T10:00:05",
	"R1 rotate-register AG1/DB replica=N1 v=2 rot=X1 out=added t=01T10:00:06",
	"R1 rotate-register AG1/DB replica=N2 v=2 rot=X1 out=added t=01T10:00:06",
	"R2 run-interrupted about=R1 t=01T11:00:00",
	"R2 run-start cmd=rotate ticket=CHG1 t=01T11:00:00",
	"R2 rotate-lease AG1/DB v=2 rot=X1 out=taken t=01T11:00:01",
	"R2 rotate-register AG1/DB replica=N1 v=2 rot=X1 out=unchanged t=01T11:00:02",
	"R2 rotate-register AG1/DB replica=N2 v=2 rot=X1 out=unchanged t=01T11:00:02",
	"R2 rotate-verify AG1/DB replica=N1 v=2 rot=X1 out=ok t=01T11:00:03",
	"R2 rotate-verify AG1/DB replica=N2 v=2 rot=X1 out=ok t=01T11:00:03",
	"R2 rotate-mark-current AG1/DB v=2 rot=X1 out=current t=01T11:00:04",
	"R2 rotate-mark-retiring AG1/DB v=1 rot=X1 out=retiring t=01T11:00:04",
	"R2 rotate-drop AG1/DB v=1 rot=X1 out=dropped t=01T11:00:05",
	"R2 rotate-drop-credential AG1/DB replica=N1 v=1 rot=X1 out=dropped t=01T11:00:05",
	"R2 rotate-drop-credential AG1/DB replica=N2 v=1 rot=X1 out=dropped t=01T11:00:05",
	"R2 rotate-mark-retired AG1/DB v=1 rot=X1 out=retired t=01T11:00:06",
	"R2 rotate-release AG1/DB out=released t=01T11:00:06",
	"R2 run-end out=ok t=01T11:00:07",
	/* a later one that stopped, on another database */
	"R3 run-start cmd=rotate t=05T09:00:00",
	"R3 rotate-lease AG1/DB2 v=7 out=taken t=05T09:00:01",
	"R3 rotate-stopped AG1/DB2 out=prove err=wrong_password t=05T09:00:02",
	"R3 run-end out=failed t=05T09:00:03",
	/* backup --restore-test of that rollover's escrow, and of another version */
	"R4 run-start cmd=backup t=06T09:00:00",
	"R4 restore-test AG1/DB replica=N1 ref=E v=3 out=failed t=06T09:00:01",
	"R4 restore-test AG1/DB replica=N1 ref=E v=4 out=passed t=06T09:00:02",
	"R4 run-end out=ok t=06T09:00:03",
	NULL
};

static void
test_interrupted_once(void **state)
{
	json_t *log = log_of(interrupted), *ros, *ro, *runs;

	(void)state;
	ros = arep_rollovers(log, NULL);
	assert_non_null(ros);
	assert_int_equal(json_array_size(ros), 2);
	ro = json_array_get(ros, 0);
	assert_string_equal(s(ro, "rotation"), "X1");
	assert_string_equal(s(ro, "outcome"), "completed");
	assert_string_equal(s(ro, "old_version"), "1");
	assert_string_equal(s(ro, "new_version"), "2");
	assert_string_equal(s(ro, "reason"), "quarterly rollover");
	assert_string_equal(s(ro, "ticket"), "CHG1");
	assert_string_equal(s(ro, "start"), "2026-12-01T10:00:01Z");
	assert_string_equal(s(ro, "end"), "2026-12-01T11:00:06Z");
	runs = json_object_get(ro, "runs");
	assert_int_equal(json_array_size(runs), 2);
	assert_string_equal(s(json_array_get(runs, 0), "run_id"), "R1");
	assert_true(json_is_true(json_object_get(json_array_get(runs, 0), "interrupted")));
	assert_string_equal(s(json_array_get(runs, 1), "run_id"), "R2");
	assert_true(json_is_true(json_object_get(json_array_get(runs, 1), "resumed")));
	/* the interrupted run's registration is the evidence, not the rerun's "unchanged" */
	assert_string_equal(s(replica(ro, "N1"), "registered"), "added");
	assert_string_equal(s(replica(ro, "N2"), "verified"), "ok");
	assert_string_equal(s(replica(ro, "N2"), "old_revoked"), "dropped");
	assert_string_equal(s(json_object_get(ro, "backup"), "version"), "4");
	assert_string_equal(s(json_object_get(ro, "backup"), "restore_test"), "passed");
	assert_int_equal(json_array_size(json_object_get(json_object_get(ro, "backup"),
	    "escrowed")), 1);
	ro = json_array_get(ros, 1);
	assert_string_equal(s(ro, "database"), "DB2");
	assert_string_equal(s(ro, "rotation"), "");
	assert_string_equal(s(ro, "outcome"), "stopped");
	assert_string_equal(s(ro, "step"), "prove");
	assert_int_equal(json_array_size(json_object_get(ro, "errors")), 1);
	json_decref(ros);
	json_decref(log);
}

static void
test_filters(void **state)
{
	json_t *log = log_of(interrupted), *ros;
	struct arep_filter f;

	(void)state;
	memset(&f, 0, sizeof(f));
	f.database = "DB2";
	ros = arep_rollovers(log, &f);
	assert_int_equal(json_array_size(ros), 1);
	json_decref(ros);
	memset(&f, 0, sizeof(f));
	assert_int_equal(util_parse_rfc3339("2026-12-02T00:00:00Z", &f.since), 0);
	ros = arep_rollovers(log, &f);
	assert_int_equal(json_array_size(ros), 1);
	assert_string_equal(s(json_array_get(ros, 0), "database"), "DB2");
	json_decref(ros);
	memset(&f, 0, sizeof(f));
	/* a rollover that overlaps the window counts */
	assert_int_equal(util_parse_rfc3339("2026-12-01T10:30:00Z", &f.until), 0);
	ros = arep_rollovers(log, &f);
	assert_int_equal(json_array_size(ros), 1);
	assert_string_equal(s(json_array_get(ros, 0), "rotation"), "X1");
	json_decref(ros);
	memset(&f, 0, sizeof(f));
	f.ag = "AG9";
	ros = arep_rollovers(log, &f);
	assert_int_equal(json_array_size(ros), 0);
	json_decref(ros);
	json_decref(log);
}

static void
test_policy_overdue_first(void **state)
{
	json_t *log = log_of(interrupted), *all, *pol;
	struct arep_db dbs[3] = {
		{ "AG1", "DB", 30 * 86400, 0 },     /* rotated 4 days before now: ok */
		{ "AG1", "DB2", 30 * 86400, 0 },    /* never completed: overdue */
		{ "AG1", "DB3", 0, 0 },             /* no schedule */
	};
	time_t now;

	(void)state;
	assert_int_equal(util_parse_rfc3339("2026-12-05T11:00:06Z", &now), 0);
	all = arep_rollovers(log, NULL);
	pol = arep_policy(all, log, dbs, 3, now);
	assert_int_equal(json_array_size(pol), 3);
	assert_string_equal(s(json_array_get(pol, 0), "database"), "DB2");
	assert_true(json_is_true(json_object_get(json_array_get(pol, 0), "overdue")));
	assert_non_null(strstr(s(json_array_get(pol, 0), "status"), "OVERDUE"));
	/* not overdue: the one with no rollover at all first, then the oldest */
	assert_string_equal(s(json_array_get(pol, 1), "database"), "DB3");
	assert_false(json_is_true(json_object_get(json_array_get(pol, 1), "overdue")));
	assert_string_equal(s(json_array_get(pol, 2), "database"), "DB");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(pol, 2),
	    "password_age")), 4 * 86400);
	assert_false(json_is_true(json_object_get(json_array_get(pol, 2), "overdue")));
	assert_string_equal(s(json_array_get(pol, 2), "last_backup"), "2026-12-01T10:00:03Z");
	/* 40 days on, DB is overdue too */
	json_decref(pol);
	pol = arep_policy(all, log, dbs, 2, now + 40 * 86400);
	assert_true(json_is_true(json_object_get(json_array_get(pol, 1), "overdue")));
	json_decref(pol);
	json_decref(all);
	json_decref(log);
}

static void
test_reason_ticket(void **state)
{
	struct dmk_err e;
	char big[300];
	struct prov_meta m;

	(void)state;
	assert_int_equal(markers_check_reason("quarterly rollover, CAB approved", &e), 0);
	assert_int_equal(markers_check_reason("", &e), DMK_ERR_USAGE);
	assert_int_equal(markers_check_reason("two\nlines", &e), DMK_ERR_USAGE);
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(markers_check_reason(big, &e), DMK_ERR_USAGE);
	assert_int_equal(markers_check_reason("\xff\xfe", &e), DMK_ERR_USAGE);
	assert_int_equal(markers_check_ticket("CHG0012345", &e), 0);
	assert_int_equal(markers_check_ticket("JIRA/OPS-12#3", &e), 0);
	assert_int_equal(markers_check_ticket("CHG 1", &e), DMK_ERR_USAGE);
	assert_int_equal(markers_check_ticket("", &e), DMK_ERR_USAGE);
	memset(&m, 0, sizeof(m));
	markers_set_why(NULL, NULL);
	markers_why(&m);
	assert_int_equal(m.n, 0);
	markers_set_why("why", "CHG1");
	markers_why(&m);
	assert_string_equal(prov_meta_get(&m, MARK_REASON), "why");
	assert_string_equal(prov_meta_get(&m, MARK_TICKET), "CHG1");
	markers_set_why(NULL, NULL);
}

static void
test_syslog_format(void **state)
{
	const char *line = "{\"seq\":7,\"time\":\"2026-12-01T10:00:00Z\",\"run_id\":\"R\","
	    "\"actor\":{\"user\":\"ops\",\"uid\":0,\"host\":\"db-host\",\"pid\":99},"
	    "\"action\":\"rotate-register\",\"outcome\":\"added\",\"error\":\"a]b\\\"c\","
	    "\"prev\":\"00\"}";
	struct buf b;
	struct dmk_err e;
	char why[128];

	(void)state;
	buf_init(&b, 0);
	assert_int_equal(audit_ship_format(line, strlen(line), &b, &e), 0);
	assert_non_null(b.data);
	assert_true(strncmp(b.data, "<85>1 2026-12-01T10:00:00Z db-host dmkagent 99 "
	    "rotate-register [dmkagent@32473 seq=\"7\" hash=\"", 93) == 0);
	/* ] " and \ escaped inside the SD-PARAM */
	assert_non_null(strstr(b.data, "\\\"error\\\":\\\"a\\]b\\\\\\\"c\\\""));
	assert_non_null(strstr(b.data, "\"] rotate-register added"));
	assert_int_not_equal(audit_ship_format("nope", 4, &b, &e), 0);
	buf_free(&b);
	assert_int_equal(audit_ship_check_spec("unix:/dev/log", why, sizeof(why)), 0);
	assert_int_equal(audit_ship_check_spec("udp:siem.example:514", why, sizeof(why)), 0);
	assert_int_equal(audit_ship_check_spec("tcp+tls:[::1]:6514", why, sizeof(why)), 0);
	assert_int_not_equal(audit_ship_check_spec("tcp:siem:514", why, sizeof(why)), 0);
	assert_int_not_equal(audit_ship_check_spec("udp:siem", why, sizeof(why)), 0);
	assert_int_not_equal(audit_ship_check_spec("unix:dev/log", why, sizeof(why)), 0);
}

#define CONF_HEAD \
	"[agent]\nstate_dir = /tmp/x\naudit_log = /tmp/x/audit.jsonl\n%s" \
	"[store hcv]\ntype = hashicorp-vault\naddress = https://v:8200\nauth = token\n" \
	"token = env:VAULT_TOKEN\n"

static int
conf(const char *agent_lines, struct config **c, struct dmk_err *e)
{
	char text[1024];

	snprintf(text, sizeof(text), CONF_HEAD, agent_lines);
	*c = NULL;
	return config_parse_string(text, "t.conf", c, e);
}

/* [agent] require_ticket, audit_syslog, audit_syslog_ca. */
static void
test_config_keys(void **state)
{
	struct config *c;
	struct dmk_err e;

	(void)state;
	assert_int_equal(conf("require_ticket = yes\naudit_syslog = tcp+tls:siem.example:6514\n"
	    "audit_syslog_ca = /etc/ssl/siem.pem\n", &c, &e), 0);
	assert_true(c->require_ticket);
	assert_string_equal(c->audit_syslog, "tcp+tls:siem.example:6514");
	assert_string_equal(c->audit_syslog_ca, "/etc/ssl/siem.pem");
	config_free(c);
	assert_int_equal(conf("", &c, &e), 0);
	assert_false(c->require_ticket);
	assert_string_equal(c->audit_syslog, "");
	config_free(c);
	assert_int_equal(conf("require_ticket = maybe\n", &c, &e), DMK_ERR_CONFIG);
	assert_non_null(strstr(e.msg, "t.conf:4"));
	assert_int_equal(conf("audit_syslog = syslog.example:514\n", &c, &e), DMK_ERR_CONFIG);
	assert_non_null(strstr(e.msg, "t.conf:4"));
	assert_non_null(strstr(e.msg, "udp:HOST:PORT"));
	assert_int_equal(conf("audit_syslog = udp:h:99999\n", &c, &e), DMK_ERR_CONFIG);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_interrupted_once),
		cmocka_unit_test(test_filters),
		cmocka_unit_test(test_policy_overdue_first),
		cmocka_unit_test(test_reason_ticket),
		cmocka_unit_test(test_syslog_format),
		cmocka_unit_test(test_config_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
