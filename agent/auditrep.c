/* auditrep.c: audit records into rollovers and policy; see auditrep.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "auditrep.h"

static const char *
jstr(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static const char *
jstr2(json_t *o, const char *k1, const char *k2)
{
	return json_string_value(json_object_get(json_object_get(o, k1), k2));
}

static json_t *
jnull(const char *s)
{
	return s != NULL ? json_string(s) : json_null();
}

/* "rotate-register" -> "rotate" and "register"; 0 when not a rotation record. */
static int
rot_action(const char *action, char *cmd, size_t clen, const char **step)
{
	static const char *const cmds[] = { "rotate", "recover", NULL };
	size_t i, n;

	for (i = 0; cmds[i] != NULL; i++) {
		n = strlen(cmds[i]);
		if (strncmp(action, cmds[i], n) == 0 && action[n] == '-' && action[n + 1] != '\0') {
			util_strlcpy(cmd, cmds[i], clen);
			*step = action + n + 1;
			return 1;
		}
	}
	return 0;
}

static int
is_backup_evidence(const char *action)
{
	return strncmp(action, "backup-", 7) == 0 || strcmp(action, "restore-test") == 0;
}

/* The runs: run_id -> {run_id, command, start, end, user, host, why..., outcome, interrupted}. */
static void
note_run(json_t *runs, json_t *rec, const char *action)
{
	const char *rid = jstr(rec, "run_id"), *t = jstr(rec, "time");
	json_t *run;

	if (strcmp(action, "run-interrupted") == 0) {
		const char *about = jstr(rec, "about_run");
		if (about != NULL && (run = json_object_get(runs, about)) != NULL) {
			json_object_set_new(run, "interrupted", json_true());
			json_object_set_new(run, "outcome", json_string("interrupted"));
		}
		return;
	}
	if (rid == NULL)
		return;
	if (strcmp(action, "run-start") == 0) {
		json_t *why = json_object_get(rec, "why");
		run = json_object();
		json_object_set_new(run, "run_id", json_string(rid));
		json_object_set_new(run, "command", jnull(jstr(rec, "outcome")));
		json_object_set_new(run, "start", jnull(t));
		json_object_set_new(run, "end", json_null());
		json_object_set_new(run, "user", jnull(jstr2(rec, "actor", "user")));
		json_object_set_new(run, "host", jnull(jstr2(rec, "actor", "host")));
		json_object_set_new(run, "reason", jnull(jstr(why, "reason")));
		json_object_set_new(run, "ticket", jnull(jstr(why, "ticket")));
		json_object_set_new(run, "trigger", jnull(jstr(why, "trigger")));
		json_object_set_new(run, "outcome", json_string("running or killed"));
		json_object_set_new(run, "interrupted", json_false());
		json_object_set_new(run, "resumed", json_false());
		json_object_set(runs, rid, run);
		json_decref(run);
	} else if (strcmp(action, "run-end") == 0 && (run = json_object_get(runs, rid)) != NULL) {
		json_object_set_new(run, "end", jnull(t));
		json_object_set_new(run, "outcome", jnull(jstr(rec, "outcome")));
	}
}

/*
 * Segments: the records of one run on one database, in order.  cur maps
 * "run|ag|db" to the run's segment now being filled; segs keeps them all.
 */
static json_t *
segment_for(json_t *segs, json_t *cur, json_t *rec, const char *cmd, int create)
{
	const char *rid = jstr(rec, "run_id"), *ag = jstr2(rec, "target", "ag"),
	    *db = jstr2(rec, "target", "database"), *rot = jstr2(rec, "keys", "rotation");
	char key[1024];
	json_t *seg;

	if (rid == NULL || ag == NULL || db == NULL)
		return NULL;
	snprintf(key, sizeof(key), "%s\x1f%s\x1f%s", rid, ag, db);
	seg = json_object_get(cur, key);
	/* A second rotation of the same database in one run: a new segment. */
	if (seg != NULL && rot != NULL && rot[0] != '\0' && jstr(seg, "rotation")[0] != '\0' &&
	    strcmp(jstr(seg, "rotation"), rot) != 0)
		seg = NULL;
	if (seg != NULL || !create)
		return seg;
	seg = json_object();
	json_object_set_new(seg, "run_id", json_string(rid));
	json_object_set_new(seg, "ag", json_string(ag));
	json_object_set_new(seg, "database", json_string(db));
	json_object_set_new(seg, "command", json_string(cmd));
	json_object_set_new(seg, "rotation", json_string(""));
	json_object_set_new(seg, "records", json_array());
	json_object_set(cur, key, seg);
	json_array_append_new(segs, seg);
	return seg;
}

