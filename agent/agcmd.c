/* agcmd.c: the runner under every availability-group command (agcmd.h). */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "core/secret.h"
#include <openssl/sha.h>

#include "agcmd.h"
#include "cli.h"
#include "lease.h"
#include "markers.h"

/* getopt values of the common options without a short letter. */
enum { OPT_REASON = 0x100, OPT_TICKET, OPT_JOBS, OPT_SHARD };

#define AGCMD_JOBS_DEFAULT 4
#define AGCMD_JOBS_MAX 64
#define AGCMD_SHARDS_MAX 100000

static int
rank(int code)
{
	switch (code == 0 ? DMK_EXIT_OK : dmk_exit_code(code)) {
	case DMK_EXIT_SIGNAL: return 6;
	case DMK_EXIT_USAGE: return 5;
	case DMK_EXIT_FAILED: return 4;
	case DMK_EXIT_LOCKED: return 3;
	case DMK_EXIT_UNREACHABLE: return 2;
	case DMK_EXIT_INCOMPLETE: return 1;
	default: return 0;
	}
}

int
agcmd_worse(int a, int b)
{
	return rank(b) > rank(a) ? b : a;
}

/* Exit 2 says nothing changed: once a changing command's steps ran, a usage
 * or configuration error is a lasting cause of a partial run (3). */
static int
partial_if_stepped(struct agcmd_ctx *c, int code)
{
	if (c->changes && c->stepped && dmk_exit_code(code) == DMK_EXIT_USAGE) {
		c->lasting = 1;
		return DMK_ERR_INCOMPLETE;
	}
	return code;
}

void
agcmd_fail(struct agcmd_ctx *c, int code, const struct dmk_err *e)
{
	if (code == 0)
		return;
	code = partial_if_stepped(c, code);
	fprintf(c->errout != NULL ? c->errout : stderr, "dmkagent: %s\n", e->msg[0] ? e->msg :
	    dmk_strerror(code));
	c->nfailed++;
	if (agcmd_worse(c->worst, code) != c->worst || c->worst == 0) {
		c->worst = code;
		c->err = *e;
		c->err.code = code;
		c->err_printed = 1;
	}
}

