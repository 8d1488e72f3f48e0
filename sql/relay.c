/*
 * relay.c: every byte between FreeTDS and SQL Server goes through here, so
 * that a session is TLS end to end and cannot be downgraded.
 *
 * Why not FreeTDS's own TLS.  With `encryption = require`, FreeTDS 1.3
 * sends ENCRYPTION=ON in its PRELOGIN but accepts an answer of ENCRYPT_OFF
 * and then does "login-only" encryption: LOGIN7 goes inside TLS, and the
 * rest of the session (our RPCs carrying DMK passwords) in plaintext.  An
 * attacker in the path only has to rewrite one byte of the PRELOGIN
 * answer.  db-lib has no API to read what was negotiated, so we cannot
 * detect it after the fact either.
 *
 * Why not a probe first (a separate connection that checks the PRELOGIN
 * answer, then let FreeTDS connect).  The attacker answers the probe
 * honestly and downgrades only the next connection.  The check has to be
 * made on the connection that carries the session.
 *
 * So FreeTDS never talks to the server.  We make the connection ourselves:
 * our PRELOGIN with ENCRYPTION=ON, refuse any answer but ON or REQ, the
 * TLS 1.2 handshake with OpenSSL inside PRELOGIN packets, the certificate
 * verified against the configured CA and the expected name, all before a
 * single byte of FreeTDS's login exists.  Then FreeTDS connects to us on
 * 127.0.0.1 (exactly one connection is accepted) and we play the server:
 * PRELOGIN answered with ENCRYPT_ON, TLS 1.2 with an ephemeral certificate
 * that only this process trusts (FreeTDS's `ca file`), so the login and
 * the passwords are not in plaintext even on loopback.  After both
 * handshakes the relay decrypts what FreeTDS sends and re-encrypts it to
 * the server, and back; it does not parse TDS any more.  FreeTDS's own
 * PRELOGIN is not forwarded; its LOGIN7 and everything after go unchanged.
 *
 * Both legs are capped at TLS 1.2: TDS 7.x runs TLS <= 1.2 on SQL Server,
 * and FreeTDS 1.3.17 with GnuTLS breaks with TLS 1.3 (its Finished ends up
 * inside the first LOGIN7 record).
 *
 * Plaintext passes through one struct buf per relay (wiped on free) and
 * is wiped after each chunk is forwarded.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "core/dmk.h"
#include "core/buf.h"
#include "relay.h"
#include "relay_int.h"

#define TDS_PRELOGIN    RELAY_TDS_PRELOGIN
#define TDS_REPLY       RELAY_TDS_REPLY
#define TDS_EOM         RELAY_TDS_EOM
#define TDS_HDR         RELAY_TDS_HDR
#define TDS_OUT_PKT     4096    /* our packet size before negotiation */
#define HANDSHAKE_MAX   RELAY_HANDSHAKE_MAX

#define ENC_OFF         0x00
#define ENC_ON          0x01
#define ENC_NOT_SUP     0x02
#define ENC_REQ         0x03
#define ENC_STRICT      0x04    /* TDS 8.0: PRELOGIN inside TLS */

#define PLAINTEXT_CHUNK 16384

struct leg {
	int fd;
	SSL *ssl;
	BIO *rb, *wb;           /* memory BIOs: network side of the SSL */
};

struct relay {
	char label[600];        /* "NAME (host:port)" for messages */
	struct leg outer, inner;
	int lfd;                /* listening socket until FreeTDS connects */
	int wake[2];            /* relay_stop() wakes the thread */
	long timeout_ms;
	unsigned char srv_version[6];
	pthread_t thread;
	int thread_started;
	pthread_mutex_t mu;
	int inner_ready, alive, stopping;
	struct dmk_err err;
	struct relay_stats stats;
	struct buf pt;          /* plaintext scratch, wiped */
	const char *why;        /* static text: what the framer refused */
	char peer_names[300];   /* a refused certificate's names, for the message */
};

/* ---- the process-wide part: private directory, ephemeral certificate ---- */

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_init_rc;
static char g_init_msg[256];
static char g_dir[256];
static char g_ca_pem[300];
static SSL_CTX *g_server_ctx;

static void
g_cleanup(void)
{
	char p[320];

	if (g_dir[0] == '\0')
		return;
	unlink(g_ca_pem);
	snprintf(p, sizeof(p), "%s/freetds.conf", g_dir);
	unlink(p);
	rmdir(g_dir);
}

static int
add_ext(X509 *x, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ex;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	if ((ex = X509V3_EXT_conf_nid(NULL, &ctx, nid, value)) == NULL)
		return -1;
	X509_add_ext(x, ex, -1);
	X509_EXTENSION_free(ex);
	return 0;
}

