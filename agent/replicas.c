/* replicas.c: discovering an AG and running a job on every replica; see replicas.h. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "replicas.h"
#include "markers.h"

static pthread_mutex_t state_mtx = PTHREAD_MUTEX_INITIALIZER;

const char *
rep_outcome_name(int o)
{
	static const char *names[] = { "none", "registered", "already registered",
	    "would register", "ok", "GAP", "failed", "skipped", "dropped" };
	return o >= 0 && o <= OUT_DROPPED ? names[o] : "?";
}

int
ag_select(struct agent *a, const char *agfilter, const char *dbfilter,
    const struct conf_ag ***out, size_t *n, struct dmk_err *err)
{
	const struct conf_ag **v;
	size_t i, j, k = 0;

	*out = NULL;
	*n = 0;
	if ((v = calloc(a->cfg->nags + 1, sizeof(*v))) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	for (i = 0; i < a->cfg->nags; i++) {
		const struct conf_ag *ag = &a->cfg->ags[i];
		int hasdb = dbfilter == NULL;
		if (agfilter && strcmp(agfilter, ag->label) != 0 && strcmp(agfilter, ag->name) != 0)
			continue;
		for (j = 0; !hasdb && j < a->cfg->ndbs; j++)
			if (strcmp(a->cfg->dbs[j].ag, ag->label) == 0 &&
			    (strcmp(a->cfg->dbs[j].name, dbfilter) == 0 ||
			    strcmp(a->cfg->dbs[j].label, dbfilter) == 0))
				hasdb = 1;
		if (hasdb)
			v[k++] = ag;
	}
	if (k == 0) {
		free(v);
		return dmk_errf(err, DMK_ERR_USAGE, "no configured availability group%s%s%s%s "
		    "in %s", agfilter ? " named " : "", agfilter ? agfilter : "",
		    dbfilter ? " with database " : "", dbfilter ? dbfilter : "", a->config_path);
	}
	*out = v;
	*n = k;
	return 0;
}

int
dmk_password_current(struct agent *a, const struct secret_ref *ref, struct secret **out,
    struct prov_version *ver, struct dmk_err *err)
{
	struct prov_version *v = NULL, *pick = NULL;
	const char *state;
	struct store *st;
	size_t n = 0;
	long k;
	int r;

	if ((r = agent_resolve(a, ref, 0, out, ver, err)) != 0 || ref->kind != REF_STORE)
		return r;
	state = prov_meta_get(&ver->meta, MARK_STATE);
	if (state == NULL || strcmp(state, "pending") != 0)
		return 0;
	/* The newest version is a rotation's pending password: not in force. */
	secret_free(*out);
	*out = NULL;
	if ((r = agent_store(a, ref->store, &st, err)) != 0)
		return r;
	if ((r = store_list_versions(st, ref, &v, &n, err)) != 0) {
		dmk_err_prefix(err, r == DMK_ERR_NOTFOUND ? "no such secret at %s" : "%s",
		    ref->text);
		return agent_store_cred_hint(a, ref->store, err);
	}
	if ((k = markers_in_force(v, n)) >= 0)
		pick = &v[k];
	if (pick == NULL) {
		free(v);
		return dmk_errf(err, DMK_ERR_NOTFOUND, "%s: the only versions are pending (an "
		    "unfinished rotate or recover); run it again to finish", ref->text);
	}
	r = store_get(st, ref, pick->id, out, ver, err);
	free(v);
	return r ? dmk_err_prefix(err, "%s", ref->text) : 0;
}

/* The resolver's canonical name for a short server name, if it is a host name. */
static int
canonical_name(const char *server, char *out, size_t outlen, struct dmk_err *err)
{
	struct addrinfo hints, *res = NULL;
	const char *c;
	size_t i, n;
	int gai, rc = 0;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_CANONNAME;
	if ((gai = getaddrinfo(server, NULL, &hints, &res)) != 0)
		return dmk_errf(err, DMK_ERR_UNREACHABLE, "'%s' does not resolve (%s)", server,
		    gai_strerror(gai));
	c = res->ai_canonname != NULL && res->ai_canonname[0] != '\0' ? res->ai_canonname : server;
	n = strlen(c);
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)c[i]) && c[i] != '.' && c[i] != '-' && c[i] != '_')
			break;
	if (i != n || n >= outlen)
		rc = dmk_errf(err, DMK_ERR_PROTOCOL, "the resolver's canonical name for '%s' is not "
		    "a host name", server);
	else
		memcpy(out, c, n + 1);
	freeaddrinfo(res);
	return rc;
}

/*
 * Where to reach a replica, in the order dmkagent.conf(5) gives: the
 * configured "replica NAME = host:port"; the AG's read-only routing URL;
 * the server name completed to an FQDN (the AG's domain, else the
 * resolver's canonical name), on 1433 or, for SERVER\INSTANCE, on the port
 * SQL Server Browser announces.  The certificate must carry that host name
 * unless a tls_name is configured.  how says which way, for status.
 */
