/*
 * cli.c: dmkagent [global options] COMMAND [options].  Global options are
 * parsed here; each command parses its own.  An error is printed once, here,
 * and turned into the documented exit code.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "cli.h"

static const struct command commands[] = {
	{ "config check", cmd_config_check, 1, "config check",
	  "validate the configuration and print a summary",
	  "Checks every section, key and secret reference of the configuration file\n"
	  "(never reading a secret) and prints the stores, availability groups,\n"
	  "databases and references.  With --output json, prints the parsed model.\n"
	  "Exit 0 when valid, 2 otherwise.\n" },
	{ "audit verify", cmd_audit_verify, 0, "audit verify [--key REF] [FILE...]",
	  "check the audit log's hash chain, MACs and checkpoint",
	  "Reads each FILE (default: the configured audit_log) in the order given, as one\n"
	  "log (OLD NEW after a rotation), and checks that no record was changed,\n"
	  "removed, reordered, truncated or forged.  The MACs are checked with --key REF\n"
	  "(a reference such as file:/etc/dmkagent/audit.key) or, when a configuration is\n"
	  "readable, its audit_key.  When the last FILE is the configured audit_log, its\n"
	  "head is compared with the checkpoint in state_dir and with audit_anchor: a\n"
	  "log cut at the end fails.  A run-start with no run-end before the next\n"
	  "run-start fails, unless the next run recorded it as interrupted.  Names the\n"
	  "first bad line.  Exit 0 when intact, 1 otherwise.\n" },
	{ "audit reset-checkpoint", cmd_audit_reset, 1, "audit reset-checkpoint --reason TEXT [--ticket ID]",
	  "accept a deliberately rewritten audit log as it is",
	  "The agent refuses to append to a log that does not hold its checkpoint's\n"
	  "head.  When the log was cut or replaced on purpose, this appends a\n"
	  "checkpoint-reset record (with TEXT and the old checkpoint's seq), chained to\n"
	  "the log as it is now, and moves the checkpoint (and audit_anchor) to it.\n" },
	{ "audit report", cmd_audit_report, 0, "audit report [FILE...] [--since DATE] "
	  "[--until DATE] [--ag AG] [--database DB] [--output text|json|csv|html] [--key REF] "
	  "[--sign KEYREF] [--out FILE] [--signature FILE]",
	  "an auditor's report of every key rollover, from the audit log",
	  "Verifies the log first (as audit verify: chain, MACs, checkpoint, anchor), then\n"
	  "lists every rollover per AG and database: rotation id, start and end, who,\n"
	  "why (reason, ticket, trigger), old and new store versions, per replica\n"
	  "whether the new password was registered and verified and the old one\n"
	  "revoked, the backup escrowed before it and its restore test, the outcome,\n"
	  "and every run that worked on it (an interrupted rollover appears once, with\n"
	  "the run that finished it).  Then each database's password age against\n"
	  "rotate_every, overdue first.  FILEs default to the audit_log and the rotated\n"
	  "files before it (LOG.N ... LOG.1).  DATE: YYYY-MM-DD or RFC 3339.  html is one\n"
	  "self-contained file; csv has one row per rollover per replica.  --sign KEYREF\n"
	  "signs the report with an Ed25519 PEM key (a reference) into FILE.sig.\n"
	  "A log that fails verification: the first line says so, exit 1.\n" },
	{ "audit verify-report", cmd_audit_verify_report, 0, "audit verify-report REPORT "
	  "--pubkey FILE [--signature FILE]",
	  "check a signed audit report offline",
	  "Checks REPORT against its detached signature (REPORT.sig unless --signature)\n"
	  "with the Ed25519 public key in FILE (PEM).  Exit 0 when good, 1 otherwise.\n" },
	{ "audit ship", cmd_audit_ship, 1, "audit ship",
	  "send the audit records audit_syslog has not received yet",
	  "Sends every record after the delivery checkpoint (state_dir/audit-syslog.json)\n"
	  "to audit_syslog as RFC 5424.  Every changing run does this by itself; this is\n"
	  "for a listener that was down.  Exit 0 when nothing waits, 5 when unreachable.\n" },
	{ "genpass", cmd_genpass, 0, "genpass --dry-run [--length N] [--avoid CHARS]",
	  "show the policy generated passwords meet (never a password)",
	  "Prints the alphabet, length and strength of the passwords dmkagent\n"
	  "generates for DMKs and backups.  Passwords themselves are never printed:\n"
	  "they go from the generator to the store and to SQL Server only.\n" },
	{ "store check", cmd_store_check, 1, "store check [STORE]",
	  "authenticate to each store and check access to every reference",
	  "Opens each configured store (or only STORE), authenticates, and checks that\n"
	  "every reference the configuration makes to it can be read and written.\n" },
	{ "store put", cmd_store_put, 1, "store put [--overwrite] [--no-policy-check] "
	  "[--reason TEXT] [--ticket ID] REF",
	  "store a password read from a no-echo prompt or standard input",
	  "Reads the value from a no-echo prompt when standard input is a terminal,\n"
	  "otherwise from standard input (one trailing newline is removed); never from\n"
	  "the command line.  Checks SQL Server's password policy.  Creates only\n"
	  "(check-and-set 0) unless --overwrite.\n" },
	{ "store show", cmd_store_show, 1, "store show REF",
	  "list a secret's versions and markers (never the value)",
	  "Prints each version of REF with its time, state and markers.\n" },
	{ "register", cmd_register, 1, "register [--ag AG] [--database DB] [--dry-run] [--prune]",
	  "register each DMK password on every replica of its availability group",
	  "Reads each configured database's DMK password from its store, proves on the\n"
	  "primary that it opens the DMK (a wrong password stops that database: nothing\n"
	  "is registered anywhere for it), then registers it with\n"
	  "sp_control_dbmasterkey_password on every replica the availability group lists,\n"
	  "in parallel.  Already registered passwords are left alone (a second run\n"
	  "changes nothing).  --prune drops credentials of older store versions whose\n"
	  "password no longer opens the DMK.  --dry-run prints the plan only.\n"
	  "Exit 3 when a replica could not be reached or a database was not done.\n" },
	{ "verify", cmd_verify, 1, "verify [--ag AG] [--database DB] [--failover-test]",
	  "check that every replica can open every DMK after a failover",
	  "Per replica and database: a credential for the database exists and is the one\n"
	  "dmkagent registered from the store's current version; on the primary the\n"
	  "password opens the DMK; where the database is readable, the DMK opens by\n"
	  "itself (a certificate under it encrypts and decrypts).\n"
	  "--failover-test (DISRUPTIVE) fails over to each replica in turn, checks there\n"
	  "as primary, and returns to the original primary.\n"
	  "Exit 0 only when every replica passes, 3 otherwise.\n" },
	{ "doctor", cmd_doctor, 1, "doctor [--ag AG] [--database DB]",
	  "a read-only pre-flight check: every problem, each with its fix",
	  "Checks, without writing anything anywhere: every file the configuration names\n"
	  "(file: references, CA files, client certificates, token files, state_dir)\n"
	  "exists with safe owner and mode; every store answers and takes its\n"
	  "credentials; every reference exists and is readable, and writable where\n"
	  "rotation writes (Vault: sys/capabilities-self; Key Vault: not checked, only\n"
	  "a write could prove it); the versions Vault keeps before it deletes the one\n"
	  "in force; every AG and replica answers over verified TLS; each password\n"
	  "opens its DMK on the primary; the SQL login holds the permissions the\n"
	  "commands need (HAS_PERMS_BY_NAME on every replica).  One line per check:\n"
	  "ok, PROBLEM with its fix, or not checked with why; --output json: a checks\n"
	  "array.  Exit 0 no problem, 5 only unreachable stores or servers, 1 otherwise.\n" },
	{ "status", cmd_status, 1, "status [--ag AG] [--database DB]",
	  "show AGs, replicas, DMK encryptions, credentials and store versions",
	  "Prints each availability group's replicas with role and health, and per\n"
	  "database its DMK (key GUID, encryption by the service master key and by\n"
	  "passwords), the credentials on each replica and the store's current version.\n" },
	{ "rotate", cmd_rotate, 1,
	  "rotate [--ag AG] [--database DB] [--if-due] [--dry-run] [--regenerate] [--no-backup] [--batch N]",
	  "rotate DMK passwords without ever losing one (a resumable state machine)",
	  "Per database: take the store lease, prove the current password on the primary,\n"
	  "escrow a backup of the certificates and the DMK in the store, write a new\n"
	  "password pending, add it to the DMK, register it on every replica, verify,\n"
	  "mark it current, then drop the old one.  A stopped run is finished by the next.\n"
	  "  --if-due      only databases whose rotate_every has passed\n"
	  "  --dry-run     print the plan; change nothing\n"
	  "  --regenerate  new key material (ALTER MASTER KEY REGENERATE); always backs up\n"
	  "  --no-backup   rotate even without the backup first (refused by default when\n"
	  "                the backup fails; not with --regenerate)\n"
	  "With --output json, one JSON document on stdout.  See dmkagent(1), ROTATION.\n" },
	{ "recover", cmd_recover, 1, "recover [--ag AG] [--database DB] [--dry-run] [--no-backup] "
	  "[--password-unknown]",
	  "give a DMK whose password nobody knows a new password, kept in the store",
	  "Finds the replica whose service master key opens the DMK (failing over to it\n"
	  "if needed), escrows a backup of the certificates and the DMK there, then adds\n"
	  "a generated password as rotate does.  Nothing is dropped.\n"
	  "  --dry-run     print the plan; change nothing\n"
	  "  --no-backup   go on even when the backup first fails\n"
	  "  --password-unknown  the store has no secret at the reference because nobody\n"
	  "                knows the password (not a typo): add a new password to the DMK\n"
	  "                and a credential on every replica; refused without it (exit 1)\n"
	  "With --output json, one JSON document on stdout.  See dmkagent(1), RECOVERY.\n" },
	{ "backup", cmd_backup, 1, "backup [--ag AG] [--database DB] [--smk] [--restore-test]",
	  "escrow certificate, DMK and SMK backups in the store",
	  "See dmkagent(1), BACKUPS.\n" },
	{ "run", cmd_run, 1, "run [--ag AG] [--database DB] [--dry-run] [--random-delay SECONDS] "
	  "[--jobs N] [--shard I/N|auto/N]",
	  "one pass over everything, in a safe order (the command to schedule)",
	  "One pass over every configured availability group and database:\n"
	  "  1 finish an unfinished rotation, or apply a version written into the store\n"
	  "    outside dmkagent (through the rotation state machine)\n"
	  "  2 register what is missing on any replica (new replicas, rebuilt nodes)\n"
	  "  3 rotate what is due (rotate_every)\n"
	  "  4 escrow the backups that are due (backup_every), with a restore test\n"
	  "    every restore_test_every\n"
	  "  5 verify every replica\n"
	  "Then writes [agent] metrics_file.  A second run with nothing due changes\n"
	  "nothing.  With -q, nothing is printed unless something needs attention.\n"
	  "  --random-delay SECONDS  first wait a random time up to SECONDS (spreads a\n"
	  "                          fleet's timers; SIGTERM ends the wait, exit 3)\n"
	  "  --dry-run               print what would be done; change nothing\n"
	  "  --jobs N                up to N AGs at once (default 4; 1: one after another)\n"
	  "  --shard I/N             only the AGs of shard I of N (SHA-256 of the AG name);\n"
	  "                          auto/N: I from $JOB_COMPLETION_INDEX (Kubernetes);\n"
	  "                          each AG is first claimed by a lease in the store\n"
	  "Exit codes as for every command (0, 1, 3, 4, 5); see dmkagent(1), SCHEDULING.\n" },
	{ "watch", cmd_watch, 1, "watch [--interval SECONDS] [--run-every SECONDS]",
	  "a service: apply store versions written by others, and keep run's schedule",
	  "Every --interval (default 60s) reads the versions and markers of every DMK\n"
	  "password reference.  A version written by someone else (an operator, a\n"
	  "pipeline, the store's rotation policy) is applied at once by a pass of run:\n"
	  "prove the old password, add the new one, register it on every replica,\n"
	  "verify, mark it current, drop the old one.  Otherwise a pass of run every\n"
	  "--run-every (default 1h).  While the store cannot be read, waits longer\n"
	  "(doubling, up to 16 intervals).  SIGTERM stops it at a step boundary\n"
	  "(exit 0).  With $NOTIFY_SOCKET (systemd Type=notify), reports READY=1.\n"
	  "  --ag AG, --database DB  only these\n" },
	{ "hook serve", cmd_hook_serve, 1, "hook serve",
	  "an HTTPS endpoint for Azure Event Grid (Key Vault secret events)",
	  "Listens on [hook] listen with [hook] tls_cert and tls_key, and takes Azure\n"
	  "Event Grid webhook deliveries (Event Grid schema or CloudEvents 1.0; both\n"
	  "validation handshakes are answered).  Every request needs ?code=[hook] key\n"
	  "and/or (auth = entra) an Entra ID bearer token (401 otherwise).  For a configured DMK password: SecretNewVersionCreated\n"
	  "applies the new version (a pass of run for that database), SecretNearExpiry\n"
	  "rotates it, SecretExpired rotates it and reports an error.  Answers at once\n"
	  "and works in the background, one event at a time, deduplicated by event id;\n"
	  "a full queue ([hook] queue) answers 503 with Retry-After.  Other events are\n"
	  "acknowledged and logged by id only.  SIGTERM stops it (exit 0).\n" },
	{ NULL, NULL, 0, NULL, NULL, NULL },
};

const struct command *
cli_find(const char *name)
{
	const struct command *c;

	for (c = commands; c->name != NULL; c++)
		if (strcmp(c->name, name) == 0)
			return c;
	return NULL;
}

static void
usage(FILE *f)
{
	const struct command *c;

	fprintf(f,
	    "usage: dmkagent [global options] COMMAND [options]\n"
	    "\n"
	    "Keeps SQL Server database master key passwords in a secret store and\n"
	    "registers, verifies and rotates them on every replica of an availability group.\n"
	    "\n"
	    "Global options:\n"
	    "  -c, --config FILE     configuration (default $DMKAGENT_CONFIG or %s)\n"
	    "  -v, --verbose         more detail (twice: debug)\n"
	    "  -q, --quiet           nothing on success (for cron); the report when not\n"
	    "      --output FORMAT   text (default) or json\n"
	    "      --log DEST        stderr (default) or syslog\n"
	    "      --wait SECONDS    wait this long for another run's lock (default 0)\n"
	    "  -h, --help            this help; COMMAND --help for a command's\n"
	    "      --version         print the version\n"
	    "\n"
	    "Commands:\n", CONF_DEFAULT_PATH);
	for (c = commands; c->name != NULL; c++)
		fprintf(f, "  %-14s %s\n", c->name, c->summary);
	fprintf(f,
	    "\n"
	    "Exit codes: 0 done; 1 failed; 2 usage or configuration error (nothing\n"
	    "changed); 3 incomplete (a replica or database not done, or a gap found);\n"
	    "4 another run holds the lock; 5 a store or server unreachable (try later).\n"
	    "See dmkagent(1) and dmkagent.conf(5).\n");
}

int
cli_want_help(const struct command *c, int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			printf("usage: dmkagent [global options] %s\n\n%s", c->usage, c->help);
			return 1;
		}
	}
	return 0;
}

int
cli_read_secret(const char *prompt, int confirm, struct secret **out, struct dmk_err *err)
{
	struct termios old, noecho;
	struct secret *s = NULL, *s2 = NULL;
	int tty = isatty(STDIN_FILENO), round, c, r = 0;

	*out = NULL;
	for (round = 0; round < (tty && confirm ? 2 : 1); round++) {
		struct secret *cur = secret_new();
		if (cur == NULL) {
			r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
			goto out;
		}
		if (round == 0)
			s = cur;
		else
			s2 = cur;
		if (tty) {
			fprintf(stderr, "%s", round ? "Again: " : prompt);
			fflush(stderr);
			if (tcgetattr(STDIN_FILENO, &old) == -1) {
				r = dmk_errf(err, DMK_ERR_IO, "tcgetattr: %s", strerror(errno));
				goto out;
			}
			noecho = old;
			noecho.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
			tcsetattr(STDIN_FILENO, TCSAFLUSH, &noecho);
		}
		/* Byte by byte through read(2): nothing lands in stdio's buffer.
		 * Exactly one line: its newline ends it, and nothing may follow. */
		for (;;) {
			char ch;
			ssize_t n = read(STDIN_FILENO, &ch, 1);
			if (n <= 0)
				break;
			if (ch == '\n') {
				if (!tty)
					(void)secret_append(cur, &ch, 1);   /* trimmed below */
				if (!tty && read(STDIN_FILENO, &ch, 1) > 0) {
					ch = 0;
					r = dmk_errf(err, DMK_ERR_USAGE, "standard input holds more than "
					    "one line; give exactly one line (the value); nothing stored");
				}
				break;
			}
			c = secret_append(cur, &ch, 1);
			ch = 0;
			if (c != 0) {
				r = dmk_errf(err, c, "input too long");
				break;
			}
		}
		if (tty) {
			tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
			fprintf(stderr, "\n");
		}
		if (r != 0)
			goto out;
		if (!tty)
			secret_trim_newline(cur);   /* and a \r before it */
	}
	if (s2 != NULL && !secret_equal(s, s2)) {
		r = dmk_errf(err, DMK_ERR_USAGE, "the two entries differ; nothing stored");
		goto out;
	}
	if (secret_len(s) == 0) {
		r = dmk_errf(err, DMK_ERR_USAGE, "empty input; nothing stored");
		goto out;
	}
	*out = s;
	s = NULL;
