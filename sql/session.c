/*
 * session.c: FreeTDS db-lib sessions through the TLS relay (relay.c):
 * connecting, the encryption gate, and SQL Server's errors as dmk_err
 * values.  Running batches and RPCs is exec.c's, reading results result.c's.
 *
 * FreeTDS configuration.  encryption, ca file and the like exist only as
 * freetds.conf keys, so every session gets a section of its own
 * ([dmk_N]: host 127.0.0.1, the relay's port, timeouts) in a private
 * freetds.conf in the relay's 0700 directory.  dbsetifile() makes FreeTDS
 * read that file first, and since it finds the section there it reads no
 * other (no ~/.freetds.conf, no /etc/freetds).  The file is rewritten
 * whole and renamed into place under a mutex, so sessions opened in
 * parallel each see a file with their own section.  Timeouts go in the
 * section too, not through dbsetlogintime()/dbsettime(), which are
 * process-global and would leak between parallel sessions.
 *
 * Handlers.  db-lib's message and error handlers are process-global; each
 * DBPROCESS carries its session as user data, and during dbopen() (before
 * the DBPROCESS is ours) a thread-local pointer names the session being
 * opened.  Sessions to different replicas may run in different threads.
 *
 * Kerberos (integrated).  With no user name FreeTDS logs in with GSSAPI.
 * Because FreeTDS connects to the relay on 127.0.0.1 it would ask for a
 * ticket for MSSQLSvc/127.0.0.1:port; we give it the real service name
 * (MSSQLSvc/<host>:<port>) with DBSETLSERVERPRINCIPAL.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sybfront.h>
#include <sybdb.h>

#include <openssl/crypto.h>

#include "core/dmk.h"
#include "core/buf.h"
#include "core/secret.h"
#include "relay.h"
#include "session_int.h"


/* ---- process-wide: db-lib init, handlers, the private freetds.conf ---- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_rc;
static char init_msg[256];
static char conf_path[300];
static pthread_mutex_t conf_mu = PTHREAD_MUTEX_INITIALIZER;

struct conf_section {
	unsigned id;
	int port;
	long connect_timeout, query_timeout;
	struct conf_section *next;
};
static struct conf_section *conf_sections;
static unsigned conf_next_id = 1;

static _Thread_local struct sql_session *tl_opening;

static struct sql_session *
session_of(DBPROCESS *d)
{
	struct sql_session *s = d ? (struct sql_session *)dbgetuserdata(d) : NULL;

	return s ? s : tl_opening;
}

static int
msg_handler(DBPROCESS *d, DBINT msgno, int state, int severity, char *text, char *srv,
    char *proc, int line)
{
	struct sql_session *s = session_of(d);
	struct sql_error e;

	/* "Changed database context", "Changed language setting": noise. */
	if (s == NULL || msgno == 5701 || msgno == 5703)
		return 0;
	if (severity <= 10) {
		/* Server text only: SQL Server never echoes parameter values. */
		log_debug("%s: Msg %d, Level %d: %s", s->name, (int)msgno, severity,
		    text ? text : "");
		return 0;
	}
	memset(&e, 0, sizeof(e));
	e.number = (int)msgno;
	e.state = state;
	e.severity = severity;
	e.line = line;
	util_strlcpy(e.message, text ? text : "", sizeof(e.message));
	util_strlcpy(e.server, srv ? srv : "", sizeof(e.server));
	util_strlcpy(e.proc, proc ? proc : "", sizeof(e.proc));
	if (s->first.number == 0)
		s->first = e;
	if (s->nerrnos < SQL_CALL_ERRORS_MAX)
		s->errnos[s->nerrnos] = e.number;
	s->nerrnos++;
	return 0;
}

static int
err_handler(DBPROCESS *d, int severity, int dberr, int oserr, char *dberrstr, char *oserrstr)
{
	struct sql_session *s = session_of(d);

	if (s == NULL || dberr == SYBESMSG)   /* "check messages": we have them */
		return INT_CANCEL;
	s->dberr = dberr;
	snprintf(s->dberr_text, sizeof(s->dberr_text), "%s%s%s", dberrstr ? dberrstr : "db-lib error",
	    oserr > 0 && oserrstr ? ": " : "", oserr > 0 && oserrstr ? oserrstr : "");
	switch (dberr) {
	case SYBETIME:
		s->timed_out = 1;
		s->dead = 1;   /* we do not try to resynchronise after a timeout */
		break;
	case SYBEREAD: case SYBEWRIT: case SYBESEOF: case SYBECONN: case SYBEFCON:
	case SYBESOCK: case SYBEDDNE:
		s->dead = 1;
		break;
	default:
		if (severity >= 9)   /* EXCOMM and above: the connection is gone */
			s->dead = 1;
	}
	return INT_CANCEL;
}

