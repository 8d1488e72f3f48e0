/* lock.h: the local run lock (flock on STATE_DIR/dmkagent.lock). */
#ifndef DMK_LOCK_H
#define DMK_LOCK_H
#include "core/dmk.h"
/* DMK_ERR_LOCKED when another run holds it after wait_seconds. */
int lock_acquire(const char *state_dir, long long wait_seconds, int *fd, struct dmk_err *err);
void lock_release(int fd);
#endif
