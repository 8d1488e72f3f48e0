/*
 * config.c: the INI configuration (libinih) into struct config.
 *
 * Two passes: inih collects every key with its line into raw sections, then
 * interpret() checks and converts them, so that a [store] may be defined
 * after the [database] that refers to it.  Every error names FILE:LINE.
 * The first error refuses the load; to report every error (config check),
 * the load is repeated without the key or section each error named, until
 * none is left (config_parse_string_all).  A value of a key that carries a
 * secret is never repeated in a message.
 */
#include <ctype.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ini.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "config.h"
#include "providers/provider.h"
#include "auditship.h"

struct raw_kv {
	char *key, *value;
	int line;
};

struct raw_section {
	char *name;
	int line;
	struct raw_kv *kv;
	size_t nkv;
	int skip;              /* an error named this section: left out */
	char pruned[512];      /* keys an error named, left out: "'a' 'b' " */
};

struct parse_ctx {
	const char *path;
	struct raw_section *secs;
	size_t nsecs;
	int line;              /* current line, counted by the reader */
	int section_line;      /* line of the last [section] header */
	struct dmk_err *err;
	int failed;
	/* reader over memory */
	const char *text, *pos;
};


/*
 * Room for element n of an array that holds n: capacity doubles when n is
 * 0 or a power of two, so the array needs no capacity field and a config of
 * a thousand databases is not copied a thousand times.  The old pointer
 * stays valid on failure (NULL).
 */
static void *
grow(void *p, size_t n, size_t size)
{
	size_t cap;

	if (n != 0 && (n & (n - 1)) != 0)
		return p;                    /* room left */
	cap = n == 0 ? 1 : 2 * n;
	if (cap > SIZE_MAX / size)
		return NULL;
	return realloc(p, cap * size);
}

static char *
xstrdup(const char *s)
{
	char *p = strdup(s);
	return p;
}

static char *
reader(char *str, int num, void *stream)
{
	struct parse_ctx *pc = stream;
	const char *nl;
	size_t n;

	if (*pc->pos == '\0')
		return NULL;
	nl = strchr(pc->pos, '\n');
	n = nl ? (size_t)(nl - pc->pos + 1) : strlen(pc->pos);
	if (n >= (size_t)num) {
		/*
		 * inih would take the first num - 1 bytes and parse the rest as
		 * a new line: a long comment could carry a key in its tail.
		 */
		pc->failed = 1;
		dmk_errf(pc->err, DMK_ERR_CONFIG, "%s:%d: line longer than %d characters; "
		    "refused", pc->path, pc->line + 1, num - 2);
		return NULL;
	}
	memcpy(str, pc->pos, n);
	str[n] = '\0';
	pc->pos += n;
	pc->line++;
	{
		const char *p = str;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '[')
			pc->section_line = pc->line;
	}
	return str;
}

static int
handler(void *user, const char *section, const char *name, const char *value)
{
	struct parse_ctx *pc = user;
	struct raw_section *sec = NULL;
	struct raw_kv *kv;

	if (pc->failed)
		return 0;
	if (pc->nsecs > 0 && strcmp(pc->secs[pc->nsecs - 1].name, section) == 0 &&
	    pc->secs[pc->nsecs - 1].line == pc->section_line)
		sec = &pc->secs[pc->nsecs - 1];
	if (sec == NULL) {
		struct raw_section *n = grow(pc->secs, pc->nsecs, sizeof(*n));
		if (n == NULL)
			goto nomem;
		pc->secs = n;
		sec = &pc->secs[pc->nsecs++];
		memset(sec, 0, sizeof(*sec));
		if ((sec->name = xstrdup(section)) == NULL)
			goto nomem;
		sec->line = pc->section_line;
	}
	if (name == NULL)
		return 1;
	kv = grow(sec->kv, sec->nkv, sizeof(*kv));
	if (kv == NULL)
		goto nomem;
	sec->kv = kv;
	kv = &sec->kv[sec->nkv];
	kv->key = xstrdup(name);
	kv->value = xstrdup(value ? value : "");
	kv->line = pc->line;
	if (kv->key == NULL || kv->value == NULL) {
		free(kv->key);
		if (kv->value)
			secure_wipe(kv->value, strlen(kv->value));
		free(kv->value);
		goto nomem;
	}
	sec->nkv++;
	return 1;
nomem:
	pc->failed = 1;
	dmk_errf(pc->err, DMK_ERR_NOMEM, "%s: out of memory", pc->path);
	return 0;
}

static void
free_kv(struct raw_kv *kv)
{
	free(kv->key);
	/* a literal secret may be in here: wipe it */
	secure_wipe(kv->value, strlen(kv->value));
	free(kv->value);
}

static void
free_raw(struct parse_ctx *pc)
{
	size_t i, j;

	for (i = 0; i < pc->nsecs; i++) {
		for (j = 0; j < pc->secs[i].nkv; j++)
			free_kv(&pc->secs[i].kv[j]);
		free(pc->secs[i].kv);
		free(pc->secs[i].name);
	}
	free(pc->secs);
}

/*
 * After an error at line: leave out the key on that line, or the section
 * whose header it is, so that the next pass finds the next error.  Returns
 * 1 when something was left out, 0 when the line names nothing (then no
 * further pass can get past it), -1 when the error is a consequence of an
 * earlier one (a section whose key was left out now lacks it: its message
 * names that key): the section is left out and the error is not reported.
 */
static int
leave_out(struct parse_ctx *pc, int line, const char *msg)
{
	size_t i, j, n;
	char q[140];

	for (i = 0; i < pc->nsecs && line > 0; i++) {
		struct raw_section *sec = &pc->secs[i];
		if (sec->skip)
			continue;
		for (j = 0; j < sec->nkv; j++)
			if (sec->kv[j].line == line) {
				n = strlen(sec->pruned);
				snprintf(q, sizeof(q), "'%.128s' ", sec->kv[j].key);
				if (n + strlen(q) < sizeof(sec->pruned))
					memcpy(sec->pruned + n, q, strlen(q) + 1);
				free_kv(&sec->kv[j]);
				memmove(&sec->kv[j], &sec->kv[j + 1], (sec->nkv - j - 1) * sizeof(sec->kv[0]));
				sec->nkv--;
				return 1;
			}
		if (sec->line == line) {
			char *p = sec->pruned, *e;
			sec->skip = 1;
			while ((e = strchr(p, ' ')) != NULL) {   /* each "'key' " */
				snprintf(q, sizeof(q), "%.*s", (int)(e - p), p);
				if (strstr(msg, q) != NULL)
					return -1;
				p = e + 1;
			}
			return 1;
		}
	}
	return 0;
}

/* Was [prefix NAME] left out after an error (so that what refers to it is
 * not reported again)? */
static int
left_out(const struct parse_ctx *pc, const char *prefix, const char *name)
{
	size_t i, n = strlen(prefix);

	for (i = 0; pc != NULL && i < pc->nsecs; i++)
		if (pc->secs[i].skip && strncmp(pc->secs[i].name, prefix, n) == 0 &&
		    strcmp(pc->secs[i].name + n, name) == 0)
			return 1;
	return 0;
}

