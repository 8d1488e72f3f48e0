/*
 * session.c: FreeTDS db-lib sessions through the TLS relay (relay.c),
 * running statements and RPCs, reading results, turning SQL Server's
 * errors into dmk_err values.
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
#include "sql_int.h"

#define SYB_UNIQUE 36          /* uniqueidentifier; sybdb.h has no name for it */
#define RPC_STR_MAX 4000       /* bytes: db-lib sends NVARCHAR up to this */
/* What one result set may hold: far above anything our queries return. */
#define SQL_RESULT_MAX_COLS 4096
#define SQL_RESULT_MAX_CELLS ((size_t)1 << 22)
#define SQL_RESULT_MAX_BYTES (256 << 20)

struct sql_session {
	DBPROCESS *dbproc;
	struct relay *relay;
	char name[520];
	unsigned section;
	long query_timeout;
	struct sql_error first;    /* first error (severity > 10) of the current call */
	struct sql_error last;     /* last error seen on the session */
	int dberr;                 /* last db-lib error of the current call */
	char dberr_text[256];
	int timed_out, dead;
	const char *perm_hint;     /* what permission the current call needs */
	int errnos[SQL_CALL_ERRORS_MAX]; /* error numbers (severity > 10) of the current call */
	size_t nerrnos;            /* how many there were (may exceed what errnos holds) */
	int enc_unchecked;         /* encrypt_option not read yet (see enc_gate) */
	char enc_refused[300];     /* why the session may not be used, or "" */
	long connect_timeout;
	int connecting;            /* in sql_connect(): name carries the address */
	int bad_code;              /* the server sent a value we refused: the session */
	char bad_value[300];       /* is not used again (this says why) */
};

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
static int
session_error(struct sql_session *s, struct dmk_err *err)
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

static int run_batch(struct sql_session *s, const char *text, struct sql_result **res,
    struct dmk_err *err);