static void
g_init(void)
{
	EVP_PKEY *key = NULL;
	X509 *x = NULL;
	X509_NAME *nm;
	BIGNUM *bn = NULL;
	FILE *f = NULL;
	const char *tmp;
	int fd;

	g_init_rc = DMK_ERR_TLS;
	tmp = getenv("TMPDIR");
	if (tmp == NULL || *tmp != '/' || strlen(tmp) > 150)
		tmp = "/tmp";
	snprintf(g_dir, sizeof(g_dir), "%s/dmkagent-tds.XXXXXX", tmp);
	if (mkdtemp(g_dir) == NULL) {
		snprintf(g_init_msg, sizeof(g_init_msg), "cannot create a private directory in %s: %s",
		    tmp, strerror(errno));
		g_dir[0] = '\0';
		g_init_rc = DMK_ERR_IO;
		return;
	}
	(void)chmod(g_dir, 0700);
	atexit(g_cleanup);
	snprintf(g_ca_pem, sizeof(g_ca_pem), "%s/relay-ca.pem", g_dir);

	if ((key = EVP_EC_gen("P-256")) == NULL || (x = X509_new()) == NULL ||
	    (bn = BN_new()) == NULL)
		goto fail;
	if (!X509_set_version(x, 2) || !BN_rand(bn, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
	    !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
		goto fail;
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_time_adj_ex(X509_getm_notAfter(x), 3650, 0, NULL);
	nm = X509_get_subject_name(x);
	if (!X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC,
	    (const unsigned char *)"127.0.0.1", -1, -1, 0) || !X509_set_issuer_name(x, nm) ||
	    !X509_set_pubkey(x, key))
		goto fail;
	if (add_ext(x, NID_basic_constraints, "critical,CA:FALSE") ||
	    add_ext(x, NID_key_usage, "critical,digitalSignature") ||
	    add_ext(x, NID_ext_key_usage, "serverAuth") ||
	    add_ext(x, NID_subject_alt_name, "IP:127.0.0.1") ||
	    add_ext(x, NID_subject_key_identifier, "hash"))
		goto fail;
	if (!X509_sign(x, key, EVP_sha256()))
		goto fail;

	if ((fd = open(g_ca_pem, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) == -1 ||
	    (f = fdopen(fd, "w")) == NULL) {
		snprintf(g_init_msg, sizeof(g_init_msg), "cannot write %s: %s", g_ca_pem,
		    strerror(errno));
		g_init_rc = DMK_ERR_IO;
		goto out;
	}
	if (!PEM_write_X509(f, x) || fclose(f) != 0) {
		f = NULL;
		goto fail;
	}
	f = NULL;

	if ((g_server_ctx = SSL_CTX_new(TLS_server_method())) == NULL ||
	    !SSL_CTX_set_min_proto_version(g_server_ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_set_max_proto_version(g_server_ctx, TLS1_2_VERSION) ||
	    SSL_CTX_use_certificate(g_server_ctx, x) != 1 ||
	    SSL_CTX_use_PrivateKey(g_server_ctx, key) != 1)
		goto fail;
	SSL_CTX_set_options(g_server_ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(g_server_ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_cache_mode(g_server_ctx, SSL_SESS_CACHE_OFF);
	g_init_rc = 0;
	goto out;
fail:
	snprintf(g_init_msg, sizeof(g_init_msg), "cannot make the relay's ephemeral certificate: %s",
	    ERR_reason_error_string(ERR_peek_last_error()) ? ERR_reason_error_string(ERR_peek_last_error()) : "OpenSSL error");
	ERR_clear_error();
out:
	if (f != NULL)
		fclose(f);
	BN_free(bn);
	X509_free(x);
	EVP_PKEY_free(key);   /* the context keeps its own reference */
}

int
relay_global_init(const char **ca_pem, const char **dir, struct dmk_err *err)
{
	pthread_once(&g_once, g_init);
	if (g_init_rc != 0)
		return dmk_errf(err, g_init_rc, "%s", g_init_msg);
	if (ca_pem)
		*ca_pem = g_ca_pem;
	if (dir)
		*dir = g_dir;
	return 0;
}

/* ---- socket I/O with deadlines ---- */

/* Wait for ev on fd (and for the wake pipe).  1 ready, 0 timeout, -1 woken/error. */
static int
wait_fd(struct relay *r, int fd, short ev, long long deadline)
{
	struct pollfd p[2];
	long long now;
	int n, ms;

	for (;;) {
		ms = -1;
		if (deadline) {
			now = util_now_ms();
			if (now >= deadline)
				return 0;
			ms = (int)(deadline - now);
		}
		p[0].fd = fd;
		p[0].events = ev;
		p[0].revents = 0;
		p[1].fd = r->wake[0];
		p[1].events = POLLIN;
		p[1].revents = 0;
		n = poll(p, 2, ms);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || p[1].revents)
			return -1;
		if (n == 0)
			return 0;
		return 1;
	}
}

enum { IO_OK = 0, IO_EOF = -1, IO_TIMEOUT = -2, IO_ERR = -3, IO_PROTO = -4, IO_TOOBIG = -5 };

static int
send_all(struct relay *r, int fd, const void *data, size_t n, long long deadline)
{
	const unsigned char *p = data;
	ssize_t k;
	int w;

	while (n > 0) {
		if ((w = wait_fd(r, fd, POLLOUT, deadline)) <= 0)
			return w == 0 ? IO_TIMEOUT : IO_ERR;
		k = send(fd, p, n, MSG_NOSIGNAL);
		if (k < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return IO_ERR;
		}
		p += k;
		n -= (size_t)k;
	}
	return IO_OK;
}

static int
recv_exact(struct relay *r, int fd, void *data, size_t n, long long deadline)
{
	unsigned char *p = data;
	ssize_t k;
	int w;

	while (n > 0) {
		if ((w = wait_fd(r, fd, POLLIN, deadline)) <= 0)
			return w == 0 ? IO_TIMEOUT : IO_ERR;
		k = recv(fd, p, n, 0);
		if (k == 0)
			return IO_EOF;
		if (k < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return IO_ERR;
		}
		p += k;
		n -= (size_t)k;
	}
	return IO_OK;
}

/* ---- TDS framing (pure: relay_int.h) ---- */

int
relay_tds_header(const unsigned char *h, int first_type, size_t have, size_t max,
    struct relay_tds_pkt *pkt, const char **why)
{
	size_t len = ((size_t)h[2] << 8) | h[3];

	*why = NULL;
	if (len < RELAY_TDS_HDR) {
		*why = "a packet length shorter than the packet header";
		return DMK_ERR_PROTOCOL;
	}
	if (first_type < 0 && h[0] != RELAY_TDS_PRELOGIN && h[0] != RELAY_TDS_REPLY) {
		*why = "a packet that is neither PRELOGIN nor a reply";
		return DMK_ERR_PROTOCOL;
	}
	if (first_type >= 0 && h[0] != first_type) {
		*why = "a packet type that changes within one message";
		return DMK_ERR_PROTOCOL;
	}
	if (have > max || len - RELAY_TDS_HDR > max - have) {
		*why = "a handshake message larger than 256 KiB";
		return DMK_ERR_TOOBIG;
	}
	pkt->type = h[0];
	pkt->eom = (h[1] & RELAY_TDS_EOM) != 0;
	pkt->payload = len - RELAY_TDS_HDR;
	return 0;
}

void
relay_framer_init(struct relay_framer *f, size_t max)
{
	memset(f, 0, sizeof(*f));
	f->type = -1;
	f->msg_type = -1;
	f->max = max;
}

int
relay_tds_frame(struct relay_framer *f, const unsigned char *in, size_t n, size_t *used,
    struct buf *msg, const char **why)
{
	struct relay_tds_pkt pkt;
	size_t k, u = 0;
	int rc;

	*why = NULL;
	*used = 0;
	for (;;) {
		if (f->hdr_len < RELAY_TDS_HDR) {
			k = RELAY_TDS_HDR - f->hdr_len;
			if (k > n - u)
				k = n - u;
			if (k > 0)
				memcpy(f->hdr + f->hdr_len, in + u, k);
			f->hdr_len += k;
			u += k;
			*used = u;
			if (f->hdr_len < RELAY_TDS_HDR)
				return 0;
			if ((rc = relay_tds_header(f->hdr, f->type, msg->len, f->max, &pkt, why)) != 0)
				return rc;
			if (f->type < 0)
				f->type = pkt.type;
			f->left = pkt.payload;
			f->eom = pkt.eom;
		}
		k = f->left < n - u ? f->left : n - u;
		if (k > 0 && buf_append(msg, in + u, k) != 0) {
			*why = "a handshake message larger than its buffer";
			return DMK_ERR_TOOBIG;
		}
		u += k;
		f->left -= k;
		*used = u;
		if (f->left > 0)
			return 0;
		f->hdr_len = 0;   /* this packet is complete */
		if (f->eom) {
			f->msg_type = f->type;
			f->type = -1;
			return 1;
		}
	}
}

/*
 * Read one TDS message (packets up to EOM); *type is the first packet's.
 * Exactly the message's bytes are read (what follows may be raw TLS), each
 * header checked by the framer before a byte of its payload is.
 */
static int
read_message(struct relay *r, int fd, struct buf *out, int *type, long long deadline)
{
	unsigned char chunk[4096];
	struct relay_framer f;
	const char *why;
	size_t need, used;
	int rc;

	buf_reset(out);
	relay_framer_init(&f, out->max);
	for (;;) {
		need = f.hdr_len < RELAY_TDS_HDR ? RELAY_TDS_HDR - f.hdr_len : f.left;
		if (need > sizeof(chunk))
			need = sizeof(chunk);
		if ((rc = recv_exact(r, fd, chunk, need, deadline)) != IO_OK)
			break;
		rc = relay_tds_frame(&f, chunk, need, &used, out, &why);
		if (rc == 1) {
			*type = f.msg_type;
			rc = IO_OK;
			break;
		}
		if (rc < 0) {
			r->why = why;
			rc = rc == DMK_ERR_TOOBIG ? IO_TOOBIG : IO_PROTO;
			break;
		}
	}
	OPENSSL_cleanse(chunk, sizeof(chunk));
	return rc;
}

static int
send_message(struct relay *r, int fd, int type, const void *data, size_t n, long long deadline)
{
	unsigned char pkt[TDS_OUT_PKT];
	const unsigned char *p = data;
	unsigned char id = 1;
	size_t chunk;
	int rc;

	do {
		chunk = n > TDS_OUT_PKT - TDS_HDR ? TDS_OUT_PKT - TDS_HDR : n;
		pkt[0] = (unsigned char)type;
		pkt[1] = chunk == n ? TDS_EOM : 0;
		pkt[2] = (unsigned char)((chunk + TDS_HDR) >> 8);
		pkt[3] = (unsigned char)((chunk + TDS_HDR) & 0xff);
		pkt[4] = pkt[5] = 0;
		pkt[6] = id++;
		pkt[7] = 0;
		memcpy(pkt + TDS_HDR, p, chunk);
		if ((rc = send_all(r, fd, pkt, chunk + TDS_HDR, deadline)) != IO_OK)
			return rc;
		p += chunk;
		n -= chunk;
	} while (n > 0);
	return IO_OK;
}

/* ---- PRELOGIN ---- */

/*
 * The option table first (token, 16-bit offset, 16-bit length; 0xff ends
 * it), then the values, which must lie after the table and inside the
 * message.  Each option at most once; VERSION is 6 bytes and ENCRYPTION 1
 * when present (MS-TDS 2.2.6.5), anything else is refused, not guessed at.
 */
int
relay_parse_prelogin(const unsigned char *p, size_t n, struct relay_prelogin *pl,
    const char **why)
{
	size_t pos, end, off, len;
	unsigned seen = 0;
	unsigned char tok;

	memset(pl, 0, sizeof(*pl));
	pl->enc = -1;
	*why = NULL;
	for (pos = 0;; pos += 5) {
		if (pos >= n) {
			*why = "the option table has no terminator";
			return DMK_ERR_PROTOCOL;
		}
		if (p[pos] == 0xff)
			break;
		if (n - pos < 5) {
			*why = "the option table ends inside an entry";
			return DMK_ERR_PROTOCOL;
		}
	}
	end = pos + 1;   /* values start here at the earliest */
	for (pos = 0; p[pos] != 0xff; pos += 5) {
		tok = p[pos];
		off = ((size_t)p[pos + 1] << 8) | p[pos + 2];
		len = ((size_t)p[pos + 3] << 8) | p[pos + 4];
		if (off < end || off > n || len > n - off) {
			*why = "an option's value lies outside the message";
			return DMK_ERR_PROTOCOL;
		}
		if (tok < 32) {
			if (seen & (1u << tok)) {
				*why = "an option appears twice";
				return DMK_ERR_PROTOCOL;
			}
			seen |= 1u << tok;
		}
		if (tok == 0x00) {
			if (len != 6) {
				*why = "VERSION is not 6 bytes";
				return DMK_ERR_PROTOCOL;
			}
			memcpy(pl->version, p + off, 6);
			pl->have_version = 1;
		} else if (tok == 0x01) {
			if (len != 1) {
				*why = "ENCRYPTION is not 1 byte";
				return DMK_ERR_PROTOCOL;
			}
			pl->enc = p[off];
			pl->have_enc = 1;
		}
	}
	return 0;
}

/* Our PRELOGIN, as a client (encrypt = ON) or as the server's answer. */
static size_t
build_prelogin(unsigned char *out, int server, const unsigned char version[6], int enc)
{
	/* VERSION, ENCRYPTION, INSTOPT, THREADID, MARS, terminator */
	const size_t hdr = 5 * 5 + 1;
	size_t thr_len = server ? 0 : 4;
	size_t off_ver = hdr, off_enc = off_ver + 6, off_inst = off_enc + 1,
	    off_thr = off_inst + 1, off_mars = off_thr + thr_len, total = off_mars + 1;
	unsigned char *e = out;
	uint32_t pid = (uint32_t)getpid();

#define ENTRY(tok, off, len) do { *e++ = (tok); *e++ = (unsigned char)((off) >> 8); \
	*e++ = (unsigned char)(off); *e++ = 0; *e++ = (unsigned char)(len); } while (0)
	ENTRY(0x00, off_ver, 6);
	ENTRY(0x01, off_enc, 1);
	ENTRY(0x02, off_inst, 1);
	ENTRY(0x03, off_thr, thr_len);
	ENTRY(0x04, off_mars, 1);
#undef ENTRY
	*e = 0xff;
	memcpy(out + off_ver, version, 6);
	out[off_enc] = (unsigned char)enc;
	out[off_inst] = 0;
	if (!server)
		memcpy(out + off_thr, &pid, 4);
	out[off_mars] = 0;
	return total;
}

static const char *
enc_name(int v)
{
	switch (v) {
	case ENC_OFF: return "ENCRYPT_OFF";
	case ENC_ON: return "ENCRYPT_ON";
	case ENC_NOT_SUP: return "ENCRYPT_NOT_SUP";
	case ENC_REQ: return "ENCRYPT_REQ";
	case -1: return "no ENCRYPTION option";
	default: return "an unknown ENCRYPTION value";
	}
}

/* ---- TLS plumbing ---- */

static int
leg_ssl(struct leg *l, SSL_CTX *ctx)
{
	if ((l->ssl = SSL_new(ctx)) == NULL)
		return -1;
	l->rb = BIO_new(BIO_s_mem());
	l->wb = BIO_new(BIO_s_mem());
	if (l->rb == NULL || l->wb == NULL) {
		BIO_free(l->rb);
		BIO_free(l->wb);
		l->rb = l->wb = NULL;
		return -1;
	}
	BIO_set_mem_eof_return(l->rb, -1);
	SSL_set_bio(l->ssl, l->rb, l->wb);   /* the SSL owns them now */
	return 0;
}

/* Append "DNS:x" / "IP:y" / "CN:z" to out; the text came from the network:
 * printable ASCII only, cut at len. */
static void
names_add(char *out, size_t len, const char *kind, const unsigned char *v, size_t n)
{
	size_t o = strlen(out), i;

	if (o + strlen(kind) + 4 >= len)
		return;
	if (o > 0) {
		memcpy(out + o, ", ", 2);
		o += 2;
	}
	memcpy(out + o, kind, strlen(kind));
	o += strlen(kind);
	for (i = 0; i < n && o + 1 < len; i++)
		out[o++] = v[i] >= 0x20 && v[i] < 0x7f ? (char)v[i] : '?';
	out[o] = '\0';
}

static void
cert_names(X509 *x, char *out, size_t len)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	char ip[INET6_ADDRSTRLEN], cn[256];
	int i, n;

	out[0] = '\0';
	for (i = 0; gens != NULL && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		const ASN1_OCTET_STRING *a;

		if (g->type == GEN_DNS)
			names_add(out, len, "DNS:", ASN1_STRING_get0_data(g->d.dNSName),
			    (size_t)ASN1_STRING_length(g->d.dNSName));
		else if (g->type == GEN_IPADD) {
			a = g->d.iPAddress;
			n = ASN1_STRING_length(a);
			if ((n == 4 || n == 16) && inet_ntop(n == 4 ? AF_INET : AF_INET6,
			    ASN1_STRING_get0_data(a), ip, sizeof(ip)) != NULL)
				names_add(out, len, "IP:", (const unsigned char *)ip, strlen(ip));
		}
	}
	GENERAL_NAMES_free(gens);
	if (out[0] == '\0' && (n = X509_NAME_get_text_by_NID(X509_get_subject_name(x),
	    NID_commonName, cn, sizeof(cn))) > 0)
		names_add(out, len, "CN:", (const unsigned char *)cn, (size_t)n);
	if (out[0] == '\0')
		util_strlcpy(out, "no name", len);
}

/* Keep the OpenSSL verdict; on a host-name mismatch note what the
 * certificate is for, so that the message names both. */
static int
verify_cb(int ok, X509_STORE_CTX *sc)
{
	int e = X509_STORE_CTX_get_error(sc);
	SSL *ssl;
	struct relay *r;
	X509 *x;

	if (!ok && (e == X509_V_ERR_HOSTNAME_MISMATCH || e == X509_V_ERR_IP_ADDRESS_MISMATCH) &&
	    (ssl = X509_STORE_CTX_get_ex_data(sc, SSL_get_ex_data_X509_STORE_CTX_idx())) != NULL &&
	    (r = SSL_get_app_data(ssl)) != NULL && (x = X509_STORE_CTX_get0_cert(sc)) != NULL)
		cert_names(x, r->peer_names, sizeof(r->peer_names));
	return ok;
}

/* Send what the SSL wrote: raw, or wrapped in one PRELOGIN message. */
static int
leg_flush(struct relay *r, struct leg *l, int wrapped, long long deadline)
{
	char *data;
	long n;
	int rc;

	n = BIO_get_mem_data(l->wb, &data);
	if (n <= 0)
		return IO_OK;
	if (wrapped)
		rc = send_message(r, l->fd, TDS_PRELOGIN, data, (size_t)n, deadline);
	else
		rc = send_all(r, l->fd, data, (size_t)n, deadline);
	(void)BIO_reset(l->wb);
	return rc;
}

static void
leg_free(struct leg *l)
{
	if (l->ssl != NULL)
		SSL_free(l->ssl);
	l->ssl = NULL;
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
}

static void
set_err(struct relay *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
set_err(struct relay *r, int code, const char *fmt, ...)
{
	char msg[DMK_ERR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&r->mu);
	if (r->err.code == 0)
		dmk_errf(&r->err, code, "%s: %s", r->label, msg);
	pthread_mutex_unlock(&r->mu);
}

static const char *
ssl_reason(void)
{
	unsigned long e = ERR_peek_last_error();
	const char *s = e ? ERR_reason_error_string(e) : NULL;

	return s ? s : "TLS handshake failed";
}

static void
io_err(struct relay *r, int rc, const char *what)
{
	if (rc == IO_TIMEOUT)
		set_err(r, DMK_ERR_TIMEOUT, "timed out %s", what);
	else if (rc == IO_EOF)
		set_err(r, DMK_ERR_UNREACHABLE, "connection closed %s", what);
	else if (rc == IO_PROTO)
		set_err(r, DMK_ERR_PROTOCOL, "not a TDS answer %s: %s", what,
		    r->why ? r->why : "bad framing");
	else if (rc == IO_TOOBIG)
		set_err(r, DMK_ERR_PROTOCOL, "answer too large %s: %s", what,
		    r->why ? r->why : "over the limit");
	else
		set_err(r, DMK_ERR_UNREACHABLE, "connection failed %s", what);
}

/* ---- the outer leg: we are the client ---- */

static int
tcp_connect(struct relay *r, const struct relay_params *p, long long deadline)
{
	struct addrinfo hints, *res = NULL, *ai;
	char port[16];
	int fd = -1, rc, one = 1, soerr;
	socklen_t sl;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof(port), "%d", p->port);
	if ((rc = getaddrinfo(p->host, port, &hints, &res)) != 0) {
		set_err(r, DMK_ERR_UNREACHABLE, "cannot resolve %s: %s", p->host, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
		    ai->ai_protocol);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS) {
			rc = wait_fd(r, fd, POLLOUT, deadline);
			sl = sizeof(soerr);
			if (rc == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 &&
			    soerr == 0)
				break;
			if (rc == 0) {
				close(fd);
				freeaddrinfo(res);
				set_err(r, DMK_ERR_TIMEOUT, "timed out connecting");
				return -1;
			}
			errno = rc == 1 ? soerr : ECONNABORTED;
		}
		close(fd);
		fd = -1;
	}
	if (fd < 0) {
		set_err(r, DMK_ERR_UNREACHABLE, "cannot connect: %s", strerror(errno));
		freeaddrinfo(res);
		return -1;
	}
	freeaddrinfo(res);
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static int
is_ip_literal(const char *s)
{
	unsigned char b[16];

	return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
}

#define STRICT_HINT " (a server without strict encryption, TDS 8.0, closes the connection " \
	"when TLS comes first: then set 'encrypt = mandatory' for this AG)"

static void
append_err(struct relay *r, const char *text)
{
	size_t n;

	pthread_mutex_lock(&r->mu);
	n = strlen(r->err.msg);
	util_strlcpy(r->err.msg + n, text, sizeof(r->err.msg) - n);
	pthread_mutex_unlock(&r->mu);
}

/*
 * TDS 8.0: one TDS message read through the outer TLS leg, every header
 * checked by the framer as in read_message.  Exactly the message's bytes
 * are taken from the TLS stream; the rest stays for the pump.
 */
static int
ssl_read_message(struct relay *r, struct leg *l, struct buf *out, int *type, long long deadline)
{
	unsigned char chunk[4096], raw[4096];
	struct relay_framer f;
	const char *why;
	size_t need, used;
	ssize_t k;
	int rc, n, w;

	buf_reset(out);
	relay_framer_init(&f, out->max);
	for (;;) {
		need = f.hdr_len < RELAY_TDS_HDR ? RELAY_TDS_HDR - f.hdr_len : f.left;
		if (need > sizeof(chunk))
			need = sizeof(chunk);
		ERR_clear_error();
		if ((n = SSL_read(l->ssl, chunk, (int)need)) > 0) {
			rc = relay_tds_frame(&f, chunk, (size_t)n, &used, out, &why);
			if (rc == 1) {
				*type = f.msg_type;
				rc = IO_OK;
				break;
			}
			if (rc < 0) {
				r->why = why;
				rc = rc == DMK_ERR_TOOBIG ? IO_TOOBIG : IO_PROTO;
				break;
			}
			continue;
		}
		if (SSL_get_error(l->ssl, n) != SSL_ERROR_WANT_READ) {
			rc = SSL_get_error(l->ssl, n) == SSL_ERROR_ZERO_RETURN ? IO_EOF : IO_ERR;
			break;
		}
		if ((rc = leg_flush(r, l, 0, deadline)) != IO_OK)
			break;
		if ((w = wait_fd(r, l->fd, POLLIN, deadline)) <= 0) {
			rc = w == 0 ? IO_TIMEOUT : IO_ERR;
			break;
		}
		if ((k = recv(l->fd, raw, sizeof(raw), 0)) < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (k <= 0) {
			rc = k == 0 ? IO_EOF : IO_ERR;
			break;
		}
		if (BIO_write(l->rb, raw, (int)k) != (int)k) {
			rc = IO_ERR;
			break;
		}
	}
	OPENSSL_cleanse(chunk, sizeof(chunk));
	return rc;
}

/* TDS 8.0: our PRELOGIN and the server's answer, inside the TLS session. */
static int
strict_prelogin(struct relay *r, struct buf *msg, long long deadline)
{
	static const unsigned char our_version[6] = { 1, 3, 0, 17, 0, 0 };
	unsigned char pkt[TDS_HDR + 64];
	struct relay_prelogin pl;
	const char *why = NULL;
	size_t n;
	int io, type;

	n = build_prelogin(pkt + TDS_HDR, 0, our_version, ENC_STRICT);
	pkt[0] = TDS_PRELOGIN;
	pkt[1] = TDS_EOM;
	pkt[2] = (unsigned char)((n + TDS_HDR) >> 8);
	pkt[3] = (unsigned char)((n + TDS_HDR) & 0xff);
	pkt[4] = pkt[5] = pkt[7] = 0;
	pkt[6] = 1;
	ERR_clear_error();
	if (SSL_write(r->outer.ssl, pkt, (int)(n + TDS_HDR)) != (int)(n + TDS_HDR) ||
	    (io = leg_flush(r, &r->outer, 0, deadline)) != IO_OK) {
		set_err(r, DMK_ERR_TLS, "cannot send PRELOGIN inside TLS: %s", ssl_reason());
		return -1;
	}
	if ((io = ssl_read_message(r, &r->outer, msg, &type, deadline)) != IO_OK) {
		io_err(r, io, "waiting for the PRELOGIN answer inside TLS (TDS 8.0)");
		return -1;
	}
	/* The session is encrypted already: the answer's ENCRYPTION value
	 * changes nothing, but the message must parse. */
	if (type != TDS_REPLY || relay_parse_prelogin((unsigned char *)msg->data, msg->len, &pl,
	    &why) != 0) {
		set_err(r, DMK_ERR_PROTOCOL, "the PRELOGIN answer inside TLS cannot be parsed (%s)",
		    why ? why : "not a reply packet");
		return -1;
	}
	if (pl.have_version)
		memcpy(r->srv_version, pl.version, 6);
	return 0;
}

/*
 * The client contexts: one per (CA file as it is now, strict), shared by
 * every relay of the process (an SSL_CTX is safe to share once set up;
 * each SSL takes its own reference).  A context per relay cost a CA parse
 * and ~130 KiB each (bench/README.md).  A CA file that changes (inode,
 * size or time) gets a new context, so a long-running agent follows it.
 */
#define CLIENT_CTX_MAX 4
static pthread_mutex_t g_cctx_mu = PTHREAD_MUTEX_INITIALIZER;
static struct cctx {
	SSL_CTX *ctx;
	int strict;
	char ca[512];
	struct stat st;
} g_cctx[CLIENT_CTX_MAX];

static int
cctx_same(const struct cctx *c, const char *ca, int strict, const struct stat *st)
{
	if (c->ctx == NULL || c->strict != strict || strcmp(c->ca, ca) != 0)
		return 0;
	return ca[0] == '\0' || (c->st.st_ino == st->st_ino && c->st.st_dev == st->st_dev &&
	    c->st.st_size == st->st_size && c->st.st_mtim.tv_sec == st->st_mtim.tv_sec &&
	    c->st.st_mtim.tv_nsec == st->st_mtim.tv_nsec);
}

/* A new reference to the client context for p; NULL with r->err set (or
 * not: an OpenSSL failure the caller reports). */
static SSL_CTX *
client_ctx(struct relay *r, const struct relay_params *p)
{
	const char *ca = p->ca_file && *p->ca_file ? p->ca_file : "";
	struct stat st;
	SSL_CTX *ctx = NULL;
	size_t i, slot = 0;

	memset(&st, 0, sizeof(st));
	if (ca[0] != '\0' && (access(ca, R_OK) != 0 || stat(ca, &st) != 0)) {
		set_err(r, DMK_ERR_CONFIG, "cannot read CA file %s: %s", ca, strerror(errno));
		return NULL;
	}
	pthread_mutex_lock(&g_cctx_mu);
	for (i = 0; i < CLIENT_CTX_MAX; i++) {
		if (cctx_same(&g_cctx[i], ca, p->strict, &st)) {
			ctx = g_cctx[i].ctx;
			SSL_CTX_up_ref(ctx);
			goto out;
		}
		if (g_cctx[i].ctx == NULL || (g_cctx[i].strict == p->strict &&
		    strcmp(g_cctx[i].ca, ca) == 0))
			slot = i;   /* a free slot, or this CA's older context */
	}
	/* TDS 7.x runs TLS 1.2 (FreeTDS's peers); TDS 8.0 allows 1.3 and names
	 * itself with ALPN */
	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
	    !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, p->strict ? TLS1_3_VERSION : TLS1_2_VERSION) ||
	    (p->strict && SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x07tds/8.0", 8) != 0))
		goto fail;
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);   /* plaintext buffers freed (wiped) when empty */
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
	if (ca[0] != '\0') {
		if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
			set_err(r, DMK_ERR_CONFIG, "cannot load CA file %s: %s", ca, ssl_reason());
			goto fail;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1)
		goto fail;
	if (strlen(ca) < sizeof(g_cctx[0].ca)) {
		/* the cache keeps its own reference; an older one goes when its
		 * last relay does */
		SSL_CTX_free(g_cctx[slot].ctx);
		g_cctx[slot].ctx = ctx;
		SSL_CTX_up_ref(ctx);
		g_cctx[slot].strict = p->strict;
		memcpy(g_cctx[slot].ca, ca, strlen(ca) + 1);
		g_cctx[slot].st = st;
	}
	goto out;
fail:
	SSL_CTX_free(ctx);
	ctx = NULL;
out:
	pthread_mutex_unlock(&g_cctx_mu);
	return ctx;
}

static int
outer_setup(struct relay *r, const struct relay_params *p)
{
	static const unsigned char our_version[6] = { 1, 3, 0, 17, 0, 0 };
	unsigned char pl_buf[64];
	struct relay_prelogin pl;
	struct buf msg;
	SSL_CTX *ctx = NULL;
	const char *why = NULL;
	long long deadline = util_now_ms() + r->timeout_ms;
	const char *name = p->tls_name && *p->tls_name ? p->tls_name : p->host;
	int rc = -1, type, io, h, e;
	long v;

	buf_init(&msg, HANDSHAKE_MAX);
	if ((r->outer.fd = tcp_connect(r, p, deadline)) < 0)
		goto out;

	/* TDS 7.x: PRELOGIN in the clear, then TLS inside PRELOGIN packets.
	 * TDS 8.0 (strict): TLS first, PRELOGIN inside it (strict_prelogin). */
	if (!p->strict) {
		if ((io = send_message(r, r->outer.fd, TDS_PRELOGIN, pl_buf,
		    build_prelogin(pl_buf, 0, our_version, ENC_ON), deadline)) != IO_OK) {
			io_err(r, io, "sending PRELOGIN");
			goto out;
		}
		if ((io = read_message(r, r->outer.fd, &msg, &type, deadline)) != IO_OK) {
			io_err(r, io, "waiting for the PRELOGIN answer");
			/* what a server that enforces TDS 8.0 does with a clear PRELOGIN */
			if (io == IO_EOF || io == IO_PROTO)
				append_err(r, " (a server that enforces strict encryption, TDS 8.0, "
				    "does this: then set 'encrypt = strict' for this AG)");
			goto out;
		}
		if (type != TDS_REPLY || relay_parse_prelogin((unsigned char *)msg.data, msg.len, &pl,
		    &why) != 0) {
			set_err(r, DMK_ERR_PROTOCOL, "the PRELOGIN answer cannot be parsed (%s); nothing "
			    "was sent", why ? why : "not a reply packet");
			goto out;
		}
		if (pl.enc != ENC_ON && pl.enc != ENC_REQ) {
			char val[16] = "";

			if (pl.enc > ENC_REQ)
				snprintf(val, sizeof(val), ", 0x%02x", (unsigned)pl.enc);
			set_err(r, DMK_ERR_TLS, "the server (or something in the path) refused full TLS "
			    "encryption (PRELOGIN answered %s%s); nothing was sent", enc_name(pl.enc), val);
			goto out;
		}
		if (pl.have_version)
			memcpy(r->srv_version, pl.version, 6);
	}

	if ((ctx = client_ctx(r, p)) == NULL) {
		if (r->err.code == 0)
			goto tlsfail;
		goto out;
	}
	if (leg_ssl(&r->outer, ctx) != 0)
		goto tlsfail;
	SSL_set_app_data(r->outer.ssl, r);
	if (is_ip_literal(name)) {
		if (!X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(r->outer.ssl), name))
			goto tlsfail;
	} else {
		X509_VERIFY_PARAM_set_hostflags(SSL_get0_param(r->outer.ssl),
		    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (!SSL_set1_host(r->outer.ssl, name) ||
		    !SSL_set_tlsext_host_name(r->outer.ssl, name))
			goto tlsfail;
	}
	SSL_set_connect_state(r->outer.ssl);

	for (;;) {
		ERR_clear_error();
		h = SSL_do_handshake(r->outer.ssl);
		if ((io = leg_flush(r, &r->outer, !p->strict, deadline)) != IO_OK) {
			io_err(r, io, "during the TLS handshake");
			goto out;
		}
		if (h == 1)
			break;
		e = SSL_get_error(r->outer.ssl, h);
		if (e != SSL_ERROR_WANT_READ) {
			v = SSL_get_verify_result(r->outer.ssl);
			if ((v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH) &&
			    r->peer_names[0] != '\0')
				set_err(r, DMK_ERR_TLS, "the server's TLS certificate is not accepted "
				    "for '%s': %s: it is for %s (set 'tls_name' in the [ag] section to "
				    "a name it carries, or reissue it); nothing was sent", name,
				    X509_verify_cert_error_string(v), r->peer_names);
			else if (v != X509_V_OK)
				set_err(r, DMK_ERR_TLS, "the server's TLS certificate is not accepted "
				    "for '%s': %s (CA: %s); nothing was sent", name,
				    X509_verify_cert_error_string(v),
				    p->ca_file && *p->ca_file ? p->ca_file : "system store");
			else {
				set_err(r, DMK_ERR_TLS, "TLS handshake failed: %s; nothing was sent",
				    ssl_reason());
				if (p->strict)
					append_err(r, STRICT_HINT);
			}
			goto out;
		}
		if (p->strict) {
			/* raw TLS records, no TDS framing around them */
			unsigned char raw[4096];
			ssize_t k;
			int w;

			if ((w = wait_fd(r, r->outer.fd, POLLIN, deadline)) <= 0) {
				io_err(r, w == 0 ? IO_TIMEOUT : IO_ERR, "during the TLS handshake");
				goto out;
			}
			if ((k = recv(r->outer.fd, raw, sizeof(raw), 0)) <= 0) {
				if (k < 0 && (errno == EINTR || errno == EAGAIN))
					continue;
				io_err(r, k == 0 ? IO_EOF : IO_ERR, "during the TLS handshake");
				append_err(r, STRICT_HINT);
				goto out;
			}
			if (BIO_write(r->outer.rb, raw, (int)k) != (int)k)
				goto tlsfail;
			continue;
		}
		if ((io = read_message(r, r->outer.fd, &msg, &type, deadline)) != IO_OK) {
			io_err(r, io, "during the TLS handshake");
			goto out;
		}
		if (BIO_write(r->outer.rb, msg.data, (int)msg.len) != (int)msg.len)
			goto tlsfail;
	}
	if (p->strict && strict_prelogin(r, &msg, deadline) != 0)
		goto out;
	rc = 0;
	goto out;
tlsfail:
	set_err(r, DMK_ERR_TLS, "cannot set up TLS: %s; nothing was sent", ssl_reason());
out:
	ERR_clear_error();
	SSL_CTX_free(ctx);   /* each SSL holds a reference */
	buf_free(&msg);
	return rc;
}

/*
 * The loopback port is open to every local user, and whoever connects
 * first would get the session.  So a connection is taken only if its
 * other end is a socket of this very process (FreeTDS's, in dbopen()):
 * the kernel's socket table (/proc/net/tcp, and tcp6 for a v4-mapped
 * client) names the inode of the socket whose local end is the peer's
 * address and whose remote end is ours, and that inode must be among our
 * own descriptors (/proc/self/fd, "socket:[INODE]").  FreeTDS 1.3 cannot
 * be handed a connected descriptor or a Unix socket, or we would leave no
 * port to race for.  1 ours, 0 not ours, -1 cannot tell (no /proc).
 */
static int
proc_tcp_inode(const char *table, const char *want_local, unsigned lport, const char *want_rem,
    unsigned rport, unsigned long *inode)
{
	char line[512], la[72], ra[72];
	unsigned lp, rp, st;
	unsigned long ino;
	FILE *f;
	int found = 0;
	char lps[8];

	if ((f = fopen(table, "re")) == NULL)
		return -1;
	/* The table holds every TCP socket of the host (thousands on a busy
	 * one): read it in large blocks, parse only the lines with our port. */
	(void)setvbuf(f, NULL, _IOFBF, 64 * 1024);
	snprintf(lps, sizeof(lps), ":%04X ", lport & 0xffff);
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strstr(line, lps) == NULL)
			continue;
		if (sscanf(line, " %*u: %64[0-9A-Fa-f]:%x %64[0-9A-Fa-f]:%x %x %*s %*s %*s %*u %*u %lu",
		    la, &lp, ra, &rp, &st, &ino) != 6)
			continue;
		if (lp == lport && rp == rport && strcasecmp(la, want_local) == 0 &&
		    strcasecmp(ra, want_rem) == 0 && ino != 0) {
			*inode = ino;
			found = 1;
			break;
		}
	}
	fclose(f);
	return found;
}

