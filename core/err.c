/* err.c: error codes to text, exit codes, the message buffer. */
#include <stdio.h>
#include <string.h>

#include "dmk.h"

static const struct {
	int code;
	const char *text;
	int exit;
} errtab[] = {
	{ DMK_OK, "success", DMK_EXIT_OK },
	{ DMK_ERR_INTERNAL, "internal error", DMK_EXIT_FAILED },
	{ DMK_ERR_NOMEM, "out of memory", DMK_EXIT_FAILED },
	{ DMK_ERR_USAGE, "usage error", DMK_EXIT_USAGE },
	{ DMK_ERR_CONFIG, "configuration error", DMK_EXIT_USAGE },
	{ DMK_ERR_IO, "input/output error", DMK_EXIT_FAILED },
	{ DMK_ERR_LOCKED, "another run holds the lock", DMK_EXIT_LOCKED },
	{ DMK_ERR_UNREACHABLE, "unreachable", DMK_EXIT_UNREACHABLE },
	{ DMK_ERR_AUTH, "authentication failed", DMK_EXIT_FAILED },
	{ DMK_ERR_DENIED, "permission denied", DMK_EXIT_FAILED },
	{ DMK_ERR_NOTFOUND, "not found", DMK_EXIT_FAILED },
	{ DMK_ERR_CONFLICT, "concurrent change (check-and-set failed)", DMK_EXIT_FAILED },
	{ DMK_ERR_PROTOCOL, "unexpected answer from peer", DMK_EXIT_FAILED },
	{ DMK_ERR_TLS, "TLS failure", DMK_EXIT_FAILED },
	{ DMK_ERR_SQL, "SQL Server error", DMK_EXIT_FAILED },
	{ DMK_ERR_POLICY, "policy violation", DMK_EXIT_FAILED },
	{ DMK_ERR_INCOMPLETE, "incomplete", DMK_EXIT_INCOMPLETE },
	{ DMK_ERR_VERIFY, "verification failed", DMK_EXIT_FAILED },
	{ DMK_ERR_TOOBIG, "size limit exceeded", DMK_EXIT_FAILED },
	{ DMK_ERR_DELETED, "deleted", DMK_EXIT_FAILED },
	{ DMK_ERR_UNSUPPORTED, "not supported", DMK_EXIT_FAILED },
	{ DMK_ERR_TIMEOUT, "timed out", DMK_EXIT_UNREACHABLE },
	{ DMK_ERR_BADINPUT, "invalid input", DMK_EXIT_FAILED },
	{ DMK_ERR_WRONGPASS, "password does not open the key", DMK_EXIT_FAILED },
	{ DMK_ERR_INTERRUPTED, "interrupted", DMK_EXIT_SIGNAL },
};

const char *
dmk_strerror(int code)
{
	size_t i;

	for (i = 0; i < sizeof(errtab) / sizeof(errtab[0]); i++)
		if (errtab[i].code == code)
			return errtab[i].text;
	return "unknown error";
}

int
dmk_exit_code(int code)
{
	size_t i;

	if (code >= 0)
		return DMK_EXIT_OK;
	for (i = 0; i < sizeof(errtab) / sizeof(errtab[0]); i++)
		if (errtab[i].code == code)
			return errtab[i].exit;
	return DMK_EXIT_FAILED;
}

int
dmk_err_is_temporary(int code)
{
	return code == DMK_ERR_UNREACHABLE || code == DMK_ERR_TIMEOUT ||
	    code == DMK_ERR_LOCKED;
}

int
dmk_errf(struct dmk_err *err, int code, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL)
		return code;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return code;
}

int
dmk_err_prefix(struct dmk_err *err, const char *fmt, ...)
{
	char pre[DMK_ERR_MSG_MAX], old[DMK_ERR_MSG_MAX];
	va_list ap;

	if (err == NULL)
		return DMK_ERR_INTERNAL;
	va_start(ap, fmt);
	vsnprintf(pre, sizeof(pre), fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	snprintf(err->msg, sizeof(err->msg), "%s: %s", pre, old);
	return err->code;
}

void
dmk_err_clear(struct dmk_err *err)
{
	if (err == NULL)
		return;
	err->code = 0;
	err->msg[0] = '\0';
}
