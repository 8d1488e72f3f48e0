/*
 * cmd_doctor.c: dmkagent doctor, the pre-flight check.  Read-only: it opens
 * the stores and reads, asks Vault what the token may do
 * (sys/capabilities-self), connects to every replica as verify does and
 * asks SQL Server what the login may do (HAS_PERMS_BY_NAME), and never
 * writes to a store, to SQL Server, to state_dir or to the audit log.
 *
 * Every check is one line: ok, PROBLEM (with the fix), or not checked
 * (with why).  Every problem is reported, not only the first.  Exit 0 when
 * none, 5 when every problem is one of reach (a store or server down: try
 * later), 1 otherwise.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "cli.h"
#include "agcmd.h"
#include "backup.h"
#include "deployhook.h"
#include "markers.h"
#include "replicas.h"
#include "providers/provider.h"

enum ck_state { CK_OK = 0, CK_PROBLEM, CK_NOT_CHECKED };

struct check {
	const char *name;             /* file, store, reference, write, headroom, ag, ... */
	char target[700];
	enum ck_state state;
	int code;                     /* a problem's DMK_ERR_* (temporary or lasting) */
	char detail[DMK_ERR_MSG_MAX]; /* what was proven, what is wrong, or why not checked */
	char fix[600];
};

/* What a reference is for decides what doctor asks of it. */
enum ref_role {
	ROLE_READ = 1,                /* must exist; read only (login, audit key, credentials) */
	ROLE_ROTATE,                  /* must exist; read and write; versions kept (DMK passwords) */
	ROLE_CREATE,                  /* written by dmkagent, created when absent (backup
	                                 passwords, the audit anchor) */
};

struct dref {
	const struct secret_ref *ref;
	enum ref_role role;
	const char *key;              /* the configuration key */
	int line;
	int bad;                      /* a problem was reported for it */
};

struct doctor {
	struct agent *a;
	const char *ag_filter, *db_filter;
	struct check *v;
	size_t n, cap;
	int nomem;
	pthread_mutex_t mu;
	int *store_ok;                /* parallel to cfg->stores: 1 opened, 0 not */
	struct dref *refs;
	size_t nrefs;
};

static void add(struct doctor *d, const char *name, enum ck_state state, int code,
    const char *fix, const char *target, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static void
add(struct doctor *d, const char *name, enum ck_state state, int code, const char *fix,
    const char *target, const char *fmt, ...)
{
	struct check *c;
	va_list ap;

	pthread_mutex_lock(&d->mu);
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 64;
		struct check *nv = realloc(d->v, cap * sizeof(*nv));
		if (nv == NULL) {
			d->nomem = 1;
			pthread_mutex_unlock(&d->mu);
			return;
		}
		d->v = nv;
		d->cap = cap;
	}
	c = &d->v[d->n++];
	memset(c, 0, sizeof(*c));
	c->name = name;
	c->state = state;
	c->code = state == CK_PROBLEM ? (code != 0 ? code : DMK_ERR_VERIFY) : 0;
	util_strlcpy(c->target, target, sizeof(c->target));
	util_strlcpy(c->fix, fix ? fix : "", sizeof(c->fix));
	va_start(ap, fmt);
	vsnprintf(c->detail, sizeof(c->detail), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&d->mu);
}

/* ---- files ---- */

/* A file others may read (a CA bundle, a certificate, a token file the
 * platform writes): it must exist, be readable here, and be changeable by
 * no one but its owner, root or this user. */
static void
check_public_path(struct doctor *d, const char *what, const char *path)
{
	struct stat st;
	char target[700], fix[600];
	uid_t me = geteuid();

	snprintf(target, sizeof(target), "%s %s", what, path);
	if (stat(path, &st) == -1) {
		snprintf(fix, sizeof(fix), "correct %s in %s, or create %s", what,
		    d->a->config_path, path);
		add(d, "file", CK_PROBLEM, DMK_ERR_NOTFOUND, fix, target, "%s", strerror(errno));
		return;
	}
	if (access(path, R_OK) == -1) {
		snprintf(fix, sizeof(fix), "make %s readable by uid %u (chmod or chown)", path,
		    (unsigned)me);
		add(d, "file", CK_PROBLEM, DMK_ERR_IO, fix, target, "not readable: %s",
		    strerror(errno));
		return;
	}
	if (st.st_uid != 0 && st.st_uid != me) {
		snprintf(fix, sizeof(fix), "chown root %s", path);
		add(d, "file", CK_PROBLEM, DMK_ERR_CONFIG, fix, target, "owned by uid %u, neither "
		    "root nor this user (uid %u): its owner could change what dmkagent trusts",
		    (unsigned)st.st_uid, (unsigned)me);
		return;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(fix, sizeof(fix), "chmod go-w %s", path);
		add(d, "file", CK_PROBLEM, DMK_ERR_CONFIG, fix, target, "writable by group or "
		    "others (mode %03o)", (unsigned)(st.st_mode & 0777));
		return;
	}
	add(d, "file", CK_OK, 0, NULL, target, "exists, readable, owner and mode safe (%03o)",
	    (unsigned)(st.st_mode & 0777));
}