static int
peer_is_ours(const struct sockaddr_in *peer, const struct sockaddr_in *local)
{
	char pl[40], ll[40], want[40], link[64], path[300];
	unsigned long inode = 0;
	struct dirent *de;
	DIR *d;
	ssize_t n;
	int rc, r6;

	/* /proc prints each address word as the raw 32-bit value in hex */
	snprintf(pl, sizeof(pl), "%08X", (unsigned)peer->sin_addr.s_addr);
	snprintf(ll, sizeof(ll), "%08X", (unsigned)local->sin_addr.s_addr);
	rc = proc_tcp_inode("/proc/net/tcp", pl, ntohs(peer->sin_port), ll,
	    ntohs(local->sin_port), &inode);
	if (rc != 1) {
		snprintf(pl, sizeof(pl), "0000000000000000%08X%08X", (unsigned)htonl(0xffff),
		    (unsigned)peer->sin_addr.s_addr);
		snprintf(ll, sizeof(ll), "0000000000000000%08X%08X", (unsigned)htonl(0xffff),
		    (unsigned)local->sin_addr.s_addr);
		r6 = proc_tcp_inode("/proc/net/tcp6", pl, ntohs(peer->sin_port), ll,
		    ntohs(local->sin_port), &inode);
		if (r6 == 1)
			rc = 1;
		else if (rc == -1 && r6 == -1)
			return -1;
	}
	if (rc != 1)
		return 0;
	snprintf(want, sizeof(want), "socket:[%lu]", inode);
	if ((d = opendir("/proc/self/fd")) == NULL)
		return -1;
	rc = 0;
	while (rc == 0 && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
		if ((n = readlink(path, link, sizeof(link) - 1)) <= 0)
			continue;
		link[n] = '\0';
		rc = strcmp(link, want) == 0;
	}
	closedir(d);
	return rc;
}

