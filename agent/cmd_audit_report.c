/*
 * cmd_audit_report.c: dmkagent audit report, audit verify-report, audit ship.
 *
 * report: the log is verified first (chain, MACs, checkpoint and anchor, as
 * audit verify does); only then are its records read and turned into
 * rollovers (auditrep.c) and rendered as text, JSON, CSV or one
 * self-contained HTML file.  A log that fails verification gets a report
 * that says so in its first line, with no rollovers, and exit 1.
 *
 * Signatures (--sign KEYREF): Ed25519 over the exact bytes of the report,
 * detached, in a small text file (REPORT.sig unless --signature FILE):
 *   dmkagent-report-signature: 1
 *   algorithm: ed25519
 *   report-sha256: <hex>
 *   public-key-sha256: <hex of the SubjectPublicKeyInfo DER>
 *   signature: <base64, 64 bytes>
 * verify-report checks it offline with the published public key (PEM).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "cli.h"
#include "auditrep.h"
#include "auditship.h"

#define REPORT_USAGE "usage: dmkagent audit report [FILE...] [--since DATE] [--until DATE] " \
	"[--ag AG] [--database DB] [--output text|json|csv|html] [--key REF] [--sign KEYREF] " \
	"[--out FILE] [--signature FILE]"
#define VERIFY_REPORT_USAGE "usage: dmkagent audit verify-report REPORT --pubkey FILE " \
	"[--signature FILE]"
#define REPORT_MAX (256L * 1024 * 1024)

enum rep_format { FMT_TEXT, FMT_JSON, FMT_CSV, FMT_HTML };

static const char *
js(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static const char *
dash(const char *s)
{
	return s != NULL && s[0] != '\0' ? s : "-";
}

/* RFC 3339, or a date (since: its start; until: its end). */
static int
parse_date(const char *s, int end_of_day, time_t *out)
{
	char b[64];
	size_t n = strlen(s);

	if (n == 10 && s[4] == '-' && s[7] == '-') {
		snprintf(b, sizeof(b), "%sT%s", s, end_of_day ? "23:59:59Z" : "00:00:00Z");
		return util_parse_rfc3339(b, out);
	}
	return util_parse_rfc3339(s, out);
}

/* The audit log and the rotated files before it (LOG.N, oldest first). */
static size_t
discover(const char *log, char paths[][PATH_MAX], size_t max)
{
	struct stat st;
	size_t n = 0, k;

	for (k = max - 1; k >= 1; k--) {
		char p[PATH_MAX];
		if ((size_t)snprintf(p, sizeof(p), "%s.%zu", log, k) >= sizeof(p))
			continue;
		if (stat(p, &st) == 0 && S_ISREG(st.st_mode) && n < max - 1)
			util_strlcpy(paths[n++], p, PATH_MAX);
	}
	util_strlcpy(paths[n++], log, PATH_MAX);
	return n;
}

/* What the report reads: runs, rotations, and backup evidence. */
static int
wanted(json_t *rec)
{
	const char *a = json_string_value(json_object_get(rec, "action"));

	return a != NULL && (strncmp(a, "run-", 4) == 0 || strncmp(a, "rotate-", 7) == 0 ||
	    strncmp(a, "recover-", 8) == 0 || strncmp(a, "backup-", 7) == 0 ||
	    strcmp(a, "restore-test") == 0);
}

/* The records the report reads, of the (verified) files, in order. */
static int
load_records(const char *const *paths, size_t n, json_t *out, struct dmk_err *err)
{
	char *line = NULL;
	size_t cap = 0, i;
	ssize_t len;
	long long lineno;
	FILE *f;

	for (i = 0; i < n; i++) {
		if ((f = fopen(paths[i], "r")) == NULL)
			return dmk_errf(err, DMK_ERR_IO, "%s: %s", paths[i], strerror(errno));
		lineno = 0;
		while ((len = getline(&line, &cap, f)) != -1) {
			json_t *j;
			lineno++;
			if ((j = json_loadb(line, (size_t)len, 0, NULL)) == NULL) {
				fclose(f);
				free(line);
				return dmk_errf(err, DMK_ERR_VERIFY, "%s:%lld: changed while being read",
				    paths[i], lineno);
			}
			if (!wanted(j)) {
				json_decref(j);
				continue;
			}
			/* Not read by the report: less to hold for a long log. */
			json_object_del(j, "prev");
			json_object_del(j, "mac");
			json_array_append_new(out, j);
		}
		fclose(f);
	}
	free(line);
	return 0;
}

/* ---- rendering ---- */

static void
fmt_dur(json_t *v, char *out, size_t len)
{
	long long s;

	if (!json_is_integer(v)) {
		snprintf(out, len, "-");
		return;
	}
	s = json_integer_value(v);
	if (s >= 86400)
		snprintf(out, len, "%lldd", s / 86400);
	else if (s >= 3600)
		snprintf(out, len, "%lldh", s / 3600);
	else
		snprintf(out, len, "%llds", s);
}

static void
integrity_line(json_t *in, char *out, size_t len)
{
	if (!json_is_true(json_object_get(in, "ok")))
		snprintf(out, len, "INTEGRITY FAILED: %s; this report lists no rollovers: the "
		    "records cannot be trusted", dash(js(in, "error")));
	else
		snprintf(out, len, "integrity: ok: %lld record(s) in %zu file(s), hash chain intact, "
		    "MACs %s; checkpoint %s; anchor %s",
		    (long long)json_integer_value(json_object_get(in, "records")),
		    json_array_size(json_object_get(in, "files")), dash(js(in, "mac")),
		    dash(js(in, "checkpoint")), dash(js(in, "anchor")));
}