static int
rep_resolve(const struct conf_ag *ag, const struct sql_replica *r, struct sql_endpoint *ep,
    char *how, size_t howlen, struct dmk_err *err)
{
	const struct conf_replica *c = NULL;
	struct dmk_err e2;
	const char *inst;
	char server[256];
	size_t i;
	int port, rc;

	memset(ep, 0, sizeof(*ep));
	util_strlcpy(ep->name, r->name, sizeof(ep->name));
	for (i = 0; i < ag->nreplicas; i++)
		if (strcasecmp(ag->replicas[i].name, r->name) == 0)
			c = &ag->replicas[i];
	if (c != NULL && c->host[0] != '\0') {
		util_strlcpy(ep->host, c->host, sizeof(ep->host));
		ep->port = c->port;
		snprintf(how, howlen, "configured");
	} else if (r->routing_url[0] != '\0') {
		/* A malformed routing URL leaves no address: never a host made of
		 * whatever the catalog held. */
		if (sql_replica_address(r, ep->host, sizeof(ep->host), &ep->port) != 0) {
			ep->host[0] = '\0';
			return dmk_errf(err, DMK_ERR_PROTOCOL, "the AG's read-only routing URL for "
			    "%s is not TCP://HOST[:PORT]; set 'replica %s = HOST:PORT' in [ag %s]",
			    r->name, r->name, ag->label);
		}
		snprintf(how, howlen, "routing URL");
	} else {
		if (sql_replica_address(r, server, sizeof(server), &port) != 0)
			return dmk_errf(err, DMK_ERR_PROTOCOL, "the server name %s is not a host "
			    "name; set 'replica %s = HOST:PORT' in [ag %s]", r->name, r->name,
			    ag->label);
		if (strchr(server, '.') != NULL) {
			util_strlcpy(ep->host, server, sizeof(ep->host));
			snprintf(how, howlen, "server name");
		} else if (ag->domain[0] != '\0') {
			if ((size_t)snprintf(ep->host, sizeof(ep->host), "%s.%s", server, ag->domain) >=
			    sizeof(ep->host)) {
				ep->host[0] = '\0';
				return dmk_errf(err, DMK_ERR_CONFIG, "%s.%s is too long a host name",
				    server, ag->domain);
			}
			snprintf(how, howlen, "server name + domain");
		} else {
			if ((rc = canonical_name(server, ep->host, sizeof(ep->host), &e2)) != 0)
				return dmk_errf(err, rc, "%s; set 'domain' or 'replica %s = HOST:PORT' "
				    "in [ag %s]", e2.msg, r->name, ag->label);
			snprintf(how, howlen, "server name + canonical name");
		}
		ep->port = 1433;
		if ((inst = strchr(r->name, '\\')) != NULL) {
			/* a Browser answers at once or not at all: at most 5 s */
			long t = ag->connect_timeout > 0 && ag->connect_timeout < 5 ?
			    (long)ag->connect_timeout * 1000 : 5000;

			if ((rc = sql_browser_port(ep->host, ag->browser_port, inst + 1, t,
			    &ep->port, &e2)) != 0) {
				ep->port = 0;
				return dmk_errf(err, rc, "%s; set 'replica %s = HOST:PORT' in [ag %s] "
				    "to skip SQL Server Browser", e2.msg, r->name, ag->label);
			}
			if (strlen(how) + 24 < howlen)
				strcat(how, " + SQL Server Browser");
		}
	}
	if (c != NULL && c->tls_name[0] != '\0')
		util_strlcpy(ep->tls_name, c->tls_name, sizeof(ep->tls_name));
	else if (ag->tls_name[0] != '\0')
		util_strlcpy(ep->tls_name, ag->tls_name, sizeof(ep->tls_name));
	else
		util_strlcpy(ep->tls_name, ep->host, sizeof(ep->tls_name));
	return 0;
}

int
rep_credentials(struct sql_session *s, struct sql_result **out, struct dmk_err *err)
{
	return sql_credentials(s, out, err);
}

int
creds_of(const struct sql_result *all, const char *family, char names[8][160])
{
	const struct sql_value *f, *n;
	size_t i;
	int k = 0;

	for (i = 0; all != NULL && i < all->nrows; i++) {
		f = sql_cell(all, i, "family_guid");
		n = sql_cell(all, i, "name");
		if (f == NULL || f->type != SQLT_STR || strcasecmp(f->s, family) != 0)
			continue;
		if (k < 8 && n != NULL && n->type == SQLT_STR)
			util_strlcpy(names[k], n->s, sizeof(names[0]));
		k++;
	}
	return k;
}

