/* lock.c: one run per state directory (flock), waiting up to --wait. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/dmk.h"
#include "lock.h"

int
lock_acquire(const char *state_dir, long long wait_seconds, int *fdp, struct dmk_err *err)
{
	char path[4200];
	long long deadline = util_now_ms() + wait_seconds * 1000;
	int fd, r;

	*fdp = -1;
	if (mkdir(state_dir, 0700) == -1 && errno != EEXIST)
		return dmk_errf(err, DMK_ERR_IO, "%s: cannot create state directory: %s",
		    state_dir, strerror(errno));
	/* Files are created in it: nobody else may plant or swap them. */
	if ((r = util_check_private_dir(state_dir, err)) != 0)
		return r;
	snprintf(path, sizeof(path), "%s/dmkagent.lock", state_dir);
	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) == -1)
		return dmk_errf(err, DMK_ERR_IO, "%s: %s", path, strerror(errno));
	for (;;) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			break;
		if (errno != EWOULDBLOCK && errno != EINTR) {
			close(fd);
			return dmk_errf(err, DMK_ERR_IO, "%s: flock: %s", path, strerror(errno));
		}
		if (util_now_ms() >= deadline) {
			close(fd);
			return dmk_errf(err, DMK_ERR_LOCKED, "another dmkagent run holds %s%s", path,
			    wait_seconds ? " (waited --wait seconds)" : "; use --wait SECONDS to wait");
		}
		util_sleep_ms(100);
	}
	/* The holder's pid, for people looking at the file. */
	if (ftruncate(fd, 0) == 0) {
		char pid[32];
		int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
		if (pwrite(fd, pid, (size_t)n, 0) < 0)
			log_debug("%s: cannot record pid", path);
	}
	*fdp = fd;
	return 0;
}

void
lock_release(int fd)
{
	if (fd >= 0) {
		flock(fd, LOCK_UN);
		close(fd);
	}
}