/* ---- the inner leg: we are the server, FreeTDS the client ---- */

/* Accept FreeTDS's connection, and only that one, before the deadline. */
static int
inner_accept(struct relay *r, long long deadline)
{
	struct sockaddr_in peer, local;
	socklen_t sl, ll;
	int fd, w, ours;

	for (;;) {
		if ((w = wait_fd(r, r->lfd, POLLIN, deadline)) <= 0) {
			if (w == 0)
				set_err(r, DMK_ERR_TIMEOUT, "FreeTDS did not connect to the relay");
			return -1;
		}
		sl = sizeof(peer);
		/* non-blocking: a send to FreeTDS must never hold the relay thread
		 * past relay_stop()'s wake-up */
		if ((fd = accept4(r->lfd, (struct sockaddr *)&peer, &sl,
		    SOCK_CLOEXEC | SOCK_NONBLOCK)) < 0) {
			if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED)
				continue;
			set_err(r, DMK_ERR_INTERNAL, "relay accept failed: %s", strerror(errno));
			return -1;
		}
		ll = sizeof(local);
		ours = sl == sizeof(peer) && peer.sin_family == AF_INET &&
		    getsockname(fd, (struct sockaddr *)&local, &ll) == 0 ?
		    peer_is_ours(&peer, &local) : 0;
		if (ours == 1) {
			r->inner.fd = fd;
			return 0;
		}
		close(fd);
		if (ours < 0) {
			set_err(r, DMK_ERR_INTERNAL, "cannot tell whether the connection to the relay "
			    "comes from this process (is /proc mounted?); refusing it");
			return -1;
		}
		log_warn("%s: refused a connection to the relay's port from 127.0.0.1:%u: not "
		    "this process's own FreeTDS", r->label, (unsigned)ntohs(peer.sin_port));
	}
}

