/*
 * test_metrics.c: the Prometheus text agent/metrics.c writes: label values
 * escaped (backslash, double quote, newline), unknown values left out,
 * ages from the times given, HELP and TYPE before each family.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/dmk.h"
#include "core/buf.h"
#include "agent/agent.h"
#include "agent/metrics.h"

static char *
text_of(const struct metrics_db *m, size_t n, const time_t *last)
{
	static const long long runs[6] = { 4, 1, 0, 2, 0, 0 };
	struct buf b;
	char *s;

	buf_init(&b, 0);
	assert_int_equal(metrics_format(&b, m, n, 3, 1000000, runs, last), 0);
	assert_int_equal(buf_putc(&b, '\0'), 0);
	s = strdup(b.data);
	buf_free(&b);
	return s;
}

static void
test_escaping_and_values(void **state)
{
	struct metrics_db m[2];
	time_t last[2] = { 999000, 0 };
	char *t;

	(void)state;
	memset(m, 0, sizeof(m));
	m[0].ag = "AG1";
	m[0].db = "CM_P01";
	m[0].seen = 1;
	m[0].registered = 2;
	m[0].expected = 3;
	m[0].pw_time = 1000000 - 86400;
	m[0].backup_time = 1000000 - 60;
	m[0].unfinished = 0;
	m[1].ag = "A\"G";
	m[1].db = "we\\ird\nname";
	m[1].registered = m[1].expected = -1;
	m[1].unfinished = -1;
	t = text_of(m, 2, last);
	assert_non_null(strstr(t, "dmkagent_last_run_exit_code 3\n"));
	assert_non_null(strstr(t, "dmkagent_runs_total{exit=\"0\"} 4\n"));
	assert_non_null(strstr(t, "dmkagent_runs_total{exit=\"3\"} 2\n"));
	assert_non_null(strstr(t, "dmkagent_replicas_registered{ag=\"AG1\",database=\"CM_P01\"} 2\n"));
	assert_non_null(strstr(t, "dmkagent_replicas_expected{ag=\"AG1\",database=\"CM_P01\"} 3\n"));
	assert_non_null(strstr(t, "dmkagent_password_age_seconds{ag=\"AG1\",database=\"CM_P01\"} 86400\n"));
	assert_non_null(strstr(t, "dmkagent_backup_age_seconds{ag=\"AG1\",database=\"CM_P01\"} 60\n"));
	assert_non_null(strstr(t, "dmkagent_last_success_timestamp_seconds{ag=\"AG1\","
	    "database=\"CM_P01\"} 999000\n"));
	/* nothing known of the second: no made-up values; escaped where it appears */
	assert_null(strstr(t, "dmkagent_restore_test_age_seconds{"));
	assert_null(strstr(t, "database=\"we"));
	assert_non_null(strstr(t, "# TYPE dmkagent_runs_total counter\n"));
	free(t);
	m[1].unfinished = 1;
	t = text_of(m, 2, last);
	assert_non_null(strstr(t, "dmkagent_rotation_unfinished{ag=\"A\\\"G\",database=\"we\\\\ird\\nname\"} 1\n"));
	free(t);
}

static void
test_help_before_samples(void **state)
{
	struct metrics_db m;
	time_t last = 0;
	char *t, *line, *save = NULL;
	char seen[4096] = "";

	(void)state;
	memset(&m, 0, sizeof(m));
	m.ag = "AG1";
	m.db = "DB";
	m.seen = 1;
	m.registered = m.expected = 1;
	m.unfinished = 0;
	t = text_of(&m, 1, &last);
	for (line = strtok_r(t, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char name[128];
		if (strncmp(line, "# TYPE ", 7) == 0) {
			assert_int_equal(sscanf(line + 7, "%127s", name), 1);
			strcat(seen, name);
			strcat(seen, " ");
			continue;
		}
		if (line[0] == '#')
			continue;
		assert_int_equal(sscanf(line, "%127[a-z_]", name), 1);
		strcat(name, " ");
		assert_non_null(strstr(seen, name));
	}
	free(t);
}

static char *
slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *t = calloc(1, 65536);

	assert_non_null(f);
	assert_non_null(t);
	assert_true(fread(t, 1, 65535, f) > 0);
	fclose(f);
	return t;
}

/* A run limited to other databases keeps this one's last values; the run
 * counters add up; the file is replaced whole. */
static void
test_write_keeps_unseen(void **state)
{
	char dir[] = "/tmp/dmkmetrics-XXXXXX", conf[2048], prom[1200], cmd[1300];
	struct metrics_db m;
	struct agent a;
	struct dmk_err e;
	char *t;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(prom, sizeof(prom), "%s/dmkagent.prom", dir);
	snprintf(conf, sizeof(conf), "[agent]\nstate_dir = %s/state\nmetrics_file = %s\n"
	    "[store v]\ntype = hashicorp-vault\naddress = https://vault.example:8200\n"
	    "auth = token\ntoken = file:/nonexistent/t\n"
	    "[ag AG1]\nlistener = h:1433\nlogin = sa\nlogin_password = file:/nonexistent/p\n"
	    "[database AG1/CM_P01]\ndmk_password = v:sql/x#password\n", dir, prom);
	agent_init(&a);
	assert_int_equal(config_parse_string(conf, "t.conf", &a.cfg, &e), 0);
	memset(&m, 0, sizeof(m));
	m.ag = "AG1";
	m.db = "CM_P01";
	m.seen = m.ok = 1;
	m.registered = 3;
	m.expected = 3;
	m.pw_time = time(NULL) - 100;
	m.unfinished = 0;
	assert_int_equal(metrics_write(&a, &m, 1, 0, &e), 0);
	m.seen = m.ok = 0;                 /* the next run did not reach it */
	m.registered = m.expected = -1;
	m.pw_time = 0;
	m.unfinished = -1;
	assert_int_equal(metrics_write(&a, &m, 1, DMK_ERR_INCOMPLETE, &e), 0);
	t = slurp(prom);
	assert_non_null(strstr(t, "dmkagent_replicas_registered{ag=\"AG1\",database=\"CM_P01\"} 3\n"));
	assert_non_null(strstr(t, "dmkagent_rotation_unfinished{ag=\"AG1\",database=\"CM_P01\"} 0\n"));
	assert_non_null(strstr(t, "dmkagent_password_age_seconds{ag=\"AG1\",database=\"CM_P01\"} "));
	assert_non_null(strstr(t, "dmkagent_runs_total{exit=\"0\"} 1\n"));
	assert_non_null(strstr(t, "dmkagent_runs_total{exit=\"3\"} 1\n"));
	assert_non_null(strstr(t, "dmkagent_last_run_exit_code 3\n"));
	free(t);
	config_free(a.cfg);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_escaping_and_values),
		cmocka_unit_test(test_help_before_samples),
		cmocka_unit_test(test_write_keeps_unseen),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
