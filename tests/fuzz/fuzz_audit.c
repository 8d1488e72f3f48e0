/* Fuzz target: audit verify reads hostile files. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "agent/audit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[64];
	static struct secret *key;
	struct dmk_err e;
	long long n;
	int macs;
	FILE *f;

	if (path[0] == '\0') {
		snprintf(path, sizeof(path), "/tmp/dmk-fuzz-audit.%ld", (long)getpid());
		key = secret_from_str("fuzz-key");
	}
	if ((f = fopen(path, "w")) == NULL)
		return 0;
	fwrite(data, 1, size, f);
	fclose(f);
	audit_verify(path, NULL, &n, &macs, &e);
	audit_verify(path, key, &n, &macs, &e);
	unlink(path);
	return 0;
}
