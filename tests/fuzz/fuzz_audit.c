/*
 * Fuzz target: audit verify reads hostile files and hostile checkpoints;
 * a run appends one record to the same file (reading its last line for seq
 * and hash), and a log that verified before must still verify after.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/dmk.h"
#include "core/buf.h"
#include "core/secret.h"
#include "agent/audit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[64], path2[64];
	static struct secret *key;
	static struct audit_report rep;
	const char *both[2];
	struct audit_ckpt c;
	struct audit_check chk = { "fuzz", &c };
	struct dmk_err e;
	struct audit a;
	long long n;
	int ok;
	int macs;
	size_t half = size / 2;
	FILE *f;

	if (path[0] == '\0') {
		snprintf(path, sizeof(path), "/tmp/dmk-fuzz-audit.%ld", (long)getpid());
		snprintf(path2, sizeof(path2), "/tmp/dmk-fuzz-audit2.%ld", (long)getpid());
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
	/* The same bytes as a checkpoint, with and without the key. */
	audit_ckpt_parse((const char *)data, size, NULL, "fuzz", &c, &e);
	if (audit_ckpt_parse((const char *)data, size, key, "fuzz", &c, &e) != 0) {
		memset(&c, 0, sizeof(c));
		c.seq = (long long)(size % 7);
	}
	/* Split in two files, verified as one log against that checkpoint. */
	if ((f = fopen(path, "w")) != NULL) {
		fwrite(data, 1, half, f);
		fclose(f);
	}
	if ((f = fopen(path2, "w")) != NULL) {
		fwrite(data + half, 1, size - half, f);
		fclose(f);
	}
	both[0] = path;
	both[1] = path2;
	buf_init(&rep.notes, 65536);
	audit_verify_files(both, 2, NULL, &chk, 1, &rep, &e);
	buf_free(&rep.notes);
	unlink(path);
	unlink(path2);
	return 0;
}
