/*
 * backup.c: one database's backups (certificates, DMK) and the SMKs, escrowed;
 * backup_database() for rotate and recover.  The command is cmd_backup.c,
 * the restore test restore_test.c.
 *
 * What is backed up, on the primary, in one round trip per database:
 *  - each certificate whose private key the DMK protects: CERTENCODED and
 *    CERTPRIVATEKEY (the key encrypted by cert_backup_password), so no file
 *    is written;
 *  - the DMK: BACKUP MASTER KEY TO FILE (encrypted by dmk_backup_password)
 *    under C:\Windows\Temp with a name unique to the run, read back with
 *    OPENROWSET(BULK ..., SINGLE_BLOB).  T-SQL cannot delete a file without
 *    xp_cmdshell, which we will not use: the file stays on the primary,
 *    encrypted by the backup password (dmkagent(1), BACKUPS).
 * With --smk, each replica's service master key the same way, encrypted
 * by smk_backup_password.
 *
 * Every backup goes into the store as a new version (escrow layout:
 * backup.h), is read back and compared, and gets one audit record.  The
 * bytes are not plaintext keys, but they are kept in struct secret and
 * wiped memory all the same.  --restore-test then proves, in a scratch
 * database on the primary, that the escrowed bytes give back the same
 * certificates (thumbprints) and DMK (key_guid), and drops it.
 *
 * The steps of one run ("fp" is the failpoint at each boundary, named
 * backup:<fp>; each fires the first time its boundary is reached, also
 * inside rotate --regenerate's backup_database()):
 *   1 passwords    a missing backup password generated and created in
 *                  the store (check-and-set 0)                fp after-password
 *   2 read         OPEN MASTER KEY for the session; every certificate
 *                  with CERTENCODED/CERTPRIVATEKEY
 *   3 dmk file     BACKUP MASTER KEY TO FILE on the primary, read back
 *                  with OPENROWSET, the key closed           fp after-dmk-file
 *   4 escrow       per certificate, then the DMK: a new version written
 *                  (check-and-set on the one seen)           fp after-escrow-cert,
 *                                                               after-escrow-dmk
 *                  read back and compared, then audited      fp after-readback-cert,
 *                                                               after-readback-dmk
 *                  all of the database's backups escrowed    fp after-database
 *   5 restore test (--restore-test) a scratch database made  fp after-restore-scratch
 *                  the DMK, then the certificates restored
 *                  there and compared; the scratch database
 *                  dropped                                   fp after-restore-test
 *   6 smk          (--smk) the SMK backup password (step 1); BACKUP
 *                  SERVICE MASTER KEY to a file on every replica,
 *                  read back                                 fp after-smk-files
 *                  per replica, escrowed as in step 4        fp after-escrow-smk,
 *                                                               after-readback-smk
 * Resume: there is nothing to resume.  Nothing in SQL Server changes but
 * the files left under C:\Windows\Temp (never read again: each run writes
 * and reads its own) and, when a run dies in step 5, its scratch
 * database.  Escrows are new versions (a value lands whole or not at
 * all; a store that writes markers apart may lack them), so a dead run
 * leaves at most a version that was never read back or audited, and the
 * next run writes new versions on top of it, each read back.  A scratch
 * database's name carries a tag of this host and state_dir, so the next
 * run (under the same local lock, so never beside a live one) drops what
 * a dead run left before it makes its own.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/sha.h>

#include "core/dmk.h"
#include "core/buf.h"
#include "core/secret.h"
#include "cli.h"
#include "failpoint.h"
#include "genpass.h"
#include "backup.h"
#include "agcmd.h"
#include "markers.h"
#include "deployhook.h"
#include "steps.h"
#include "backup_int.h"

const char *const bk_kind_names[] = { "cert-backup", "dmk-backup", "smk-backup" };
const char *const bk_kind_text[] = { "certificate", "master key", "service master key" };
const char *const bk_kind_fp[] = { "cert", "dmk", "smk" };

/* A step boundary: backup:<boundary>[-<kind>] (failpoint.h; nothing in a
 * release build). */
