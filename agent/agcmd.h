/*
 * agcmd.h: the one runner under every availability-group command
 * (register, verify, status, rotate, recover, backup).
 *
 * A command is a struct agcmd: its name, usage and own options, flags, and
 * its steps for one opened AG.  The runner does the rest, the same way for
 * every command: the common options (--ag, --database, --dry-run), the
 * choice of AGs, the run lock and the run-start/run-end audit records of a
 * command that changes something, opening each AG, reporting (text on
 * stdout, or one JSON document with the same top-level keys for every
 * command), and the exit code by one precedence (agcmd_worse()).  A command
 * that changes something also takes --reason TEXT and --ticket ID (into
 * every audit record and the markers of the versions it writes), and with
 * require_ticket = yes refuses, exit 2, before anything, without a ticket.
 *
 * Fleets: --jobs N works on up to N AGs at once (AGCMD_PARALLEL commands),
 * each in its own thread with its own struct agent (agent_job_init: its own
 * store handles, sessions and lease); its text is kept and printed whole,
 * in config order, when it and every AG before it are done.  --shard I/N
 * (or auto/N: I from $JOB_COMPLETION_INDEX) keeps the AGs whose
 * agcmd_shard_of(name, N) is I, and a changing command then claims each AG
 * with its store lease first (lease_take_ag): an AG another process holds
 * is left to it (locked, exit 4).
 *
 * Errors: a step reports each failure once through agcmd_fail(), which
 * prints it and keeps the worst; the runner's own return then carries a
 * one-line summary that does not repeat what was printed.
 */
#ifndef DMK_AGCMD_H
#define DMK_AGCMD_H

#include <getopt.h>

#include <jansson.h>

#include "replicas.h"

struct agcmd;

/* One run of a command; what steps see. */
struct agcmd_ctx {
	struct agent *a;
	const struct agcmd *cmd;
	const char *ag_filter;        /* --ag, or NULL */
	const char *db_filter;        /* --database, or NULL */
	int dry_run;
	int changes;                  /* took the lock and writes run records */
	const char *audit_name;       /* the run records' command (default: cmd->name) */
	void *data;                   /* the command's own options and totals */
	int worst;                    /* the outcome that wins so far (DMK_ERR_*) */
	struct dmk_err err;           /* its message */
	int err_printed;              /* that message was printed already */
	size_t nfailed;               /* failures reported through agcmd_fail() */
	int interrupted;              /* SIGINT/SIGTERM seen and reported */
	long jobs;                    /* --jobs: AGs at once (AGCMD_PARALLEL commands) */
	unsigned long shard_i, shard_n; /* --shard I/N; shard_n 0: every AG */
	FILE *errout;                 /* where agcmd_fail prints: NULL stderr; an AG
	                                 job's buffer, shown when its AG is */
	int lasting;                  /* a cause a rerun alone will not fix was seen
	                                 (agcmd_plans): no "a rerun finishes the rest" */
	int stepped;                  /* a changing command's steps ran on an opened AG:
	                                 something may have changed, so a usage or
	                                 configuration error met now is partial (3),
	                                 never 2 ("nothing changed") */
};

enum agcmd_flags {
	AGCMD_CHANGES = 1u << 0,      /* takes the lock and writes run records (not --dry-run) */
	AGCMD_PROBE = 1u << 1,        /* ag_open() proves each password on the primary */
	AGCMD_DRY_RUN = 1u << 2,      /* accepts --dry-run */
	AGCMD_HEADER = 1u << 3,       /* text: "AG: N replica(s), primary P" per AG */
	AGCMD_MAY_CHANGE = 1u << 4,   /* an option makes it change things (check sets
	                                 c->changes): takes --reason and --ticket too */
	AGCMD_PARALLEL = 1u << 5,     /* --jobs N may run N AGs at once: the steps keep
	                                 per-AG state in run and jag, and data is read
	                                 only, or copied per AG (data_size) and merged */
};

