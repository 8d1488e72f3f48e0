/*
 * browser.c: the TCP port of a named instance from SQL Server Browser
 * (SSRP, [MC-SQLR]): one CLNT_UCAST_INST datagram to UDP 1434, one
 * SVR_RESP back.  The answer is unauthenticated UDP from the network: every
 * byte of it is checked (sql_ssrp_parse) and the only thing taken from it
 * is a port number; the host stays the one we asked, and the TLS checks
 * that follow are unchanged.
 */
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/dmk.h"
#include "sql.h"

#define BROWSER_ADDRS 8           /* addresses of one name asked at once */

#define SSRP_CLNT_UCAST_INST 0x04
#define SSRP_SVR_RESP 0x05
#define SSRP_INST_MAX 1024          /* RESP_DATA limit for CLNT_UCAST_INST */

/* Instance names: 1..16 of letters, digits, '_', '$', '#', '&' (ASCII only here). */
int
sql_instance_name_ok(const char *s)
{
	size_t i, n = strlen(s);

	if (n == 0 || n > 16)
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!(isalnum(c) || c == '_' || c == '$' || c == '#' || c == '&'))
			return 0;
	}
	return 1;
}

/* The next "token;" at *pos within data[0..n): sets *tok, *tlen; -1 at the end. */
static int
next_tok(const char *data, size_t n, size_t *pos, const char **tok, size_t *tlen)
{
	const char *semi;

	if (*pos >= n)
		return -1;
	*tok = data + *pos;
	if ((semi = memchr(*tok, ';', n - *pos)) == NULL)
		return -2;      /* unterminated */
	*tlen = (size_t)(semi - *tok);
	*pos += *tlen + 1;
	return 0;
}

/*
 * SVR_RESP: 0x05, RESP_SIZE (2 bytes, little endian), RESP_DATA: blocks of
 * "key;value;" pairs, each block ending with an empty key (";;").  The
 * block whose InstanceName is ours must carry "tcp;PORT".
 */
int
sql_ssrp_parse(const unsigned char *p, size_t n, const char *instance, int *port,
    const char **why)
{
	const char *data, *k, *v;
	size_t size, pos = 0, kl, vl, i;
	int ours = 0, tcp = 0, rc;
	long val;

	*why = NULL;
	if (n < 3) {
		*why = "shorter than an SVR_RESP header";
		return DMK_ERR_PROTOCOL;
	}
	if (p[0] != SSRP_SVR_RESP) {
		*why = "not an SVR_RESP";
		return DMK_ERR_PROTOCOL;
	}
	size = (size_t)p[1] | ((size_t)p[2] << 8);
	if (size != n - 3) {
		*why = "RESP_SIZE does not match the datagram";
		return DMK_ERR_PROTOCOL;
	}
	if (size > SSRP_INST_MAX) {
		*why = "RESP_DATA longer than 1024 bytes";
		return DMK_ERR_PROTOCOL;
	}
	data = (const char *)p + 3;
	for (i = 0; i < size; i++)
		if (data[i] == '\0' || (unsigned char)data[i] < 0x20) {
			*why = "control character in RESP_DATA";
			return DMK_ERR_PROTOCOL;
		}
	for (;;) {
		if ((rc = next_tok(data, size, &pos, &k, &kl)) == -1)
			break;
		if (rc == -2) {
			*why = "unterminated field in RESP_DATA";
			return DMK_ERR_PROTOCOL;
		}
		if (kl == 0) {          /* end of one instance's block */
			if (ours)
				break;
			tcp = 0;
			continue;
		}
		if (next_tok(data, size, &pos, &v, &vl) != 0) {
			*why = "a key without a value in RESP_DATA";
			return DMK_ERR_PROTOCOL;
		}
		if (kl == 12 && strncasecmp(k, "InstanceName", 12) == 0)
			ours = vl == strlen(instance) && strncasecmp(v, instance, vl) == 0;
		else if (kl == 3 && strncasecmp(k, "tcp", 3) == 0) {
			if (vl == 0 || vl > 5) {
				*why = "bad tcp port in RESP_DATA";
				return DMK_ERR_PROTOCOL;
			}
			for (i = 0, val = 0; i < vl; i++) {
				if (!isdigit((unsigned char)v[i])) {
					*why = "bad tcp port in RESP_DATA";
					return DMK_ERR_PROTOCOL;
				}
				val = val * 10 + (v[i] - '0');
			}
			if (val < 1 || val > 65535) {
				*why = "tcp port out of range in RESP_DATA";
				return DMK_ERR_PROTOCOL;
			}
			tcp = (int)val;
		}
	}
	if (!ours) {
		*why = "the answer is about another instance";
		return DMK_ERR_NOTFOUND;
	}
	if (tcp == 0) {
		*why = "the instance does not listen on TCP";
		return DMK_ERR_NOTFOUND;
	}
	*port = tcp;
	return 0;
}

