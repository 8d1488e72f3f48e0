/*
 * hook.c: dmkagent hook serve: an HTTPS endpoint for Azure Event Grid
 * webhook delivery ([hook] in dmkagent.conf(5)).
 *
 * The listener (this thread) answers each request at once and never does
 * the work itself; one worker thread takes the events from a bounded queue
 * and runs them one at a time, so one rotation per database at a time:
 *   Microsoft.KeyVault.SecretNewVersionCreated  a pass of run for that
 *                      database (a version written outside dmkagent is
 *                      applied through the rotation state machine)
 *   Microsoft.KeyVault.SecretNearExpiry         rotate that database now
 *   Microsoft.KeyVault.SecretExpired            rotate it, and report the
 *                      expiry as an error
 * Both schemas: Event Grid (a JSON array; the SubscriptionValidationEvent
 * handshake answered with {"validationResponse": CODE}) and CloudEvents 1.0
 * (one event or a batch; the OPTIONS handshake answered with
 * WebHook-Allowed-Origin).  Every request must carry the shared secret
 * ([hook] key) in its code query parameter, compared in constant time
 * (HMAC-SHA-256 of both under a per-process random key, so not even the
 * length leaks), and with auth = entra an Entra ID bearer token
 * (entra_jwt.h): 401 otherwise.  A malformed request or body: 400.  A full
 * queue: 503 with Retry-After (nothing of that request is queued, so Event
 * Grid's retry delivers all of it).  Events are deduplicated by id (the last
 * HOOK_SEEN ids); events for secrets not configured, and other types, are
 * acknowledged (200) and logged by id, not acted on.  Nothing from a request
 * reaches the logs but event ids (checked to be [A-Za-z0-9._:-]) and the
 * configuration's own names.
 *
 * One connection at a time, each with a 5 s deadline to send its request
 * (headers at most 16 KiB, a body at most 1 MiB, Content-Length required):
 * Event Grid delivers one request per connection and waits for the answer.
 * SIGTERM or SIGINT: stop listening, finish the event at work (at its next
 * step boundary), drop the queued ones (logged; they were answered 200, so
 * Event Grid will not send them again: the next run or watch pass does
 * their work), exit 0.
 */
#include <sys/socket.h>
#include <sys/types.h>

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "core/dmk.h"
#include "core/buf.h"
#include "core/secret.h"
#include "cli.h"
#include "entra_jwt.h"
#include "hook.h"
#include "run.h"

#define HOOK_HEAD_MAX  16384
#define HOOK_BODY_MAX  (1024 * 1024)
#define HOOK_SEEN      1024
#define HOOK_ID_MAX    128
#define HOOK_DEADLINE  5          /* seconds to send a request */

enum job_kind { JOB_APPLY = 1, JOB_ROTATE, JOB_EXPIRED };

struct job {
	enum job_kind kind;
	size_t db;                    /* index into cfg->dbs */
	char id[HOOK_ID_MAX + 1];
};

struct hook {
	struct agent *a;
	SSL_CTX *ctx;
	unsigned char mac_key[32];
	int has_code;                 /* [hook] key: ?code= required */
	unsigned char want[32];       /* HMAC of the expected code */
	struct entra_verifier *entra; /* auth = entra: bearer tokens required */
	int lfd;
	/* the queue, under mtx */
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	struct job *q;
	size_t qcap, qhead, qlen;
	int busy;                     /* the worker is at an event */
	int stopping;
	/* ids seen (a ring) */
	char (*seen)[HOOK_ID_MAX + 1];
	size_t nseen, seen_next;
};

/* ---- the work ---- */

