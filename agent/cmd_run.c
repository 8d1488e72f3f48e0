/*
 * cmd_run.c: dmkagent run [--ag AG] [--database DB] [--dry-run]
 * [--random-delay SECONDS]: the one command schedules call.  One pass over
 * every configured AG, in the safe order, each step the commands' own
 * (steps.h), in this process:
 *   1 finish   an unfinished rotation (the store's markers say so), or a
 *              version written outside dmkagent on top of the one in force
 *              (applied through the rotation state machine: adopt)
 *   2 register what is missing on any replica (new replicas, rebuilt nodes)
 *   3 rotate   what is due (rotate_every; rotate --if-due)
 *   4 backup   what is due (backup_every; with a restore test every
 *              restore_test_every), counted from the markers of the DMK
 *              backup's escrow (its newest version's time; the newest
 *              dmkagent-restore-tested)
 *   5 verify   every replica
 * The AG is opened again after a step that changed the password in force.
 * Whether step 1 and 3 have anything to do is read from the store's
 * markers (markers_plan) before the rotation's lease is taken, so a run
 * with nothing due writes nothing.  Exit codes by the runner's precedence;
 * -q prints nothing when nothing needed attention.  After the pass,
 * [agent] metrics_file is written (metrics.h).  SIGTERM or SIGINT stops the
 * pass at the next step boundary (and --random-delay's wait at once).
 */
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "core/dmk.h"
#include "cli.h"
#include "agcmd.h"
#include "backup.h"
#include "markers.h"
#include "metrics.h"
#include "run.h"
#include "steps.h"

int
run_sleep(long long ms)
{
	while (ms > 0 && !dmk_interrupted()) {
		long long step = ms < 200 ? ms : 200;
		util_sleep_ms(step);
		ms -= step;
	}
	return dmk_interrupted() ? -1 : 0;
}

/* sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET. */
void
run_notify(const char *msg)
{
	const char *p = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa;
	size_t n;
	int fd;

	if (p == NULL || (p[0] != '/' && p[0] != '@') || (n = strlen(p)) >= sizeof(sa.sun_path))
		return;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, p, n);
	if (p[0] == '@')
		sa.sun_path[0] = '\0';
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return;
	(void)sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
	    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
	close(fd);
}

/* ---- what the store's markers say, read only ---- */

struct db_state {
	int known;                /* the versions were read */
	int unfinished;           /* a rotation stopped half way */
	int adopt;                /* an unmarked newest version on top of a current one */
	int due;                  /* rotate_every passed */
	time_t pw_time;           /* when the version in force was written */
	time_t backup_time;       /* the newest escrowed DMK backup */
	time_t restore_time;      /* the newest passed restore test */
};

static time_t
version_time(const struct prov_version *v)
{
	const char *t = prov_meta_get(&v->meta, MARK_TIME);
	time_t x;

	if (t != NULL && util_parse_rfc3339(t, &x) == 0)
		return x;
	return v->created;
}

static int
plan_db(struct agent *a, const struct conf_db *db, struct db_state *s, struct dmk_err *err)
{
	const struct secret_ref *ref = &db->dmk_password;
	struct prov_version *v = NULL;
	struct secret_ref bref;
	struct mk_plan mp;
	struct store *st;
	size_t n = 0, i;
	long cur;
	int r;

	memset(s, 0, sizeof(*s));
	if (ref->kind != REF_STORE)
		return 0;
	if ((r = agent_store(a, ref->store, &st, err)) != 0)
		return r;
	if (!store_can(st, PROV_CAP_VERSIONS | PROV_CAP_META))
		return 0;
	r = store_list_versions(st, ref, &v, &n, err);
	if (r == DMK_ERR_NOTFOUND)
		r = 0, n = 0;
	else if (r != 0)
		return dmk_err_prefix(err, "%s", ref->text);
	markers_plan(v, n, &mp);
	s->known = 1;
	s->unfinished = mp.resumed;
	s->adopt = mp.start == MK_START_NEW && mp.prev >= 0;
	if ((cur = markers_in_force(v, n)) >= 0) {
		s->pw_time = version_time(&v[cur]);
		/* as rotate --if-due counts: from the version's creation */
		s->due = db->rotate_every > 0 &&
		    v[cur].created + (time_t)db->rotate_every <= time(NULL);
	}
	free(v);
	v = NULL;
	/* the DMK backup's escrow */
	if (escrow_ref(ref, "dmk", NULL, &bref, err) != 0 ||
	    agent_store(a, bref.store, &st, err) != 0)
		return 0;
	r = store_list_versions(st, &bref, &v, &n, err);
	if (r == DMK_ERR_NOTFOUND)
		return 0;
	if (r != 0)
		return dmk_err_prefix(err, "%s", bref.text);
	for (i = n; i-- > 0; ) {
		const char *t;
		time_t x;

		if (!markers_live(&v[i]))
			continue;
		if (s->backup_time == 0)
			s->backup_time = version_time(&v[i]);
		if ((t = prov_meta_get(&v[i].meta, MARK_RESTORED)) != NULL &&
		    util_parse_rfc3339(t, &x) == 0 && x > s->restore_time)
			s->restore_time = x;
	}
	free(v);
	return 0;
}

