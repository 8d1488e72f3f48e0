/* log.c: messages to stderr with levels, or to syslog.  Never a secret. */
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "dmk.h"

static const char *log_prog = "dmkagent";
static int log_level = LOG_LVL_INFO;
static int log_syslog;

void
log_init(const char *progname, int level, int use_syslog)
{
	if (progname != NULL)
		log_prog = progname;
	log_level = level;
	log_syslog = use_syslog;
	if (use_syslog)
		openlog(log_prog, LOG_PID, LOG_DAEMON);
}

void
log_set_level(int level)
{
	log_level = level;
}

int
log_get_level(void)
{
	return log_level;
}

void
log_msg(int level, const char *fmt, ...)
{
	static const char *names[] = { "error", "warning", "info", "debug" };
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	char line[2048];
	va_list ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (log_syslog)
		syslog(prio[level], "%s", line);
	else
		fprintf(stderr, "%s: %s: %s\n", log_prog, names[level], line);
}
