/*
 * metrics.h: [agent] metrics_file, written atomically (a temporary file in
 * the same directory, fsync, rename, mode 0644) after every `run` in the
 * Prometheus text exposition format (0.0.4) for the node exporter's
 * textfile collector.  Metrics (labels ag, database unless said):
 *   dmkagent_last_run_timestamp_seconds           (no labels) when the run ended
 *   dmkagent_last_run_exit_code                   (no labels)
 *   dmkagent_runs_total{exit="N"}                 counter, kept in state_dir
 *   dmkagent_last_success_timestamp_seconds       the last run that passed for it
 *   dmkagent_replicas_registered                  replicas where verify passed
 *   dmkagent_replicas_expected                    replicas the AG lists
 *   dmkagent_password_age_seconds                 age of the store version in force
 *   dmkagent_backup_age_seconds                   age of the newest escrowed DMK backup
 *   dmkagent_restore_test_age_seconds             age of the newest passed restore test
 *   dmkagent_rotation_unfinished                  1 when a rotation is left unfinished
 * A sample whose value is unknown (never backed up, AG not reached) is left
 * out rather than given a made-up value.  The counters, last-success
 * times and each database's last values live in state_dir/metrics.json: a
 * run limited to some databases (--ag, --database, hook serve's events)
 * keeps the others' last known values.
 */
#ifndef DMK_METRICS_H
#define DMK_METRICS_H

#include <time.h>

#include "core/dmk.h"

struct agent;

struct metrics_db {
	const char *ag, *db;
	int seen;                   /* this run reached it */
	int ok;                     /* every step for it passed in this run */
	long registered, expected;  /* -1 unknown */
	time_t pw_time, backup_time, restore_time;   /* 0 unknown */
	int unfinished;             /* -1 unknown */
};

/* Write the file (when metrics_file is set) for a run that ended with code. */
int metrics_write(struct agent *a, const struct metrics_db *m, size_t n, int code,
    struct dmk_err *err);

/* Pure: the exposition text for these samples, appended to out. */
struct buf;
int metrics_format(struct buf *out, const struct metrics_db *m, size_t n, int exit_code,
    time_t now, const long long runs[6], const time_t *last_success);

#endif
