/*
 * http.c: the HTTP transport seam and its retry policy.  See http.h.
 *
 * The curl transport keeps one easy handle per client, so a run reuses one
 * connection per store.  Verification is always on.  Header lists are wiped
 * before curl frees them because they may carry a token.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "core/dmk.h"
#include "core/buf.h"
#include "core/secret.h"
#include "http.h"

void
http_response_init(struct http_response *r)
{
	memset(r, 0, sizeof(*r));
	/* A body may carry a secret value or a token: locked, wiped memory. */
	buf_init_locked(&r->body, 4u * 1024 * 1024);
}

void
http_response_free(struct http_response *r)
{
	buf_free(&r->body);
	secure_wipe(r->www_authenticate, sizeof(r->www_authenticate));
}

int
http_req_header(struct http_request *req, const char *line)
{
	if (req->nheaders >= HTTP_MAX_HEADERS)
		return DMK_ERR_TOOBIG;
	req->headers[req->nheaders++] = line;
	return 0;
}

long long
http_parse_retry_after(const char *v, time_t now)
{
	struct tm tm;
	char *end;
	long long s;

	if (v == NULL || *v == '\0')
		return -1;
	if (isdigit((unsigned char)*v)) {
		s = strtoll(v, &end, 10);
		if (*end != '\0' && !isspace((unsigned char)*end))
			return -1;
		/* Held to HTTP_RETRY_AFTER_MAX s: the caller adds it to a time. */
		return (s > HTTP_RETRY_AFTER_MAX ? HTTP_RETRY_AFTER_MAX : s) * 1000;
	}
	memset(&tm, 0, sizeof(tm));
	if (strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm) == NULL)
		return -1;
	s = (long long)timegm(&tm) - (long long)now;
	if (s > HTTP_RETRY_AFTER_MAX)
		s = HTTP_RETRY_AFTER_MAX;
	return s > 0 ? s * 1000 : 0;
}

int
http_urlencode(struct buf *out, const char *s, size_t len, int keep_slash)
{
	static const char hx[] = "0123456789ABCDEF";
	size_t i;
	int r = 0;

	for (i = 0; i < len && r == 0; i++) {
		unsigned char c = (unsigned char)s[i];
		if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
		    (keep_slash && c == '/'))
			r = buf_putc(out, (char)c);
		else {
			char e[3] = { '%', hx[c >> 4], hx[c & 15] };
			r = buf_append(out, e, 3);
		}
	}
	return r;
}

/* ---- curl transport ---- */

struct curl_ctx {
	CURL *h;
	struct http_tls tls;
	long connect_timeout_ms, timeout_ms;
};

struct hdr_state {
	struct http_response *resp;
};

static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct http_response *r = ud;
	size_t n = size * nmemb;

	if (buf_append(&r->body, ptr, n) != 0)
		return 0;  /* too big: curl aborts the transfer */
	return n;
}

static void
copy_header_value(char *dst, size_t dlen, const char *v, size_t vlen)
{
	while (vlen > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		vlen--;
	}
	while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
		vlen--;
	if (vlen >= dlen)
		vlen = dlen - 1;
	memcpy(dst, v, vlen);
	dst[vlen] = '\0';
}

static size_t
header_cb(char *buffer, size_t size, size_t nitems, void *ud)
{
	struct http_response *r = ud;
	size_t n = size * nitems;
	static const struct {
		const char *name;
		size_t off, len;
	} want[] = {
		{ "content-type:", offsetof(struct http_response, content_type), 128 },
		{ "retry-after:", offsetof(struct http_response, retry_after), 64 },
		{ "www-authenticate:", offsetof(struct http_response, www_authenticate), 2048 },
		{ "location:", offsetof(struct http_response, location), 1024 },
	};
	size_t i;

	/* A new status line (redirect, 100-continue): forget earlier headers. */
	if (n > 5 && strncmp(buffer, "HTTP/", 5) == 0) {
		r->content_type[0] = r->retry_after[0] = r->www_authenticate[0] =
		    r->location[0] = '\0';
		return n;
	}
	for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		size_t l = strlen(want[i].name);
		if (n > l && strncasecmp(buffer, want[i].name, l) == 0)
			copy_header_value((char *)r + want[i].off, want[i].len, buffer + l, n - l);
	}
	return n;
}

