/* failpoint.c: see failpoint.h. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/dmk.h"
#include "failpoint.h"

#ifdef DMK_FAILPOINTS
void
failpoint(const char *name)
{
	const char *want = getenv("DMKAGENT_FAILPOINT");
	const char *stop = getenv("DMKAGENT_FAILPOINT_STOP");

	if (stop != NULL && strcmp(stop, name) == 0) {
		log_warn("failpoint %s: stopping (SIGSTOP) until continued", name);
		raise(SIGSTOP);
	}
	if (want != NULL && strcmp(want, name) == 0) {
		log_warn("failpoint %s: killing myself", name);
		kill(getpid(), SIGKILL);
		_exit(137);
	}
}
#endif
