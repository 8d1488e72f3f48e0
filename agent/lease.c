/* lease.c: the per-database rotation lease in the store; see lease.h. */
#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "lease.h"

/* A name component safe in both stores' paths: [A-Za-z0-9-], others '-'. */
static void
path_part(char *dst, size_t n, const char *src)
{
	size_t i;

	for (i = 0; i + 1 < n && src[i] != '\0'; i++) {
		unsigned char c = (unsigned char)src[i];
		dst[i] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
		    (c >= 'A' && c <= 'Z') || c == '-' ? (char)c : '-';
	}
	dst[i] = '\0';
}

/* Where the lease lives: a path beside the store's other secrets.  Stores
 * with hierarchical paths get dmkagent/leases/AG/DB; flat ones (Azure
 * secret names) dmkagent-lease-AG-DB. */
static int
lease_ref(const struct secret_ref *near, const char *ag, const char *db,
    struct secret_ref *out, struct dmk_err *err)
{
	char a2[200], d2[200];

	memset(out, 0, sizeof(*out));
	out->kind = REF_STORE;
	util_strlcpy(out->store, near->store, sizeof(out->store));
	path_part(a2, sizeof(a2), ag);
	path_part(d2, sizeof(d2), db);
	if (strchr(near->path, '/') != NULL)
		snprintf(out->path, sizeof(out->path), "dmkagent/leases/%s/%s", a2, d2);
	else
		snprintf(out->path, sizeof(out->path), "dmkagent-lease-%s-%s", a2, d2);
	if (strlen(out->path) > 120)
		return dmk_errf(err, DMK_ERR_CONFIG, "lease name for %s/%s is too long", ag, db);
	if (near->field[0])
		util_strlcpy(out->field, "lease", sizeof(out->field));
	snprintf(out->text, sizeof(out->text), "%s:%s%s%s", out->store, out->path,
	    out->field[0] ? "#" : "", out->field);
	return 0;
}

static void
whoami(char *user, size_t ul, char *host, size_t hl)
{
	struct passwd *pw = getpwuid(geteuid());

	util_strlcpy(user, pw && pw->pw_name ? pw->pw_name : "?", ul);
	if (gethostname(host, hl) != 0)
		util_strlcpy(host, "?", hl);
	host[hl - 1] = '\0';
}

static struct secret *
record(struct agent *a, const char *state, const char *command, time_t expires)
{
	char user[64], host[256], t[32], e[32];
	struct secret *s;
	json_t *o;
	char *txt;

	whoami(user, sizeof(user), host, sizeof(host));
	util_rfc3339(time(NULL), t, sizeof(t));
	util_rfc3339(expires, e, sizeof(e));
	o = json_pack("{s:s,s:s,s:s,s:i,s:s,s:s,s:s,s:s}", "state", state, "owner", user,
	    "host", host, "pid", (int)getpid(), "run", a->run_id, "command", command,
	    "taken", t, "expires", e);
	if (o == NULL)
		return NULL;
	txt = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	if (txt == NULL)
		return NULL;
	s = secret_from_str(txt);
	json_free_dump(txt);
	return s;
}

/* Who holds the lease, as a record names it: for messages. */
static void
holder(json_t *o, char *why, size_t wl)
{
	const char *st = json_string_value(json_object_get(o, "state"));
	const char *h = json_string_value(json_object_get(o, "host"));
	const char *run = json_string_value(json_object_get(o, "run"));
	const char *exp = json_string_value(json_object_get(o, "expires"));
	const char *owner = json_string_value(json_object_get(o, "owner"));
	int pid = (int)json_integer_value(json_object_get(o, "pid"));

	if (st != NULL && strcmp(st, "held") != 0)
		snprintf(why, wl, "%s by %s@%s pid %d (run %s)", st, owner ? owner : "?",
		    h ? h : "?", pid, run ? run : "?");
	else
		snprintf(why, wl, "held by %s@%s pid %d (run %s) until %s", owner ? owner : "?",
		    h ? h : "?", pid, run ? run : "?", exp ? exp : "?");
}

