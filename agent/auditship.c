/* auditship.c: audit records as RFC 5424 syslog, from a delivery checkpoint (auditship.h). */
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>

#include "core/dmk.h"
#include "auditship.h"

#define SHIP_LINE_MAX (64 * 1024)
#define SHIP_TIMEOUT_S 5

enum ship_kind { SHIP_UNIX = 1, SHIP_UDP, SHIP_TLS };

struct audit_ship {
	enum ship_kind kind;
	char spec[512];
	char path[108];            /* unix */
	char host[256], port[16];  /* udp, tcp+tls */
	char ca[4096];
	char log[4096];
	char ckpt[4096];
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	int failed;                /* this run could not deliver: wait for close */
	char failure[512];         /* why, for the run's audit-syslog record */
};

static int
split_hostport(const char *s, char *host, size_t hl, char *port, size_t pl)
{
	const char *colon;
	char *end;
	long p;

	if (s[0] == '[') {      /* [v6]:port */
		const char *rb = strchr(s, ']');
		if (rb == NULL || rb[1] != ':' || (size_t)(rb - s - 1) >= hl)
			return -1;
		memcpy(host, s + 1, (size_t)(rb - s - 1));
		host[rb - s - 1] = '\0';
		colon = rb + 1;
	} else {
		if ((colon = strrchr(s, ':')) == NULL || colon == s || (size_t)(colon - s) >= hl)
			return -1;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = '\0';
	}
	errno = 0;
	p = strtol(colon + 1, &end, 10);
	if (*end != '\0' || colon[1] == '\0' || errno || p < 1 || p > 65535)
		return -1;
	snprintf(port, pl, "%ld", p);
	return 0;
}

static int
parse_spec(const char *spec, struct audit_ship *s, char *why, size_t len)
{
	char host[256], port[16];

	if (strncmp(spec, "unix:", 5) == 0) {
		if (spec[5] != '/' || strlen(spec + 5) >= sizeof(s->path)) {
			snprintf(why, len, "unix: needs an absolute socket path under %zu bytes, "
			    "such as unix:/dev/log", sizeof(s->path));
			return -1;
		}
		s->kind = SHIP_UNIX;
		util_strlcpy(s->path, spec + 5, sizeof(s->path));
		return 0;
	}
	if (strncmp(spec, "udp:", 4) == 0 || strncmp(spec, "tcp+tls:", 8) == 0) {
		const char *hp = spec + (spec[0] == 'u' ? 4 : 8);
		if (split_hostport(hp, host, sizeof(host), port, sizeof(port)) != 0) {
			snprintf(why, len, "'%s': want HOST:PORT after the scheme", spec);
			return -1;
		}
		s->kind = spec[0] == 'u' ? SHIP_UDP : SHIP_TLS;
		util_strlcpy(s->host, host, sizeof(s->host));
		util_strlcpy(s->port, port, sizeof(s->port));
		return 0;
	}
	snprintf(why, len, "'%s': want unix:PATH, udp:HOST:PORT or tcp+tls:HOST:PORT", spec);
	return -1;
}

int
audit_ship_check_spec(const char *spec, char *why, size_t len)
{
	struct audit_ship s;

	memset(&s, 0, sizeof(s));
	return parse_spec(spec, &s, why, len);
}

int
audit_ship_open(const char *spec, const char *ca_file, const char *log_path,
    const char *ckpt_path, struct audit_ship **out, struct dmk_err *err)
{
	struct audit_ship *s;
	char why[512];

	*out = NULL;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	s->fd = -1;
	if (parse_spec(spec, s, why, sizeof(why)) != 0) {
		free(s);
		return dmk_errf(err, DMK_ERR_CONFIG, "audit_syslog: %s", why);
	}
	util_strlcpy(s->spec, spec, sizeof(s->spec));
	util_strlcpy(s->ca, ca_file ? ca_file : "", sizeof(s->ca));
	util_strlcpy(s->log, log_path, sizeof(s->log));
	util_strlcpy(s->ckpt, ckpt_path, sizeof(s->ckpt));
	*out = s;
	return 0;
}

