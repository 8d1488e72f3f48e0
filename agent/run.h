/* run.h: what run (cmd_run.c) shares with watch (watch.c). */
#ifndef DMK_RUN_H
#define DMK_RUN_H

#include <signal.h>

/* Set by SIGTERM or SIGINT once run_catch_signals() was called: a pass
 * stops at its next step boundary, a wait at once. */
extern volatile sig_atomic_t run_stop;
void run_catch_signals(void);
/* Sleep ms, or less when run_stop is set: 0, or -1 when stopped. */
int run_sleep(long long ms);
/* sd_notify(3) without libsystemd: msg to $NOTIFY_SOCKET, if set (services). */
void run_notify(const char *msg);

#endif