void
ag_listener_endpoint(const struct conf_ag *ag, struct sql_endpoint *ep)
{
	memset(ep, 0, sizeof(*ep));
	snprintf(ep->name, sizeof(ep->name), "%s listener", ag->name);
	util_strlcpy(ep->host, ag->listener_host, sizeof(ep->host));
	ep->port = ag->listener_port;
	util_strlcpy(ep->tls_name, ag->tls_name[0] ? ag->tls_name : ag->listener_host,
	    sizeof(ep->tls_name));
}

int
rep_connect(struct rep_run *rr, struct sql_session **s, struct dmk_err *err)
{
	return sql_connect(&rr->ep, &rr->run->login, s, err);
}

int
probe_auto_open(struct sql_session *s, const char *db, const char *cert, struct dmk_err *err)
{
	int r, opened;

	if (cert == NULL || cert[0] == '\0')
		return -1;
	/* The certificate encrypts and decrypts a constant only when the DMK
	 * opened by itself (service master key or credential). */
	if ((r = sql_cert_probe(s, db, cert, &opened, err)) != 0)
		return r;
	return opened;
}

/* The first certificate whose private key the DMK protects. */
static void
find_cert(struct sql_session *s, struct db_plan *p)
{
	struct dmk_err e;

	if (p->db->ncertificates > 0)
		util_strlcpy(p->cert, p->db->certificates[0], sizeof(p->cert));
	else
		(void)sql_find_dmk_cert(s, p->db->name, p->cert, sizeof(p->cert), &e);
}

/* Per-database facts from the primary, one database at a time (the slow,
 * precise path, also used when a batch cannot be attributed). */
static void
primary_one(struct sql_session *ls, struct ag_run *run, struct db_plan *p, int probe,
    int need_facts)
{
	struct dmk_err e;
	int r;

	if (need_facts) {
		if (sql_db_keys(ls, p->db->name, &p->primary_keys, &e) != 0) {
			p->usable = 0;
			p->code = e.code;
			snprintf(p->error, sizeof(p->error), "%s: %s", p->db->name, e.msg);
			return;
		}
		find_cert(ls, p);
	}
	if (!probe)
		return;
	r = sql_dmk_probe(ls, p->db->name, p->pw, &e);
	if (r == DMK_ERR_WRONGPASS) {
		p->usable = 0;
		p->code = r;
		snprintf(p->error, sizeof(p->error), "%s: the password in %s (store version %s) "
		    "does not open the database master key on the primary %s; nothing was "
		    "registered for this database", p->db->name, p->db->dmk_password.text,
		    p->ver.id[0] ? p->ver.id : "-", run->info.primary);
	} else if (r != 0) {
		p->usable = 0;
		p->code = r;
		snprintf(p->error, sizeof(p->error), "%s: %s", p->db->name, e.msg);
	}
}

/* The facts' statements for every configured database (sql_add_db_list first). */
static int
facts_add(struct sql_stmt *st, struct ag_run *run, int all, struct dmk_err *e)
{
	size_t i;
	int r = sql_add_db_list(st, e);

	for (i = 0; i < run->nplans && r == 0; i++)
		if (all || run->plans[i].usable)
			r = sql_add_db_facts(st, i, run->plans[i].db->name, e);
	return r;
}

/* The facts from their result sets (the list, then a key and a certificate
 * per database). */
static void
facts_parse(struct ag_run *run, struct sql_result *const *sets, size_t n)
{
	const struct sql_result *all = sets[0];
	size_t i, k;

	for (i = 0; i < run->nplans; i++) {
		struct db_plan *p = &run->plans[i];
		for (k = 0; k < all->nrows; k++) {
			const struct sql_value *nm = sql_cell(all, k, "name");
			const struct sql_value *fg = sql_cell(all, k, "family_guid");
			const struct sql_value *sm = sql_cell(all, k, "by_smk");
			if (nm && nm->type == SQLT_STR && strcmp(nm->s, p->db->name) == 0) {
				if (fg && fg->type == SQLT_STR)
					util_strlcpy(p->primary_keys.family_guid, fg->s,
					    sizeof(p->primary_keys.family_guid));
				p->primary_keys.dmk_by_smk = sm && sm->type == SQLT_INT && sm->i;
				p->primary_keys.readable = 1;
			}
		}
		if (p->db->ncertificates > 0)
			util_strlcpy(p->cert, p->db->certificates[0], sizeof(p->cert));
	}
	for (k = 1; k < n; k++) {
		const struct sql_value *iv = sql_cell(sets[k], 0, "i");
		const struct sql_value *kg = sql_cell(sets[k], 0, "key_guid");
		const struct sql_value *ce = sql_cell(sets[k], 0, "cert");
		struct db_plan *p;
		if (sets[k]->nrows == 0 || !iv || iv->type != SQLT_INT || iv->i < 0 ||
		    (size_t)iv->i >= run->nplans)
			continue;
		p = &run->plans[iv->i];
		if (kg && kg->type == SQLT_STR)
			util_strlcpy(p->primary_keys.dmk_key_guid, kg->s, sizeof(p->primary_keys.dmk_key_guid));
		if (ce && ce->type == SQLT_STR && p->cert[0] == '\0')
			util_strlcpy(p->cert, ce->s, sizeof(p->cert));
	}
}