/* SD-PARAM-VALUE: ", \ and ] escaped with a backslash (RFC 5424 6.3.3). */
static int
sd_escape(struct buf *b, const char *s, size_t n)
{
	size_t i;
	int r = 0;

	for (i = 0; i < n && r == 0; i++) {
		if (s[i] == '"' || s[i] == '\\' || s[i] == ']')
			r = buf_putc(b, '\\');
		if (r == 0)
			r = buf_putc(b, s[i]);
	}
	return r;
}

/* PRINTUSASCII, 1 to max characters, or "-". */
static int
put_token(struct buf *b, const char *s, size_t max)
{
	size_t i;
	int r = 0;

	if (s == NULL || s[0] == '\0')
		return buf_putc(b, '-');
	for (i = 0; s[i] && i < max && r == 0; i++)
		r = buf_putc(b, s[i] > 32 && s[i] < 127 ? s[i] : '_');
	return r;
}

int
audit_ship_format(const char *line, size_t len, struct buf *out, struct dmk_err *err)
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	char hash[65], pid[32];
	const char *action, *outcome, *tm, *host;
	json_t *j, *actor;
	int r;

	buf_reset(out);
	if ((j = json_loadb(line, len, 0, NULL)) == NULL || !json_is_object(j) ||
	    !json_is_integer(json_object_get(j, "seq"))) {
		json_decref(j);
		return dmk_errf(err, DMK_ERR_BADINPUT, "not an audit record");
	}
	SHA256((const unsigned char *)line, len, md);
	util_hex(md, sizeof(md), hash);
	action = json_string_value(json_object_get(j, "action"));
	outcome = json_string_value(json_object_get(j, "outcome"));
	tm = json_string_value(json_object_get(j, "time"));
	actor = json_object_get(j, "actor");
	host = json_string_value(json_object_get(actor, "host"));
	snprintf(pid, sizeof(pid), "%lld", (long long)json_integer_value(json_object_get(actor,
	    "pid")));
	/* <authpriv.notice>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID */
	if ((r = buf_puts(out, "<85>1 ")) == 0 && (r = put_token(out, tm, 64)) == 0 &&
	    (r = buf_putc(out, ' ')) == 0 && (r = put_token(out, host, 255)) == 0 &&
	    (r = buf_puts(out, " dmkagent ")) == 0 && (r = put_token(out, pid, 128)) == 0 &&
	    (r = buf_putc(out, ' ')) == 0 && (r = put_token(out, action, 32)) == 0 &&
	    (r = buf_printf(out, " [dmkagent@32473 seq=\"%lld\" hash=\"%s\" record=\"",
	    (long long)json_integer_value(json_object_get(j, "seq")), hash)) == 0 &&
	    (r = sd_escape(out, line, len)) == 0 &&
	    (r = buf_printf(out, "\"] %s %s", action ? action : "-", outcome ? outcome : "-")) == 0)
		r = 0;
	json_decref(j);
	if (r != 0)
		return dmk_errf(err, r, "audit record too large for syslog");
	return 0;
}

static int
set_timeouts(int fd)
{
	struct timeval tv = { SHIP_TIMEOUT_S, 0 };

	if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == -1)
		return -1;
	return 0;
}

static void
disconnect(struct audit_ship *s)
{
	char drain[512];
	int i;

	if (s->ssl != NULL) {
		/*
		 * close_notify, then read until the listener closes too: a socket
		 * closed with unread data (TLS 1.3 session tickets) is reset, and
		 * a reset can discard the last records before the listener reads
		 * them.  Bounded by the socket's receive timeout.
		 */
		if (SSL_shutdown(s->ssl) == 0) {
			shutdown(s->fd, SHUT_WR);
			for (i = 0; i < 1000 && SSL_read(s->ssl, drain, sizeof(drain)) > 0; i++)
				;
		}
		SSL_free(s->ssl);
		s->ssl = NULL;
	}
	if (s->fd != -1)
		close(s->fd);
	s->fd = -1;
}

