/* cli.h: the command table and what commands share for reporting. */
#ifndef DMK_CLI_H
#define DMK_CLI_H

#include "agent.h"

struct command {
	const char *name;            /* "config check" */
	int (*run)(struct agent *a, int argc, char **argv, struct dmk_err *err);
	int needs_config;
	const char *usage;           /* after "dmkagent [global options] " */
	const char *summary;
	const char *help;            /* the command's --help body */
};

int cli_main(int argc, char **argv);

/* A command's own --help: prints it and returns 1 when asked for. */
int cli_want_help(const struct command *c, int argc, char **argv);
const struct command *cli_find(const char *name);

/* Commands (each file exports its runners). */
int cmd_config_check(struct agent *a, int argc, char **argv, struct dmk_err *err);
int cmd_audit_verify(struct agent *a, int argc, char **argv, struct dmk_err *err);
int cmd_audit_reset(struct agent *a, int argc, char **argv, struct dmk_err *err);
int cmd_audit_report(struct agent *a, int argc, char **argv, struct dmk_err *err);
int cmd_audit_verify_report(struct agent *a, int argc, char **argv, struct dmk_err *err);
int cmd_audit_ship(struct agent *a, int argc, char **argv, struct dmk_err *err);
/* Is path the configured audit_log (cmd_audit.c)? */
int is_audit_log(const struct agent *a, const char *path);
int cmd_genpass(struct agent *a, int argc, char **argv, struct dmk_err *err);
int cmd_store_check(struct agent *a, int argc, char **argv, struct dmk_err *err);
int cmd_store_put(struct agent *a, int argc, char **argv, struct dmk_err *err);
int cmd_store_show(struct agent *a, int argc, char **argv, struct dmk_err *err);
int cmd_register(struct agent *a, int argc, char **argv, struct dmk_err *err);
int cmd_verify(struct agent *a, int argc, char **argv, struct dmk_err *err);
int cmd_status(struct agent *a, int argc, char **argv, struct dmk_err *err);
int cmd_rotate(struct agent *a, int argc, char **argv, struct dmk_err *err);
int cmd_recover(struct agent *a, int argc, char **argv, struct dmk_err *err);
int cmd_backup(struct agent *a, int argc, char **argv, struct dmk_err *err);
int cmd_run(struct agent *a, int argc, char **argv, struct dmk_err *err);
int cmd_hook_serve(struct agent *a, int argc, char **argv, struct dmk_err *err);
int cmd_watch(struct agent *a, int argc, char **argv, struct dmk_err *err);
int cmd_doctor(struct agent *a, int argc, char **argv, struct dmk_err *err);

/* Read a secret from a no-echo prompt on a terminal, or from standard input. */
int cli_read_secret(const char *prompt, int confirm, struct secret **out,
    struct dmk_err *err);

#endif