static json_t *
replica_of(json_t *ro, json_t *reps, const char *name)
{
	json_t *r = json_object_get(reps, name);

	if (r != NULL)
		return r;
	r = json_object();
	json_object_set_new(r, "name", json_string(name));
	json_object_set_new(r, "registered", json_null());
	json_object_set_new(r, "verified", json_null());
	json_object_set_new(r, "old_revoked", json_null());
	json_object_set(reps, name, r);
	json_array_append_new(json_object_get(ro, "replicas"), r);
	return r;
}

static void
set_if(json_t *o, const char *k, const char *v)
{
	if (v != NULL)
		json_object_set_new(o, k, json_string(v));
}

/*
 * A replica's step: a resumed run finds done what the interrupted one did
 * ("unchanged", "present"); the evidence of the change is kept.
 */
static void
set_step(json_t *o, const char *k, const char *v)
{
	const char *cur = jstr(o, k);

	if (v == NULL)
		return;
	if (cur != NULL && (strcmp(v, "unchanged") == 0 || strcmp(v, "present") == 0 ||
	    strcmp(v, "already gone") == 0))
		return;
	json_object_set_new(o, k, json_string(v));
}

/* Add the first non-empty value of a run's why to the rollover's. */
static void
why_from(json_t *ro, json_t *run, const char *k)
{
	const char *v = jstr(run, k);

	if (v != NULL && json_is_null(json_object_get(ro, k)))
		json_object_set_new(ro, k, json_string(v));
}