void
bk_fp(const char *boundary, const char *kind)
{
	char name[64];

	snprintf(name, sizeof(name), "backup:%s%s%s", boundary, kind ? "-" : "", kind ? kind : "");
	failpoint(name);
}

static struct bk_item *
report_add(struct bk_report *rep, struct bk_item *tmp)
{
	struct bk_item *v;

	if (rep == NULL)
		return tmp;
	if (rep->n == rep->cap) {
		size_t cap = rep->cap ? rep->cap * 2 : 8;
		if ((v = realloc(rep->items, cap * sizeof(*v))) == NULL)
			return tmp;
		rep->items = v;
		rep->cap = cap;
	}
	rep->items[rep->n] = *tmp;
	return &rep->items[rep->n++];
}

/* ---- result helpers (the statements: sql/keys.c) ---- */

const char *
bk_cell_str(const struct sql_result *r, size_t row, const char *col)
{
	const struct sql_value *v = r ? sql_cell(r, row, col) : NULL;

	return v && v->type == SQLT_STR ? v->s : NULL;
}

const struct sql_value *
bk_cell_bin(const struct sql_result *r, size_t row, const char *col)
{
	const struct sql_value *v = r ? sql_cell(r, row, col) : NULL;

	return v && v->type == SQLT_BIN ? v : NULL;
}

/* C:\Windows\Temp\dmkagent-<run id>-<what>-<random>.key: never an existing file (15240). */
static void
server_file(struct agent *a, const char *what, char *out, size_t len)
{
	char rnd[33], slug[48];

	util_random_id(rnd, sizeof(rnd));
	rnd[8] = '\0';
	escrow_slug(what, 40, slug, sizeof(slug));
	snprintf(out, len, BK_DIR "dmkagent-%s-%s%s%s.key", a->run_id, slug, slug[0] ? "-" : "",
	    rnd);
}

/* ---- passwords ---- */

void
bk_policy_of(struct agent *a, struct pass_policy *pp)
{
	memset(pp, 0, sizeof(*pp));
	pp->length = a->cfg->password_length;
	util_strlcpy(pp->avoid, a->cfg->password_avoid, sizeof(pp->avoid));
}

/*
 * The backup password at ref; when a store has no such secret yet, a new
 * one is generated and created there (check-and-set 0: if another run got
 * there first, theirs is used).
 */
static int
backup_password(struct agent *a, const struct secret_ref *ref, const struct audit_target *t,
    struct secret **pw, struct prov_version *ver, struct dmk_err *err)
{
	struct pass_policy pp;
	struct prov_meta m;
	struct store *st;
	struct audit_keys k;
	char tm[32];
	int r;

	r = agent_resolve(a, ref, 0, pw, ver, err);
	if (r != DMK_ERR_NOTFOUND || ref->kind != REF_STORE)
		return r;
	if ((r = agent_store(a, ref->store, &st, err)) != 0)
		return r;
	bk_policy_of(a, &pp);
	if ((r = genpass(&pp, pw, err)) != 0)
		return r;
	memset(&m, 0, sizeof(m));
	util_rfc3339(time(NULL), tm, sizeof(tm));
	prov_meta_set(&m, MARK_KIND, "backup-password");
	prov_meta_set(&m, MARK_TIME, tm);
	markers_why(&m);
	memset(ver, 0, sizeof(*ver));
	if ((r = agent_guard(a, err)) != 0) {
		secret_free(*pw);
		*pw = NULL;
		return r;
	}
	r = store_put(st, ref, *pw, "0", &m, ver, err);
	memset(&k, 0, sizeof(k));
	k.store = ref->store;
	k.reference = ref->text;
	k.version = ver->id[0] ? ver->id : NULL;
	if (r == DMK_ERR_CONFLICT) {
		/* created meanwhile by someone else: use theirs */
		secret_free(*pw);
		*pw = NULL;
		return agent_resolve(a, ref, 0, pw, ver, err);
	}
	agent_audit(a, "backup-password", t, &k, r == 0 ? "generated" : "failed",
	    r == 0 ? NULL : err->msg);
	if (r != 0) {
		secret_free(*pw);
		*pw = NULL;
		return dmk_err_prefix(err, "creating the backup password %s", ref->text);
	}
	log_info("%s: no backup password yet; generated one and stored it (version %s)",
	    ref->text, ver->id);
	bk_fp("after-password", NULL);
	return 0;
}