static void
render_text(json_t *m, FILE *o)
{
	json_t *in = json_object_get(m, "integrity"), *v, *ro, *r;
	char line[2048], a1[32], a2[32];
	size_t i, j;

	integrity_line(in, line, sizeof(line));
	fprintf(o, "%s\n", line);
	json_array_foreach(json_object_get(in, "notes"), i, v)
		fprintf(o, "  note: %s\n", json_string_value(v));
	if (!json_is_true(json_object_get(in, "ok")))
		return;
	fprintf(o, "generated %s from %s\n", js(m, "generated"), dash(js(m, "source")));
	fprintf(o, "\npolicy (overdue first):\n");
	if (json_array_size(json_object_get(m, "policy")) == 0)
		fprintf(o, "  (no configuration read: no schedules to compare)\n");
	json_array_foreach(json_object_get(m, "policy"), i, v) {
		fmt_dur(json_object_get(v, "password_age"), a1, sizeof(a1));
		fmt_dur(json_object_get(v, "backup_age"), a2, sizeof(a2));
		fprintf(o, "  %-8s %s/%s: %s; last rollover %s; last backup %s (age %s)\n",
		    json_is_true(json_object_get(v, "overdue")) ? "OVERDUE" : "ok", js(v, "ag"),
		    js(v, "database"), js(v, "status"), dash(js(v, "last_rollover")),
		    dash(js(v, "last_backup")), a2);
	}
	fprintf(o, "\nrollovers: %zu\n", json_array_size(json_object_get(m, "rollovers")));
	json_array_foreach(json_object_get(m, "rollovers"), i, ro) {
		json_t *bk = json_object_get(ro, "backup"), *cr = json_object_get(ro, "credential");
		fprintf(o, "\n%s/%s rotation %s (%s)\n", js(ro, "ag"), js(ro, "database"),
		    dash(js(ro, "rotation")), js(ro, "command"));
		fprintf(o, "  outcome:  %s%s%s\n", js(ro, "outcome"), js(ro, "step") ? " at: " : "",
		    js(ro, "step") ? js(ro, "step") : "");
		fprintf(o, "  time:     %s .. %s\n", dash(js(ro, "start")), dash(js(ro, "end")));
		fprintf(o, "  who:     ");
		json_array_foreach(json_object_get(ro, "who"), j, v)
			fprintf(o, " %s", json_string_value(v));
		fprintf(o, "\n  why:      reason: %s; ticket: %s; trigger: %s\n", dash(js(ro, "reason")),
		    dash(js(ro, "ticket")), dash(js(ro, "trigger")));
		if (json_is_object(cr))
			fprintf(o, "  seen as:  store %s; SQL Server login %s\n", dash(js(cr, "store")),
			    dash(js(cr, "sql")));
		fprintf(o, "  versions: old %s -> new %s\n", dash(js(ro, "old_version")),
		    dash(js(ro, "new_version")));
		fprintf(o, "  backup:   %s version %s (%s); restore test: %s\n",
		    dash(js(bk, "reference")), dash(js(bk, "version")), dash(js(bk, "outcome")),
		    dash(js(bk, "restore_test")));
		json_array_foreach(json_object_get(ro, "runs"), j, r)
			fprintf(o, "  run %s: %s %s .. %s by %s@%s: %s%s\n", js(r, "run_id"),
			    dash(js(r, "command")), dash(js(r, "start")), dash(js(r, "end")),
			    dash(js(r, "user")), dash(js(r, "host")), dash(js(r, "outcome")),
			    json_is_true(json_object_get(r, "resumed")) ? " (resumed the rollover)" : "");
		fprintf(o, "  %-24s %-12s %-12s %s\n", "replica", "registered", "verified",
		    "old revoked");
		json_array_foreach(json_object_get(ro, "replicas"), j, r)
			fprintf(o, "  %-24s %-12s %-12s %s\n", js(r, "name"), dash(js(r, "registered")),
			    dash(js(r, "verified")), dash(js(r, "old_revoked")));
		json_array_foreach(json_object_get(ro, "errors"), j, v)
			fprintf(o, "  error: %s\n", json_string_value(v));
	}
}

static void
csv_field(FILE *o, const char *s, int last)
{
	const char *p;

	s = s ? s : "";
	if (strpbrk(s, ",\"\r\n") != NULL) {
		fputc('"', o);
		for (p = s; *p; p++) {
			if (*p == '"')
				fputc('"', o);
			fputc(*p, o);
		}
		fputc('"', o);
	} else
		fputs(s, o);
	fputs(last ? "\r\n" : ",", o);
}

static void
render_csv(json_t *m, FILE *o)
{
	static const char *const hdr[] = { "ag", "database", "rotation", "command", "start",
	    "end", "outcome", "step", "who", "reason", "ticket", "trigger", "old_version",
	    "new_version", "backup_reference", "backup_version", "restore_test", "runs",
	    "interrupted_runs", "replica", "registered", "verified", "old_revoked", NULL };
	json_t *in = json_object_get(m, "integrity"), *ro, *r, *v;
	char line[2048];
	size_t i, j, k;

	if (!json_is_true(json_object_get(in, "ok"))) {
		integrity_line(in, line, sizeof(line));
		fprintf(o, "# %s\r\n", line);
		return;
	}
	for (i = 0; hdr[i] != NULL; i++)
		csv_field(o, hdr[i], hdr[i + 1] == NULL);
	json_array_foreach(json_object_get(m, "rollovers"), i, ro) {
		json_t *bk = json_object_get(ro, "backup"), *reps = json_object_get(ro, "replicas");
		char who[1024] = "", runs[1024] = "", intr[1024] = "";
		size_t nrep = json_array_size(reps);

		json_array_foreach(json_object_get(ro, "who"), k, v)
			snprintf(who + strlen(who), sizeof(who) - strlen(who), "%s%s", k ? " " : "",
			    json_string_value(v));
		json_array_foreach(json_object_get(ro, "runs"), k, v) {
			snprintf(runs + strlen(runs), sizeof(runs) - strlen(runs), "%s%s", k ? " " : "",
			    js(v, "run_id"));
			if (json_is_true(json_object_get(v, "interrupted")))
				snprintf(intr + strlen(intr), sizeof(intr) - strlen(intr), "%s%s",
				    intr[0] ? " " : "", js(v, "run_id"));
		}
		for (j = 0; j < (nrep ? nrep : 1); j++) {
			r = json_array_get(reps, j);
			csv_field(o, js(ro, "ag"), 0);
			csv_field(o, js(ro, "database"), 0);
			csv_field(o, js(ro, "rotation"), 0);
			csv_field(o, js(ro, "command"), 0);
			csv_field(o, js(ro, "start"), 0);
			csv_field(o, js(ro, "end"), 0);
			csv_field(o, js(ro, "outcome"), 0);
			csv_field(o, js(ro, "step"), 0);
			csv_field(o, who, 0);
			csv_field(o, js(ro, "reason"), 0);
			csv_field(o, js(ro, "ticket"), 0);
			csv_field(o, js(ro, "trigger"), 0);
			csv_field(o, js(ro, "old_version"), 0);
			csv_field(o, js(ro, "new_version"), 0);
			csv_field(o, js(bk, "reference"), 0);
			csv_field(o, js(bk, "version"), 0);
			csv_field(o, js(bk, "restore_test"), 0);
			csv_field(o, runs, 0);
			csv_field(o, intr, 0);
			csv_field(o, r ? js(r, "name") : NULL, 0);
			csv_field(o, r ? js(r, "registered") : NULL, 0);
			csv_field(o, r ? js(r, "verified") : NULL, 0);
			csv_field(o, r ? js(r, "old_revoked") : NULL, 1);
		}
	}
}