static void keepv(struct agcmd_ctx *c, int code, int printed, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

static void
keepv(struct agcmd_ctx *c, int code, int printed, const char *fmt, va_list ap)
{
	code = partial_if_stepped(c, code);
	if (code == 0 || (c->worst != 0 && agcmd_worse(c->worst, code) == c->worst))
		return;
	c->worst = code;
	c->err.code = code;
	vsnprintf(c->err.msg, sizeof(c->err.msg), fmt, ap);
	c->err_printed = printed;
}

static void keep(struct agcmd_ctx *c, int code, int printed, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
keep(struct agcmd_ctx *c, int code, int printed, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	keepv(c, code, printed, fmt, ap);
	va_end(ap);
}

void
agcmd_keep(struct agcmd_ctx *c, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	keepv(c, code, 1, fmt, ap);
	va_end(ap);
}

void
agcmd_conclude(struct agcmd_ctx *c, int code, const char *fmt, ...)
{
	va_list ap;

	if (code == 0)
		return;
	va_start(ap, fmt);
	c->worst = 0;             /* the command's own word on its outcome */
	keepv(c, code, 0, fmt, ap);
	va_end(ap);
}

int
agcmd_plans(struct agcmd_ctx *c, const struct ag_run *run)
{
	size_t i;
	int worst = 0, o;

	for (i = 0; i < run->nplans; i++) {
		const struct db_plan *p = &run->plans[i];

		if ((o = plan_outcome(p)) == 0)
			continue;
		if (!dmk_err_is_temporary(p->code))
			c->lasting = 1;
		/* the text report showed it; with JSON the last line on stderr does */
		keep(c, o, c->a->output == OUTPUT_TEXT, "%s: %s", run->ag->name, p->error[0] ?
		    p->error : dmk_strerror(o));
		worst = agcmd_worse(worst, o);
	}
	for (i = 0; run->reps != NULL && i < run->nreps; i++)
		if (!run->reps[i].reached && run->reps[i].code != 0 &&
		    !dmk_err_is_temporary(run->reps[i].code) &&
		    run->reps[i].code != DMK_ERR_INCOMPLETE)
			c->lasting = 1;
	return worst;
}

const char *
agcmd_rerun(const struct agcmd_ctx *c, const char *text)
{
	return c->lasting ? "" : text;
}

int
agcmd_stopping(struct agcmd_ctx *c, const char *before)
{
	struct dmk_err e;
	char where[300];

	if (!dmk_interrupted())
		return 0;
	if (!c->interrupted) {
		snprintf(where, sizeof(where), "before %s", before);
		dmk_err_interrupted(&e, where);
		agcmd_fail(c, DMK_ERR_INTERRUPTED, &e);
		c->interrupted = 1;
	}
	return 1;
}

json_t *
agcmd_jstr(const char *s)
{
	return s != NULL && s[0] != '\0' ? json_string(s) : json_null();
}

json_t *
agcmd_jag(json_t *jags, const char *name)
{
	json_t *jag = json_object();

	json_object_set_new(jag, "name", json_string(name));
	json_object_set_new(jag, "primary", json_null());
	json_object_set_new(jag, "error", json_null());
	json_array_append_new(jags, jag);
	return jag;
}

FILE *
agcmd_textout(struct agent *a)
{
	return a->output == OUTPUT_JSON ? stderr : a->out;
}

unsigned long
agcmd_shard_of(const char *name, unsigned long n)
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	unsigned long long v = 0;
	size_t i;

	if (n <= 1)
		return 0;
	SHA256((const unsigned char *)name, strlen(name), md);
	for (i = 0; i < 8; i++)
		v = v << 8 | md[i];
	return (unsigned long)(v % n);
}

/* A whole decimal number in [lo, hi], nothing else. */
static int
number(const char *s, size_t len, unsigned long lo, unsigned long hi, unsigned long *out)
{
	unsigned long v = 0;
	size_t i;

	if (len == 0 || len > 9)
		return -1;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

static int
parse_jobs(struct agcmd_ctx *c, const char *arg, struct dmk_err *err)
{
	unsigned long v;

	if (number(arg, strlen(arg), 1, AGCMD_JOBS_MAX, &v) != 0)
		return dmk_errf(err, DMK_ERR_USAGE, "%s: --jobs takes a number of AGs to work on "
		    "at once, 1 to %d, not '%s'", c->cmd->name, AGCMD_JOBS_MAX, arg);
	c->jobs = (long)v;
	return 0;
}

/* --shard I/N, or auto/N with I from a Kubernetes Indexed Job's index. */
static int
parse_shard(struct agcmd_ctx *c, const char *arg, struct dmk_err *err)
{
	const char *slash = strchr(arg, '/'), *idx = arg, *env;
	unsigned long i, n;
	size_t ilen;

	if (slash == NULL || number(slash + 1, strlen(slash + 1), 1, AGCMD_SHARDS_MAX, &n) != 0)
		return dmk_errf(err, DMK_ERR_USAGE, "%s: --shard takes I/N (shard I of N, 0 <= I "
		    "< N, 1 <= N <= %d) or auto/N, not '%s'", c->cmd->name, AGCMD_SHARDS_MAX, arg);
	ilen = (size_t)(slash - arg);
	if (ilen == 4 && strncmp(arg, "auto", 4) == 0) {
		if ((env = getenv("JOB_COMPLETION_INDEX")) == NULL || env[0] == '\0')
			return dmk_errf(err, DMK_ERR_USAGE, "%s: --shard %s: JOB_COMPLETION_INDEX is "
			    "not set (a Kubernetes Indexed Job sets it); give --shard I/N instead",
			    c->cmd->name, arg);
		if (number(env, strlen(env), 0, n - 1, &i) != 0)
			return dmk_errf(err, DMK_ERR_USAGE, "%s: --shard %s: JOB_COMPLETION_INDEX='%.20s' "
			    "is not an index from 0 to %lu (does the Job's completions match N?)",
			    c->cmd->name, arg, env, n - 1);
	} else if (number(idx, ilen, 0, n - 1, &i) != 0)
		return dmk_errf(err, DMK_ERR_USAGE, "%s: --shard %s: I must be a number from 0 to "
		    "%lu (shards count from 0)", c->cmd->name, arg, n - 1);
	c->shard_i = i;
	c->shard_n = n;
	return 0;
}

/* The common options followed by the command's own. */
static int
parse(struct agcmd_ctx *c, int argc, char **argv, struct dmk_err *err)
{
	const struct agcmd *cmd = c->cmd;
	struct option lo[32];
	char so[64];
	const struct command *row = cli_find(cmd->name);
	const char *usage = row ? row->usage : cmd->name;
	size_t n = 0, i;
	int ch, r;

	lo[n++] = (struct option){ "ag", required_argument, NULL, 'a' };
	lo[n++] = (struct option){ "database", required_argument, NULL, 'd' };
	lo[n++] = (struct option){ "jobs", required_argument, NULL, OPT_JOBS };
	lo[n++] = (struct option){ "shard", required_argument, NULL, OPT_SHARD };
	snprintf(so, sizeof(so), ":a:d:%s%s", cmd->flags & AGCMD_DRY_RUN ? "n" : "",
	    cmd->shortopts ? cmd->shortopts : "");
	if (cmd->flags & AGCMD_DRY_RUN)
		lo[n++] = (struct option){ "dry-run", no_argument, NULL, 'n' };
	if (cmd->flags & (AGCMD_CHANGES | AGCMD_MAY_CHANGE)) {
		lo[n++] = (struct option){ "reason", required_argument, NULL, OPT_REASON };
		lo[n++] = (struct option){ "ticket", required_argument, NULL, OPT_TICKET };
	}
	for (i = 0; cmd->options && cmd->options[i].name && n < 31; i++)
		lo[n++] = cmd->options[i];
	lo[n] = (struct option){ NULL, 0, NULL, 0 };
	opterr = 0;
	while ((ch = getopt_long(argc, argv, so, lo, NULL)) != -1) {
		switch (ch) {
		case 'a': c->ag_filter = optarg; break;
		case 'd': c->db_filter = optarg; break;
		case OPT_JOBS:
			if ((r = parse_jobs(c, optarg, err)) != 0)
				return r;
			break;
		case OPT_SHARD:
			if ((r = parse_shard(c, optarg, err)) != 0)
				return r;
			break;
		case OPT_REASON:
			if ((r = markers_check_reason(optarg, err)) != 0)
				return r;
			c->a->reason = optarg;
			break;
		case OPT_TICKET:
			if ((r = markers_check_ticket(optarg, err)) != 0)
				return r;
			c->a->ticket = optarg;
			break;
		case 'n':
			if (cmd->flags & AGCMD_DRY_RUN) {
				c->dry_run = 1;
				break;
			}
			/* FALLTHROUGH */
		default:
			if (ch != '?' && ch != ':' && cmd->option != NULL) {
				if ((r = cmd->option(c, ch, optarg, err)) != 0)
					return r;
				break;
			}
			if (ch == ':')
				return dmk_errf(err, DMK_ERR_USAGE, "%s: option '%s' needs a value; "
				    "usage: dmkagent %s", cmd->name, argv[optind - 1], usage);
			return dmk_errf(err, DMK_ERR_USAGE, "%s: unknown option '%s'; usage: "
			    "dmkagent %s", cmd->name, argv[optind - 1], usage);
		}
	}
	if (optind != argc)
		return dmk_errf(err, DMK_ERR_USAGE, "%s takes no arguments ('%s'); usage: "
		    "dmkagent %s", cmd->name, argv[optind], usage);
	return cmd->check ? cmd->check(c, err) : 0;
}

static void
print_json(struct agcmd_ctx *c, json_t *root)
{
	char *s;

	if ((s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER)) != NULL) {
		fprintf(c->a->out, "%s\n", s);
		json_free_dump(s);
	}
}

/* Where an AG's claim lives: the store of its first database's password. */
static const struct secret_ref *
ag_lease_near(const struct agent *a, const struct conf_ag *ag)
{
	size_t i;

	for (i = 0; i < a->cfg->ndbs; i++)
		if (strcmp(a->cfg->dbs[i].ag, ag->label) == 0 &&
		    a->cfg->dbs[i].dmk_password.kind == REF_STORE)
			return &a->cfg->dbs[i].dmk_password;
	return NULL;
}

static void one_ag_steps(struct agcmd_ctx *c, const struct conf_ag *ag, json_t *jag);

/* With --shard, a changing command first claims the AG (lease.h): two
 * processes never work on one AG at once, whatever shards they were given. */
static void
one_ag(struct agcmd_ctx *c, const struct conf_ag *ag, json_t *jag)
{
	const struct secret_ref *near;
	struct lease l;
	struct dmk_err e;
	int r;

	memset(&l, 0, sizeof(l));
	if (c->shard_n > 0 && c->changes && (near = ag_lease_near(c->a, ag)) != NULL) {
		dmk_err_clear(&e);
		if ((r = lease_take_ag(c->a, near, ag->name, c->audit_name, &l, &e)) != 0) {
			agcmd_fail(c, r, &e);
			json_object_set_new(jag, "error", json_string(e.msg));
			return;
		}
	}
	one_ag_steps(c, ag, jag);
	dmk_err_clear(&e);
	if (lease_release(c->a, &l, &e) != 0)
		log_warn("%s", e.msg);
}

static void
one_ag_steps(struct agcmd_ctx *c, const struct conf_ag *ag, json_t *jag)
{
	struct ag_run run;
	struct dmk_err e;
	int r;

	if (c->cmd->run_ag_raw != NULL) {
		r = c->cmd->run_ag_raw(c, ag, jag);
		agcmd_keep(c, r, "%s: stopped (see above)", ag->name);
		return;
	}
	dmk_err_clear(&e);
	if ((r = ag_open(c->a, ag, c->db_filter, (c->cmd->flags & AGCMD_PROBE) != 0, &run,
	    &e)) != 0) {
		agcmd_fail(c, r, &e);
		json_object_set_new(jag, "error", json_string(e.msg));
		ag_close(&run);
		return;
	}
	json_object_set_new(jag, "primary", json_string(run.info.primary));
	c->stepped = 1;
	if ((c->cmd->flags & AGCMD_HEADER) && c->a->output == OUTPUT_TEXT)
		fprintf(c->a->out, "%s: %zu replica(s), primary %s%s\n", ag->name,
		    run.info.nreplicas, run.info.primary, c->dry_run ? " (dry run: nothing "
		    "changes)" : "");
	r = c->cmd->run_ag(c, &run, jag);
	agcmd_keep(c, r, "%s: not complete (see above)", ag->name);
	ag_close(&run);
}

/* ---- --jobs: AGs at once ---- */

struct job {
	struct agcmd_ctx c;           /* the AG's own outcome, text and agent */
	struct agent a;
	const struct conf_ag *ag;
	json_t *jag;
	FILE *out, *errf;
	char *out_text, *err_text;
	size_t out_len, err_len;
	int started, done;
};

struct pool {
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	struct job *jobs;
	size_t n, next;
	size_t active;                /* workers not yet returned */
};

static void
job_run(struct job *j)
{
	struct dmk_err e;
	int r;

	if ((r = agent_job_init(&j->a, j->c.a, j->out, &e)) != 0) {
		agcmd_fail(&j->c, r, &e);
		json_object_set_new(j->jag, "error", json_string(e.msg));
		return;
	}
	j->c.a = &j->a;
	one_ag(&j->c, j->ag, j->jag);
	agent_job_free(&j->a);
}

static void *
worker(void *arg)
{
	struct pool *p = arg;
	struct job *j;

	for (;;) {
		pthread_mutex_lock(&p->mtx);
		if (p->next >= p->n || dmk_interrupted()) {
			/* stopped at a step boundary: the AGs not begun stay so */
			pthread_mutex_unlock(&p->mtx);
			break;
		}
		j = &p->jobs[p->next++];
		j->started = 1;
		pthread_mutex_unlock(&p->mtx);
		job_run(j);
		if (j->out != NULL)
			fflush(j->out);
		if (j->errf != NULL)
			fflush(j->errf);
		pthread_mutex_lock(&p->mtx);
		j->done = 1;
		pthread_cond_broadcast(&p->cv);
		pthread_mutex_unlock(&p->mtx);
	}
	pthread_mutex_lock(&p->mtx);
	p->active--;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mtx);
	return NULL;
}