/* Where a database's backups go: beside its DMK password, else beside a
 * backup password that is in a store. */
static int
db_base(const struct conf_db *db, const struct secret_ref **out, struct dmk_err *err)
{
	if (db->dmk_password.kind == REF_STORE)
		*out = &db->dmk_password;
	else if (db->has_cert_backup_password && db->cert_backup_password.kind == REF_STORE)
		*out = &db->cert_backup_password;
	else if (db->has_dmk_backup_password && db->dmk_backup_password.kind == REF_STORE)
		*out = &db->dmk_backup_password;
	else
		return dmk_errf(err, DMK_ERR_CONFIG, "[database %s/%s]: backups are kept in a store, "
		    "and neither dmk_password nor a backup password of this database is a store "
		    "reference", db->ag, db->label);
	return 0;
}

static int
db_pwref(const struct conf_db *db, enum bk_kind kind, struct secret_ref *out,
    struct dmk_err *err)
{
	const struct secret_ref *base;
	int r;

	if (kind == BK_CERT && db->has_cert_backup_password) {
		*out = db->cert_backup_password;
		return 0;
	}
	if (kind == BK_DMK && db->has_dmk_backup_password) {
		*out = db->dmk_backup_password;
		return 0;
	}
	if ((r = db_base(db, &base, err)) != 0)
		return r;
	return escrow_ref(base, kind == BK_CERT ? "password-cert" : "password-dmk", NULL, out, err);
}

/* ---- escrow ---- */

/* JSON value: the item's facts and the bytes (fields named in pairs). */
static int
escrow_value(const struct bk_item *it, const char *time_s, const char *const *fields,
    const unsigned char *const *bytes, const size_t *lens, size_t nfields,
    struct secret **out, struct dmk_err *err)
{
	json_t *o = json_object();
	struct buf b;
	char *text = NULL;
	size_t i;
	int r = 0;

	*out = NULL;
	buf_init(&b, 0);
	json_object_set_new(o, "format", json_string(BK_FORMAT));
	json_object_set_new(o, "kind", json_string(bk_kind_names[it->kind]));
	if (it->database[0])
		json_object_set_new(o, "database", json_string(it->database));
	if (it->name[0])
		json_object_set_new(o, "name", json_string(it->name));
	if (it->thumbprint[0])
		json_object_set_new(o, "thumbprint", json_string(it->thumbprint));
	if (it->key_guid[0])
		json_object_set_new(o, it->kind == BK_CERT ? "dmk_key_guid" : "key_guid",
		    json_string(it->key_guid));
	json_object_set_new(o, "node", json_string(it->node));
	json_object_set_new(o, "time", json_string(time_s));
	if (it->server_file[0])
		json_object_set_new(o, "server_file", json_string(it->server_file));
	json_object_set_new(o, "password_reference", json_string(it->pwref.text));
	json_object_set_new(o, "password_version", json_string(it->pwver));
	for (i = 0; i < nfields && r == 0; i++) {
		buf_reset(&b);
		if ((r = escrow_b64_encode(bytes[i], lens[i], &b)) == 0)
			r = json_object_set_new(o, fields[i], json_stringn(b.data, b.len)) == 0 ? 0 :
			    DMK_ERR_NOMEM;
	}
	if (r == 0 && (text = json_dumps(o, JSON_PRESERVE_ORDER | JSON_COMPACT)) == NULL)
		r = DMK_ERR_NOMEM;
	if (r == 0 && (*out = secret_from_str(text)) == NULL)
		r = DMK_ERR_NOMEM;
	if (text != NULL) {
		secure_wipe(text, strlen(text));
		json_free_dump(text);
	}
	json_decref(o);
	buf_free(&b);
	return r ? dmk_errf(err, r, "building the backup value: %s", dmk_strerror(r)) : 0;
}

