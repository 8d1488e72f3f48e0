/*
 * watch.c: dmkagent watch [--interval SECONDS] [--run-every SECONDS]: a
 * long-running service that applies a DMK password version written into
 * the store by someone else (an operator, a pipeline, the store's own
 * rotation policy), and otherwise keeps run's schedule.
 *
 * Every --interval (default 60 s) it lists the versions of every
 * configured DMK password reference (Vault KV metadata; Azure Key Vault
 * versions) and reads their markers.  A pass of `run` (cmd_run.c, in this
 * process) follows when the newest version or its state changed since the
 * last look, when the markers show something left to do (an unfinished
 * rotation; an unmarked version on top of the one in force, which run's
 * first step applies through the rotation state machine), and every
 * --run-every (default 1 h; the first look always runs a pass).  While
 * no reference can be read, no pass runs and the wait doubles, up to 16
 * intervals, back to the interval once a store answers; while only some
 * cannot, passes go on (their run reports the rest).  SIGTERM or
 * SIGINT ends it at the next step boundary, exit 0.  With NOTIFY_SOCKET
 * set (systemd Type=notify), READY=1 once the configuration is loaded and
 * STOPPING=1 on the way out.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "core/dmk.h"
#include "cli.h"
#include "markers.h"
#include "run.h"

/*
 * One look at every reference: its newest version and that version's
 * state, as one string per database in sig[i].  *work when the markers
 * show something to do.  Returns the number of references that could not
 * be read (the last error in err).
 */
static size_t
look(struct agent *a, const char *agf, const char *dbf, char (*sig)[128], int *work,
    size_t *looked, struct dmk_err *err)
{
	size_t i, n, bad = 0;

	*work = 0;
	*looked = 0;
	for (i = 0; i < a->cfg->ndbs; i++) {
		const struct conf_db *db = &a->cfg->dbs[i];
		const struct secret_ref *ref = &db->dmk_password;
		struct prov_version *v = NULL;
		struct mk_plan mp;
		struct store *st;
		int r;

		sig[i][0] = '\0';
		if ((agf && strcmp(agf, db->ag) != 0 && strcmp(agf, config_ag(a->cfg, db->ag)->name)
		    != 0) || (dbf && strcmp(dbf, db->name) != 0) || ref->kind != REF_STORE)
			continue;
		(*looked)++;
		n = 0;
		if ((r = agent_store(a, ref->store, &st, err)) == 0 &&
		    (r = store_list_versions(st, ref, &v, &n, err)) == DMK_ERR_NOTFOUND)
			r = 0, n = 0;
		if (r != 0) {
			dmk_err_prefix(err, "%s", ref->text);
			snprintf(sig[i], sizeof(sig[i]), "?");
			bad++;
			continue;
		}
		markers_plan(v, n, &mp);
		if (mp.latest >= 0)
			snprintf(sig[i], sizeof(sig[i]), "%.79s %.40s", v[mp.latest].id,
			    markers_state(&v[mp.latest]));
		if (mp.resumed || (mp.start == MK_START_NEW && mp.prev >= 0))
			*work = 1;
		free(v);
	}
	return bad;
}

static int
pass(struct agent *a, const char *agf, const char *dbf)
{
	char *argv[6];
	struct dmk_err err;
	int argc = 0, r;

	argv[argc++] = "run";
	if (agf != NULL) {
		argv[argc++] = "--ag";
		argv[argc++] = (char *)agf;
	}
	if (dbf != NULL) {
		argv[argc++] = "--database";
		argv[argc++] = (char *)dbf;
	}
	argv[argc] = NULL;
	/* a fresh run: its own id in the audit log, the state read again */
	util_random_id(a->run_id, sizeof(a->run_id));
	json_decref(a->regstate);
	a->regstate = NULL;
	a->regstate_dirty = 0;
	optind = 0;
	dmk_err_clear(&err);
	r = cmd_run(a, argc, argv, &err);
	if (r < 0)
		fprintf(stderr, "dmkagent: %s\n", err.msg[0] ? err.msg : dmk_strerror(r));
	return r;
}

