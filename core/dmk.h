/*
 * dmk.h: what every part of dmkagent shares: error codes, the error
 * message buffer, logging, and a few small helpers.
 *
 * Errors are values.  A function that can fail returns 0 (or a count) on
 * success and a negative DMK_ERR_* on failure, and writes one line of detail
 * into the caller's struct dmk_err.  The failure is described once, where it
 * is understood; callers pass the code up and do not add to the message
 * unless they add context the callee could not know (prefixing with
 * dmk_err_prefix()).
 *
 * No message, log line or audit record ever holds a secret: secrets live in
 * struct secret (secret.h), which has no formatting path.
 */
#ifndef DMK_H
#define DMK_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <time.h>

#define DMK_VERSION "0.1.0"

enum dmk_errcode {
	DMK_OK = 0,
	DMK_ERR_INTERNAL = -1,    /* a bug or an impossible state */
	DMK_ERR_NOMEM = -2,
	DMK_ERR_USAGE = -3,       /* bad command line */
	DMK_ERR_CONFIG = -4,      /* bad configuration; nothing changed */
	DMK_ERR_IO = -5,          /* local file or system call */
	DMK_ERR_LOCKED = -6,      /* another run holds the lock or lease */
	DMK_ERR_UNREACHABLE = -7, /* store or server unreachable; try later */
	DMK_ERR_AUTH = -8,        /* authentication refused */
	DMK_ERR_DENIED = -9,      /* authenticated, but not permitted */
	DMK_ERR_NOTFOUND = -10,   /* secret, version, key or object absent */
	DMK_ERR_CONFLICT = -11,   /* check-and-set or concurrent change */
	DMK_ERR_PROTOCOL = -12,   /* a peer answered something we cannot parse */
	DMK_ERR_TLS = -13,        /* TLS refused, unverified, or downgraded */
	DMK_ERR_SQL = -14,        /* SQL Server returned an error */
	DMK_ERR_POLICY = -15,     /* a password or name fails a policy */
	DMK_ERR_INCOMPLETE = -16, /* some replica or database not done */
	DMK_ERR_VERIFY = -17,     /* a check found a gap or a bad record */
	DMK_ERR_TOOBIG = -18,     /* a size limit was reached */
	DMK_ERR_DELETED = -19,    /* the secret exists but is deleted */
	DMK_ERR_UNSUPPORTED = -20,/* the store or server cannot do this */
	DMK_ERR_TIMEOUT = -21,    /* a deadline passed; try later */
	DMK_ERR_BADINPUT = -22,   /* bad data given to a function */
	DMK_ERR_WRONGPASS = -23,  /* a password does not open the key */
	DMK_ERR_INTERRUPTED = -24,/* SIGINT/SIGTERM: stopped at a step boundary */
};

/* Exit codes: the command-line contract (README, dmkagent(1)). */
enum dmk_exit {
	DMK_EXIT_OK = 0,
	DMK_EXIT_FAILED = 1,
	DMK_EXIT_USAGE = 2,
	DMK_EXIT_INCOMPLETE = 3,
	DMK_EXIT_LOCKED = 4,
	DMK_EXIT_UNREACHABLE = 5,
	DMK_EXIT_SIGNAL = 128,    /* + the signal number: stopped by SIGINT (130) or SIGTERM (143) */
};

/*
 * signal.c: SIGINT and SIGTERM ask the run to stop at its next step
 * boundary (never between two statements that belong together); the
 * commands check dmk_interrupted() there, finish their records and exit
 * DMK_EXIT_SIGNAL + the signal.  A second signal ends the process at once.
 */
void dmk_signals_install(void);
int dmk_interrupted(void);              /* 0, or the signal that asked to stop */
/* DMK_ERR_INTERRUPTED, with a message saying where the run stopped. */
struct dmk_err;
int dmk_err_interrupted(struct dmk_err *err, const char *where);

#define DMK_ERR_MSG_MAX 1024

/*
 * Invariant: msg is always NUL-terminated; code is 0 or a DMK_ERR_*.
 * Never format a secret into it.
 */
struct dmk_err {
	int code;
	char msg[DMK_ERR_MSG_MAX];
};

const char *dmk_strerror(int code);
int dmk_exit_code(int code);
/* Set err (if non-NULL) and return code, so callers can `return dmk_errf()`. */
int dmk_errf(struct dmk_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prepend context: "ctx: old message". Returns err->code. */
int dmk_err_prefix(struct dmk_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void dmk_err_clear(struct dmk_err *err);
/* Temporary failures a later run (or a retry) may get past. */
int dmk_err_is_temporary(int code);

/* Logging: stderr with levels, or syslog. */
enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };
void log_init(const char *progname, int level, int use_syslog);
void log_set_level(int level);
int log_get_level(void);
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

/* util.c */
/* Parse "90d", "12h", "30m", "45s", "2w" (or plain seconds) into seconds. */
int util_parse_duration(const char *s, long long *out);
/* RFC 3339 UTC with seconds: 2026-11-25T06:15:00Z. buf needs 21 bytes. */
void util_rfc3339(time_t t, char *buf, size_t len);
/* Parse RFC 3339 (Z or offset, optional fraction). */
int util_parse_rfc3339(const char *s, time_t *out);
/* Monotonic milliseconds. */
long long util_now_ms(void);
void util_sleep_ms(long long ms);
/* Random 32-hex-digit id. buf needs 33 bytes. */
int util_random_id(char *buf, size_t len);
/* Lowercase hex of len bytes into out (2*len+1). */
void util_hex(const unsigned char *in, size_t len, char *out);
/* strlcpy semantics: returns strlen(src). */
size_t util_strlcpy(char *dst, const char *src, size_t size);
/* True if the bytes are valid UTF-8 without NUL. */
int util_utf8_valid(const char *s, size_t len);
/* Levenshtein distance, for "did you mean". */
int util_edit_distance(const char *a, const char *b);

/*
 * A directory the agent writes private files in (state_dir): it must exist,
 * be a directory (not a symbolic link), be owned by the effective user and
 * not be writable by group or others.  DMK_ERR_CONFIG naming it otherwise.
 */
int util_check_private_dir(const char *path, struct dmk_err *err);
/*
 * Replace dir/name with data, atomically: written to dir/name.tmp created
 * with O_CREAT|O_EXCL|O_NOFOLLOW and mode 0600 (whatever was at the temporary
 * name, a symbolic link included, is unlinked first, never followed),
 * fsync'd, renamed over dir/name, and the directory fsync'd.  dir is checked
 * with util_check_private_dir first.  The one way to create a file under
 * state_dir.
 */
int util_write_file_atomic(const char *dir, const char *name, const void *data,
    size_t len, struct dmk_err *err);

/* Set up process hardening: no core dumps, not dumpable. */
int util_harden_process(struct dmk_err *err);

#endif