/* Key tables for the fixed sections. */
static const struct conf_keydef agent_keys[] = {
	{ "state_dir", CK_PATH, 0, NULL, 0, 0 },
	{ "audit_log", CK_PATH, 0, NULL, 0, 0 },
	{ "audit_key", CK_REF, 0, NULL, 0, 0 },
	{ "audit_anchor", CK_REF, 0, NULL, 0, 0 },
	{ "password_length", CK_INT, 0, NULL, 8, 128 },
	{ "password_avoid", CK_STRING, 0, NULL, 0, 0 },
	{ "lease_ttl", CK_DURATION, 0, NULL, 0, 0 },
	{ "hook_command", CK_PATH, 0, NULL, 0, 0 },
	{ "hook_timeout", CK_DURATION, 0, NULL, 0, 0 },
	{ "metrics_file", CK_PATH, 0, NULL, 0, 0 },
	{ "require_ticket", CK_BOOL, 0, NULL, 0, 0 },
	{ "audit_syslog", CK_STRING, 0, NULL, 0, 0 },
	{ "audit_syslog_ca", CK_PATH, 0, NULL, 0, 0 },
	{ NULL, 0, 0, NULL, 0, 0 },
};

static const struct conf_keydef ag_keys[] = {
	{ "name", CK_STRING, 0, NULL, 0, 0 },
	{ "listener", CK_HOSTPORT, 1, NULL, 0, 0 },
	{ "login", CK_STRING, 1, NULL, 0, 0 },
	{ "login_password", CK_REF, 0, NULL, 0, 0 },
	{ "ca_file", CK_PATH, 0, NULL, 0, 0 },
	{ "smk_backup_password", CK_REF, 0, NULL, 0, 0 },
	{ "connect_timeout", CK_DURATION, 0, NULL, 0, 0 },
	{ "query_timeout", CK_DURATION, 0, NULL, 0, 0 },
	{ "replica", CK_HOSTPORT, 0, NULL, 0, 0 },   /* "replica NAME = host:port" */
	{ "domain", CK_STRING, 0, NULL, 0, 0 },
	{ "tls_name", CK_STRING, 0, NULL, 0, 0 },    /* also "tls_name NAME = name" */
	{ "browser_port", CK_INT, 0, NULL, 1, 65535 },
	{ "encrypt", CK_ENUM, 0, "mandatory|strict", 0, 0 },
	{ NULL, 0, 0, NULL, 0, 0 },
};

static const struct conf_keydef db_keys[] = {
	{ "name", CK_STRING, 0, NULL, 0, 0 },
	{ "dmk_password", CK_REF, 1, NULL, 0, 0 },
	{ "cert_backup_password", CK_REF, 0, NULL, 0, 0 },
	{ "dmk_backup_password", CK_REF, 0, NULL, 0, 0 },
	{ "rotate_every", CK_DURATION, 0, NULL, 0, 0 },
	{ "backup_every", CK_DURATION, 0, NULL, 0, 0 },
	{ "restore_test_every", CK_DURATION, 0, NULL, 0, 0 },
	{ "certificates", CK_STRING, 0, NULL, 0, 0 },
	{ NULL, 0, 0, NULL, 0, 0 },
};

static const struct conf_keydef hook_keys[] = {
	{ "listen", CK_STRING, 1, NULL, 0, 0 },
	{ "tls_cert", CK_PATH, 1, NULL, 0, 0 },
	{ "tls_key", CK_REF, 1, NULL, 0, 0 },
	{ "key", CK_REF, 0, NULL, 0, 0 },
	{ "auth", CK_ENUM, 0, "code|entra", 0, 0 },
	{ "audience", CK_STRING, 0, NULL, 0, 0 },
	{ "tenant", CK_STRING, 0, NULL, 0, 0 },
	{ "authority_host", CK_URL, 0, NULL, 0, 0 },
	{ "ca_file", CK_PATH, 0, NULL, 0, 0 },
	{ "queue", CK_INT, 0, NULL, 1, 4096 },
	{ NULL, 0, 0, NULL, 0, 0 },
};

static const struct conf_keydef common_store_keys[] = {
	{ "type", CK_STRING, 1, NULL, 0, 0 },
	{ NULL, 0, 0, NULL, 0, 0 },
};

static const struct conf_keydef *
find_key(const struct conf_keydef *tab, const char *key)
{
	for (; tab != NULL && tab->name != NULL; tab++)
		if (strcmp(tab->name, key) == 0)
			return tab;
	return NULL;
}

static void
suggest(const struct conf_keydef *tab, const struct conf_keydef *tab2,
    const char *key, char *out, size_t len)
{
	const struct conf_keydef *t;
	const char *best = NULL;
	int bestd = 4, d, pass;

	out[0] = '\0';
	for (pass = 0; pass < 2; pass++)
		for (t = pass ? tab2 : tab; t != NULL && t->name != NULL; t++) {
			d = util_edit_distance(key, t->name);
			if (d < bestd) {
				bestd = d;
				best = t->name;
			}
		}
	if (best != NULL)
		snprintf(out, len, "; did you mean '%s'?", best);
}

static int
parse_hostport(const char *v, char *host, size_t hostlen, int *port, int defport)
{
	const char *p;
	char *end;
	long n;
	size_t hl;

	*port = defport;
	if (v[0] == '[') {
		if ((p = strchr(v, ']')) == NULL)
			return -1;
		hl = (size_t)(p - v - 1);
		if (hl == 0 || hl >= hostlen)
			return -1;
		memcpy(host, v + 1, hl);
		host[hl] = '\0';
		p++;
		if (*p == '\0')
			return 0;
		if (*p != ':')
			return -1;
	} else {
		p = strrchr(v, ':');
		hl = p ? (size_t)(p - v) : strlen(v);
		if (hl == 0 || hl >= hostlen)
			return -1;
		memcpy(host, v, hl);
		host[hl] = '\0';
		for (size_t i = 0; i < hl; i++)
			if (!isalnum((unsigned char)host[i]) && !strchr(".-_", host[i]))
				return -1;
		if (p == NULL)
			return 0;
	}
	errno = 0;
	n = strtol(p + 1, &end, 10);
	if (errno || *end != '\0' || n < 1 || n > 65535 || p[1] == '\0')
		return -1;
	*port = (int)n;
	return 0;
}

struct interp {
	struct parse_ctx *pc;
	struct config *cfg;
};

#define FAIL(code, line, ...) do {                                        \
	char m_[DMK_ERR_MSG_MAX];                                         \
	snprintf(m_, sizeof(m_), __VA_ARGS__);                            \
	return dmk_errf(err, (code), "%s:%d: %s", path, (line), m_);      \
} while (0)

/*
 * Check one value against its definition.  For CK_REF (and any key that
 * carries a secret) the value is parsed as a reference and never echoed.
 */