/* A file: reference: the secret file rules (ref.h). */
static void
check_secret_path(struct doctor *d, const char *key, int line, const char *path)
{
	struct dmk_err e;
	struct stat st;
	char target[700], fix[600];

	char *run;

	if (line > 0)
		snprintf(target, sizeof(target), "%s (%s:%d) file:%s", key, d->a->config_path,
		    line, path);
	else
		snprintf(target, sizeof(target), "%s (%s) file:%s", key, d->a->config_path, path);
	if (check_secret_file(path, &e) == 0) {
		add(d, "file", CK_OK, 0, NULL, target, "exists, owner and mode safe");
		return;
	}
	if (lstat(path, &st) == -1)
		snprintf(fix, sizeof(fix), "create %s (mode 0600, owned by uid %u) with the "
		    "secret, or correct %s", path, (unsigned)geteuid(), key);
	else if (!S_ISREG(st.st_mode))
		snprintf(fix, sizeof(fix), "point %s at a regular file, not a link or folder", key);
	else if (st.st_uid != geteuid() && st.st_uid != 0)
		snprintf(fix, sizeof(fix), "chown %u %s", (unsigned)geteuid(), path);
	else
		snprintf(fix, sizeof(fix), "chmod 600 %s", path);
	if ((run = strstr(e.msg, "; run chmod")) != NULL)
		*run = '\0';             /* the fix says it */
	add(d, "file", CK_PROBLEM, DMK_ERR_CONFIG, fix, target, "%s", e.msg);
}

static void
check_state_dir(struct doctor *d)
{
	const char *dir = d->a->cfg->state_dir;
	struct dmk_err e;
	struct stat st;
	char target[700], fix[600];

	snprintf(target, sizeof(target), "state_dir %s", dir);
	if (lstat(dir, &st) == -1 && errno == ENOENT) {
		/* made (0700) by the first run that records something */
		char parent[4096], *slash;
		util_strlcpy(parent, dir, sizeof(parent));
		if ((slash = strrchr(parent, '/')) != NULL && slash != parent)
			*slash = '\0';
		if (stat(parent, &st) == 0 && S_ISDIR(st.st_mode) && access(parent, W_OK) == 0)
			add(d, "file", CK_OK, 0, NULL, target, "not there yet; the first run creates "
			    "it (mode 0700)");
		else {
			snprintf(fix, sizeof(fix), "mkdir -m 0700 %s (owned by uid %u)", dir,
			    (unsigned)geteuid());
			add(d, "file", CK_PROBLEM, DMK_ERR_IO, fix, target, "missing, and %s cannot "
			    "be written here", parent);
		}
		return;
	}
	if (util_check_private_dir(dir, &e) != 0) {
		snprintf(fix, sizeof(fix), "chown %u %s; chmod 700 %s (a real folder, not a link)",
		    (unsigned)geteuid(), dir, dir);
		add(d, "file", CK_PROBLEM, e.code, fix, target, "%s", e.msg);
	} else
		add(d, "file", CK_OK, 0, NULL, target, "a private folder of this user");
}

static void
check_files(struct doctor *d)
{
	const struct config *c = d->a->cfg;
	struct dmk_err e;
	size_t i, j;
	char w[200];

	add(d, "file", CK_OK, 0, NULL, c->path, "configuration: owner and mode safe, every "
	    "key valid");
	check_state_dir(d);
	if (c->has_audit_key && c->audit_key.kind == REF_FILE)
		check_secret_path(d, "audit_key", 0, c->audit_key.path);
	for (i = 0; i < c->nstores; i++)
		for (j = 0; j < c->stores[i].nkv; j++) {
			const struct conf_kv *kv = &c->stores[i].kv[j];
			snprintf(w, sizeof(w), "%s in [store %s]", kv->key, c->stores[i].name);
			if (kv->kind == CK_REF && kv->ref.kind == REF_FILE)
				check_secret_path(d, w, kv->line, kv->ref.path);
			else if (kv->kind == CK_PATH)
				check_public_path(d, w, kv->value);
		}
	for (i = 0; i < c->nags; i++) {
		const struct conf_ag *ag = &c->ags[i];
		if (d->ag_filter && strcmp(d->ag_filter, ag->label) && strcmp(d->ag_filter, ag->name))
			continue;
		if (ag->has_login_password && ag->login_password.kind == REF_FILE) {
			snprintf(w, sizeof(w), "login_password in [ag %s]", ag->label);
			check_secret_path(d, w, ag->line, ag->login_password.path);
		}
		if (ag->has_smk_backup_password && ag->smk_backup_password.kind == REF_FILE) {
			snprintf(w, sizeof(w), "smk_backup_password in [ag %s]", ag->label);
			check_secret_path(d, w, ag->line, ag->smk_backup_password.path);
		}
		if (ag->ca_file[0]) {
			snprintf(w, sizeof(w), "ca_file in [ag %s]", ag->label);
			check_public_path(d, w, ag->ca_file);
		}
	}
	for (i = 0; i < c->ndbs; i++) {
		const struct conf_db *db = &c->dbs[i];
		const struct { const char *key; int has; const struct secret_ref *ref; } k[] = {
			{ "dmk_password", 1, &db->dmk_password },
			{ "cert_backup_password", db->has_cert_backup_password, &db->cert_backup_password },
			{ "dmk_backup_password", db->has_dmk_backup_password, &db->dmk_backup_password },
		};
		if (d->db_filter && strcmp(d->db_filter, db->name) && strcmp(d->db_filter, db->label))
			continue;
		for (j = 0; j < sizeof(k) / sizeof(k[0]); j++)
			if (k[j].has && k[j].ref->kind == REF_FILE) {
				snprintf(w, sizeof(w), "%s in [database %s/%s]", k[j].key, db->ag,
				    db->label);
				check_secret_path(d, w, db->line, k[j].ref->path);
			}
	}
	if (c->audit_syslog_ca[0])
		check_public_path(d, "audit_syslog_ca in [agent]", c->audit_syslog_ca);
	if (c->hook.present) {
		check_public_path(d, "tls_cert in [hook]", c->hook.tls_cert);
		if (c->hook.tls_key.kind == REF_FILE)
			check_secret_path(d, "tls_key in [hook]", c->hook.line, c->hook.tls_key.path);
		if (c->hook.has_key && c->hook.key.kind == REF_FILE)
			check_secret_path(d, "key in [hook]", c->hook.line, c->hook.key.path);
		if (c->hook.ca_file[0])
			check_public_path(d, "ca_file in [hook]", c->hook.ca_file);
	}
	if (c->hook_command[0]) {
		snprintf(w, sizeof(w), "hook_command %s", c->hook_command);
		if (deployhook_check(c->hook_command, &e) != 0)
			add(d, "file", CK_PROBLEM, e.code, "make it a regular executable file owned "
			    "by root or this user and writable by no one else", w, "%s", e.msg);
		else
			add(d, "file", CK_OK, 0, NULL, w, "executable, owner and mode safe");
	}
}

