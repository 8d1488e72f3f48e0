/*
 * relay.h: the in-process TLS relay between FreeTDS and one SQL Server.
 * See relay.c for why it exists.
 *
 * relay_start() makes the outer connection synchronously: TCP, our own
 * PRELOGIN (ENCRYPTION=ON, anything but ON/REQ in the answer is refused),
 * the TLS 1.2 handshake with the certificate verified against the CA and
 * the expected name.  With strict (TDS 8.0) the TLS handshake (1.2 or 1.3,
 * ALPN tds/8.0, the same checks) comes first and our PRELOGIN goes inside
 * it; FreeTDS's side is the same in both.  Only then does it listen on 127.0.0.1:<ephemeral>
 * for exactly one connection (FreeTDS), in a thread of its own that acts as
 * the server towards FreeTDS (TLS with an ephemeral certificate) and
 * forwards the decrypted TDS packets over the outer TLS leg.
 */
#ifndef DMK_SQL_RELAY_H
#define DMK_SQL_RELAY_H

#include "core/dmk.h"

struct relay;

struct relay_params {
	const char *name;          /* replica name, for messages */
	const char *host;
	int port;
	const char *tls_name;      /* name the certificate must carry */
	const char *ca_file;       /* NULL: system store */
	long connect_timeout;      /* seconds; 0 = 15 */
	int strict;                /* TDS 8.0: TLS (1.2/1.3, ALPN tds/8.0) before PRELOGIN */
};

/* The PEM file FreeTDS must trust (the relay's ephemeral certificate)
 * and the private directory it lives in; made once per process. */
int relay_global_init(const char **ca_pem, const char **dir, struct dmk_err *err);

int relay_start(const struct relay_params *p, struct relay **out, int *listen_port,
    struct dmk_err *err);
/* 1 once FreeTDS connected through us and finished its TLS handshake. */
int relay_inner_ready(struct relay *r);
/* The relay's own error after a failure (code 0 if none). */
void relay_get_error(struct relay *r, struct dmk_err *err);
/* 1 while both legs are open. */
int relay_alive(struct relay *r);
/* Cut both legs now, from any thread (the session is not to be used again);
 * relay_stop() still frees it. */
void relay_abort(struct relay *r);
void relay_stop(struct relay *r);

/* Counters, for tests. */
struct relay_stats {
	unsigned long long to_server, to_client;   /* plaintext bytes forwarded */
};
void relay_get_stats(struct relay *r, struct relay_stats *st);

#endif