static int
inner_setup(struct relay *r)
{
	unsigned char pl_buf[64];
	struct relay_prelogin pl;
	struct buf msg;
	const char *why;
	long long deadline = util_now_ms() + r->timeout_ms;
	int rc = -1, type, io, h, e;

	buf_init(&msg, HANDSHAKE_MAX);
	if (inner_accept(r, deadline) != 0)
		goto out;
	close(r->lfd);   /* exactly one connection */
	r->lfd = -1;

	why = NULL;
	if ((io = read_message(r, r->inner.fd, &msg, &type, deadline)) != IO_OK) {
		io_err(r, io, "waiting for FreeTDS's PRELOGIN to the relay");
		goto out;
	}
	if (type != TDS_PRELOGIN || relay_parse_prelogin((unsigned char *)msg.data, msg.len, &pl,
	    &why) != 0) {
		set_err(r, DMK_ERR_INTERNAL, "FreeTDS sent no usable PRELOGIN to the relay (%s)",
		    why ? why : "not a PRELOGIN packet");
		goto out;
	}
	/* FreeTDS must ask for encryption: otherwise our configuration was not
	 * applied, and we would rather stop than guess why. */
	if (pl.enc != ENC_ON && pl.enc != ENC_REQ) {
		set_err(r, DMK_ERR_INTERNAL, "FreeTDS did not ask for encryption (%s): its "
		    "configuration was not applied", enc_name(pl.enc));
		goto out;
	}
	if ((io = send_message(r, r->inner.fd, TDS_REPLY, pl_buf,
	    build_prelogin(pl_buf, 1, r->srv_version, ENC_ON), deadline)) != IO_OK) {
		io_err(r, io, "answering FreeTDS's PRELOGIN");
		goto out;
	}
	if (leg_ssl(&r->inner, g_server_ctx) != 0) {
		set_err(r, DMK_ERR_TLS, "cannot set up the relay's TLS: %s", ssl_reason());
		goto out;
	}
	SSL_set_accept_state(r->inner.ssl);
	for (;;) {
		if ((io = read_message(r, r->inner.fd, &msg, &type, deadline)) != IO_OK) {
			io_err(r, io, "in FreeTDS's TLS handshake with the relay");
			goto out;
		}
		if (BIO_write(r->inner.rb, msg.data, (int)msg.len) != (int)msg.len)
			goto out;
		ERR_clear_error();
		h = SSL_do_handshake(r->inner.ssl);
		if ((io = leg_flush(r, &r->inner, 1, deadline)) != IO_OK) {
			io_err(r, io, "in FreeTDS's TLS handshake with the relay");
			goto out;
		}
		if (h == 1)
			break;
		e = SSL_get_error(r->inner.ssl, h);
		if (e != SSL_ERROR_WANT_READ) {
			set_err(r, DMK_ERR_TLS, "FreeTDS's TLS handshake with the relay failed: %s",
			    ssl_reason());
			goto out;
		}
	}
	rc = 0;
out:
	ERR_clear_error();
	buf_free(&msg);
	return rc;
}

