/* metrics.c: [agent] metrics_file in the Prometheus text format (metrics.h). */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "core/dmk.h"
#include "core/buf.h"
#include "core/secret.h"
#include "agent.h"
#include "metrics.h"

/* A label value: backslash, double quote and newline escaped (the format's rule). */
static int
put_label(struct buf *b, const char *s)
{
	int r = 0;

	for (; *s && r == 0; s++) {
		if (*s == '\\')
			r = buf_puts(b, "\\\\");
		else if (*s == '"')
			r = buf_puts(b, "\\\"");
		else if (*s == '\n')
			r = buf_puts(b, "\\n");
		else
			r = buf_putc(b, *s);
	}
	return r;
}

static int
head(struct buf *b, const char *name, const char *type, const char *help)
{
	return buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int
sample(struct buf *b, const char *name, const struct metrics_db *m, long long v)
{
	int r;

	if ((r = buf_printf(b, "%s{ag=\"", name)) != 0 || (r = put_label(b, m->ag)) != 0 ||
	    (r = buf_puts(b, "\",database=\"")) != 0 || (r = put_label(b, m->db)) != 0)
		return r;
	return buf_printf(b, "\"} %lld\n", v);
}

enum which { W_SUCCESS, W_REG, W_EXP, W_PWAGE, W_BKAGE, W_RTAGE, W_UNFIN };

static const struct {
	const char *name, *help;
} defs[] = {
	{ "dmkagent_last_success_timestamp_seconds", "When a run last passed for the database "
	  "(every step, every replica)." },
	{ "dmkagent_replicas_registered", "Replicas where the store's current password is "
	  "registered and verified." },
	{ "dmkagent_replicas_expected", "Replicas the availability group lists." },
	{ "dmkagent_password_age_seconds", "Age of the store version of the DMK password in force." },
	{ "dmkagent_backup_age_seconds", "Age of the newest escrowed DMK backup." },
	{ "dmkagent_restore_test_age_seconds", "Age of the newest passed restore test." },
	{ "dmkagent_rotation_unfinished", "1 when a rotation was left unfinished." },
};

int
metrics_format(struct buf *b, const struct metrics_db *m, size_t n, int exit_code,
    time_t now, const long long runs[6], const time_t *last_success)
{
	size_t i, w;
	int r = 0;

	r |= head(b, "dmkagent_last_run_timestamp_seconds", "gauge", "When the last run ended.");
	r |= buf_printf(b, "dmkagent_last_run_timestamp_seconds %lld\n", (long long)now);
	r |= head(b, "dmkagent_last_run_exit_code", "gauge", "The last run's exit code.");
	r |= buf_printf(b, "dmkagent_last_run_exit_code %d\n", exit_code);
	r |= head(b, "dmkagent_runs_total", "counter", "Runs by exit code.");
	for (i = 0; i < 6; i++)
		r |= buf_printf(b, "dmkagent_runs_total{exit=\"%zu\"} %lld\n", i, runs[i]);
	for (w = 0; w < sizeof(defs) / sizeof(defs[0]) && r == 0; w++) {
		r |= head(b, defs[w].name, "gauge", defs[w].help);
		for (i = 0; i < n && r == 0; i++) {
			const struct metrics_db *x = &m[i];
			long long v;

			switch ((enum which)w) {
			case W_SUCCESS:
				if (last_success[i] == 0)
					continue;
				v = last_success[i];
				break;
			case W_REG:
				if (!x->seen || x->registered < 0)
					continue;
				v = x->registered;
				break;
			case W_EXP:
				if (!x->seen || x->expected < 0)
					continue;
				v = x->expected;
				break;
			case W_PWAGE:
				if (x->pw_time == 0)
					continue;
				v = now - x->pw_time;
				break;
			case W_BKAGE:
				if (x->backup_time == 0)
					continue;
				v = now - x->backup_time;
				break;
			case W_RTAGE:
				if (x->restore_time == 0)
					continue;
				v = now - x->restore_time;
				break;
			default:
				if (x->unfinished < 0)
					continue;
				v = x->unfinished;
				break;
			}
			r |= sample(b, defs[w].name, x, v < 0 ? 0 : v);
		}
	}
	return r ? DMK_ERR_NOMEM : 0;
}

static int
write_atomic(const char *path, const char *data, size_t len, mode_t mode, struct dmk_err *err)
{
	char tmp[4200];
	size_t off = 0;
	ssize_t w;
	int fd;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: path too long", path);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode)) == -1)
		return dmk_errf(err, DMK_ERR_IO, "%s: %s", tmp, strerror(errno));
	while (off < len) {
		if ((w = write(fd, data + off, len - off)) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		off += (size_t)w;
	}
	if (off != len || fchmod(fd, mode) != 0 || fsync(fd) != 0) {
		int e = errno;
		close(fd);
		unlink(tmp);
		return dmk_errf(err, DMK_ERR_IO, "%s: cannot write: %s", tmp, strerror(e));
	}
	close(fd);
	if (rename(tmp, path) != 0) {
		int e = errno;
		unlink(tmp);
		return dmk_errf(err, DMK_ERR_IO, "%s: cannot rename into place: %s", path,
		    strerror(e));
	}
	return 0;
}

int
metrics_write(struct agent *a, const struct metrics_db *m, size_t n, int code,
    struct dmk_err *err)
{
	char spath[4200], key[600];
	long long runs[6] = { 0 };
	time_t now = time(NULL), *last = NULL;
	json_t *st, *jr, *jl, *jd;
	struct metrics_db *cur = NULL;
	struct buf b;
	char *s;
	size_t i;
	int ex = code == 0 ? 0 : dmk_exit_code(code), r;

	if (a->cfg == NULL || a->cfg->metrics_file[0] == '\0')
		return 0;
	/* The counters and last-success times, kept between runs. */
	snprintf(spath, sizeof(spath), "%s/metrics.json", a->cfg->state_dir);
	st = json_load_file(spath, 0, NULL);
	if (!json_is_object(st)) {
		json_decref(st);
		st = json_object();
	}
	if (!json_is_object(jr = json_object_get(st, "runs")))
		json_object_set_new(st, "runs", jr = json_object());
	if (!json_is_object(jl = json_object_get(st, "last_success")))
		json_object_set_new(st, "last_success", jl = json_object());
	for (i = 0; i < 6; i++) {
		json_t *x;
		snprintf(key, sizeof(key), "%zu", i);
		x = json_object_get(jr, key);
		runs[i] = json_is_integer(x) && json_integer_value(x) >= 0 ? json_integer_value(x) : 0;
	}
	if (ex >= 0 && ex < 6) {
		runs[ex]++;
		snprintf(key, sizeof(key), "%d", ex);
		json_object_set_new(jr, key, json_integer(runs[ex]));
	}
	if ((last = calloc(n + 1, sizeof(*last))) == NULL) {
		json_decref(st);
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	}
	if (!json_is_object(jd = json_object_get(st, "dbs")))
		json_object_set_new(st, "dbs", jd = json_object());
	if ((cur = calloc(n + 1, sizeof(*cur))) == NULL) {
		free(last);
		json_decref(st);
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	}
	for (i = 0; i < n; i++) {
		json_t *x, *d;
		snprintf(key, sizeof(key), "%s/%s", m[i].ag, m[i].db);
		if (m[i].seen && m[i].ok)
			json_object_set_new(jl, key, json_integer((json_int_t)now));
		x = json_object_get(jl, key);
		last[i] = json_is_integer(x) ? (time_t)json_integer_value(x) : 0;
		cur[i] = m[i];
		if (m[i].seen) {
			/* kept for a later run that does not reach this one (--database) */
			d = json_object();
			json_object_set_new(d, "registered", json_integer(m[i].registered));
			json_object_set_new(d, "expected", json_integer(m[i].expected));
			json_object_set_new(d, "pw_time", json_integer((json_int_t)m[i].pw_time));
			json_object_set_new(d, "backup_time", json_integer((json_int_t)m[i].backup_time));
			json_object_set_new(d, "restore_time", json_integer((json_int_t)m[i].restore_time));
			json_object_set_new(d, "unfinished", json_integer(m[i].unfinished));
			json_object_set_new(jd, key, d);
		} else if (json_is_object(d = json_object_get(jd, key))) {
			cur[i].seen = 1;
			cur[i].registered = (long)json_integer_value(json_object_get(d, "registered"));
			cur[i].expected = (long)json_integer_value(json_object_get(d, "expected"));
			cur[i].pw_time = (time_t)json_integer_value(json_object_get(d, "pw_time"));
			cur[i].backup_time = (time_t)json_integer_value(json_object_get(d, "backup_time"));
			cur[i].restore_time = (time_t)json_integer_value(json_object_get(d, "restore_time"));
			cur[i].unfinished = (int)json_integer_value(json_object_get(d, "unfinished"));
		}
	}
	s = json_dumps(st, JSON_SORT_KEYS);
	json_decref(st);
	mkdir(a->cfg->state_dir, 0700);
	r = s != NULL ? write_atomic(spath, s, strlen(s), 0600, err) :
	    dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	if (s != NULL)
		json_free_dump(s);
	if (r != 0) {
		free(last);
		free(cur);
		return r;
	}
	buf_init(&b, 0);
	if ((r = metrics_format(&b, cur, n, ex, now, runs, last)) != 0)
		r = dmk_errf(err, r, "metrics: out of memory");
	else
		r = write_atomic(a->cfg->metrics_file, (const char *)b.data, b.len, 0644, err);
	buf_free(&b);
	free(last);
	free(cur);
	return r;
}
