/*
 * deployhook.h: [agent] hook_command, run after each change (registered,
 * rotated, recovered, backed up, failed) for notifications, tickets and
 * paging.
 *
 * The command is an absolute path, checked like a file: reference before
 * each use (a regular file, not a symbolic link, owned by root or by this
 * user, not writable by group or others, executable).  It runs with
 * standard input and output on /dev/null, standard error ours, no other
 * descriptor, in a process group of its own, and an environment of
 * exactly: PATH=/usr/sbin:/usr/bin:/sbin:/bin, LC_ALL=C and
 *   DMKAGENT_EVENT     registered|rotated|recovered|backed-up|failed
 *   DMKAGENT_AG        the availability group
 *   DMKAGENT_DATABASE  the database
 *   DMKAGENT_VERSION   the store version concerned ("" when none)
 *   DMKAGENT_OUTCOME   ok|failed|incomplete|locked|unreachable|usage (the exit class)
 *   DMKAGENT_COMMAND   the command that made the change (run, rotate, ...)
 *   DMKAGENT_RUN_ID    the run's id in the audit log
 * Nothing of dmkagent's own environment (no VAULT_TOKEN, no AZURE_*) and
 * never a secret.  After hook_timeout (default 30 s) its process group gets
 * SIGTERM, then SIGKILL.  Its failure is logged and audited (action "hook")
 * and changes nothing: the change it reports stands, and the command's
 * exit code does not change.
 */
#ifndef DMK_DEPLOYHOOK_H
#define DMK_DEPLOYHOOK_H

#include "core/dmk.h"

struct agent;

/* Run the hook for one event, if one is configured.  code: the change's
 * outcome (0, or a DMK_ERR_*).  Returns 0, or why the hook failed
 * (already logged and audited). */
int deployhook_fire(struct agent *a, const char *event, const char *ag, const char *db,
    const char *version, int code);

/* The configured command's file checks (config check uses it too). */
int deployhook_check(const char *path, struct dmk_err *err);

#endif