/* 0 when every usable database has its facts. */
static int
facts_complete(const struct ag_run *run)
{
	size_t i;

	for (i = 0; i < run->nplans; i++)
		if (run->plans[i].usable && run->plans[i].primary_keys.family_guid[0] == '\0')
			return DMK_ERR_NOTFOUND;
	return 0;
}

/* The facts of every database in one round trip; 0 when all were read. */
static int
primary_facts_bulk(struct sql_session *ls, struct ag_run *run)
{
	struct sql_result **sets = NULL;
	struct sql_stmt *st;
	struct dmk_err e;
	size_t n = 0;
	int r = 0;

	if ((st = sql_stmt_new()) == NULL)
		return DMK_ERR_NOMEM;
	if ((r = facts_add(st, run, 0, &e)) != 0 || (r = sql_exec_sets(ls, st, &sets, &n, &e)) != 0)
		goto out;
	if (sql_call_errors(ls, NULL, 0) > 0 || n == 0) {
		r = DMK_ERR_SQL;   /* let the precise path say what went wrong */
		goto out;
	}
	facts_parse(run, sets, n);
	r = facts_complete(run);
out:
	sql_sets_free(sets, n);
	sql_stmt_free(st);
	return r;
}

/*
 * Discovery and the facts of every configured database in one round trip
 * (the database list comes from the configuration).  *facts: 1 when the
 * facts were read with it.  When the batch fails (a configured database
 * that is not there, say), discovery alone as before, and the facts later.
 */
static int
discover_with_facts(struct sql_session *ls, struct ag_run *run, int *facts, struct dmk_err *err)
{
	struct sql_result **sets = NULL;
	struct sql_stmt *st;
	struct dmk_err e;
	size_t n = 0;
	int r;

	*facts = 0;
	if (run->nplans == 0 || (st = sql_stmt_new()) == NULL)
		return sql_discover_ag(ls, run->ag->name, &run->info, err);
	r = sql_add_discovery(st, &e);
	if (r == 0)
		r = facts_add(st, run, 1, &e);
	if (r == 0)
		r = sql_exec_sets(ls, st, &sets, &n, &e);
	sql_stmt_free(st);
	if (r == 0 && n > 5 && sql_call_errors(ls, NULL, 0) == 0) {
		if ((r = sql_discovery_from_sets(ls, run->ag->name, sets, 5, &run->info, err)) == 0) {
			facts_parse(run, sets + 5, n - 5);
			*facts = 1;
		}
		sql_sets_free(sets, n);
		return r;
	}
	sql_sets_free(sets, n);
	/* the precise path: its own errors, with the permission hint */
	return sql_discover_ag(ls, run->ag->name, &run->info, err);
}

/* Every password proven on the primary in one round trip; 0 when all opened. */
static int
primary_probe_bulk(struct sql_session *ls, struct ag_run *run)
{
	struct sql_stmt *st;
	struct dmk_err e;
	size_t i;
	int r = 0;

	if ((st = sql_stmt_new()) == NULL)
		return DMK_ERR_NOMEM;
	for (i = 0; i < run->nplans && r == 0; i++)
		if (run->plans[i].usable)
			r = sql_add_dmk_proof(st, run->plans[i].db->name, run->plans[i].pw, &e);
	if (r == 0)
		r = sql_exec(ls, st, NULL, &e);
	if (r == 0 && sql_call_errors(ls, NULL, 0) > 0)
		r = DMK_ERR_SQL;
	sql_stmt_free(st);
	return r;
}

/*
 * On the primary: the key facts of every database and the proof that each
 * password opens its DMK, batched; on any error, database by database, so
 * that each gets its own verdict.
 */
static void
primary_checks(struct sql_session *ls, struct ag_run *run, int probe, int have_facts)
{
	int facts_ok = have_facts ? facts_complete(run) == 0 : primary_facts_bulk(ls, run) == 0;
	int probes_ok = !probe || primary_probe_bulk(ls, run) == 0;
	size_t i;

	if (facts_ok && probes_ok)
		return;
	for (i = 0; i < run->nplans; i++)
		if (run->plans[i].usable)
			primary_one(ls, run, &run->plans[i], probe && !probes_ok, !facts_ok);
}

int
plan_outcome(const struct db_plan *p)
{
	if (p->usable)
		return 0;
	if (p->code == 0 || p->code == DMK_ERR_WRONGPASS || p->code == DMK_ERR_INCOMPLETE)
		return DMK_ERR_INCOMPLETE;
	return p->code;
}