static int
job_run(struct hook *h, const struct job *j)
{
	struct agent *a = h->a;
	const struct conf_db *db = &a->cfg->dbs[j->db];
	const struct conf_ag *ag = config_ag(a->cfg, db->ag);
	char *argv[6], trigger[HOOK_ID_MAX + 40];
	struct dmk_err err;
	int r;

	argv[0] = j->kind == JOB_APPLY ? "run" : "rotate";
	argv[1] = "--ag";
	argv[2] = (char *)(ag ? ag->name : db->ag);
	argv[3] = "--database";
	argv[4] = (char *)db->name;
	argv[5] = NULL;
	util_random_id(a->run_id, sizeof(a->run_id));
	json_decref(a->regstate);
	a->regstate = NULL;
	a->regstate_dirty = 0;
	optind = 0;
	dmk_err_clear(&err);
	if (j->kind == JOB_EXPIRED)
		log_error("hook: event %s: the DMK password of %s/%s has EXPIRED in the store; "
		    "rotating now", j->id, argv[2], argv[4]);
	/* why the run happens, for the audit records (why.trigger): the event's id
	 * (checked when the request was read: HOOK_ID_MAX of a safe alphabet) */
	snprintf(trigger, sizeof(trigger), "hook event %s (%s)", j->id,
	    j->kind == JOB_APPLY ? "new version" : j->kind == JOB_EXPIRED ? "expired" :
	    "near expiry");
	a->trigger = trigger;
	r = j->kind == JOB_APPLY ? cmd_run(a, 5, argv, &err) : cmd_rotate(a, 5, argv, &err);
	a->trigger = NULL;
	if (r < 0)
		log_error("hook: event %s (%s/%s): %s", j->id, argv[2], argv[4],
		    err.msg[0] ? err.msg : dmk_strerror(r));
	else
		log_info("hook: event %s (%s/%s): done", j->id, argv[2], argv[4]);
	return r;
}

static void *
worker(void *arg)
{
	struct hook *h = arg;
	struct job j;

	for (;;) {
		pthread_mutex_lock(&h->mtx);
		while (h->qlen == 0 && !h->stopping)
			pthread_cond_wait(&h->cv, &h->mtx);
		if (h->stopping) {
			if (h->qlen > 0)
				log_warn("hook: stopping; %zu queued event(s) not done (the next "
				    "event or run does them)", h->qlen);
			pthread_mutex_unlock(&h->mtx);
			return NULL;
		}
		j = h->q[h->qhead];
		h->qhead = (h->qhead + 1) % h->qcap;
		h->qlen--;
		h->busy = 1;
		pthread_mutex_unlock(&h->mtx);
		job_run(h, &j);
		pthread_mutex_lock(&h->mtx);
		h->busy = 0;
		pthread_mutex_unlock(&h->mtx);
	}
}

/* ---- what a request says ---- */

static int
id_ok(const char *s)
{
	size_t n = strlen(s), i;

	if (n == 0 || n > HOOK_ID_MAX)
		return 0;
	for (i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		    (s[i] >= '0' && s[i] <= '9') || strchr("-_.:", s[i]) != NULL))
			return 0;
	return 1;
}

/* Under mtx. */
static int
seen_has(struct hook *h, const char *id)
{
	size_t i;

	for (i = 0; i < h->nseen; i++)
		if (strcmp(h->seen[i], id) == 0)
			return 1;
	return 0;
}

static void
seen_add(struct hook *h, const char *id)
{
	util_strlcpy(h->seen[h->seen_next], id, sizeof(h->seen[0]));
	h->seen_next = (h->seen_next + 1) % HOOK_SEEN;
	if (h->nseen < HOOK_SEEN)
		h->nseen++;
}

/* The configured database whose DMK password is this Key Vault secret. */
static long
db_of(struct agent *a, const char *vault, const char *name)
{
	size_t i;

	for (i = 0; i < a->cfg->ndbs; i++) {
		const struct secret_ref *ref = &a->cfg->dbs[i].dmk_password;
		const struct conf_store *st;
		const char *url, *host;
		size_t n;

		if (ref->kind != REF_STORE || (st = config_store(a->cfg, ref->store)) == NULL ||
		    strcmp(st->type, "azure-key-vault") != 0 || strcasecmp(ref->path, name) != 0)
			continue;
		if (vault != NULL && (url = conf_store_str(st, "vault_url")) != NULL) {
			host = strstr(url, "://");
			host = host ? host + 3 : url;
			n = strlen(vault);
			if (strncasecmp(host, vault, n) != 0 || (host[n] != '.' && host[n] != ':' &&
			    host[n] != '/' && host[n] != '\0'))
				continue;
		}
		return (long)i;
	}
	return -1;
}

/* One event, either schema: its id, type and data; NULL fields when absent. */
static int
event_fields(json_t *ev, const char **id, const char **type, json_t **data)
{
	int ce = json_object_get(ev, "specversion") != NULL;

	*id = json_string_value(json_object_get(ev, "id"));
	*type = json_string_value(json_object_get(ev, ce ? "type" : "eventType"));
	*data = json_object_get(ev, "data");
	return *id != NULL && *type != NULL && id_ok(*id);
}

