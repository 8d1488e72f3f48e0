/*
 * escrow.c: the pure parts of backup escrow: where a backup goes in the
 * store (escrow_ref) and base64 for the bytes (escrow_b64_*).  No network,
 * no SQL: unit-tested in tests/backup/test_backup_unit.c.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "core/dmk.h"
#include "core/buf.h"
#include "core/secret.h"
#include "backup.h"
#include "providers/provider.h"

/* Escrow names fit every store (the shortest name any store's table allows),
 * so that a backup's name does not depend on which store holds it. */
#define ESCROW_NAME_MAX prov_min_name_max()

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int
escrow_b64_encode(const unsigned char *in, size_t n, struct buf *out)
{
	char q[4];
	size_t i;
	int r;

	for (i = 0; i + 2 < n; i += 3) {
		q[0] = b64chars[in[i] >> 2];
		q[1] = b64chars[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
		q[2] = b64chars[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
		q[3] = b64chars[in[i + 2] & 63];
		if ((r = buf_append(out, q, 4)) != 0)
			return r;
	}
	if (i < n) {
		q[0] = b64chars[in[i] >> 2];
		if (i + 1 < n) {
			q[1] = b64chars[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
			q[2] = b64chars[(in[i + 1] & 15) << 2];
		} else {
			q[1] = b64chars[(in[i] & 3) << 4];
			q[2] = '=';
		}
		q[3] = '=';
		if ((r = buf_append(out, q, 4)) != 0)
			return r;
	}
	return 0;
}

static int
b64val(unsigned char c)
{
	const char *p;

	if (c == '\0' || (p = strchr(b64chars, c)) == NULL)
		return -1;
	return (int)(p - b64chars);
}

int
escrow_b64_decode(const char *in, size_t n, unsigned char **out, size_t *outlen)
{
	unsigned char *o;
	size_t i, k = 0;
	int v[4], j;

	*out = NULL;
	*outlen = 0;
	if (n % 4 != 0)
		return DMK_ERR_BADINPUT;
	if ((o = malloc(n / 4 * 3 + 1)) == NULL)
		return DMK_ERR_NOMEM;
	for (i = 0; i < n; i += 4) {
		int pad = 0;
		for (j = 0; j < 4; j++) {
			if (in[i + j] == '=' && i + 4 == n && j >= 2) {
				v[j] = 0;
				pad++;
				continue;
			}
			if (pad > 0 || (v[j] = b64val((unsigned char)in[i + j])) < 0)
				goto bad;
		}
		o[k++] = (unsigned char)((v[0] << 2) | (v[1] >> 4));
		if (pad < 2)
			o[k++] = (unsigned char)(((v[1] & 15) << 4) | (v[2] >> 2));
		if (pad < 1)
			o[k++] = (unsigned char)(((v[2] & 3) << 6) | v[3]);
	}
	*out = o;
	*outlen = k;
	return 0;
bad:
	secure_wipe(o, n / 4 * 3 + 1);
	free(o);
	return DMK_ERR_BADINPUT;
}

void
escrow_slug(const char *item, size_t max, char *out, size_t outlen)
{
	size_t i, k = 0;

	if (outlen == 0)
		return;
	for (i = 0; item[i] != '\0' && k < max && k + 1 < outlen; i++) {
		unsigned char c = (unsigned char)item[i];
		char d = isalnum(c) && c < 128 ? (char)tolower(c) : '-';
		/* one dash for a run of other characters; none at either end */
		if (d == '-' && (k == 0 || out[k - 1] == '-'))
			continue;
		out[k++] = d;
	}
	while (k > 0 && out[k - 1] == '-')
		k--;
	out[k] = '\0';
}

int
escrow_ref(const struct secret_ref *base, const char *kind, const char *item,
    struct secret_ref *out, struct dmk_err *err)
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	char suffix[160], hash[17], slug[64], text[sizeof(out->text) + 64];
	size_t room, plen;

	if (base->kind != REF_STORE)
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: backups are escrowed in a store, and this "
		    "is not a store reference", base->text);
	plen = strlen(base->path);
	if (item == NULL)
		snprintf(suffix, sizeof(suffix), "-backup-%s", kind);
	else {
		/* The name as readable as the store allows, and a hash that keeps
		 * names that differ only in case or punctuation apart. */
		SHA256((const unsigned char *)item, strlen(item), md);
		util_hex(md, 4, hash);
		room = ESCROW_NAME_MAX > plen + strlen(kind) + 18 ?
		    ESCROW_NAME_MAX - plen - strlen(kind) - 18 : 0;
		escrow_slug(item, room < 40 ? room : 40, slug, sizeof(slug));
		snprintf(suffix, sizeof(suffix), "-backup-%s-%s%s%s", kind, slug,
		    slug[0] ? "-" : "", hash);
	}
	snprintf(text, sizeof(text), "%s:%s%s%s%s", base->store, base->path, suffix,
	    base->field[0] ? "#" : "", base->field);
	if (ref_parse(text, out, err) != 0)
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: no room for the backup's name after "
		    "this path (%zu characters)", base->text, plen);
	return 0;
}
