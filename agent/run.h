/* run.h: what run (cmd_run.c) shares with watch (cmd_watch.c). */
#ifndef DMK_RUN_H
#define DMK_RUN_H

#include <signal.h>

/* SIGTERM/SIGINT are core's (dmk_signals_install, dmk_interrupted): a pass
 * stops at its next step boundary, a wait at once. */
/* Sleep ms, or less when a signal asked to stop: 0, or -1 when stopped. */
int run_sleep(long long ms);
/* sd_notify(3) without libsystemd: msg to $NOTIFY_SOCKET, if set (services). */
void run_notify(const char *msg);

#endif
