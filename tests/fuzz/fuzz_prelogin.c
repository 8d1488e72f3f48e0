/*
 * fuzz_prelogin.c: arbitrary bytes as a PRELOGIN message through
 * relay_parse_prelogin.  A message it accepts has a terminated option
 * table, and each option's value inside the message after the table; the
 * check here re-derives that from the bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "sql/relay_int.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct relay_prelogin pl;
	const char *why;
	size_t pos, end, off, len;
	unsigned char *copy;

	/* an exact-size copy, so that ASan sees any read past the end */
	if ((copy = malloc(size ? size : 1)) == NULL)
		return 0;
	memcpy(copy, data, size);
	if (relay_parse_prelogin(copy, size, &pl, &why) != 0) {
		if (why == NULL)
			abort();
		free(copy);
		return 0;
	}
	for (pos = 0; pos < size && copy[pos] != 0xff; pos += 5)
		;
	if (pos >= size)
		abort();   /* accepted without a terminator */
	end = pos + 1;
	for (pos = 0; copy[pos] != 0xff; pos += 5) {
		off = ((size_t)copy[pos + 1] << 8) | copy[pos + 2];
		len = ((size_t)copy[pos + 3] << 8) | copy[pos + 4];
		if (off < end || off + len > size)
			abort();
		if (copy[pos] == 0x01 && (len != 1 || pl.enc != copy[off]))
			abort();
	}
	free(copy);
	return 0;
}