static int
connect_inet(struct audit_ship *s, int socktype, struct dmk_err *err)
{
	struct addrinfo hints, *res = NULL, *ai;
	int rc, fd = -1, e = 0;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = socktype;
	if ((rc = getaddrinfo(s->host, s->port, &hints, &res)) != 0)
		return dmk_errf(err, DMK_ERR_UNREACHABLE, "audit_syslog %s: %s", s->spec,
		    gai_strerror(rc));
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		if ((fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol)) == -1)
			continue;
		if (set_timeouts(fd) == 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		e = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd == -1)
		return dmk_errf(err, DMK_ERR_UNREACHABLE, "audit_syslog %s: connect: %s", s->spec,
		    strerror(e ? e : ECONNREFUSED));
	s->fd = fd;
	return 0;
}

static int
connect_tls(struct audit_ship *s, struct dmk_err *err)
{
	unsigned char addr[16];
	unsigned long e;
	int r, is_ip = inet_pton(AF_INET, s->host, addr) == 1 ||
	    inet_pton(AF_INET6, s->host, addr) == 1;

	if (s->ctx == NULL) {
		if ((s->ctx = SSL_CTX_new(TLS_client_method())) == NULL)
			return dmk_errf(err, DMK_ERR_TLS, "audit_syslog: cannot make a TLS context");
		SSL_CTX_set_min_proto_version(s->ctx, TLS1_2_VERSION);
		SSL_CTX_set_verify(s->ctx, SSL_VERIFY_PEER, NULL);
		if ((s->ca[0] ? SSL_CTX_load_verify_locations(s->ctx, s->ca, NULL) :
		    SSL_CTX_set_default_verify_paths(s->ctx)) != 1) {
			SSL_CTX_free(s->ctx);
			s->ctx = NULL;
			return dmk_errf(err, DMK_ERR_TLS, "audit_syslog: cannot load CA %s",
			    s->ca[0] ? s->ca : "(system default)");
		}
	}
	if ((r = connect_inet(s, SOCK_STREAM, err)) != 0)
		return r;
	/* SNI only for a name (RFC 6066: not for an address literal). */
	if ((s->ssl = SSL_new(s->ctx)) == NULL || SSL_set_fd(s->ssl, s->fd) != 1 ||
	    (!is_ip && SSL_set_tlsext_host_name(s->ssl, s->host) != 1) ||
	    SSL_set1_host(s->ssl, s->host) != 1) {
		disconnect(s);
		return dmk_errf(err, DMK_ERR_TLS, "audit_syslog %s: TLS setup failed", s->spec);
	}
	ERR_clear_error();
	if (SSL_connect(s->ssl) != 1) {
		long vr = SSL_get_verify_result(s->ssl);
		e = ERR_get_error();
		disconnect(s);
		return dmk_errf(err, DMK_ERR_TLS, "audit_syslog %s: TLS handshake failed: %s",
		    s->spec, vr != X509_V_OK ? X509_verify_cert_error_string(vr) :
		    e ? ERR_reason_error_string(e) : "connection closed");
	}
	return 0;
}