/* Move what arrived on `from` to `to`.  0 ok, -1 closed, -2 error. */
static int
pump(struct relay *r, struct leg *from, struct leg *to, unsigned long long *count)
{
	unsigned char cipher[16384];
	ssize_t n;
	int k, e, rc = 0;

	n = recv(from->fd, cipher, sizeof(cipher), 0);
	if (n == 0)
		return -1;
	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -2;
	if (BIO_write(from->rb, cipher, (int)n) != (int)n)
		return -2;
	for (;;) {
		k = SSL_read(from->ssl, r->pt.data, PLAINTEXT_CHUNK);
		if (k > 0) {
			if (SSL_write(to->ssl, r->pt.data, k) != k)
				rc = -2;
			OPENSSL_cleanse(r->pt.data, (size_t)k);
			pthread_mutex_lock(&r->mu);
			*count += (unsigned long long)k;
			pthread_mutex_unlock(&r->mu);
			if (rc != 0)
				break;
			continue;
		}
		e = SSL_get_error(from->ssl, k);
		if (e == SSL_ERROR_WANT_READ)
			break;
		rc = e == SSL_ERROR_ZERO_RETURN ? -1 : -2;
		break;
	}
	if (leg_flush(r, from, 0, 0) != IO_OK || leg_flush(r, to, 0, 0) != IO_OK)
		rc = rc ? rc : -1;
	return rc;
}