/* An AG job's outcome into the run's, as one_ag() in sequence would have. */
static void
job_merge(struct agcmd_ctx *c, const struct job *j)
{
	const struct agcmd_ctx *jc = &j->c;

	c->nfailed += jc->nfailed;
	c->interrupted |= jc->interrupted;
	c->lasting |= jc->lasting;       /* no rerun promise after a lasting cause */
	c->stepped |= jc->stepped;
	if (jc->worst != 0 && (c->worst == 0 || agcmd_worse(c->worst, jc->worst) != c->worst)) {
		c->worst = jc->worst;
		c->err = jc->err;
		c->err_printed = jc->err_printed;
	}
	if (c->cmd->data_size != 0 && c->cmd->merge != NULL)
		c->cmd->merge(c->data, jc->data);
}

static void
show(FILE *to, FILE **f, char **text, size_t *len)
{
	if (*f != NULL) {
		fclose(*f);
		*f = NULL;
	}
	if (*text != NULL) {
		fputs(*text, to);
		fflush(to);
		secure_wipe(*text, *len);   /* reports name no secret; wiped all the same */
		free(*text);
		*text = NULL;
	}
}

/*
 * The AGs on up to c->jobs threads.  Each AG's text is shown whole, in
 * config order, as soon as it and the AGs before it are done; its JSON
 * entry goes into jags in the same order.  SIGINT/SIGTERM: no new AG is
 * begun, and those under way stop at their next step boundary.
 */