/* One rollover from its segments (an array, in log order). */
static json_t *
build_rollover(json_t *segsof, json_t *runs)
{
	json_t *ro = json_object(), *reps = json_object(), *bk = json_object(),
	    *prim = json_object(), *jruns = json_array(), *who = json_array(),
	    *errs = json_array(), *seg, *rec, *first = json_array_get(segsof, 0);
	const char *stop_step = NULL, *stop_err = NULL, *start = NULL, *end = NULL;
	int saw_current = 0, saw_retired = 0, stopped_last = 0;
	size_t i, j, nsegs = json_array_size(segsof);

	json_object_set_new(ro, "ag", json_string(jstr(first, "ag")));
	json_object_set_new(ro, "database", json_string(jstr(first, "database")));
	json_object_set_new(ro, "rotation", json_string(jstr(first, "rotation")));
	json_object_set_new(ro, "command", json_string(jstr(first, "command")));
	json_object_set_new(ro, "mode", json_string(jstr(first, "command")));
	json_object_set_new(ro, "old_version", json_null());
	json_object_set_new(ro, "new_version", json_null());
	json_object_set_new(ro, "reason", json_null());
	json_object_set_new(ro, "ticket", json_null());
	json_object_set_new(ro, "trigger", json_null());
	json_object_set_new(ro, "credential", json_null());
	json_object_set_new(bk, "reference", json_null());
	json_object_set_new(bk, "version", json_null());
	json_object_set_new(bk, "outcome", json_null());
	json_object_set_new(bk, "escrowed", json_array());
	json_object_set_new(bk, "restore_test", json_string("not run"));
	json_object_set_new(bk, "restore_test_time", json_null());
	json_object_set_new(prim, "added", json_null());
	json_object_set_new(prim, "old_dropped", json_null());
	json_object_set_new(ro, "replicas", json_array());
	json_array_foreach(segsof, i, seg) {
		json_t *run = json_object_get(runs, jstr(seg, "run_id")), *jr;
		int stopped = 0;
		char w[400];

		jr = run != NULL ? json_deep_copy(run) : json_object();
		if (run == NULL)
			json_object_set_new(jr, "run_id", json_string(jstr(seg, "run_id")));
		json_object_set_new(jr, "resumed", json_boolean(i > 0));
		json_array_append_new(jruns, jr);
		if (run != NULL) {
			why_from(ro, run, "reason");
			why_from(ro, run, "ticket");
			why_from(ro, run, "trigger");
			snprintf(w, sizeof(w), "%s@%s", jstr(run, "user") ? jstr(run, "user") : "?",
			    jstr(run, "host") ? jstr(run, "host") : "?");
			for (j = 0; j < json_array_size(who); j++)
				if (strcmp(json_string_value(json_array_get(who, j)), w) == 0)
					break;
			if (j == json_array_size(who))
				json_array_append_new(who, json_string(w));
		}
		json_array_foreach(json_object_get(seg, "records"), j, rec) {
			const char *action = jstr(rec, "action"), *step = NULL,
			    *ver = jstr2(rec, "keys", "version"), *out = jstr(rec, "outcome"),
			    *rep = jstr2(rec, "target", "replica"), *t = jstr(rec, "time");
			char cmd[16];

			if (start == NULL)
				start = t;
			end = t;
			if (json_is_null(json_object_get(ro, "credential")) &&
			    json_is_object(json_object_get(rec, "credential")))
				json_object_set(ro, "credential", json_object_get(rec, "credential"));
			if (jstr(rec, "error") != NULL) {
				char e[1200];
				snprintf(e, sizeof(e), "%s %s%s%s: %s", t ? t : "?", action,
				    rep ? " " : "", rep ? rep : "", jstr(rec, "error"));
				json_array_append_new(errs, json_string(e));
			}
			if (is_backup_evidence(action)) {
				if (strcmp(action, "restore-test") == 0) {
					const char *rt = jstr(bk, "restore_test");
					if (rt == NULL || strcmp(rt, "failed") != 0)
						set_if(bk, "restore_test", out);
				} else {
					json_t *e = json_object();
					json_object_set_new(e, "what", json_string(action + 7));
					json_object_set_new(e, "reference", jnull(jstr2(rec, "keys",
					    "reference")));
					json_object_set_new(e, "version", jnull(ver));
					json_object_set_new(e, "replica", jnull(rep));
					json_object_set_new(e, "outcome", jnull(out));
					json_array_append_new(json_object_get(bk, "escrowed"), e);
				}
				continue;
			}
			if (!rot_action(action, cmd, sizeof(cmd), &step))
				continue;
			if (strcmp(step, "pending") == 0 || strcmp(step, "adopt") == 0 ||
			    strcmp(step, "regenerate") == 0 || strcmp(step, "mark-current") == 0)
				set_if(ro, "new_version", ver);
			if (strcmp(step, "add") == 0 || strcmp(step, "regenerate") == 0) {
				set_if(ro, "new_version", ver);
				set_if(prim, "added", out);
			} else if (strcmp(step, "mark-current") == 0)
				saw_current = 1;
			else if (strcmp(step, "mark-retired") == 0) {
				saw_retired = 1;
				set_if(ro, "old_version", ver);
			} else if (strcmp(step, "mark-retiring") == 0)
				set_if(ro, "old_version", ver);
			else if (strcmp(step, "drop") == 0) {
				set_if(ro, "old_version", ver);
				set_if(prim, "old_dropped", out);
			} else if (strcmp(step, "prove") == 0 && ver != NULL &&
			    json_is_null(json_object_get(ro, "old_version")))
				set_if(ro, "old_version", ver);
			else if (strcmp(step, "backup") == 0) {
				set_if(bk, "reference", jstr2(rec, "keys", "reference"));
				set_if(bk, "version", ver);
				set_if(bk, "outcome", out);
			} else if (strcmp(step, "stopped") == 0) {
				stopped = 1;
				stop_step = out;
				stop_err = jstr(rec, "error");
			} else if (rep != NULL && strcmp(step, "register") == 0)
				set_step(replica_of(ro, reps, rep), "registered", out);
			else if (rep != NULL && strcmp(step, "verify") == 0)
				set_step(replica_of(ro, reps, rep), "verified", out);
			else if (rep != NULL && strcmp(step, "drop-credential") == 0) {
				set_step(replica_of(ro, reps, rep), "old_revoked", out);
				set_if(ro, "old_version", ver);
			}
		}
		if (i == nsegs - 1)
			stopped_last = stopped;
	}
	json_object_set_new(ro, "start", jnull(start));
	json_object_set_new(ro, "end", jnull(end));
	{
		json_t *lastrun = json_array_get(jruns, json_array_size(jruns) - 1);
		const char *outc;
		if (stopped_last)
			outc = "stopped";
		else if (saw_current && (saw_retired ||
		    json_is_null(json_object_get(ro, "old_version"))))
			outc = "completed";
		else if (json_is_true(json_object_get(lastrun, "interrupted")))
			outc = "interrupted";
		else if (json_is_null(json_object_get(lastrun, "end")))
			outc = "in progress";
		else
			outc = "incomplete";
		json_object_set_new(ro, "outcome", json_string(outc));
		json_object_set_new(ro, "step", jnull(stopped_last ? stop_step :
		    strcmp(outc, "interrupted") == 0 && jstr(first, "rotation")[0] == '\0' ?
		    "before a new version was written: nothing changed but a backup" : NULL));
		json_object_set_new(ro, "stop_error", jnull(stopped_last ? stop_err : NULL));
	}
	json_object_set_new(ro, "who", who);
	json_object_set_new(ro, "backup", bk);
	json_object_set_new(ro, "primary", prim);
	json_object_set_new(ro, "runs", jruns);
	json_object_set_new(ro, "errors", errs);
	json_decref(reps);
	return ro;
}

