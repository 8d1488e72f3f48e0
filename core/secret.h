/*
 * secret.h: the one type that holds a password, token or private key.
 *
 * Invariants, relied on everywhere:
 *  - The bytes live in their own anonymous mapping, locked in memory where
 *    the system allows it (one warning when it cannot) and excluded from
 *    core dumps (MADV_DONTDUMP).
 *  - The contents are always followed by a NUL byte, so secret_reveal() can be
 *    handed to an API that wants a C string; len excludes that NUL.
 *  - secret_free() wipes every byte of the mapping (OPENSSL_cleanse) before
 *    unmapping it; growing a secret wipes the old mapping the same way.
 *  - There is no formatting path: nothing here prints, and callers must only
 *    pass secret_reveal() into the one API that needs the value (a TLS
 *    session, an RPC parameter, a JSON body sent over HTTPS), never into a
 *    printf-like function, a log line, an error buffer or an audit record.
 */
#ifndef DMK_SECRET_H
#define DMK_SECRET_H

#include <stddef.h>

struct secret;

#define SECRET_MAX (1024 * 1024)   /* 1 MiB: a PEM key chain fits */

struct secret *secret_new(void);
struct secret *secret_from(const void *data, size_t len);
struct secret *secret_from_str(const char *s);
struct secret *secret_dup(const struct secret *s);
void secret_free(struct secret *s);

/* Append bytes; -2 (DMK_ERR_NOMEM) or -18 (DMK_ERR_TOOBIG) on failure. */
int secret_append(struct secret *s, const void *data, size_t len);
void secret_clear(struct secret *s);       /* wipe, keep the mapping */
void secret_trim_newline(struct secret *s); /* drop one trailing \n or \r\n */

size_t secret_len(const struct secret *s);
/* The value, NUL-terminated. Only for handing to the API that needs it. */
const char *secret_reveal(const struct secret *s);
/* Constant-time comparison: 1 equal, 0 not. */
int secret_equal(const struct secret *a, const struct secret *b);
/* Constant-time check whether the secret occurs anywhere in [hay, hay+n). */
int secret_occurs_in(const struct secret *s, const void *hay, size_t n);

/* Wipe ordinary memory (OPENSSL_cleanse). */
void secure_wipe(void *p, size_t n);
/* free() that wipes first; the allocator behind json_set_alloc_funcs. */
void *wiping_malloc(size_t n);
void wiping_free(void *p);
/* Free what json_dumps() returned, with Jansson's current allocator. */
void json_free_dump(void *p);
/*
 * Install Jansson's allocator: locked, dump-excluded memory wiped on free
 * (core/lockmem.h), so a parsed response that holds a secret value or a
 * token is kept like the secret type keeps it.
 */
void secret_install_json_allocator(void);

/*
 * Secrets from the environment (VAULT_TOKEN, AZURE_CLIENT_SECRET, env:NAME
 * references).  The first call for a name copies the value into a secret
 * kept for the process, overwrites the value's bytes in place (the initial
 * environment is what /proc/PID/environ shows, and unsetenv() does not touch
 * it) and unsets the variable, so a child process or a reader of
 * /proc/PID/environ never sees it; later calls get the kept copy.
 * secret_env_take() returns a copy for the caller to free (NULL when the
 * variable is unset or empty, or out of memory: secret_env_present tells
 * which).  Call it early, before threads start: unsetenv() is not
 * thread-safe against getenv().
 */
struct secret *secret_env_take(const char *name);
int secret_env_present(const char *name);
/* Drop the kept copy (for tests that unset a variable between cases). */
void secret_env_forget(const char *name);
/* Take each of a NULL-terminated list of names now (at start-up). */
void secret_env_scrub(const char *const *names);

#endif