static int
run_jobs(struct agcmd_ctx *c, const struct conf_ag **ags, size_t nags, json_t *jags,
    struct dmk_err *err)
{
	struct pool p;
	pthread_t *th = NULL;
	size_t i, nth = 0, want = (size_t)c->jobs < nags ? (size_t)c->jobs : nags;
	unsigned char *datas = NULL;
	int r = 0;

	memset(&p, 0, sizeof(p));
	pthread_mutex_init(&p.mtx, NULL);
	pthread_cond_init(&p.cv, NULL);
	if ((p.jobs = calloc(nags, sizeof(*p.jobs))) == NULL ||
	    (th = calloc(want, sizeof(*th))) == NULL ||
	    (c->cmd->data_size && (datas = calloc(nags, c->cmd->data_size)) == NULL)) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	p.n = nags;
	for (i = 0; i < nags; i++) {
		struct job *j = &p.jobs[i];

		j->c = *c;
		j->c.worst = 0;
		j->c.nfailed = 0;
		j->c.interrupted = 0;
		j->c.err_printed = 0;
		dmk_err_clear(&j->c.err);
		if (c->cmd->data_size) {
			j->c.data = datas + i * c->cmd->data_size;
			memcpy(j->c.data, c->data, c->cmd->data_size);
		}
		j->ag = ags[i];
		j->jag = json_object();
		json_object_set_new(j->jag, "name", json_string(ags[i]->name));
		json_object_set_new(j->jag, "primary", json_null());
		json_object_set_new(j->jag, "error", json_null());
		if ((j->out = open_memstream(&j->out_text, &j->out_len)) == NULL ||
		    (j->errf = open_memstream(&j->err_text, &j->err_len)) == NULL) {
			r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
			goto out;
		}
		j->c.errout = j->errf;
	}
	p.active = want;
	for (nth = 0; nth < want; nth++)
		if ((errno = pthread_create(&th[nth], NULL, worker, &p)) != 0) {
			int e = errno;
			pthread_mutex_lock(&p.mtx);
			p.active -= want - nth;
			pthread_mutex_unlock(&p.mtx);
			if (nth == 0) {
				r = dmk_errf(err, DMK_ERR_INTERNAL, "cannot start a thread: %s",
				    strerror(e));
				goto out;
			}
			break;    /* fewer at once */
		}
	/* Workers take AGs in config order: an AG never begun (a signal) has
	 * none begun after it. */
	for (i = 0; i < nags; i++) {
		struct job *j = &p.jobs[i];
		int done;

		pthread_mutex_lock(&p.mtx);
		while (!j->done && (j->started || p.active > 0))
			pthread_cond_wait(&p.cv, &p.mtx);
		done = j->done;
		pthread_mutex_unlock(&p.mtx);
		if (!done) {
			agcmd_stopping(c, ags[i]->name);   /* reported once, as in sequence */
			break;
		}
		json_array_append(jags, j->jag);
		show(c->a->out, &j->out, &j->out_text, &j->out_len);
		show(stderr, &j->errf, &j->err_text, &j->err_len);
		job_merge(c, j);
	}
out:
	for (i = 0; i < nth; i++)
		pthread_join(th[i], NULL);
	for (i = 0; p.jobs != NULL && i < nags; i++) {
		struct job *j = &p.jobs[i];
		show(c->a->out, &j->out, &j->out_text, &j->out_len);
		show(stderr, &j->errf, &j->err_text, &j->err_len);
		json_decref(j->jag);
	}
	free(p.jobs);
	free(th);
	free(datas);
	pthread_mutex_destroy(&p.mtx);
	pthread_cond_destroy(&p.cv);
	return r;
}