/* 0 none, 1 a backup, 2 a backup and its restore test. */
static int
backup_due(const struct conf_db *db, const struct db_state *s, time_t now)
{
	int want = 0;

	if (!s->known)
		return 0;
	if (db->backup_every > 0 && (s->backup_time == 0 ||
	    now - s->backup_time >= (time_t)db->backup_every))
		want = 1;
	if (db->restore_test_every > 0 && (s->restore_time == 0 ||
	    now - s->restore_time >= (time_t)db->restore_test_every))
		want = 2;
	return want;
}

/* ---- the pass ---- */

struct run_opts {
	long long delay;              /* --random-delay, seconds */
	struct metrics_db *m;         /* parallel to cfg->dbs */
	size_t nm;
	size_t changes;               /* credentials added, rotations, backups */
	int dry;                      /* --dry-run */
};

static size_t
db_index(struct agent *a, const struct conf_db *db)
{
	return (size_t)(db - a->cfg->dbs);
}

static int
rotated(const char *outcome)
{
	return outcome != NULL && (strcmp(outcome, "rotated") == 0 ||
	    strcmp(outcome, "finished") == 0 || strcmp(outcome, "regenerated") == 0);
}

static void
stage(struct agcmd_ctx *c, const char *ag, const char *what)
{
	if (c->a->output == OUTPUT_TEXT)
		fprintf(c->a->out, "%s: %s\n", ag, what);
}

/* (Re)open the AG: the passwords in force and their proof on the primary. */
static int
reopen(struct agcmd_ctx *c, const struct conf_ag *ag, struct ag_run *run, int *opened,
    json_t *jag)
{
	struct dmk_err e;
	int r;

	if (*opened)
		ag_close(run);
	*opened = 0;
	dmk_err_clear(&e);
	if ((r = ag_open(c->a, ag, c->db_filter, 1, run, &e)) != 0) {
		agcmd_fail(c, r, &e);
		json_object_set_new(jag, "error", json_string(e.msg));
		ag_close(run);
		return r;
	}
	*opened = 1;
	c->stepped = 1;
	json_object_set_new(jag, "primary", json_string(run->info.primary));
	return 0;
}

/* What the last ag_each_replica() left (a step's per-replica results),
 * before the next step runs its own. */
static void
reps_clear(struct ag_run *run)
{
	size_t i;

	for (i = 0; i < run->nreps; i++)
		free(run->reps[i].dbs);
	free(run->reps);
	run->reps = NULL;
	run->nreps = 0;
}

static json_t *
jstep(json_t *jsteps, const char *name)
{
	json_t *o = json_object();

	json_object_set_new(jsteps, name, o);
	return o;
}