/*
 * Write value as a new version of it->ref, with markers, never over a
 * version we did not see (check-and-set where the store has it), then read
 * it back and compare.
 */
static int
escrow_write(struct agent *a, struct bk_item *it, const struct secret *value,
    const char *time_s, struct dmk_err *err)
{
	struct prov_version cur, nv, bv;
	struct secret *old = NULL, *back = NULL;
	struct prov_meta m;
	struct store *st;
	const char *expect = NULL;
	int r;

	if ((r = agent_store(a, it->ref.store, &st, err)) != 0)
		return r;
	memset(&cur, 0, sizeof(cur));
	r = store_get(st, &it->ref, NULL, &old, &cur, err);
	secret_free(old);
	if (r == 0)
		util_strlcpy(it->previous, cur.id, sizeof(it->previous));
	else if (r == DMK_ERR_NOTFOUND)
		it->previous[0] = '\0';
	else
		return dmk_err_prefix(err, "%s", it->ref.text);
	expect = store_cas(st, it->previous[0] ? it->previous : "0");
	memset(&m, 0, sizeof(m));
	prov_meta_set(&m, MARK_KIND, bk_kind_names[it->kind]);
	if (it->thumbprint[0])
		prov_meta_set(&m, MARK_THUMB, it->thumbprint);
	if (it->key_guid[0])
		prov_meta_set(&m, MARK_GUID, it->key_guid);
	prov_meta_set(&m, MARK_NODE, it->node);
	prov_meta_set(&m, MARK_TIME, time_s);
	prov_meta_set(&m, MARK_PWVER, it->pwver);
	markers_why(&m);
	memset(&nv, 0, sizeof(nv));
	if ((r = agent_guard(a, err)) != 0)
		return r;
	r = store_put(st, &it->ref, value, expect, &m, &nv, err);
	if (r != 0 && nv.id[0] != '\0' && store_can(st, PROV_CAP_META)) {
		/* the version landed, its markers did not: once more */
		struct dmk_err e2;
		if (store_set_meta(st, &it->ref, nv.id, &m, &e2) == 0)
			r = 0;
	}
	if (r == DMK_ERR_CONFLICT)
		return dmk_errf(err, r, "%s: a new version appeared while this backup was being "
		    "written (another run?); nothing was overwritten: run the backup again",
		    it->ref.text);
	if (r != 0)
		return dmk_err_prefix(err, "%s", it->ref.text);
	util_strlcpy(it->version, nv.id, sizeof(it->version));
	bk_fp("after-escrow", bk_kind_fp[it->kind]);
	memset(&bv, 0, sizeof(bv));
	if ((r = store_get(st, &it->ref, nv.id, &back, &bv, err)) != 0)
		return dmk_err_prefix(err, "%s: reading back version %s", it->ref.text, nv.id);
	if (!secret_equal(back, value))
		r = dmk_errf(err, DMK_ERR_VERIFY, "%s: version %s reads back different from what "
		    "was written", it->ref.text, nv.id);
	secret_free(back);
	if (r == 0)
		bk_fp("after-readback", bk_kind_fp[it->kind]);
	return r;
}

static void
item_audit(struct agent *a, const char *ag, const struct bk_item *it)
{
	struct audit_target t = { ag, it->node, it->database[0] ? it->database : NULL };
	struct audit_keys k;

	memset(&k, 0, sizeof(k));
	k.dmk_key_guid = it->kind != BK_SMK && it->key_guid[0] ? it->key_guid : NULL;
	k.cert_thumbprint = it->thumbprint[0] ? it->thumbprint : NULL;
	k.store = it->ref.store;
	k.reference = it->ref.text;
	k.version = it->version[0] ? it->version : NULL;
	agent_audit(a, it->kind == BK_CERT ? "backup-certificate" : it->kind == BK_DMK ?
	    "backup-dmk" : "backup-smk", &t, &k, it->ok ? "escrowed" : "failed",
	    it->ok ? NULL : it->error);
}

