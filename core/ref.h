/*
 * ref.h: secret references.  A reference names where a secret lives; it is
 * never the secret.  STORE:PATH[#FIELD] (a [store] section of the
 * configuration), file:/absolute/path (owner this user or root, mode 0600 or
 * stricter) or env:NAME (a store's bootstrap credential only).
 *
 * Parsing never echoes its input in a message: a string that does not parse
 * as a reference may be a literal password.
 */
#ifndef DMK_REF_H
#define DMK_REF_H

#include "dmk.h"

struct secret;

enum ref_kind { REF_STORE = 1, REF_FILE, REF_ENV };

/* STORE:PATH[#FIELD] | file:/absolute/path | env:NAME */
struct secret_ref {
	enum ref_kind kind;
	char store[64];
	char path[512];
	char field[128];
	char text[720];           /* as written; safe to print and audit */
};

/* Parse; the text is never a secret once it parses as a reference. */
int ref_parse(const char *s, struct secret_ref *out, struct dmk_err *err);

/* Read a file: reference into a new secret (caller frees with secret_free);
 * one trailing newline removed; refused unless owner and mode are safe. */
int read_secret_file(const char *path, struct secret **out, struct dmk_err *err);
/* The same checks without reading the file. */
int check_secret_file(const char *path, struct dmk_err *err);

#endif