static void
h(FILE *o, const char *s)
{
	for (s = s ? s : "-"; *s; s++)
		switch (*s) {
		case '&': fputs("&amp;", o); break;
		case '<': fputs("&lt;", o); break;
		case '>': fputs("&gt;", o); break;
		case '"': fputs("&quot;", o); break;
		case '\'': fputs("&#39;", o); break;
		default: fputc(*s, o);
		}
}

static void
td(FILE *o, const char *s)
{
	fputs("<td>", o);
	h(o, s);
	fputs("</td>", o);
}

static const char *
outcome_class(const char *s)
{
	if (s == NULL)
		return "";
	if (strcmp(s, "completed") == 0 || strcmp(s, "ok") == 0 || strcmp(s, "added") == 0 ||
	    strcmp(s, "present") == 0 || strcmp(s, "dropped") == 0 || strcmp(s, "passed") == 0)
		return "good";
	if (strcmp(s, "stopped") == 0 || strcmp(s, "failed") == 0 || strcmp(s, "gap") == 0 ||
	    strcmp(s, "OVERDUE") == 0)
		return "bad";
	return "warn";
}

static void
tdc(FILE *o, const char *s)
{
	fprintf(o, "<td class=\"%s\">", outcome_class(s));
	h(o, s);
	fputs("</td>", o);
}

