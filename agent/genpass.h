/*
 * genpass.h: password generation and SQL Server's password policy.
 *
 * SQL Server checks DMK, certificate and backup passwords against the
 * Windows policy (or, on Linux, its own): 8 to 128 characters, with
 * characters from at least three of four classes (upper, lower, digit,
 * symbol).  Generated passwords have all four, so they pass everywhere.
 */
#ifndef DMK_GENPASS_H
#define DMK_GENPASS_H

#include "core/dmk.h"

struct secret;

#define PASS_MIN 8
#define PASS_MAX 128
#define PASS_DEFAULT 32

struct pass_policy {
	int length;             /* PASS_MIN..PASS_MAX */
	char avoid[128];        /* characters never to use */
};

/* The four classes after removing avoid; sets sizes.  0 or DMK_ERR_POLICY. */
int pass_alphabet(const struct pass_policy *p, char classes[4][96], size_t sizes[4],
    struct dmk_err *err);
/* Uniform over passwords of the alphabet that hold every class. */
int genpass(const struct pass_policy *p, struct secret **out, struct dmk_err *err);
/* SQL Server's policy: DMK_ERR_POLICY with the reason (never the password). */
int pass_policy_check(const struct secret *pw, struct dmk_err *err);
/* Unbiased random index in [0, n), by rejection sampling. */
int pass_random_index(size_t n, size_t *out);

#endif