/* ---- stores ---- */

/* The credentials a store section names, for a fix: "token = file:/x (line 9)". */
static void
store_creds(const struct conf_store *cs, char *out, size_t len)
{
	size_t j, off = 0;

	out[0] = '\0';
	for (j = 0; j < cs->nkv && off < len; j++)
		if (cs->kv[j].kind == CK_REF) {
			int k = snprintf(out + off, len - off, "%s%s = %s (line %d)", off ? ", " : "",
			    cs->kv[j].key, cs->kv[j].ref.text, cs->kv[j].line);
			if (k < 0)
				break;
			off += (size_t)k;
		}
	if (out[0] == '\0')
		snprintf(out, len, "its credential (from the environment)");
}

static void
check_stores(struct doctor *d)
{
	const struct config *c = d->a->cfg;
	size_t i;

	for (i = 0; i < c->nstores; i++) {
		const struct conf_store *cs = &c->stores[i];
		struct store *st;
		struct dmk_err e;
		char target[300], fix[600], creds[400], who[200];
		int r;

		snprintf(target, sizeof(target), "[store %s] (%s, %s:%d)", cs->name, cs->type,
		    c->path, cs->line);
		dmk_err_clear(&e);
		if ((r = agent_store(d->a, cs->name, &st, &e)) == 0) {
			d->store_ok[i] = 1;
			store_identity(st, who, sizeof(who));
			add(d, "store", CK_OK, 0, NULL, target, "answers; authenticated%s%s",
			    who[0] ? " as " : "", who);
			continue;
		}
		store_creds(cs, creds, sizeof(creds));
		if (dmk_err_is_temporary(r))
			snprintf(fix, sizeof(fix), "check the store's address in [store %s] and that "
			    "it is up and reachable from here; then run dmkagent doctor again",
			    cs->name);
		else if (r == DMK_ERR_AUTH || r == DMK_ERR_DENIED)
			snprintf(fix, sizeof(fix), "the store refuses the credential in [store %s]: "
			    "put a valid one at %s", cs->name, creds);
		else if (r == DMK_ERR_TLS)
			snprintf(fix, sizeof(fix), "the store's certificate must be vouched for by "
			    "ca_file in [store %s] and carry the name in its address", cs->name);
		else
			snprintf(fix, sizeof(fix), "correct [store %s] (see dmkagent.conf(5))",
			    cs->name);
		add(d, "store", CK_PROBLEM, r, fix, target, "%s", e.msg);
	}
}

/* ---- references ---- */

static void
ref_add(struct doctor *d, const struct secret_ref *ref, enum ref_role role, const char *key,
    int line)
{
	struct dref *n;

	if (ref->kind != REF_STORE)
		return;
	if ((n = realloc(d->refs, (d->nrefs + 1) * sizeof(*n))) == NULL) {
		d->nomem = 1;
		return;
	}
	d->refs = n;
	d->refs[d->nrefs++] = (struct dref){ ref, role, key, line, 0 };
}

static void
collect_refs(struct doctor *d)
{
	const struct config *c = d->a->cfg;
	size_t i, j;

	if (c->has_audit_key)
		ref_add(d, &c->audit_key, ROLE_READ, "audit_key", 0);
	if (c->has_audit_anchor)
		ref_add(d, &c->audit_anchor, ROLE_CREATE, "audit_anchor", c->audit_anchor_line);
	for (i = 0; i < c->nstores; i++)
		for (j = 0; j < c->stores[i].nkv; j++)
			if (c->stores[i].kv[j].kind == CK_REF)
				ref_add(d, &c->stores[i].kv[j].ref, ROLE_READ, c->stores[i].kv[j].key,
				    c->stores[i].kv[j].line);
	if (c->hook.present) {
		ref_add(d, &c->hook.tls_key, ROLE_READ, "tls_key", c->hook.line);
		if (c->hook.has_key)
			ref_add(d, &c->hook.key, ROLE_READ, "key", c->hook.line);
	}
	for (i = 0; i < c->nags; i++) {
		const struct conf_ag *ag = &c->ags[i];
		if (d->ag_filter && strcmp(d->ag_filter, ag->label) && strcmp(d->ag_filter, ag->name))
			continue;
		if (ag->has_login_password)
			ref_add(d, &ag->login_password, ROLE_READ, "login_password", ag->line);
		if (ag->has_smk_backup_password)
			ref_add(d, &ag->smk_backup_password, ROLE_CREATE, "smk_backup_password",
			    ag->line);
	}
	for (i = 0; i < c->ndbs; i++) {
		const struct conf_db *db = &c->dbs[i];
		if (d->ag_filter && strcmp(d->ag_filter, db->ag))
			continue;
		if (d->db_filter && strcmp(d->db_filter, db->name) && strcmp(d->db_filter, db->label))
			continue;
		ref_add(d, &db->dmk_password, ROLE_ROTATE, "dmk_password", db->line);
		if (db->has_cert_backup_password)
			ref_add(d, &db->cert_backup_password, ROLE_CREATE, "cert_backup_password",
			    db->line);
		if (db->has_dmk_backup_password)
			ref_add(d, &db->dmk_backup_password, ROLE_CREATE, "dmk_backup_password",
			    db->line);
	}
}