out:
	secret_free(s);
	secret_free(s2);
	return r;
}

/* "store frob": name the group and what it has; else the word itself. */
static void
unknown_command(const char *word, const char *next)
{
	const struct command *c;
	size_t n = strlen(word);
	char subs[256] = "";
	int group = 0;

	for (c = commands; c->name != NULL; c++)
		if (strncmp(c->name, word, n) == 0 && c->name[n] == ' ') {
			if (group++)
				strncat(subs, ", ", sizeof(subs) - strlen(subs) - 1);
			strncat(subs, c->name + n + 1, sizeof(subs) - strlen(subs) - 1);
		}
	if (group && next != NULL && next[0] != '-')
		fprintf(stderr, "dmkagent: unknown %s command '%s' (one of: %s); see dmkagent "
		    "--help\n", word, next, subs);
	else if (group)
		fprintf(stderr, "dmkagent: '%s' needs a command (one of: %s); see dmkagent "
		    "--help\n", word, subs);
	else {
		const char *best = NULL;
		int d, bestd = 3;                /* suggest only a near miss */

		for (c = commands; c->name != NULL; c++)
			if ((d = util_edit_distance(word, c->name)) < bestd) {
				bestd = d;
				best = c->name;
			}
		fprintf(stderr, "dmkagent: unknown command '%s'%s%s%s; see dmkagent --help\n",
		    word, best ? " (did you mean '" : "", best ? best : "", best ? "'?)" : "");
	}
}