static int
run_ag(struct agcmd_ctx *c, const struct conf_ag *ag, json_t *jag)
{
	struct run_opts *o = c->data;
	struct agent *a = c->a;
	struct ag_run run;
	struct db_state *ds = NULL;
	size_t *before = NULL, *due = NULL, ndue = 0, j, i, k, escrowed = 0;
	const char **outs = NULL;
	json_t *jsteps = json_object(), *jfin, *jrot, *jbk;
	int opened = 0, changed, r, *want = NULL;
	const char *outcome;
	struct dmk_err e;

	memset(&run, 0, sizeof(run));
	json_object_set_new(jag, "steps", jsteps);
	jfin = json_array();
	jrot = json_array();
	jbk = json_array();
	json_object_set_new(jsteps, "finish", jfin);
	json_object_set_new(jsteps, "rotate", jrot);
	json_object_set_new(jsteps, "backup", jbk);
	if ((ds = calloc(o->nm + 1, sizeof(*ds))) == NULL ||
	    (before = calloc(o->nm + 1, sizeof(*before))) == NULL ||
	    (want = calloc(o->nm + 1, sizeof(*want))) == NULL) {
		dmk_errf(&e, DMK_ERR_NOMEM, "out of memory");
		agcmd_fail(c, e.code, &e);
		goto out;
	}
	if (reopen(c, ag, &run, &opened, jag) != 0)
		goto out;
	if (a->output == OUTPUT_TEXT)
		fprintf(a->out, "%s: %zu replica(s), primary %s%s\n", ag->name, run.info.nreplicas,
		    run.info.primary, c->dry_run ? " (dry run: nothing changes)" : "");
	for (j = 0; j < run.nplans; j++) {
		struct metrics_db *m = &o->m[db_index(a, run.plans[j].db)];
		m->seen = 1;
		m->ok = 1;
		m->expected = (long)run.info.nreplicas;
	}

	/* 1: what a stopped rotation, or someone else's write, left to do */
	for (j = 0, changed = 0; j < run.nplans; j++) {
		size_t x = db_index(a, run.plans[j].db);

		dmk_err_clear(&e);
		if ((r = plan_db(a, run.plans[j].db, &ds[x], &e)) != 0) {
			agcmd_fail(c, r, &e);
			o->m[x].ok = 0;
			continue;
		}
		if (!run.plans[j].in_ag || (!ds[x].unfinished && !ds[x].adopt))
			continue;
		if (changed == 0)
			stage(c, ag->name, "finishing what a rotation or a store write left");
		before[x] = c->nfailed;
		rotate_database(c, &run, j, ds[x].unfinished ? ROT_RESUME_ONLY : ROT_ADOPT_ONLY, 0, 0,
		    jfin, &outcome);
		if (c->nfailed != before[x])
			o->m[x].ok = 0;
		if (rotated(outcome) || (outcome && strcmp(outcome, "adopted") == 0)) {
			o->changes++;
			changed = 1;
		} else if (changed == 0)
			changed = -1;
	}
	if (changed == 1 && !c->dry_run && reopen(c, ag, &run, &opened, jag) != 0)
		goto out;
	if (dmk_interrupted())
		goto stopped;

	/* 2: register what is missing */
	stage(c, ag->name, "register");
	reps_clear(&run);
	r = register_steps(c, &run, jstep(jsteps, "register"), 0, &o->changes);
	if (r != 0)
		agcmd_keep(c, r, "%s: not registered everywhere (see above)%s", ag->name,
		    agcmd_rerun(c, "; a rerun finishes the rest"));
	if (dmk_interrupted())
		goto stopped;

	/* 3: rotate what is due, every due database together (rotate_databases) */
	changed = 0;
	if ((due = calloc(run.nplans + 1, sizeof(*due))) == NULL ||
	    (outs = calloc(run.nplans + 1, sizeof(*outs))) == NULL) {
		dmk_errf(&e, DMK_ERR_NOMEM, "out of memory");
		agcmd_fail(c, e.code, &e);
		goto out;
	}
	for (j = 0, ndue = 0; j < run.nplans; j++) {
		size_t x = db_index(a, run.plans[j].db);

		if (!run.plans[j].in_ag || !ds[x].known)
			continue;
		dmk_err_clear(&e);
		if (plan_db(a, run.plans[j].db, &ds[x], &e) != 0 || !ds[x].due)
			continue;
		due[ndue++] = j;
	}
	if (ndue > 0) {
		stage(c, ag->name, "rotate (due)");
		rotate_databases(c, &run, due, ndue, ROT_IF_DUE, 0, 0, jrot, outs);
	}
	for (k = 0; k < ndue; k++) {
		size_t x = db_index(a, run.plans[due[k]].db);

		outcome = outs[k];
		if (outcome == NULL || strcmp(outcome, "stopped") == 0 ||
		    strcmp(outcome, "locked") == 0 || strcmp(outcome, "failed") == 0)
			o->m[x].ok = 0;
		if (rotated(outcome)) {
			o->changes++;
			changed = 1;
		} else if (changed == 0)
			changed = -1;
	}
	if (changed == 1 && !c->dry_run && reopen(c, ag, &run, &opened, jag) != 0)
		goto out;
	if (dmk_interrupted())
		goto stopped;

	/* 4: the backups that are due, one database at a time */
	for (j = 0; j < run.nplans; j++) {
		size_t x = db_index(a, run.plans[j].db);
		int w;

		if (!run.plans[j].in_ag)
			continue;
		dmk_err_clear(&e);
		if (plan_db(a, run.plans[j].db, &ds[x], &e) != 0)
			continue;
		if ((w = backup_due(run.plans[j].db, &ds[x], time(NULL))) == 0)
			continue;
		if (c->dry_run) {
			if (a->output == OUTPUT_TEXT)
				fprintf(a->out, "%s/%s: would escrow a backup%s\n", ag->name,
				    run.plans[j].db->name, w > 1 ? " and restore-test it" : "");
			continue;
		}
		stage(c, ag->name, w > 1 ? "backup and restore test (due)" : "backup (due)");
		memset(want, 0, (o->nm + 1) * sizeof(*want));
		want[j] = w;
		{
			json_t *x1 = json_object();
			size_t nfb = c->nfailed;

			json_object_set_new(x1, "database", json_string(run.plans[j].db->name));
			json_object_set_new(x1, "restore_test", json_boolean(w > 1));
			json_array_append_new(jbk, x1);
			backup_steps(c, &run, want, x1, &escrowed);
			if (c->nfailed != nfb)
				o->m[x].ok = 0;
		}
	}
	o->changes += escrowed;
	if (dmk_interrupted())
		goto stopped;

	/* 5: verify (a dry run's plan may not have happened yet: not judged) */
	if (c->dry_run) {
		stage(c, ag->name, "would verify every replica");
		goto out;
	}
	stage(c, ag->name, "verify");
	reps_clear(&run);
	r = verify_steps(c, &run, jstep(jsteps, "verify"));
	if (r != 0)
		agcmd_keep(c, r, "%s: not every replica can open every DMK after a failover (see "
		    "above)", ag->name);
	for (j = 0; j < run.nplans; j++) {
		struct metrics_db *m = &o->m[db_index(a, run.plans[j].db)];

		m->registered = 0;
		for (i = 0; i < run.nreps; i++)
			if (run.reps[i].reached && run.reps[i].dbs != NULL &&
			    run.reps[i].dbs[j].outcome == OUT_OK)
				m->registered++;
		if (!run.plans[j].usable || m->registered != m->expected)
			m->ok = 0;
	}
	goto out;
stopped:
	agcmd_keep(c, DMK_ERR_INCOMPLETE, "%s: stopped by a signal at a step boundary; the next "
	    "run finishes the rest", ag->name);
out:
	/* where things stand now, for the metrics */
	for (k = 0; opened && k < run.nplans; k++) {
		size_t x = db_index(a, run.plans[k].db);
		struct metrics_db *m = &o->m[x];

		dmk_err_clear(&e);
		if (plan_db(a, run.plans[k].db, &ds[x], &e) == 0 && ds[x].known) {
			m->pw_time = ds[x].pw_time;
			m->backup_time = ds[x].backup_time;
			m->restore_time = ds[x].restore_time;
			m->unfinished = ds[x].unfinished;
		}
	}
	if (opened)
		ag_close(&run);
	free(ds);
	free(before);
	free(due);
	free(outs);
	free(want);
	return 0;
}

