/* Fuzz target: secret references; a parsed reference round-trips. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "agent/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct secret_ref r, r2;
	struct dmk_err e;
	char t[1024];

	if (size >= sizeof(t))
		return 0;
	memcpy(t, data, size);
	t[size] = '\0';
	if (ref_parse(t, &r, &e) == 0) {
		if (ref_parse(r.text, &r2, &e) != 0 || memcmp(&r, &r2, sizeof(r)) != 0)
			abort();
		if (r.kind == REF_STORE && (r.path[0] == '/' || strstr(r.path, "//")))
			abort();
	}
	return 0;
}
