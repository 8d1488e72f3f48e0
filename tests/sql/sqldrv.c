/*
 * sqldrv.c: a test driver for sql/: connect to one SQL Server (through
 * the relay, as the agent does), run one command, print JSON on stdout.
 * Passwords come from files (or "-" for stdin), never from argv.
 *
 *   sqldrv --host H --port P [--name NAME] [--tls-name N] [--ca PEM]
 *          [--user U --password-file F | --integrated] [--database DB]
 *          [--connect-timeout S] [--query-timeout S] [--secret-file F]
 *          COMMAND [ARGS]
 *
 * Commands:
 *   connect                 log in, report relay byte counters
 *   query SQL               fixed SQL (test only), first result set
 *   discover [AG]           sql_discover_ag
 *   register DB add|drop    sql_dmk_password with --secret-file
 *   probe DB                sql_dmk_probe with --secret-file
 *   dbkeys DB               sql_db_keys
 *   use DB                  sql_use, then SELECT DB_NAME()
 *   createlogin NAME        CREATE LOGIN [NAME] WITH PASSWORD = N'<secret-file>'
 *   addpw DB                USE [DB]; ALTER MASTER KEY ADD ENCRYPTION BY PASSWORD
 *                           = N'<secret-file>'
 *   parallel EP...          EP = NAME=host:port; one thread each: connect,
 *                           SELECT @@SERVERNAME, close
 * Exit status: 0 ok, 1 the command failed (JSON says why), 2 usage.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "sql/sql.h"
#include "sql/sql_int.h"

static void
jstr(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	fputc('"', f);
	for (; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

static void
print_value(const struct sql_value *v)
{
	size_t i;

	switch (v->type) {
	case SQLT_NULL: fputs("null", stdout); break;
	case SQLT_INT: printf("%lld", v->i); break;
	case SQLT_STR: jstr(stdout, v->s); break;
	case SQLT_BIN:
		fputs("\"0x", stdout);
		for (i = 0; i < v->len; i++)
			printf("%02X", v->bin[i]);
		fputc('"', stdout);
		break;
	}
}

static void
print_result(const struct sql_result *r)
{
	size_t i, j;

	fputs("\"cols\":[", stdout);
	for (j = 0; r && j < r->ncols; j++) {
		if (j)
			fputc(',', stdout);
		jstr(stdout, r->cols[j]);
	}
	fputs("],\"rows\":[", stdout);
	for (i = 0; r && i < r->nrows; i++) {
		fputs(i ? ",[" : "[", stdout);
		for (j = 0; j < r->ncols; j++) {
			if (j)
				fputc(',', stdout);
			print_value(&r->cells[i * r->ncols + j]);
		}
		fputc(']', stdout);
	}
	fputc(']', stdout);
}

static int
fail(struct sql_session *s, const struct dmk_err *e)
{
	printf("{\"ok\":false,\"code\":%d,\"codename\":", e->code);
	jstr(stdout, dmk_strerror(e->code));
	printf(",\"error\":");
	jstr(stdout, e->msg);
	if (s != NULL)
		printf(",\"sqlnum\":%d", sql_last_error(s)->number);
	printf("}\n");
	return 1;
}

static struct secret *
read_secret(const char *path)
{
	struct secret *s;
	char buf[4096];
	FILE *f;
	size_t n;

	if ((s = secret_new()) == NULL)
		return NULL;
	f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	if (f == NULL) {
		secret_free(s);
		return NULL;
	}
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		secret_append(s, buf, n);
	secure_wipe(buf, sizeof(buf));
	if (f != stdin)
		fclose(f);
	secret_trim_newline(s);
	return s;
}

struct par {
	struct sql_endpoint ep;
	const struct sql_login *login;
	struct dmk_err err;
	char servername[256];
	int rc;
};

static void *
par_main(void *arg)
{
	struct par *p = arg;
	struct sql_session *s = NULL;
	struct sql_result *r = NULL;
	const struct sql_value *v;
	int i;

	if ((p->rc = sql_connect(&p->ep, p->login, &s, &p->err)) != 0)
		return NULL;
	for (i = 0; i < 5 && p->rc == 0; i++) {
		p->rc = sql_query(s, "SELECT @@SERVERNAME AS n", &r, &p->err);
		if (p->rc == 0 && (v = sql_cell(r, 0, "n")) != NULL && v->type == SQLT_STR)
			util_strlcpy(p->servername, v->s, sizeof(p->servername));
		sql_result_free(r);
		r = NULL;
	}
	sql_close(s);
	return NULL;
}

static int
parse_ep(const char *arg, struct sql_endpoint *ep)
{
	const char *eq = strchr(arg, '='), *colon;

	memset(ep, 0, sizeof(*ep));
	if (eq == NULL || (colon = strrchr(eq, ':')) == NULL)
		return -1;
	snprintf(ep->name, sizeof(ep->name), "%.*s", (int)(eq - arg), arg);
	snprintf(ep->host, sizeof(ep->host), "%.*s", (int)(colon - eq - 1), eq + 1);
	ep->port = atoi(colon + 1);
	return 0;
}

static void
usage(void)
{
	fprintf(stderr, "usage: sqldrv --host H --port P [options] COMMAND [ARGS]\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct sql_endpoint ep;
	struct sql_login login;
	struct sql_session *s = NULL;
	struct sql_result *res = NULL;
	struct secret *pw = NULL, *sec = NULL;
	struct dmk_err err = { 0 };
	const char *pwfile = NULL, *secfile = NULL, *cmd;
	unsigned long long up = 0, down = 0;
	int i, rc = 0;

	log_init("sqldrv", getenv("SQLDRV_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_WARN, 0);
	memset(&ep, 0, sizeof(ep));
	memset(&login, 0, sizeof(login));
	login.connect_timeout = 10;
	login.query_timeout = 30;
	for (i = 1; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
		const char *o = argv[i];

		if (strcmp(o, "--integrated") == 0) {
			login.integrated = 1;
			continue;
		}
		if (i + 1 >= argc)
			usage();
		if (strcmp(o, "--host") == 0) util_strlcpy(ep.host, argv[++i], sizeof(ep.host));
		else if (strcmp(o, "--port") == 0) ep.port = atoi(argv[++i]);
		else if (strcmp(o, "--name") == 0) util_strlcpy(ep.name, argv[++i], sizeof(ep.name));
		else if (strcmp(o, "--tls-name") == 0) util_strlcpy(ep.tls_name, argv[++i], sizeof(ep.tls_name));
		else if (strcmp(o, "--ca") == 0) login.ca_file = argv[++i];
		else if (strcmp(o, "--user") == 0) login.user = argv[++i];
		else if (strcmp(o, "--password-file") == 0) pwfile = argv[++i];
		else if (strcmp(o, "--secret-file") == 0) secfile = argv[++i];
		else if (strcmp(o, "--database") == 0) login.database = argv[++i];
		else if (strcmp(o, "--connect-timeout") == 0) login.connect_timeout = atol(argv[++i]);
		else if (strcmp(o, "--query-timeout") == 0) login.query_timeout = atol(argv[++i]);
		else usage();
	}
	if (i >= argc)
		usage();
	cmd = argv[i++];
	if (pwfile != NULL && (pw = read_secret(pwfile)) == NULL) {
		fprintf(stderr, "sqldrv: cannot read %s\n", pwfile);
		return 2;
	}
	if (secfile != NULL && (sec = read_secret(secfile)) == NULL) {
		fprintf(stderr, "sqldrv: cannot read %s\n", secfile);
		return 2;
	}
	login.password = pw;

	if (strcmp(cmd, "parallel") == 0) {
		struct par *ps;
		pthread_t *th;
		int n = argc - i, k, bad = 0;

		ps = calloc((size_t)n, sizeof(*ps));
		th = calloc((size_t)n, sizeof(*th));
		for (k = 0; k < n; k++) {
			if (parse_ep(argv[i + k], &ps[k].ep) != 0)
				usage();
			util_strlcpy(ps[k].ep.tls_name, ep.tls_name, sizeof(ps[k].ep.tls_name));
			ps[k].login = &login;
		}
		for (k = 0; k < n; k++)
			pthread_create(&th[k], NULL, par_main, &ps[k]);
		for (k = 0; k < n; k++)
			pthread_join(th[k], NULL);
		printf("{\"ok\":%s,\"results\":[", "true");
		for (k = 0; k < n; k++) {
			printf("%s{\"name\":", k ? "," : "");
			jstr(stdout, ps[k].ep.name);
			printf(",\"rc\":%d,\"servername\":", ps[k].rc);
			jstr(stdout, ps[k].servername);
			printf(",\"error\":");
			jstr(stdout, ps[k].err.msg);
			printf("}");
			bad |= ps[k].rc != 0;
		}
		printf("]}\n");
		free(ps);
		free(th);
		secret_free(pw);
		return bad;
	}

	if ((rc = sql_connect(&ep, &login, &s, &err)) != 0) {
		rc = fail(NULL, &err);
		goto out;
	}

	if (strcmp(cmd, "connect") == 0) {
		rc = 0;
	} else if (strcmp(cmd, "query") == 0 && i < argc) {
		if ((rc = sql_query(s, argv[i], &res, &err)) != 0)
			goto failed;
		printf("{\"ok\":true,");
		print_result(res);
		printf("}\n");
		goto out;
	} else if (strcmp(cmd, "discover") == 0) {
		struct sql_ag ag;
		char host[256];
		int port;
		size_t k;

		if ((rc = sql_discover_ag(s, i < argc ? argv[i] : NULL, &ag, &err)) != 0)
			goto failed;
		printf("{\"ok\":true,\"ag\":{\"name\":");
		jstr(stdout, ag.name);
		printf(",\"group_id\":");
		jstr(stdout, ag.group_id);
		printf(",\"primary\":");
		jstr(stdout, ag.primary);
		printf(",\"replicas\":[");
		for (k = 0; k < ag.nreplicas; k++) {
			const struct sql_replica *r = &ag.replicas[k];

			printf("%s{\"name\":", k ? "," : "");
			jstr(stdout, r->name);
			printf(",\"role\":");
			jstr(stdout, r->role);
			printf(",\"routing_url\":");
			jstr(stdout, r->routing_url);
			printf(",\"endpoint_url\":");
			jstr(stdout, r->endpoint_url);
			printf(",\"secondary_allow\":%d,\"sync_health\":", r->secondary_allow);
			jstr(stdout, r->sync_health);
			printf(",\"connected\":%d", r->connected);
			if (sql_replica_address(r, host, sizeof(host), &port) == 0) {
				printf(",\"address\":");
				jstr(stdout, host);
				printf(",\"port\":%d", port);
			}
			printf("}");
		}
		printf("],\"databases\":[");
		for (k = 0; k < ag.ndatabases; k++) {
			if (k)
				printf(",");
			jstr(stdout, ag.databases[k]);
		}
		printf("]}}\n");
		sql_ag_free(&ag);
		goto out;
	} else if (strcmp(cmd, "register") == 0 && i + 1 < argc && sec != NULL) {
		if ((rc = sql_dmk_password(s, argv[i], sec, argv[i + 1], &err)) != 0)
			goto failed;
	} else if (strcmp(cmd, "probe") == 0 && i < argc && sec != NULL) {
		if ((rc = sql_dmk_probe(s, argv[i], sec, &err)) != 0)
			goto failed;
	} else if (strcmp(cmd, "dbkeys") == 0 && i < argc) {
		struct sql_dbkeys k;
		int c;

		if ((rc = sql_db_keys(s, argv[i], &k, &err)) != 0)
			goto failed;
		printf("{\"ok\":true,\"family_guid\":");
		jstr(stdout, k.family_guid);
		printf(",\"dmk_key_guid\":");
		jstr(stdout, k.dmk_key_guid);
		printf(",\"dmk_by_smk\":%d,\"npassword_encryptions\":%d,\"ncredentials\":%d,"
		    "\"readable\":%d,\"credentials\":[", k.dmk_by_smk, k.npassword_encryptions,
		    k.ncredentials, k.readable);
		for (c = 0; c < k.ncredentials && c < 8; c++) {
			if (c)
				printf(",");
			jstr(stdout, k.credential_names[c]);
		}
		printf("]}\n");
		goto out;
	} else if (strcmp(cmd, "use") == 0 && i < argc) {
		if ((rc = sql_use(s, argv[i], &err)) != 0 ||
		    (rc = sql_query(s, "SELECT DB_NAME() AS n", &res, &err)) != 0)
			goto failed;
		printf("{\"ok\":true,");
		print_result(res);
		printf("}\n");
		goto out;
	} else if (strcmp(cmd, "createlogin") == 0 && i < argc && sec != NULL) {
		/* CREATE LOGIN [name] WITH PASSWORD = N'secret', CHECK_POLICY = OFF */
		struct sql_stmt *st = sql_stmt_new();

		if ((rc = sql_stmt_raw(st, "CREATE LOGIN ")) == 0 &&
		    (rc = sql_stmt_ident(st, argv[i], &err)) == 0 &&
		    (rc = sql_stmt_raw(st, " WITH PASSWORD = ")) == 0 &&
		    (rc = sql_stmt_secret(st, sec, &err)) == 0 &&
		    (rc = sql_stmt_raw(st, ", CHECK_POLICY = OFF")) == 0)
			rc = sql_exec(s, st, NULL, &err);
		sql_stmt_free(st);
		if (rc != 0)
			goto failed;
	} else if (strcmp(cmd, "addpw") == 0 && i < argc && sec != NULL) {
		/* USE [db]; ALTER MASTER KEY ADD ENCRYPTION BY PASSWORD = N'secret' */
		struct sql_stmt *st;

		if ((rc = sql_use(s, argv[i], &err)) != 0)
			goto failed;
		st = sql_stmt_new();
		if ((rc = sql_stmt_raw(st, "ALTER MASTER KEY ADD ENCRYPTION BY PASSWORD = ")) == 0 &&
		    (rc = sql_stmt_secret(st, sec, &err)) == 0)
			rc = sql_exec(s, st, NULL, &err);
		sql_stmt_free(st);
		if (rc != 0)
			goto failed;
	} else {
		sql_close(s);
		usage();
	}
	sql_session_stats(s, &up, &down);
	printf("{\"ok\":true,\"to_server\":%llu,\"to_client\":%llu}\n", up, down);
	rc = 0;
	goto out;
failed:
	rc = fail(s, &err);
out:
	sql_result_free(res);
	sql_close(s);
	secret_free(pw);
	secret_free(sec);
	return rc;
}
