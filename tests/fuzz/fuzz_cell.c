/*
 * fuzz_cell.c: arbitrary bytes as a result value through sql_cell_decode:
 * the first byte picks a db-lib type, the second a length (which may
 * disagree with the bytes present, as a hostile server's could, so the
 * value is copied into a buffer of exactly the length claimed).  A
 * decoded fixed-size value had exactly its size; a string has no NUL.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sybfront.h>
#include <sybdb.h>

#include "core/dmk.h"
#include "sql/sql.h"
#include "sql/sql_int.h"

static const int types[] = {
	SYBINT1, SYBBIT, SYBBITN, SYBINT2, SYBINT4, SYBINT8, SYBINTN, SYBBINARY,
	SYBVARBINARY, SYBIMAGE, SYBCHAR, SYBVARCHAR, SYBTEXT, SYBNVARCHAR, SYBNTEXT,
	36 /* uniqueidentifier */, SYBDATETIME, SYBFLT8, SYBDECIMAL,
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sql_value v;
	const char *why;
	unsigned char *val;
	long len;
	int t, rc;

	if (size < 2)
		return 0;
	t = types[data[0] % (sizeof(types) / sizeof(types[0]))];
	len = data[1] == 0xff ? -1 : (long)(data[1] % 64);
	data += 2;
	size -= 2;
	if (len > (long)size)
		len = (long)size;
	if ((val = malloc(len > 0 ? (size_t)len : 1)) == NULL)
		return 0;
	if (len > 0)
		memcpy(val, data, (size_t)len);
	rc = sql_cell_decode(t, len < 0 ? NULL : val, len, &v, &why);
	if (rc == 0) {
		if (v.type == SQLT_INT && !((t == SYBINT2 && len == 2) || (t == SYBINT4 && len == 4) ||
		    (t == SYBINT8 && len == 8) || len == 1 || (t == SYBINTN && (len == 2 ||
		    len == 4 || len == 8))))
			abort();
		if (v.type == SQLT_STR && (v.s == NULL || strlen(v.s) != v.len))
			abort();
		if (t == 36 && v.type == SQLT_STR && (len != 16 || v.len != 36))
			abort();
		free(v.s);
		free(v.bin);
	} else if (rc < 0 && rc != DMK_ERR_NOMEM && why == NULL)
		abort();
	free(val);
	return 0;
}