struct agcmd {
	const char *name;             /* "register": its row in cli.c (usage) and the
	                                 audit records' command */
	unsigned flags;
	const struct option *options; /* the command's own, {NULL}-terminated; may be NULL */
	const char *shortopts;        /* their short letters (getopt syntax) */
	/* One of the command's own options; DMK_ERR_USAGE refuses it. */
	int (*option)(struct agcmd_ctx *c, int ch, const char *arg, struct dmk_err *err);
	/* After the options: refuse combinations; may set c->changes. */
	int (*check)(struct agcmd_ctx *c, struct dmk_err *err);
	/*
	 * The steps for one AG.  run is opened (run->info, plans); jag is the
	 * AG's entry in the JSON report ("name", "primary" and "error" are the
	 * runner's; the step adds the rest).  Returns the AG's outcome; failures
	 * it already reported through agcmd_fail() need not be returned again.
	 * May be NULL when run_ag_raw is set.
	 */
	int (*run_ag)(struct agcmd_ctx *c, struct ag_run *run, json_t *jag);
	/* Instead of run_ag: the step opens the AG itself (recover opens it
	 * again after each failover).  The runner does not call ag_open. */
	int (*run_ag_raw)(struct agcmd_ctx *c, const struct conf_ag *ag, json_t *jag);
	/* After every AG: the command's members of the JSON report (root), or its
	 * closing text line; may set the summary with agcmd_conclude(). */
	void (*finish)(struct agcmd_ctx *c, json_t *root);
	/* With --jobs: when data_size is set, each AG job gets its own copy of
	 * data (taken after check) and merge adds the job's totals to data, in
	 * config order, after the job.  0: every job shares data, read only. */
	size_t data_size;
	void (*merge)(void *data, const void *job_data);
};

/* The --shard of an AG: the first 8 bytes of SHA-256(name), big-endian, mod n. */
unsigned long agcmd_shard_of(const char *name, unsigned long n);

/* Parse, run over each AG, report; returns the outcome that wins. */
int agcmd_main(struct agent *a, const struct agcmd *cmd, void *data, int argc, char **argv,
    struct dmk_err *err);

/*
 * The exit precedence, the same for every command (README, dmkagent(1)):
 * 2 usage > 1 failed > 4 locked > 5 unreachable > 3 incomplete > 0.  A
 * lasting failure needs a person whatever else happened; a lock means
 * another run is at work; unreachable means try the whole run later;
 * incomplete means the rest can be finished by a rerun when its cause is
 * temporary (c->lasting says when not).  Between two outcomes of the same
 * rank, the first stays.  Returns the one that wins.
 */
int agcmd_worse(int a, int b);

/* Print one failure (once, here), add it to the count, keep the worst. */
void agcmd_fail(struct agcmd_ctx *c, int code, const struct dmk_err *e);
/*
 * After a step's report printed the plans' errors: keep each unusable
 * plan's outcome (plan_outcome(): exit 1 for a store that refused the
 * credentials, a missing secret or database; 5 for a store unreachable; 3
 * for a password that does not open the DMK) with its message, and note a
 * lasting cause (also a replica refused for good, such as a failed login).
 * Returns the worst of them.
 */
int agcmd_plans(struct agcmd_ctx *c, const struct ag_run *run);
/* The "; a rerun finishes the rest" of a summary: "" once a lasting cause
 * was seen, so that only temporary trouble promises a rerun will help. */
const char *agcmd_rerun(const struct agcmd_ctx *c, const char *text);

/* Keep an outcome whose detail was shown another way (a report line). */
void agcmd_keep(struct agcmd_ctx *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The summary line the command ends with when its outcome is code. */
void agcmd_conclude(struct agcmd_ctx *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * At a step boundary: 1 when SIGINT/SIGTERM asked the run to stop (then
 * reported once, as stopped before the named thing), else 0.  The runner
 * checks between AGs; steps check between databases and between steps.
 */
int agcmd_stopping(struct agcmd_ctx *c, const char *before);

/* The AG's JSON entry: {name, primary, error, ...}. */
json_t *agcmd_jag(json_t *jags, const char *name);
/* A JSON string, or null for NULL or "". */
json_t *agcmd_jstr(const char *s);
/* Where text for people goes: stdout, or stderr when stdout carries JSON. */
FILE *agcmd_textout(struct agent *a);

#endif
