/* util.c: durations, times, ids, strings, process hardening. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "dmk.h"

#if defined(__SANITIZE_ADDRESS__)
# define DMK_SANITIZED 1
#elif defined(__has_feature)
# if __has_feature(address_sanitizer)
#  define DMK_SANITIZED 1
# endif
#endif

int
util_parse_duration(const char *s, long long *out)
{
	char *end;
	long long v, mult = 1;

	if (s == NULL || !isdigit((unsigned char)*s))
		return DMK_ERR_BADINPUT;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || v < 0)
		return DMK_ERR_BADINPUT;
	switch (*end) {
	case '\0': case 's': mult = 1; break;
	case 'm': mult = 60; break;
	case 'h': mult = 3600; break;
	case 'd': mult = 86400; break;
	case 'w': mult = 7 * 86400; break;
	default: return DMK_ERR_BADINPUT;
	}
	if (*end != '\0' && end[1] != '\0')
		return DMK_ERR_BADINPUT;
	if (v > (long long)1e12 / mult)
		return DMK_ERR_BADINPUT;
	*out = v * mult;
	return 0;
}

void
util_rfc3339(time_t t, char *buf, size_t len)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int
util_parse_rfc3339(const char *s, time_t *out)
{
	struct tm tm;
	const char *p;
	long off = 0;

	memset(&tm, 0, sizeof(tm));
	if (s == NULL || (p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)) == NULL)
		return DMK_ERR_BADINPUT;
	if (*p == '.')
		for (p++; isdigit((unsigned char)*p); p++)
			;
	if (*p == 'Z' || *p == 'z')
		p++;
	else if (*p == '+' || *p == '-') {
		/* exactly +HH:MM: a shorter one ("+2:00") once moved p past the end */
		int hh, mm;
		if (!isdigit((unsigned char)p[1]) || !isdigit((unsigned char)p[2]) || p[3] != ':' ||
		    !isdigit((unsigned char)p[4]) || !isdigit((unsigned char)p[5]))
			return DMK_ERR_BADINPUT;
		hh = (p[1] - '0') * 10 + (p[2] - '0');
		mm = (p[4] - '0') * 10 + (p[5] - '0');
		if (hh > 23 || mm > 59)
			return DMK_ERR_BADINPUT;
		off = (hh * 3600L + mm * 60L) * (*p == '+' ? 1 : -1);
		p += 6;
	} else
		return DMK_ERR_BADINPUT;
	if (*p != '\0')
		return DMK_ERR_BADINPUT;
	*out = timegm(&tm) - off;
	return 0;
}

long long
util_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
util_sleep_ms(long long ms)
{
	struct timespec ts;

	if (ms <= 0)
		return;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000;
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

void
util_hex(const unsigned char *in, size_t len, char *out)
{
	static const char hx[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < len; i++) {
		out[2 * i] = hx[in[i] >> 4];
		out[2 * i + 1] = hx[in[i] & 15];
	}
	out[2 * len] = '\0';
}

int
util_random_id(char *buf, size_t len)
{
	unsigned char r[16];

	if (len < 33 || RAND_bytes(r, sizeof(r)) != 1)
		return DMK_ERR_INTERNAL;
	util_hex(r, sizeof(r), buf);
	return 0;
}

size_t
util_strlcpy(char *dst, const char *src, size_t size)
{
	size_t n = strlen(src);

	if (size > 0) {
		size_t c = n < size - 1 ? n : size - 1;
		memcpy(dst, src, c);
		dst[c] = '\0';
	}
	return n;
}

int
util_utf8_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s, *e = p + len;

	while (p < e) {
		unsigned c = *p;
		size_t n;
		unsigned cp;

		if (c == 0)
			return 0;
		if (c < 0x80) { p++; continue; }
		if (c >= 0xc2 && c <= 0xdf) { n = 1; cp = c & 0x1f; }
		else if (c >= 0xe0 && c <= 0xef) { n = 2; cp = c & 0x0f; }
		else if (c >= 0xf0 && c <= 0xf4) { n = 3; cp = c & 0x07; }
		else return 0;
		if ((size_t)(e - p) <= n)
			return 0;
		for (size_t i = 1; i <= n; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (p[i] & 0x3f);
		}
		if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		p += n + 1;
	}
	return 1;
}

int
util_edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), i, j;
	int d[64 + 1][64 + 1];

	if (la > 64 || lb > 64)
		return 99;
	for (i = 0; i <= la; i++)
		d[i][0] = (int)i;
	for (j = 0; j <= lb; j++)
		d[0][j] = (int)j;
	for (i = 1; i <= la; i++)
		for (j = 1; j <= lb; j++) {
			int c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
			if (d[i - 1][j] + 1 < c) c = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < c) c = d[i][j - 1] + 1;
			d[i][j] = c;
		}
	return d[la][lb];
}