static int
ship_connect(struct audit_ship *s, struct dmk_err *err)
{
	struct sockaddr_un sun;

	if (s->fd != -1)
		return 0;
	switch (s->kind) {
	case SHIP_UNIX:
		if ((s->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
			return dmk_errf(err, DMK_ERR_IO, "audit_syslog: socket: %s", strerror(errno));
		memset(&sun, 0, sizeof(sun));
		sun.sun_family = AF_UNIX;
		util_strlcpy(sun.sun_path, s->path, sizeof(sun.sun_path));
		if (set_timeouts(s->fd) == -1 ||
		    connect(s->fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
			int e = errno;
			disconnect(s);
			return dmk_errf(err, DMK_ERR_UNREACHABLE, "audit_syslog %s: %s", s->spec,
			    strerror(e));
		}
		return 0;
	case SHIP_UDP:
		return connect_inet(s, SOCK_DGRAM, err);
	case SHIP_TLS:
		return connect_tls(s, err);
	}
	return dmk_errf(err, DMK_ERR_INTERNAL, "audit_syslog: no transport");
}

static int
ship_send(struct audit_ship *s, const struct buf *msg, struct dmk_err *err)
{
	char hdr[32];
	ssize_t n;
	int r;

	if ((r = ship_connect(s, err)) != 0)
		return r;
	if (s->kind == SHIP_TLS) {
		/* RFC 5425 octet counting: MSG-LEN SP SYSLOG-MSG */
		int hl = snprintf(hdr, sizeof(hdr), "%zu ", msg->len);
		if (SSL_write(s->ssl, hdr, hl) != hl ||
		    SSL_write(s->ssl, msg->data, (int)msg->len) != (int)msg->len) {
			disconnect(s);
			return dmk_errf(err, DMK_ERR_UNREACHABLE, "audit_syslog %s: TLS write failed",
			    s->spec);
		}
		return 0;
	}
	n = send(s->fd, msg->data, msg->len, MSG_NOSIGNAL);
	if (n != (ssize_t)msg->len) {
		int e = errno;
		disconnect(s);
		return dmk_errf(err, DMK_ERR_UNREACHABLE, "audit_syslog %s: send: %s", s->spec,
		    n < 0 ? strerror(e) : "short write");
	}
	return 0;
}

/*
 * The delivery checkpoint: {"seq":N,"hash":"H","offset":BYTES,"ino":INO}:
 * the last record delivered, and where the next one starts in the log (a
 * hint: trusted only when the record there chains to H).  *seq 0: none.
 */
struct dcp {
	long long seq, offset, ino;
	char hash[65];
};

static int
ckpt_read(const struct audit_ship *s, struct dcp *d, struct dmk_err *err)
{
	json_t *j, *v;
	json_error_t je;
	long long *seq = &d->seq;

	memset(d, 0, sizeof(*d));
	if (access(s->ckpt, F_OK) != 0)
		return 0;
	if ((j = json_load_file(s->ckpt, JSON_REJECT_DUPLICATES, &je)) == NULL ||
	    !json_is_integer(v = json_object_get(j, "seq")) || json_integer_value(v) < 0) {
		json_decref(j);
		return dmk_errf(err, DMK_ERR_IO, "%s: not a delivery checkpoint (want "
		    "{\"seq\":N,...}); remove it to send the whole log again", s->ckpt);
	}
	*seq = json_integer_value(v);
	if (json_is_string(v = json_object_get(j, "hash")) && strlen(json_string_value(v)) == 64)
		util_strlcpy(d->hash, json_string_value(v), sizeof(d->hash));
	if (json_is_integer(v = json_object_get(j, "offset")) && json_integer_value(v) > 0)
		d->offset = json_integer_value(v);
	if (json_is_integer(v = json_object_get(j, "ino")))
		d->ino = json_integer_value(v);
	json_decref(j);
	return 0;
}

static int
ckpt_write(const struct audit_ship *s, const struct dcp *d, struct dmk_err *err)
{
	char tmp[4200], text[512];
	int fd, n;

	n = snprintf(text, sizeof(text), "{\"seq\":%lld,\"hash\":\"%s\",\"offset\":%lld,"
	    "\"ino\":%lld,\"to\":\"%s\"}\n", d->seq, d->hash, d->offset, d->ino, s->spec);
	snprintf(tmp, sizeof(tmp), "%s.tmp", s->ckpt);
	unlink(tmp);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) == -1)
		return dmk_errf(err, DMK_ERR_IO, "%s: %s", tmp, strerror(errno));
	if (write(fd, text, (size_t)n) != n || fsync(fd) == -1) {
		close(fd);
		unlink(tmp);
		return dmk_errf(err, DMK_ERR_IO, "%s: %s", tmp, strerror(errno));
	}
	close(fd);
	if (rename(tmp, s->ckpt) == -1) {
		unlink(tmp);
		return dmk_errf(err, DMK_ERR_IO, "%s: rename: %s", s->ckpt, strerror(errno));
	}
	return 0;
}

/* The record at the hinted offset chains to the last one delivered? */
static int
resume_at(FILE *f, const struct dcp *d)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	json_t *j;
	int ok = 0;

	if (d->offset <= 0 || d->hash[0] == '\0' || fseeko(f, (off_t)d->offset, SEEK_SET) != 0)
		return 0;
	if ((n = getline(&line, &cap, f)) == -1)
		ok = 1;    /* nothing after it yet */
	else if (n > 0 && line[n - 1] == '\n' &&
	    (j = json_loadb(line, (size_t)n - 1, 0, NULL)) != NULL) {
		const char *prev = json_string_value(json_object_get(j, "prev"));
		ok = prev != NULL && strcmp(prev, d->hash) == 0 &&
		    json_integer_value(json_object_get(j, "seq")) == d->seq + 1;
		json_decref(j);
	}
	free(line);
	return ok && fseeko(f, (off_t)d->offset, SEEK_SET) == 0;
}