struct reply {
	int status;
	const char *reason;
	char body[512];
	char extra[600];              /* more header lines, each ending in \r\n */
};

static void
say(struct reply *rp, int status, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
say(struct reply *rp, int status, const char *reason, const char *fmt, ...)
{
	va_list ap;

	rp->status = status;
	rp->reason = reason;
	va_start(ap, fmt);
	vsnprintf(rp->body, sizeof(rp->body), fmt, ap);
	va_end(ap);
}

static void
handle_events(struct hook *h, const char *body, size_t len, struct reply *rp)
{
	struct agent *a = h->a;
	struct job jobs[64];
	json_t *root, *arr, *ev;
	json_error_t je;
	size_t i, nj = 0, n;
	const char *id, *type, *code;
	json_t *data;

	if ((root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je)) == NULL) {
		say(rp, 400, "Bad Request", "{\"error\":\"the body is not JSON\"}");
		return;
	}
	if (json_is_object(root)) {
		arr = json_array();
		json_array_append(arr, root);
	} else if (json_is_array(root))
		arr = json_incref(root);
	else {
		json_decref(root);
		say(rp, 400, "Bad Request", "{\"error\":\"expected an event or an array of events\"}");
		return;
	}
	n = json_array_size(arr);
	if (n == 0 || n > 64) {
		say(rp, 400, "Bad Request", "{\"error\":\"1 to 64 events per request\"}");
		goto out;
	}
	/* the whole request is checked before anything is queued */
	json_array_foreach(arr, i, ev) {
		if (!json_is_object(ev) || !event_fields(ev, &id, &type, &data)) {
			say(rp, 400, "Bad Request", "{\"error\":\"event %zu: no valid id and type\"}", i);
			goto out;
		}
		if (strcmp(type, "Microsoft.EventGrid.SubscriptionValidationEvent") == 0) {
			code = json_string_value(json_object_get(data, "validationCode"));
			if (n != 1 || code == NULL || !id_ok(code)) {
				say(rp, 400, "Bad Request", "{\"error\":\"a validation event needs a "
				    "validationCode\"}");
				goto out;
			}
			log_info("hook: event %s: subscription validation answered", id);
			say(rp, 200, "OK", "{\"validationResponse\":\"%s\"}", code);
			goto out;
		}
		if (strncmp(type, "Microsoft.KeyVault.Secret", 25) == 0 && (!json_is_object(data) ||
		    !json_is_string(json_object_get(data, "ObjectName")))) {
			say(rp, 400, "Bad Request", "{\"error\":\"event %zu: no data.ObjectName\"}", i);
			goto out;
		}
	}
	pthread_mutex_lock(&h->mtx);
	json_array_foreach(arr, i, ev) {
		enum job_kind kind;
		long d;
		size_t k;
		int dup = 0;

		event_fields(ev, &id, &type, &data);
		for (k = 0; k < nj; k++)
			dup |= strcmp(jobs[k].id, id) == 0;
		if (dup || seen_has(h, id)) {
			log_info("hook: event %s: already received; not acted on again", id);
			continue;
		}
		if (strcmp(type, "Microsoft.KeyVault.SecretNewVersionCreated") == 0)
			kind = JOB_APPLY;
		else if (strcmp(type, "Microsoft.KeyVault.SecretNearExpiry") == 0)
			kind = JOB_ROTATE;
		else if (strcmp(type, "Microsoft.KeyVault.SecretExpired") == 0)
			kind = JOB_EXPIRED;
		else {
			log_info("hook: event %s: a type dmkagent does not act on; acknowledged", id);
			continue;
		}
		d = db_of(a, json_string_value(json_object_get(data, "VaultName")),
		    json_string_value(json_object_get(data, "ObjectName")));
		if (d < 0) {
			log_info("hook: event %s: not a configured DMK password; acknowledged", id);
			continue;
		}
		jobs[nj].kind = kind;
		jobs[nj].db = (size_t)d;
		util_strlcpy(jobs[nj].id, id, sizeof(jobs[nj].id));
		nj++;
	}
	if (h->qlen + nj > h->qcap) {
		pthread_mutex_unlock(&h->mtx);
		log_warn("hook: queue full (%zu waiting): %zu event(s) refused with 503", h->qlen, nj);
		say(rp, 503, "Service Unavailable", "{\"error\":\"busy; retry later\"}");
		snprintf(rp->extra, sizeof(rp->extra), "Retry-After: 30\r\n");
		goto out;
	}
	for (i = 0; i < nj; i++) {
		h->q[(h->qhead + h->qlen) % h->qcap] = jobs[i];
		h->qlen++;
		seen_add(h, jobs[i].id);
		log_info("hook: event %s: queued (%s %s/%s)", jobs[i].id, jobs[i].kind == JOB_APPLY ?
		    "apply the new version:" : "rotate:", a->cfg->dbs[jobs[i].db].ag,
		    a->cfg->dbs[jobs[i].db].name);
	}
	/* the acknowledged ones are seen too: a replay is not logged as new */
	json_array_foreach(arr, i, ev) {
		event_fields(ev, &id, &type, &data);
		if (!seen_has(h, id))
			seen_add(h, id);
	}
	pthread_cond_signal(&h->cv);
	pthread_mutex_unlock(&h->mtx);
	say(rp, 200, "OK", "{\"accepted\":%zu}", nj);
out:
	json_decref(arr);
	json_decref(root);
}