static void *
relay_main(void *arg)
{
	struct relay *r = arg;
	struct pollfd p[3];
	int rc = 0, n;

	if (inner_setup(r) != 0)
		goto out;
	pthread_mutex_lock(&r->mu);
	r->inner_ready = 1;
	pthread_mutex_unlock(&r->mu);

	for (;;) {
		p[0].fd = r->inner.fd;
		p[1].fd = r->outer.fd;
		p[2].fd = r->wake[0];
		p[0].events = p[1].events = p[2].events = POLLIN;
		p[0].revents = p[1].revents = p[2].revents = 0;
		n = poll(p, 3, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || p[2].revents)
			break;
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			if ((rc = pump(r, &r->inner, &r->outer, &r->stats.to_server)) != 0)
				break;
		}
		if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			if ((rc = pump(r, &r->outer, &r->inner, &r->stats.to_client)) != 0) {
				if (rc == -2)
					set_err(r, DMK_ERR_TLS, "the TLS stream from the server broke");
				else
					set_err(r, DMK_ERR_UNREACHABLE, "the server closed the connection");
				break;
			}
		}
	}
	/* Say goodbye properly to whichever side is still there. */
	if (r->outer.ssl != NULL && SSL_is_init_finished(r->outer.ssl)) {
		SSL_shutdown(r->outer.ssl);
		(void)leg_flush(r, &r->outer, 0, util_now_ms() + 1000);
	}
	/* No close_notify towards FreeTDS: 1.3.17 with GnuTLS spins on a
	 * readable socket after one instead of failing the call.  A plain EOF
	 * makes it report the connection as lost (SYBESEOF). */