static int
check_value(const char *path, const char *section, const struct raw_kv *kv,
    const char *keyname, const struct conf_keydef *def, struct secret_ref *ref,
    long long *num, struct dmk_err *err)
{
	struct dmk_err e2;
	int secret = conf_key_is_secret(keyname);

	if (secret || def->kind == CK_REF) {
		if (ref_parse(kv->value, ref, &e2) != 0) {
			if (secret)
				FAIL(DMK_ERR_CONFIG, kv->line,
				    "'%s' holds a literal secret; use a reference such as "
				    "hcv:sql/ag1/db/dmk#password (%s)", keyname, e2.msg);
			FAIL(DMK_ERR_CONFIG, kv->line, "'%s' in [%s]: %s", keyname, section, e2.msg);
		}
		return 0;
	}
	switch (def->kind) {
	case CK_INT: {
		char *end;
		long long v;
		errno = 0;
		v = strtoll(kv->value, &end, 10);
		if (errno || *end != '\0' || kv->value[0] == '\0' ||
		    ((def->min || def->max) && (v < def->min || v > def->max)))
			FAIL(DMK_ERR_CONFIG, kv->line, "'%s' in [%s] must be a whole number "
			    "from %lld to %lld, not '%s'", keyname, section, def->min, def->max,
			    kv->value);
		*num = v;
		break;
	}
	case CK_DURATION:
		if (util_parse_duration(kv->value, num) != 0)
			FAIL(DMK_ERR_CONFIG, kv->line, "'%s' in [%s] must be a duration such as "
			    "90d, 12h, 30m or 45s, not '%s'", keyname, section, kv->value);
		break;
	case CK_BOOL:
		if (strcmp(kv->value, "yes") && strcmp(kv->value, "no") &&
		    strcmp(kv->value, "true") && strcmp(kv->value, "false"))
			FAIL(DMK_ERR_CONFIG, kv->line, "'%s' in [%s] must be yes or no, not '%s'",
			    keyname, section, kv->value);
		break;
	case CK_PATH:
		if (kv->value[0] != '/')
			FAIL(DMK_ERR_CONFIG, kv->line, "'%s' in [%s] must be an absolute path, "
			    "not '%s'", keyname, section, kv->value);
		if (strlen(kv->value) >= PATH_MAX)
			FAIL(DMK_ERR_CONFIG, kv->line, "'%s' in [%s]: path too long", keyname, section);
		break;
	case CK_URL:
		if (strncmp(kv->value, "https://", 8) != 0)
			FAIL(DMK_ERR_CONFIG, kv->line, "'%s' in [%s] must be an https:// URL, "
			    "not '%s'", keyname, section, kv->value);
		break;
	case CK_HOSTPORT: {
		char host[256];
		int port;
		if (parse_hostport(kv->value, host, sizeof(host), &port, 1433) != 0)
			FAIL(DMK_ERR_CONFIG, kv->line, "'%s' in [%s] must be HOST[:PORT], not '%s'",
			    keyname, section, kv->value);
		break;
	}
	case CK_ENUM: {
		const char *c = def->choices;
		size_t n = strlen(kv->value);
		int ok = 0;
		while (c && *c) {
			const char *bar = strchr(c, '|');
			size_t m = bar ? (size_t)(bar - c) : strlen(c);
			if (m == n && strncmp(c, kv->value, n) == 0)
				ok = 1;
			c = bar ? bar + 1 : NULL;
		}
		if (!ok)
			FAIL(DMK_ERR_CONFIG, kv->line, "'%s' in [%s] must be one of %s, not '%s'",
			    keyname, section, def->choices, kv->value);
		break;
	}
	case CK_STRING:
		if (strlen(kv->value) >= CONF_VALUE_MAX)
			FAIL(DMK_ERR_CONFIG, kv->line, "'%s' in [%s]: value too long", keyname, section);
		break;
	default:
		break;
	}
	return 0;
}

/* A DNS name (letters, digits, '-', '_', '.', 1..253) or an IP literal. */
static int
dns_name_ok(const char *s)
{
	size_t i, n = strlen(s);
	unsigned char b[16];

	if (inet_pton(AF_INET6, s, b) == 1)
		return 1;
	if (n == 0 || n > 253 || s[0] == '.' || s[0] == '-')
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!(isalnum(c) || c == '-' || c == '_' || c == '.'))
			return 0;
		if (c == '.' && s[i + 1] == '.')
			return 0;
	}
	return 1;
}

static int
valid_sysname(const char *s)
{
	size_t n = strlen(s), chars = 0;

	if (n == 0 || !util_utf8_valid(s, n))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (((unsigned char)s[i] & 0xc0) != 0x80)
			chars++;
	return chars <= CONF_NAME_MAX;
}

static int
interp_agent(const char *path, struct raw_section *sec, struct config *cfg,
    struct dmk_err *err)
{
	size_t i;
	char hint[128];
	int r;

	for (i = 0; i < sec->nkv; i++) {
		struct raw_kv *kv = &sec->kv[i];
		const struct conf_keydef *def = find_key(agent_keys, kv->key);
		long long num = 0;

		if (def == NULL) {
			suggest(agent_keys, NULL, kv->key, hint, sizeof(hint));
			FAIL(DMK_ERR_CONFIG, kv->line, "unknown key '%s' in [agent]%s", kv->key, hint);
		}
		if ((r = check_value(path, "agent", kv, kv->key, def,
		    strcmp(kv->key, "audit_key") == 0 ? &cfg->audit_key :
		    strcmp(kv->key, "audit_anchor") == 0 ? &cfg->audit_anchor : NULL, &num, err)) != 0)
			return r;
		if (strcmp(kv->key, "state_dir") == 0)
			util_strlcpy(cfg->state_dir, kv->value, sizeof(cfg->state_dir));
		else if (strcmp(kv->key, "audit_log") == 0)
			util_strlcpy(cfg->audit_log, kv->value, sizeof(cfg->audit_log));
		else if (strcmp(kv->key, "audit_key") == 0)
			cfg->has_audit_key = 1;
		else if (strcmp(kv->key, "audit_anchor") == 0) {
			/* Written after every audit batch: only a store can hold it. */
			if (cfg->audit_anchor.kind != REF_STORE)
				FAIL(DMK_ERR_CONFIG, kv->line, "'audit_anchor' in [agent] must be a "
				    "store reference such as hcv:dmkagent/audit-anchor#head, not '%s'",
				    kv->value);
			cfg->has_audit_anchor = 1;
			cfg->audit_anchor_line = kv->line;
		}
		else if (strcmp(kv->key, "password_length") == 0)
			cfg->password_length = (int)num;
		else if (strcmp(kv->key, "password_avoid") == 0)
			util_strlcpy(cfg->password_avoid, kv->value, sizeof(cfg->password_avoid));
		else if (strcmp(kv->key, "lease_ttl") == 0)
			cfg->lease_ttl = num;
		else if (strcmp(kv->key, "hook_command") == 0)
			util_strlcpy(cfg->hook_command, kv->value, sizeof(cfg->hook_command));
		else if (strcmp(kv->key, "hook_timeout") == 0) {
			if (num < 1 || num > 3600)
				FAIL(DMK_ERR_CONFIG, kv->line, "'hook_timeout' in [agent] must be 1s "
				    "to 1h");
			cfg->hook_timeout = num;
		} else if (strcmp(kv->key, "metrics_file") == 0)
			util_strlcpy(cfg->metrics_file, kv->value, sizeof(cfg->metrics_file));
		else if (strcmp(kv->key, "require_ticket") == 0)
			cfg->require_ticket = strcmp(kv->value, "yes") == 0 ||
			    strcmp(kv->value, "true") == 0;
		else if (strcmp(kv->key, "audit_syslog") == 0) {
			if (audit_ship_check_spec(kv->value, hint, sizeof(hint)) != 0)
				FAIL(DMK_ERR_CONFIG, kv->line, "'audit_syslog' in [agent]: %s", hint);
			util_strlcpy(cfg->audit_syslog, kv->value, sizeof(cfg->audit_syslog));
		} else if (strcmp(kv->key, "audit_syslog_ca") == 0)
			util_strlcpy(cfg->audit_syslog_ca, kv->value, sizeof(cfg->audit_syslog_ca));
	}
	return 0;
}