/* ---- HTTP ---- */

static int
hex(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
	    c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The code parameter of the request target, percent-decoded into out
 * (a secret: wiped by the caller).  0 found, -1 not. */
static int
query_code(const char *target, char *out, size_t len)
{
	const char *q = strchr(target, '?'), *p, *end;
	size_t n = 0;

	if (q == NULL)
		return -1;
	for (p = q + 1; *p; p = *end ? end + 1 : end) {
		end = p + strcspn(p, "&");
		if (strncmp(p, "code=", 5) != 0)
			continue;
		for (p += 5; p < end && n + 1 < len; p++) {
			if (*p == '%' && p + 2 < end && hex(p[1]) >= 0 && hex(p[2]) >= 0) {
				out[n++] = (char)(hex(p[1]) * 16 + hex(p[2]));
				p += 2;
			} else
				out[n++] = *p == '+' ? ' ' : *p;
		}
		out[n] = '\0';
		return 0;
	}
	return -1;
}

static int
code_ok(struct hook *h, const char *target)
{
	char code[512];
	unsigned char mac[32];
	unsigned int ml = sizeof(mac);
	int ok = 0;

	if (query_code(target, code, sizeof(code)) == 0 &&
	    HMAC(EVP_sha256(), h->mac_key, sizeof(h->mac_key), (unsigned char *)code,
	    strlen(code), mac, &ml) != NULL)
		ok = CRYPTO_memcmp(mac, h->want, sizeof(mac)) == 0;
	secure_wipe(code, sizeof(code));
	return ok;
}

/* A header's value (case-insensitive name) from the head, into out. */
static int
header(const char *head, const char *name, char *out, size_t len)
{
	const char *p = strstr(head, "\r\n"), *v, *e;
	size_t n = strlen(name), m;

	while (p != NULL && p[2] != '\0' && !(p[2] == '\r' && p[3] == '\n')) {
		p += 2;
		e = strstr(p, "\r\n");
		if (e == NULL)
			break;
		if ((size_t)(e - p) > n && strncasecmp(p, name, n) == 0 && p[n] == ':') {
			for (v = p + n + 1; v < e && (*v == ' ' || *v == '\t'); v++)
				;
			m = (size_t)(e - v);
			while (m > 0 && (v[m - 1] == ' ' || v[m - 1] == '\t'))
				m--;
			if (m >= len)
				return -1;
			memcpy(out, v, m);
			out[m] = '\0';
			return 0;
		}
		p = e;
	}
	return -1;
}

/* Where a request's bytes come from: the TLS session, or (fuzzing) memory. */
struct reader {
	int (*read)(void *ctx, char *buf, size_t len);   /* bytes, or -1 */
	void *ctx;
};

/* auth = entra: "Authorization: Bearer TOKEN" that entra_verify() passes. */
static int
bearer_ok(struct hook *h, const char *head)
{
	char *tok;
	struct dmk_err e;
	int ok = 0;

	if ((tok = malloc(HOOK_HEAD_MAX)) == NULL)
		return 0;
	if (header(head, "Authorization", tok, HOOK_HEAD_MAX) != 0 ||
	    strncasecmp(tok, "Bearer ", 7) != 0)
		log_info("hook: no bearer token");
	else if (entra_verify(h->entra, tok + 7, time(NULL), &e) != 0)
		log_info("hook: %s", e.msg);     /* why, never the token */
	else
		ok = 1;
	secure_wipe(tok, HOOK_HEAD_MAX);
	free(tok);
	return ok;
}

static int
ssl_read_some(void *ctx, char *buf, size_t len)
{
	int r = SSL_read(ctx, buf, (int)len);

	return r > 0 ? r : -1;
}

static void
respond(SSL *s, const struct reply *rp)
{
	char head[1024];
	int n;

	n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
	    "Content-Length: %zu\r\nCache-Control: no-store\r\nConnection: close\r\n%s\r\n",
	    rp->status, rp->reason, strlen(rp->body), rp->extra);
	if (n > 0 && (size_t)n < sizeof(head) && SSL_write(s, head, n) > 0 && rp->body[0])
		(void)SSL_write(s, rp->body, (int)strlen(rp->body));
}

