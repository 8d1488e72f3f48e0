/* audit.c: the hash-chained audit log; see audit.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "audit.h"

#define ZERO_HASH "0000000000000000000000000000000000000000000000000000000000000000"
#define AUDIT_LINE_MAX (64 * 1024)

static void
sha256_hex(const char *data, size_t len, char out[65])
{
	unsigned char md[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *)data, len, md);
	util_hex(md, sizeof(md), out);
}

static int
hmac_hex(const struct secret *key, const char *data, size_t len, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (HMAC(EVP_sha256(), secret_reveal(key), (int)secret_len(key),
	    (const unsigned char *)data, len, md, &mdlen) == NULL)
		return DMK_ERR_INTERNAL;
	util_hex(md, mdlen, out);
	return 0;
}

int
audit_open(struct audit *a, const char *path, const struct secret *key,
    const char *run_id, struct dmk_err *err)
{
	struct passwd *pw;
	struct stat st;

	memset(a, 0, sizeof(*a));
	a->fd = -1;
	if (strlen(path) >= sizeof(a->path))
		return dmk_errf(err, DMK_ERR_CONFIG, "audit log path too long");
	util_strlcpy(a->path, path, sizeof(a->path));
	util_strlcpy(a->run_id, run_id, sizeof(a->run_id));
	a->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (a->fd == -1)
		return dmk_errf(err, DMK_ERR_IO, "%s: cannot open audit log: %s", path,
		    strerror(errno));
	if (fstat(a->fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		close(a->fd);
		a->fd = -1;
		return dmk_errf(err, DMK_ERR_IO, "%s: audit log is not a regular file", path);
	}
	if (key != NULL && (a->key = secret_dup(key)) == NULL) {
		close(a->fd);
		a->fd = -1;
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	}
	a->uid = geteuid();
	a->pid = getpid();
	if ((pw = getpwuid(a->uid)) != NULL)
		util_strlcpy(a->user, pw->pw_name, sizeof(a->user));
	else
		snprintf(a->user, sizeof(a->user), "%u", (unsigned)a->uid);
	if (gethostname(a->host, sizeof(a->host)) == -1)
		util_strlcpy(a->host, "unknown", sizeof(a->host));
	a->host[sizeof(a->host) - 1] = '\0';
	return 0;
}

void
audit_close(struct audit *a)
{
	if (a->fd != -1)
		close(a->fd);
	a->fd = -1;
	secret_free(a->key);
	a->key = NULL;
}

int
audit_use_checkpoint(struct audit *a, const char *path, struct dmk_err *err)
{
	if (strlen(path) + 8 >= sizeof(a->ckpt_path))
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: checkpoint path too long", path);
	util_strlcpy(a->ckpt_path, path, sizeof(a->ckpt_path));
	return 0;
}

/* What the last line of the log says. */
struct tail {
	long long seq;
	char hash[65];
	char run_id[33];
	int run_end;              /* the last record is a run-end */
	int empty;
};

/* Read the last line of the log through fd (under the lock). */
static int
read_tail(int fd, const char *path, struct tail *t, struct dmk_err *err)
{
	char *b = NULL, *last, *nl;
	off_t size, from;
	ssize_t n;
	int r = 0;
	json_t *j = NULL, *v;

	memset(t, 0, sizeof(*t));
	util_strlcpy(t->hash, ZERO_HASH, sizeof(t->hash));
	t->empty = 1;
	t->run_end = 1;
	size = lseek(fd, 0, SEEK_END);
	if (size <= 0)
		goto out;
	t->empty = 0;
	from = size > AUDIT_LINE_MAX ? size - AUDIT_LINE_MAX : 0;
	if ((b = malloc((size_t)(size - from) + 1)) == NULL) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	n = pread(fd, b, (size_t)(size - from), from);
	if (n != size - from) {
		r = dmk_errf(err, DMK_ERR_IO, "%s: short read", path);
		goto out;
	}
	b[n] = '\0';
	if (n == 0 || b[n - 1] != '\n') {
		r = dmk_errf(err, DMK_ERR_VERIFY, "%s: the last record is incomplete; run "
		    "'dmkagent audit verify %s' and repair the log before continuing", path, path);
		goto out;
	}
	b[n - 1] = '\0';
	last = (nl = strrchr(b, '\n')) ? nl + 1 : b;
	sha256_hex(last, strlen(last), t->hash);
	if ((j = json_loads(last, 0, NULL)) == NULL || !json_is_integer(json_object_get(j, "seq"))) {
		r = dmk_errf(err, DMK_ERR_VERIFY, "%s: the last record is not a valid audit "
		    "record", path);
		goto out;
	}
	t->seq = json_integer_value(json_object_get(j, "seq"));
	if (json_is_string(v = json_object_get(j, "run_id")))
		util_strlcpy(t->run_id, json_string_value(v), sizeof(t->run_id));
	v = json_object_get(j, "action");
	t->run_end = json_is_string(v) && strcmp(json_string_value(v), "run-end") == 0;
	/* The next records are seq + 1...: a forged LLONG_MAX would overflow. */
	if (t->seq < 1 || t->seq > AUDIT_SEQ_MAX) {
		r = dmk_errf(err, DMK_ERR_VERIFY, "%s: the last record's seq %lld is out of range; "
		    "run 'dmkagent audit verify %s'", path, t->seq, path);
		t->seq = 0;
	}
out:
	json_decref(j);
	free(b);
	return r;
}