static int collect_all(struct sql_session *s, struct sql_result ***sets, size_t *nsets);

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
static int
enc_gate(struct sql_session *s, struct dmk_err *err)
{
	struct sql_result *res = NULL;
	int rc;

	if (!s->enc_unchecked)
		return 0;
	s->enc_unchecked = 0;
	if ((rc = run_batch(s, ENC_CHECK_SQL, &res, err)) != 0) {
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
static int
enc_fused(struct sql_session *s, const char *text, struct sql_result ***sets, size_t *nsets,
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
		return session_error(s, err);
	if ((rc = collect_all(s, sets, nsets)) != 0) {
		sql_sets_free(*sets, *nsets);
		*sets = NULL;
		*nsets = 0;
		return rc == DMK_ERR_NOMEM ? dmk_errf(err, rc, "out of memory") : session_error(s, err);
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
		else if ((rc = session_error(s, err)) == DMK_ERR_SQL && s->first.number == 0)
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

const struct sql_value *
sql_cell(const struct sql_result *r, size_t row, const char *col)
{
	size_t c;

	if (r == NULL || row >= r->nrows)
		return NULL;
	for (c = 0; c < r->ncols; c++)
		if (strcasecmp(r->cols[c], col) == 0)
			return &r->cells[row * r->ncols + c];
	return NULL;
}

void
sql_result_free(struct sql_result *r)
{
	size_t i;

	if (r == NULL)
		return;
	for (i = 0; i < r->ncols; i++)
		free(r->cols[i]);
	free(r->cols);
	for (i = 0; i < r->ncols * r->nrows; i++) {
		if (r->cells[i].s) {
			OPENSSL_cleanse(r->cells[i].s, r->cells[i].len);
			free(r->cells[i].s);
		}
		if (r->cells[i].bin) {
			OPENSSL_cleanse(r->cells[i].bin, r->cells[i].len);
			free(r->cells[i].bin);
		}
	}
	free(r->cells);
	free(r);
}

static char *
dup_n(const void *p, size_t n)
{
	char *s = malloc(n + 1);

	if (s == NULL)
		return NULL;
	if (n)
		memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

static int
set_str(struct sql_value *v, const char *p, size_t n)
{
	v->type = SQLT_STR;
	v->len = n;
	return (v->s = dup_n(p, n)) == NULL ? DMK_ERR_NOMEM : 0;
}

/*
 * Decoding a value the server sent.  db-lib hands us its type and length
 * (dbdatlen); FreeTDS took the length from the wire, so it is checked
 * against what the type allows before a byte is copied: fixed-size types
 * must have exactly their size, a GUID 16 bytes, a string no NUL in it.
 */
int
sql_cell_decode(int t, const unsigned char *data, long len, struct sql_value *v,
    const char **why)
{
	char tmp[40];
	long k;

	memset(v, 0, sizeof(*v));
	*why = NULL;
	if (data == NULL || len < 0)
		return 0;   /* NULL */
	switch (t) {
	case SYBINT1: case SYBBIT: case SYBBITN:
		if (len != 1)
			goto badlen;
		v->type = SQLT_INT;
		v->i = t == SYBINT1 ? data[0] : data[0] != 0;
		return 0;
	case SYBINT2: case SYBINT4: case SYBINT8: case SYBINTN:
		if ((t == SYBINT2 && len != 2) || (t == SYBINT4 && len != 4) ||
		    (t == SYBINT8 && len != 8) ||
		    (t == SYBINTN && len != 1 && len != 2 && len != 4 && len != 8))
			goto badlen;
		/* the host's order, as db-lib stores it; INT1 is unsigned */
		v->type = SQLT_INT;
		if (len == 1)
			v->i = data[0];
		else if (len == 2) {
			int16_t x;
			memcpy(&x, data, 2);
			v->i = x;
		} else if (len == 4) {
			int32_t x;
			memcpy(&x, data, 4);
			v->i = x;
		} else {
			int64_t x;
			memcpy(&x, data, 8);
			v->i = x;
		}
		return 0;
	case SYBBINARY: case SYBVARBINARY: case SYBIMAGE:
		v->type = SQLT_BIN;
		v->len = (size_t)len;
		return (v->bin = (unsigned char *)dup_n(data, (size_t)len)) == NULL ?
		    DMK_ERR_NOMEM : 0;
	case SYBCHAR: case SYBVARCHAR: case SYBTEXT: case SYBNVARCHAR: case SYBNTEXT:
		/* FreeTDS has converted it to the client charset, UTF-8.  Callers
		 * read it as a C string: a NUL inside would cut it silently. */
		for (k = 0; k < len; k++)
			if (data[k] == '\0') {
				*why = "a string with a NUL character in it";
				return DMK_ERR_PROTOCOL;
			}
		return set_str(v, (const char *)data, (size_t)len);
	case SYB_UNIQUE:
		if (len != 16)
			goto badlen;
		/* Data1..3 little-endian on the wire, Data4 bytes in order. */
		snprintf(tmp, sizeof(tmp), "%02X%02X%02X%02X-%02X%02X-%02X%02X-"
		    "%02X%02X-%02X%02X%02X%02X%02X%02X", data[3], data[2], data[1], data[0],
		    data[5], data[4], data[7], data[6], data[8], data[9], data[10], data[11],
		    data[12], data[13], data[14], data[15]);
		return set_str(v, tmp, strlen(tmp));
	}
	return 1;   /* not ours: db-lib converts it */
badlen:
	*why = "a value whose length does not fit its type";
	return DMK_ERR_PROTOCOL;
}

static int
read_cell(DBPROCESS *d, int c, struct sql_value *v, const char **why)
{
	int t = dbcoltype(d, c), rc;
	BYTE *data = dbdata(d, c);
	DBINT len = dbdatlen(d, c);
	char tmp[128];
	DBDATEREC2 dr;
	DBINT n;

	if ((rc = sql_cell_decode(t, data, (long)len, v, why)) <= 0)
		return rc;
	switch (t) {
	case SYBDATETIME: case SYBDATETIME4: case SYBDATETIMN:
		/* DATETIMN is DATETIME4 or DATETIME by its length */
		if (len != 4 && len != 8)
			break;
		if ((t == SYBDATETIME && len != 8) || (t == SYBDATETIME4 && len != 4))
			break;
		if (t == SYBDATETIMN)
			t = len == 4 ? SYBDATETIME4 : SYBDATETIME;
		/* FALLTHROUGH */
	case SYBMSDATETIME2: case SYBMSDATE: case SYBMSDATETIMEOFFSET:
		/* db-lib keeps the MS types in a structure of its own making. */
		if (len == 0 || dbanydatecrack(d, &dr, t, data) != SUCCEED)
			break;
		snprintf(tmp, sizeof(tmp), "%04d-%02d-%02dT%02d:%02d:%02d", (int)dr.dateyear,
		    (int)dr.datemonth + 1, (int)dr.datedmonth, (int)dr.datehour,
		    (int)dr.dateminute, (int)dr.datesecond);
		return set_str(v, tmp, strlen(tmp));
	default:
		n = dbconvert(d, t, data, len, SYBCHAR, (BYTE *)tmp, sizeof(tmp) - 1);
		if (n < 0 || (size_t)n >= sizeof(tmp))
			return set_str(v, "", 0);
		tmp[n] = '\0';
		return set_str(v, tmp, strlen(tmp));
	}
	*why = "a date whose length does not fit its type";
	return DMK_ERR_PROTOCOL;
}

/*
 * After read_set() failed.  Out of memory: cancel the rest as usual.  A
 * value we refused or a result over the limits: the server is not to be
 * trusted to end what it sends or to acknowledge a cancel, so the relay
 * cuts the connection (FreeTDS then sees it closed) and the session is
 * not used again.
 */
static void
drop_or_cancel(struct sql_session *s)
{
	if (s->bad_code == 0) {
		dbcancel(s->dbproc);
		return;
	}
	relay_abort(s->relay);
	s->dead = 1;
}

/* Read the current result set into a new struct sql_result. */
static int
read_set(struct sql_session *s, struct sql_result **out, int *fetch_failed)
{
	DBPROCESS *d = s->dbproc;
	struct sql_result *r;
	struct sql_value *cells;
	size_t cap = 0, i, bytes = 0;
	int ncols = dbnumcols(d), c, rr, rc = 0, k;
	const char *nm, *why = NULL;

	if (ncols <= 0 || (size_t)ncols > SQL_RESULT_MAX_COLS) {
		snprintf(s->bad_value, sizeof(s->bad_value), "a result with %d columns", ncols);
		return DMK_ERR_PROTOCOL;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return DMK_ERR_NOMEM;
	r->ncols = (size_t)ncols;
	if ((r->cols = calloc((size_t)ncols, sizeof(char *))) == NULL) {
		free(r);
		return DMK_ERR_NOMEM;
	}
	for (c = 0; c < ncols; c++) {
		nm = dbcolname(d, c + 1);
		if ((r->cols[c] = dup_n(nm ? nm : "", nm ? strlen(nm) : 0)) == NULL) {
			rc = DMK_ERR_NOMEM;
			goto out;
		}
	}
	while ((rr = dbnextrow(d)) != NO_MORE_ROWS) {
		if (rr == FAIL) {
			*fetch_failed = 1;
			break;
		}
		if (rr != REG_ROW)
			continue;   /* COMPUTE rows: none from our queries */
		if (rc == DMK_ERR_NOMEM)
			continue;   /* drain after a failure */
		if (rc != 0)
			break;      /* not after a bad value: the rest may never end */
		if (r->nrows >= SQL_RESULT_MAX_CELLS / r->ncols) {
			snprintf(s->bad_value, sizeof(s->bad_value), "a result of more than %zu rows",
			    r->nrows);
			rc = DMK_ERR_TOOBIG;
			continue;
		}
		if ((r->nrows + 1) * r->ncols > cap) {
			size_t ncap = cap ? cap * 2 : (size_t)ncols * 16;

			if ((cells = realloc(r->cells, ncap * sizeof(*cells))) == NULL) {
				rc = DMK_ERR_NOMEM;
				continue;
			}
			r->cells = cells;
			cap = ncap;
		}
		for (c = 0; c < ncols; c++) {
			i = r->nrows * r->ncols + (size_t)c;
			if ((k = read_cell(d, c + 1, &r->cells[i], &why)) != 0 && rc == 0) {
				rc = k;
				if (k != DMK_ERR_NOMEM)
					snprintf(s->bad_value, sizeof(s->bad_value), "column %.128s: %s "
					    "(type %d, %ld bytes)", r->cols[c], why ? why : "bad value",
					    dbcoltype(d, c + 1), (long)dbdatlen(d, c + 1));
			}
			bytes += r->cells[i].len;
		}
		r->nrows++;   /* cells of a failed row are freed with the result */
		if (rc == 0 && bytes > SQL_RESULT_MAX_BYTES) {
			snprintf(s->bad_value, sizeof(s->bad_value), "a result larger than %d MiB",
			    SQL_RESULT_MAX_BYTES >> 20);
			rc = DMK_ERR_TOOBIG;
		}
	}
out:
	if (rc != 0) {
		if (rc != DMK_ERR_NOMEM)
			s->bad_code = rc;
		sql_result_free(r);
		return rc;
	}
	*out = r;
	return 0;
}

/*
 * After the request was sent: process every result, keep the first set
 * that has columns, drain the rest.  Returns 0 or a negative code; the
 * failure detail is in the session (first error, db-lib error).
 */
static int
collect(struct sql_session *s, struct sql_result **res, int *retstatus)
{
	DBPROCESS *d = s->dbproc;
	struct sql_result *got = NULL;
	int rc, failed = 0, r;

	if (dbsqlok(d) == FAIL) {
		failed = 1;
		goto done;
	}
	while ((rc = dbresults(d)) != NO_MORE_RESULTS) {
		if (rc == FAIL) {
			failed = 1;
			break;
		}
		if (dbnumcols(d) > 0 && res != NULL && got == NULL) {
			if ((r = read_set(s, &got, &failed)) != 0) {
				drop_or_cancel(s);
				return r;
			}
		} else {
			while ((r = dbnextrow(d)) != NO_MORE_ROWS)
				if (r == FAIL) {
					failed = 1;
					break;
				}
		}
		if (retstatus != NULL && dbhasretstat(d))
			*retstatus = dbretstatus(d);
		if (s->dead)
			break;
	}
done:
	if (retstatus != NULL && !s->dead && dbhasretstat(d))
		*retstatus = dbretstatus(d);
	if (failed && !s->dead)
		dbcancel(d);
	if (failed || s->first.number != 0 || s->dead) {
		sql_result_free(got);
		return DMK_ERR_SQL;
	}
	if (res != NULL)
		*res = got;
	else
		sql_result_free(got);
	return 0;
}

static int usable(struct sql_session *s, struct dmk_err *err);

/*
 * Like collect(), for a batch of independent statements: keep every result
 * set, in order.  Statement errors are not fatal here (the caller reads
 * sql_call_errors()); only a failed connection is.
 */
static int
collect_all(struct sql_session *s, struct sql_result ***sets, size_t *nsets)
{
	DBPROCESS *d = s->dbproc;
	struct sql_result *got, **v;
	int rc, r, failed = 0;

	*sets = NULL;
	*nsets = 0;
	if (dbsqlok(d) == FAIL && s->dead)
		return DMK_ERR_SQL;
	while ((rc = dbresults(d)) != NO_MORE_RESULTS) {
		if (rc == FAIL) {
			if (s->dead)
				break;
			continue;   /* a statement failed; the batch goes on */
		}
		if (dbnumcols(d) > 0) {
			got = NULL;
			if ((r = read_set(s, &got, &failed)) != 0) {
				drop_or_cancel(s);
				return r;
			}
			if ((v = realloc(*sets, (*nsets + 1) * sizeof(*v))) == NULL) {
				sql_result_free(got);
				dbcancel(d);
				return DMK_ERR_NOMEM;
			}
			*sets = v;
			v[(*nsets)++] = got;
		} else
			while ((r = dbnextrow(d)) != NO_MORE_ROWS)
				if (r == FAIL)
					break;
		if (s->dead)
			break;
	}
	return s->dead ? DMK_ERR_SQL : 0;
}

size_t
sql_call_errors(const struct sql_session *s, int *nums, size_t max)
{
	size_t i;

	for (i = 0; i < s->nerrnos && i < max && i < SQL_CALL_ERRORS_MAX; i++)
		nums[i] = s->errnos[i];
	return s->nerrnos;
}

int
sql_exec_sets(struct sql_session *s, const struct sql_stmt *st, struct sql_result ***sets,
    size_t *nsets, struct dmk_err *err)
{
	const char *text = sql_stmt_text(st);
	size_t i;
	int rc;

	*sets = NULL;
	*nsets = 0;
	if (text == NULL || *text == '\0')
		return dmk_errf(err, DMK_ERR_INTERNAL, "incomplete SQL statement");
	if ((rc = usable(s, err)) != 0)
		return rc;
	if (!sql_stmt_has_secret(st))
		return enc_fused(s, text, sets, nsets, err);
	if ((rc = enc_gate(s, err)) != 0)
		return rc;
	s->first.number = 0;
	s->nerrnos = 0;
	s->dberr = 0;
	s->dberr_text[0] = '\0';
	if (dbcmd(s->dbproc, text) == FAIL || dbsqlsend(s->dbproc) == FAIL) {
		dbfreebuf(s->dbproc);
		return session_error(s, err);
	}
	dbfreebuf(s->dbproc);
	if ((rc = collect_all(s, sets, nsets)) != 0) {
		for (i = 0; i < *nsets; i++)
			sql_result_free((*sets)[i]);
		free(*sets);
		*sets = NULL;
		*nsets = 0;
		return rc == DMK_ERR_NOMEM ? dmk_errf(err, rc, "out of memory") : session_error(s, err);
	}
	return 0;
}

void
sql_sets_free(struct sql_result **sets, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		sql_result_free(sets[i]);
	free(sets);
}

static int
usable(struct sql_session *s, struct dmk_err *err)
{
	if (s == NULL || s->dbproc == NULL)
		return dmk_errf(err, DMK_ERR_INTERNAL, "no session");
	if (s->enc_refused[0])
		return dmk_errf(err, DMK_ERR_TLS, "%s; refusing to use it", s->enc_refused);
	if (s->bad_code != 0)
		return dmk_errf(err, DMK_ERR_PROTOCOL, "%s: the server sent %s earlier; refusing "
		    "to use the session", s->name, s->bad_value);
	if (s->dead || dbdead(s->dbproc))
		return dmk_errf(err, s->timed_out ? DMK_ERR_TIMEOUT : DMK_ERR_UNREACHABLE,
		    "%s: the connection is closed", s->name);
	return 0;
}

static int
run_batch(struct sql_session *s, const char *text, struct sql_result **res, struct dmk_err *err)
{
	int rc;

	if (res != NULL)
		*res = NULL;
	if ((rc = usable(s, err)) != 0)
		return rc;
	s->first.number = 0;
	s->nerrnos = 0;
	s->dberr = 0;
	s->dberr_text[0] = '\0';
	if (dbcmd(s->dbproc, text) == FAIL || dbsqlsend(s->dbproc) == FAIL) {
		dbfreebuf(s->dbproc);
		return session_error(s, err);
	}
	dbfreebuf(s->dbproc);   /* the command buffer may hold a password literal */
	if (collect(s, res, NULL) != 0)
		return session_error(s, err);
	return 0;
}

int
sql_exec(struct sql_session *s, const struct sql_stmt *st, struct sql_result **res,
    struct dmk_err *err)
{
	const char *text = sql_stmt_text(st);

	int rc;

	if (text == NULL || *text == '\0')
		return dmk_errf(err, DMK_ERR_INTERNAL, "incomplete SQL statement");
	if ((rc = usable(s, err)) != 0 || (rc = enc_gate(s, err)) != 0)
		return rc;
	return run_batch(s, text, res, err);
}

int
sql_query(struct sql_session *s, const char *fixed_sql, struct sql_result **res,
    struct dmk_err *err)
{
	struct sql_result **sets = NULL;
	size_t n = 0, i;
	int rc;

	if (fixed_sql == NULL || *fixed_sql == '\0')
		return dmk_errf(err, DMK_ERR_INTERNAL, "empty SQL query");
	if ((rc = usable(s, err)) != 0)
		return rc;
	if (!s->enc_unchecked)
		return run_batch(s, fixed_sql, res, err);
	/* The session's first call: the encryption check rides along. */
	if (res != NULL)
		*res = NULL;
	if ((rc = enc_fused(s, fixed_sql, &sets, &n, err)) != 0)
		return rc;
	if (s->first.number != 0) {
		sql_sets_free(sets, n);
		return session_error(s, err);
	}
	for (i = 0; i < n; i++)
		if (i == 0 && res != NULL)
			*res = sets[0];
		else
			sql_result_free(sets[i]);
	free(sets);
	return 0;
}

/* ---- RPC ---- */

static int
rpc_call(struct sql_session *s, const char *proc, const struct sql_param *p, size_t n,
    int *retstatus, struct sql_result ***sets, size_t *nsets, struct dmk_err *err)
{
	DBBIGINT i8;
	DBINT i4;
	size_t k, len;
	const char *str;
	int rc, ret = 0;
	/* Integer values must stay put until dbrpcsend(). */
	DBBIGINT *ints = NULL;

	if ((rc = usable(s, err)) != 0 || (rc = enc_gate(s, err)) != 0)
		return rc;
	s->first.number = 0;
	s->nerrnos = 0;
	s->dberr = 0;
	s->dberr_text[0] = '\0';
	if (proc == NULL || !sql_valid_name(proc))
		return dmk_errf(err, DMK_ERR_BADINPUT, "bad procedure name");
	if (n > 0 && (ints = calloc(n, sizeof(*ints))) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	if (dbrpcinit(s->dbproc, proc, 0) == FAIL) {
		rc = session_error(s, err);
		goto out;
	}
	for (k = 0; k < n; k++) {
		const struct sql_param *q = &p[k];
		int ok;

		if (q->name == NULL || q->name[0] != '@' || !sql_valid_name(q->name)) {
			rc = dmk_errf(err, DMK_ERR_BADINPUT, "bad parameter name for %s", proc);
			goto cancel;
		}
		switch (q->type) {
		case SQLP_NVARCHAR:
			str = q->secret ? secret_reveal(q->secret) : q->str;
			len = q->secret ? secret_len(q->secret) : (str ? strlen(str) : 0);
			if (q->is_null || str == NULL) {
				ok = dbrpcparam(s->dbproc, q->name, 0, SYBVARCHAR, -1, 0, NULL);
				break;
			}
			if (len == 0 || len > RPC_STR_MAX || sql_utf16_units(str, len) < 0) {
				/* db-lib sends a zero length as NULL, and more than 4000
				 * bytes not as NVARCHAR: refuse rather than change the value. */
				rc = dmk_errf(err, DMK_ERR_BADINPUT, "parameter %s of %s: %s", q->name,
				    proc, len == 0 ? "empty strings cannot be sent" :
				    len > RPC_STR_MAX ? "longer than 4000 bytes" :
				    "not valid UTF-8");
				goto cancel;
			}
			ok = dbrpcparam(s->dbproc, q->name, 0, SYBVARCHAR, -1, (DBINT)len,
			    (BYTE *)str);
			break;
		case SQLP_INT:
			if (q->is_null) {
				ok = dbrpcparam(s->dbproc, q->name, 0, SYBINTN, -1, 0, NULL);
				break;
			}
			if (q->i >= INT32_MIN && q->i <= INT32_MAX) {
				i4 = (DBINT)q->i;
				memcpy(&ints[k], &i4, sizeof(i4));
				ok = dbrpcparam(s->dbproc, q->name, 0, SYBINT4, -1, -1, (BYTE *)&ints[k]);
			} else {
				i8 = q->i;
				ints[k] = i8;
				ok = dbrpcparam(s->dbproc, q->name, 0, SYBINT8, -1, -1, (BYTE *)&ints[k]);
			}
			break;
		case SQLP_VARBINARY:
			if (q->is_null || q->bin == NULL) {
				ok = dbrpcparam(s->dbproc, q->name, 0, SYBVARBINARY, -1, 0, NULL);
				break;
			}
			if (q->len == 0 || q->len > 8000) {
				rc = dmk_errf(err, DMK_ERR_BADINPUT, "parameter %s of %s: binary length %zu "
				    "not supported", q->name, proc, q->len);
				goto cancel;
			}
			ok = dbrpcparam(s->dbproc, q->name, 0, SYBVARBINARY, -1, (DBINT)q->len,
			    (BYTE *)q->bin);
			break;
		default:
			rc = dmk_errf(err, DMK_ERR_INTERNAL, "bad parameter type");
			goto cancel;
		}
		if (ok == FAIL) {
			rc = session_error(s, err);
			goto cancel;
		}
	}
	if (dbrpcsend(s->dbproc) == FAIL) {
		rc = session_error(s, err);
		goto out;
	}
	if (sets != NULL) {
		/* every result set; statement errors are the caller's to read */
		if ((rc = collect_all(s, sets, nsets)) != 0) {
			sql_sets_free(*sets, *nsets);
			*sets = NULL;
			*nsets = 0;
			rc = rc == DMK_ERR_NOMEM ? dmk_errf(err, rc, "out of memory") :
			    session_error(s, err);
			goto out;
		}
		if (s->first.number != 0)
			(void)session_error(s, err);
	} else if (collect(s, NULL, &ret) != 0) {
		rc = session_error(s, err);
		goto out;
	}
	if (retstatus != NULL)
		*retstatus = ret;
	rc = 0;
	goto out;
cancel:
	dbrpcinit(s->dbproc, "", DBRPCRESET);   /* drop the parameters we queued */
out:
	if (ints != NULL) {
		OPENSSL_cleanse(ints, n * sizeof(*ints));
		free(ints);
	}
	return rc;
}

int
sql_rpc(struct sql_session *s, const char *proc, const struct sql_param *p, size_t n,
    int *retstatus, struct dmk_err *err)
{
	return rpc_call(s, proc, p, n, retstatus, NULL, NULL, err);
}

int
sql_rpc_sets(struct sql_session *s, const char *proc, const struct sql_param *p, size_t n,
    struct sql_result ***sets, size_t *nsets, struct dmk_err *err)
{
	*sets = NULL;
	*nsets = 0;
	return rpc_call(s, proc, p, n, NULL, sets, nsets, err);
}

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