static void
init_once_fn(void)
{
	const char *dir;
	struct dmk_err e = { 0 };

	if ((init_rc = relay_global_init(NULL, &dir, &e)) != 0) {
		util_strlcpy(init_msg, e.msg, sizeof(init_msg));
		return;
	}
	if (dbinit() == FAIL) {
		init_rc = DMK_ERR_INTERNAL;
		util_strlcpy(init_msg, "FreeTDS db-lib initialisation failed", sizeof(init_msg));
		return;
	}
	dberrhandle(err_handler);
	dbmsghandle(msg_handler);
	snprintf(conf_path, sizeof(conf_path), "%s/freetds.conf", dir);
	dbsetifile(conf_path);
}

/* Write every live section; the caller holds conf_mu. */
static int
conf_write(const char *ca_pem)
{
	char tmp[320];
	struct conf_section *c;
	FILE *f;
	int fd;

	snprintf(tmp, sizeof(tmp), "%s.tmp", conf_path);
	(void)unlink(tmp);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0)
		return -1;
	if ((f = fdopen(fd, "w")) == NULL) {
		close(fd);
		return -1;
	}
	fprintf(f, "# written by dmkagent for its own FreeTDS sessions; see sql/session.c\n"
	    "[global]\n\ttds version = 7.4\n");
	for (c = conf_sections; c != NULL; c = c->next)
		fprintf(f, "[dmk_%u]\n\thost = 127.0.0.1\n\tport = %d\n\ttds version = 7.4\n"
		    "\tclient charset = UTF-8\n\tencryption = require\n\tca file = %s\n"
		    "\tcheck certificate hostname = yes\n\tenable tls v1 = no\n"
		    "\tconnect timeout = %ld\n\ttimeout = %ld\n\ttext size = 0\n",
		    c->id, c->port, ca_pem, c->connect_timeout, c->query_timeout);
	if (fclose(f) != 0 || rename(tmp, conf_path) != 0) {
		(void)unlink(tmp);
		return -1;
	}
	return 0;
}

static int
conf_add(int port, long ct, long qt, unsigned *id, struct dmk_err *err)
{
	struct conf_section *c;
	const char *ca_pem;
	int rc = 0;

	if ((rc = relay_global_init(&ca_pem, NULL, err)) != 0)
		return rc;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	pthread_mutex_lock(&conf_mu);
	c->id = conf_next_id++;
	c->port = port;
	c->connect_timeout = ct;
	c->query_timeout = qt;
	c->next = conf_sections;
	conf_sections = c;
	*id = c->id;
	if (conf_write(ca_pem) != 0) {
		conf_sections = c->next;
		free(c);
		rc = dmk_errf(err, DMK_ERR_IO, "cannot write %s: %s", conf_path, strerror(errno));
	}
	pthread_mutex_unlock(&conf_mu);
	return rc;
}

static void
conf_remove(unsigned id)
{
	struct conf_section **pp, *c;
	const char *ca_pem;

	if (id == 0 || relay_global_init(&ca_pem, NULL, NULL) != 0)
		return;
	pthread_mutex_lock(&conf_mu);
	for (pp = &conf_sections; (c = *pp) != NULL; pp = &c->next)
		if (c->id == id) {
			*pp = c->next;
			free(c);
			(void)conf_write(ca_pem);
			break;
		}
	pthread_mutex_unlock(&conf_mu);
}

/* ---- errors ---- */

static void
call_reset(struct sql_session *s)
{
	memset(&s->first, 0, sizeof(s->first));
	s->dberr = 0;
	s->dberr_text[0] = '\0';
	s->perm_hint = NULL;
}

static int
is_permission_error(int n)
{
	switch (n) {
	case 229: case 230: case 262: case 297: case 300: case 916: case 4060:
	case 15247: case 15151:
		return 1;
	}
	return 0;
}

static int
is_secondary_error(int n)
{
	return n == 976 || n == 978 || n == 979 || n == 983;
}

const char *
sql_session_name(const struct sql_session *s)
{
	return s->name;
}