/* The prev member of the record with this seq, if the log has one. */
static int
prev_at_seq(int fd, const char *path, long long seq, char prev[65], int *found,
    struct dmk_err *err)
{
	char *line = NULL;
	size_t cap = 0;
	FILE *f;
	int dfd;

	*found = 0;
	if ((dfd = dup(fd)) == -1 || lseek(dfd, 0, SEEK_SET) == -1 ||
	    (f = fdopen(dfd, "r")) == NULL) {
		if (dfd != -1)
			close(dfd);
		return dmk_errf(err, DMK_ERR_IO, "%s: %s", path, strerror(errno));
	}
	while (getline(&line, &cap, f) != -1) {
		json_t *j = json_loads(line, 0, NULL), *v;
		if (j != NULL && json_is_integer(json_object_get(j, "seq")) &&
		    json_integer_value(json_object_get(j, "seq")) == seq) {
			if (json_is_string(v = json_object_get(j, "prev"))) {
				util_strlcpy(prev, json_string_value(v), 65);
				*found = 1;
			}
			json_decref(j);
			break;
		}
		json_decref(j);
	}
	free(line);
	fclose(f);
	return 0;
}

/* Does the log (tail t) still hold the head of checkpoint c?  what names c. */
static int
check_against(int fd, const char *path, const struct tail *t, const struct audit_ckpt *c,
    const char *what, struct dmk_err *err)
{
	char prev[65];
	int found, r;

	if (c->seq == 0)
		return 0;
	if (t->seq < c->seq)
		return dmk_errf(err, DMK_ERR_VERIFY, "%s: the log ends at seq %lld but %s says "
		    "seq %lld: %lld record(s) are missing at the end (truncated); refusing to "
		    "append.  Run 'dmkagent audit verify %s'; to accept the log as it is, "
		    "'dmkagent audit reset-checkpoint --reason TEXT'", path, t->seq, what, c->seq,
		    c->seq - t->seq, path);
	if (t->seq == c->seq) {
		if (strcmp(t->hash, c->head) == 0)
			return 0;
	} else {
		if ((r = prev_at_seq(fd, path, c->seq + 1, prev, &found, err)) != 0)
			return r;
		if (found && strcmp(prev, c->head) == 0)
			return 0;
	}
	return dmk_errf(err, DMK_ERR_VERIFY, "%s: the record at seq %lld is not the one %s "
	    "names (hash differs): the log was rewritten, or cut and extended; refusing to "
	    "append.  Run 'dmkagent audit verify %s'; to accept the log as it is, "
	    "'dmkagent audit reset-checkpoint --reason TEXT'", path, c->seq, what, path);
}

/* Write text to path atomically: 0600 temp file, fsync, rename. */
static int
write_atomic(const char *path, const char *text, size_t len, struct dmk_err *err)
{
	char tmp[4200];
	int fd = -1, tries, r = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	for (tries = 0; tries < 2; tries++) {
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		/* A temp file left by a killed run: we hold the log's lock, so it is stale. */
		if (fd == -1 && errno == EEXIST && tries == 0 && unlink(tmp) == 0)
			continue;
		break;
	}
	if (fd == -1)
		return dmk_errf(err, DMK_ERR_IO, "%s: %s", tmp, strerror(errno));
	if (write(fd, text, len) != (ssize_t)len || fsync(fd) == -1) {
		r = dmk_errf(err, DMK_ERR_IO, "%s: %s", tmp, strerror(errno));
		close(fd);
		unlink(tmp);
		return r;
	}
	close(fd);
	if (rename(tmp, path) == -1) {
		r = dmk_errf(err, DMK_ERR_IO, "%s: rename: %s", path, strerror(errno));
		unlink(tmp);
		return r;
	}
	/* No fsync of the directory: a rename lost in a crash leaves an older
	 * checkpoint, and a log ahead of its checkpoint is accepted. */
	return 0;
}

static json_t *
str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

/* One record's line, chained to prev, into line (reset first). */
static int
build_line(struct audit *a, long long seq, const char *prev, const struct audit_entry *e,
    struct buf *line, struct dmk_err *err)
{
	const struct audit_target *t = e->target;
	const struct audit_keys *k = e->keys;
	char mac[65], tbuf[32];
	json_t *rec, *o;
	char *s = NULL;
	int r;