int
agcmd_main(struct agent *a, const struct agcmd *cmd, void *data, int argc, char **argv,
    struct dmk_err *err)
{
	struct agcmd_ctx c;
	const struct conf_ag **ags = NULL;
	json_t *root = NULL, *jags = NULL;
	FILE *held = NULL, *out = NULL;
	char *held_text = NULL;
	size_t nags = 0, i, held_len = 0;
	int r;

	memset(&c, 0, sizeof(c));
	c.a = a;
	c.cmd = cmd;
	c.data = data;
	c.changes = (cmd->flags & AGCMD_CHANGES) != 0;
	c.jobs = AGCMD_JOBS_DEFAULT;
	if ((r = parse(&c, argc, argv, err)) != 0)
		return r;
	if (c.dry_run)
		c.changes = 0;
	/* Refused before the lock, the audit log or any store is touched. */
	if (c.changes && a->cfg->require_ticket && a->ticket == NULL)
		return dmk_errf(err, DMK_ERR_USAGE, "%s: require_ticket = yes in [agent]: a "
		    "changing command needs --ticket ID (nothing was changed)", cmd->name);
	markers_set_why(a->reason, a->ticket);
	if ((r = ag_select(a, c.ag_filter, c.db_filter, &ags, &nags, err)) != 0)
		return r;
	if (c.shard_n > 0) {
		size_t k = 0;
		for (i = 0; i < nags; i++)
			if (agcmd_shard_of(ags[i]->name, c.shard_n) == c.shard_i)
				ags[k++] = ags[i];
		nags = k;
		log_info("%s: shard %lu/%lu: %zu availability group(s)", cmd->name, c.shard_i,
		    c.shard_n, nags);
	}
	if (c.audit_name == NULL)
		c.audit_name = cmd->name;
	a->command = c.audit_name;
	if (c.changes && (r = agent_begin(a, c.audit_name, err)) != 0)
		goto out;
	dmk_signals_install();
	/* -q: the text report is kept back and shown only when something needs
	 * attention, so that a scheduled run that did its job prints nothing. */
	if (a->quiet && a->output == OUTPUT_TEXT &&
	    (held = open_memstream(&held_text, &held_len)) != NULL) {
		out = a->out;
		a->out = held;
	}
	root = json_object();
	jags = json_array();
	if (c.shard_n > 0 && nags == 0 && a->output == OUTPUT_TEXT)
		fprintf(a->out, "%s: shard %lu/%lu holds no availability group of this "
		    "configuration: nothing to do\n", cmd->name, c.shard_i, c.shard_n);
	if (c.jobs > 1 && nags > 1 && (cmd->flags & AGCMD_PARALLEL)) {
		if ((r = run_jobs(&c, ags, nags, jags, err)) != 0)
			agcmd_fail(&c, r, err);
	} else
		for (i = 0; i < nags; i++) {
			json_t *jag = agcmd_jag(jags, ags[i]->name);
			if (agcmd_stopping(&c, ags[i]->name))
				break;
			one_ag(&c, ags[i], jag);
		}
	json_object_set_new(root, "command", json_string(cmd->name));
	if (cmd->flags & AGCMD_DRY_RUN)
		json_object_set_new(root, "dry_run", json_boolean(c.dry_run));
	if (cmd->finish != NULL)
		cmd->finish(&c, root);
	json_object_set_new(root, "complete", json_boolean(c.worst == 0));
	json_object_set_new(root, "exit", json_integer(c.worst == DMK_ERR_INTERRUPTED ?
	    DMK_EXIT_SIGNAL + dmk_interrupted() : c.worst ? dmk_exit_code(c.worst) : 0));
	json_object_set_new(root, "error", c.worst == 0 ? json_null() : json_string(c.err.msg));
	json_object_set_new(root, "ags", jags);
	jags = NULL;
	if (c.changes)
		agent_end(a, c.audit_name, c.worst);
	if (held != NULL) {
		fclose(held);
		a->out = out;
		if (c.worst != 0 && held_text != NULL)
			fputs(held_text, a->out);
		if (held_text != NULL)
			secure_wipe(held_text, held_len);
		free(held_text);
	}
	if (a->output == OUTPUT_JSON)
		print_json(&c, root);
	r = c.worst;
	if (r != 0) {
		if (c.err_printed)
			dmk_errf(err, r, "%s: %zu problem(s), reported above", cmd->name,
			    c.nfailed ? c.nfailed : 1);
		else
			dmk_errf(err, r, "%s", c.err.msg);
	}
out:
	json_decref(jags);
	json_decref(root);
	free(ags);
	return r;
}
