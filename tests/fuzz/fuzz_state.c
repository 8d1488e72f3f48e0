/*
 * fuzz_state.c: what the agent reads back from disk and from the stores
 * besides its configuration and audit log.  The first byte picks:
 *   0  state_dir/registered.json (regstate_get, regstate_stage over it);
 *   1  an escrowed backup record from a store (JSON; its base64 fields
 *      "data", "certificate", "private_key" through escrow_b64_decode);
 *   2  raw base64 (escrow_b64_decode; what decodes must encode back the
 *      same) and an RFC 3339 time (util_parse_rfc3339, lease expiry).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "core/dmk.h"
#include "core/buf.h"
#include "agent/agent.h"
#include "agent/replicas.h"
#include "agent/backup.h"

static struct config cfg;
static char path[300];

static void
cleanup(void)
{
	unlink(path);
	rmdir(cfg.state_dir);
}

static void
regstate(const uint8_t *data, size_t size)
{
	static struct agent a;
	char ver[80], cred[160];
	int fd;

	if (cfg.state_dir[0] == '\0') {
		snprintf(cfg.state_dir, sizeof(cfg.state_dir), "/tmp/dmk-fuzz-state-%d",
		    (int)getpid());
		if (mkdir(cfg.state_dir, 0700) == -1 && errno != EEXIST)
			abort();
		snprintf(path, sizeof(path), "%s/registered.json", cfg.state_dir);
		a.cfg = &cfg;
		atexit(cleanup);
	}
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) == -1)
		abort();
	if (write(fd, data, size) != (ssize_t)size)
		abort();
	close(fd);
	regstate_get(&a, "ag1", "SQL1", "fam1", ver, sizeof(ver), cred, sizeof(cred));
	regstate_stage(&a, "ag1", "SQL1", "fam1", "hcv:sql/db1", "3", NULL, 0);
	regstate_stage(&a, "ag1", "SQL2", "fam1", "hcv:sql/db1", "3", "cred1", 1);
	regstate_stage(&a, "ag2", "SQL1", "fam2", "hcv:sql/db2", "1", NULL, 1);
	/* what was staged reads back, whatever the file held */
	if (regstate_get(&a, "ag1", "SQL1", "fam1", ver, sizeof(ver), cred, sizeof(cred)) != 0 ||
	    strcmp(ver, "3") != 0)
		abort();
	if (regstate_get(&a, "ag1", "SQL2", "fam1", ver, sizeof(ver), cred, sizeof(cred)) != 0 ||
	    strcmp(cred, "cred1") != 0)
		abort();
	json_decref(a.regstate);
	a.regstate = NULL;
	a.regstate_dirty = 0;
}

static void
decode(const char *s, size_t n)
{
	unsigned char *out = NULL;
	size_t len = 0;
	struct buf b;

	if (escrow_b64_decode(s, n, &out, &len) != 0)
		return;
	/* what decodes is canonical base64 or not; re-encoded, it decodes the same */
	buf_init(&b, 0);
	if (escrow_b64_encode(out, len, &b) == 0) {
		unsigned char *again = NULL;
		size_t alen = 0;
		if (escrow_b64_decode(b.data ? b.data : "", b.len, &again, &alen) != 0 ||
		    alen != len || (len > 0 && memcmp(again, out, len) != 0))
			abort();
		free(again);
	}
	buf_free(&b);
	free(out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const fields[] = { "data", "certificate", "private_key" };
	json_t *o, *v;
	char *s;
	time_t t;
	size_t i;

	if (size < 1)
		return 0;
	switch (data[0] % 3) {
	case 0:
		regstate(data + 1, size - 1);
		break;
	case 1:
		if ((o = json_loadb((const char *)data + 1, size - 1, 0, NULL)) == NULL)
			break;
		for (i = 0; json_is_object(o) && i < 3; i++)
			if (json_is_string(v = json_object_get(o, fields[i])))
				decode(json_string_value(v), json_string_length(v));
		json_decref(o);
		break;
	case 2:
		decode((const char *)data + 1, size - 1);
		if ((s = malloc(size)) != NULL) {
			memcpy(s, data + 1, size - 1);
			s[size - 1] = '\0';
			util_parse_rfc3339(s, &t);
			free(s);
		}
		break;
	}
	return 0;
}