static void
render_html(json_t *m, FILE *o)
{
	json_t *in = json_object_get(m, "integrity"), *v, *ro, *r, *seen;
	char line[2048], a1[32], prev[600] = "";
	size_t i, j;
	int ok = json_is_true(json_object_get(in, "ok"));

	integrity_line(in, line, sizeof(line));
	/* The first line says whether the log verified, in any viewer. */
	fputs("<!-- ", o);
	for (const char *p = line; *p; p++)
		fputc(*p == '-' && p[1] == '-' ? '_' : *p, o);
	fputs(" -->\n<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
	    "<title>dmkagent audit report</title>\n<style>\n"
	    "body{font-family:sans-serif;margin:2em;color:#222}\n"
	    "table{border-collapse:collapse;margin:0.5em 0 1.5em}\n"
	    "th,td{border:1px solid #bbb;padding:0.2em 0.6em;text-align:left;font-size:0.9em}\n"
	    "th{background:#eee}.good{background:#e3f6e3}.bad{background:#fbe0e0}"
	    ".warn{background:#fff4d6}\n.banner{padding:0.6em;font-weight:bold}\n"
	    "ol.timeline li{margin:0.2em 0}\n</style></head><body>\n", o);
	fprintf(o, "<h1>dmkagent audit report</h1>\n<p class=\"banner %s\" id=\"integrity\">",
	    ok ? "good" : "bad");
	h(o, line);
	fputs("</p>\n", o);
	if (json_array_size(json_object_get(in, "notes")) > 0) {
		fputs("<ul>\n", o);
		json_array_foreach(json_object_get(in, "notes"), i, v) {
			fputs("<li>", o);
			h(o, json_string_value(v));
			fputs("</li>\n", o);
		}
		fputs("</ul>\n", o);
	}
	if (!ok) {
		fputs("</body></html>\n", o);
		return;
	}
	fputs("<p>Generated ", o);
	h(o, js(m, "generated"));
	fputs(" from ", o);
	h(o, js(m, "source"));
	fputs(".</p>\n<h2>Summary</h2>\n<table><tr><th>AG</th><th>Database</th><th>Rotation</th>"
	    "<th>Start</th><th>End</th><th>Outcome</th><th>Who</th><th>Reason</th><th>Ticket</th>"
	    "<th>Versions</th><th>Runs</th></tr>\n", o);
	json_array_foreach(json_object_get(m, "rollovers"), i, ro) {
		char who[1024] = "", ver[200];
		json_array_foreach(json_object_get(ro, "who"), j, v)
			snprintf(who + strlen(who), sizeof(who) - strlen(who), "%s%s", j ? " " : "",
			    json_string_value(v));
		snprintf(ver, sizeof(ver), "%s \xe2\x86\x92 %s", dash(js(ro, "old_version")),
		    dash(js(ro, "new_version")));
		snprintf(a1, sizeof(a1), "%zu", json_array_size(json_object_get(ro, "runs")));
		fputs("<tr>", o);
		td(o, js(ro, "ag"));
		td(o, js(ro, "database"));
		fprintf(o, "<td><a href=\"#r%zu\">", i);
		h(o, dash(js(ro, "rotation")));
		fputs("</a></td>", o);
		td(o, js(ro, "start"));
		td(o, js(ro, "end"));
		tdc(o, js(ro, "outcome"));
		td(o, who);
		td(o, js(ro, "reason"));
		td(o, js(ro, "ticket"));
		td(o, ver);
		td(o, a1);
		fputs("</tr>\n", o);
	}
	fputs("</table>\n<h2>Policy</h2>\n<table><tr><th>AG</th><th>Database</th><th>Status</th>"
	    "<th>Last rollover</th><th>Last backup</th></tr>\n", o);
	json_array_foreach(json_object_get(m, "policy"), i, v) {
		fputs("<tr>", o);
		td(o, js(v, "ag"));
		td(o, js(v, "database"));
		tdc(o, json_is_true(json_object_get(v, "overdue")) ? "OVERDUE" : "ok");
		fputs("<td>", o);
		h(o, js(v, "status"));
		fputs("</td>", o);
		td(o, js(v, "last_rollover"));
		td(o, js(v, "last_backup"));
		fputs("</tr>\n", o);
	}
	fputs("</table>\n<h2>Timeline per database</h2>\n", o);
	seen = json_object();
	json_array_foreach(json_object_get(m, "rollovers"), i, ro) {
		char key[600];
		size_t k;
		snprintf(key, sizeof(key), "%s/%s", js(ro, "ag"), js(ro, "database"));
		if (json_object_get(seen, key) != NULL)
			continue;
		json_object_set_new(seen, key, json_true());
		fputs("<h3>", o);
		h(o, key);
		fputs("</h3>\n<ol class=\"timeline\">\n", o);
		json_array_foreach(json_object_get(m, "rollovers"), k, r) {
			char k2[600];
			snprintf(k2, sizeof(k2), "%s/%s", js(r, "ag"), js(r, "database"));
			if (strcmp(k2, key) != 0)
				continue;
			fprintf(o, "<li><a href=\"#r%zu\">", k);
			h(o, js(r, "start"));
			fputs("</a> ", o);
			fprintf(o, "<span class=\"%s\">", outcome_class(js(r, "outcome")));
			h(o, js(r, "outcome"));
			fputs("</span>: version ", o);
			h(o, dash(js(r, "old_version")));
			fputs(" \xe2\x86\x92 ", o);
			h(o, dash(js(r, "new_version")));
			fprintf(o, ", %zu run(s)</li>\n", json_array_size(json_object_get(r, "runs")));
		}
		fputs("</ol>\n", o);
	}
	json_decref(seen);
	fputs("<h2>Details</h2>\n", o);
	json_array_foreach(json_object_get(m, "rollovers"), i, ro) {
		json_t *bk = json_object_get(ro, "backup"), *cr = json_object_get(ro, "credential");
		fprintf(o, "<h3 id=\"r%zu\">", i);
		h(o, js(ro, "ag"));
		fputs("/", o);
		h(o, js(ro, "database"));
		fputs(" rotation ", o);
		h(o, dash(js(ro, "rotation")));
		fputs("</h3>\n<table>", o);
		fputs("<tr><th>Command</th>", o);
		td(o, js(ro, "command"));
		fputs("</tr><tr><th>Outcome</th>", o);
		tdc(o, js(ro, "outcome"));
		fputs("</tr><tr><th>Stopped at</th>", o);
		td(o, js(ro, "step"));
		fputs("</tr><tr><th>Reason</th>", o);
		td(o, js(ro, "reason"));
		fputs("</tr><tr><th>Ticket</th>", o);
		td(o, js(ro, "ticket"));
		fputs("</tr><tr><th>Trigger</th>", o);
		td(o, js(ro, "trigger"));
		fputs("</tr><tr><th>Store credential</th>", o);
		td(o, js(cr, "store"));
		fputs("</tr><tr><th>SQL Server login</th>", o);
		td(o, js(cr, "sql"));
		fputs("</tr><tr><th>Old version</th>", o);
		td(o, js(ro, "old_version"));
		fputs("</tr><tr><th>New version</th>", o);
		td(o, js(ro, "new_version"));
		fputs("</tr><tr><th>Backup escrowed first</th>", o);
		snprintf(prev, sizeof(prev), "%s version %s (%s)", dash(js(bk, "reference")),
		    dash(js(bk, "version")), dash(js(bk, "outcome")));
		td(o, prev);
		fputs("</tr><tr><th>Restore test</th>", o);
		tdc(o, js(bk, "restore_test"));
		fputs("</tr></table>\n<table><tr><th>Run</th><th>Command</th><th>Start</th>"
		    "<th>End</th><th>By</th><th>Outcome</th><th>Resumed</th></tr>\n", o);
		json_array_foreach(json_object_get(ro, "runs"), j, r) {
			char by[400];
			snprintf(by, sizeof(by), "%s@%s", dash(js(r, "user")), dash(js(r, "host")));
			fputs("<tr>", o);
			td(o, js(r, "run_id"));
			td(o, js(r, "command"));
			td(o, js(r, "start"));
			td(o, js(r, "end"));
			td(o, by);
			tdc(o, js(r, "outcome"));
			td(o, json_is_true(json_object_get(r, "resumed")) ? "yes" : "no");
			fputs("</tr>\n", o);
		}
		fputs("</table>\n<table><tr><th>Replica</th><th>New password registered</th>"
		    "<th>Verified</th><th>Old credential revoked</th></tr>\n", o);
		json_array_foreach(json_object_get(ro, "replicas"), j, r) {
			fputs("<tr>", o);
			td(o, js(r, "name"));
			tdc(o, js(r, "registered"));
			tdc(o, js(r, "verified"));
			tdc(o, js(r, "old_revoked"));
			fputs("</tr>\n", o);
		}
		fputs("</table>\n", o);
		if (json_array_size(json_object_get(ro, "errors")) > 0) {
			fputs("<ul>\n", o);
			json_array_foreach(json_object_get(ro, "errors"), j, v) {
				fputs("<li class=\"bad\">", o);
				h(o, json_string_value(v));
				fputs("</li>\n", o);
			}
			fputs("</ul>\n", o);
		}
	}
	fputs("</body></html>\n", o);
}

