/*
 * signal.c: SIGINT and SIGTERM stop a run at its next step boundary; a
 * second one ends the process at once (dmk.h).
 */
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "dmk.h"

static volatile sig_atomic_t stop_signal;

static void
on_signal(int sig)
{
	static const char again[] = "dmkagent: stopping now\n";
	static const char first[] = "dmkagent: stopping at the next step boundary (again to "
	    "stop at once)\n";

	if (stop_signal != 0) {
		(void)!write(STDERR_FILENO, again, sizeof(again) - 1);
		_exit(DMK_EXIT_SIGNAL + sig);
	}
	stop_signal = sig;
	(void)!write(STDERR_FILENO, first, sizeof(first) - 1);
}

void
dmk_signals_install(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

int
dmk_interrupted(void)
{
	return stop_signal;
}

int
dmk_err_interrupted(struct dmk_err *err, const char *where)
{
	return dmk_errf(err, DMK_ERR_INTERRUPTED, "interrupted by %s %s; a rerun resumes there",
	    stop_signal == SIGINT ? "SIGINT" : stop_signal == SIGTERM ? "SIGTERM" : "a signal",
	    where);
}
