/*
 * backup.h: key backups escrowed in the secret store (dmkagent backup), and
 * what rotate and recover call before they change anything.
 */
#ifndef DMK_BACKUP_H
#define DMK_BACKUP_H

#include "replicas.h"

/*
 * Back up one database's certificates (with private keys) and DMK, each
 * encrypted by its backup password from the store, into the store, with
 * metadata (thumbprint, key_guid, node, time).  s is a session to the
 * primary.  0, or an error; nothing is dropped or changed in SQL Server.
 */
int backup_database(struct ag_run *run, struct db_plan *p, struct sql_session *s,
    struct dmk_err *err);

#endif
