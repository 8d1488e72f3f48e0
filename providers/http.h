/*
 * http.h: the small HTTP transport every secret store talks through.
 *
 * A store builds a struct http_request and calls http_do(), which applies the
 * retry policy (exponential backoff with jitter, Retry-After honoured,
 * bounded by attempts and by total time) over a transport.  The transport is
 * a seam: the real one is libcurl (one reused connection per client, TLS
 * always verified); unit tests install a replay transport that answers from
 * recorded responses and records the requests it saw.
 *
 * Invariants:
 *  - TLS peer and host verification are always on; there is no switch.
 *  - Request bodies and headers may carry secrets (tokens, passwords): they
 *    are never logged, and header copies are wiped when released.
 *  - Response bodies live in a struct buf, which wipes on free.
 *
 * Ownership: a request only points at its method, URL, headers and body; the
 * caller owns them and keeps them alive for the call.  A response is the
 * caller's: http_response_init() before, http_response_free() after (wipes
 * the body).  A client is the store's: http_client_close() releases the
 * transport; tls->client_key is borrowed, never freed here.
 */
#ifndef DMK_HTTP_H
#define DMK_HTTP_H

#include "core/dmk.h"
#include "core/buf.h"

struct secret;

#define HTTP_MAX_HEADERS 16

struct http_request {
	const char *method;              /* GET PUT POST PATCH DELETE LIST HEAD */
	const char *url;
	/* "Name: value" lines; may hold a token; wiped after the call. */
	const char *headers[HTTP_MAX_HEADERS];
	size_t nheaders;
	const char *body;                /* may hold a secret; never logged */
	size_t body_len;
	/*
	 * Which answers are worth retrying (besides connection errors and
	 * timeouts, always retried).  NULL means 5xx and 429.
	 */
	int (*retry_status)(long status);
	int no_retry;                    /* a non-idempotent call: never retry */
	/*
	 * The one plain-HTTP exception: Azure's instance metadata service is
	 * http://169.254.169.254 (link-local, unroutable, answered by the
	 * host).  Set only for the built-in IMDS address; any other URL with
	 * this flag is still refused unless it is https.
	 */
	int allow_imds_http;
};

struct http_response {
	long status;                     /* 0 when no answer arrived */
	struct buf body;                 /* wiped on free */
	char content_type[128];
	char retry_after[64];            /* raw Retry-After, if any */
	char www_authenticate[2048];     /* raw WWW-Authenticate, if any */
	char location[1024];
	int attempts;                    /* how many tries http_do made */
};

struct http_tls {
	char ca_file[1024];              /* empty: system default store */
	char ca_path[1024];
	char client_cert_file[1024];     /* PEM certificate (chain) */
	const struct secret *client_key; /* PEM private key, not owned */
};

struct http_retry {
	int max_attempts;                /* total tries, >= 1 */
	long long base_delay_ms;         /* first backoff */
	long long max_delay_ms;          /* cap on one backoff */
	long long max_total_ms;          /* cap on the whole call */
};

struct http_transport_ops {
	/* One try.  Returns 0 when an HTTP answer arrived (any status). */
	int (*perform)(void *ctx, const struct http_request *req,
	    struct http_response *resp, struct dmk_err *err);
	void (*close)(void *ctx);
};

struct http_client {
	const struct http_transport_ops *ops;
	void *ctx;
	struct http_retry retry;
	/* Sleep hook, so unit tests run retries without waiting. */
	void (*sleep_ms)(long long ms);
	long long slept_ms;              /* total backoff taken, for tests */
};

void http_response_init(struct http_response *r);
void http_response_free(struct http_response *r);

/*
 * Real transport: libcurl, TLS verified against tls (CA file/dir or the
 * system store), connect and total timeouts in milliseconds.
 */
int http_client_curl(struct http_client *c, const struct http_tls *tls,
    long connect_timeout_ms, long timeout_ms, struct dmk_err *err);
void http_client_close(struct http_client *c);

/* Send with the retry policy.  0 when an answer arrived (check status). */
int http_do(struct http_client *c, struct http_request *req,
    struct http_response *resp, struct dmk_err *err);

/* Add a header line.  Only the pointer is kept: the caller owns the string,
 * keeps it alive until http_do() returns, and wipes it (it may hold a token). */
int http_req_header(struct http_request *req, const char *line);

/* Parse Retry-After (seconds or HTTP date) into milliseconds; -1 if absent.
 * A value above HTTP_RETRY_AFTER_MAX seconds counts as that many. */
#define HTTP_RETRY_AFTER_MAX 1000000000LL
long long http_parse_retry_after(const char *v, time_t now);

/* Percent-encode for a URL path segment or form value into out. */
int http_urlencode(struct buf *out, const char *s, size_t len, int keep_slash);

/* ---- replay transport, for unit tests ---- */
struct http_replay_entry {
	long status;                     /* 0: simulate a connection failure */
	const char *body;
	const char *headers;             /* "Name: value\n..." */
};
struct http_replay {
	const struct http_replay_entry *entries;
	size_t n, next;
	/* What the client sent, in order (method, url, body); owned copies. */
	char *seen_method[64];
	char *seen_url[64];
	char *seen_body[64];
	char *seen_headers[64];          /* joined with \n */
	size_t nseen;
};
void http_client_replay(struct http_client *c, struct http_replay *r);
void http_replay_free(struct http_replay *r);

#endif