/* May the record (as read) be replaced?  why gets the holder, when not. */
static int
takeable(struct agent *a, const struct secret *cur, char *why, size_t wl)
{
	char host[256], user[64];
	const char *st, *h, *run, *exp;
	json_t *o;
	time_t t;
	int pid, ok = 0;

	o = json_loadb(secret_reveal(cur), secret_len(cur), 0, NULL);
	if (!json_is_object(o)) {
		json_decref(o);
		return 1;   /* not ours to read: a garbled record is no lease */
	}
	whoami(user, sizeof(user), host, sizeof(host));
	st = json_string_value(json_object_get(o, "state"));
	h = json_string_value(json_object_get(o, "host"));
	run = json_string_value(json_object_get(o, "run"));
	exp = json_string_value(json_object_get(o, "expires"));
	pid = (int)json_integer_value(json_object_get(o, "pid"));
	if (st == NULL || strcmp(st, "held") != 0)
		ok = 1;
	else if (run != NULL && strcmp(run, a->run_id) == 0)
		ok = 1;
	else if (exp == NULL || util_parse_rfc3339(exp, &t) != 0 || t <= time(NULL))
		ok = 1;    /* expired */
	else if (h != NULL && strcmp(h, host) == 0 && pid > 0 &&
	    kill((pid_t)pid, 0) == -1 && errno == ESRCH) {
		log_info("taking over the lease of a run on this host (pid %d) that no longer "
		    "exists", pid);
		ok = 1;
	}
	if (!ok)
		holder(o, why, wl);
	json_decref(o);
	return ok;
}

static int
try_take(struct agent *a, struct lease *l, const char *command, char *why, size_t wl,
    struct dmk_err *err)
{
	struct secret *cur = NULL, *rec = NULL;
	struct prov_version ver, nv;
	const char *expect;
	int r;

