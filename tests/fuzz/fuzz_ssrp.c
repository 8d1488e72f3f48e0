/*
 * fuzz_ssrp.c: arbitrary bytes as a SQL Server Browser answer (SVR_RESP)
 * through sql_ssrp_parse.  An accepted answer has a header whose
 * RESP_SIZE is exactly the rest of the datagram, at most 1024 bytes, and
 * gives a port 1..65535.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "sql/sql.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *why = NULL;
	unsigned char *copy;
	int port = 0, rc;

	/* an exact-size copy, so that ASan sees any read past the end */
	if ((copy = malloc(size ? size : 1)) == NULL)
		return 0;
	memcpy(copy, data, size);
	rc = sql_ssrp_parse(copy, size, "INST1", &port, &why);
	if (rc != 0 && why == NULL)
		abort();
	if (rc == 0 && (size < 3 || copy[0] != 0x05 ||
	    (size_t)(copy[1] | (copy[2] << 8)) != size - 3 || size - 3 > 1024 ||
	    port < 1 || port > 65535))
		abort();
	free(copy);
	return 0;
}