static void
run_finish(struct agcmd_ctx *c, json_t *root)
{
	struct run_opts *o = c->data;

	json_object_set_new(root, "changes", json_integer((json_int_t)o->changes));
	if (c->a->output == OUTPUT_TEXT)
		fprintf(c->a->out, "run: %s%zu change(s)%s\n", c->dry_run ? "dry run, " : "",
		    o->changes, c->worst == 0 ? "; every replica passes" : "; see above");
	if (c->worst == DMK_ERR_INCOMPLETE)
		agcmd_conclude(c, c->worst, "run: incomplete (see above)%s",
		    agcmd_rerun(c, "; the next run finishes the rest"));
}

static int
run_option(struct agcmd_ctx *c, int ch, const char *arg, struct dmk_err *err)
{
	struct run_opts *o = c->data;

	if (ch != 'R')
		return dmk_errf(err, DMK_ERR_USAGE, "run: unknown option");
	if (util_parse_duration(arg, &o->delay) != 0 || o->delay < 0 || o->delay > 86400)
		return dmk_errf(err, DMK_ERR_USAGE, "run: --random-delay takes seconds (or 30s, "
		    "15m), at most a day, not '%s'", arg);
	return 0;
}

/* --random-delay: a random wait up to it, before the lock is taken. */
static int
run_check(struct agcmd_ctx *c, struct dmk_err *err)
{
	struct run_opts *o = c->data;
	unsigned long long rnd = 0;
	long long ms;

	o->dry = c->dry_run;
	if (o->delay <= 0)
		return 0;
	if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		rnd = (unsigned long long)time(NULL) * 2654435761u;
	ms = (long long)(rnd % (unsigned long long)(o->delay * 1000 + 1));
	log_info("run: waiting %lld.%03llds (--random-delay %lld)", ms / 1000, ms % 1000,
	    o->delay);
	dmk_signals_install();
	if (run_sleep(ms) != 0)
		return dmk_err_interrupted(err, "during --random-delay, before anything was done");
	return 0;
}