/* Escrow one item's bytes; records the outcome in it and the audit. */
static int
escrow_item(struct agent *a, const char *ag, struct bk_item *it, const char *const *fields,
    const unsigned char *const *bytes, const size_t *lens, size_t nfields, struct dmk_err *err)
{
	struct secret *value = NULL;
	char tm[32];
	int r;

	util_rfc3339(time(NULL), tm, sizeof(tm));
	if ((r = escrow_value(it, tm, fields, bytes, lens, nfields, &value, err)) == 0)
		r = escrow_write(a, it, value, tm, err);
	secret_free(value);
	if (r == DMK_ERR_LOCKED)
		return r;    /* the lease was lost before this write: nothing tried */
	it->ok = r == 0;
	if (r != 0)
		util_strlcpy(it->error, err->msg, sizeof(it->error));
	item_audit(a, ag, it);
	return r;
}

/* ---- one database ---- */

static int
thumb_of(const struct sql_value *der, const struct sql_value *tp, char *out, size_t len)
{
	unsigned char md[SHA_DIGEST_LENGTH];
	char hex[2 * SHA_DIGEST_LENGTH + 1];

	SHA1(der->bin, der->len, md);
	if (tp == NULL || tp->len != SHA_DIGEST_LENGTH || memcmp(md, tp->bin, tp->len) != 0)
		return DMK_ERR_VERIFY;
	util_hex(md, sizeof(md), hex);
	snprintf(out, len, "0x%s", hex);
	return 0;
}

/*
 * The backups of one database.  open_pw: the DMK password to open the key
 * with, or NULL to rely on the key opening by itself.
 */