/*
 * Restore tests by escrow "reference\x1fversion": the outcome that counts
 * ("failed" once is failed) and its time.  One pass over the records.
 */
static json_t *
index_restore_tests(json_t *records)
{
	json_t *idx = json_object(), *rec, *e;
	char key[1200];
	size_t i;

	json_array_foreach(records, i, rec) {
		const char *a = jstr(rec, "action"), *r2 = jstr2(rec, "keys", "reference"),
		    *v2 = jstr2(rec, "keys", "version"), *out = jstr(rec, "outcome");
		if (a == NULL || strcmp(a, "restore-test") != 0 || r2 == NULL || v2 == NULL ||
		    out == NULL)
			continue;
		snprintf(key, sizeof(key), "%s\x1f%s", r2, v2);
		if ((e = json_object_get(idx, key)) != NULL && jstr(e, "outcome") != NULL &&
		    strcmp(jstr(e, "outcome"), "failed") == 0)
			continue;
		e = json_object();
		json_object_set_new(e, "outcome", json_string(out));
		json_object_set_new(e, "time", jnull(jstr(rec, "time")));
		json_object_set_new(idx, key, e);
	}
	return idx;
}

/* A later `backup --restore-test` of the rollover's own escrow version counts. */
static void
link_restore_tests(json_t *ro, json_t *idx)
{
	json_t *bk = json_object_get(ro, "backup"), *e;
	const char *ref = jstr(bk, "reference"), *ver = jstr(bk, "version"), *rt;
	char key[1200];

	if (ref == NULL || ver == NULL)
		return;
	snprintf(key, sizeof(key), "%s\x1f%s", ref, ver);
	if ((e = json_object_get(idx, key)) == NULL)
		return;
	rt = jstr(bk, "restore_test");
	if (rt == NULL || strcmp(rt, "failed") != 0) {
		set_if(bk, "restore_test", jstr(e, "outcome"));
		set_if(bk, "restore_test_time", jstr(e, "time"));
	}
}

static int
in_window(json_t *ro, const struct arep_filter *f)
{
	time_t s = 0, e = 0;
	const char *ag = jstr(ro, "ag"), *db = jstr(ro, "database");

	if (f == NULL)
		return 1;
	if (f->ag != NULL && (ag == NULL || strcmp(f->ag, ag) != 0))
		return 0;
	if (f->database != NULL && (db == NULL || strcmp(f->database, db) != 0))
		return 0;
	if (jstr(ro, "start") == NULL || util_parse_rfc3339(jstr(ro, "start"), &s) != 0)
		s = 0;
	if (jstr(ro, "end") == NULL || util_parse_rfc3339(jstr(ro, "end"), &e) != 0)
		e = s;
	if (f->since != 0 && e < f->since)
		return 0;
	if (f->until != 0 && s > f->until)
		return 0;
	return 1;
}