static int
interp_hook(const char *path, struct raw_section *sec, struct config *cfg,
    struct dmk_err *err)
{
	struct conf_hook *h = &cfg->hook;
	const struct conf_keydef *d;
	char hint[128];
	size_t i;
	int r;

	if (h->present)
		FAIL(DMK_ERR_CONFIG, sec->line, "[hook] appears twice");
	h->present = 1;
	h->line = sec->line;
	h->listen_port = 8443;
	h->queue = 32;
	for (i = 0; i < sec->nkv; i++) {
		struct raw_kv *kv = &sec->kv[i];
		const struct conf_keydef *def = find_key(hook_keys, kv->key);
		struct secret_ref ref;
		long long num = 0;

		if (def == NULL) {
			suggest(hook_keys, NULL, kv->key, hint, sizeof(hint));
			FAIL(DMK_ERR_CONFIG, kv->line, "unknown key '%s' in [hook]%s", kv->key, hint);
		}
		if ((r = check_value(path, "hook", kv, kv->key, def, &ref, &num, err)) != 0)
			return r;
		if (strcmp(kv->key, "listen") == 0) {
			if (parse_hostport(kv->value, h->listen_host, sizeof(h->listen_host),
			    &h->listen_port, 8443) != 0)
				FAIL(DMK_ERR_CONFIG, kv->line, "'listen' in [hook] must be HOST:PORT "
				    "(such as 0.0.0.0:8443), not '%s'", kv->value);
		} else if (strcmp(kv->key, "tls_cert") == 0)
			util_strlcpy(h->tls_cert, kv->value, sizeof(h->tls_cert));
		else if (strcmp(kv->key, "tls_key") == 0)
			h->tls_key = ref;
		else if (strcmp(kv->key, "key") == 0) {
			h->key = ref;
			h->has_key = 1;
		} else if (strcmp(kv->key, "queue") == 0)
			h->queue = (int)num;
		else if (strcmp(kv->key, "auth") == 0)
			h->entra = strcmp(kv->value, "entra") == 0;
		else if (strcmp(kv->key, "audience") == 0)
			util_strlcpy(h->audience, kv->value, sizeof(h->audience));
		else if (strcmp(kv->key, "tenant") == 0) {
			if (strlen(kv->value) >= sizeof(h->tenant) ||
			    kv->value[strspn(kv->value, "0123456789abcdefABCDEF-")] != '\0')
				FAIL(DMK_ERR_CONFIG, kv->line, "'tenant' in [hook] must be the tenant "
				    "id (a GUID)");
			util_strlcpy(h->tenant, kv->value, sizeof(h->tenant));
		} else if (strcmp(kv->key, "authority_host") == 0) {
			util_strlcpy(h->authority_host, kv->value, sizeof(h->authority_host));
			while (h->authority_host[0] && h->authority_host[strlen(h->authority_host) - 1] == '/')
				h->authority_host[strlen(h->authority_host) - 1] = '\0';
		} else if (strcmp(kv->key, "ca_file") == 0)
			util_strlcpy(h->ca_file, kv->value, sizeof(h->ca_file));
	}
	if (h->authority_host[0] == '\0')
		util_strlcpy(h->authority_host, "https://login.microsoftonline.com",
		    sizeof(h->authority_host));
	if (h->entra && (h->audience[0] == '\0' || h->tenant[0] == '\0'))
		FAIL(DMK_ERR_CONFIG, sec->line, "[hook] auth = entra needs 'audience' and 'tenant'");
	if (!h->entra && !h->has_key)
		FAIL(DMK_ERR_CONFIG, sec->line, "[hook] needs 'key' (the code parameter's shared "
		    "secret), or auth = entra");
	for (d = hook_keys; d->name != NULL; d++) {
		int seen = 0;
		for (i = 0; i < sec->nkv; i++)
			seen |= strcmp(sec->kv[i].key, d->name) == 0;
		if (d->required && !seen)
			FAIL(DMK_ERR_CONFIG, sec->line, "[hook] needs '%s'", d->name);
	}
	return 0;
}

static int
interp_store(const char *path, struct raw_section *sec, const char *name,
    struct config *cfg, struct dmk_err *err)
{
	struct conf_store *st;
	const char *type = NULL;
	char hint[128];
	size_t i;
	int r;