/*
 * SQL Server refused the login (18456 and its kin): say where the password
 * it tried comes from, or that it is integrated authentication, so that the
 * fix is found in the configuration and not on the server.
 */
void
ag_login_hint(const struct conf_ag *ag, struct dmk_err *err)
{
	size_t len = strlen(err->msg);
	const char *sep = len > 0 && err->msg[len - 1] == '.' ? " " : "; ";

	if (err->code != DMK_ERR_AUTH || strstr(err->msg, "heck the ") != NULL)
		return;
	if (strcmp(ag->login, "integrated") == 0 || ag->login[0] == '\0')
		snprintf(err->msg + len, sizeof(err->msg) - len, "%sCheck the Kerberos ticket of "
		    "this process (login = integrated in [ag %s]).", sep, ag->label);
	else if (ag->has_login_password)
		snprintf(err->msg + len, sizeof(err->msg) - len, "%sCheck the password of login "
		    "'%s' at %s (login_password in [ag %s]).", sep, ag->login,
		    ag->login_password.text, ag->label);
	else
		snprintf(err->msg + len, sizeof(err->msg) - len, "%sCheck login '%s' in [ag %s].",
		    sep, ag->login, ag->label);
}

/*
 * The store reads of ag_open, on their own thread while the listener
 * connects and discovery runs: with a hundred databases they cost as much
 * as the connect.  The main thread leaves the stores alone until the join.
 */
struct prefetch {
	struct agent *a;
	struct ag_run *run;
};

static void *
prefetch_thread(void *arg)
{
	struct prefetch *pf = arg;
	struct prov_version *ver;
	size_t i;

	if ((ver = malloc(sizeof(*ver))) == NULL) {
		for (i = 0; i < pf->run->nplans; i++) {
			pf->run->plans[i].code = DMK_ERR_NOMEM;
			snprintf(pf->run->plans[i].error, sizeof(pf->run->plans[i].error),
			    "%s: out of memory", pf->run->plans[i].db->name);
		}
		return NULL;
	}
	for (i = 0; i < pf->run->nplans; i++) {
		struct db_plan *p = &pf->run->plans[i];
		struct dmk_err e;
		int r;

		if ((r = dmk_password_current(pf->a, &p->db->dmk_password, &p->pw, ver,
		    &e)) != 0) {
			p->code = r;
			snprintf(p->error, sizeof(p->error), "%s: %s", p->db->name, e.msg);
		} else
			util_strlcpy(p->ver.id, ver->id, sizeof(p->ver.id));
	}
	free(ver);
	return NULL;
}

int
ag_open(struct agent *a, const struct conf_ag *ag, const char *dbfilter, int probe,
    struct ag_run *run, struct dmk_err *err)
{
	struct sql_endpoint lep;
	struct sql_session *ls = NULL;
	struct prefetch pf;
	pthread_t th;
	int r, started = 0, have_facts = 0;
	size_t i, j;

	memset(run, 0, sizeof(*run));
	pthread_mutex_init(&run->notes_mu, NULL);
	run->a = a;
	run->ag = ag;
	run->login.user = strcmp(ag->login, "integrated") == 0 ? NULL : ag->login;
	run->login.integrated = run->login.user == NULL;
	run->login.ca_file = ag->ca_file[0] ? ag->ca_file : NULL;
	run->login.strict = ag->encrypt == ENCRYPT_STRICT;
	run->login.connect_timeout = ag->connect_timeout;
	run->login.query_timeout = ag->query_timeout;
	if (ag->has_login_password &&
	    (r = agent_resolve(a, &ag->login_password, 0, &run->login_pw, NULL, err)) != 0)
		return dmk_err_prefix(err, "AG %s: login_password", ag->name);
	run->login.password = run->login_pw;