int
sql_browser_port(const char *host, int udp_port, const char *instance, long timeout_ms,
    int *port, struct dmk_err *err)
{
	struct addrinfo hints, *res = NULL, *ai;
	unsigned char req[2 + 32], ans[SSRP_INST_MAX + 3 + 1];
	struct pollfd pfd[BROWSER_ADDRS];
	char sport[16];
	size_t rl, nfd = 0, i;
	long long deadline, now;
	const char *why = NULL;
	int rc, gai, sent = 0, saved = 0;
	ssize_t got;

	if (!sql_instance_name_ok(instance))
		return dmk_errf(err, DMK_ERR_BADINPUT, "'%s' is not an instance name SQL Server "
		    "Browser can be asked about", instance);
	rl = strlen(instance);
	req[0] = SSRP_CLNT_UCAST_INST;
	memcpy(req + 1, instance, rl);
	req[1 + rl] = '\0';
	rl += 2;
	snprintf(sport, sizeof(sport), "%d", udp_port);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_DGRAM;
	if ((gai = getaddrinfo(host, sport, &hints, &res)) != 0)
		return dmk_errf(err, DMK_ERR_UNREACHABLE, "SQL Server Browser at %s: %s", host,
		    gai_strerror(gai));
	/* Every address the name has (IPv6 and IPv4): asked at once, the first
	 * valid answer wins. */
	for (ai = res; ai != NULL && nfd < BROWSER_ADDRS; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			saved = errno;
			continue;
		}
		/* connected: the kernel drops datagrams from anyone else */
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
			saved = errno;
			close(fd);
			continue;
		}
		pfd[nfd].fd = fd;
		pfd[nfd].events = POLLIN;
		pfd[nfd].revents = 0;
		nfd++;
	}
	if (nfd == 0) {
		rc = dmk_errf(err, DMK_ERR_UNREACHABLE, "SQL Server Browser at %s:%d: %s", host,
		    udp_port, strerror(saved));
		goto out;
	}
	deadline = util_now_ms() + timeout_ms;
	for (;;) {
		long wait;

		now = util_now_ms();
		if (now >= deadline)
			break;
		/* one resend halfway: a datagram may be lost */
		if (sent == 0 || (sent == 1 && now >= deadline - timeout_ms / 2)) {
			for (i = 0; i < nfd; i++)
				(void)send(pfd[i].fd, req, rl, 0);   /* refused: another address may answer */
			sent++;
		}
		/* before the resend, wake at the halfway mark */
		wait = (long)(deadline - now);
		if (sent == 1)
			wait -= timeout_ms / 2;
		if (wait < 1)
			wait = 1;
		if (poll(pfd, nfd, (int)(wait > 1000000 ? 1000000 : wait)) <= 0)
			continue;
		for (i = 0; i < nfd; i++) {
			if (!(pfd[i].revents & (POLLIN | POLLERR)))
				continue;
			got = recv(pfd[i].fd, ans, sizeof(ans), 0);
			if (got < 0)
				continue;   /* ICMP unreachable (ECONNREFUSED): keep trying until the timeout */
			if ((rc = sql_ssrp_parse(ans, (size_t)got, instance, port, &why)) != 0) {
				rc = dmk_errf(err, DMK_ERR_PROTOCOL, "SQL Server Browser at %s:%d, "
				    "instance %s: %s", host, udp_port, instance, why);
				goto out;
			}
			rc = 0;
			goto out;
		}
	}
	rc = dmk_errf(err, DMK_ERR_UNREACHABLE, "SQL Server Browser at %s:%d did not answer "
	    "for instance %s within %ld ms", host, udp_port, instance, timeout_ms);
out:
	for (i = 0; i < nfd; i++)
		close(pfd[i].fd);
	freeaddrinfo(res);
	return rc;
}
