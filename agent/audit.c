/* audit.c: the hash-chained audit log; see audit.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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

/* Read the last line of the file (under the lock): its hash and seq. */
static int
read_tail(const char *path, char prev[65], long long *seq, struct dmk_err *err)
{
	char *b = NULL, *last, *nl;
	off_t size, from;
	ssize_t n;
	int fd, r = 0;
	json_t *j;

	util_strlcpy(prev, ZERO_HASH, 65);
	*seq = 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return dmk_errf(err, DMK_ERR_IO, "%s: %s", path, strerror(errno));
	size = lseek(fd, 0, SEEK_END);
	if (size <= 0)
		goto out;
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
	sha256_hex(last, strlen(last), prev);
	if ((j = json_loads(last, 0, NULL)) == NULL || !json_is_integer(json_object_get(j, "seq"))) {
		json_decref(j);
		r = dmk_errf(err, DMK_ERR_VERIFY, "%s: the last record is not a valid audit "
		    "record", path);
		goto out;
	}
	*seq = json_integer_value(json_object_get(j, "seq"));
	json_decref(j);
	/* The next records are seq + 1...: a forged LLONG_MAX would overflow. */
	if (*seq < 1 || *seq > AUDIT_SEQ_MAX) {
		r = dmk_errf(err, DMK_ERR_VERIFY, "%s: the last record's seq %lld is out of range; "
		    "run 'dmkagent audit verify %s'", path, *seq, path);
		*seq = 0;
	}
out:
	free(b);
	close(fd);
	return r;
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
	}
	json_object_set_new(rec, "keys", o);
	json_object_set_new(rec, "outcome", json_string(e->outcome ? e->outcome : "ok"));
	json_object_set_new(rec, "error", str_or_null(e->error));
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

int
audit_record_many(struct audit *a, const struct audit_entry *e, size_t n, struct dmk_err *err)
{
	char prev[65];
	long long seq;
	struct buf line, all;
	size_t i;
	int r;

	if (a->fd == -1)
		return dmk_errf(err, DMK_ERR_INTERNAL, "audit log not open");
	if (n == 0)
		return 0;
	buf_init(&line, AUDIT_LINE_MAX);
	buf_init(&all, n * AUDIT_LINE_MAX);
	if (flock(a->fd, LOCK_EX) == -1)
		return dmk_errf(err, DMK_ERR_IO, "%s: flock: %s", a->path, strerror(errno));
	if ((r = read_tail(a->path, prev, &seq, err)) != 0)
		goto out;
	for (i = 0; i < n; i++) {
		if ((r = build_line(a, seq + 1 + (long long)i, prev, &e[i], &line, err)) != 0)
			goto out;
		sha256_hex(line.data, line.len - 1, prev);   /* the next record's prev */
		if ((r = buf_append(&all, line.data, line.len)) != 0) {
			r = dmk_errf(err, r, "%s: audit batch too large", a->path);
			goto out;
		}
	}
	/* One write and one fsync for the batch: all of it is durable before we return. */
	if (write(a->fd, all.data, all.len) != (ssize_t)all.len) {
		r = dmk_errf(err, DMK_ERR_IO, "%s: write: %s", a->path, strerror(errno));
		goto out;
	}
	if (fsync(a->fd) == -1) {
		r = dmk_errf(err, DMK_ERR_IO, "%s: fsync: %s", a->path, strerror(errno));
		goto out;
	}
	r = 0;
out:
	flock(a->fd, LOCK_UN);
	buf_free(&line);
	buf_free(&all);
	return r;
}

