/*
 * Fuzz target: audit verify reads hostile files; then a run appends one
 * record to the same file (reading its last line for seq and hash), and a
 * log that verified before must still verify after.
 */
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
	struct audit a;
	long long n;
	int ok;
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
	ok = audit_verify(path, key, &n, &macs, &e) == 0;
	if (audit_open(&a, path, key, "0123456789abcdef0123456789abcdef", &e) == 0) {
		int appended = audit_record(&a, "fuzz", NULL, NULL, "ok", NULL, &e) == 0;
		audit_close(&a);
		if (ok && appended && audit_verify(path, key, &n, &macs, &e) != 0)
			abort();
	}
	unlink(path);
	return 0;
}
