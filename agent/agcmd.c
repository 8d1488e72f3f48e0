/* agcmd.c: the runner under every availability-group command (agcmd.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "agcmd.h"
#include "cli.h"
#include "markers.h"

/* getopt values of the common options without a short letter. */
enum { OPT_REASON = 0x100, OPT_TICKET };

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
	fprintf(stderr, "dmkagent: %s\n", e->msg[0] ? e->msg : dmk_strerror(code));
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

static void
one_ag(struct agcmd_ctx *c, const struct conf_ag *ag, json_t *jag)
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