out:
	pthread_mutex_lock(&r->mu);
	r->alive = 0;
	pthread_mutex_unlock(&r->mu);
	/* Wake FreeTDS if it waits on us. */
	if (r->inner.fd >= 0)
		shutdown(r->inner.fd, SHUT_RDWR);
	if (r->outer.fd >= 0)
		shutdown(r->outer.fd, SHUT_RDWR);
	ERR_clear_error();
	return NULL;
}

static int
listen_loopback(struct relay *r, int *port)
{
	struct sockaddr_in sin;
	socklen_t sl = sizeof(sin);
	int fd;

	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0)
		return -1;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = 0;
	/* a backlog beyond 1: connections that are not ours must not keep
	 * FreeTDS's waiting (see inner_accept) */
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(fd, 16) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sin, &sl) != 0) {
		close(fd);
		return -1;
	}
	*port = ntohs(sin.sin_port);
	r->lfd = fd;
#ifdef DMK_FAILPOINTS
	{
		/* tests: hold the port open before FreeTDS connects, for a racer */
		const char *d = getenv("DMKAGENT_TEST_RELAY_DELAY_MS");

		if (d != NULL && atoi(d) > 0 && atoi(d) <= 10000)
			usleep((useconds_t)atoi(d) * 1000);
	}
#endif
	return 0;
}

static void
relay_free(struct relay *r)
{
	leg_free(&r->outer);
	leg_free(&r->inner);
	if (r->lfd >= 0)
		close(r->lfd);
	if (r->wake[0] >= 0)
		close(r->wake[0]);
	if (r->wake[1] >= 0)
		close(r->wake[1]);
	buf_free(&r->pt);
	pthread_mutex_destroy(&r->mu);
	OPENSSL_cleanse(r, sizeof(*r));
	free(r);
}

int
relay_start(const struct relay_params *p, struct relay **out, int *listen_port,
    struct dmk_err *err)
{
	static const unsigned char zero[PLAINTEXT_CHUNK];
	struct relay *r;
	int rc;

	*out = NULL;
	if ((rc = relay_global_init(NULL, NULL, err)) != 0)
		return rc;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	r->outer.fd = r->inner.fd = r->lfd = r->wake[0] = r->wake[1] = -1;
	pthread_mutex_init(&r->mu, NULL);
	buf_init(&r->pt, PLAINTEXT_CHUNK + 1);
	snprintf(r->label, sizeof(r->label), "%s (%s:%d)", p->name && *p->name ? p->name : p->host,
	    p->host, p->port);
	r->timeout_ms = (p->connect_timeout > 0 ? p->connect_timeout : 15) * 1000L;
	memcpy(r->srv_version, "\x10\x00\x03\xe8\x00\x00", 6);
	if (buf_append(&r->pt, zero, PLAINTEXT_CHUNK) != 0 ||
	    pipe2(r->wake, O_CLOEXEC) != 0) {
		relay_free(r);
		return dmk_errf(err, DMK_ERR_NOMEM, "cannot set up the relay");
	}

	if (outer_setup(r, p) != 0) {
		rc = r->err.code ? r->err.code : DMK_ERR_INTERNAL;
		dmk_errf(err, rc, "%s", r->err.msg);
		relay_free(r);
		return rc;
	}
	if (listen_loopback(r, listen_port) != 0) {
		relay_free(r);
		return dmk_errf(err, DMK_ERR_IO, "cannot listen on 127.0.0.1: %s", strerror(errno));
	}
	r->alive = 1;
	if (pthread_create(&r->thread, NULL, relay_main, r) != 0) {
		relay_free(r);
		return dmk_errf(err, DMK_ERR_INTERNAL, "cannot start the relay thread");
	}
	r->thread_started = 1;
	*out = r;
	return 0;
}

int
relay_inner_ready(struct relay *r)
{
	int v;

	pthread_mutex_lock(&r->mu);
	v = r->inner_ready;
	pthread_mutex_unlock(&r->mu);
	return v;
}

int
relay_alive(struct relay *r)
{
	int v;

	pthread_mutex_lock(&r->mu);
	v = r->alive;
	pthread_mutex_unlock(&r->mu);
	return v;
}

void
relay_get_error(struct relay *r, struct dmk_err *err)
{
	pthread_mutex_lock(&r->mu);
	if (err != NULL)
		*err = r->err;
	pthread_mutex_unlock(&r->mu);
}

void
relay_get_stats(struct relay *r, struct relay_stats *st)
{
	pthread_mutex_lock(&r->mu);
	*st = r->stats;
	pthread_mutex_unlock(&r->mu);
}

void
relay_abort(struct relay *r)
{
	if (r != NULL && r->wake[1] >= 0)
		(void)!write(r->wake[1], "x", 1);
}

void
relay_stop(struct relay *r)
{
	if (r == NULL)
		return;
	if (r->thread_started) {
		pthread_mutex_lock(&r->mu);
		r->stopping = 1;
		pthread_mutex_unlock(&r->mu);
		(void)!write(r->wake[1], "x", 1);
		pthread_join(r->thread, NULL);
	}
	relay_free(r);
}