	r = l->st->ops->get(l->st, &l->ref, NULL, &cur, &ver, err);
	if (r == DMK_ERR_NOTFOUND || r == DMK_ERR_DELETED)
		expect = "0";
	else if (r != 0)
		return dmk_err_prefix(err, "lease %s", l->ref.text);
	else if (!takeable(a, cur, why, wl)) {
		secret_free(cur);
		return DMK_ERR_LOCKED;
	} else
		expect = ver.id;
	if (r == DMK_ERR_DELETED && ver.id[0])
		expect = ver.id;
	secret_free(cur);
	l->written_ms = util_now_ms();
	if ((rec = record(a, "held", command, time(NULL) + a->cfg->lease_ttl)) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	r = l->st->ops->put(l->st, &l->ref, rec, expect, NULL, &nv, err);
	secret_free(rec);
	if (r == DMK_ERR_CONFLICT) {
		snprintf(why, wl, "another agent took it at the same moment");
		return DMK_ERR_LOCKED;
	}
	if (r != 0)
		return dmk_err_prefix(err, "taking lease %s", l->ref.text);
	util_strlcpy(l->version, nv.id, sizeof(l->version));
	l->held = 1;
	return 0;
}

int
lease_take(struct agent *a, const struct secret_ref *near, const char *ag, const char *db,
    const char *command, struct lease *l, struct dmk_err *err)
{
	long long deadline = util_now_ms() + a->wait_seconds * 1000;
	char why[600] = "";
	int r;

	memset(l, 0, sizeof(*l));
	if (near->kind != REF_STORE)
		return 0;   /* a file: reference has no store to coordinate in */
	util_strlcpy(l->command, command, sizeof(l->command));
	if ((r = lease_ref(near, ag, db, &l->ref, err)) != 0 ||
	    (r = agent_store(a, near->store, &l->st, err)) != 0)
		return r;
	if (!(l->st->ops->caps & PROV_CAP_CAS) && l->st->ops->put == NULL)
		return dmk_errf(err, DMK_ERR_UNSUPPORTED, "store %s cannot hold a lease", near->store);
	for (;;) {
		r = try_take(a, l, command, why, sizeof(why), err);
		if (r != DMK_ERR_LOCKED)
			return r;
		if (util_now_ms() >= deadline)
			return dmk_errf(err, DMK_ERR_LOCKED, "%s/%s: another rotation is under way: "
			    "lease %s %s%s", ag, db, l->ref.text, why, a->wait_seconds ? "" :
			    "; use --wait SECONDS to wait");
		util_sleep_ms(1000);
	}
}

/* Is the record (as read) the one this run wrote?  why gets the holder, when not. */
static int
ours(struct agent *a, const struct secret *cur, char *why, size_t wl)
{
	const char *st, *run;
	json_t *o;
	int ok;

	o = json_loadb(secret_reveal(cur), secret_len(cur), 0, NULL);
	if (!json_is_object(o)) {
		json_decref(o);
		snprintf(why, wl, "overwritten by something that is not a lease record");
		return 0;
	}
	st = json_string_value(json_object_get(o, "state"));
	run = json_string_value(json_object_get(o, "run"));
	ok = st != NULL && strcmp(st, "held") == 0 && run != NULL && strcmp(run, a->run_id) == 0;
	if (!ok)
		holder(o, why, wl);
	json_decref(o);
	return ok;
}

int
lease_renew(struct agent *a, struct lease *l, struct dmk_err *err)
{
	struct secret *cur = NULL, *rec = NULL;
	struct prov_version ver, nv;
	long long ttl_ms = a->cfg->lease_ttl * 1000, age, now = util_now_ms();
	char why[600] = "";
	int r;

	if (!l->held)
		return 0;
	age = now - l->written_ms;
	if (age * 3 < ttl_ms)
		return 0;
	memset(&ver, 0, sizeof(ver));
	r = l->st->ops->get(l->st, &l->ref, NULL, &cur, &ver, err);
	if (r == 0 && strcmp(ver.id, l->version) != 0 && !ours(a, cur, why, sizeof(why))) {
		secret_free(cur);
		l->held = 0;    /* not ours to release */
		return dmk_errf(err, DMK_ERR_LOCKED, "lease %s was taken over (%s): this run "
		    "outlived lease_ttl (%llds) without renewing it; stopping before the next "
		    "change (a rerun continues where it stopped)", l->ref.text, why,
		    (long long)a->cfg->lease_ttl);
	}
	secret_free(cur);
	if (r == 0) {
		util_strlcpy(l->version, ver.id, sizeof(l->version));
		now = util_now_ms();
		if ((rec = record(a, "held", l->command, time(NULL) + a->cfg->lease_ttl)) == NULL)
			return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		memset(&nv, 0, sizeof(nv));
		r = l->st->ops->put(l->st, &l->ref, rec, l->version, NULL, &nv, err);
		secret_free(rec);
		if (r == DMK_ERR_CONFLICT) {
			l->held = 0;
			return dmk_errf(err, DMK_ERR_LOCKED, "lease %s: another agent took it over while "
			    "this run renewed it; stopping before the next change", l->ref.text);
		}
		if (r == 0) {
			util_strlcpy(l->version, nv.id, sizeof(l->version));
			l->written_ms = now;
			l->renewals++;
			log_debug("lease %s renewed (version %s)", l->ref.text, l->version);
			return 1;
		}
	}
	/* The store could not be asked: no one may take the lease before it
	 * expires, so carry on while two thirds of the TTL are left. */
	if (age * 3 < ttl_ms * 2 && dmk_err_is_temporary(r)) {
		log_warn("lease %s: renewal failed, will try again at the next step: %s",
		    l->ref.text, err->msg);
		dmk_err_clear(err);
		return 0;
	}
	return dmk_err_prefix(err, "renewing lease %s (it expires by itself; stopping before "
	    "the next change)", l->ref.text);
}

int
lease_release(struct agent *a, struct lease *l, struct dmk_err *err)
{
	struct secret *rec;
	struct prov_version nv;
	int r;

	if (!l->held)
		return 0;
	if ((rec = record(a, "released", "release", time(NULL))) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	r = l->st->ops->put(l->st, &l->ref, rec, l->version, NULL, &nv, err);
	secret_free(rec);
	l->held = 0;
	if (r == DMK_ERR_CONFLICT)
		return dmk_errf(err, r, "lease %s: another agent took it over (this run outlived "
		    "lease_ttl?)", l->ref.text);
	if (r != 0)
		return dmk_err_prefix(err, "releasing lease %s (it expires by itself)", l->ref.text);
	return 0;
}
