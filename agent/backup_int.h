/*
 * backup_int.h: what the files of backup share: backup.c (one database's
 * certificates and DMK, the SMKs, escrow), restore_test.c (the restore test
 * in a scratch database) and cmd_backup.c (the command and run's backup
 * step).  Private to them.  A bk_report owns its items (free items).
 */
#ifndef DMK_BACKUP_INT_H
#define DMK_BACKUP_INT_H

#include "core/dmk.h"
#include "core/secret.h"
#include "replicas.h"
#include "backup.h"

struct sql_result;
struct pass_policy;

#define BK_FORMAT "dmkagent-backup-1"
#define BK_DIR "C:\\Windows\\Temp\\"

enum bk_kind { BK_CERT = 0, BK_DMK, BK_SMK };
extern const char *const bk_kind_names[];   /* by enum bk_kind: cert-backup, ... */
extern const char *const bk_kind_text[];    /* for people: certificate, ... */
extern const char *const bk_kind_fp[];      /* in failpoint names: cert, dmk, smk */


/* One escrowed backup: what the report, the audit and the restore test need. */
struct bk_item {
	enum bk_kind kind;
	char database[CONF_NAME_BYTES];  /* "" for the SMK */
	char name[CONF_NAME_BYTES];      /* certificate name */
	char node[520];
	char thumbprint[48];             /* 0x + 40 hex, certificates */
	char key_guid[40];               /* DMK or SMK; for a certificate, its DMK */
	char server_file[300];           /* DMK/SMK backup file left on the node */
	struct secret_ref ref;           /* the escrow */
	char version[80];
	char previous[80];               /* the version before ours, "" for none */
	struct secret_ref pwref;         /* the backup password */
	char pwver[80];
	int ok;                          /* escrowed and read back */
	char error[DMK_ERR_MSG_MAX];
	int restore;                     /* 1 passed, -1 failed, 0 not tested */
	char restore_note[DMK_ERR_MSG_MAX];
};

struct bk_report {
	struct bk_item *items;
	size_t n, cap;
};

int bk_backup_db(struct ag_run *run, struct db_plan *p, struct sql_session *s,
    const struct secret *open_pw, struct bk_report *rep, struct dmk_err *err);
int bk_backup_smk(struct ag_run *run, struct bk_report *rep, struct dmk_err *err);
const struct sql_value *bk_cell_bin(const struct sql_result *r, size_t row, const char *col);
const char *bk_cell_str(const struct sql_result *r, size_t row, const char *col);
void bk_policy_of(struct agent *a, struct pass_policy *pp);
int bk_restore_test(struct ag_run *run, struct sql_session *s, struct bk_report *rep, size_t from,
    size_t to, struct dmk_err *err);
void bk_fp(const char *boundary, const char *kind);

#endif
