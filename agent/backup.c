/* backup.c: dmkagent backup.  (Filled in by the backup issue.) */
#include "dmk.h"
#include "cli.h"
#include "backup.h"

int
backup_database(struct ag_run *run, struct db_plan *p, struct sql_session *s,
    struct dmk_err *err)
{
	return dmk_errf(err, DMK_ERR_UNSUPPORTED, "backups are not built yet");
}

int
cmd_backup(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	return dmk_errf(err, DMK_ERR_UNSUPPORTED, "backup is not built yet");
}
