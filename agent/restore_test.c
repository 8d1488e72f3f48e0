/*
 * restore_test.c: proving an escrowed backup restores: the DMK and the
 * certificates restored into a scratch database and compared with the
 * originals; scratch databases a dead run left are dropped first.
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
	f = bk_cell_bin(res, 0, "data");
	if (f == NULL || f->len != len || memcmp(f->bin, data, len) != 0) {
		r = dmk_errf(err, DMK_ERR_VERIFY, "%s: the escrowed bytes differ from %s on the "
		    "primary", it->ref.text, it->server_file);
		goto out;
	}
	sql_result_free(res);
	res = NULL;
	if ((r = sql_restore_dmk(s, it->server_file, pw, tmp_pw, &res, err)) != 0)
		goto out;
	g = bk_cell_str(res, 0, "key_guid");
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
	tp = bk_cell_bin(res, 0, "thumbprint");
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
		if ((name = bk_cell_str(res, i, "name")) == NULL || strncmp(name, prefix, plen) != 0)
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
int
bk_restore_test(struct ag_run *run, struct sql_session *s, struct bk_report *rep, size_t from,
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
	bk_policy_of(a, &pp);
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