	if (strcmp(name, "file") == 0 || strcmp(name, "env") == 0 ||
	    !isalpha((unsigned char)name[0]) || strlen(name) >= sizeof(st->name))
		FAIL(DMK_ERR_CONFIG, sec->line, "bad store name '%s' (letters, digits, _ and -; "
		    "'file' and 'env' are reserved)", name);
	for (i = 1; name[i]; i++)
		if (!isalnum((unsigned char)name[i]) && name[i] != '_' && name[i] != '-')
			FAIL(DMK_ERR_CONFIG, sec->line, "bad store name '%s' (letters, digits, "
			    "_ and - only)", name);
	if (config_store(cfg, name) != NULL)
		FAIL(DMK_ERR_CONFIG, sec->line, "store '%s' is defined twice", name);
	for (i = 0; i < sec->nkv; i++)
		if (strcmp(sec->kv[i].key, "type") == 0)
			type = sec->kv[i].value;
	if (type == NULL)
	{
		char types[256];
		prov_type_list(types, sizeof(types));
		FAIL(DMK_ERR_CONFIG, sec->line, "[store %s] needs 'type' (one of: %s)", name,
		    types);
	}
	st = grow(cfg->stores, cfg->nstores, sizeof(*st));
	if (st == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	cfg->stores = st;
	st = &cfg->stores[cfg->nstores++];
	memset(st, 0, sizeof(*st));
	util_strlcpy(st->name, name, sizeof(st->name));
	util_strlcpy(st->type, type, sizeof(st->type));
	st->line = sec->line;
	if ((st->ops = prov_find(type)) == NULL) {
		char known[256];
		prov_type_list(known, sizeof(known));
		for (i = 0; i < sec->nkv; i++)
			if (strcmp(sec->kv[i].key, "type") == 0)
				FAIL(DMK_ERR_CONFIG, sec->kv[i].line, "unknown store type '%s' "
				    "(known: %s)", type, known);
	}
	if ((st->kv = calloc(sec->nkv ? sec->nkv : 1, sizeof(*st->kv))) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	for (i = 0; i < sec->nkv; i++) {
		struct raw_kv *kv = &sec->kv[i];
		const struct conf_keydef *def = find_key(common_store_keys, kv->key);
		struct conf_kv *ck = &st->kv[st->nkv];
		char secname[128];
		long long num;

		if (def == NULL)
			def = find_key(st->ops->keys, kv->key);
		if (def == NULL) {
			suggest(st->ops->keys, common_store_keys, kv->key, hint, sizeof(hint));
			FAIL(DMK_ERR_CONFIG, kv->line, "unknown key '%s' in [store %s] of type %s%s",
			    kv->key, name, type, hint);
		}
		for (size_t j = 0; j < i; j++)
			if (strcmp(sec->kv[j].key, kv->key) == 0)
				FAIL(DMK_ERR_CONFIG, kv->line, "'%s' is set twice in [store %s] "
				    "(first at line %d)", kv->key, name, sec->kv[j].line);
		snprintf(secname, sizeof(secname), "store %s", name);
		if ((r = check_value(path, secname, kv, kv->key, def, &ck->ref, &num, err)) != 0)
			return r;
		ck->kind = (conf_key_is_secret(kv->key) || def->kind == CK_REF) ? CK_REF : def->kind;
		ck->line = kv->line;
		if ((ck->key = strdup(kv->key)) == NULL || (ck->value = strdup(kv->value)) == NULL)
			return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		st->nkv++;
	}
	for (const struct conf_keydef *d = st->ops->keys; d && d->name; d++)
		if (d->required && conf_store_kv(st, d->name) == NULL)
			FAIL(DMK_ERR_CONFIG, sec->line, "[store %s] needs '%s'", name, d->name);
	return 0;
}

static int
interp_ag(const char *path, struct raw_section *sec, const char *label,
    struct config *cfg, struct dmk_err *err)
{
	struct conf_ag *ag;
	char hint[128], secname[600];
	size_t i;
	int r;

	if (!valid_sysname(label))
		FAIL(DMK_ERR_CONFIG, sec->line, "bad availability group name in [ag ...] "
		    "(1 to 128 characters of valid UTF-8)");
	if (config_ag(cfg, label) != NULL)
		FAIL(DMK_ERR_CONFIG, sec->line, "[ag %s] is defined twice", label);
	ag = grow(cfg->ags, cfg->nags, sizeof(*ag));
	if (ag == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	cfg->ags = ag;
	ag = &cfg->ags[cfg->nags++];
	memset(ag, 0, sizeof(*ag));
	util_strlcpy(ag->label, label, sizeof(ag->label));
	util_strlcpy(ag->name, label, sizeof(ag->name));
	ag->line = sec->line;
	ag->connect_timeout = 15;
	ag->query_timeout = 60;
	ag->browser_port = 1434;
	snprintf(secname, sizeof(secname), "ag %s", label);
	for (i = 0; i < sec->nkv; i++) {
		struct raw_kv *kv = &sec->kv[i];
		const char *key = kv->key;
		const struct conf_keydef *def;
		long long num = 0;
		struct secret_ref ref;

		if ((strncmp(key, "replica", 7) == 0 && (key[7] == ' ' || key[7] == '\t')) ||
		    (strncmp(key, "tls_name", 8) == 0 && (key[8] == ' ' || key[8] == '\t'))) {
			struct conf_replica *rp = NULL;
			int is_tls = key[0] == 't';
			const char *rn = key + (is_tls ? 9 : 8);
			size_t k;

			while (*rn == ' ' || *rn == '\t')
				rn++;
			if (!valid_sysname(rn))
				FAIL(DMK_ERR_CONFIG, kv->line, "bad replica name in '%s NAME = %s'",
				    is_tls ? "tls_name" : "replica", is_tls ? "DNSNAME" : "HOST:PORT");
			if (is_tls) {
				if (!dns_name_ok(kv->value))
					FAIL(DMK_ERR_CONFIG, kv->line, "'tls_name %s' in [%s] must be a "
					    "DNS name or IP address, not '%s'", rn, secname, kv->value);
			} else {
				def = find_key(ag_keys, "replica");
				if ((r = check_value(path, secname, kv, "replica", def, NULL, &num,
				    err)) != 0)
					return r;
			}
			for (k = 0; k < ag->nreplicas; k++)
				if (strcasecmp(ag->replicas[k].name, rn) == 0)
					rp = &ag->replicas[k];
			if (rp != NULL && (is_tls ? rp->tls_name[0] != '\0' : rp->host[0] != '\0'))
				FAIL(DMK_ERR_CONFIG, kv->line, "'%s %s' appears twice in [%s]",
				    is_tls ? "tls_name" : "replica", rn, secname);
			if (rp == NULL) {
				rp = grow(ag->replicas, ag->nreplicas, sizeof(*rp));
				if (rp == NULL)
					return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
				ag->replicas = rp;
				rp = &ag->replicas[ag->nreplicas++];
				memset(rp, 0, sizeof(*rp));
				util_strlcpy(rp->name, rn, sizeof(rp->name));
				rp->line = kv->line;
			}
			if (is_tls)
				util_strlcpy(rp->tls_name, kv->value, sizeof(rp->tls_name));
			else {
				parse_hostport(kv->value, rp->host, sizeof(rp->host), &rp->port, 1433);
				rp->line = kv->line;
			}
			continue;
		}
		def = find_key(ag_keys, key);
		if (def == NULL || strcmp(key, "replica") == 0) {
			suggest(ag_keys, NULL, key, hint, sizeof(hint));
			FAIL(DMK_ERR_CONFIG, kv->line, "unknown key '%s' in [%s]%s", key, secname, hint);
		}
		if ((r = check_value(path, secname, kv, key, def, &ref, &num, err)) != 0)
			return r;
		if (strcmp(key, "name") == 0) {
			if (!valid_sysname(kv->value))
				FAIL(DMK_ERR_CONFIG, kv->line, "'name' in [%s] must be 1 to 128 "
				    "characters of valid UTF-8", secname);
			util_strlcpy(ag->name, kv->value, sizeof(ag->name));
		} else if (strcmp(key, "listener") == 0)
			parse_hostport(kv->value, ag->listener_host, sizeof(ag->listener_host),
			    &ag->listener_port, 1433);
		else if (strcmp(key, "login") == 0) {
			if (!valid_sysname(kv->value))
				FAIL(DMK_ERR_CONFIG, kv->line, "'login' in [%s] must be a login name "
				    "or 'integrated'", secname);
			util_strlcpy(ag->login, kv->value, sizeof(ag->login));
		} else if (strcmp(key, "login_password") == 0) {
			ag->login_password = ref;
			ag->has_login_password = 1;
		} else if (strcmp(key, "smk_backup_password") == 0) {
			ag->smk_backup_password = ref;
			ag->has_smk_backup_password = 1;
		} else if (strcmp(key, "ca_file") == 0)
			util_strlcpy(ag->ca_file, kv->value, sizeof(ag->ca_file));
		else if (strcmp(key, "connect_timeout") == 0)
			ag->connect_timeout = num;
		else if (strcmp(key, "query_timeout") == 0)
			ag->query_timeout = num;
		else if (strcmp(key, "domain") == 0 || strcmp(key, "tls_name") == 0) {
			const char *v = kv->value + (key[0] == 'd' && kv->value[0] == '.');
			if (!dns_name_ok(v) || (key[0] == 'd' && strlen(v) >= sizeof(ag->domain) - 64))
				FAIL(DMK_ERR_CONFIG, kv->line, "'%s' in [%s] must be a DNS name%s, "
				    "not '%s'", key, secname, key[0] == 'd' ? " such as corp.example.com" :
				    " or IP address", kv->value);
			util_strlcpy(key[0] == 'd' ? ag->domain : ag->tls_name, v, sizeof(ag->domain));
		} else if (strcmp(key, "browser_port") == 0)
			ag->browser_port = (int)num;
		else if (strcmp(key, "encrypt") == 0)
			ag->encrypt = strcmp(kv->value, "strict") == 0 ? ENCRYPT_STRICT :
			    ENCRYPT_MANDATORY;
	}
	if (ag->listener_host[0] == '\0')
		FAIL(DMK_ERR_CONFIG, sec->line, "[%s] needs 'listener = HOST[:PORT]'", secname);
	if (ag->login[0] == '\0')
		FAIL(DMK_ERR_CONFIG, sec->line, "[%s] needs 'login' (a SQL login, or 'integrated')",
		    secname);
	if (strcmp(ag->login, "integrated") != 0 && !ag->has_login_password)
		FAIL(DMK_ERR_CONFIG, sec->line, "[%s] needs 'login_password' (a reference) for "
		    "SQL login '%s'", secname, ag->login);
	return 0;
}

static int
interp_db(const char *path, struct raw_section *sec, const char *label,
    struct config *cfg, struct dmk_err *err)
{
	struct conf_db *db;
	char hint[128], secname[1200];
	const char *slash;
	size_t i;
	int r;

	if ((slash = strchr(label, '/')) == NULL || slash == label || slash[1] == '\0')
		FAIL(DMK_ERR_CONFIG, sec->line, "a database section is [database AG/DATABASE]");
	db = grow(cfg->dbs, cfg->ndbs, sizeof(*db));
	if (db == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	cfg->dbs = db;
	db = &cfg->dbs[cfg->ndbs++];
	memset(db, 0, sizeof(*db));
	db->line = sec->line;
	if ((size_t)(slash - label) >= sizeof(db->ag))
		FAIL(DMK_ERR_CONFIG, sec->line, "availability group name too long");
	memcpy(db->ag, label, (size_t)(slash - label));
	util_strlcpy(db->label, slash + 1, sizeof(db->label));
	util_strlcpy(db->name, slash + 1, sizeof(db->name));
	snprintf(secname, sizeof(secname), "database %s", label);
	for (i = 0; i < sec->nkv; i++) {
		struct raw_kv *kv = &sec->kv[i];
		const struct conf_keydef *def = find_key(db_keys, kv->key);
		long long num = 0;
		struct secret_ref ref;

		if (def == NULL) {
			suggest(db_keys, NULL, kv->key, hint, sizeof(hint));
			FAIL(DMK_ERR_CONFIG, kv->line, "unknown key '%s' in [%s]%s", kv->key, secname,
			    hint);
		}
		if ((r = check_value(path, secname, kv, kv->key, def, &ref, &num, err)) != 0)
			return r;
		if (strcmp(kv->key, "name") == 0)
			util_strlcpy(db->name, kv->value, sizeof(db->name));
		else if (strcmp(kv->key, "dmk_password") == 0)
			db->dmk_password = ref;
		else if (strcmp(kv->key, "cert_backup_password") == 0) {
			db->cert_backup_password = ref;
			db->has_cert_backup_password = 1;
		} else if (strcmp(kv->key, "dmk_backup_password") == 0) {
			db->dmk_backup_password = ref;
			db->has_dmk_backup_password = 1;
		} else if (strcmp(kv->key, "rotate_every") == 0)
			db->rotate_every = num;
		else if (strcmp(kv->key, "backup_every") == 0)
			db->backup_every = num;
		else if (strcmp(kv->key, "restore_test_every") == 0)
			db->restore_test_every = num;
		else if (strcmp(kv->key, "certificates") == 0) {
			char tmp[CONF_VALUE_MAX], *tok, *save = NULL;
			util_strlcpy(tmp, kv->value, sizeof(tmp));
			for (tok = strtok_r(tmp, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
				while (*tok == ' ')
					tok++;
				for (char *e = tok + strlen(tok); e > tok && e[-1] == ' '; )
					*--e = '\0';
				if (!valid_sysname(tok))
					FAIL(DMK_ERR_CONFIG, kv->line, "'certificates' in [%s]: each name "
					    "must be 1 to 128 characters", secname);
				if (db->ncertificates == 8)
					FAIL(DMK_ERR_CONFIG, kv->line, "'certificates' in [%s]: at most 8",
					    secname);
				util_strlcpy(db->certificates[db->ncertificates++], tok,
				    sizeof(db->certificates[0]));
			}
		}
	}
	if (!valid_sysname(db->name))
		FAIL(DMK_ERR_CONFIG, sec->line, "[%s]: the database name must be 1 to 128 "
		    "characters of valid UTF-8", secname);
	if (db->dmk_password.kind == 0)
		FAIL(DMK_ERR_CONFIG, sec->line, "[%s] needs 'dmk_password' (a reference such as "
		    "hcv:sql/ag1/db/dmk#password)", secname);
	return 0;
}

/* After all sections: cross-references (pc: what an earlier error left out). */
static int
check_refs(const struct parse_ctx *pc, const char *path, struct config *cfg,
    struct dmk_err *err)
{
	char known[512];
	size_t i, j;

	known[0] = '\0';
	for (i = 0; i < cfg->nstores; i++) {
		if (i)
			strncat(known, ", ", sizeof(known) - strlen(known) - 1);
		strncat(known, cfg->stores[i].name, sizeof(known) - strlen(known) - 1);
	}
	if (known[0] == '\0')
		util_strlcpy(known, "none", sizeof(known));

#define CHECK_REF(ref, line, key, where, allow_env) do {                               \
	if ((ref)->kind == REF_STORE && config_store(cfg, (ref)->store) == NULL &&         \
	    !left_out(pc, "store ", (ref)->store))                                         \
		FAIL(DMK_ERR_CONFIG, (line), "'%s' in [%s] refers to a store that no "        \
		    "[store NAME] section defines (defined: %s)", (key), (where), known);      \
	if ((ref)->kind == REF_ENV && !(allow_env))                                        \
		FAIL(DMK_ERR_CONFIG, (line), "'%s' in [%s]: env: references are only for a "  \
		    "store's own bootstrap credentials; use a store or file: reference",       \
		    (key), (where));                                                           \
} while (0)

	if (cfg->has_audit_key)
		CHECK_REF(&cfg->audit_key, 0, "audit_key", "agent", 0);
	if (cfg->has_audit_anchor)
		CHECK_REF(&cfg->audit_anchor, cfg->audit_anchor_line, "audit_anchor", "agent", 0);
	if (cfg->hook.present) {
		CHECK_REF(&cfg->hook.tls_key, cfg->hook.line, "tls_key", "hook", 0);
		if (cfg->hook.has_key)
			CHECK_REF(&cfg->hook.key, cfg->hook.line, "key", "hook", 0);
	}
	for (i = 0; i < cfg->nstores; i++) {
		struct conf_store *st = &cfg->stores[i];
		char where[80];
		snprintf(where, sizeof(where), "store %s", st->name);
		for (j = 0; j < st->nkv; j++)
			if (st->kv[j].kind == CK_REF) {
				CHECK_REF(&st->kv[j].ref, st->kv[j].line, st->kv[j].key, where, 1);
				if (st->kv[j].ref.kind == REF_STORE &&
				    strcmp(st->kv[j].ref.store, st->name) == 0)
					FAIL(DMK_ERR_CONFIG, st->kv[j].line, "'%s' in [%s] refers to "
					    "its own store, which cannot open without it",
					    st->kv[j].key, where);
			}
		if (st->ops->validate != NULL) {
			int r = st->ops->validate(st, err);
			if (r != 0)
				return dmk_err_prefix(err, "%s:%d: [%s]", path, st->line, where);
		}
	}
	for (i = 0; i < cfg->nags; i++) {
		struct conf_ag *ag = &cfg->ags[i];
		char where[600];
		snprintf(where, sizeof(where), "ag %s", ag->label);
		if (ag->has_login_password)
			CHECK_REF(&ag->login_password, ag->line, "login_password", where, 0);
		if (ag->has_smk_backup_password)
			CHECK_REF(&ag->smk_backup_password, ag->line, "smk_backup_password", where, 0);
	}
	for (i = 0; i < cfg->ndbs; i++) {
		struct conf_db *db = &cfg->dbs[i];
		char where[1200];
		snprintf(where, sizeof(where), "database %s/%s", db->ag, db->label);
		if (config_ag(cfg, db->ag) == NULL && !left_out(pc, "ag ", db->ag))
			FAIL(DMK_ERR_CONFIG, db->line, "[%s] names availability group '%s', but "
			    "there is no [ag %s] section", where, db->ag, db->ag);
		CHECK_REF(&db->dmk_password, db->line, "dmk_password", where, 0);
		if (db->has_cert_backup_password)
			CHECK_REF(&db->cert_backup_password, db->line, "cert_backup_password", where, 0);
		if (db->has_dmk_backup_password)
			CHECK_REF(&db->dmk_backup_password, db->line, "dmk_backup_password", where, 0);
		for (j = 0; j < i; j++)
			if (strcmp(cfg->dbs[j].ag, db->ag) == 0 && strcmp(cfg->dbs[j].name, db->name) == 0)
				FAIL(DMK_ERR_CONFIG, db->line, "database '%s' of AG '%s' is configured "
				    "twice (first at line %d)", db->name, db->ag, cfg->dbs[j].line);
	}
#undef CHECK_REF
	return 0;
}

static int
interpret(struct parse_ctx *pc, struct config *cfg, struct dmk_err *err)
{
	const char *path = pc->path;
	size_t i;
	int r = 0, seen_agent = 0;

	for (i = 0; i < pc->nsecs && r == 0; i++) {
		struct raw_section *sec = &pc->secs[i];
		const char *n = sec->name;
		size_t a, b;

		if (sec->skip)
			continue;
		for (a = 0; a < sec->nkv; a++)
			for (b = 0; b < a; b++)
				if (strcmp(sec->kv[a].key, sec->kv[b].key) == 0)
					FAIL(DMK_ERR_CONFIG, sec->kv[a].line, "'%s' is set twice in "
					    "[%s] (first at line %d)", sec->kv[a].key, n,
					    sec->kv[b].line);
		if (strcmp(n, "agent") == 0) {
			if (seen_agent++)
				FAIL(DMK_ERR_CONFIG, sec->line, "[agent] appears twice");
			r = interp_agent(path, sec, cfg, err);
		} else if (strncmp(n, "store ", 6) == 0)
			r = interp_store(path, sec, n + 6, cfg, err);
		else if (strncmp(n, "ag ", 3) == 0)
			r = interp_ag(path, sec, n + 3, cfg, err);
		else if (strncmp(n, "database ", 9) == 0)
			r = interp_db(path, sec, n + 9, cfg, err);
		else if (strcmp(n, "hook") == 0)
			r = interp_hook(path, sec, cfg, err);
		else if (n[0] == '\0' && sec->nkv == 0)
			continue;          /* its keys were reported and left out */
		else if (n[0] == '\0')
			FAIL(DMK_ERR_CONFIG, sec->kv[0].line, "key '%s' outside any section; start "
			    "with [agent], [store NAME], [ag NAME] or [database AG/DB]",
			    sec->kv[0].key);
		else
			FAIL(DMK_ERR_CONFIG, sec->line, "unknown section [%s]; expected [agent], "
			    "[store NAME], [ag NAME], [database AG/DB] or [hook]", n);
	}
	if (r != 0)
		return r;
	return check_refs(pc, path, cfg, err);
}

static struct config *
config_new(const char *path)
{
	struct config *cfg;

	if ((cfg = calloc(1, sizeof(*cfg))) == NULL)
		return NULL;
	util_strlcpy(cfg->path, path, sizeof(cfg->path));
	util_strlcpy(cfg->state_dir, "/var/lib/dmkagent", sizeof(cfg->state_dir));
	util_strlcpy(cfg->audit_log, "/var/log/dmkagent/audit.jsonl", sizeof(cfg->audit_log));
	cfg->password_length = 32;
	cfg->lease_ttl = 900;
	cfg->hook_timeout = 30;
	return cfg;
}

/* Keep one more error (the first also stays in err). */
static void
keep_error(struct config_errors *errs, const struct dmk_err *e)
{
	if (errs != NULL && errs->n < CONFIG_ERRORS_MAX)
		memcpy(errs->msg[errs->n++], e->msg, sizeof(errs->msg[0]));
}

/* The LINE of a "PATH:LINE: ..." message, or 0. */
static int
line_of(const char *path, const char *msg)
{
	size_t n = strlen(path);
	long v;
	char *end;

	if (strncmp(msg, path, n) != 0 || msg[n] != ':')
		return 0;
	v = strtol(msg + n + 1, &end, 10);
	return (*end == ':' && v > 0 && v < INT_MAX) ? (int)v : 0;
}

int
config_parse_string_all(const char *text, const char *path, struct config **out,
    struct config_errors *errs, struct dmk_err *err)
{
	struct parse_ctx pc;
	struct config *cfg = NULL;
	struct dmk_err e;
	int r, first = 0, more;

	*out = NULL;
	if (errs != NULL)
		errs->n = 0;
	memset(&pc, 0, sizeof(pc));
	pc.path = path;
	pc.err = err;
	pc.text = pc.pos = text;
	if ((cfg = config_new(path)) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");

	for (const char *p = text; *p; p++)
		if ((unsigned char)*p < 0x20 && *p != '\n' && *p != '\r' && *p != '\t') {
			int line = 1;
			for (const char *q = text; q < p; q++)
				line += *q == '\n';
			r = dmk_errf(err, DMK_ERR_CONFIG, "%s:%d: control character in file", path, line);
			keep_error(errs, err);
			goto fail;
		}
	r = ini_parse_stream(reader, &pc, handler, &pc);
	if (pc.failed) {
		r = err ? err->code : DMK_ERR_CONFIG;
		keep_error(errs, err);
		goto fail;
	}
	if (r != 0) {
		/* inih names the first line it could not parse and goes on: the
		 * keys it did parse are still checked below, for config check. */
		first = dmk_errf(err, DMK_ERR_CONFIG, "%s:%d: cannot parse this line (expected "
		    "[section], KEY = VALUE, or a ; comment)", path, r > 0 ? r : 0);
		keep_error(errs, err);
		if (errs == NULL) {
			r = first;
			goto fail;
		}
	}
	for (;;) {
		dmk_err_clear(&e);
		if ((r = interpret(&pc, cfg, &e)) == 0)
			break;
		if (first == 0) {
			first = r;
			if (err != NULL)
				*err = e;
		}
		more = r != DMK_ERR_NOMEM && errs != NULL && errs->n < CONFIG_ERRORS_MAX ?
		    leave_out(&pc, line_of(path, e.msg), e.msg) : 0;
		if (more >= 0)
			keep_error(errs, &e);
		if (more == 0)
			break;
		config_free(cfg);
		if ((cfg = config_new(path)) == NULL) {
			r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
			goto fail;
		}
	}
	if (first != 0) {
		r = first;
		goto fail;
	}
	free_raw(&pc);
	*out = cfg;
	return 0;
fail:
	free_raw(&pc);
	config_free(cfg);
	return r;
}

int
config_parse_string(const char *text, const char *path, struct config **out,
    struct dmk_err *err)
{
	return config_parse_string_all(text, path, out, NULL, err);
}

/*
 * The file names the servers the agent sends secrets to and the files it
 * reads them from: whoever can write it (or replace it in its folder) can
 * have root read a root-only file: reference and send it anywhere.
 */
static int
check_trusted_owner(const char *what, const struct stat *st, struct dmk_err *err)
{
	if (st->st_uid != 0 && st->st_uid != geteuid())
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: owned by uid %u, neither root nor the "
		    "user running dmkagent (uid %u); refused", what, (unsigned)st->st_uid,
		    (unsigned)geteuid());
	return 0;
}

static int
check_folder(const char *path, const char *dir, struct dmk_err *err)
{
	struct stat st;

	if (stat(dir, &st) == -1)
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: folder %s: %s", path, dir,
		    strerror(errno));
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: its folder %s is writable by group or "
		    "others (mode %03o); refused", path, dir, (unsigned)(st.st_mode & 07777));
	if (st.st_uid != 0 && st.st_uid != geteuid())
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: its folder %s is owned by uid %u, neither "
		    "root nor the user running dmkagent (uid %u); refused", path, dir,
		    (unsigned)st.st_uid, (unsigned)geteuid());
	return 0;
}

/* The folder of path as given (where a link could be swapped) and of the file. */
static int
check_config_dir(const char *path, struct dmk_err *err)
{
	char dir[PATH_MAX], real[PATH_MAX], *slash;
	int r;

	if (strlen(path) >= sizeof(dir))
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: path too long", path);
	memcpy(dir, path, strlen(path) + 1);
	if ((slash = strrchr(dir, '/')) == NULL)
		memcpy(dir, ".", 2);
	else if (slash == dir)
		slash[1] = '\0';   /* "/dmkagent.conf": the folder is "/" */
	else
		*slash = '\0';
	if ((r = check_folder(path, dir, err)) != 0)
		return r;
	if (realpath(path, real) == NULL)
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: %s", path, strerror(errno));
	if ((slash = strrchr(real, '/')) == NULL)
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: no folder", path);
	if (slash == real)
		slash[1] = '\0';
	else
		*slash = '\0';
	return strcmp(real, dir) == 0 ? 0 : check_folder(path, real, err);
}

int
config_load(const char *path, struct config **out, struct dmk_err *err)
{
	return config_load_all(path, out, NULL, err);
}

int
config_load_all(const char *path, struct config **out, struct config_errors *errs,
    struct dmk_err *err)
{
	struct stat st;
	FILE *f;
	char *text = NULL;
	size_t len = 0, cap = 0, n;
	int r;

