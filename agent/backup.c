/*
 * backup.c: dmkagent backup, and backup_database() for rotate and recover.
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

#define BK_FORMAT "dmkagent-backup-1"
#define BK_DIR "C:\\Windows\\Temp\\"

enum bk_kind { BK_CERT = 0, BK_DMK, BK_SMK };
static const char *const kind_names[] = { "cert-backup", "dmk-backup", "smk-backup" };
static const char *const kind_text[] = { "certificate", "master key", "service master key" };
static const char *const kind_fp[] = { "cert", "dmk", "smk" };   /* failpoint names */

/* A step boundary: backup:<boundary>[-<kind>] (failpoint.h; nothing in a
 * release build). */
static void
bk_fp(const char *boundary, const char *kind)
{
	char name[64];

	snprintf(name, sizeof(name), "backup:%s%s%s", boundary, kind ? "-" : "", kind ? kind : "");
	failpoint(name);
}

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

static const char *
cell_str(const struct sql_result *r, size_t row, const char *col)
{
	const struct sql_value *v = r ? sql_cell(r, row, col) : NULL;

	return v && v->type == SQLT_STR ? v->s : NULL;
}

static const struct sql_value *
cell_bin(const struct sql_result *r, size_t row, const char *col)
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

static void
policy_of(struct agent *a, struct pass_policy *pp)
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
	policy_of(a, &pp);
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
	json_object_set_new(o, "kind", json_string(kind_names[it->kind]));
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
	prov_meta_set(&m, MARK_KIND, kind_names[it->kind]);
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
	bk_fp("after-escrow", kind_fp[it->kind]);
	memset(&bv, 0, sizeof(bv));
	if ((r = store_get(st, &it->ref, nv.id, &back, &bv, err)) != 0)
		return dmk_err_prefix(err, "%s: reading back version %s", it->ref.text, nv.id);
	if (!secret_equal(back, value))
		r = dmk_errf(err, DMK_ERR_VERIFY, "%s: version %s reads back different from what "
		    "was written", it->ref.text, nv.id);
	secret_free(back);
	if (r == 0)
		bk_fp("after-readback", kind_fp[it->kind]);
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
static int
backup_db(struct ag_run *run, struct db_plan *p, struct sql_session *s,
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
	if ((v = cell_str(facts, 0, "node")) != NULL)
		util_strlcpy(node, v, sizeof(node));
	if ((v = cell_str(facts, 0, "dmk_key_guid")) != NULL)
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
		const struct sql_value *der = cell_bin(rs, i, "der"), *pvk = cell_bin(rs, i, "pvk");
		const char *name = cell_str(rs, i, "name");
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
		const struct sql_value *data = cell_bin(dmkres, 0, "dmk_backup");
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
	return backup_db(run, p, s, p->pw, NULL, err);
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
	if ((v = cell_str(facts, 0, "node")) != NULL)
		util_strlcpy(tk->node, v, sizeof(tk->node));
	if ((v = cell_str(facts, 0, "smk_key_guid")) != NULL)
		util_strlcpy(tk->key_guid, v, sizeof(tk->key_guid));
	if ((r = sql_smk_backup(s, tk->file, c->pw, &res, &e)) != 0)
		goto out;
	d = cell_bin(res, 0, "smk_backup");
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

static int
backup_smk(struct ag_run *run, struct bk_report *rep, struct dmk_err *err)
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

/* ---- the restore test ---- */

/* The escrowed value of it, as JSON (from the store, by version). */
static int
escrow_read(struct agent *a, const struct bk_item *it, json_t **out, struct dmk_err *err)
{
	struct store *st;
	struct secret *v = NULL;
	struct prov_version ver;
	json_error_t je;
	int r;

	*out = NULL;
	if ((r = agent_store(a, it->ref.store, &st, err)) != 0)
		return r;
	if ((r = store_get(st, &it->ref, it->version, &v, &ver, err)) != 0)
		return dmk_err_prefix(err, "%s version %s", it->ref.text, it->version);
	*out = json_loadb(secret_reveal(v), secret_len(v), 0, &je);
	secret_free(v);
	if (*out == NULL || !json_is_object(*out)) {
		json_decref(*out);
		*out = NULL;
		return dmk_errf(err, DMK_ERR_PROTOCOL, "%s version %s: not a dmkagent backup",
		    it->ref.text, it->version);
	}
	return 0;
}

static int
json_bytes(json_t *o, const char *field, unsigned char **out, size_t *len)
{
	json_t *s = json_object_get(o, field);

	if (!json_is_string(s))
		return DMK_ERR_BADINPUT;
	return escrow_b64_decode(json_string_value(s), json_string_length(s), out, len);
}

/* The backup password of it, the version the backup was made with. */
static int
item_password(struct agent *a, const struct bk_item *it, struct secret **pw,
    struct dmk_err *err)
{
	struct store *st;
	struct prov_version v;
	int r;

	if (it->pwref.kind != REF_STORE)
		return agent_resolve(a, &it->pwref, 0, pw, NULL, err);
	if ((r = agent_store(a, it->pwref.store, &st, err)) != 0)
		return r;
	return store_get(st, &it->pwref, it->pwver[0] ? it->pwver : NULL, pw, &v, err);
}

static void
restore_mark(struct bk_item *it, int ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
restore_mark(struct bk_item *it, int ok, const char *fmt, ...)
{
	va_list ap;

	it->restore = ok;
	va_start(ap, fmt);
	vsnprintf(it->restore_note, sizeof(it->restore_note), fmt, ap);
	va_end(ap);
}

/* DMK: the escrowed bytes are the file on the primary; the file restores
 * into the scratch database with the backup password; same key_guid. */
static int
restore_dmk(struct agent *a, struct sql_session *s, struct bk_item *it,
    const struct secret *tmp_pw, struct dmk_err *err)
{
	json_t *o = NULL;
	unsigned char *data = NULL;
	size_t len = 0;
	struct secret *pw = NULL;
	struct sql_result *res = NULL;
	const struct sql_value *f;
	const char *g;
	int r;

	if ((r = escrow_read(a, it, &o, err)) != 0)
		goto out;
	if (json_bytes(o, "data", &data, &len) != 0) {
		r = dmk_errf(err, DMK_ERR_PROTOCOL, "%s version %s: no data", it->ref.text, it->version);
		goto out;
	}
	if ((r = item_password(a, it, &pw, err)) != 0)
		goto out;
	/* T-SQL cannot write the escrowed bytes to a file: restore from the
	 * file this run left on the primary, once it is shown to be the same. */
	if ((r = sql_read_server_file(s, it->server_file, &res, err)) != 0) {
		dmk_err_prefix(err, "reading the DMK backup file");
		goto out;
	}
	f = cell_bin(res, 0, "data");
	if (f == NULL || f->len != len || memcmp(f->bin, data, len) != 0) {
		r = dmk_errf(err, DMK_ERR_VERIFY, "%s: the escrowed bytes differ from %s on the "
		    "primary", it->ref.text, it->server_file);
		goto out;
	}
	sql_result_free(res);
	res = NULL;
	if ((r = sql_restore_dmk(s, it->server_file, pw, tmp_pw, &res, err)) != 0)
		goto out;
	g = cell_str(res, 0, "key_guid");
	if (g == NULL || strcasecmp(g, it->key_guid) != 0) {
		r = dmk_errf(err, DMK_ERR_VERIFY, "the restored master key has key_guid %s, the "
		    "backed-up one %s", g ? g : "(none)", it->key_guid);
		goto out;
	}
	r = 0;
out:
	sql_result_free(res);
	secret_free(pw);
	if (data != NULL) {
		secure_wipe(data, len);
		free(data);
	}
	json_decref(o);
	return r;
}

/* A certificate: recreated from the escrowed bytes; same thumbprint; its
 * private key works. */
static int
restore_cert(struct agent *a, struct sql_session *s, struct bk_item *it, struct dmk_err *err)
{
	json_t *o = NULL;
	unsigned char *der = NULL, *pvk = NULL, md[SHA_DIGEST_LENGTH];
	size_t dlen = 0, plen = 0;
	struct secret *pw = NULL;
	struct sql_result *res = NULL;
	const struct sql_value *tp, *ok;
	char hex[2 * SHA_DIGEST_LENGTH + 3];
	int r;

	if ((r = escrow_read(a, it, &o, err)) != 0)
		goto out;
	if (json_bytes(o, "certificate", &der, &dlen) != 0 ||
	    json_bytes(o, "private_key", &pvk, &plen) != 0) {
		r = dmk_errf(err, DMK_ERR_PROTOCOL, "%s version %s: no certificate or private key",
		    it->ref.text, it->version);
		goto out;
	}
	if ((r = item_password(a, it, &pw, err)) != 0)
		goto out;
	if ((r = sql_create_cert_from_binary(s, it->name, der, dlen, pvk, plen, pw, &res,
	    err)) != 0)
		goto out;
	tp = cell_bin(res, 0, "thumbprint");
	ok = res ? sql_cell(res, 0, "key_ok") : NULL;
	if (tp == NULL || tp->len != SHA_DIGEST_LENGTH) {
		r = dmk_errf(err, DMK_ERR_VERIFY, "the recreated certificate has no thumbprint");
		goto out;
	}
	memcpy(md, tp->bin, sizeof(md));
	hex[0] = '0';
	hex[1] = 'x';
	util_hex(md, sizeof(md), hex + 2);
	if (strcasecmp(hex, it->thumbprint) != 0) {
		r = dmk_errf(err, DMK_ERR_VERIFY, "the recreated certificate's thumbprint is %s, "
		    "the original's %s", hex, it->thumbprint);
		goto out;
	}
	if (ok == NULL || ok->type != SQLT_INT || ok->i != 1) {
		r = dmk_errf(err, DMK_ERR_VERIFY, "the recreated certificate's private key does not "
		    "decrypt what its public key encrypted");
		goto out;
	}
	r = 0;
out:
	sql_result_free(res);
	secret_free(pw);
	if (der != NULL) {
		secure_wipe(der, dlen);
		free(der);
	}
	if (pvk != NULL) {
		secure_wipe(pvk, plen);
		free(pvk);
	}
	json_decref(o);
	return r;
}

#define BK_SCRATCH "dmkagent_restore_test_"

/* "dmkagent_restore_test_<8 hex>_": the scratch databases of this host and
 * state_dir, i.e. of runs under the same local lock as this one. */
static void
scratch_prefix(struct agent *a, char *out, size_t len)
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	char host[256] = "", who[sizeof(host) + sizeof(a->cfg->state_dir) + 2];
	char hex[2 * SHA256_DIGEST_LENGTH + 1];

	if (gethostname(host, sizeof(host)) != 0)
		host[0] = '\0';
	host[sizeof(host) - 1] = '\0';
	snprintf(who, sizeof(who), "%s\n%s", host, a->cfg->state_dir);
	SHA256((const unsigned char *)who, strlen(who), md);
	util_hex(md, 4, hex);
	snprintf(out, len, BK_SCRATCH "%s_", hex);
}

/*
 * Drop the scratch databases an earlier run of this agent left when it
 * died in the middle of a restore test (SIGKILL, a dropped connection
 * before its DROP DATABASE).  We hold the local lock, so none of them is
 * in use; another host's or state_dir's carry another prefix.  Best
 * effort: a failure is logged and the restore test goes on.
 */
static void
scratch_sweep(struct agent *a, struct sql_session *s, const char *prefix)
{
	struct sql_result *res = NULL;
	struct dmk_err e;
	const char *name;
	size_t i, plen = strlen(prefix);

	if (sql_databases_like(s, BK_SCRATCH "%", &res, &e) != 0) {
		log_warn("restore test: listing scratch databases: %s", e.msg);
		goto out;
	}
	for (i = 0; i < res->nrows; i++) {
		if ((name = cell_str(res, i, "name")) == NULL || strncmp(name, prefix, plen) != 0)
			continue;
		if (sql_drop_database(s, name, &e) != 0)
			log_warn("restore test: the scratch database %s, left by an earlier run, "
			    "could not be dropped: %s", name, e.msg);
		else
			log_info("restore test: dropped the scratch database %s, left by an earlier "
			    "run that stopped in its restore test", name);
	}
out:
	sql_result_free(res);
}

/* A scratch database on the primary (not in the AG) for one database's
 * backups, [from, to) in rep; dropped at the end whatever happened. */
static int
restore_test(struct ag_run *run, struct sql_session *s, struct bk_report *rep, size_t from,
    size_t to, struct dmk_err *err)
{
	struct agent *a = run->a;
	struct pass_policy pp;
	struct secret *tmp_pw = NULL;
	char scratch[80], prefix[48], rnd[33];
	size_t i;
	int r, created = 0, failed = 0, dmk_done = 0;
	struct dmk_err e;

	scratch_prefix(a, prefix, sizeof(prefix));
	scratch_sweep(a, s, prefix);
	util_random_id(rnd, sizeof(rnd));
	rnd[12] = '\0';
	snprintf(scratch, sizeof(scratch), "%s%s", prefix, rnd);
	policy_of(a, &pp);
	if ((r = genpass(&pp, &tmp_pw, err)) != 0)
		return r;
	if ((r = sql_create_database_use(s, scratch, &e)) != 0) {
		int num = sql_last_error(s)->number;
		created = num != 1801 && num != 102 && num != 262;
		for (i = from; i < to; i++)
			if (rep->items[i].ok)
				restore_mark(&rep->items[i], 0, "restore test skipped: %s%s", e.msg,
				    num == 102 ? " (this server does not know CREATE DATABASE)" : "");
		log_warn("restore test skipped: %s", e.msg);
		r = num == 102 ? 0 : r;
		*err = e;
		goto out;
	}
	created = 1;
	bk_fp("after-restore-scratch", NULL);
	/* The DMK first: the certificates' keys go under it. */
	for (i = from; i < to; i++) {
		struct bk_item *it = &rep->items[i];
		if (it->kind != BK_DMK || !it->ok)
			continue;
		if (restore_dmk(a, s, it, tmp_pw, &e) == 0) {
			restore_mark(it, 1, "restored in scratch database %s: same key_guid", scratch);
			dmk_done = 1;
		} else {
			restore_mark(it, -1, "restore test FAILED: %s", e.msg);
			failed = e.code;
			*err = e;
		}
	}
	if (!dmk_done && (r = sql_create_master_key(s, tmp_pw, err)) != 0) {
		dmk_err_prefix(err, "scratch database");
		goto out;
	}
	for (i = from; i < to; i++) {
		struct bk_item *it = &rep->items[i];
		if (it->kind != BK_CERT || !it->ok)
			continue;
		if (restore_cert(a, s, it, &e) == 0)
			restore_mark(it, 1, "recreated in scratch database %s: same thumbprint, the "
			    "private key works", scratch);
		else {
			restore_mark(it, -1, "restore test FAILED: %s", e.msg);
			failed = e.code;
			*err = e;
		}
	}
	r = failed;
out:
	if (created) {
		if (sql_drop_database(s, scratch, &e) == 0)
			log_info("restore test: scratch database %s dropped", scratch);
		else {
			/* Not done: it holds copies of the keys.  The next restore
			 * test from this host drops it (scratch_sweep). */
			log_warn("restore test: the scratch database %s could not be dropped: %s; "
			    "the next restore test from this host drops it", scratch, e.msg);
			if (r == 0) {
				r = dmk_err_prefix(&e, "restore test: the scratch database %s is left "
				    "on the primary (the next restore test drops it)", scratch);
				*err = e;
			}
		}
	}
	secret_free(tmp_pw);
	bk_fp("after-restore-test", NULL);
	for (i = from; i < to; i++) {
		struct bk_item *it = &rep->items[i];
		struct audit_target t = { run->ag->name, it->node, it->database };
		struct audit_keys k;
		if (it->restore == 0)
			continue;
		memset(&k, 0, sizeof(k));
		k.dmk_key_guid = it->key_guid[0] ? it->key_guid : NULL;
		k.cert_thumbprint = it->thumbprint[0] ? it->thumbprint : NULL;
		k.store = it->ref.store;
		k.reference = it->ref.text;
		k.version = it->version;
		agent_audit(a, "restore-test", &t, &k, it->restore > 0 ? "passed" : "failed",
		    it->restore > 0 ? NULL : it->restore_note);
	}
	return r;
}

/* ---- the command ---- */

static void
report_text(struct agent *a, const struct bk_report *rep, size_t from)
{
	size_t i;

	for (i = from; i < rep->n; i++) {
		const struct bk_item *it = &rep->items[i];
		if (!it->ok) {
			fprintf(a->out, "  %-12s %s%s%s FAILED: %s\n", it->database[0] ? it->database :
			    it->node, kind_text[it->kind], it->name[0] ? " " : "", it->name, it->error);
			continue;
		}
		fprintf(a->out, "  %-12s %s%s%s", it->database[0] ? it->database : it->node,
		    kind_text[it->kind], it->name[0] ? " " : "", it->name);
		if (it->thumbprint[0])
			fprintf(a->out, " thumbprint %s", it->thumbprint);
		else if (it->key_guid[0])
			fprintf(a->out, " key_guid %s", it->key_guid);
		fprintf(a->out, " (node %s): %s version %s%s%s%s\n", it->node, it->ref.text, it->version,
		    it->previous[0] ? " (previous " : "", it->previous, it->previous[0] ? ")" : "");
		if (it->server_file[0])
			fprintf(a->out, "      the backup file %s stays on %s, encrypted by the "
			    "backup password\n", it->server_file, it->node);
		if (it->restore != 0 || it->restore_note[0])
			fprintf(a->out, "      %s\n", it->restore_note);
	}
}

static json_t *
report_json(const struct bk_report *rep, size_t from)
{
	json_t *arr = json_array();
	size_t i;

	for (i = from; i < rep->n; i++) {
		const struct bk_item *it = &rep->items[i];
		json_t *o = json_object();
		json_object_set_new(o, "kind", json_string(kind_names[it->kind]));
		if (it->database[0])
			json_object_set_new(o, "database", json_string(it->database));
		if (it->name[0])
			json_object_set_new(o, "name", json_string(it->name));
		json_object_set_new(o, "node", json_string(it->node));
		if (it->thumbprint[0])
			json_object_set_new(o, "thumbprint", json_string(it->thumbprint));
		if (it->key_guid[0])
			json_object_set_new(o, it->kind == BK_CERT ? "dmk_key_guid" : "key_guid",
			    json_string(it->key_guid));
		json_object_set_new(o, "reference", json_string(it->ref.text));
		json_object_set_new(o, "version", it->version[0] ? json_string(it->version) : json_null());
		json_object_set_new(o, "previous_version", it->previous[0] ?
		    json_string(it->previous) : json_null());
		json_object_set_new(o, "password_reference", json_string(it->pwref.text));
		json_object_set_new(o, "password_version", json_string(it->pwver));
		if (it->server_file[0])
			json_object_set_new(o, "server_file", json_string(it->server_file));
		json_object_set_new(o, "ok", json_boolean(it->ok));
		json_object_set_new(o, "error", it->ok ? json_null() : json_string(it->error));
		json_object_set_new(o, "restore_test", it->restore > 0 ? json_string("passed") :
		    it->restore < 0 ? json_string("failed") : it->restore_note[0] ?
		    json_string("skipped") : json_null());
		if (it->restore_note[0])
			json_object_set_new(o, "restore_note", json_string(it->restore_note));
		json_array_append_new(arr, o);
	}
	return arr;
}

/* Keep the worst outcome; "unreachable" (exit 5) wins, so a caller can retry. */
struct bk_opts {
	int smk, restore;
	struct bk_report rep;
};

static int
bk_option(struct agcmd_ctx *c, int ch, const char *arg, struct dmk_err *err)
{
	struct bk_opts *o = c->data;

	(void)arg;
	switch (ch) {
	case 's': o->smk = 1; return 0;
	case 't': o->restore = 1; return 0;
	}
	return dmk_errf(err, DMK_ERR_USAGE, "backup: unknown option");
}

/* A passed restore test, on the DMK backup's escrow version: what run's
 * restore_test_every counts from. */
static void
mark_restored(struct agent *a, const struct bk_item *it)
{
	struct prov_meta m;
	struct store *st;
	struct dmk_err e;
	char t[32];

	if (it->kind != BK_DMK || it->restore <= 0 || it->version[0] == '\0')
		return;
	util_rfc3339(time(NULL), t, sizeof(t));
	memset(&m, 0, sizeof(m));
	prov_meta_set(&m, MARK_RESTORED, t);
	if (agent_store(a, it->ref.store, &st, &e) != 0 ||
	    store_set_meta(st, &it->ref, it->version, &m, &e) != 0)
		log_warn("%s version %s: the passed restore test is not marked: %s", it->ref.text,
		    it->version, e.msg);
}

/* One database: escrow its backups, then (restore) prove them. */
static void
bk_db(struct agcmd_ctx *c, struct bk_opts *o, struct ag_run *run, struct db_plan *p,
    struct sql_session *s, int restore)
{
	struct agent *a = c->a;
	const struct secret *open_pw = p->pw;
	size_t first = o->rep.n, i;
	struct dmk_err e;
	int r, worst = 0;

	if (!p->usable && !(p->code == DMK_ERR_WRONGPASS && p->in_ag)) {
		dmk_errf(&e, p->code ? p->code : DMK_ERR_INTERNAL, "%s: not backed up: %s",
		    p->db->name, p->error);
		agcmd_fail(c, e.code, &e);
		deployhook_fire(a, "failed", run->ag->name, p->db->name, NULL, e.code);
		return;
	}
	if (!p->usable) {
		/* the store's password does not open the DMK: a backup still
		 * helps, if the key opens by itself (SMK or a credential) */
		log_warn("%s", p->error);
		open_pw = NULL;
	}
	r = backup_db(run, p, s, open_pw, &o->rep, &e);
	if (r != 0)
		dmk_err_prefix(&e, "%s: not backed up", p->db->name);
	agcmd_fail(c, r, &e);
	worst = r;
	if (restore && o->rep.n > first) {
		r = restore_test(run, s, &o->rep, first, o->rep.n, &e);
		agcmd_fail(c, r, &e);
		worst = agcmd_worse(worst, r);
		for (i = first; i < o->rep.n; i++)
			mark_restored(a, &o->rep.items[i]);
	}
	if (a->output == OUTPUT_TEXT)
		report_text(a, &o->rep, first);
	for (i = first; i < o->rep.n; i++)
		if (o->rep.items[i].kind == BK_DMK && o->rep.items[i].ok)
			break;
	if (worst != 0 || o->rep.n > first)
		deployhook_fire(a, worst != 0 ? "failed" : "backed-up", run->ag->name, p->db->name,
		    i < o->rep.n ? o->rep.items[i].version : NULL, worst);
}

static int
bk_steps(struct agcmd_ctx *c, struct bk_opts *o, struct ag_run *run, json_t *jag,
    const int *want)
{
	struct agent *a = c->a;
	const struct conf_ag *ag = run->ag;
	struct sql_endpoint ep;
	struct sql_session *s = NULL;
	struct dmk_err e;
	size_t j, from = o->rep.n;
	int r;

	ag_listener_endpoint(ag, &ep);
	if ((r = sql_connect(&ep, &run->login, &s, &e)) != 0) {
		dmk_err_prefix(&e, "AG %s", ag->name);
		agcmd_fail(c, r, &e);
		goto out;
	}
	for (j = 0; j < run->nplans && !agcmd_stopping(c, run->plans[j].db->name); j++)
		if (want == NULL || want[j] > 0)
			bk_db(c, o, run, &run->plans[j], s, want ? want[j] > 1 : o->restore);
	if (o->smk) {
		size_t first = o->rep.n;
		r = backup_smk(run, &o->rep, &e);
		if (r != 0)
			dmk_err_prefix(&e, "service master keys not backed up");
		agcmd_fail(c, r, &e);
		if (a->output == OUTPUT_TEXT) {
			report_text(a, &o->rep, first);
			if (o->restore && o->rep.n > first)
				fprintf(a->out, "  service master key backups are not restore-tested: "
				    "RESTORE SERVICE MASTER KEY would change the node; the escrowed "
				    "bytes were compared with the store's copy\n");
		}
	}
out:
	json_object_set_new(jag, "backups", report_json(&o->rep, from));
	sql_close(s);
	return 0;
}

static int
bk_ag(struct agcmd_ctx *c, struct ag_run *run, json_t *jag)
{
	return bk_steps(c, c->data, run, jag, NULL);
}

int
backup_steps(struct agcmd_ctx *c, struct ag_run *run, const int *want, json_t *jag,
    size_t *escrowed)
{
	struct bk_opts o;
	size_t i;
	int r;

	memset(&o, 0, sizeof(o));
	r = bk_steps(c, &o, run, jag, want);
	for (i = 0; i < o.rep.n; i++)
		*escrowed += o.rep.items[i].ok;
	free(o.rep.items);
	return r;
}

static void
bk_finish(struct agcmd_ctx *c, json_t *root)
{
	struct bk_opts *o = c->data;
	size_t i, nok = 0, nfail = 0;

	for (i = 0; i < o->rep.n; i++) {
		nok += o->rep.items[i].ok;
		nfail += !o->rep.items[i].ok || o->rep.items[i].restore < 0;
	}
	json_object_set_new(root, "escrowed", json_integer((json_int_t)nok));
	if (c->a->output == OUTPUT_TEXT)
		fprintf(c->a->out, "%zu backup(s) escrowed%s\n", nok, nfail ? ", with failures "
		    "(see above)" : "");
	/* some backups escrowed, then a failure: partial work */
	if (c->worst != 0 && nok > 0 && dmk_exit_code(c->worst) == DMK_EXIT_FAILED)
		agcmd_conclude(c, DMK_ERR_INCOMPLETE, "incomplete: %zu backup(s) escrowed, then "
		    "%zu problem(s), reported above", nok, c->nfailed);
}

static const struct option bk_options[] = {
	{ "smk", no_argument, NULL, 's' },
	{ "restore-test", no_argument, NULL, 't' },
	{ NULL, 0, NULL, 0 },
};

static const struct agcmd backup_cmd = {
	.name = "backup",
	.flags = AGCMD_CHANGES | AGCMD_PROBE | AGCMD_HEADER,
	.options = bk_options,
	.shortopts = "st",
	.option = bk_option,
	.run_ag = bk_ag,
	.finish = bk_finish,
};

int
cmd_backup(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	struct bk_opts o;
	int r;

	memset(&o, 0, sizeof(o));
	r = agcmd_main(a, &backup_cmd, &o, argc, argv, err);
	free(o.rep.items);
	return r;
}
