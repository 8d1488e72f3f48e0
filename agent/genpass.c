/* genpass.c: password generation without modulo bias; the policy check. */
#include <ctype.h>
#include <string.h>

#include <openssl/rand.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "genpass.h"

static const char *const class_chars[4] = {
	"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
	"abcdefghijklmnopqrstuvwxyz",
	"0123456789",
	"!#$%&()*+,-./:;<=>?@[]^_{|}~",
};
static const char *const class_names[4] = { "upper-case", "lower-case", "digit", "symbol" };

int
pass_alphabet(const struct pass_policy *p, char classes[4][96], size_t sizes[4],
    struct dmk_err *err)
{
	int c;

	for (c = 0; c < 4; c++) {
		const char *s;
		sizes[c] = 0;
		for (s = class_chars[c]; *s; s++)
			if (strchr(p->avoid, *s) == NULL)
				classes[c][sizes[c]++] = *s;
		classes[c][sizes[c]] = '\0';
		if (sizes[c] == 0)
			return dmk_errf(err, DMK_ERR_POLICY, "password_avoid removes every %s "
			    "character; SQL Server's policy needs them", class_names[c]);
	}
	return 0;
}

int
pass_random_index(size_t n, size_t *out)
{
	unsigned char b;
	unsigned limit;

	if (n == 0 || n > 256)
		return DMK_ERR_BADINPUT;
	limit = 256 - (256 % (unsigned)n);   /* accept only whole multiples of n */
	do {
		if (RAND_bytes(&b, 1) != 1)
			return DMK_ERR_INTERNAL;
	} while (b >= limit);
	*out = b % n;
	return 0;
}

int
genpass(const struct pass_policy *p, struct secret **out, struct dmk_err *err)
{
	char classes[4][96], all[400];
	size_t sizes[4], nall = 0, idx;
	struct secret *s = NULL;
	int c, r, tries, i;

	*out = NULL;
	if (p->length < PASS_MIN || p->length > PASS_MAX)
		return dmk_errf(err, DMK_ERR_POLICY, "password length must be %d to %d, not %d",
		    PASS_MIN, PASS_MAX, p->length);
	if ((r = pass_alphabet(p, classes, sizes, err)) != 0)
		return r;
	for (c = 0; c < 4; c++) {
		memcpy(all + nall, classes[c], sizes[c]);
		nall += sizes[c];
	}
	if ((s = secret_new()) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	/*
	 * Draw every character uniformly from the whole alphabet and start over
	 * when a class is missing: the result is uniform over the passwords that
	 * hold all four classes (placing one of each at fixed spots would not be).
	 */
	for (tries = 0; tries < 10000; tries++) {
		int seen[4] = { 0, 0, 0, 0 };
		secret_clear(s);
		for (i = 0; i < p->length; i++) {
			char ch;
			if ((r = pass_random_index(nall, &idx)) != 0)
				goto fail;
			ch = all[idx];
			for (c = 0; c < 4; c++)
				if (strchr(classes[c], ch))
					seen[c] = 1;
			if ((r = secret_append(s, &ch, 1)) != 0)
				goto fail;
			ch = 0;
		}
		if (seen[0] && seen[1] && seen[2] && seen[3]) {
			*out = s;
			return 0;
		}
	}
	r = DMK_ERR_INTERNAL;
fail:
	secret_free(s);
	return dmk_errf(err, r, "cannot generate a password");
}

int
pass_policy_check(const struct secret *pw, struct dmk_err *err)
{
	const unsigned char *p = (const unsigned char *)secret_reveal(pw);
	size_t len = secret_len(pw), chars = 0, i;
	int cls[4] = { 0, 0, 0, 0 }, n;

	if (!util_utf8_valid((const char *)p, len))
		return dmk_errf(err, DMK_ERR_POLICY, "the password is not valid UTF-8 or holds a "
		    "NUL character");
	for (i = 0; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			chars++;
		if (isupper(p[i]))
			cls[0] = 1;
		else if (islower(p[i]))
			cls[1] = 1;
		else if (isdigit(p[i]))
			cls[2] = 1;
		else if (p[i] < 0x80 || (p[i] & 0xc0) != 0x80)
			cls[3] = 1;   /* symbols, and other (non-ASCII) characters */
	}
	if (chars < PASS_MIN)
		return dmk_errf(err, DMK_ERR_POLICY, "the password is too short: SQL Server needs "
		    "at least %d characters (it has %zu)", PASS_MIN, chars);
	if (chars > PASS_MAX)
		return dmk_errf(err, DMK_ERR_POLICY, "the password is too long: SQL Server allows "
		    "at most %d characters (it has %zu)", PASS_MAX, chars);
	n = cls[0] + cls[1] + cls[2] + cls[3];
	if (n < 3)
		return dmk_errf(err, DMK_ERR_POLICY, "the password is not complex enough: SQL "
		    "Server needs characters from three of upper-case, lower-case, digits and "
		    "symbols (it has %d)", n);
	return 0;
}