/* Turn what the handlers saw into one dmk_err. */
int
sess_error(struct sql_session *s, struct dmk_err *err)
{
	const struct sql_error *e = &s->first;
	struct dmk_err rerr = { 0 };

	if (e->number != 0)
		s->last = *e;

	if (s->bad_code != 0)
		return dmk_errf(err, s->bad_code == DMK_ERR_TOOBIG ? DMK_ERR_TOOBIG :
		    DMK_ERR_PROTOCOL, "%s: the server sent %s", s->name, s->bad_value);
	if (s->relay != NULL && !relay_alive(s->relay)) {
		relay_get_error(s->relay, &rerr);
		if (rerr.code != 0 && e->number == 0)
			return dmk_errf(err, rerr.code, "%s", rerr.msg);
	}
	if (e->number == 18456 || e->number == 18452 || e->number == 18470 || e->number == 18486)
		return dmk_errf(err, DMK_ERR_AUTH, "%s: Msg %d, Level %d, State %d: %s", s->name,
		    e->number, e->severity, e->state, e->message);
	if (is_permission_error(e->number))
		return dmk_errf(err, DMK_ERR_DENIED, "%s: Msg %d, Level %d, State %d: %s (%s)",
		    s->name, e->number, e->severity, e->state, e->message,
		    s->perm_hint ? s->perm_hint : "the login lacks a permission this needs");
	if (is_secondary_error(e->number))
		return dmk_errf(err, DMK_ERR_SQL, "%s: database not accessible on this secondary: "
		    "Msg %d, Level %d, State %d: %s", s->name, e->number, e->severity, e->state,
		    e->message);
	if (e->number != 0)
		return dmk_errf(err, DMK_ERR_SQL, "%s: Msg %d, Level %d, State %d: %s", s->name,
		    e->number, e->severity, e->state, e->message);
	if (s->timed_out)
		return dmk_errf(err, DMK_ERR_TIMEOUT, "%s: no answer within %ld s%s (%s)", s->name,
		    s->connecting ? s->connect_timeout : s->query_timeout,
		    s->connecting ? " to the login" : "", s->dberr_text);
	if (s->dead)
		return dmk_errf(err, DMK_ERR_UNREACHABLE, "%s: connection lost (%s)", s->name,
		    s->dberr_text[0] ? s->dberr_text : "closed");
	if (s->dberr)
		return dmk_errf(err, DMK_ERR_SQL, "%s: %s", s->name, s->dberr_text);
	return dmk_errf(err, DMK_ERR_SQL, "%s: the statement failed", s->name);
}

int
sql_alive(const struct sql_session *s)
{
	return s != NULL && !s->dead && !s->timed_out;
}

/* ---- connect / close ---- */

static void
session_free(struct sql_session *s)
{
	if (s == NULL)
		return;
	if (s->dbproc != NULL)
		dbclose(s->dbproc);
	relay_stop(s->relay);
	conf_remove(s->section);
	OPENSSL_cleanse(s, sizeof(*s));
	free(s);
}

void
sql_close(struct sql_session *s)
{
	session_free(s);
}

const struct sql_error *
sql_last_error(const struct sql_session *s)
{
	return &s->last;
}

/*
 * Second line (the relay is the guard): ask the server how we are connected.
 * The question never fails: without VIEW SERVER STATE it answers NULL (and we
 * rely on the relay), so it can lead any batch of fixed text.  It is asked
 * before the session's first call that could carry a secret (enc_gate), or
 * as the first statement of its first fixed-text batch (enc_fused): the
 * connection's first round trip does real work.  SET TEXTSIZE goes with it
 * (blobs such as CERTPRIVATEKEY's are cut at @@TEXTSIZE): FreeTDS would
 * otherwise send its own "set textsize" as a round trip of its own before
 * our first batch ("text size = 0" in our freetds.conf stops that).
 */
#define SQL_TEXTSIZE "1048576"
#define ENC_CHECK_SQL \
	"SET TEXTSIZE " SQL_TEXTSIZE ";\n" \
	"IF HAS_PERMS_BY_NAME(NULL, NULL, 'VIEW SERVER STATE') = 1 " \
	"SELECT encrypt_option FROM sys.dm_exec_connections WHERE session_id = @@SPID " \
	"ELSE SELECT CAST(NULL AS nvarchar(40)) AS encrypt_option;\n"


static int
enc_verdict(struct sql_session *s, const struct sql_result *res, struct dmk_err *err)
{
	const struct sql_value *v;

	v = res != NULL && res->nrows ? sql_cell(res, 0, "encrypt_option") : NULL;
	if (v == NULL || v->type != SQLT_STR) {
		log_debug("%s: encrypt_option not readable (no VIEW SERVER STATE?); relying on "
		    "the relay", s->name);
		return 0;
	}
	if (strcasecmp(v->s, "TRUE") != 0) {
		snprintf(s->enc_refused, sizeof(s->enc_refused), "%s: the server reports this "
		    "connection as not encrypted (encrypt_option = %.40s)", s->name, v->s);
		return dmk_errf(err, DMK_ERR_TLS, "%s", s->enc_refused);
	}
	log_debug("%s: the server reports the connection encrypted", s->name);
	return 0;
}