static void
wipe_slist(struct curl_slist *l)
{
	for (; l != NULL; l = l->next)
		if (l->data)
			secure_wipe(l->data, strlen(l->data));
}

/*
 * OpenSSL frees a connection's idle record buffers instead of keeping them
 * (and the last record they held: a token, a secret value) for its life;
 * wipefree's free() wipes them as they go.
 */
static CURLcode
ssl_ctx_cb(CURL *h, void *sslctx, void *arg)
{
	(void)h;
	(void)arg;
	SSL_CTX_set_mode((SSL_CTX *)sslctx, SSL_MODE_RELEASE_BUFFERS);
	return CURLE_OK;
}

static int
curl_perform(void *vctx, const struct http_request *req, struct http_response *resp,
    struct dmk_err *err)
{
	struct curl_ctx *c = vctx;
	struct curl_slist *hl = NULL, *t;
	struct curl_blob keyblob;
	CURLcode cc;
	size_t i;
	int r = 0;

	curl_easy_reset(c->h);
	curl_easy_setopt(c->h, CURLOPT_URL, req->url);
	/* https only; plain http solely for the link-local metadata address */
	if (req->allow_imds_http && strncmp(req->url, "http://169.254.169.254/", 23) == 0)
		curl_easy_setopt(c->h, CURLOPT_PROTOCOLS_STR, "http");
	else
		curl_easy_setopt(c->h, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(c->h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c->h, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(c->h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	curl_easy_setopt(c->h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c->h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c->h, CURLOPT_USERAGENT, "dmkagent/" DMK_VERSION);
	curl_easy_setopt(c->h, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
	curl_easy_setopt(c->h, CURLOPT_TIMEOUT_MS, c->timeout_ms);
	curl_easy_setopt(c->h, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(c->h, CURLOPT_WRITEDATA, resp);
	curl_easy_setopt(c->h, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(c->h, CURLOPT_HEADERDATA, resp);
	/* CURLE_NOT_BUILT_IN with a TLS backend other than OpenSSL: nothing to set. */
	(void)curl_easy_setopt(c->h, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_cb);
	if (c->tls.ca_file[0])
		curl_easy_setopt(c->h, CURLOPT_CAINFO, c->tls.ca_file);
	if (c->tls.ca_path[0])
		curl_easy_setopt(c->h, CURLOPT_CAPATH, c->tls.ca_path);
	if (c->tls.client_cert_file[0]) {
		curl_easy_setopt(c->h, CURLOPT_SSLCERT, c->tls.client_cert_file);
		curl_easy_setopt(c->h, CURLOPT_SSLCERTTYPE, "PEM");
	}
	if (c->tls.client_key != NULL) {
		keyblob.data = (void *)secret_reveal(c->tls.client_key);
		keyblob.len = secret_len(c->tls.client_key);
		keyblob.flags = CURL_BLOB_NOCOPY;
		curl_easy_setopt(c->h, CURLOPT_SSLKEY_BLOB, &keyblob);
		curl_easy_setopt(c->h, CURLOPT_SSLKEYTYPE, "PEM");
	}
	for (i = 0; i < req->nheaders; i++) {
		if ((t = curl_slist_append(hl, req->headers[i])) == NULL) {
			r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
			goto out;
		}
		hl = t;
	}
	/* curl adds "Expect: 100-continue" for large bodies; we never want it. */
	if ((t = curl_slist_append(hl, "Expect:")) != NULL)
		hl = t;
	curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, hl);

	if (strcmp(req->method, "GET") == 0)
		curl_easy_setopt(c->h, CURLOPT_HTTPGET, 1L);
	else if (strcmp(req->method, "HEAD") == 0)
		curl_easy_setopt(c->h, CURLOPT_NOBODY, 1L);
	else {
		curl_easy_setopt(c->h, CURLOPT_CUSTOMREQUEST, req->method);
		if (req->body != NULL) {
			curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, req->body);
			curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
		} else if (strcmp(req->method, "POST") == 0 || strcmp(req->method, "PUT") == 0 ||
		    strcmp(req->method, "PATCH") == 0) {
			curl_easy_setopt(c->h, CURLOPT_POSTFIELDS, "");
			curl_easy_setopt(c->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
		}
	}

	cc = curl_easy_perform(c->h);
	if (cc != CURLE_OK) {
		int code = DMK_ERR_UNREACHABLE;
		switch (cc) {
		case CURLE_OPERATION_TIMEDOUT:
			code = DMK_ERR_TIMEOUT;
			break;
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_CIPHER:
		case CURLE_SSL_ISSUER_ERROR:
		case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
			code = DMK_ERR_TLS;
			break;
		case CURLE_WRITE_ERROR:
			code = DMK_ERR_TOOBIG;
			break;
		case CURLE_UNSUPPORTED_PROTOCOL:
		case CURLE_URL_MALFORMAT:
			code = DMK_ERR_CONFIG;
			break;
		default:
			break;
		}
		resp->status = 0;
		r = dmk_errf(err, code, "%s %s: %s", req->method, req->url, curl_easy_strerror(cc));
		goto out;
	}
	curl_easy_getinfo(c->h, CURLINFO_RESPONSE_CODE, &resp->status);
out:
	curl_easy_setopt(c->h, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(c->h, CURLOPT_SSLKEY_BLOB, NULL);
	wipe_slist(hl);
	curl_slist_free_all(hl);
	return r;
}

static void
curl_close(void *vctx)
{
	struct curl_ctx *c = vctx;

	if (c == NULL)
		return;
	if (c->h)
		curl_easy_cleanup(c->h);
	free(c);
}

static const struct http_transport_ops curl_ops = { curl_perform, curl_close };

int
http_client_curl(struct http_client *cl, const struct http_tls *tls,
    long connect_timeout_ms, long timeout_ms, struct dmk_err *err)
{
	struct curl_ctx *c;

	memset(cl, 0, sizeof(*cl));
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	if ((c->h = curl_easy_init()) == NULL) {
		free(c);
		return dmk_errf(err, DMK_ERR_INTERNAL, "curl_easy_init failed");
	}
	if (tls)
		c->tls = *tls;
	c->connect_timeout_ms = connect_timeout_ms > 0 ? connect_timeout_ms : 10000;
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : 30000;
	cl->ops = &curl_ops;
	cl->ctx = c;
	cl->retry.max_attempts = 5;
	cl->retry.base_delay_ms = 250;
	cl->retry.max_delay_ms = 8000;
	cl->retry.max_total_ms = 60000;
	cl->sleep_ms = util_sleep_ms;
	return 0;
}

void
http_client_close(struct http_client *c)
{
	if (c->ops && c->ops->close)
		c->ops->close(c->ctx);
	c->ops = NULL;
	c->ctx = NULL;
}

static int
default_retry_status(long status)
{
	return status == 429 || status >= 500;
}

/* Full jitter: a random delay in [d/2, d]. */
static long long
jitter(long long d)
{
	unsigned int r = 0;

	if (d <= 1)
		return d;
	RAND_bytes((unsigned char *)&r, sizeof(r));
	return d / 2 + (long long)(r % (unsigned)(d / 2 + 1));
}

int
http_do(struct http_client *c, struct http_request *req, struct http_response *resp,
    struct dmk_err *err)
{
	int (*retry_status)(long) = req->retry_status ? req->retry_status : default_retry_status;
	long long start = util_now_ms(), delay, ra;
	int attempt, r = 0, max = c->retry.max_attempts > 0 ? c->retry.max_attempts : 1;

	if (req->no_retry)
		max = 1;
	for (attempt = 1; ; attempt++) {
		buf_reset(&resp->body);
		resp->status = 0;
		resp->attempts = attempt;
		r = c->ops->perform(c->ctx, req, resp, err);
		if (r == 0 && !retry_status(resp->status))
			return 0;
		if (r != 0 && r != DMK_ERR_UNREACHABLE && r != DMK_ERR_TIMEOUT)
			return r;   /* TLS, config, size: retrying will not help */
		if (attempt >= max)
			break;
		delay = c->retry.base_delay_ms << (attempt - 1);
		if (delay > c->retry.max_delay_ms || delay <= 0)
			delay = c->retry.max_delay_ms;
		delay = jitter(delay);
		if (r == 0 && (ra = http_parse_retry_after(resp->retry_after, time(NULL))) >= 0)
			delay = ra;  /* the server said when */
		if (util_now_ms() - start + delay > c->retry.max_total_ms)
			break;
		log_debug("%s %s: %s; retrying in %lld ms (attempt %d of %d)", req->method,
		    req->url, r == 0 ? "temporary failure" : "connection failed", delay,
		    attempt + 1, max);
		c->sleep_ms(delay);
		c->slept_ms += delay;
	}
	if (r == 0)
		return 0;  /* the last answer stands; the caller reports its status */
	return r;
}

/* ---- replay transport ---- */

static char *
dupstr(const char *s)
{
	return s ? strdup(s) : NULL;
}

static int
replay_perform(void *vctx, const struct http_request *req, struct http_response *resp,
    struct dmk_err *err)
{
	struct http_replay *rp = vctx;
	const struct http_replay_entry *e;

	if (rp->nseen < 64) {
		struct buf h;
		size_t i;
		buf_init(&h, 0);
		for (i = 0; i < req->nheaders; i++) {
			buf_puts(&h, req->headers[i]);
			buf_putc(&h, '\n');
		}
		rp->seen_method[rp->nseen] = dupstr(req->method);
		rp->seen_url[rp->nseen] = dupstr(req->url);
		rp->seen_body[rp->nseen] = req->body ? strndup(req->body, req->body_len) : NULL;
		rp->seen_headers[rp->nseen] = dupstr(h.data ? h.data : "");
		buf_free(&h);
		rp->nseen++;
	}
	if (rp->next >= rp->n)
		return dmk_errf(err, DMK_ERR_UNREACHABLE, "%s %s: replay exhausted",
		    req->method, req->url);
	e = &rp->entries[rp->next++];
	if (e->status == 0)
		return dmk_errf(err, DMK_ERR_UNREACHABLE, "%s %s: connection refused (replay)",
		    req->method, req->url);
	resp->status = e->status;
	if (e->body)
		buf_puts(&resp->body, e->body);
	if (e->headers) {
		const char *p = e->headers;
		while (*p) {
			const char *nl = strchr(p, '\n');
			size_t n = nl ? (size_t)(nl - p) : strlen(p);
			header_cb((char *)p, 1, n, resp);
			p += n + (nl != NULL);
		}
	}
	return 0;
}

static void
replay_close(void *vctx)
{
	(void)vctx;
}

static const struct http_transport_ops replay_ops = { replay_perform, replay_close };

static void
no_sleep(long long ms)
{
	(void)ms;
}

void
http_client_replay(struct http_client *c, struct http_replay *r)
{
	memset(c, 0, sizeof(*c));
	c->ops = &replay_ops;
	c->ctx = r;
	c->retry.max_attempts = 5;
	c->retry.base_delay_ms = 250;
	c->retry.max_delay_ms = 8000;
	c->retry.max_total_ms = 60000;
	c->sleep_ms = no_sleep;
}

void
http_replay_free(struct http_replay *r)
{
	size_t i;

	for (i = 0; i < r->nseen; i++) {
		free(r->seen_method[i]);
		free(r->seen_url[i]);
		free(r->seen_body[i]);
		free(r->seen_headers[i]);
	}
	r->nseen = 0;
}