	*out = NULL;
	if (errs != NULL)
		errs->n = 0;
	if ((f = fopen(path, "r")) == NULL)
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: cannot open: %s", path, strerror(errno));
	if (fstat(fileno(f), &st) == -1 || !S_ISREG(st.st_mode)) {
		fclose(f);
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: not a regular file", path);
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		fclose(f);
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: writable by group or others (mode %03o); "
		    "run chmod go-w %s", path, (unsigned)(st.st_mode & 0777), path);
	}
	if ((r = check_trusted_owner(path, &st, err)) != 0 ||
	    (r = check_config_dir(path, err)) != 0) {
		fclose(f);
		return r;
	}
	if (st.st_size > 1024 * 1024) {
		fclose(f);
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: larger than 1 MiB", path);
	}
	do {
		if (len + 4096 + 1 > cap) {
			char *t;
			cap = cap ? cap * 2 : 8192;
			if ((t = realloc(text, cap)) == NULL) {
				free(text);
				fclose(f);
				return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
			}
			text = t;
		}
		n = fread(text + len, 1, 4096, f);
		len += n;
	} while (n > 0 && len <= 1024 * 1024);
	fclose(f);
	text[len] = '\0';
	if (strlen(text) != len)
		r = dmk_errf(err, DMK_ERR_CONFIG, "%s: contains a NUL byte", path);
	else
		r = config_parse_string_all(text, path, out, errs, err);
	secure_wipe(text, cap);
	free(text);
	return r;
}

void
config_free(struct config *cfg)
{
	size_t i, j;

	if (cfg == NULL)
		return;
	for (i = 0; i < cfg->nstores; i++) {
		for (j = 0; j < cfg->stores[i].nkv; j++) {
			free(cfg->stores[i].kv[j].key);
			free(cfg->stores[i].kv[j].value);
		}
		free(cfg->stores[i].kv);
	}
	free(cfg->stores);
	for (i = 0; i < cfg->nags; i++)
		free(cfg->ags[i].replicas);
	free(cfg->ags);
	free(cfg->dbs);
	free(cfg);
}

const struct conf_store *
config_store(const struct config *cfg, const char *name)
{
	size_t i;

	for (i = 0; i < cfg->nstores; i++)
		if (strcmp(cfg->stores[i].name, name) == 0)
			return &cfg->stores[i];
	return NULL;
}

const struct conf_ag *
config_ag(const struct config *cfg, const char *label)
{
	size_t i;

	for (i = 0; i < cfg->nags; i++)
		if (strcmp(cfg->ags[i].label, label) == 0)
			return &cfg->ags[i];
	return NULL;
}