/* A POST's body into buf (moved to its start): 0, 1 answer rp, -1 drop. */
static int
read_body(const struct reader *rd, char *buf, size_t have, size_t headlen, size_t *body,
    struct reply *rp)
{
	char cl[32], te[64];
	long long clen = 0;
	size_t i;
	int r;

	if (header(buf, "Transfer-Encoding", te, sizeof(te)) == 0 ||
	    header(buf, "Content-Length", cl, sizeof(cl)) != 0) {
		say(rp, 411, "Length Required", "{\"error\":\"Content-Length required\"}");
		return 1;
	}
	for (i = 0; cl[i]; i++) {
		if (cl[i] < '0' || cl[i] > '9' || clen > HOOK_BODY_MAX)
			break;
		clen = clen * 10 + (cl[i] - '0');
	}
	if (cl[0] == '\0' || cl[i] != '\0' || clen > HOOK_BODY_MAX) {
		if (clen > HOOK_BODY_MAX)
			say(rp, 413, "Payload Too Large", "{\"error\":\"at most 1 MiB\"}");
		else
			say(rp, 400, "Bad Request", "{\"error\":\"bad Content-Length\"}");
		return 1;
	}
	*body = have - headlen;
	if (*body > (size_t)clen) {
		say(rp, 400, "Bad Request", "{\"error\":\"more than Content-Length\"}");
		return 1;
	}
	memmove(buf, buf + headlen, *body);
	while (*body < (size_t)clen) {
		if ((r = rd->read(rd->ctx, buf + *body, (size_t)clen - *body)) < 0)
			return -1;
		*body += (size_t)r;
	}
	return 0;
}

/*
 * One request, read through rd into buf (HOOK_HEAD_MAX + HOOK_BODY_MAX + 1
 * bytes, wiped by the caller up to *used): the answer in rp.  0 answer,
 * -1 the client went away (no answer).
 */
static int
hook_handle(struct hook *h, const struct reader *rd, char *buf, size_t *used,
    struct reply *rp)
{
	char method[16], target[2048], origin[300];
	size_t have = 0, headlen = 0, body = 0;
	char *eoh, *sp;
	int r, authorized;