	line->len = 0;
	util_rfc3339(time(NULL), tbuf, sizeof(tbuf));
	rec = json_object();
	json_object_set_new(rec, "seq", json_integer(seq));
	json_object_set_new(rec, "time", json_string(tbuf));
	json_object_set_new(rec, "run_id", json_string(a->run_id));
	o = json_object();
	json_object_set_new(o, "user", json_string(a->user));
	json_object_set_new(o, "uid", json_integer(a->uid));
	json_object_set_new(o, "host", json_string(a->host));
	json_object_set_new(o, "pid", json_integer(a->pid));
	json_object_set_new(rec, "actor", o);
	json_object_set_new(rec, "action", json_string(e->action));
	o = json_object();
	json_object_set_new(o, "ag", str_or_null(t ? t->ag : NULL));
	json_object_set_new(o, "replica", str_or_null(t ? t->replica : NULL));
	json_object_set_new(o, "database", str_or_null(t ? t->database : NULL));
	json_object_set_new(rec, "target", o);
	o = json_object();
	if (k) {
		if (k->family_guid)
			json_object_set_new(o, "family_guid", json_string(k->family_guid));
		if (k->dmk_key_guid)
			json_object_set_new(o, "dmk_key_guid", json_string(k->dmk_key_guid));
		if (k->cert_thumbprint)
			json_object_set_new(o, "cert_thumbprint", json_string(k->cert_thumbprint));
		if (k->store)
			json_object_set_new(o, "store", json_string(k->store));
		if (k->reference)
			json_object_set_new(o, "reference", json_string(k->reference));
		if (k->version)
			json_object_set_new(o, "version", json_string(k->version));
		if (k->rotation && k->rotation[0])
			json_object_set_new(o, "rotation", json_string(k->rotation));
	}
	json_object_set_new(rec, "keys", o);
	json_object_set_new(rec, "outcome", json_string(e->outcome ? e->outcome : "ok"));
	json_object_set_new(rec, "error", str_or_null(e->error));
	if (e->note)
		json_object_set_new(rec, "note", json_string(e->note));
	if (e->about_run)
		json_object_set_new(rec, "about_run", json_string(e->about_run));
	if (a->reason || a->ticket || a->trigger) {
		o = json_object();
		if (a->reason)
			json_object_set_new(o, "reason", json_string(a->reason));
		if (a->ticket)
			json_object_set_new(o, "ticket", json_string(a->ticket));
		if (a->trigger)
			json_object_set_new(o, "trigger", json_string(a->trigger));
		json_object_set_new(rec, "why", o);
	}
	if (a->describe != NULL && ((k && k->store) || (t && t->ag))) {
		char sid[256] = "", login[256] = "";
		a->describe(a->describe_ctx, k ? k->store : NULL, t ? t->ag : NULL, sid,
		    sizeof(sid), login, sizeof(login));
		if (sid[0] || login[0]) {
			o = json_object();
			if (sid[0])
				json_object_set_new(o, "store", json_string(sid));
			if (login[0])
				json_object_set_new(o, "sql", json_string(login));
			json_object_set_new(rec, "credential", o);
		}
	}
	json_object_set_new(rec, "prev", json_string(prev));
	if ((s = json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII)) == NULL) {
		json_decref(rec);
		return dmk_errf(err, DMK_ERR_NOMEM, "cannot encode audit record");
	}
	json_decref(rec);
	if ((r = buf_append(line, s, strlen(s) - 1)) != 0)  /* drop the final } */
		goto enc;
	if (a->key != NULL) {
		/* The MAC covers the bytes up to here, and is the last member. */
		if ((r = buf_puts(line, "}")) != 0 || (r = hmac_hex(a->key, line->data, line->len, mac)) != 0)
			goto enc;
		line->len--;
		if ((r = buf_printf(line, ",\"mac\":\"%s\"", mac)) != 0)
			goto enc;
	}
	if ((r = buf_puts(line, "}\n")) != 0)
		goto enc;
	json_free_dump(s);
	return 0;
enc:
	json_free_dump(s);
	return dmk_errf(err, r, "%s: audit record too large", a->path);
}

/* Open the log by its path, locked, and sure the path still names it. */
static int
open_locked(struct audit *a, int *fdp, struct dmk_err *err)
{
	struct stat st, sp;
	int fd, tries;

	for (tries = 0; tries < 5; tries++) {
		fd = open(a->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd == -1)
			return dmk_errf(err, DMK_ERR_IO, "%s: cannot open audit log: %s", a->path,
			    strerror(errno));
		if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
			close(fd);
			return dmk_errf(err, DMK_ERR_IO, "%s: audit log is not a regular file",
			    a->path);
		}
		if (flock(fd, LOCK_EX) == -1) {
			close(fd);
			return dmk_errf(err, DMK_ERR_IO, "%s: flock: %s", a->path, strerror(errno));
		}
		/* Renamed between open and flock (rotation): open the new one. */
		if (lstat(a->path, &sp) == 0 && sp.st_dev == st.st_dev && sp.st_ino == st.st_ino) {
			*fdp = fd;
			return 0;
		}
		close(fd);
	}
	return dmk_errf(err, DMK_ERR_IO, "%s: the audit log keeps being replaced", a->path);
}