json_t *
arep_rollovers(json_t *records, const struct arep_filter *f)
{
	json_t *runs = json_object(), *segs = json_array(), *cur = json_object(),
	    *groups = json_object(), *order = json_array(), *out = json_array(), *rec, *seg,
	    *rtidx = index_restore_tests(records);
	size_t i;

	if (runs == NULL || segs == NULL || cur == NULL || groups == NULL || order == NULL ||
	    out == NULL || rtidx == NULL)
		goto fail;
	json_array_foreach(records, i, rec) {
		const char *action = jstr(rec, "action"), *step, *rot;
		char cmd[16];

		if (action == NULL)
			continue;
		if (strncmp(action, "run-", 4) == 0) {
			note_run(runs, rec, action);
			continue;
		}
		if (rot_action(action, cmd, sizeof(cmd), &step))
			seg = segment_for(segs, cur, rec, cmd, 1);
		else if (is_backup_evidence(action))
			seg = segment_for(segs, cur, rec, NULL, 0);
		else
			continue;
		if (seg == NULL)
			continue;
		json_array_append(json_object_get(seg, "records"), rec);
		rot = jstr2(rec, "keys", "rotation");
		if (rot != NULL && rot[0] != '\0' && jstr(seg, "rotation")[0] == '\0')
			json_object_set_new(seg, "rotation", json_string(rot));
	}
	/* Segments of one rotation id (of one database) are one rollover. */
	json_array_foreach(segs, i, seg) {
		char key[1200];
		json_t *g;

		if (jstr(seg, "rotation")[0] != '\0')
			snprintf(key, sizeof(key), "%s\x1f%s\x1f%s", jstr(seg, "ag"),
			    jstr(seg, "database"), jstr(seg, "rotation"));
		else
			snprintf(key, sizeof(key), "-\x1f%zu", i);
		if ((g = json_object_get(groups, key)) == NULL) {
			g = json_array();
			json_object_set_new(groups, key, g);
			json_array_append(order, g);
		}
		json_array_append(g, seg);
	}
	json_array_foreach(order, i, seg) {
		json_t *ro = build_rollover(seg, runs);
		if (ro == NULL)
			goto fail;
		link_restore_tests(ro, rtidx);
		if (in_window(ro, f))
			json_array_append_new(out, ro);
		else
			json_decref(ro);
	}
	json_decref(runs);
	json_decref(segs);
	json_decref(cur);
	json_decref(groups);
	json_decref(order);
	json_decref(rtidx);
	return out;
fail:
	json_decref(runs);
	json_decref(segs);
	json_decref(cur);
	json_decref(groups);
	json_decref(order);
	json_decref(rtidx);
	json_decref(out);
	return NULL;
}

static int
policy_cmp(const void *pa, const void *pb)
{
	json_t *a = *(json_t *const *)pa, *b = *(json_t *const *)pb;
	int oa = json_is_true(json_object_get(a, "overdue")),
	    ob = json_is_true(json_object_get(b, "overdue"));
	json_t *ga = json_object_get(a, "password_age"), *gb = json_object_get(b, "password_age");
	long long aa = json_is_integer(ga) ? json_integer_value(ga) : -1,
	    ab = json_is_integer(gb) ? json_integer_value(gb) : -1;

	if (oa != ob)
		return ob - oa;
	/* never rotated (no age) first among equals, then the oldest */
	if ((aa == -1) != (ab == -1))
		return aa == -1 ? -1 : 1;
	return aa < ab ? 1 : aa > ab ? -1 : 0;
}

static void
fmt_days(long long s, char *out, size_t len)
{
	if (s >= 86400)
		snprintf(out, len, "%lldd", s / 86400);
	else if (s >= 3600)
		snprintf(out, len, "%lldh", s / 3600);
	else
		snprintf(out, len, "%llds", s < 0 ? 0 : s);
}