	memset(rp, 0, sizeof(*rp));
	*used = 0;
	/* the head */
	while ((eoh = have ? strstr(buf, "\r\n\r\n") : NULL) == NULL) {
		if (have >= HOOK_HEAD_MAX) {
			say(rp, 431, "Request Header Fields Too Large", "{\"error\":\"headers too large\"}");
			return 0;
		}
		if ((r = rd->read(rd->ctx, buf + have, HOOK_HEAD_MAX - have)) < 0)
			return -1;
		have += (size_t)r;
		*used = have;
		buf[have] = '\0';
		if (strlen(buf) != have) {
			say(rp, 400, "Bad Request", "{\"error\":\"NUL in the request\"}");
			return 0;
		}
	}
	headlen = (size_t)(eoh - buf) + 4;
	eoh[2] = '\0';                /* the head ends with its last line's \r\n */
	sp = strstr(buf, "\r\n");
	if (sscanf(buf, "%15s %2047s", method, target) != 2 || sp == NULL ||
	    sp - buf < 9 || strncmp(sp - 9, " HTTP/1.", 8) != 0) {
		say(rp, 400, "Bad Request", "{\"error\":\"not an HTTP/1.x request\"}");
		return 0;
	}
	/* judged while the head is whole (the body is read over it) */
	authorized = (!h->has_code || code_ok(h, target)) && (h->entra == NULL || bearer_ok(h, buf));
	/* A POST's body is read before any answer: a reply while the client still
	 * sends would reach it as a reset. */
	if (strcmp(method, "POST") == 0 && (r = read_body(rd, buf, have, headlen, &body,
	    rp)) != 0) {
		*used = have > body ? have : body;
		return r < 0 ? -1 : 0;
	}
	*used = have > body ? have : body;
	if (!authorized) {
		log_warn("hook: a %s request without the right %s: 401",
		    strcmp(method, "POST") == 0 ? "POST" : strcmp(method, "OPTIONS") == 0 ?
		    "OPTIONS" : "other", h->has_code && h->entra ? "key or token" :
		    h->has_code ? "key" : "token");
		say(rp, 401, "Unauthorized", "{\"error\":\"unauthorized\"}");
		snprintf(rp->extra, sizeof(rp->extra), "%s", h->entra ? "WWW-Authenticate: Bearer\r\n" :
		    "");
		return 0;
	}
	if (strcmp(method, "OPTIONS") == 0) {
		/* CloudEvents 1.0 webhook validation (abuse protection) */
		if (header(buf, "WebHook-Request-Origin", origin, sizeof(origin)) != 0 ||
		    origin[0] == '\0' || origin[strspn(origin, "abcdefghijklmnopqrstuvwxyz"
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-*")] != '\0') {
			say(rp, 400, "Bad Request", "{\"error\":\"no valid WebHook-Request-Origin\"}");
			return 0;
		}
		log_info("hook: CloudEvents validation answered");
		say(rp, 200, "OK", "%s", "");
		snprintf(rp->extra, sizeof(rp->extra), "WebHook-Allowed-Origin: %s\r\n"
		    "WebHook-Allowed-Rate: 120\r\nAllow: POST, OPTIONS\r\n", origin);
		return 0;
	}
	if (strcmp(method, "POST") != 0) {
		say(rp, 405, "Method Not Allowed", "{\"error\":\"POST or OPTIONS\"}");
		snprintf(rp->extra, sizeof(rp->extra), "Allow: POST, OPTIONS\r\n");
		return 0;
	}
	handle_events(h, buf, body, rp);
	return 0;
}

static void
serve_one(struct hook *h, int fd)
{
	struct reply rp;
	struct timeval tv = { HOOK_DEADLINE, 0 };
	struct reader rd;
	char *buf = NULL;
	size_t used = 0;
	SSL *s = NULL;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if ((s = SSL_new(h->ctx)) == NULL || SSL_set_fd(s, fd) != 1 || SSL_accept(s) != 1) {
		log_info("hook: a TLS handshake failed");
		goto out;
	}
	if ((buf = malloc(HOOK_HEAD_MAX + HOOK_BODY_MAX + 1)) == NULL)
		goto out;
	rd.read = ssl_read_some;
	rd.ctx = s;
	if (hook_handle(h, &rd, buf, &used, &rp) == 0) {
		respond(s, &rp);
		SSL_shutdown(s);
	}
out:
	if (buf != NULL) {
		secure_wipe(buf, used);
		free(buf);
	}
	SSL_free(s);
	close(fd);
}

/* ---- fuzzing: one request from memory, against a fixed configuration ---- */

struct memreader {
	const unsigned char *p;
	size_t n, off, chunk;
};

static int
mem_read(void *ctx, char *buf, size_t len)
{
	struct memreader *m = ctx;
	size_t k = m->n - m->off;

	if (k == 0)
		return -1;
	if (k > len)
		k = len;
	if (k > m->chunk)
		k = m->chunk;            /* arrive in pieces, as over TLS */
	memcpy(buf, m->p + m->off, k);
	m->off += k;
	return (int)k;
}

int
hook_fuzz_request(struct agent *a, const char *key, const unsigned char *data, size_t n)
{
	static char (*seen)[HOOK_ID_MAX + 1];
	static char *buf;
	struct job q[2];
	struct hook h;
	struct memreader m;
	struct reader rd;
	struct reply rp;
	unsigned int ml = sizeof(h.want);
	size_t used;
	int r;

	if (seen == NULL && (seen = calloc(HOOK_SEEN, sizeof(*seen))) == NULL)
		return -1;
	if (buf == NULL && (buf = malloc(HOOK_HEAD_MAX + HOOK_BODY_MAX + 1)) == NULL)
		return -1;
	memset(&h, 0, sizeof(h));
	h.a = a;
	h.q = q;
	h.qcap = 2;
	h.seen = seen;
	pthread_mutex_init(&h.mtx, NULL);
	pthread_cond_init(&h.cv, NULL);
	memset(h.mac_key, 7, sizeof(h.mac_key));
	h.has_code = 1;
	HMAC(EVP_sha256(), h.mac_key, sizeof(h.mac_key), (const unsigned char *)key, strlen(key),
	    h.want, &ml);
	m.p = data;
	m.n = n;
	m.off = 0;
	m.chunk = n > 0 ? (size_t)data[0] % 64 + 1 : 1;
	rd.read = mem_read;
	rd.ctx = &m;
	r = hook_handle(&h, &rd, buf, &used, &rp);
	pthread_mutex_destroy(&h.mtx);
	pthread_cond_destroy(&h.cv);
	return r == 0 ? rp.status : -1;
}

/* ---- set-up ---- */

static int
setup_tls(struct hook *h, struct dmk_err *err)
{
	const struct conf_hook *c = &h->a->cfg->hook;
	struct secret *key = NULL;
	EVP_PKEY *pk = NULL;
	BIO *bio = NULL;
	int r;

	if ((r = agent_resolve(h->a, &c->tls_key, 0, &key, NULL, err)) != 0)
		return dmk_err_prefix(err, "[hook] tls_key");
	if ((h->ctx = SSL_CTX_new(TLS_server_method())) == NULL ||
	    SSL_CTX_set_min_proto_version(h->ctx, TLS1_2_VERSION) != 1) {
		r = dmk_errf(err, DMK_ERR_TLS, "[hook]: cannot make a TLS context");
		goto out;
	}
	if (SSL_CTX_use_certificate_chain_file(h->ctx, c->tls_cert) != 1) {
		r = dmk_errf(err, DMK_ERR_CONFIG, "[hook] tls_cert %s: not a PEM certificate chain",
		    c->tls_cert);
		goto out;
	}
	if ((bio = BIO_new_mem_buf(secret_reveal(key), (int)secret_len(key))) == NULL ||
	    (pk = PEM_read_bio_PrivateKey(bio, NULL, NULL, (void *)"")) == NULL ||
	    SSL_CTX_use_PrivateKey(h->ctx, pk) != 1 || SSL_CTX_check_private_key(h->ctx) != 1) {
		r = dmk_errf(err, DMK_ERR_CONFIG, "[hook] tls_key %s: not a PEM private key of the "
		    "certificate in tls_cert", c->tls_key.text);
		goto out;
	}
	SSL_CTX_set_options(h->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
	r = 0;
out:
	ERR_clear_error();
	BIO_free(bio);
	EVP_PKEY_free(pk);
	secret_free(key);
	return r;
}

static int
setup_key(struct hook *h, struct dmk_err *err)
{
	struct secret *k = NULL;
	unsigned int ml = sizeof(h->want);
	int r;

	if ((r = agent_resolve(h->a, &h->a->cfg->hook.key, 0, &k, NULL, err)) != 0)
		return dmk_err_prefix(err, "[hook] key");
	if (secret_len(k) < 16 || secret_len(k) > 256) {
		secret_free(k);
		return dmk_errf(err, DMK_ERR_CONFIG, "[hook] key %s: 16 to 256 characters",
		    h->a->cfg->hook.key.text);
	}
	if (RAND_bytes(h->mac_key, sizeof(h->mac_key)) != 1 ||
	    HMAC(EVP_sha256(), h->mac_key, sizeof(h->mac_key),
	    (const unsigned char *)secret_reveal(k), secret_len(k), h->want, &ml) == NULL)
		r = dmk_errf(err, DMK_ERR_INTERNAL, "[hook] key: HMAC failed");
	secret_free(k);
	return r;
}

/* auth = entra: the tenant's signing keys, fetched now (and when a kid is new). */
static int
setup_entra(struct hook *h, struct entra_verifier *v, struct dmk_err *err)
{
	const struct conf_hook *c = &h->a->cfg->hook;
	int r;

	if (!c->entra)
		return 0;
	util_strlcpy(v->authority, c->authority_host, sizeof(v->authority));
	util_strlcpy(v->tenant, c->tenant, sizeof(v->tenant));
	util_strlcpy(v->audience, c->audience, sizeof(v->audience));
	util_strlcpy(v->ca_file, c->ca_file, sizeof(v->ca_file));
	if ((r = entra_fetch_keys(v, err)) != 0)
		return dmk_err_prefix(err, "[hook] auth = entra");
	h->entra = v;
	return 0;
}

static int
setup_listen(struct hook *h, struct dmk_err *err)
{
	const struct conf_hook *c = &h->a->cfg->hook;
	struct addrinfo hints, *res = NULL;
	char port[16];
	int on = 1, r;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(port, sizeof(port), "%d", c->listen_port);
	if ((r = getaddrinfo(c->listen_host[0] ? c->listen_host : NULL, port, &hints, &res)) != 0)
		return dmk_errf(err, DMK_ERR_CONFIG, "[hook] listen %s:%d: %s", c->listen_host,
		    c->listen_port, gai_strerror(r));
	if ((h->lfd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, 0)) == -1 ||
	    setsockopt(h->lfd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
	    bind(h->lfd, res->ai_addr, res->ai_addrlen) != 0 || listen(h->lfd, 64) != 0) {
		r = dmk_errf(err, DMK_ERR_IO, "[hook] listen %s:%d: %s", c->listen_host,
		    c->listen_port, strerror(errno));
		freeaddrinfo(res);
		return r;
	}
	freeaddrinfo(res);
	return 0;
}

int
cmd_hook_serve(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	struct hook h;
	struct entra_verifier ev;
	pthread_t th;
	int r, started = 0;

	memset(&ev, 0, sizeof(ev));

	if (argc > 1)
		return dmk_errf(err, DMK_ERR_USAGE, "hook serve takes no arguments ('%s'); usage: "
		    "dmkagent %s", argv[1], cli_find("hook serve")->usage);
	if (!a->cfg->hook.present)
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: no [hook] section: hook serve needs "
		    "listen, tls_cert, tls_key and key (dmkagent.conf(5))", a->config_path);
	memset(&h, 0, sizeof(h));
	h.a = a;
	h.lfd = -1;
	h.qcap = (size_t)a->cfg->hook.queue;
	pthread_mutex_init(&h.mtx, NULL);
	pthread_cond_init(&h.cv, NULL);
	if ((h.q = calloc(h.qcap, sizeof(*h.q))) == NULL ||
	    (h.seen = calloc(HOOK_SEEN, sizeof(*h.seen))) == NULL) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	h.has_code = a->cfg->hook.has_key;
	if ((h.has_code && (r = setup_key(&h, err)) != 0) || (r = setup_tls(&h, err)) != 0 ||
	    (r = setup_entra(&h, &ev, err)) != 0 || (r = setup_listen(&h, err)) != 0)
		goto out;
	dmk_signals_install();
	signal(SIGPIPE, SIG_IGN);      /* a client gone before its answer */
	if (pthread_create(&th, NULL, worker, &h) != 0) {
		r = dmk_errf(err, DMK_ERR_INTERNAL, "cannot start the worker");
		goto out;
	}
	started = 1;
	log_warn("hook: listening on %s:%d (queue %zu)", a->cfg->hook.listen_host,
	    a->cfg->hook.listen_port, h.qcap);
	run_notify("READY=1");
	while (!dmk_interrupted()) {
		struct pollfd p = { h.lfd, POLLIN, 0 };
		int fd;

		if (poll(&p, 1, 500) <= 0)
			continue;
		if ((fd = accept4(h.lfd, NULL, NULL, SOCK_CLOEXEC)) == -1)
			continue;
		serve_one(&h, fd);
	}
	log_warn("hook: stopping");
	run_notify("STOPPING=1");
	r = 0;
out:
	if (h.lfd != -1)
		close(h.lfd);
	if (started) {
		pthread_mutex_lock(&h.mtx);
		h.stopping = 1;
		pthread_cond_signal(&h.cv);
		pthread_mutex_unlock(&h.mtx);
		pthread_join(th, NULL);
	}
	SSL_CTX_free(h.ctx);
	entra_free(&ev);
	secure_wipe(h.mac_key, sizeof(h.mac_key));
	secure_wipe(h.want, sizeof(h.want));
	free(h.q);
	free(h.seen);
	pthread_mutex_destroy(&h.mtx);
	pthread_cond_destroy(&h.cv);
	return r;
}