/* Write the checkpoint for the new head, then hand it to the anchor. */
static int
save_checkpoint(struct audit *a, long long seq, const char *head, int run_end,
    const char *last_run, struct dmk_err *err)
{
	struct audit_ckpt c;
	struct buf text;
	struct dmk_err aerr;
	int r;

	memset(&c, 0, sizeof(c));
	c.seq = seq;
	util_strlcpy(c.head, head, sizeof(c.head));
	util_strlcpy(c.log, a->path, sizeof(c.log));
	util_strlcpy(c.last_run, last_run, sizeof(c.last_run));
	c.run_open = !run_end;
	buf_init(&text, AUDIT_LINE_MAX);
	if ((r = audit_ckpt_encode(&c, a->key, &text, err)) != 0)
		goto out;
	if ((r = write_atomic(a->ckpt_path, text.data, text.len, err)) != 0) {
		dmk_err_prefix(err, "audit checkpoint");
		goto out;
	}
	if (a->anchor != NULL) {
		/* Reported and audited (next batch), never blocking: retried next batch. */
		if (a->anchor(a->anchor_ctx, text.data, &aerr) != 0) {
			log_error("audit anchor: %s", aerr.msg);
			snprintf(a->anchor_err, sizeof(a->anchor_err), "%s", aerr.msg);
		} else
			a->anchor_err[0] = '\0';
	}
out:
	buf_free(&text);
	return r;
}

int
audit_record_many(struct audit *a, const struct audit_entry *e, size_t n, struct dmk_err *err)
{
	struct audit_entry pre[3];
	struct audit_ckpt ck;
	struct tail t;
	char prev[65], note[640], note2[200], anchor_err[512];
	long long seq;
	struct buf line, all;
	size_t i, npre = 0;
	int fd = -1, r, have_ck = 0, found;
	const struct audit_entry *x;

	if (a->fd == -1)
		return dmk_errf(err, DMK_ERR_INTERNAL, "audit log not open");
	if (n == 0)
		return 0;
	buf_init(&line, AUDIT_LINE_MAX);
	buf_init(&all, (n + 3) * AUDIT_LINE_MAX);
	if ((r = open_locked(a, &fd, err)) != 0)
		goto out;
	if ((r = read_tail(fd, a->path, &t, err)) != 0)
		goto out;
	memset(pre, 0, sizeof(pre));
	if (a->ckpt_path[0] != '\0') {
		r = audit_ckpt_read(a->ckpt_path, a->key, &ck, &found, err);
		/* A reset replaces a checkpoint it cannot read (or trust) as well. */
		if (r != 0 && a->reset_reason == NULL)
			goto out;
		have_ck = r == 0 && found;
	}
	if (a->reset_reason != NULL) {
		if (r != 0)
			snprintf(note, sizeof(note), "reason: %s; the checkpoint was not usable: %.200s",
			    a->reset_reason, err->msg);
		else
			snprintf(note, sizeof(note), "reason: %s; the checkpoint said seq %lld",
			    a->reset_reason, have_ck ? ck.seq : 0LL);
		r = 0;
		pre[npre++] = (struct audit_entry){ "checkpoint-reset", NULL, NULL, "ok", NULL,
		    note, NULL };
	} else if (have_ck && t.empty && ck.seq > 0) {
		/* A new, empty file after a rotation: continue the previous head. */
		t.seq = ck.seq;
		util_strlcpy(t.hash, ck.head, sizeof(t.hash));
		util_strlcpy(t.run_id, ck.last_run, sizeof(t.run_id));
		t.run_end = !ck.run_open;
		snprintf(note, sizeof(note), "continues a previous log file whose last record "
		    "was seq %lld", ck.seq);
		pre[npre++] = (struct audit_entry){ "log-continues", NULL, NULL, "ok", NULL,
		    note, NULL };
	} else if (have_ck) {
		char what[4200];
		snprintf(what, sizeof(what), "its checkpoint %s", a->ckpt_path);
		if ((r = check_against(fd, a->path, &t, &ck, what, err)) != 0)
			goto out;
	} else if (a->ckpt_path[0] != '\0' && !t.empty) {
		snprintf(note, sizeof(note), "no checkpoint for a log ending at seq %lld", t.seq);
		pre[npre++] = (struct audit_entry){ "checkpoint-created", NULL, NULL, "ok", NULL,
		    note, NULL };
	}
	if (a->has_expect && !a->started && a->reset_reason == NULL) {
		struct tail te = t;
		if (t.empty && a->expect.seq > 0 && have_ck && ck.seq >= a->expect.seq)
			;   /* continuing: the local checkpoint was compared above */
		else if ((r = check_against(fd, a->path, &te, &a->expect, "the audit anchor",
		    err)) != 0)
			goto out;
	}
	/* The last run never wrote its run-end: it was killed; say so once. */
	if (!t.run_end && t.run_id[0] != '\0' && strcmp(t.run_id, a->run_id) != 0) {
		snprintf(note2, sizeof(note2), "run %s has no run-end: it was interrupted", t.run_id);
		pre[npre++] = (struct audit_entry){ "run-interrupted", NULL, NULL, "ok", NULL,
		    note2, t.run_id };
	}
	if (a->anchor_err[0] != '\0') {
		util_strlcpy(anchor_err, a->anchor_err, sizeof(anchor_err));
		pre[npre++] = (struct audit_entry){ "audit-anchor", NULL, NULL, "failed",
		    anchor_err, NULL, NULL };
	}
	seq = t.seq;
	util_strlcpy(prev, t.hash, sizeof(prev));
	for (i = 0; i < npre + n; i++) {
		x = i < npre ? &pre[i] : &e[i - npre];
		if ((r = build_line(a, ++seq, prev, x, &line, err)) != 0)
			goto out;
		sha256_hex(line.data, line.len - 1, prev);   /* the next record's prev */
		if ((r = buf_append(&all, line.data, line.len)) != 0) {
			r = dmk_errf(err, r, "%s: audit batch too large", a->path);
			goto out;
		}
	}
	/* One write and one fsync for the batch: all of it is durable before we return. */
	if (write(fd, all.data, all.len) != (ssize_t)all.len) {
		r = dmk_errf(err, DMK_ERR_IO, "%s: write: %s", a->path, strerror(errno));
		goto out;
	}
	if (fsync(fd) == -1) {
		r = dmk_errf(err, DMK_ERR_IO, "%s: fsync: %s", a->path, strerror(errno));
		goto out;
	}
	a->started = 1;
	a->reset_reason = NULL;
	x = &e[n - 1];
	if (a->ckpt_path[0] != '\0' && (r = save_checkpoint(a, seq, prev,
	    strcmp(x->action, "run-end") == 0, a->run_id, err)) != 0)
		goto out;
	r = 0;
out:
	if (fd != -1) {
		flock(fd, LOCK_UN);
		close(fd);
	}
	buf_free(&line);
	buf_free(&all);
	if (r == 0 && a->after != NULL)
		a->after(a->after_ctx);
	return r;
}