int
bk_backup_db(struct ag_run *run, struct db_plan *p, struct sql_session *s,
    const struct secret *open_pw, struct bk_report *rep, struct dmk_err *err)
{
	struct agent *a = run->a;
	const struct conf_db *db = p->db;
	const struct secret_ref *base;
	struct audit_target t = { run->ag->name, NULL, db->name };
	struct secret *certpw = NULL, *dmkpw = NULL;
	struct prov_version certv, dmkv;
	struct secret_ref certref, dmkref;
	struct sql_result *facts = NULL, *rs = NULL, *dmkres = NULL;
	struct dmk_err certerr, dmkerr;
	struct bk_item tmp, *it;
	size_t i;
	char file[300], node[520] = "", guid[40] = "";
	const char *v;
	int r, failed = 0, dmkrc = 0, opened = 0;

	if ((r = db_base(db, &base, err)) != 0 ||
	    (r = db_pwref(db, BK_CERT, &certref, err)) != 0 ||
	    (r = db_pwref(db, BK_DMK, &dmkref, err)) != 0)
		goto out;
	if ((r = backup_password(a, &certref, &t, &certpw, &certv, err)) != 0 ||
	    (r = backup_password(a, &dmkref, &t, &dmkpw, &dmkv, err)) != 0) {
		dmk_err_prefix(err, "%s: backup password", db->name);
		goto out;
	}
	server_file(a, db->name, file, sizeof(file));
	/* 1: the facts, with the DMK opened for this session.  A password that
	 * does not open it (recover: nobody knows it) is not fatal: the key may
	 * open by itself, through the service master key or a credential. */
	for (;;) {
		opened = open_pw != NULL;
		if ((r = sql_dmk_open_facts(s, db->name, open_pw, &facts, err)) == 0)
			break;
		dmk_err_prefix(err, "%s: opening the master key", db->name);
		if (open_pw == NULL || r != DMK_ERR_SQL || sql_last_error(s)->number != 15313)
			goto out;
		log_warn("%s: the DMK password does not open the key; backing up with the key "
		    "opened by the service master key, if it is", db->name);
		opened = 0;
		open_pw = NULL;
	}
	util_strlcpy(node, run->info.primary, sizeof(node));
	if ((v = bk_cell_str(facts, 0, "node")) != NULL)
		util_strlcpy(node, v, sizeof(node));
	if ((v = bk_cell_str(facts, 0, "dmk_key_guid")) != NULL)
		util_strlcpy(guid, v, sizeof(guid));

	/* 2: every certificate under the DMK, with its private key. */
	if ((r = sql_dmk_certs(s, certpw, &rs, &certerr)) != 0)
		failed = dmk_err_prefix(&certerr, "%s: reading the certificates", db->name);

	/* 3: the DMK, to a file and back (the key is closed in the same batch).
	 * A file on the server is written: under a lease, a change. */
	if ((r = agent_guard(a, err)) != 0)
		goto out;
	dmkrc = sql_dmk_backup(s, file, dmkpw, opened, &dmkres, &dmkerr);
	opened = 0;
	if (dmkrc != 0)
		dmk_err_prefix(&dmkerr, "%s", db->name);
	if (dmkrc == 0)
		bk_fp("after-dmk-file", NULL);

	if (rs == NULL && failed) {
		/* no certificate could be read: one failure for them all */
		memset(&tmp, 0, sizeof(tmp));
		tmp.kind = BK_CERT;
		util_strlcpy(tmp.database, db->name, sizeof(tmp.database));
		util_strlcpy(tmp.name, "*", sizeof(tmp.name));
		util_strlcpy(tmp.node, node, sizeof(tmp.node));
		tmp.pwref = certref;
		util_strlcpy(tmp.pwver, certv.id, sizeof(tmp.pwver));
		util_strlcpy(tmp.error, certerr.msg, sizeof(tmp.error));
		it = report_add(rep, &tmp);
		item_audit(a, run->ag->name, it);
		*err = certerr;
	}
	/* Escrow: the certificates. */
	for (i = 0; rs != NULL && i < rs->nrows; i++) {
		const struct sql_value *der = bk_cell_bin(rs, i, "der"), *pvk = bk_cell_bin(rs, i, "pvk");
		const char *name = bk_cell_str(rs, i, "name");
		static const char *const fields[] = { "certificate", "private_key" };
		const unsigned char *bytes[2];
		size_t lens[2];
		struct dmk_err e;

		memset(&tmp, 0, sizeof(tmp));
		tmp.kind = BK_CERT;
		util_strlcpy(tmp.database, db->name, sizeof(tmp.database));
		util_strlcpy(tmp.name, name ? name : "?", sizeof(tmp.name));
		util_strlcpy(tmp.node, node, sizeof(tmp.node));
		util_strlcpy(tmp.key_guid, guid, sizeof(tmp.key_guid));
		tmp.pwref = certref;
		util_strlcpy(tmp.pwver, certv.id, sizeof(tmp.pwver));
		it = report_add(rep, &tmp);
		if (name == NULL || der == NULL || pvk == NULL) {
			dmk_errf(&e, DMK_ERR_SQL, "%s: certificate %s: CERTPRIVATEKEY gave no private "
			    "key (the DMK did not open, or no permission on the certificate)",
			    db->name, tmp.name);
		} else if (thumb_of(der, sql_cell(rs, i, "thumbprint"), it->thumbprint,
		    sizeof(it->thumbprint)) != 0) {
			dmk_errf(&e, DMK_ERR_VERIFY, "%s: certificate %s: CERTENCODED does not hash to "
			    "the thumbprint SQL Server reports", db->name, tmp.name);
		} else if (escrow_ref(base, "cert", tmp.name, &it->ref, &e) == 0) {
			bytes[0] = der->bin;
			lens[0] = der->len;
			bytes[1] = pvk->bin;
			lens[1] = pvk->len;
			if ((r = escrow_item(a, run->ag->name, it, fields, bytes, lens, 2, &e)) ==
			    DMK_ERR_LOCKED) {
				*err = e;
				goto out;
			}
			if (r == 0) {
				log_info("%s: certificate %s escrowed in %s version %s", db->name,
				    it->name, it->ref.text, it->version);
				continue;
			}
			failed = failed ? failed : e.code;
			*err = e;
			continue;
		}
		it->ok = 0;
		util_strlcpy(it->error, e.msg, sizeof(it->error));
		item_audit(a, run->ag->name, it);
		failed = failed ? failed : e.code;
		*err = e;
	}

	/* The DMK. */
	{
		const struct sql_value *data = bk_cell_bin(dmkres, 0, "dmk_backup");
		static const char *const fields[] = { "data" };
		const unsigned char *bytes[1];
		size_t lens[1];
		struct dmk_err e;

		memset(&tmp, 0, sizeof(tmp));
		tmp.kind = BK_DMK;
		util_strlcpy(tmp.database, db->name, sizeof(tmp.database));
		util_strlcpy(tmp.node, node, sizeof(tmp.node));
		util_strlcpy(tmp.key_guid, guid, sizeof(tmp.key_guid));
		util_strlcpy(tmp.server_file, file, sizeof(tmp.server_file));
		tmp.pwref = dmkref;
		util_strlcpy(tmp.pwver, dmkv.id, sizeof(tmp.pwver));
		it = report_add(rep, &tmp);
		if (dmkrc != 0 || data == NULL || data->len == 0) {
			if (dmkrc != 0)
				e = dmkerr;
			else
				dmk_errf(&e, DMK_ERR_SQL, "%s: OPENROWSET read nothing back from %s",
				    db->name, file);
			it->ok = 0;
			util_strlcpy(it->error, e.msg, sizeof(it->error));
			item_audit(a, run->ag->name, it);
		} else if ((r = escrow_ref(base, "dmk", NULL, &it->ref, &e)) == 0) {
			bytes[0] = data->bin;
			lens[0] = data->len;
			if ((r = escrow_item(a, run->ag->name, it, fields, bytes, lens, 1, &e)) ==
			    DMK_ERR_LOCKED) {
				*err = e;
				goto out;
			}
			if (r == 0)
				log_info("%s: master key escrowed in %s version %s (the file %s stays on "
				    "%s, encrypted by the backup password)", db->name, it->ref.text,
				    it->version, file, node);
		}
		if (!it->ok) {
			failed = failed ? failed : e.code;
			*err = e;
		}
	}
	r = failed;
	if (r == 0)
		bk_fp("after-database", NULL);
out:
	if (opened) {
		/* step 1 failed after opening the key: close it, best effort */
		struct dmk_err e2;
		(void)sql_close_master_key(s, &e2);
	}
	sql_result_free(facts);
	sql_result_free(rs);
	sql_result_free(dmkres);
	secret_free(certpw);
	secret_free(dmkpw);
	return r;
}