int
audit_record(struct audit *a, const char *action, const struct audit_target *t,
    const struct audit_keys *k, const char *outcome, const char *error,
    struct dmk_err *err)
{
	struct audit_entry e = { action, t, k, outcome, error };

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

int
audit_verify(const char *path, const struct secret *key, long long *nrecords,
    int *macs_seen, struct dmk_err *err)
{
	static const char macsfx[] = ",\"mac\":\"";   /* then 64 hex, then "} */
	char prev[65], h[65], m[65];
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	long long lineno = 0, seq = 0;
	FILE *f;
	int r = 0;

	*nrecords = 0;
	if (macs_seen)
		*macs_seen = 0;
	if ((f = fopen(path, "r")) == NULL)
		return dmk_errf(err, DMK_ERR_IO, "%s: %s", path, strerror(errno));
	util_strlcpy(prev, ZERO_HASH, sizeof(prev));
	while ((n = getline(&line, &cap, f)) != -1) {
		json_t *j, *v;
		json_error_t je;
		size_t len;

		lineno++;
		if (n == 0 || line[n - 1] != '\n') {
			r = dmk_errf(err, DMK_ERR_VERIFY, "%s:%lld: record is truncated (no end of "
			    "line)", path, lineno);
			goto out;
		}
		line[--n] = '\0';
		len = (size_t)n;
		if (strlen(line) != len || len > AUDIT_LINE_MAX) {
			r = dmk_errf(err, DMK_ERR_VERIFY, "%s:%lld: not a valid record", path, lineno);
			goto out;
		}
		if ((j = json_loads(line, JSON_REJECT_DUPLICATES, &je)) == NULL || !json_is_object(j)) {
			json_decref(j);
			r = dmk_errf(err, DMK_ERR_VERIFY, "%s:%lld: not valid JSON (column %d)", path,
			    lineno, je.column);
			goto out;
		}
		v = json_object_get(j, "seq");
		if (!json_is_integer(v) || json_integer_value(v) != seq + 1) {
			json_decref(j);
			r = dmk_errf(err, DMK_ERR_VERIFY, "%s:%lld: sequence broken (expected seq "
			    "%lld): a record was removed, reordered or inserted", path, lineno, seq + 1);
			goto out;
		}
		v = json_object_get(j, "prev");
		if (!json_is_string(v) || strcmp(json_string_value(v), prev) != 0) {
			json_decref(j);
			r = dmk_errf(err, DMK_ERR_VERIFY, "%s:%lld: hash chain broken: the previous "
			    "record was changed, removed or reordered", path, lineno);
			goto out;
		}
		v = json_object_get(j, "mac");
		if (v != NULL) {
			size_t sl = sizeof(macsfx) - 1;
			if (macs_seen)
				*macs_seen = 1;
			/* The mac member must be last: ...,"mac":"<64 hex>"} */
			if (len < sl + 66 || strncmp(line + len - 66 - sl, macsfx, sl) != 0 ||
			    !is_hex64(line + len - 66) || strcmp(line + len - 2, "\"}") != 0 ||
			    !json_is_string(v)) {
				json_decref(j);
				r = dmk_errf(err, DMK_ERR_VERIFY, "%s:%lld: malformed mac", path, lineno);
				goto out;
			}
			if (key != NULL) {
				char save[2];
				size_t cut = len - 66 - sl;
				memcpy(save, line + cut, 2);
				line[cut] = '}';
				line[cut + 1] = '\0';
				hmac_hex(key, line, cut + 1, m);
				memcpy(line + cut, save, 2);
				if (CRYPTO_memcmp(m, json_string_value(v), 64) != 0) {
					json_decref(j);
					r = dmk_errf(err, DMK_ERR_VERIFY, "%s:%lld: MAC does not match: "
					    "the record was forged or altered", path, lineno);
					goto out;
				}
			}
		} else if (key != NULL) {
			json_decref(j);
			r = dmk_errf(err, DMK_ERR_VERIFY, "%s:%lld: record has no MAC although an "
			    "audit key is configured", path, lineno);
			goto out;
		}
		json_decref(j);
		sha256_hex(line, len, h);
		memcpy(prev, h, sizeof(prev));
		seq++;
		(*nrecords)++;
	}
	if (ferror(f))
		r = dmk_errf(err, DMK_ERR_IO, "%s: read error", path);
out:
	free(line);
	fclose(f);
	return r;
}
