/* deployhook.c: [agent] hook_command (deployhook.h). */
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/syscall.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/dmk.h"
#include "agent.h"
#include "agcmd.h"
#include "deployhook.h"

#define HOOK_NENV 10

/* DMKAGENT_OUTCOME: the exit class of the change's outcome. */
static const char *
outcome_name(int code)
{
	switch (code == 0 ? DMK_EXIT_OK : dmk_exit_code(code)) {
	case DMK_EXIT_OK: return "ok";
	case DMK_EXIT_USAGE: return "usage";
	case DMK_EXIT_INCOMPLETE: return "incomplete";
	case DMK_EXIT_LOCKED: return "locked";
	case DMK_EXIT_UNREACHABLE: return "unreachable";
	default: return "failed";
	}
}

int
deployhook_check(const char *path, struct dmk_err *err)
{
	struct stat st;

	if (path[0] != '/')
		return dmk_errf(err, DMK_ERR_CONFIG, "hook_command %s: not an absolute path", path);
	if (lstat(path, &st) == -1)
		return dmk_errf(err, DMK_ERR_CONFIG, "hook_command %s: %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode))
		return dmk_errf(err, DMK_ERR_CONFIG, "hook_command %s: not a regular file (a "
		    "symbolic link is refused)", path);
	if (st.st_uid != geteuid() && st.st_uid != 0)
		return dmk_errf(err, DMK_ERR_CONFIG, "hook_command %s: owned by uid %u, neither "
		    "this user nor root", path, (unsigned)st.st_uid);
	if (st.st_mode & 022)
		return dmk_errf(err, DMK_ERR_CONFIG, "hook_command %s: writable by group or others "
		    "(mode %03o); run chmod go-w %s", path, (unsigned)(st.st_mode & 0777), path);
	if (access(path, X_OK) == -1)
		return dmk_errf(err, DMK_ERR_CONFIG, "hook_command %s: not executable: %s", path,
		    strerror(errno));
	return 0;
}

/* A value for the environment: names and version ids only; anything else
 * (a control character, '=' does not matter in a value) is replaced. */
static void
envvar(char *out, size_t len, const char *name, const char *value)
{
	size_t i, n;

	n = (size_t)snprintf(out, len, "%s=", name);
	for (i = 0; value != NULL && value[i] != '\0' && n + 1 < len; i++)
		out[n++] = (unsigned char)value[i] < 0x20 || value[i] == 0x7f ? '?' : value[i];
	out[n < len ? n : len - 1] = '\0';
}

static void
closefrom3(void)
{
#ifdef SYS_close_range
	if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0)
		return;
#endif
	for (int fd = 3; fd < 4096; fd++)
		(void)close(fd);
}

static void
hook_audit(struct agent *a, const char *ag, const char *db, const char *event,
    const char *outcome, const char *error)
{
	struct audit_target t = { ag, NULL, db };
	char what[96];

	snprintf(what, sizeof(what), "%s: %s", event, outcome);
	agent_audit(a, "hook", &t, NULL, what, error);
}

int
deployhook_fire(struct agent *a, const char *event, const char *ag, const char *db,
    const char *version, int code)
{
	char vars[HOOK_NENV][600], *envp[HOOK_NENV + 1], *argv[2];
	const char *path = a->cfg != NULL ? a->cfg->hook_command : "";
	long long waited = 0, limit;
	struct dmk_err e;
	pid_t pid, w;
	int status = 0, n = 0, devnull, r;

	if (path[0] == '\0')
		return 0;
	if ((r = deployhook_check(path, &e)) != 0) {
		log_error("%s (not run for %s %s/%s)", e.msg, event, ag, db ? db : "-");
		hook_audit(a, ag, db, event, "refused", e.msg);
		return r;
	}
	util_strlcpy(vars[n++], "PATH=/usr/sbin:/usr/bin:/sbin:/bin", sizeof(vars[0]));
	util_strlcpy(vars[n++], "LC_ALL=C", sizeof(vars[0]));
	envvar(vars[n++], sizeof(vars[0]), "DMKAGENT_EVENT", event);
	envvar(vars[n++], sizeof(vars[0]), "DMKAGENT_AG", ag);
	envvar(vars[n++], sizeof(vars[0]), "DMKAGENT_DATABASE", db);
	envvar(vars[n++], sizeof(vars[0]), "DMKAGENT_VERSION", version);
	envvar(vars[n++], sizeof(vars[0]), "DMKAGENT_OUTCOME", outcome_name(code));
	envvar(vars[n++], sizeof(vars[0]), "DMKAGENT_COMMAND", a->command);
	envvar(vars[n++], sizeof(vars[0]), "DMKAGENT_RUN_ID", a->run_id);
	for (r = 0; r < n; r++)
		envp[r] = vars[r];
	envp[n] = NULL;
	argv[0] = (char *)path;
	argv[1] = NULL;
	fflush(NULL);
	if ((pid = fork()) == -1) {
		dmk_errf(&e, DMK_ERR_IO, "hook_command %s: fork: %s", path, strerror(errno));
		log_error("%s", e.msg);
		hook_audit(a, ag, db, event, "failed", e.msg);
		return e.code;
	}
	if (pid == 0) {
		/* async-signal-safe calls only from here on */
		(void)setpgid(0, 0);
		if ((devnull = open("/dev/null", O_RDWR)) != -1) {
			(void)dup2(devnull, 0);
			(void)dup2(devnull, 1);
		}
		closefrom3();
		execve(path, argv, envp);
		_exit(127);
	}
	(void)setpgid(pid, pid);
	limit = (a->cfg->hook_timeout > 0 ? a->cfg->hook_timeout : 30) * 1000;
	for (;;) {
		w = waitpid(pid, &status, WNOHANG);
		if (w == pid || (w == -1 && errno != EINTR))
			break;
		if (waited >= limit) {
			(void)kill(-pid, SIGTERM);
			util_sleep_ms(1000);
			(void)kill(-pid, SIGKILL);
			(void)waitpid(pid, &status, 0);
			dmk_errf(&e, DMK_ERR_TIMEOUT, "hook_command %s: still running after %llds; "
			    "stopped (for %s %s/%s)", path, limit / 1000, event, ag, db ? db : "-");
			log_error("%s", e.msg);
			hook_audit(a, ag, db, event, "timed out", e.msg);
			return e.code;
		}
		util_sleep_ms(waited < 1000 ? 10 : 100);
		waited += waited < 1000 ? 10 : 100;
	}
	if (w == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		hook_audit(a, ag, db, event, "ok", NULL);
		return 0;
	}
	if (w == pid && WIFEXITED(status))
		dmk_errf(&e, DMK_ERR_IO, "hook_command %s exited %d (for %s %s/%s); the change "
		    "stands", path, WEXITSTATUS(status), event, ag, db ? db : "-");
	else
		dmk_errf(&e, DMK_ERR_IO, "hook_command %s killed by signal %d (for %s %s/%s); "
		    "the change stands", path, w == pid && WIFSIGNALED(status) ? WTERMSIG(status) : 0,
		    event, ag, db ? db : "-");
	log_error("%s", e.msg);
	hook_audit(a, ag, db, event, "failed", e.msg);
	return e.code;
}