/* Before a call that may carry a secret: the check in its own round trip. */
int
sess_enc_gate(struct sql_session *s, struct dmk_err *err)
{
	struct sql_result *res = NULL;
	int rc;

	if (!s->enc_unchecked)
		return 0;
	s->enc_unchecked = 0;
	if ((rc = sess_run_batch(s, ENC_CHECK_SQL, &res, err)) != 0) {
		if (s->dead)
			return rc;
		memset(&s->last, 0, sizeof(s->last));   /* our probe, not the caller's */
		log_debug("%s: cannot read encrypt_option (%s); relying on the relay", s->name,
		    err->msg);
		return 0;
	}
	rc = enc_verdict(s, res, err);
	sql_result_free(res);
	return rc;
}

/*
 * Send fixed text (no secret) led by the check when it is still due:
 * every result set of the caller's statements, in order, with the check's
 * own set taken off and judged.  Only a failed connection or a failed check
 * is an error; statement errors are left in the call's error list.
 */
int
sess_enc_fused(struct sql_session *s, const char *text, struct sql_result ***sets, size_t *nsets,
    struct dmk_err *err)
{
	struct buf b;
	int rc, lead = s->enc_unchecked;

	*sets = NULL;
	*nsets = 0;
	buf_init(&b, 0);
	if ((lead && (rc = buf_puts(&b, ENC_CHECK_SQL)) != 0) || (rc = buf_puts(&b, text)) != 0) {
		buf_free(&b);
		return dmk_errf(err, rc, "%s: batch too large", s->name);
	}
	s->first.number = 0;
	s->nerrnos = 0;
	s->dberr = 0;
	s->dberr_text[0] = '\0';
	s->enc_unchecked = 0;
	rc = dbcmd(s->dbproc, b.data) == FAIL || dbsqlsend(s->dbproc) == FAIL;
	dbfreebuf(s->dbproc);
	buf_free(&b);
	if (rc)
		return sess_error(s, err);
	if ((rc = sess_collect_all(s, sets, nsets)) != 0) {
		sql_sets_free(*sets, *nsets);
		*sets = NULL;
		*nsets = 0;
		return rc == DMK_ERR_NOMEM ? dmk_errf(err, rc, "out of memory") : sess_error(s, err);
	}
	if (!lead)
		return 0;
	rc = *nsets > 0 ? enc_verdict(s, (*sets)[0], err) :
	    dmk_errf(err, DMK_ERR_TLS, "%s: no answer to the encryption check", s->name);
	if (rc != 0) {
		if (*nsets == 0)
			snprintf(s->enc_refused, sizeof(s->enc_refused), "%s", err->msg);
		sql_sets_free(*sets, *nsets);
		*sets = NULL;
		*nsets = 0;
		return rc;
	}
	sql_result_free((*sets)[0]);
	memmove(*sets, *sets + 1, (*nsets - 1) * sizeof(**sets));
	(*nsets)--;
	return 0;
}

int
sql_connect(const struct sql_endpoint *ep, const struct sql_login *login,
    struct sql_session **out, struct dmk_err *err)
{
	struct relay_params rp;
	struct sql_session *s = NULL;
	LOGINREC *lr = NULL;
	char server[32], spn[300] = "";
	int port, rc;
	long ct, qt;

	*out = NULL;
	pthread_once(&init_once, init_once_fn);
	if (init_rc != 0)
		return dmk_errf(err, init_rc, "%s", init_msg);
	if (ep == NULL || login == NULL)
		return dmk_errf(err, DMK_ERR_BADINPUT, "no SQL Server host and port");
	if (ep->host[0] == '\0' || ep->port <= 0 || ep->port > 65535)
		return dmk_errf(err, DMK_ERR_PROTOCOL, "%s: no usable address (a malformed routing "
		    "URL or server name in the catalog?); give one in the configuration",
		    ep->name[0] ? ep->name : "server");
	if (!login->integrated && (login->user == NULL || login->password == NULL))
		return dmk_errf(err, DMK_ERR_CONFIG, "%s: no SQL login or password", ep->name);
	if (getenv("TDSDUMP") != NULL || getenv("TDSDUMPCONFIG") != NULL)
		return dmk_errf(err, DMK_ERR_CONFIG, "TDSDUMP is set: FreeTDS would write the "
		    "session, passwords included, to a file; unset it");
	ct = login->connect_timeout > 0 ? login->connect_timeout : 15;
	qt = login->query_timeout > 0 ? login->query_timeout : 60;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	/* Until the login is through, messages name the address too: whatever
	 * answered there is what failed. */
	snprintf(s->name, sizeof(s->name), "%s (%s:%d)", ep->name[0] ? ep->name : ep->host,
	    ep->host, ep->port);
	s->query_timeout = qt;
	s->connect_timeout = ct;
	s->connecting = 1;