static void
render(json_t *m, enum rep_format fmt, FILE *o)
{
	char *s;

	switch (fmt) {
	case FMT_TEXT: render_text(m, o); break;
	case FMT_CSV: render_csv(m, o); break;
	case FMT_HTML: render_html(m, o); break;
	case FMT_JSON:
		/* A failed log: one line, so that the first line says so. */
		s = json_dumps(m, JSON_PRESERVE_ORDER | (json_is_true(json_object_get(
		    json_object_get(m, "integrity"), "ok")) ? JSON_INDENT(2) : JSON_COMPACT));
		if (s != NULL)
			fprintf(o, "%s\n", s);
		json_free_dump(s);
		break;
	}
}

/* ---- signatures ---- */

static int
b64(const unsigned char *in, size_t len, char *out, size_t outlen)
{
	if (outlen < 4 * ((len + 2) / 3) + 1)
		return -1;
	EVP_EncodeBlock((unsigned char *)out, in, (int)len);
	return 0;
}

static int
pubkey_id(EVP_PKEY *k, char hex[65])
{
	unsigned char *der = NULL, md[SHA256_DIGEST_LENGTH];
	int n;

	if ((n = i2d_PUBKEY(k, &der)) <= 0)
		return -1;
	SHA256(der, (size_t)n, md);
	OPENSSL_free(der);
	util_hex(md, sizeof(md), hex);
	return 0;
}

static int
write_file(const char *path, const char *data, size_t len, mode_t mode, struct dmk_err *err)
{
	char tmp[PATH_MAX + 8];
	int fd;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		return dmk_errf(err, DMK_ERR_USAGE, "%s: path too long", path);
	unlink(tmp);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)) == -1)
		return dmk_errf(err, DMK_ERR_IO, "%s: %s", tmp, strerror(errno));
	if (write(fd, data, len) != (ssize_t)len || fsync(fd) == -1) {
		close(fd);
		unlink(tmp);
		return dmk_errf(err, DMK_ERR_IO, "%s: %s", tmp, strerror(errno));
	}
	close(fd);
	if (rename(tmp, path) == -1) {
		unlink(tmp);
		return dmk_errf(err, DMK_ERR_IO, "%s: %s", path, strerror(errno));
	}
	return 0;
}

/* The Ed25519 private key behind keyref (PEM), before anything is written. */
static int
load_signing_key(struct agent *a, const char *keyref, EVP_PKEY **out, struct dmk_err *err)
{
	struct secret_ref ref;
	struct secret *pem = NULL;
	EVP_PKEY *k = NULL;
	BIO *bio = NULL;
	int r;

	*out = NULL;
	if ((r = ref_parse(keyref, &ref, err)) != 0)
		return dmk_err_prefix(err, "--sign");
	if ((r = agent_resolve(a, &ref, 0, &pem, NULL, err)) != 0)
		return dmk_err_prefix(err, "--sign %s", keyref);
	if ((bio = BIO_new_mem_buf(secret_reveal(pem), (int)secret_len(pem))) == NULL ||
	    (k = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)) == NULL)
		r = dmk_errf(err, DMK_ERR_CONFIG, "--sign %s: not a PEM private key", keyref);
	else if (EVP_PKEY_get_base_id(k) != EVP_PKEY_ED25519)
		r = dmk_errf(err, DMK_ERR_CONFIG, "--sign %s: not an Ed25519 key (make one with "
		    "'openssl genpkey -algorithm ed25519')", keyref);
	BIO_free(bio);
	secret_free(pem);
	if (r != 0) {
		EVP_PKEY_free(k);
		return r;
	}
	*out = k;
	return 0;
}

static int
sign_report(EVP_PKEY *k, const char *data, size_t len, const char *sigpath,
    struct dmk_err *err)
{
	EVP_MD_CTX *mc = NULL;
	unsigned char sig[64], md[SHA256_DIGEST_LENGTH];
	size_t siglen = sizeof(sig);
	char sig64[100], hex[65], kid[65], text[512];
	int r, n;

	if ((mc = EVP_MD_CTX_new()) == NULL || EVP_DigestSignInit(mc, NULL, NULL, NULL, k) != 1 ||
	    EVP_DigestSign(mc, sig, &siglen, (const unsigned char *)data, len) != 1 ||
	    siglen != 64 || pubkey_id(k, kid) != 0 || b64(sig, siglen, sig64, sizeof(sig64)) != 0) {
		r = dmk_errf(err, DMK_ERR_INTERNAL, "--sign: signing failed");
		goto out;
	}
	SHA256((const unsigned char *)data, len, md);
	util_hex(md, sizeof(md), hex);
	n = snprintf(text, sizeof(text), "dmkagent-report-signature: 1\nalgorithm: ed25519\n"
	    "report-sha256: %s\npublic-key-sha256: %s\nsignature: %s\n", hex, kid, sig64);
	r = write_file(sigpath, text, (size_t)n, 0644, err);
out:
	EVP_MD_CTX_free(mc);
	return r;
}

static int
read_all(const char *path, long max, char **out, size_t *len, struct dmk_err *err)
{
	FILE *f;
	long n;
	char *b;

	*out = NULL;
	if ((f = fopen(path, "rb")) == NULL)
		return dmk_errf(err, DMK_ERR_IO, "%s: %s", path, strerror(errno));
	if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || n > max ||
	    fseek(f, 0, SEEK_SET) != 0) {
		fclose(f);
		return dmk_errf(err, DMK_ERR_IO, "%s: unreadable or larger than %ld bytes", path, max);
	}
	if ((b = malloc((size_t)n + 1)) == NULL) {
		fclose(f);
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	}
	if (fread(b, 1, (size_t)n, f) != (size_t)n) {
		fclose(f);
		free(b);
		return dmk_errf(err, DMK_ERR_IO, "%s: short read", path);
	}
	fclose(f);
	b[n] = '\0';
	*out = b;
	*len = (size_t)n;
	return 0;
}

