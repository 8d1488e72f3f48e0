/*
 * backup.h: key backups escrowed in the secret store (dmkagent backup), and
 * what rotate and recover call before they change anything.
 *
 * Escrow layout (dmkagent(1), BACKUPS).  Every backup is one secret in a
 * store, written as a new version (earlier versions stay), read back and
 * compared before it counts.  Its name is the DMK password's reference
 * (for the SMK: smk_backup_password's) with a suffix of [a-z0-9-] only, so
 * the same rule fits Vault paths and Azure Key Vault names:
 *   <dmk ref>-backup-cert-<slug of name>-<8 hex of SHA-256(name)>
 *   <dmk ref>-backup-dmk
 *   <smk ref>-backup-smk-<slug of node>-<8 hex of SHA-256(node)>
 * and, when cert_backup_password / dmk_backup_password are not configured,
 * the passwords themselves at <dmk ref>-backup-password-cert and
 * <dmk ref>-backup-password-dmk (generated on first use, created with
 * check-and-set 0).  The value is JSON: format "dmkagent-backup-1", kind,
 * the names, thumbprint / key_guid, node, time, the backup password's
 * reference and version, and the bytes in base64.  Markers on each
 * version: dmkagent-kind, dmkagent-thumbprint (certificates),
 * dmkagent-key-guid, dmkagent-node, dmkagent-time,
 * dmkagent-password-version.
 */
#ifndef DMK_BACKUP_H
#define DMK_BACKUP_H

#include "replicas.h"

struct buf;

/*
 * Back up one database's certificates (with private keys) and DMK, each
 * encrypted by its backup password from the store, into the store, with
 * metadata (thumbprint, key_guid, node, time).  s is a session to the
 * primary.  0, or an error; nothing is dropped or changed in SQL Server
 * (a backup file is left under C:\Windows\Temp, see backup.c).  The DMK
 * is opened with p->pw for the session and closed again; when p->pw is
 * NULL or does not open it (15313), the key must open by itself (service
 * master key or a credential).  Leaves s in the database.  Every piece is
 * read back from the store and compared before this returns 0.  Missing
 * backup passwords are generated and stored (check-and-set 0).  No restore
 * test (dmkagent backup --restore-test does one): about 3 round trips to
 * the primary and 3 store requests per backup.
 */
int backup_database(struct ag_run *run, struct db_plan *p, struct sql_session *s,
    struct dmk_err *err);

/* ---- escrow.c: pure helpers ---- */

/*
 * The escrow reference of one backup: base's store and field, base's path
 * + "-backup-" + kind, then, for a named item, "-" + a readable slug of it
 * and "-" + 8 hex digits of SHA-256(item).  The whole path is kept within
 * 127 characters where base allows (Azure Key Vault's limit), by
 * shortening the slug.  DMK_ERR_CONFIG when base is not a store reference.
 */
int escrow_ref(const struct secret_ref *base, const char *kind, const char *item,
    struct secret_ref *out, struct dmk_err *err);
/* item in [a-z0-9-]: lowercase ASCII letters and digits, one '-' for each
 * run of anything else, none at the ends; at most max characters. */
void escrow_slug(const char *item, size_t max, char *out, size_t outlen);
/* RFC 4648 base64 with padding, appended to out. */
int escrow_b64_encode(const unsigned char *in, size_t n, struct buf *out);
/* Strict decoding (no whitespace); *out is malloc'd: wipe and free it.
 * DMK_ERR_BADINPUT on bad input. */
int escrow_b64_decode(const char *in, size_t n, unsigned char **out, size_t *outlen);

#endif