int
audit_ship_flush(struct audit_ship *s, long long *sent, struct dmk_err *err)
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	long long seq, lineno = 0;
	struct dcp d, now;
	struct buf msg;
	struct stat st;
	FILE *f = NULL;
	int r, moved = 0, warned = 0;

	*sent = 0;
	buf_init(&msg, 4 * SHIP_LINE_MAX);
	if ((r = ckpt_read(s, &d, err)) != 0)
		goto out;
	if ((f = fopen(s->log, "r")) == NULL) {
		r = errno == ENOENT ? 0 : dmk_errf(err, DMK_ERR_IO, "%s: %s", s->log, strerror(errno));
		goto out;
	}
	now = d;
	if (fstat(fileno(f), &st) == 0)
		now.ino = (long long)st.st_ino;
	/* Where the last flush stopped, when the log there is the same; else from the top. */
	if (!(now.ino == d.ino && resume_at(f, &d))) {
		rewind(f);
		now.offset = 0;
	}
	while ((n = getline(&line, &cap, f)) != -1) {
		json_t *j;
		lineno++;
		if (n == 0 || line[n - 1] != '\n')
			break;          /* a record being written: the next flush */
		line[--n] = '\0';
		if (n > SHIP_LINE_MAX || (j = json_loadb(line, (size_t)n, 0, NULL)) == NULL) {
			r = dmk_errf(err, DMK_ERR_VERIFY, "%s: a line after seq %lld is not an audit "
			    "record: not shipped (run 'dmkagent audit verify')", s->log, now.seq);
			goto save;
		}
		seq = json_integer_value(json_object_get(j, "seq"));
		json_decref(j);
		if (seq <= d.seq) {
			now.offset = (long long)ftello(f);
			continue;
		}
		if (d.seq > 0 && !warned && seq > now.seq + 1) {
			log_warn("audit_syslog: records %lld to %lld are in a rotated log file, not "
			    "in %s: not shipped", now.seq + 1, seq - 1, s->log);
			warned = 1;
		}
		if ((r = audit_ship_format(line, (size_t)n, &msg, err)) != 0)
			goto save;
		if ((r = ship_send(s, &msg, err)) != 0)
			goto save;
		SHA256((const unsigned char *)line, (size_t)n, md);
		util_hex(md, sizeof(md), now.hash);
		now.seq = seq;
		now.offset = (long long)ftello(f);
		moved = 1;
		(*sent)++;
	}
save:
	if (moved) {
		struct dmk_err e2;
		if (ckpt_write(s, &now, &e2) != 0 && r == 0) {
			r = e2.code ? e2.code : DMK_ERR_IO;
			*err = e2;
		}
	}
out:
	if (f != NULL)
		fclose(f);
	free(line);
	buf_free(&msg);
	return r;
}

void
audit_ship_after(void *ship)
{
	struct audit_ship *s = ship;
	struct dmk_err err;
	long long sent;

	if (s == NULL || s->failed)
		return;
	dmk_err_clear(&err);
	if (audit_ship_flush(s, &sent, &err) != 0) {
		s->failed = 1;
		snprintf(s->failure, sizeof(s->failure), "%s", err.msg);
		log_warn("%s; the records wait in %s and are sent again at the end of the run "
		    "and by the next one", err.msg, s->ckpt);
	}
}

const char *
audit_ship_failure(const struct audit_ship *s)
{
	return s != NULL && s->failed ? s->failure : NULL;
}

void
audit_ship_close(struct audit_ship *s)
{
	struct dmk_err err;
	long long sent;

	if (s == NULL)
		return;
	if (s->failed) {
		/* Once more at the end: the listener may be back. */
		dmk_err_clear(&err);
		if (audit_ship_flush(s, &sent, &err) != 0)
			log_warn("%s; not delivered yet (kept in %s for the next run or 'dmkagent "
			    "audit ship')", err.msg, s->ckpt);
	}
	disconnect(s);
	SSL_CTX_free(s->ctx);
	free(s);
}