json_t *
arep_policy(json_t *all, json_t *records, const struct arep_db *dbs, size_t ndbs, time_t now)
{
	json_t *out = json_array(), **rows = NULL, *ro, *rec;
	size_t i, j;

	if (out == NULL || (ndbs > 0 && (rows = calloc(ndbs, sizeof(*rows))) == NULL)) {
		json_decref(out);
		return NULL;
	}
	for (i = 0; i < ndbs; i++) {
		const char *last = NULL, *lastbk = NULL;
		time_t t;
		long long page = -1, bage = -1;
		int overdue = 0, boverdue = 0;
		char st[400], a1[32], a2[32];
		json_t *row = json_object();

		json_array_foreach(all, j, ro)
			if (strcmp(jstr(ro, "ag"), dbs[i].ag) == 0 &&
			    strcmp(jstr(ro, "database"), dbs[i].database) == 0 &&
			    strcmp(jstr(ro, "outcome"), "completed") == 0 && jstr(ro, "end") != NULL)
				last = jstr(ro, "end");
		json_array_foreach(records, j, rec) {
			const char *a = jstr(rec, "action");
			if (a != NULL && strcmp(a, "backup-dmk") == 0 &&
			    jstr(rec, "outcome") != NULL && strcmp(jstr(rec, "outcome"), "escrowed") == 0 &&
			    jstr2(rec, "target", "ag") != NULL &&
			    strcmp(jstr2(rec, "target", "ag"), dbs[i].ag) == 0 &&
			    jstr2(rec, "target", "database") != NULL &&
			    strcmp(jstr2(rec, "target", "database"), dbs[i].database) == 0)
				lastbk = jstr(rec, "time");
		}
		if (last != NULL && util_parse_rfc3339(last, &t) == 0)
			page = (long long)(now - t);
		if (lastbk != NULL && util_parse_rfc3339(lastbk, &t) == 0)
			bage = (long long)(now - t);
		if (dbs[i].rotate_every > 0 && (page < 0 || page > dbs[i].rotate_every))
			overdue = 1;
		if (dbs[i].backup_every > 0 && (bage < 0 || bage > dbs[i].backup_every))
			boverdue = 1;
		fmt_days(page, a1, sizeof(a1));
		fmt_days(dbs[i].rotate_every, a2, sizeof(a2));
		if (dbs[i].rotate_every <= 0)
			snprintf(st, sizeof(st), "no rotate_every; %s%s", page < 0 ?
			    "no completed rollover in these logs" : "password age ", page < 0 ? "" : a1);
		else if (page < 0)
			snprintf(st, sizeof(st), "OVERDUE: no completed rollover in these logs "
			    "(rotate_every %s)", a2);
		else
			snprintf(st, sizeof(st), "%s: password age %s, rotate_every %s",
			    overdue ? "OVERDUE" : "ok", a1, a2);
		if (boverdue) {
			size_t n = strlen(st);
			fmt_days(dbs[i].backup_every, a2, sizeof(a2));
			snprintf(st + n, sizeof(st) - n, "; backup OVERDUE (backup_every %s)", a2);
		}
		json_object_set_new(row, "ag", json_string(dbs[i].ag));
		json_object_set_new(row, "database", json_string(dbs[i].database));
		json_object_set_new(row, "rotate_every", dbs[i].rotate_every > 0 ?
		    json_integer(dbs[i].rotate_every) : json_null());
		json_object_set_new(row, "last_rollover", jnull(last));
		json_object_set_new(row, "password_age", page >= 0 ? json_integer(page) : json_null());
		json_object_set_new(row, "backup_every", dbs[i].backup_every > 0 ?
		    json_integer(dbs[i].backup_every) : json_null());
		json_object_set_new(row, "last_backup", jnull(lastbk));
		json_object_set_new(row, "backup_age", bage >= 0 ? json_integer(bage) : json_null());
		json_object_set_new(row, "overdue", json_boolean(overdue || boverdue));
		json_object_set_new(row, "status", json_string(st));
		rows[i] = row;
	}
	if (ndbs > 0)
		qsort(rows, ndbs, sizeof(*rows), policy_cmp);
	for (i = 0; i < ndbs; i++)
		json_array_append_new(out, rows[i]);
	free(rows);
	return out;
}