int
cmd_watch(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	static const struct option opts[] = {
		{ "interval", required_argument, NULL, 'i' },
		{ "run-every", required_argument, NULL, 'e' },
		{ "ag", required_argument, NULL, 'a' },
		{ "database", required_argument, NULL, 'd' },
		{ NULL, 0, NULL, 0 },
	};
	const char *usage = cli_find("watch")->usage, *agf = NULL, *dbf = NULL;
	long long interval = 60, every = 3600, wait = 60;
	char (*seen)[128] = NULL, (*now)[128] = NULL;
	time_t last_pass = 0;
	size_t bad, fails = 0, nd = a->cfg->ndbs, looked;
	int ch, work, first = 1, r = 0;
	struct dmk_err e;

	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		switch (ch) {
		case 'i':
			if (util_parse_duration(optarg, &interval) != 0 || interval < 1 ||
			    interval > 86400)
				return dmk_errf(err, DMK_ERR_USAGE, "watch: --interval takes seconds "
				    "(1 to 86400, or 30s, 5m), not '%s'", optarg);
			break;
		case 'e':
			if (util_parse_duration(optarg, &every) != 0 || every < 1)
				return dmk_errf(err, DMK_ERR_USAGE, "watch: --run-every takes seconds "
				    "(or 30m, 1h), not '%s'", optarg);
			break;
		case 'a': agf = optarg; break;
		case 'd': dbf = optarg; break;
		case ':':
			return dmk_errf(err, DMK_ERR_USAGE, "watch: option '%s' needs a value; usage: "
			    "dmkagent %s", argv[optind - 1], usage);
		default:
			return dmk_errf(err, DMK_ERR_USAGE, "watch: unknown option '%s'; usage: "
			    "dmkagent %s", argv[optind - 1], usage);
		}
	}
	if (optind != argc)
		return dmk_errf(err, DMK_ERR_USAGE, "watch takes no arguments ('%s'); usage: "
		    "dmkagent %s", argv[optind], usage);
	if ((seen = calloc(nd + 1, sizeof(*seen))) == NULL ||
	    (now = calloc(nd + 1, sizeof(*now))) == NULL) {
		free(seen);
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	}
	dmk_signals_install();
	run_notify("READY=1");
	log_info("watch: looking every %llds, a full run every %llds", interval, every);
	while (!dmk_interrupted()) {
		dmk_err_clear(&e);
		bad = look(a, agf, dbf, now, &work, &looked, &e);
		if (bad > 0) {
			fails++;
			wait = interval << (fails < 4 ? fails : 4);    /* at most 16 intervals */
			if (fails == 1 || fails % 10 == 0)
				log_warn("watch: %zu reference(s) cannot be read (%s); looking again in "
				    "%llds", bad, e.msg, wait);
			if (bad == looked)
				goto sleep;
		} else {
			if (fails > 0)
				log_warn("watch: the store answers again");
			fails = 0;
		}
		if (first || work || memcmp(seen, now, nd * sizeof(*seen)) != 0 ||
		    time(NULL) - last_pass >= (time_t)every) {
			if (!first && memcmp(seen, now, nd * sizeof(*seen)) != 0)
				log_info("watch: a store version changed: running");
			/* why this pass runs, for the audit records (why.trigger) */
			a->trigger = first ? "watch: start" : memcmp(seen, now, nd * sizeof(*seen)) != 0 ?
			    "watch: a store version changed" : work ? "watch: unfinished work" :
			    "watch: schedule (--run-every)";
			r = pass(a, agf, dbf);
			last_pass = time(NULL);
			first = 0;
			/* what the pass itself wrote is not news */
			dmk_err_clear(&e);
			if (look(a, agf, dbf, seen, &work, &looked, &e) > 0)
				memcpy(seen, now, nd * sizeof(*seen));
		}
		wait = fails > 0 ? wait : interval;
sleep:
		if (run_sleep(wait * 1000) != 0)
			break;
	}
	run_notify("STOPPING=1");
	log_info("watch: stopped by a signal");
	(void)r;
	free(seen);
	free(now);
	return 0;
}