/* The value after "name: " on its own line of the signature file. */
static int
sig_field(const char *text, const char *name, char *out, size_t len)
{
	const char *p = text;
	size_t n = strlen(name), l;

	while (p != NULL && *p) {
		if (strncmp(p, name, n) == 0 && p[n] == ':' && p[n + 1] == ' ') {
			const char *v = p + n + 2, *e = strchr(v, '\n');
			l = e ? (size_t)(e - v) : strlen(v);
			if (l >= len)
				return -1;
			memcpy(out, v, l);
			out[l] = '\0';
			return 0;
		}
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	return -1;
}

int
cmd_audit_verify_report(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	static const struct option opts[] = {
		{ "pubkey", required_argument, NULL, 'p' },
		{ "signature", required_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 },
	};
	const char *pubpath = NULL, *sigpath = NULL, *report;
	char sigdef[PATH_MAX], ver[16], alg[32], hex[80], kid[80], sig64[200], khex[65], rhex[65];
	char *data = NULL, *sigtext = NULL;
	unsigned char sig[100], md[SHA256_DIGEST_LENGTH];
	size_t len = 0, slen = 0;
	EVP_PKEY *k = NULL;
	EVP_MD_CTX *mc = NULL;
	FILE *f = NULL;
	int ch, r, n;

	optind = 0;     /* a full reset: options may follow REPORT */
	while ((ch = getopt_long(argc, argv, "p:s:", opts, NULL)) != -1) {
		if (ch == 'p')
			pubpath = optarg;
		else if (ch == 's')
			sigpath = optarg;
		else
			return dmk_errf(err, DMK_ERR_USAGE, VERIFY_REPORT_USAGE);
	}
	if (optind + 1 != argc || pubpath == NULL)
		return dmk_errf(err, DMK_ERR_USAGE, VERIFY_REPORT_USAGE);
	report = argv[optind];
	if (sigpath == NULL) {
		if ((size_t)snprintf(sigdef, sizeof(sigdef), "%s.sig", report) >= sizeof(sigdef))
			return dmk_errf(err, DMK_ERR_USAGE, "%s: path too long", report);
		sigpath = sigdef;
	}
	if ((f = fopen(pubpath, "r")) == NULL) {
		r = dmk_errf(err, DMK_ERR_IO, "%s: %s", pubpath, strerror(errno));
		goto out;
	}
	if ((k = PEM_read_PUBKEY(f, NULL, NULL, NULL)) == NULL ||
	    EVP_PKEY_get_base_id(k) != EVP_PKEY_ED25519) {
		r = dmk_errf(err, DMK_ERR_USAGE, "%s: not an Ed25519 public key in PEM (openssl "
		    "pkey -in KEY -pubout)", pubpath);
		goto out;
	}
	if ((r = read_all(sigpath, 4096, &sigtext, &slen, err)) != 0 ||
	    (r = read_all(report, REPORT_MAX, &data, &len, err)) != 0)
		goto out;
	if (sig_field(sigtext, "dmkagent-report-signature", ver, sizeof(ver)) != 0 ||
	    strcmp(ver, "1") != 0 || sig_field(sigtext, "algorithm", alg, sizeof(alg)) != 0 ||
	    strcmp(alg, "ed25519") != 0 || sig_field(sigtext, "report-sha256", hex, sizeof(hex)) ||
	    sig_field(sigtext, "public-key-sha256", kid, sizeof(kid)) ||
	    sig_field(sigtext, "signature", sig64, sizeof(sig64)) || strlen(sig64) != 88) {
		r = dmk_errf(err, DMK_ERR_VERIFY, "%s: not a dmkagent report signature (version 1, "
		    "ed25519)", sigpath);
		goto out;
	}
	if ((n = EVP_DecodeBlock(sig, (const unsigned char *)sig64, 88)) != 66 ||
	    sig64[86] != '=' || sig64[87] != '=') {
		r = dmk_errf(err, DMK_ERR_VERIFY, "%s: malformed signature", sigpath);
		goto out;
	}
	if (pubkey_id(k, khex) != 0 || strcmp(khex, kid) != 0) {
		r = dmk_errf(err, DMK_ERR_VERIFY, "%s: signed with another key (public-key-sha256 "
		    "%.64s; %s is %s)", sigpath, kid, pubpath, khex);
		goto out;
	}
	SHA256((const unsigned char *)data, len, md);
	util_hex(md, sizeof(md), rhex);
	if ((mc = EVP_MD_CTX_new()) == NULL || EVP_DigestVerifyInit(mc, NULL, NULL, NULL, k) != 1 ||
	    EVP_DigestVerify(mc, sig, 64, (const unsigned char *)data, len) != 1) {
		r = dmk_errf(err, DMK_ERR_VERIFY, "%s: BAD signature: the report is not the one "
		    "signed (sha256 %s, signed %.64s)", report, rhex, hex);
		goto out;
	}
	fprintf(a->out, "%s: good Ed25519 signature (key sha256 %s, report sha256 %s)\n", report,
	    khex, rhex);
	r = 0;
out:
	if (f != NULL)
		fclose(f);
	EVP_MD_CTX_free(mc);
	EVP_PKEY_free(k);
	free(data);
	free(sigtext);
	return r;
}

/* ---- the report ---- */

static json_t *
jn(const char *s)
{
	return s != NULL ? json_string(s) : json_null();
}

int
cmd_audit_report(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	static const struct option opts[] = {
		{ "since", required_argument, NULL, 's' },
		{ "until", required_argument, NULL, 'u' },
		{ "ag", required_argument, NULL, 'a' },
		{ "database", required_argument, NULL, 'd' },
		{ "output", required_argument, NULL, 'o' },
		{ "key", required_argument, NULL, 'k' },
		{ "sign", required_argument, NULL, 'S' },
		{ "out", required_argument, NULL, 'O' },
		{ "signature", required_argument, NULL, 'G' },
		{ NULL, 0, NULL, 0 },
	};
	static char found[AUDIT_VERIFY_FILES_MAX][PATH_MAX];
	struct arep_filter flt;
	struct arep_db *dbs = NULL;
	struct secret_ref kref;
	struct secret *key = NULL;
	struct audit_ckpt local, anchor;
	struct audit_check chk[2];
	struct audit_report *rep = NULL;
	const char *keytext = NULL, *signref = NULL, *outpath = NULL, *sigpath = NULL;
	const char *since = NULL, *until = NULL, *paths[AUDIT_VERIFY_FILES_MAX], *lastfile;
	char ckpath[4096], anchor_state[64] = "not compared", local_state[64] = "not compared";
	char tbuf[32], sigdef[PATH_MAX + 8], *text = NULL;
	enum rep_format fmt = a->output == OUTPUT_JSON ? FMT_JSON : FMT_TEXT;
	size_t npaths = 0, nchk = 0, i, ndbs = 0, tlen = 0;
	json_t *model = NULL, *records = NULL, *integ, *all = NULL, *notes, *files;
	int ch, r, have_config = 0, lockfd = -1, found_ck, verified = 0;
	struct dmk_err verr;
	FILE *mem = NULL;
	EVP_PKEY *signkey = NULL;

	memset(&flt, 0, sizeof(flt));
	optind = 0;     /* a full reset: options may follow the FILEs */
	while ((ch = getopt_long(argc, argv, "s:u:a:d:o:k:S:O:G:", opts, NULL)) != -1) {
		switch (ch) {
		case 's': since = optarg; break;
		case 'u': until = optarg; break;
		case 'a': flt.ag = optarg; break;
		case 'd': flt.database = optarg; break;
		case 'k': keytext = optarg; break;
		case 'S': signref = optarg; break;
		case 'O': outpath = optarg; break;
		case 'G': sigpath = optarg; break;
		case 'o':
			if (strcmp(optarg, "text") == 0)
				fmt = FMT_TEXT;
			else if (strcmp(optarg, "json") == 0)
				fmt = FMT_JSON;
			else if (strcmp(optarg, "csv") == 0)
				fmt = FMT_CSV;
			else if (strcmp(optarg, "html") == 0)
				fmt = FMT_HTML;
			else
				return dmk_errf(err, DMK_ERR_USAGE, "--output: text, json, csv or html; "
				    REPORT_USAGE);
			break;
		default:
			return dmk_errf(err, DMK_ERR_USAGE, REPORT_USAGE);
		}
	}
	if (since != NULL && parse_date(since, 0, &flt.since) != 0)
		return dmk_errf(err, DMK_ERR_USAGE, "--since '%s': want YYYY-MM-DD or RFC 3339 "
		    "(2026-12-01T00:00:00Z)", since);
	if (until != NULL && parse_date(until, 1, &flt.until) != 0)
		return dmk_errf(err, DMK_ERR_USAGE, "--until '%s': want YYYY-MM-DD or RFC 3339", until);
	if (signref != NULL && outpath == NULL && sigpath == NULL)
		return dmk_errf(err, DMK_ERR_USAGE, "--sign needs --out FILE (the signature goes "
		    "to FILE.sig) or --signature FILE");
	if (argc - optind > AUDIT_VERIFY_FILES_MAX)
		return dmk_errf(err, DMK_ERR_USAGE, "audit report: at most %d files",
		    AUDIT_VERIFY_FILES_MAX);
	if (agent_load_config(a, a->config_path, err) == 0)
		have_config = 1;
	else if (optind == argc)
		return dmk_errf(err, DMK_ERR_USAGE, REPORT_USAGE " (no FILE, and no configuration "
		    "to name the audit log: %s)", err->msg);
	dmk_err_clear(err);
	if (keytext != NULL) {
		if (ref_parse(keytext, &kref, err) != 0)
			return dmk_err_prefix(err, "--key");
		if ((r = agent_resolve(a, &kref, 0, &key, NULL, err)) != 0)
			return r;
	} else if (have_config && a->cfg->has_audit_key &&
	    (r = agent_resolve(a, &a->cfg->audit_key, 0, &key, NULL, err)) != 0)
		return dmk_err_prefix(err, "audit_key");
	if (signref != NULL && (r = load_signing_key(a, signref, &signkey, err)) != 0)
		goto out;
	if (optind == argc) {
		npaths = discover(a->cfg->audit_log, found, AUDIT_VERIFY_FILES_MAX);
		for (i = 0; i < npaths; i++)
			paths[i] = found[i];
	} else
		for (i = 0; (int)i < argc - optind; i++)
			paths[npaths++] = argv[optind + (int)i];
	lastfile = paths[npaths - 1];
	if ((rep = calloc(1, sizeof(*rep))) == NULL) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	buf_init(&rep->notes, 64 * 1024);
	dmk_err_clear(&verr);
	r = 0;
	if (have_config && is_audit_log(a, lastfile)) {
		if (a->cfg->has_audit_anchor) {
			if ((r = agent_audit_anchor_get(a, key, &anchor, &found_ck, &verr)) == 0) {
				if (found_ck) {
					chk[nchk].name = a->cfg->audit_anchor.text;
					chk[nchk++].ckpt = &anchor;
					snprintf(anchor_state, sizeof(anchor_state), "seq %lld holds",
					    anchor.seq);
				} else
					snprintf(anchor_state, sizeof(anchor_state), "not written yet");
			} else if (r != DMK_ERR_VERIFY) {
				/* Unreachable: said in the report, not a verification failure. */
				snprintf(anchor_state, sizeof(anchor_state), "not compared (unreachable)");
				r = 0;
			}
		} else
			snprintf(anchor_state, sizeof(anchor_state), "none configured");
		if (r == 0) {
			if ((lockfd = open(lastfile, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) != -1)
				flock(lockfd, LOCK_SH);
			if ((r = agent_audit_checkpoint_path(a, ckpath, sizeof(ckpath), &verr)) == 0 &&
			    (r = audit_ckpt_read(ckpath, key, &local, &found_ck, &verr)) == 0) {
				if (found_ck) {
					chk[nchk].name = ckpath;
					chk[nchk++].ckpt = &local;
					snprintf(local_state, sizeof(local_state), "seq %lld holds",
					    local.seq);
				} else
					snprintf(local_state, sizeof(local_state), "none yet");
			}
		}
	}
	if (r == 0)
		r = audit_verify_files(paths, npaths, key, chk, nchk, rep, &verr);
	verified = r == 0;
	if (!verified && r != DMK_ERR_VERIFY && r != DMK_ERR_IO) {
		*err = verr;
		goto out;
	}
	records = json_array();
	if (verified && (r = load_records(paths, npaths, records, &verr)) != 0)
		verified = 0;
	if (lockfd != -1) {
		close(lockfd);
		lockfd = -1;
	}
	/* The model. */
	model = json_object();
	integ = json_object();
	files = json_array();
	notes = json_array();
	for (i = 0; i < npaths; i++)
		json_array_append_new(files, json_string(paths[i]));
	for (char *p = rep->notes.data, *nl; p != NULL && rep->notes.len > 0 && *p; p = nl + 1) {
		if ((nl = strchr(p, '\n')) == NULL)
			break;
		json_array_append_new(notes, json_stringn(p, (size_t)(nl - p)));
	}
	json_object_set_new(integ, "ok", json_boolean(verified));
	json_object_set_new(integ, "error", verified ? json_null() : json_string(verr.msg));
	json_object_set_new(integ, "files", files);
	json_object_set_new(integ, "records", json_integer(verified ? rep->nrecords : 0));
	json_object_set_new(integ, "head_seq", verified ? json_integer(rep->head_seq) : json_null());
	json_object_set_new(integ, "head", verified ? json_string(rep->head) : json_null());
	json_object_set_new(integ, "mac", json_string(rep->macs_checked ? "verified" :
	    rep->macs_seen ? "present, not checked (no audit_key)" : "absent (no audit_key)"));
	json_object_set_new(integ, "checkpoint", json_string(local_state));
	json_object_set_new(integ, "anchor", json_string(anchor_state));
	json_object_set_new(integ, "notes", notes);
	json_object_set_new(model, "integrity", integ);
	util_rfc3339(time(NULL), tbuf, sizeof(tbuf));
	json_object_set_new(model, "report", json_string("dmkagent audit report"));
	json_object_set_new(model, "format", json_integer(1));
	json_object_set_new(model, "generated", json_string(tbuf));
	json_object_set_new(model, "source", json_string(lastfile));
	{
		json_t *fo = json_object();
		json_object_set_new(fo, "since", jn(since));
		json_object_set_new(fo, "until", jn(until));
		json_object_set_new(fo, "ag", jn(flt.ag));
		json_object_set_new(fo, "database", jn(flt.database));
		json_object_set_new(model, "filters", fo);
	}
	if (verified) {
		json_t *ros, *pol;
		if (have_config && a->cfg->ndbs > 0) {
			if ((dbs = calloc(a->cfg->ndbs, sizeof(*dbs))) == NULL) {
				r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
				goto out;
			}
			for (i = 0; i < a->cfg->ndbs; i++) {
				const struct conf_ag *ag = config_ag(a->cfg, a->cfg->dbs[i].ag);
				const char *agname = ag ? ag->name : a->cfg->dbs[i].ag;
				if ((flt.ag && strcmp(flt.ag, agname) != 0) ||
				    (flt.database && strcmp(flt.database, a->cfg->dbs[i].name) != 0))
					continue;
				dbs[ndbs].ag = agname;
				dbs[ndbs].database = a->cfg->dbs[i].name;
				dbs[ndbs].rotate_every = a->cfg->dbs[i].rotate_every;
				ndbs++;
			}
		}
		all = arep_rollovers(records, NULL);
		ros = arep_rollovers(records, &flt);
		pol = all != NULL ? arep_policy(all, records, dbs, ndbs, time(NULL)) : NULL;
		if (ros == NULL || pol == NULL) {
			json_decref(ros);
			json_decref(pol);
			r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
			goto out;
		}
		json_object_set_new(model, "policy", pol);
		json_object_set_new(model, "rollovers", ros);
	} else {
		json_object_set_new(model, "policy", json_array());
		json_object_set_new(model, "rollovers", json_array());
	}
	if ((mem = open_memstream(&text, &tlen)) == NULL) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	render(model, fmt, mem);
	fclose(mem);
	mem = NULL;
	if (outpath != NULL) {
		if ((r = write_file(outpath, text, tlen, 0644, err)) != 0)
			goto out;
	} else if (fwrite(text, 1, tlen, a->out) != tlen || fflush(a->out) != 0) {
		r = dmk_errf(err, DMK_ERR_IO, "standard output: %s", strerror(errno));
		goto out;
	}
	if (signref != NULL) {
		if (sigpath == NULL) {
			snprintf(sigdef, sizeof(sigdef), "%s.sig", outpath);
			sigpath = sigdef;
		}
		if ((r = sign_report(signkey, text, tlen, sigpath, err)) != 0)
			goto out;
	}
	r = verified ? 0 : dmk_errf(err, DMK_ERR_VERIFY, "audit report: the log fails "
	    "verification: %s", verr.msg);
out:
	if (mem != NULL)
		fclose(mem);
	if (lockfd != -1)
		close(lockfd);
	if (rep != NULL) {
		buf_free(&rep->notes);
		free(rep);
	}
	free(text);
	free(dbs);
	json_decref(model);
	json_decref(records);
	json_decref(all);
	EVP_PKEY_free(signkey);
	secret_free(key);
	return r;
}

/* ---- ship ---- */

int
cmd_audit_ship(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	struct audit_ship *s = NULL;
	char ck[4200];
	long long sent = 0;
	int r;

	if (argc > 1)
		return dmk_errf(err, DMK_ERR_USAGE, "usage: dmkagent audit ship");
	(void)argv;
	if (a->cfg->audit_syslog[0] == '\0')
		return dmk_errf(err, DMK_ERR_CONFIG, "audit ship: no audit_syslog in [agent]");
	snprintf(ck, sizeof(ck), "%s/audit-syslog.json", a->cfg->state_dir);
	if ((r = audit_ship_open(a->cfg->audit_syslog, a->cfg->audit_syslog_ca,
	    a->cfg->audit_log, ck, &s, err)) != 0)
		return r;
	r = audit_ship_flush(s, &sent, err);
	fprintf(a->out, "%s: %lld record(s) sent%s\n", a->cfg->audit_syslog, sent,
	    r == 0 ? ", nothing waits" : "; the rest waits (see below)");
	audit_ship_close(s);
	return r;
}