int
audit_record(struct audit *a, const char *action, const struct audit_target *t,
    const struct audit_keys *k, const char *outcome, const char *error,
    struct dmk_err *err)
{
	struct audit_entry e = { action, t, k, outcome, error, NULL, NULL };

	return audit_record_many(a, &e, 1, err);
}

static int
is_hex64(const char *s)
{
	size_t i;

	for (i = 0; i < 64; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return s[64] == '\0' || s[64] == '"';
}

/*
 * A line's MAC member: ...,"mac":"<64 hex>"} and last.  Returns 1 when
 * there is a well-formed one (*cut: where it starts), 0 when the line has
 * none, -1 when malformed.
 */
static int
mac_split(const char *line, size_t len, int has_member, size_t *cut)
{
	static const char macsfx[] = ",\"mac\":\"";   /* then 64 hex, then "} */
	size_t sl = sizeof(macsfx) - 1;

	if (!has_member)
		return 0;
	if (len < sl + 66 || strncmp(line + len - 66 - sl, macsfx, sl) != 0 ||
	    !is_hex64(line + len - 66) || strcmp(line + len - 2, "\"}") != 0)
		return -1;
	*cut = len - 66 - sl;
	return 1;
}

/* Does the MAC at line[cut..] match the bytes before it (plus "}")? */
static int
mac_ok(const struct secret *key, char *line, size_t cut, const char *mac)
{
	char save[2], m[65];
	int r;

	memcpy(save, line + cut, 2);
	line[cut] = '}';
	line[cut + 1] = '\0';
	r = hmac_hex(key, line, cut + 1, m);
	memcpy(line + cut, save, 2);
	return r == 0 && CRYPTO_memcmp(m, mac, 64) == 0;
}

int
audit_ckpt_encode(const struct audit_ckpt *c, const struct secret *key, struct buf *out,
    struct dmk_err *err)
{
	char tbuf[32], mac[65];
	json_t *o;
	char *s;
	int r;

	out->len = 0;
	util_rfc3339(time(NULL), tbuf, sizeof(tbuf));
	o = json_object();
	json_object_set_new(o, "checkpoint", json_integer(1));
	json_object_set_new(o, "log", json_string(c->log));
	json_object_set_new(o, "seq", json_integer(c->seq));
	json_object_set_new(o, "head", json_string(c->head));
	json_object_set_new(o, "last_run", json_string(c->last_run));
	json_object_set_new(o, "run_open", json_boolean(c->run_open));
	json_object_set_new(o, "time", json_string(tbuf));
	s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
	json_decref(o);
	if (s == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "cannot encode the audit checkpoint");
	r = buf_puts(out, s);
	json_free_dump(s);
	if (r == 0 && key != NULL) {
		if ((r = hmac_hex(key, out->data, out->len, mac)) == 0) {
			out->len--;
			r = buf_printf(out, ",\"mac\":\"%s\"}", mac);
		}
	}
	if (r == 0)
		r = buf_puts(out, "\n");
	if (r != 0)
		return dmk_errf(err, r, "cannot encode the audit checkpoint");
	return 0;
}

int
audit_ckpt_parse(const char *text, size_t len, const struct secret *key, const char *src,
    struct audit_ckpt *c, struct dmk_err *err)
{
	char *line;
	size_t cut = 0;
	json_t *j = NULL, *v;
	int m, r = 0;

	memset(c, 0, sizeof(*c));
	if (len > AUDIT_LINE_MAX || memchr(text, '\0', len) != NULL)
		return dmk_errf(err, DMK_ERR_VERIFY, "%s: not an audit checkpoint", src);
	if ((line = malloc(len + 2)) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	memcpy(line, text, len);
	line[len] = '\0';
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		line[--len] = '\0';
	if ((j = json_loads(line, JSON_REJECT_DUPLICATES, NULL)) == NULL || !json_is_object(j) ||
	    !json_is_integer(json_object_get(j, "checkpoint")) ||
	    json_integer_value(json_object_get(j, "checkpoint")) != 1 ||
	    !json_is_integer(v = json_object_get(j, "seq")) || json_integer_value(v) < 0 ||
	    !json_is_string(json_object_get(j, "head")) ||
	    strlen(json_string_value(json_object_get(j, "head"))) != 64 ||
	    !is_hex64(json_string_value(json_object_get(j, "head")))) {
		r = dmk_errf(err, DMK_ERR_VERIFY, "%s: not an audit checkpoint (want "
		    "checkpoint 1, seq, head)", src);
		goto out;
	}
	c->seq = json_integer_value(v);
	util_strlcpy(c->head, json_string_value(json_object_get(j, "head")), sizeof(c->head));
	if (json_is_string(v = json_object_get(j, "log")))
		util_strlcpy(c->log, json_string_value(v), sizeof(c->log));
	if (json_is_string(v = json_object_get(j, "last_run")))
		util_strlcpy(c->last_run, json_string_value(v), sizeof(c->last_run));
	c->run_open = json_is_true(json_object_get(j, "run_open"));
	v = json_object_get(j, "mac");
	if ((m = mac_split(line, len, v != NULL, &cut)) < 0 || (v && !json_is_string(v))) {
		r = dmk_errf(err, DMK_ERR_VERIFY, "%s: malformed mac", src);
		goto out;
	}
	c->keyed = m == 1;
	if (key != NULL) {
		if (!c->keyed) {
			r = dmk_errf(err, DMK_ERR_VERIFY, "%s: the checkpoint has no MAC although "
			    "an audit key is configured: it was replaced", src);
			goto out;
		}
		if (!mac_ok(key, line, cut, json_string_value(v))) {
			r = dmk_errf(err, DMK_ERR_VERIFY, "%s: checkpoint MAC does not match: "
			    "it was forged or altered", src);
			goto out;
		}
		c->mac_checked = 1;
	}
out:
	json_decref(j);
	free(line);
	return r;
}

int
audit_ckpt_read(const char *path, const struct secret *key, struct audit_ckpt *c,
    int *found, struct dmk_err *err)
{
	char b[AUDIT_LINE_MAX];
	ssize_t n;
	int fd, r;

	*found = 0;
	memset(c, 0, sizeof(*c));
	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) == -1) {
		if (errno == ENOENT)
			return 0;
		return dmk_errf(err, DMK_ERR_IO, "%s: %s", path, strerror(errno));
	}
	n = read(fd, b, sizeof(b));
	close(fd);
	if (n < 0)
		return dmk_errf(err, DMK_ERR_IO, "%s: %s", path, strerror(errno));
	if ((r = audit_ckpt_parse(b, (size_t)n, key, path, c, err)) != 0)
		return r;
	*found = 1;
	return 0;
}