int
cli_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "quiet", no_argument, NULL, 'q' },
		{ "output", required_argument, NULL, 'o' },
		{ "log", required_argument, NULL, 'l' },
		{ "wait", required_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config = getenv("DMKAGENT_CONFIG");
	const struct command *cmd = NULL;
	struct agent a;
	struct dmk_err err;
	char name[64];
	int ch, verbose = 0, quiet = 0, use_syslog = 0, r, cargc;
	char **cargv;
	enum output_mode output = OUTPUT_TEXT;
	long long wait = 0;

	dmk_err_clear(&err);
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "+c:vqh", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			config = optarg;
			break;
		case 'v':
			verbose++;
			break;
		case 'q':
			quiet = 1;
			break;
		case 'o':
			if (strcmp(optarg, "json") == 0)
				output = OUTPUT_JSON;
			else if (strcmp(optarg, "text") == 0)
				output = OUTPUT_TEXT;
			else {
				fprintf(stderr, "dmkagent: --output must be text or json\n");
				return DMK_EXIT_USAGE;
			}
			break;
		case 'l':
			if (strcmp(optarg, "syslog") == 0)
				use_syslog = 1;
			else if (strcmp(optarg, "stderr") != 0) {
				fprintf(stderr, "dmkagent: --log must be stderr or syslog\n");
				return DMK_EXIT_USAGE;
			}
			break;
		case 'w':
			if (util_parse_duration(optarg, &wait) != 0) {
				fprintf(stderr, "dmkagent: --wait takes seconds (or 30s, 5m)\n");
				return DMK_EXIT_USAGE;
			}
			break;
		case 'h':
			usage(stdout);
			return DMK_EXIT_OK;
		case 'V':
			printf("dmkagent %s\n", DMK_VERSION);
			return DMK_EXIT_OK;
		default:
			fprintf(stderr, "dmkagent: unknown option '%s'\n", argv[optind - 1]);
			usage(stderr);
			return DMK_EXIT_USAGE;
		}
	}
	log_init("dmkagent", quiet ? LOG_LVL_ERROR : LOG_LVL_WARN + (verbose > 2 ? 2 : verbose),
	    use_syslog);
	if (optind >= argc) {
		usage(stderr);
		return DMK_EXIT_USAGE;
	}
	/* One- or two-word command names. */
	if (optind + 1 < argc) {
		snprintf(name, sizeof(name), "%s %s", argv[optind], argv[optind + 1]);
		if ((cmd = cli_find(name)) != NULL)
			optind++;
	}
	if (cmd == NULL && (cmd = cli_find(argv[optind])) == NULL) {
		unknown_command(argv[optind], optind + 1 < argc ? argv[optind + 1] : NULL);
		return DMK_EXIT_USAGE;
	}
	cargc = argc - optind;
	cargv = argv + optind;
	if (cli_want_help(cmd, cargc, cargv))
		return DMK_EXIT_OK;

	agent_init(&a);
	a.output = output;
	a.verbose = verbose;
	a.quiet = quiet;
	a.wait_seconds = wait;
	if (config == NULL || *config == '\0')
		config = CONF_DEFAULT_PATH;
	util_strlcpy(a.config_path, config, sizeof(a.config_path));
	r = 0;
	if (cmd->needs_config)
		r = agent_load_config(&a, config, &err);
	if (r == 0) {
		optind = 1;
		r = cmd->run(&a, cargc, cargv, &err);
	}
	if (r < 0)
		fprintf(stderr, "dmkagent: %s\n", err.msg[0] ? err.msg : dmk_strerror(r));
	agent_free(&a);
	if (r == DMK_ERR_INTERRUPTED && dmk_interrupted() != 0)
		return DMK_EXIT_SIGNAL + dmk_interrupted();
	return r < 0 ? dmk_exit_code(r) : r;
}