int
util_harden_process(struct dmk_err *err)
{
	struct rlimit rl = { 0, 0 };

	/* A core dump would hold whatever secret was in memory. */
	if (setrlimit(RLIMIT_CORE, &rl) == -1)
		return dmk_errf(err, DMK_ERR_IO, "setrlimit(RLIMIT_CORE): %s", strerror(errno));
#if !defined(DMK_SANITIZED)
	/* Not under sanitizers: LeakSanitizer must attach to the process. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == -1)
		return dmk_errf(err, DMK_ERR_IO, "prctl(PR_SET_DUMPABLE): %s", strerror(errno));
#endif
	return 0;
}

/* ---- private files under state_dir ---- */

static int
check_private_fd(int fd, const char *path, struct dmk_err *err)
{
	struct stat st;

	if (fstat(fd, &st) == -1)
		return dmk_errf(err, DMK_ERR_IO, "%s: %s", path, strerror(errno));
	if (!S_ISDIR(st.st_mode))
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: not a directory", path);
	if (st.st_uid != geteuid())
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: owned by uid %u, not by the user running "
		    "dmkagent (uid %u); refused", path, (unsigned)st.st_uid, (unsigned)geteuid());
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: writable by group or others (mode %03o); "
		    "refused (chmod go-w %s)", path, (unsigned)(st.st_mode & 07777), path);
	return 0;
}

/* The directory, opened without following a symbolic link, and checked. */
static int
open_private_dir(const char *path, int *dfd, struct dmk_err *err)
{
	int fd, r;

	*dfd = -1;
	if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) == -1) {
		if (errno == ELOOP || errno == ENOTDIR)
			return dmk_errf(err, DMK_ERR_CONFIG, "%s: not a directory (a symbolic link "
			    "or a file); refused", path);
		return dmk_errf(err, errno == ENOENT ? DMK_ERR_CONFIG : DMK_ERR_IO, "%s: %s",
		    path, strerror(errno));
	}
	if ((r = check_private_fd(fd, path, err)) != 0) {
		close(fd);
		return r;
	}
	*dfd = fd;
	return 0;
}

int
util_check_private_dir(const char *path, struct dmk_err *err)
{
	int dfd, r;

	if ((r = open_private_dir(path, &dfd, err)) == 0)
		close(dfd);
	return r;
}

int
util_write_file_atomic(const char *dir, const char *name, const void *data, size_t len,
    struct dmk_err *err)
{
	char tmp[256];
	const char *p = data;
	int dfd = -1, fd = -1, created = 0, r;
	size_t off = 0;

	if (strchr(name, '/') != NULL || name[0] == '\0' || name[0] == '.' ||
	    (size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", name) >= sizeof(tmp))
		return dmk_errf(err, DMK_ERR_INTERNAL, "bad file name '%.80s'", name);
	if ((r = open_private_dir(dir, &dfd, err)) != 0)
		return r;
	/* A leftover (or planted) temporary name goes; a link is removed, not followed. */
	if (unlinkat(dfd, tmp, 0) == -1 && errno != ENOENT) {
		r = dmk_errf(err, DMK_ERR_IO, "%s/%s: cannot remove: %s", dir, tmp, strerror(errno));
		goto out;
	}
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd == -1) {
		r = dmk_errf(err, DMK_ERR_IO, "%s/%s: cannot create: %s", dir, tmp, strerror(errno));
		goto out;
	}
	created = 1;
	while (off < len) {
		ssize_t n = write(fd, p + off, len - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = dmk_errf(err, DMK_ERR_IO, "%s/%s: cannot write: %s", dir, tmp,
			    n == 0 ? "short write" : strerror(errno));
			goto out;
		}
		off += (size_t)n;
	}
	if (fsync(fd) == -1 || close(fd) == -1) {
		fd = -1;
		r = dmk_errf(err, DMK_ERR_IO, "%s/%s: cannot write: %s", dir, tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	if (renameat(dfd, tmp, dfd, name) == -1) {
		r = dmk_errf(err, DMK_ERR_IO, "%s/%s: cannot rename to %s: %s", dir, tmp, name,
		    strerror(errno));
		goto out;
	}
	created = 0;
	(void)fsync(dfd);   /* the rename's durability; best effort */
out:
	if (fd != -1)
		close(fd);
	if (r != 0 && created)
		(void)unlinkat(dfd, tmp, 0);
	close(dfd);
	return r;
}