int
backup_database(struct ag_run *run, struct db_plan *p, struct sql_session *s,
    struct dmk_err *err)
{
	return bk_backup_db(run, p, s, p->pw, NULL, err);
}

/* ---- service master keys, on every replica ---- */

struct smk_take {
	char node[520];
	char key_guid[40];
	char file[300];
	unsigned char *data;
	size_t len;
	int code;
	char error[DMK_ERR_MSG_MAX];
};

struct smk_ctx {
	const struct secret *pw;
	struct smk_take *takes;      /* parallel to run->reps */
};

static int
smk_work(struct rep_run *rr, struct sql_session *s)
{
	struct ag_run *run = rr->run;
	struct smk_ctx *c = run->ctx;
	struct smk_take *tk = &c->takes[rr - run->reps];
	struct sql_result *facts = NULL, *res = NULL;
	const struct sql_value *d;
	const char *v;
	struct dmk_err e;
	int r;

	util_strlcpy(tk->node, rr->rep->name, sizeof(tk->node));
	server_file(run->a, "smk", tk->file, sizeof(tk->file));
	if ((r = sql_smk_facts(s, &facts, &e)) != 0) {
		dmk_err_prefix(&e, "reading the service master key's facts");
		goto out;
	}
	if ((v = bk_cell_str(facts, 0, "node")) != NULL)
		util_strlcpy(tk->node, v, sizeof(tk->node));
	if ((v = bk_cell_str(facts, 0, "smk_key_guid")) != NULL)
		util_strlcpy(tk->key_guid, v, sizeof(tk->key_guid));
	if ((r = sql_smk_backup(s, tk->file, c->pw, &res, &e)) != 0)
		goto out;
	d = bk_cell_bin(res, 0, "smk_backup");
	if (d == NULL || d->len == 0) {
		r = dmk_errf(&e, DMK_ERR_SQL, "OPENROWSET read nothing back from %s", tk->file);
		goto out;
	}
	if ((tk->data = malloc(d->len)) == NULL) {
		r = dmk_errf(&e, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	memcpy(tk->data, d->bin, d->len);
	tk->len = d->len;
out:
	if (r != 0) {
		tk->code = r;
		util_strlcpy(tk->error, e.msg, sizeof(tk->error));
		util_strlcpy(rr->error, e.msg, sizeof(rr->error));
	}
	sql_result_free(facts);
	sql_result_free(res);
	return r;
}

int
bk_backup_smk(struct ag_run *run, struct bk_report *rep, struct dmk_err *err)
{
	struct agent *a = run->a;
	const struct conf_ag *ag = run->ag;
	struct audit_target t = { ag->name, NULL, NULL };
	struct smk_ctx c;
	struct secret *pw = NULL;
	struct prov_version pv;
	struct bk_item tmp, *it;
	size_t i;
	int r, failed = 0;

	memset(&c, 0, sizeof(c));
	if (!ag->has_smk_backup_password)
		return dmk_errf(err, DMK_ERR_CONFIG, "[ag %s]: --smk needs smk_backup_password (a "
		    "store reference: the SMK backups are kept beside it)", ag->label);
	if ((r = escrow_ref(&ag->smk_backup_password, "smk", "x", &tmp.ref, err)) != 0)
		return r;
	if ((r = backup_password(a, &ag->smk_backup_password, &t, &pw, &pv, err)) != 0)
		return dmk_err_prefix(err, "AG %s: smk_backup_password", ag->name);
	if ((c.takes = calloc(run->info.nreplicas + 1, sizeof(*c.takes))) == NULL) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	c.pw = pw;
	run->ctx = &c;
	for (i = 0; i < run->nreps; i++)
		free(run->reps[i].dbs);
	free(run->reps);
	run->reps = NULL;
	run->nreps = 0;
	ag_each_replica(run, smk_work);
	bk_fp("after-smk-files", NULL);
	for (i = 0; i < run->nreps; i++) {
		struct rep_run *rr = &run->reps[i];
		struct smk_take *tk = &c.takes[i];
		static const char *const fields[] = { "data" };
		const unsigned char *bytes[1] = { tk->data };
		size_t lens[1] = { tk->len };
		struct dmk_err e;

		memset(&tmp, 0, sizeof(tmp));
		tmp.kind = BK_SMK;
		util_strlcpy(tmp.node, tk->node[0] ? tk->node : rr->rep->name, sizeof(tmp.node));
		util_strlcpy(tmp.key_guid, tk->key_guid, sizeof(tmp.key_guid));
		util_strlcpy(tmp.server_file, tk->file, sizeof(tmp.server_file));
		tmp.pwref = ag->smk_backup_password;
		util_strlcpy(tmp.pwver, pv.id, sizeof(tmp.pwver));
		it = report_add(rep, &tmp);
		if (!rr->reached || tk->data == NULL) {
			dmk_errf(&e, rr->reached ? tk->code : rr->code, "%s: %s", tmp.node,
			    rr->reached ? tk->error : rr->error);
			it->ok = 0;
			util_strlcpy(it->error, e.msg, sizeof(it->error));
			item_audit(a, ag->name, it);
		} else if (escrow_ref(&ag->smk_backup_password, "smk", rr->rep->name, &it->ref,
		    &e) == 0)
			escrow_item(a, ag->name, it, fields, bytes, lens, 1, &e);
		if (!it->ok) {
			failed = failed ? failed : (e.code ? e.code : DMK_ERR_INCOMPLETE);
			*err = e;
		}
	}
	r = failed;
out:
	for (i = 0; c.takes != NULL && i < run->info.nreplicas; i++)
		if (c.takes[i].data != NULL) {
			secure_wipe(c.takes[i].data, c.takes[i].len);
			free(c.takes[i].data);
		}
	free(c.takes);
	run->ctx = NULL;
	secret_free(pw);
	return r;
}

