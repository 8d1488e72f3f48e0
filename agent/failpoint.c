/* failpoint.c: see failpoint.h. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/dmk.h"
#include "failpoint.h"

#ifdef DMK_FAILPOINTS
/*
 * Is this hit of name the one spec asks for?  spec is NAME, or NAME#N: the
 * Nth time the process reaches NAME (a rotation's batch passes each
 * boundary once per database: rotate:after-add#2 is the batch's second
 * database past its ADD).  *hits counts this spec's hits.
 */
static int
fp_match(const char *spec, const char *name, long *hits)
{
	const char *hash;
	size_t len;
	long n = 1;

	if (spec == NULL)
		return 0;
	if ((hash = strchr(spec, '#')) != NULL) {
		len = (size_t)(hash - spec);
		n = strtol(hash + 1, NULL, 10);
	} else
		len = strlen(spec);
	if (strlen(name) != len || strncmp(spec, name, len) != 0)
		return 0;
	return ++*hits == n;
}

void
failpoint(const char *name)
{
	static long want_hits, stop_hits;
	const char *want = getenv("DMKAGENT_FAILPOINT");
	const char *stop = getenv("DMKAGENT_FAILPOINT_STOP");

	if (fp_match(stop, name, &stop_hits)) {
		log_warn("failpoint %s: stopping (SIGSTOP) until continued", name);
		raise(SIGSTOP);
	}
	if (fp_match(want, name, &want_hits)) {
		log_warn("failpoint %s: killing myself", name);
		kill(getpid(), SIGKILL);
		_exit(137);
	}
}
#endif
