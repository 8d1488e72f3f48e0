/*
 * ref.c: secret references.  STORE:PATH[#FIELD], file:/absolute/path,
 * env:NAME, and reading file: references.  Messages here never repeat the input: a string that fails to
 * parse as a reference may be a literal password.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dmk.h"
#include "secret.h"
#include "ref.h"

static int
valid_store_name(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n >= 64 || !isalpha((unsigned char)s[0]))
		return 0;
	for (i = 1; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '-')
			return 0;
	return 1;
}

static int
valid_path(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n >= 512 || s[0] == '/' || s[n - 1] == '/')
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!isalnum(c) && !strchr("._/-@+=", c))
			return 0;
		if (c == '/' && s[i + 1] == '/')
			return 0;
		/* no "." or ".." segments */
		if (c == '.' && (i == 0 || s[i - 1] == '/') &&
		    (i + 1 == n || s[i + 1] == '/' ||
		    (s[i + 1] == '.' && (i + 2 == n || s[i + 2] == '/'))))
			return 0;
	}
	return 1;
}

static int
valid_field(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n >= 128)
		return 0;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
			return 0;
	return 1;
}

int
ref_parse(const char *s, struct secret_ref *out, struct dmk_err *err)
{
	const char *colon, *hash, *p;
	size_t n = strlen(s);

	memset(out, 0, sizeof(*out));
	if (n == 0 || n >= sizeof(out->text))
		return dmk_errf(err, DMK_ERR_BADINPUT, "empty or overlong reference");
	if (strncmp(s, "file:", 5) == 0) {
		p = s + 5;
		if (p[0] != '/' || strlen(p) >= sizeof(out->path) || strstr(p, "/../"))
			return dmk_errf(err, DMK_ERR_BADINPUT,
			    "a file: reference needs an absolute path (file:/etc/dmkagent/NAME)");
		out->kind = REF_FILE;
		util_strlcpy(out->path, p, sizeof(out->path));
	} else if (strncmp(s, "env:", 4) == 0) {
		p = s + 4;
		if (!isalpha((unsigned char)p[0]) && p[0] != '_')
			return dmk_errf(err, DMK_ERR_BADINPUT,
			    "an env: reference needs a variable name (env:VAULT_TOKEN)");
		for (const char *q = p; *q; q++)
			if (!isalnum((unsigned char)*q) && *q != '_')
				return dmk_errf(err, DMK_ERR_BADINPUT,
				    "an env: reference needs a variable name (env:VAULT_TOKEN)");
		if (strlen(p) >= sizeof(out->path))
			return dmk_errf(err, DMK_ERR_BADINPUT, "variable name too long");
		out->kind = REF_ENV;
		util_strlcpy(out->path, p, sizeof(out->path));
	} else {
		if ((colon = strchr(s, ':')) == NULL || !valid_store_name(s, (size_t)(colon - s)))
			return dmk_errf(err, DMK_ERR_BADINPUT,
			    "not a reference (expected STORE:PATH[#FIELD], file:/path or env:NAME)");
		hash = strchr(colon + 1, '#');
		if (!valid_path(colon + 1, hash ? (size_t)(hash - colon - 1) : strlen(colon + 1)))
			return dmk_errf(err, DMK_ERR_BADINPUT,
			    "bad path in reference (letters, digits and ._/-@+= only; no leading, "
			    "trailing or double '/', no '.' or '..' segments)");
		if (hash != NULL && !valid_field(hash + 1, strlen(hash + 1)))
			return dmk_errf(err, DMK_ERR_BADINPUT,
			    "bad field after '#' in reference (letters, digits and ._- only)");
		out->kind = REF_STORE;
		memcpy(out->store, s, (size_t)(colon - s));
		if (hash) {
			memcpy(out->path, colon + 1, (size_t)(hash - colon - 1));
			util_strlcpy(out->field, hash + 1, sizeof(out->field));
		} else
			util_strlcpy(out->path, colon + 1, sizeof(out->path));
	}
	util_strlcpy(out->text, s, sizeof(out->text));
	return 0;
}

/* A file: reference must be a regular file owned by us or root, mode 0600 or stricter. */
static int
file_mode_ok(const struct stat *st, const char *path, struct dmk_err *err)
{
	if (!S_ISREG(st->st_mode))
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: not a regular file", path);
	if (st->st_uid != geteuid() && st->st_uid != 0)
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: owned by uid %u, neither this user nor "
		    "root", path, (unsigned)st->st_uid);
	if (st->st_mode & 077)
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: readable or writable by group or others "
		    "(mode %03o); run chmod 600 %s", path, (unsigned)(st->st_mode & 0777), path);
	return 0;
}

int
check_secret_file(const char *path, struct dmk_err *err)
{
	struct stat st;

	if (lstat(path, &st) == -1)
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: %s", path, strerror(errno));
	return file_mode_ok(&st, path, err);
}

int
read_secret_file(const char *path, struct secret **out, struct dmk_err *err)
{
	char chunk[4096];
	struct secret *s;
	struct stat st;
	ssize_t n;
	int fd, r;

	*out = NULL;
	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) == -1)
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st) == -1) {
		r = dmk_errf(err, DMK_ERR_CONFIG, "%s: %s", path, strerror(errno));
		close(fd);
		return r;
	}
	if ((r = file_mode_ok(&st, path, err)) != 0) {
		close(fd);
		return r;
	}
	if ((s = secret_new()) == NULL) {
		close(fd);
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	}
	while ((n = read(fd, chunk, sizeof(chunk))) > 0)
		if ((r = secret_append(s, chunk, (size_t)n)) != 0) {
			secure_wipe(chunk, sizeof(chunk));
			secret_free(s);
			close(fd);
			return dmk_errf(err, r, "%s: larger than %d bytes", path, SECRET_MAX);
		}
	secure_wipe(chunk, sizeof(chunk));
	close(fd);
	if (n < 0) {
		secret_free(s);
		return dmk_errf(err, DMK_ERR_IO, "%s: %s", path, strerror(errno));
	}
	secret_trim_newline(s);
	*out = s;
	return 0;
}