/* Per checkpoint: what the files say at its seq. */
struct want {
	long long seq;
	char hash[65];             /* of record seq */
	char next_prev[65];        /* prev of record seq + 1 */
	const char *file;          /* where the record compared is */
	long long line;
};

static int
note(struct audit_report *rep, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
note(struct audit_report *rep, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = buf_vprintf(&rep->notes, fmt, ap);
	va_end(ap);
	if (r == 0)
		r = buf_putc(&rep->notes, '\n');
	return r;
}

/* The run that has a run-start and, so far, no end. */
struct open_run {
	char id[33];
	const char *file;
	long long line;
};

int
audit_verify_files(const char *const *paths, size_t npaths, const struct secret *key,
    const struct audit_check *chk, size_t nchk, struct audit_report *rep,
    struct dmk_err *err)
{
	char prev[65], h[65];
	char *line = NULL;
	size_t cap = 0, fi, ci, cut = 0;
	ssize_t n;
	long long lineno = 0, seq = 0, lastline = 0;
	struct want w[8];
	struct open_run run;
	const char *path = NULL, *lastpath = npaths ? paths[npaths - 1] : "";
	FILE *f = NULL;
	int r = 0, m;

	rep->nrecords = rep->head_seq = 0;
	rep->macs_seen = rep->macs_checked = 0;
	memset(rep->file, 0, sizeof(rep->file));
	memset(&run, 0, sizeof(run));
	if (npaths == 0 || npaths > AUDIT_VERIFY_FILES_MAX || nchk > 8)
		return dmk_errf(err, DMK_ERR_USAGE, "audit verify: 1 to %d files",
		    AUDIT_VERIFY_FILES_MAX);
	for (ci = 0; ci < nchk; ci++) {
		memset(&w[ci], 0, sizeof(w[ci]));
		w[ci].seq = chk[ci].ckpt->seq;
	}
	util_strlcpy(prev, ZERO_HASH, sizeof(prev));
	for (fi = 0; fi < npaths; fi++) {
		struct audit_file_report *fr = &rep->file[fi];

		path = paths[fi];
		lineno = 0;
		if ((f = fopen(path, "r")) == NULL)
			return dmk_errf(err, DMK_ERR_IO, "%s: %s", path, strerror(errno));
		while ((n = getline(&line, &cap, f)) != -1) {
			json_t *j, *v, *act;
			json_error_t je;
			const char *action, *rid;
			size_t len;

			lineno++;
			if (n == 0 || line[n - 1] != '\n') {
				r = dmk_errf(err, DMK_ERR_VERIFY, "%s:%lld: record is truncated (no "
				    "end of line)", path, lineno);
				goto out;
			}
			line[--n] = '\0';
			len = (size_t)n;
			if (strlen(line) != len || len > AUDIT_LINE_MAX) {
				r = dmk_errf(err, DMK_ERR_VERIFY, "%s:%lld: not a valid record", path,
				    lineno);
				goto out;
			}
			if ((j = json_loads(line, JSON_REJECT_DUPLICATES, &je)) == NULL ||
			    !json_is_object(j)) {
				json_decref(j);
				r = dmk_errf(err, DMK_ERR_VERIFY, "%s:%lld: not valid JSON (column %d)",
				    path, lineno, je.column);
				goto out;
			}
			act = json_object_get(j, "action");
			action = json_is_string(act) ? json_string_value(act) : "";
			v = json_object_get(j, "run_id");
			rid = json_is_string(v) ? json_string_value(v) : "";
			v = json_object_get(j, "seq");
			if (lineno == 1 && strcmp(action, "log-continues") == 0 &&
			    json_is_integer(v) && json_integer_value(v) > 1 &&
			    (fi == 0 || seq == 0)) {
				/* Opens a rotated file: it links to a head we were not given. */
				json_t *pv = json_object_get(j, "prev");
				if (!json_is_string(pv) || strlen(json_string_value(pv)) != 64 ||
				    !is_hex64(json_string_value(pv))) {
					json_decref(j);
					r = dmk_errf(err, DMK_ERR_VERIFY, "%s:1: log-continues record "
					    "without a valid prev", path);
					goto out;
				}
				seq = json_integer_value(v) - 1;
				util_strlcpy(prev, json_string_value(pv), sizeof(prev));
				fr->continues = 1;
				note(rep, "%s:1 continues a previous log file at seq %lld; its earlier "
				    "records were not checked here (give the previous file first: "
				    "audit verify OLD %s)", path, seq + 1, path);
			} else if (lineno == 1 && fi > 0 && seq > 0 &&
			    strcmp(action, "log-continues") != 0) {
				json_decref(j);
				r = dmk_errf(err, DMK_ERR_VERIFY, "%s:1: does not continue %s (expected "
				    "a log-continues record with seq %lld)", path, paths[fi - 1], seq + 1);
				goto out;
			} else if (lineno == 1 && fi > 0 && seq > 0)
				fr->continues = 1;
			if (!json_is_integer(v) || json_integer_value(v) != seq + 1) {
				json_decref(j);
				r = dmk_errf(err, DMK_ERR_VERIFY, "%s:%lld: sequence broken (expected seq "
				    "%lld): a record was removed, reordered or inserted", path, lineno,
				    seq + 1);
				goto out;
			}
			v = json_object_get(j, "prev");
			if (!json_is_string(v) || strcmp(json_string_value(v), prev) != 0) {
				json_decref(j);
				r = dmk_errf(err, DMK_ERR_VERIFY, "%s:%lld: hash chain broken: the "
				    "previous record was changed, removed or reordered", path, lineno);
				goto out;
			}
			v = json_object_get(j, "mac");
			if ((m = mac_split(line, len, v != NULL, &cut)) < 0 ||
			    (v != NULL && !json_is_string(v))) {
				json_decref(j);
				r = dmk_errf(err, DMK_ERR_VERIFY, "%s:%lld: malformed mac", path, lineno);
				goto out;
			}
			if (m == 1) {
				rep->macs_seen = fr->macs_seen = 1;
				if (key != NULL) {
					if (!mac_ok(key, line, cut, json_string_value(v))) {
						json_decref(j);
						r = dmk_errf(err, DMK_ERR_VERIFY, "%s:%lld: MAC does not match: "
						    "the record was forged or altered", path, lineno);
						goto out;
					}
					rep->macs_checked = fr->macs_checked = 1;
				}
			} else if (key != NULL) {
				json_decref(j);
				r = dmk_errf(err, DMK_ERR_VERIFY, "%s:%lld: record has no MAC although an "
				    "audit key is configured", path, lineno);
				goto out;
			}
			/* Runs: start, end, or a later run saying it was interrupted. */
			if (strcmp(action, "run-start") == 0) {
				if (run.id[0] != '\0') {
					json_decref(j);
					r = dmk_errf(err, DMK_ERR_VERIFY, "%s:%lld: run %s started here has "
					    "no run-end, and no later record says it was interrupted (next "
					    "run starts at %s:%lld): its last records were removed",
					    run.file, run.line, run.id, path, lineno);
					goto out;
				}
				util_strlcpy(run.id, rid, sizeof(run.id));
				run.file = path;
				run.line = lineno;
			} else if (strcmp(action, "run-end") == 0) {
				if (strcmp(run.id, rid) == 0)
					run.id[0] = '\0';
			} else if (strcmp(action, "run-interrupted") == 0) {
				v = json_object_get(j, "about_run");
				if (run.id[0] != '\0' && json_is_string(v) &&
				    strcmp(json_string_value(v), run.id) == 0) {
					note(rep, "%s:%lld: run %s was interrupted (killed before its "
					    "run-end); recorded at %s:%lld", run.file, run.line, run.id,
					    path, lineno);
					run.id[0] = '\0';
				}
			} else if (strcmp(action, "checkpoint-reset") == 0 ||
			    strcmp(action, "checkpoint-created") == 0) {
				v = json_object_get(j, "note");
				note(rep, "%s:%lld: %s (%s)", path, lineno, action,
				    json_is_string(v) ? json_string_value(v) : "");
			}
			json_decref(j);
			sha256_hex(line, len, h);
			seq++;
			for (ci = 0; ci < nchk; ci++) {
				if (seq == w[ci].seq) {
					memcpy(w[ci].hash, h, sizeof(h));
					w[ci].file = path;
					w[ci].line = lineno;
				}
				if (seq == w[ci].seq + 1) {
					memcpy(w[ci].next_prev, prev, sizeof(prev));
					if (w[ci].file == NULL) {
						w[ci].file = path;
						w[ci].line = lineno;
					}
				}
			}
			memcpy(prev, h, sizeof(prev));
			rep->nrecords++;
			fr->nrecords++;
			if (fr->first_seq == 0)
				fr->first_seq = seq;
		}
		if (ferror(f)) {
			r = dmk_errf(err, DMK_ERR_IO, "%s: read error", path);
			goto out;
		}
		fclose(f);
		f = NULL;
		lastline = lineno;
	}
	rep->head_seq = seq;
	memcpy(rep->head, prev, sizeof(prev));
	if (run.id[0] != '\0')
		note(rep, "%s:%lld: run %s has no run-end yet (still running, or killed: the "
		    "next run records it as interrupted)", run.file, run.line, run.id);
	for (ci = 0; ci < nchk; ci++) {
		const struct audit_ckpt *c = chk[ci].ckpt;

		if (c->seq == 0)
			continue;
		if (seq < c->seq) {
			if (rep->nrecords == 0 || lastline == 0)
				r = dmk_errf(err, DMK_ERR_VERIFY, "%s: empty, but the checkpoint %s says "
				    "seq %lld: %lld record(s) are missing at the end (truncated; or the "
				    "log was rotated and no run has started since: give the previous "
				    "file first)", lastpath, chk[ci].name, c->seq, c->seq - seq);
			else
				r = dmk_errf(err, DMK_ERR_VERIFY, "%s:%lld: the log ends here at seq "
				    "%lld, but the checkpoint %s says seq %lld: %lld record(s) are "
				    "missing at the end (truncated)", lastpath, lastline, seq,
				    chk[ci].name, c->seq, c->seq - seq);
			goto out;
		}
		if (w[ci].hash[0] != '\0' ? strcmp(w[ci].hash, c->head) != 0 :
		    w[ci].next_prev[0] != '\0' ? strcmp(w[ci].next_prev, c->head) != 0 : 0) {
			r = dmk_errf(err, DMK_ERR_VERIFY, "%s:%lld: the record at seq %lld is not the "
			    "one the checkpoint %s names (hash differs): the log was rewritten, or cut "
			    "and extended", w[ci].file, w[ci].line, c->seq, chk[ci].name);
			goto out;
		}
		if (w[ci].hash[0] == '\0' && w[ci].next_prev[0] == '\0')
			note(rep, "the checkpoint %s (seq %lld) precedes the files given: not compared",
			    chk[ci].name, c->seq);
		else if (seq > c->seq)
			note(rep, "%lld record(s) after the checkpoint %s (seq %lld): written by a "
			    "run that stopped before updating it, or appended by someone else",
			    seq - c->seq, chk[ci].name, c->seq);
	}
out:
	free(line);
	if (f != NULL)
		fclose(f);
	return r;
}

int
audit_verify(const char *path, const struct secret *key, long long *nrecords,
    int *macs_seen, struct dmk_err *err)
{
	struct audit_report *rep;
	int r;

	*nrecords = 0;
	if (macs_seen)
		*macs_seen = 0;
	if ((rep = calloc(1, sizeof(*rep))) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	buf_init(&rep->notes, 64 * 1024);
	r = audit_verify_files(&path, 1, key, NULL, 0, rep, err);
	*nrecords = rep->nrecords;
	if (macs_seen)
		*macs_seen = rep->macs_seen;
	buf_free(&rep->notes);
	free(rep);
	return r;
}