	memset(&rp, 0, sizeof(rp));
	rp.name = ep->name[0] ? ep->name : ep->host;   /* the relay adds the address */
	rp.host = ep->host;
	rp.port = ep->port;
	rp.tls_name = ep->tls_name[0] ? ep->tls_name : ep->host;
	rp.ca_file = login->ca_file;
	rp.connect_timeout = ct;
	rp.strict = login->strict;
	if ((rc = relay_start(&rp, &s->relay, &port, err)) != 0)
		goto fail;
	if ((rc = conf_add(port, ct, qt, &s->section, err)) != 0)
		goto fail;

	if ((lr = dblogin()) == NULL) {
		rc = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto fail;
	}
	DBSETLAPP(lr, "dmkagent");
	dbsetlversion(lr, DBVERSION_74);
	if (login->database != NULL && login->database[0] != '\0') {
		if (!sql_valid_name(login->database)) {
			rc = dmk_errf(err, DMK_ERR_CONFIG, "%s: bad initial database name", s->name);
			goto fail;
		}
		DBSETLDBNAME(lr, login->database);
	}
	if (login->integrated) {
		DBSETLNETWORKAUTH(lr, TRUE);
		snprintf(spn, sizeof(spn), "MSSQLSvc/%s:%d", ep->host, ep->port);
		DBSETLSERVERPRINCIPAL(lr, spn);
	} else {
		DBSETLUSER(lr, login->user);
		/* FreeTDS copies it; its frees are wiped (core/wipefree.c). */
		DBSETLPWD(lr, secret_reveal(login->password));
	}

	snprintf(server, sizeof(server), "dmk_%u", s->section);
	s->perm_hint = "the login cannot open the database it asks for (its default "
	    "database, or the one configured)";
	tl_opening = s;
	s->dbproc = dbopen(lr, server);
	tl_opening = NULL;
	dbloginfree(lr);   /* tds_free_login wipes the password */
	lr = NULL;
	if (s->dbproc == NULL) {
		struct dmk_err rerr = { 0 };

		relay_get_error(s->relay, &rerr);
		if (s->first.number == 0 && rerr.code != 0)
			rc = dmk_errf(err, rerr.code, "%s", rerr.msg);
		else if (s->first.number == 0 && login->integrated)
			rc = dmk_errf(err, DMK_ERR_AUTH, "%s: integrated (Kerberos) login failed "
			    "before reaching the server: no ticket for %s? (kinit, a keytab, "
			    "KRB5CCNAME) [%s]", s->name, spn,
			    s->dberr_text[0] ? s->dberr_text : "FreeTDS gave no reason");
		else if ((rc = sess_error(s, err)) == DMK_ERR_SQL && s->first.number == 0)
			rc = dmk_errf(err, DMK_ERR_UNREACHABLE, "%s: cannot log in: %s", s->name,
			    s->dberr_text[0] ? s->dberr_text : "FreeTDS gave no reason");
		goto fail;
	}
	dbsetuserdata(s->dbproc, (BYTE *)s);
	/* FreeTDS must have come through the relay (TDSHOST/TDSPORT could send it
	 * elsewhere): otherwise the session is not ours to trust. */
	if (!relay_inner_ready(s->relay)) {
		rc = dmk_errf(err, DMK_ERR_TLS, "%s: FreeTDS did not connect through the TLS relay "
		    "(TDSHOST or TDSPORT set?); refusing the session", s->name);
		goto fail;
	}
	s->enc_unchecked = 1;     /* asked with the first call: enc_gate, enc_fused */
	call_reset(s);
	s->connecting = 0;
	util_strlcpy(s->name, ep->name[0] ? ep->name : ep->host, sizeof(s->name));
	*out = s;
	return 0;
fail:
	tl_opening = NULL;
	if (lr != NULL)
		dbloginfree(lr);
	session_free(s);
	return rc;
}

/* ---- results ---- */

void
sql_session_perm_hint(struct sql_session *s, const char *hint)
{
	s->perm_hint = hint;
}

int
sql_session_stats(struct sql_session *s, unsigned long long *to_server,
    unsigned long long *to_client)
{
	struct relay_stats st;

	relay_get_stats(s->relay, &st);
	*to_server = st.to_server;
	*to_client = st.to_client;
	return 0;
}