static const struct option run_options[] = {
	{ "random-delay", required_argument, NULL, 'R' },
	{ NULL, 0, NULL, 0 },
};

/* --jobs: an AG job's count into the run's (the metrics rows are each
 * database's own, shared: one AG job writes only its databases' rows). */
static void
run_merge(void *data, const void *job)
{
	((struct run_opts *)data)->changes += ((const struct run_opts *)job)->changes;
}

static const struct agcmd run_cmd = {
	.name = "run",
	.flags = AGCMD_CHANGES | AGCMD_DRY_RUN | AGCMD_PARALLEL,
	.options = run_options,
	.shortopts = "",
	.option = run_option,
	.check = run_check,
	.run_ag_raw = run_ag,
	.finish = run_finish,
	.data_size = sizeof(struct run_opts),
	.merge = run_merge,
};

int
cmd_run(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	struct run_opts o;
	struct dmk_err me;
	size_t i;
	int r;

	memset(&o, 0, sizeof(o));
	o.nm = a->cfg->ndbs;
	if ((o.m = calloc(o.nm + 1, sizeof(*o.m))) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	for (i = 0; i < o.nm; i++) {
		const struct conf_ag *ag = config_ag(a->cfg, a->cfg->dbs[i].ag);
		o.m[i].ag = ag ? ag->name : a->cfg->dbs[i].ag;
		o.m[i].db = a->cfg->dbs[i].name;
		o.m[i].registered = o.m[i].expected = -1;
		o.m[i].unfinished = -1;
	}
	dmk_signals_install();
	if (a->trigger == NULL)
		a->trigger = "schedule (run)";   /* watch and hook serve name their own */
	r = agcmd_main(a, &run_cmd, &o, argc, argv, err);
	/* Not for a usage error or a dry run (nothing ran), nor a locked one
	 * (the run holding the lock writes them). */
	if (r != DMK_ERR_USAGE && r != DMK_ERR_LOCKED && !o.dry &&
	    metrics_write(a, o.m, o.nm, r, &me) != 0)
		fprintf(stderr, "dmkagent: metrics_file: %s\n", me.msg);
	free(o.m);
	return r;
}