	/* The configured databases of this AG; their passwords are read meanwhile. */
	if ((run->plans = calloc(a->cfg->ndbs + 1, sizeof(*run->plans))) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	for (i = 0; i < a->cfg->ndbs; i++) {
		const struct conf_db *db = &a->cfg->dbs[i];
		struct db_plan *p;

		if (strcmp(db->ag, ag->label) != 0)
			continue;
		if (dbfilter && strcmp(db->name, dbfilter) != 0 && strcmp(db->label, dbfilter) != 0)
			continue;
		p = &run->plans[run->nplans++];
		p->db = db;
		util_strlcpy(p->store, db->dmk_password.kind == REF_STORE ? db->dmk_password.store :
		    "file", sizeof(p->store));
	}
	pf.a = a;
	pf.run = run;
	if (run->nplans > 0) {
		if (pthread_create(&th, NULL, prefetch_thread, &pf) == 0)
			started = 1;
		else
			prefetch_thread(&pf);
	}

	ag_listener_endpoint(ag, &lep);
	if ((r = sql_connect(&lep, &run->login, &ls, err)) != 0) {
		dmk_err_prefix(err, "AG %s", ag->name);
		ag_login_hint(ag, err);
		goto out;
	}
	if ((r = discover_with_facts(ls, run, &have_facts, err)) != 0) {
		dmk_err_prefix(err, "AG %s: discovery through the listener", ag->name);
		goto out;
	}
	if (run->info.nreplicas == 0) {
		r = dmk_errf(err, DMK_ERR_SQL, "AG %s: the availability group lists no replicas "
		    "(is the name right, and is %s:%d its listener?)", ag->name, lep.host, lep.port);
		goto out;
	}
	if (run->info.primary[0] == '\0') {
		/* Only a secondary answers primary_replica NULL with no PRIMARY row:
		 * it cannot say where the primary is, nor check a DMK password. */
		const char *here = "a secondary replica";

		for (j = 0; j < run->info.nreplicas; j++)
			if (run->info.replicas[j].role[0] != '\0')
				here = run->info.replicas[j].name;
		r = dmk_errf(err, DMK_ERR_CONFIG, "AG %s: %s:%d answered from %s, which does not "
		    "know the primary; set 'listener' in [ag %s] to the AG's listener", ag->name,
		    lep.host, lep.port, here, ag->label);
		goto out;
	}
	if (started) {
		pthread_join(th, NULL);
		started = 0;
	}
	for (i = 0; i < run->nplans; i++) {
		struct db_plan *p = &run->plans[i];

		for (j = 0; j < run->info.ndatabases; j++)
			if (strcmp(run->info.databases[j], p->db->name) == 0)
				p->in_ag = 1;
		if (!p->in_ag) {
			secret_free(p->pw);
			p->pw = NULL;
			p->code = DMK_ERR_NOTFOUND;
			snprintf(p->error, sizeof(p->error), "database %s is not in availability "
			    "group %s", p->db->name, ag->name);
			continue;
		}
		if (p->code == 0)
			p->usable = 1;    /* provisionally: the primary decides below */
	}
	/* As when the facts come alone: only the usable databases have them
	 * (rotation.c's rot_facts reads the others on its own session). */
	for (i = 0; have_facts && i < run->nplans; i++)
		if (!run->plans[i].usable) {
			memset(&run->plans[i].primary_keys, 0, sizeof(run->plans[i].primary_keys));
			run->plans[i].cert[0] = '\0';
		}
	if (run->nplans > 0)
		primary_checks(ls, run, probe, have_facts);
	if (run->nplans == 0) {
		r = dmk_errf(err, DMK_ERR_USAGE, "AG %s: no configured database%s%s", ag->name,
		    dbfilter ? " named " : "", dbfilter ? dbfilter : "");
		goto out;
	}
	r = 0;
out:
	if (started)
		pthread_join(th, NULL);
	if (r == 0 && sql_alive(ls))
		run->ls = ls;    /* the primary's session for the rest of the run */
	else
		sql_close(ls);
	return r;
}

static void *
rep_thread(void *arg)
{
	struct rep_run *rr = arg;
	struct ag_run *run = rr->run;
	struct rep_slot *slot = run->slots != NULL ? &run->slots[rr - run->reps] : NULL;
	struct sql_session *s = NULL;
	struct dmk_err e;

	int progress = isatty(STDERR_FILENO) && !run->a->quiet;

	if (slot != NULL && slot->s != NULL) {
		if (sql_alive(slot->s)) {
			/* kept from an earlier wave: no resolve, no connect */
			s = slot->s;
			rr->ep = slot->ep;
			util_strlcpy(rr->how, slot->how, sizeof(rr->how));
			goto work;
		}
		sql_close(slot->s);
		slot->s = NULL;
	}
	if (rep_resolve(run->ag, rr->rep, &rr->ep, rr->how, sizeof(rr->how), &e) != 0) {
		rr->reached = 0;
		rr->code = e.code;
		util_strlcpy(rr->error, e.msg, sizeof(rr->error));
		if (progress)
			fprintf(stderr, "  %s: no address: %s\n", rr->rep->name, e.msg);
		return NULL;
	}
	if (progress)
		fprintf(stderr, "  %s: connecting to %s:%d (%s)\n", rr->rep->name, rr->ep.host,
		    rr->ep.port, rr->how);
	if (rep_connect(rr, &s, &e) != 0) {
		ag_login_hint(rr->run->ag, &e);
		rr->reached = 0;
		rr->code = e.code;
		util_strlcpy(rr->error, e.msg, sizeof(rr->error));
		if (progress)
			fprintf(stderr, "  %s: not reached\n", rr->rep->name);
		return NULL;
	}
work:
	rr->reached = 1;
	rr->code = run->work(rr, s);
	if (slot != NULL && sql_alive(s)) {
		slot->s = s;
		slot->ep = rr->ep;
		util_strlcpy(slot->how, rr->how, sizeof(slot->how));
	} else {
		sql_close(s);
		if (slot != NULL)
			slot->s = NULL;
	}
	if (progress)
		fprintf(stderr, "  %s: %s\n", rr->rep->name, rr->code == 0 ? "done" : "done, with problems");
	return NULL;
}

int
ag_each_replica(struct ag_run *run, int (*work)(struct rep_run *, struct sql_session *))
{
	size_t i;
	int incomplete = 0;

	run->work = work;
	if (run->keep_sessions && run->slots == NULL &&
	    (run->slots = calloc(run->info.nreplicas + 1, sizeof(*run->slots))) == NULL)
		return DMK_ERR_NOMEM;
	if ((run->reps = calloc(run->info.nreplicas, sizeof(*run->reps))) == NULL)
		return DMK_ERR_NOMEM;
	run->nreps = run->info.nreplicas;
	for (i = 0; i < run->nreps; i++) {
		struct rep_run *rr = &run->reps[i];
		rr->run = run;
		rr->rep = &run->info.replicas[i];
		rr->is_primary = strcasecmp(rr->rep->name, run->info.primary) == 0;
		if ((rr->dbs = calloc(run->nplans + 1, sizeof(*rr->dbs))) == NULL)
			return DMK_ERR_NOMEM;
		if (pthread_create(&rr->th, NULL, rep_thread, rr) != 0) {
			rr->th = 0;
			rep_thread(rr);
		}
	}
	for (i = 0; i < run->nreps; i++) {
		if (run->reps[i].th)
			pthread_join(run->reps[i].th, NULL);
		if (!run->reps[i].reached || run->reps[i].code != 0)
			incomplete = 1;
	}
	return incomplete ? DMK_ERR_INCOMPLETE : 0;
}

/* The notes live in blocks owned by the run: a rep_db array may be freed
 * anywhere (free()), its texts go with the run. */
struct note_block {
	struct note_block *next;
	size_t used, cap;
	char data[];
};

void
rep_note(struct rep_run *rr, struct rep_db *d, const char *fmt, ...)
{
	static const char oom[] = "out of memory (the message was lost)";
	struct ag_run *run = rr->run;
	struct note_block *b;
	char text[DMK_ERR_MSG_MAX];
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	n = strlen(text) + 1;
	pthread_mutex_lock(&run->notes_mu);
	b = run->notes;
	if (b == NULL || b->cap - b->used < n) {
		size_t cap = n > 16384 ? n : 16384;

		if ((b = malloc(sizeof(*b) + cap)) == NULL) {
			pthread_mutex_unlock(&run->notes_mu);
			d->note = oom;
			return;
		}
		b->next = run->notes;
		b->used = 0;
		b->cap = cap;
		run->notes = b;
	}
	memcpy(b->data + b->used, text, n);
	d->note = b->data + b->used;
	b->used += n;
	pthread_mutex_unlock(&run->notes_mu);
}

const char *
rep_note_text(const struct rep_db *d)
{
	return d->note != NULL ? d->note : "";
}

void
ag_close(struct ag_run *run)
{
	struct note_block *b, *nb;
	size_t i;

	for (b = run->notes; b != NULL; b = nb) {
		nb = b->next;
		free(b);
	}
	pthread_mutex_destroy(&run->notes_mu);

	for (i = 0; i < run->nplans; i++) {
		secret_free(run->plans[i].pw);
		for (size_t j = 0; j < run->plans[i].nstale; j++)
			secret_free(run->plans[i].stale[j]);
	}
	free(run->plans);
	for (i = 0; i < run->nreps; i++)
		free(run->reps[i].dbs);
	free(run->reps);
	if (run->slots != NULL)
		for (i = 0; i < run->info.nreplicas; i++)
			sql_close(run->slots[i].s);
	free(run->slots);
	sql_close(run->ls);
	sql_ag_free(&run->info);
	secret_free(run->login_pw);
	memset(run, 0, sizeof(*run));
}

int
ag_failover_to(struct ag_run *run, struct rep_run *target, struct dmk_err *err)
{
	struct sql_session *s = NULL;
	char role[32];
	int r, tries;

	if ((r = rep_connect(target, &s, err)) != 0)
		return r;
	if ((r = sql_ag_failover(s, run->ag->name, err)) != 0)
		goto out;
	/* The statement returns once the target accepts; wait for the role. */
	for (tries = 0; tries < 50; tries++) {
		if (sql_local_role(s, role, sizeof(role), err) == 0 && strcmp(role, "PRIMARY") == 0)
			goto out;
		util_sleep_ms(200);
	}
	r = dmk_errf(err, DMK_ERR_TIMEOUT, "%s did not become primary", target->rep->name);
out:
	sql_close(s);
	return r;
}

/* ---- registration records ---- */

/*
 * state_dir/registered.json is read once per process and kept in struct
 * agent; regstate_stage changes the copy in memory, regstate_flush writes it
 * (temporary file, rename).  A replica's batch is staged and written once:
 * rewriting the file per record made register O(records^2).
 */
static int
regstate_path(struct agent *a, char *path, size_t plen)
{
	return snprintf(path, plen, "%s/registered.json", a->cfg->state_dir) >= (int)plen ?
	    DMK_ERR_USAGE : 0;
}

/* Under state_mtx. */
static json_t *
regstate_root(struct agent *a)
{
	char path[4200];
	json_t *j;

	if (a->regstate != NULL)
		return a->regstate;
	j = NULL;
	if (regstate_path(a, path, sizeof(path)) == 0) {
		/* Not through a symbolic link planted in place of the file. */
		int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd != -1) {
			j = json_loadfd(fd, 0, NULL);
			close(fd);
		}
	}
	if (!json_is_object(j)) {
		json_decref(j);
		j = json_object();
	}
	return a->regstate = j;
}

