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

	if (want != NULL && strcmp(want, name) == 0) {
		log_warn("failpoint %s: killing myself", name);
		kill(getpid(), SIGKILL);
		_exit(137);
	}
}
#endif