static int
store_index(const struct config *c, const char *name)
{
	size_t i;

	for (i = 0; i < c->nstores; i++)
		if (strcmp(c->stores[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* How many more writes before the version in force is deleted for good. */
#define HEADROOM_MIN 3

static void
check_headroom(struct doctor *d, struct store *st, struct dref *r, const char *target)
{
	struct prov_version *v = NULL;
	struct mk_plan plan;
	struct dmk_err e;
	char how[300], fix[600];
	long long max, newest, inforce, left;
	size_t n = 0, i, cnt;

	dmk_err_clear(&e);
	if (store_version_limit(st, r->ref, &max, &cnt, how, sizeof(how), &e) != 0) {
		if (e.code == DMK_ERR_UNSUPPORTED)
			add(d, "headroom", CK_NOT_CHECKED, 0, NULL, target, "%s", e.msg);
		else
			add(d, "headroom", CK_PROBLEM, e.code, "see the message; the token needs "
			    "read on the metadata path", target, "%s", e.msg);
		return;
	}
	if (max == 0) {
		add(d, "headroom", CK_OK, 0, NULL, target, "%s", how);
		return;
	}
	if (store_list_versions(st, r->ref, &v, &n, &e) != 0) {
		add(d, "headroom", e.code == DMK_ERR_UNSUPPORTED ? CK_NOT_CHECKED : CK_PROBLEM,
		    e.code, "see the message", target, "%s", e.msg);
		return;
	}
	markers_plan(v, n, &plan);
	newest = inforce = 0;
	for (i = 0; i < n; i++)
		if (v[i].num > newest)
			newest = v[i].num;
	if (plan.current >= 0)
		inforce = v[plan.current].num;
	if (plan.resumed && plan.oldv >= 0 && v[plan.oldv].num < inforce)
		inforce = v[plan.oldv].num;   /* an unfinished rotation still needs it */
	if (inforce == 0) {
		add(d, "headroom", CK_OK, 0, NULL, target, "%s; no version in force yet", how);
		free(v);
		return;
	}
	left = max - 1 - (newest - inforce);
	if (left < HEADROOM_MIN) {
		snprintf(fix, sizeof(fix), "let Vault keep more versions of %s: max_versions = N "
		    "in its [store] section (dmkagent sets it on the key before each write), or, "
		    "with max_versions = 0 there, vault kv metadata put -max-versions=N on its "
		    "path; N of 20 or more; a rotation and its retry write %d", r->ref->path,
		    HEADROOM_MIN - 1);
		add(d, "headroom", CK_PROBLEM, DMK_ERR_POLICY, fix, target, "%s: version %lld is "
		    "in force and the newest is %lld, so %lld more write(s) delete it for good",
		    how, inforce, newest, left < 0 ? 0 : left);
	} else
		add(d, "headroom", CK_OK, 0, NULL, target, "%s; version %lld in force, newest "
		    "%lld: %lld more write(s) before it would be deleted", how, inforce, newest,
		    left);
	free(v);
}

/* The DMK backup's escrow beside a DMK password (backup.h): rotate writes it
 * first.  Its absence is normal; only write access is asked. */
static void
check_escrow_write(struct doctor *d, struct store *st, const struct dref *r)
{
	struct secret_ref bref;
	const struct secret_ref *one[1] = { &bref };
	struct dmk_err e;
	struct buf report;
	char target[900], fix[600], *line, *p;

	dmk_err_clear(&e);
	if (escrow_ref(r->ref, "dmk", NULL, &bref, &e) != 0)
		return;
	snprintf(target, sizeof(target), "%s (the DMK backup escrow of %s)", bref.text,
	    r->ref->text);
	buf_init(&report, 0);
	if (store_check(st, one, 1, &report, &e) == 0)
		add(d, "write", CK_OK, 0, NULL, target, "the credential may read and write it");
	else {
		line = report.len ? (char *)report.data : e.msg;
		while (*line == ' ')
			line++;
		if ((p = strchr(line, '\n')) != NULL)
			*p = '\0';
		snprintf(fix, sizeof(fix), "grant the credential of [store %s] create, read and "
		    "update on %s and its metadata (examples/vault/dmkagent-policy.hcl)",
		    bref.store, bref.path);
		add(d, "write", CK_PROBLEM, e.code, fix, target, "%s", line);
	}
	buf_free(&report);
}

static void
check_one_ref(struct doctor *d, struct dref *r)
{
	const struct config *c = d->a->cfg;
	int si = store_index(c, r->ref->store), rc;
	struct store *st;
	struct secret *s = NULL;
	struct prov_version ver;
	struct dmk_err e;
	struct buf report;
	char target[900], fix[600];
	int absent_ok = r->role == ROLE_CREATE;

	if (r->line > 0)
		snprintf(target, sizeof(target), "%s (%s, %s:%d)", r->ref->text, r->key, c->path,
		    r->line);
	else
		snprintf(target, sizeof(target), "%s (%s, %s)", r->ref->text, r->key, c->path);
	if (si < 0 || !d->store_ok[si]) {
		add(d, "reference", CK_NOT_CHECKED, 0, NULL, target, "store %s did not open "
		    "(see its line)", r->ref->store);
		r->bad = 1;
		return;
	}
	if (agent_store(d->a, r->ref->store, &st, &e) != 0)
		return;                   /* opened above: cannot happen */
	memset(&ver, 0, sizeof(ver));
	dmk_err_clear(&e);
	rc = store_get(st, r->ref, NULL, &s, &ver, &e);
	secret_free(s);
	if (rc == DMK_ERR_NOTFOUND && absent_ok)
		add(d, "reference", CK_OK, 0, NULL, target, "not there yet: dmkagent creates it "
		    "when it first needs it");
	else if (rc == DMK_ERR_NOTFOUND) {
		r->bad = 1;
		snprintf(fix, sizeof(fix), "check the path in %s (line %d) for a typo; if the "
		    "secret really is new, put it with dmkagent store put %s", r->key, r->line,
		    r->ref->text);
		add(d, "reference", CK_PROBLEM, rc, fix, target, "no such secret at %s (%s)",
		    r->ref->text, e.msg);
		return;
	} else if (rc != 0) {
		r->bad = 1;
		if (rc == DMK_ERR_DENIED || rc == DMK_ERR_AUTH)
			snprintf(fix, sizeof(fix), "let the credential of [store %s] read %s (for "
			    "Vault: examples/vault/dmkagent-policy.hcl)", r->ref->store, r->ref->path);
		else if (dmk_err_is_temporary(rc))
			snprintf(fix, sizeof(fix), "run dmkagent doctor again when store %s answers",
			    r->ref->store);
		else
			snprintf(fix, sizeof(fix), "see the message; correct %s (line %d)", r->key,
			    r->line);
		add(d, "reference", CK_PROBLEM, rc, fix, target, "%s", e.msg);
		return;
	} else
		add(d, "reference", CK_OK, 0, NULL, target, "exists and is readable%s%s",
		    ver.id[0] ? "; current version " : "", ver.id);
	if (r->role == ROLE_READ)
		return;
	/* Write access: proven without writing where the store can say so. */
	if (!store_can(st, PROV_CAP_CHECK_WRITE))
		add(d, "write", CK_NOT_CHECKED, 0, NULL, target, "store %s (%s) cannot prove write "
		    "access without writing; dmkagent never writes to check (for Key Vault: "
		    "secrets/set is the role's; the read above proves get)", r->ref->store,
		    st->ops->type);
	else {
		const struct secret_ref *one[1] = { r->ref };
		buf_init(&report, 0);
		dmk_err_clear(&e);
		rc = store_check(st, one, 1, &report, &e);
		if (rc == 0)
			add(d, "write", CK_OK, 0, NULL, target, "the credential may read and write "
			    "it (and its markers)");
		else {
			char *line = report.len ? (char *)report.data : e.msg, *p;
			while (*line == ' ')
				line++;
			if ((p = strchr(line, '\n')) != NULL)
				*p = '\0';
			r->bad = 1;
			snprintf(fix, sizeof(fix), "grant the credential of [store %s] create, read "
			    "and update on %s, its metadata and its -backup-* and lease paths "
			    "(examples/vault/dmkagent-policy.hcl)", r->ref->store, r->ref->path);
			add(d, "write", CK_PROBLEM, rc, fix, target, "%s", line);
		}
		buf_free(&report);
		if (r->role == ROLE_ROTATE && rc == 0)
			check_escrow_write(d, st, r);
	}
	if (r->role == ROLE_ROTATE && rc == 0)
		check_headroom(d, st, r, target);
}

static void
check_refs(struct doctor *d)
{
	size_t i;

	collect_refs(d);
	for (i = 0; i < d->nrefs; i++)
		check_one_ref(d, &d->refs[i]);
}

/* ---- availability groups ---- */

static const struct {
	const char *perm;
	const char *who;
	int need;                     /* 0 always; 1 restore tests configured; 2 smk backups */
} server_perms[] = {
	{ "VIEW SERVER STATE", "every command (the AG's replicas and health)", 0 },
	{ "VIEW ANY DEFINITION", "every command (the credentials of each replica)", 0 },
	{ "ALTER ANY CREDENTIAL", "register, rotate, recover and run "
	  "(sp_control_dbmasterkey_password)", 0 },
	{ "ADMINISTER BULK OPERATIONS", "backup, and the backup rotate takes first", 0 },
	{ "ALTER ANY AVAILABILITY GROUP", "verify --failover-test and recover (failing over)", 0 },
	{ "CREATE ANY DATABASE", "backup --restore-test (restore_test_every)", 1 },
	{ "CONTROL SERVER", "backup --smk (smk_backup_password)", 2 },
};
#define NSERVER_PERMS (sizeof(server_perms) / sizeof(server_perms[0]))

static int
needs_restore_test(const struct config *c, const struct conf_ag *ag)
{
	size_t i;

	for (i = 0; i < c->ndbs; i++)
		if (strcmp(c->dbs[i].ag, ag->label) == 0 && c->dbs[i].restore_test_every > 0)
			return 1;
	return 0;
}

static int
doctor_work(struct rep_run *rr, struct sql_session *s)
{
	struct ag_run *run = rr->run;
	struct doctor *d = run->ctx;
	const struct conf_ag *ag = run->ag;
	struct sql_perm *p;
	const char *login = run->login.user ? run->login.user :
	    "DOMAIN\\account (the Windows login dmkagent runs as)";
	char target[700], fix[600], held[600];
	struct dmk_err e;
	size_t n = 0, i, j, off = 0;
	int restore = needs_restore_test(d->a->cfg, ag), missing = 0;

	snprintf(target, sizeof(target), "%s/%s", ag->name, rr->rep->name);
	if ((p = calloc(NSERVER_PERMS + run->nplans, sizeof(*p))) == NULL) {
		add(d, "permission", CK_PROBLEM, DMK_ERR_NOMEM, "see the message", target,
		    "out of memory");
		return 0;
	}
	for (i = 0; i < NSERVER_PERMS; i++) {
		if ((server_perms[i].need == 1 && !restore) ||
		    (server_perms[i].need == 2 && !ag->has_smk_backup_password))
			continue;
		p[n++] = (struct sql_perm){ NULL, NULL, server_perms[i].perm, -1 };
	}
	/* CONTROL on each database: asked on the primary, where it is readable */
	for (j = 0; rr->is_primary && j < run->nplans; j++)
		if (run->plans[j].in_ag)
			p[n++] = (struct sql_perm){ run->plans[j].db->name, "DATABASE", "CONTROL", -1 };
	if (sql_has_perms(s, p, n, &e) != 0) {
		add(d, "permission", CK_PROBLEM, e.code, "see the message", target, "%s", e.msg);
		free(p);
		return 0;
	}
	held[0] = '\0';
	for (i = 0; i < n; i++) {
		const char *who = "rotate, recover and register (OPEN and ALTER MASTER KEY)";
		char what[300];

		for (j = 0; j < NSERVER_PERMS; j++)
			if (p[i].securable == NULL && strcmp(server_perms[j].perm, p[i].permission) == 0)
				who = server_perms[j].who;
		if (p[i].securable == NULL)
			snprintf(what, sizeof(what), "%s", p[i].permission);
		else
			snprintf(what, sizeof(what), "CONTROL on database %s", p[i].securable);
		if (p[i].have == 1) {
			int k = snprintf(held + off, sizeof(held) - off, "%s%s", off ? ", " : "", what);
			if (k > 0 && (size_t)k < sizeof(held) - off)
				off += (size_t)k;
			continue;
		}
		missing = 1;
		if (p[i].securable == NULL)
			snprintf(fix, sizeof(fix), "on %s: GRANT %s TO [%s]; (as "
			    "examples/sql/dmkagent-login.sql does, on every replica)", rr->rep->name,
			    p[i].permission, login);
		else
			snprintf(fix, sizeof(fix), "on the primary: USE [%s]; CREATE USER [%s] FOR "
			    "LOGIN [%s] (if missing); GRANT CONTROL ON DATABASE::[%s] TO [%s];",
			    p[i].securable, login, login, p[i].securable, login);
		add(d, "permission", CK_PROBLEM, DMK_ERR_DENIED, fix, target, "login %s %s %s, "
		    "which %s need%s", login, p[i].have == 0 ? "lacks" : "cannot be shown to hold",
		    what, who, strchr(who, ',') || strstr(who, " and ") ? "" : "s");
	}
	if (!missing)
		add(d, "permission", CK_OK, 0, NULL, target, "login %s holds %s", login, held);
	else if (held[0])
		add(d, "permission", CK_OK, 0, NULL, target, "login %s holds %s (the rest: see "
		    "the problems)", login, held);
	free(p);
	return 0;
}

/* Was the database's password reference reported already (a bad reference,
 * a store that did not open)? */
static int
ref_reported(const struct doctor *d, const struct secret_ref *ref)
{
	size_t i;

	if (ref->kind != REF_STORE)
		return 0;
	for (i = 0; i < d->nrefs; i++)
		if (d->refs[i].ref == ref)
			return d->refs[i].bad;
	return 0;
}

static void
rep_fix(const struct conf_ag *ag, const struct rep_run *rr, char *fix, size_t len)
{
	if (rr->code == DMK_ERR_TLS)
		snprintf(fix, len, "the certificate of %s must be vouched for by ca_file in [ag %s] "
		    "and carry the name %s (tls_name %s = NAME in [ag %s] if it carries another)",
		    rr->rep->name, ag->label, rr->ep.tls_name[0] ? rr->ep.tls_name : rr->ep.host,
		    rr->rep->name, ag->label);
	else if (rr->code == DMK_ERR_AUTH || rr->code == DMK_ERR_DENIED)
		snprintf(fix, len, "the login must exist on %s with the same password (and SID) "
		    "as on the other replicas (examples/sql/dmkagent-login.sql)", rr->rep->name);
	else if (dmk_err_is_temporary(rr->code) || rr->code == DMK_ERR_INCOMPLETE)
		snprintf(fix, len, "start SQL Server on %s, or correct its address (replica %s = "
		    "HOST:PORT in [ag %s], or its read-only routing URL); dmkagent doctor again "
		    "then", rr->rep->name, rr->rep->name, ag->label);
	else
		snprintf(fix, len, "see the message; replica %s = HOST:PORT in [ag %s] sets its "
		    "address", rr->rep->name, ag->label);
}

/*
 * The replicas' threads add their permission lines as they finish, and the
 * replica lines come after the join: [n0, n1) and [n1, d->n).  Put each
 * replica's line first, then its permissions, in the AG's order.
 */
static void
group_by_replica(struct doctor *d, const struct ag_run *run, size_t n0, size_t n1)
{
	struct check *tmp;
	size_t i, k, m = 0, total = d->n - n0;
	char want[700];

	if (total == 0 || (tmp = malloc(total * sizeof(*tmp))) == NULL)
		return;
	for (i = 0; i < run->nreps; i++) {
		snprintf(want, sizeof(want), "%s/%s", run->ag->name, run->reps[i].rep->name);
		for (k = n1; k < d->n; k++)
			if (strncmp(d->v[k].target, want, strlen(want)) == 0 &&
			    d->v[k].target[strlen(want)] == ' ')
				tmp[m++] = d->v[k];
		for (k = n0; k < n1; k++)
			if (strcmp(d->v[k].target, want) == 0)
				tmp[m++] = d->v[k];
	}
	if (m == total)
		memcpy(&d->v[n0], tmp, total * sizeof(*tmp));
	free(tmp);
}

static void
check_ag(struct doctor *d, const struct conf_ag *ag)
{
	struct ag_run run;
	struct sql_endpoint lep;
	struct dmk_err e;
	char target[700], fix[600];
	size_t i, n0, n1;
	int r;

	ag_listener_endpoint(ag, &lep);
	snprintf(target, sizeof(target), "%s (listener %s:%d)", ag->name, lep.host, lep.port);
	if (ag->has_login_password && ref_reported(d, &ag->login_password)) {
		add(d, "ag", CK_NOT_CHECKED, 0, NULL, target, "its login_password %s could not be "
		    "read (see its line)", ag->login_password.text);
		return;
	}
	dmk_err_clear(&e);
	if ((r = ag_open(d->a, ag, d->db_filter, 1, &run, &e)) != 0) {
		if (r == DMK_ERR_TLS)
			snprintf(fix, sizeof(fix), "the listener's certificate must be vouched for by "
			    "ca_file in [ag %s] and carry the name %s", ag->label, lep.tls_name);
		else if (r == DMK_ERR_AUTH)
			snprintf(fix, sizeof(fix), "SQL Server refuses login %s: check the password "
			    "at login_password in [ag %s] and that the login exists on every replica",
			    ag->login, ag->label);
		else if (dmk_err_is_temporary(r))
			snprintf(fix, sizeof(fix), "check listener = HOST:PORT in [ag %s] and that the "
			    "AG is up; then run dmkagent doctor again", ag->label);
		else
			snprintf(fix, sizeof(fix), "see the message; [ag %s] in %s", ag->label,
			    d->a->config_path);
		add(d, "ag", CK_PROBLEM, r, fix, target, "%s", e.msg);
		ag_close(&run);
		return;
	}
	add(d, "ag", CK_OK, 0, NULL, target, "answers over verified TLS; %zu replica(s), "
	    "primary %s", run.info.nreplicas, run.info.primary);
	for (i = 0; i < run.nplans; i++) {
		const struct db_plan *p = &run.plans[i];
		char dt[700];

		snprintf(dt, sizeof(dt), "%s/%s", ag->name, p->db->name);
		if (p->usable) {
			add(d, "database", CK_OK, 0, NULL, dt, "in the AG; the password at %s opens "
			    "its DMK on the primary", p->db->dmk_password.text);
			continue;
		}
		if (p->in_ag && (ref_reported(d, &p->db->dmk_password) || (p->pw == NULL &&
		    p->code != 0 && dmk_err_is_temporary(p->code))))
			continue;         /* the reference's own line says why */
		if (!p->in_ag)
			snprintf(fix, sizeof(fix), "add %s to availability group %s, or correct "
			    "[database %s/%s] (%s:%d)", p->db->name, ag->name, p->db->ag,
			    p->db->label, d->a->config_path, p->db->line);
		else if (p->code == DMK_ERR_WRONGPASS)
			snprintf(fix, sizeof(fix), "put the password that opens the DMK at %s "
			    "(dmkagent store put --overwrite); if nobody knows it, see dmkagent(1), "
			    "RECOVERY", p->db->dmk_password.text);
		else
			snprintf(fix, sizeof(fix), "see the message");
		add(d, "database", CK_PROBLEM, p->code ? p->code : DMK_ERR_VERIFY, fix, dt, "%s",
		    p->error);
	}
	run.ctx = d;
	n0 = d->n;
	(void)ag_each_replica(&run, doctor_work);
	n1 = d->n;
	for (i = 0; i < run.nreps; i++) {
		const struct rep_run *rr = &run.reps[i];
		char rt[700];

		snprintf(rt, sizeof(rt), "%s/%s (%s:%d)", ag->name, rr->rep->name,
		    rr->ep.host[0] ? rr->ep.host : "?", rr->ep.port);
		if (rr->reached) {
			add(d, "replica", CK_OK, 0, NULL, rt, "%s over verified TLS (%s; certificate "
			    "name %s)", rr->is_primary ? "primary, reached" : "reached",
			    rr->how[0] ? rr->how : "address", rr->ep.tls_name[0] ? rr->ep.tls_name :
			    rr->ep.host);
			continue;
		}
		rep_fix(ag, rr, fix, sizeof(fix));
		add(d, "replica", CK_PROBLEM, rr->code ? rr->code : DMK_ERR_UNREACHABLE, fix, rt,
		    "not reached: %s", rr->error);
	}
	group_by_replica(d, &run, n0, n1);
	ag_close(&run);
}

/* ---- report ---- */

static const char *
state_word(enum ck_state s)
{
	return s == CK_OK ? "ok" : s == CK_PROBLEM ? "PROBLEM" : "not checked";
}

static int
report(struct doctor *d)
{
	struct agent *a = d->a;
	size_t i, nprob = 0, nlasting = 0;
	int code;

	for (i = 0; i < d->n; i++)
		if (d->v[i].state == CK_PROBLEM) {
			nprob++;
			if (!dmk_err_is_temporary(d->v[i].code))
				nlasting++;
		}
	code = nprob == 0 ? 0 : nlasting ? DMK_EXIT_FAILED : DMK_EXIT_UNREACHABLE;
	if (a->output == OUTPUT_JSON) {
		json_t *root = json_object(), *arr = json_array();
		char *s;

		for (i = 0; i < d->n; i++) {
			const struct check *c = &d->v[i];
			json_t *o = json_object();
			json_object_set_new(o, "name", json_string(c->name));
			json_object_set_new(o, "target", json_string(c->target));
			json_object_set_new(o, "ok", c->state == CK_NOT_CHECKED ? json_null() :
			    json_boolean(c->state == CK_OK));
			json_object_set_new(o, "status", json_string(state_word(c->state)));
			json_object_set_new(o, "problem", c->state == CK_PROBLEM ?
			    json_string(c->detail) : json_null());
			json_object_set_new(o, "fix", c->state == CK_PROBLEM ? json_string(c->fix) :
			    json_null());
			json_object_set_new(o, "detail", json_string(c->detail));
			json_object_set_new(o, "temporary", c->state == CK_PROBLEM ?
			    json_boolean(dmk_err_is_temporary(c->code)) : json_null());
			json_array_append_new(arr, o);
		}
		json_object_set_new(root, "command", json_string("doctor"));
		json_object_set_new(root, "checks", arr);
		json_object_set_new(root, "problems", json_integer((json_int_t)nprob));
		json_object_set_new(root, "exit", json_integer(code));
		json_object_set_new(root, "error", nprob ? json_sprintf("%zu problem(s)", nprob) :
		    json_null());
		if ((s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER)) != NULL) {
			fprintf(a->out, "%s\n", s);
			json_free_dump(s);
		}
		json_decref(root);
		return code;
	}
	for (i = 0; i < d->n; i++) {
		const struct check *c = &d->v[i];
		if (a->quiet && c->state != CK_PROBLEM)
			continue;
		if (c->state == CK_PROBLEM)
			fprintf(a->out, "PROBLEM: %s %s: %s; fix: %s\n", c->name, c->target, c->detail,
			    c->fix);
		else
			fprintf(a->out, "%s: %s %s: %s\n", state_word(c->state), c->name, c->target,
			    c->detail);
	}
	if (nprob)
		fprintf(a->out, "doctor: %zu problem(s)%s\n", nprob, nlasting ? "" :
		    ", all of reach (a store or server did not answer: try again later)");
	else if (!a->quiet)
		fprintf(a->out, "doctor: no problems found\n");
	return code;
}

int
cmd_doctor(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	static const struct option opts[] = {
		{ "ag", required_argument, NULL, 'a' },
		{ "database", required_argument, NULL, 'd' },
		{ NULL, 0, NULL, 0 },
	};
	const struct conf_ag **ags = NULL;
	struct doctor d;
	size_t nags = 0, i;
	int ch, r;

	memset(&d, 0, sizeof(d));
	d.a = a;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":a:d:", opts, NULL)) != -1) {
		if (ch == 'a')
			d.ag_filter = optarg;
		else if (ch == 'd')
			d.db_filter = optarg;
		else if (ch == ':')
			return dmk_errf(err, DMK_ERR_USAGE, "doctor: option '%s' needs a value; "
			    "usage: dmkagent doctor [--ag AG] [--database DB]", argv[optind - 1]);
		else
			return dmk_errf(err, DMK_ERR_USAGE, "doctor: unknown option '%s'; usage: "
			    "dmkagent doctor [--ag AG] [--database DB]", argv[optind - 1]);
	}
	if (optind != argc)
		return dmk_errf(err, DMK_ERR_USAGE, "doctor takes no arguments ('%s'); usage: "
		    "dmkagent doctor [--ag AG] [--database DB]", argv[optind]);
	if ((r = ag_select(a, d.ag_filter, d.db_filter, &ags, &nags, err)) != 0)
		return r;
	pthread_mutex_init(&d.mu, NULL);
	a->command = "doctor";
	if ((d.store_ok = calloc(a->cfg->nstores + 1, sizeof(int))) == NULL) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	check_files(&d);
	check_stores(&d);
	check_refs(&d);
	for (i = 0; i < nags; i++)
		check_ag(&d, ags[i]);
	if (d.nomem) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	r = report(&d);
	if (r != 0)
		dmk_errf(err, r == DMK_EXIT_UNREACHABLE ? DMK_ERR_UNREACHABLE : DMK_ERR_VERIFY,
		    "doctor: problems found (each above)");
	r = r == 0 ? 0 : r == DMK_EXIT_UNREACHABLE ? DMK_ERR_UNREACHABLE : DMK_ERR_VERIFY;
out:
	pthread_mutex_destroy(&d.mu);
	free(d.v);
	free(d.refs);
	free(d.store_ok);
	free(ags);
	return r;
}