/* Under state_mtx. */
static int
regstate_write_locked(struct agent *a, struct dmk_err *err)
{
	char *text;
	int r;

	if (!a->regstate_dirty || a->regstate == NULL)
		return 0;
	if (mkdir(a->cfg->state_dir, 0700) == -1 && errno != EEXIST)
		return dmk_errf(err, DMK_ERR_IO, "%s: cannot create state directory: %s",
		    a->cfg->state_dir, strerror(errno));
	if ((text = json_dumps(a->regstate, JSON_INDENT(1) | JSON_SORT_KEYS)) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	r = util_write_file_atomic(a->cfg->state_dir, "registered.json", text, strlen(text), err);
	json_free_dump(text);
	if (r == 0)
		a->regstate_dirty = 0;
	return r;
}

int
regstate_stage(struct agent *a, const char *ag, const char *replica, const char *family,
    const char *reference, const char *version, const char *credential, int exact)
{
	char t[32];
	json_t *root, *o, *rec;

	if (a->parent != NULL)
		a = a->parent;          /* an AG job of --jobs: one file for the run */
	pthread_mutex_lock(&state_mtx);
	root = regstate_root(a);
	/* The file is our own cache, but read from disk: what is not an object
	 * where one belongs is replaced.  (Setting a key on a non-object fails
	 * and frees the new value, which was then written to after free.) */
	o = json_object_get(root, ag);
	if (!json_is_object(o))
		json_object_set_new(root, ag, o = json_object());
	rec = json_object_get(o, replica);
	if (!json_is_object(rec))
		json_object_set_new(o, replica, rec = json_object());
	o = json_object();
	util_rfc3339(time(NULL), t, sizeof(t));
	json_object_set_new(o, "reference", json_string(reference));
	json_object_set_new(o, "version", json_string(version));
	if (credential && credential[0])
		json_object_set_new(o, "credential", json_string(credential));
	else if (!exact) {
		json_t *old = json_object_get(rec, family);
		json_t *oc = old ? json_object_get(old, "credential") : NULL;
		if (oc)
			json_object_set(o, "credential", oc);
	}
	json_object_set_new(o, "time", json_string(t));
	json_object_set_new(rec, family, o);
	a->regstate_dirty = 1;
	pthread_mutex_unlock(&state_mtx);
	return 0;
}

int
regstate_flush(struct agent *a, struct dmk_err *err)
{
	int r;

	if (a->parent != NULL)
		a = a->parent;
	pthread_mutex_lock(&state_mtx);
	r = regstate_write_locked(a, err);
	pthread_mutex_unlock(&state_mtx);
	return r;
}

int
regstate_set(struct agent *a, const char *ag, const char *replica, const char *family,
    const char *reference, const char *version, const char *credential, struct dmk_err *err)
{
	regstate_stage(a, ag, replica, family, reference, version, credential, 0);
	return regstate_flush(a, err);
}

int
regstate_set_exact(struct agent *a, const char *ag, const char *replica, const char *family,
    const char *reference, const char *version, const char *credential, struct dmk_err *err)
{
	regstate_stage(a, ag, replica, family, reference, version, credential, 1);
	return regstate_flush(a, err);
}

int
regstate_get(struct agent *a, const char *ag, const char *replica, const char *family,
    char *version, size_t vlen, char *credential, size_t clen)
{
	json_t *o;
	int r = DMK_ERR_NOTFOUND;

	version[0] = credential[0] = '\0';
	if (a->parent != NULL)
		a = a->parent;
	pthread_mutex_lock(&state_mtx);
	o = json_object_get(json_object_get(json_object_get(regstate_root(a), ag), replica), family);
	if (json_is_object(o)) {
		const char *v = json_string_value(json_object_get(o, "version"));
		const char *c = json_string_value(json_object_get(o, "credential"));
		util_strlcpy(version, v ? v : "", vlen);
		util_strlcpy(credential, c ? c : "", clen);
		r = 0;
	}
	pthread_mutex_unlock(&state_mtx);
	return r;
}
