/* Unit tests: references and the configuration file, every error path. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/dmk.h"
#include "agent/config.h"
#include "providers/provider.h"

#define GOOD_HEAD \
	"[agent]\nstate_dir = /tmp/x\naudit_log = /tmp/x/audit.jsonl\n" \
	"[store hcv]\ntype = hashicorp-vault\naddress = https://v:8200\nauth = token\n" \
	"token = env:VAULT_TOKEN\n" \
	"[ag AG1]\nlistener = ag1.example.com:1433\nlogin = dmkagent\n" \
	"login_password = hcv:sql/logins/dmkagent#password\n"

static struct config *
parse_ok(const char *text)
{
	struct config *c = NULL;
	struct dmk_err e;
	int r = config_parse_string(text, "t.conf", &c, &e);

	if (r != 0)
		fail_msg("unexpected error: %s", e.msg);
	return c;
}

static void
expect_err(const char *text, const char *needle)
{
	struct config *c = NULL;
	struct dmk_err e;
	int r = config_parse_string(text, "t.conf", &c, &e);

	assert_int_equal(r, DMK_ERR_CONFIG);
	assert_null(c);
	if (strstr(e.msg, needle) == NULL)
		fail_msg("message '%s' lacks '%s'", e.msg, needle);
}

static void
test_ref_parse(void **st)
{
	struct secret_ref r;
	struct dmk_err e;

	assert_int_equal(ref_parse("hcv:sql/ag1/cm_p01/dmk#password", &r, &e), 0);
	assert_int_equal(r.kind, REF_STORE);
	assert_string_equal(r.store, "hcv");
	assert_string_equal(r.path, "sql/ag1/cm_p01/dmk");
	assert_string_equal(r.field, "password");
	assert_int_equal(ref_parse("akv:ag1-cm-p01-cert-backup", &r, &e), 0);
	assert_string_equal(r.field, "");
	assert_int_equal(ref_parse("file:/etc/dmkagent/x", &r, &e), 0);
	assert_int_equal(r.kind, REF_FILE);
	assert_int_equal(ref_parse("env:VAULT_TOKEN", &r, &e), 0);
	assert_int_equal(r.kind, REF_ENV);
	assert_int_not_equal(ref_parse("file:relative", &r, &e), 0);
	assert_int_not_equal(ref_parse("env:9X", &r, &e), 0);
	assert_int_not_equal(ref_parse("hcv:/abs", &r, &e), 0);
	assert_int_not_equal(ref_parse("hcv:a//b", &r, &e), 0);
	assert_int_not_equal(ref_parse("hcv:a/../b", &r, &e), 0);
	assert_int_not_equal(ref_parse("hcv:a#", &r, &e), 0);
	assert_int_not_equal(ref_parse("hcv:a b", &r, &e), 0);
	assert_int_not_equal(ref_parse("hunter2", &r, &e), 0);
	assert_int_not_equal(ref_parse("", &r, &e), 0);
	/* the message never repeats the input */
	assert_int_not_equal(ref_parse("S3cr3t!pass", &r, &e), 0);
	assert_null(strstr(e.msg, "S3cr3t"));
}

static void
test_good_config(void **st)
{
	struct config *c = parse_ok(GOOD_HEAD
	    "replica SQLNODE3 = 10.0.0.13:1433\n"
	    "[database AG1/CM_P01]\ndmk_password = hcv:sql/ag1/cm_p01/dmk#password\n"
	    "rotate_every = 90d\ncertificates = BitLockerManagement_CERT, Other\n");

	assert_int_equal(c->nstores, 1);
	assert_ptr_equal(c->stores[0].ops, prov_find("hashicorp-vault"));
	assert_int_equal(c->nags, 1);
	assert_string_equal(c->ags[0].listener_host, "ag1.example.com");
	assert_int_equal(c->ags[0].listener_port, 1433);
	assert_int_equal(c->ags[0].nreplicas, 1);
	assert_string_equal(c->ags[0].replicas[0].name, "SQLNODE3");
	assert_string_equal(c->ags[0].replicas[0].host, "10.0.0.13");
	assert_int_equal(c->ndbs, 1);
	assert_string_equal(c->dbs[0].name, "CM_P01");
	assert_int_equal(c->dbs[0].rotate_every, 90 * 86400);
	assert_int_equal(c->dbs[0].ncertificates, 2);
	assert_string_equal(c->dbs[0].certificates[1], "Other");
	config_free(c);
}

static void
test_database_name_key(void **st)
{
	/* A name INI cannot carry in a section header goes in name = */
	struct config *c = parse_ok(GOOD_HEAD "[database AG1/weird]\nname = we]i'rd db é\n"
	    "dmk_password = hcv:a/b\n");
	assert_string_equal(c->dbs[0].name, "we]i'rd db é");
	config_free(c);
}

static void
test_literal_secret(void **st)
{
	struct config *c = NULL;
	struct dmk_err e;

	assert_int_equal(config_parse_string(GOOD_HEAD "[database AG1/X]\ndmk_password = "
	    "Hunter2Hunter2!\n", "t.conf", &c, &e), DMK_ERR_CONFIG);
	assert_non_null(strstr(e.msg, "t.conf:14: 'dmk_password' holds a literal secret"));
	assert_null(strstr(e.msg, "Hunter2"));
	/* every secret-bearing key name, in any section */
	expect_err("[store s]\ntype = hashicorp-vault\ntoken = abc\n", "'token' holds a literal secret");
	expect_err("[store s]\ntype = hashicorp-vault\nsecret_id = abc\n", "'secret_id' holds a literal");
	expect_err("[store s]\ntype = hashicorp-vault\nclient_key = abc\n", "'client_key' holds a literal");
	expect_err("[agent]\naudit_key = k3y\n", "'audit_key' holds a literal secret");
	/* a value that looks like a reference to an unknown store is not echoed */
	assert_int_equal(config_parse_string(GOOD_HEAD "[database AG1/X]\ndmk_password = "
	    "pw:Hunter2\n", "t.conf", &c, &e), DMK_ERR_CONFIG);
	assert_null(strstr(e.msg, "Hunter2"));
	assert_non_null(strstr(e.msg, "refers to a store that no [store NAME] section defines "
	    "(defined: hcv)"));
}

static void
test_errors_name_line(void **st)
{
	expect_err("[agent]\nstate_dirr = /x\n", "t.conf:2: unknown key 'state_dirr' in [agent]; "
	    "did you mean 'state_dir'?");
	expect_err("[agnet]\nx = 1\n", "t.conf:1: unknown section [agnet]");
	expect_err("x = 1\n", "t.conf:1: key 'x' outside any section");
	expect_err("[agent]\npassword_length = 7\n", "t.conf:2: 'password_length' in [agent] must "
	    "be a whole number from 8 to 128");
	expect_err("[agent]\nlease_ttl = soon\n", "t.conf:2: 'lease_ttl' in [agent] must be a "
	    "duration");
	expect_err("[agent]\nstate_dir = relative\n", "must be an absolute path");
	/* audit_anchor: a store reference to a defined store, named by FILE:LINE */
	expect_err("[agent]\n\naudit_anchor = file:/var/lib/x\n", "t.conf:3: 'audit_anchor' in "
	    "[agent] must be a store reference");
	expect_err("[agent]\naudit_anchor = nope\n", "t.conf:2: 'audit_anchor' in [agent]:");
#define HCV_ONLY "[store hcv]\ntype = hashicorp-vault\naddress = https://v:8200\nauth = token\n" \
	"token = env:VAULT_TOKEN\n"
	expect_err("[agent]\naudit_anchor = vlt:dmkagent/anchor#head\n" HCV_ONLY,
	    "t.conf:2: 'audit_anchor' in [agent] refers to a store that no");
	{
		struct config *ok = parse_ok("[agent]\naudit_anchor = hcv:dmkagent/a#head\n" HCV_ONLY);
		assert_true(ok->has_audit_anchor);
		assert_string_equal(ok->audit_anchor.field, "head");
		config_free(ok);
	}
	expect_err("[store s]\naddress = https://x\n", "[store s] needs 'type'");
	expect_err("[store s]\ntype = keepass\n", "t.conf:2: unknown store type 'keepass' (known: "
	    "hashicorp-vault, azure-key-vault)");
	expect_err("[store s]\ntype = hashicorp-vault\nadress = https://x\n",
	    "t.conf:3: unknown key 'adress' in [store s] of type hashicorp-vault; did you mean "
	    "'address'?");
	expect_err("[store s]\ntype = hashicorp-vault\naddress = http://x\n", "must be an https:// URL");
	expect_err("[store s]\ntype = hashicorp-vault\nauth = password\n", "must be one of");
	expect_err("[store file]\ntype = hashicorp-vault\n", "reserved");
	expect_err("[store a]\ntype = azure-key-vault\n", "[store a] needs 'vault_url'");
	expect_err(GOOD_HEAD "[store hcv]\ntype = hashicorp-vault\n", "store 'hcv' is defined twice");
	expect_err("[ag A]\nlogin = x\nlogin_password = file:/x\n", "[ag A] needs 'listener");
	expect_err("[ag A]\nlistener = h:99999\nlogin = x\n", "t.conf:2: 'listener' in [ag A] must "
	    "be HOST[:PORT]");
	expect_err("[ag A]\nlistener = h\nlogin = x\n", "needs 'login_password'");
	expect_err(GOOD_HEAD "[database AG2/X]\ndmk_password = hcv:a\n", "names availability group "
	    "'AG2', but there is no [ag AG2] section");
	expect_err(GOOD_HEAD "[database AG1]\ndmk_password = hcv:a\n", "[database AG/DATABASE]");
	expect_err(GOOD_HEAD "[database AG1/X]\nrotate_every = 90d\n", "needs 'dmk_password'");
	expect_err(GOOD_HEAD "[database AG1/X]\ndmk_password = hcv:a\n[database AG1/Y]\nname = X\n"
	    "dmk_password = hcv:b\n", "configured twice");
	expect_err(GOOD_HEAD "[database AG1/X]\ndmk_password = env:PW\n", "env: references are only "
	    "for a store's own bootstrap credentials");
	expect_err(GOOD_HEAD "[database AG1/X]\ndmk_password = hcv:a\ndmk_password = hcv:b\n",
	    "'dmk_password' is set twice");
	expect_err("[store s]\ntype = hashicorp-vault\ntoken = s:x\n", "refers to its own store");
	expect_err("[agent]\nstate_dir = /a\x01\n", "control character");
	expect_err("[agent\n", "t.conf:1: cannot parse this line");
	{
		char big[300];
		memset(big, 'x', 129);
		strcpy(big + 129, "\n");
		char text[600];
		snprintf(text, sizeof(text), GOOD_HEAD "[database AG1/X]\ndmk_password = hcv:a\n"
		    "name = %s", big);
		expect_err(text, "1 to 128 characters");
	}
}

static void
test_file_mode(void **st)
{
	char dir[] = "/tmp/dmkconfXXXXXX", path[64];
	struct config *c = NULL;
	struct dmk_err e;
	int fd;

	/* A folder of its own: /tmp itself is writable by others, and refused. */
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/dmkagent.conf", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "[agent]\n", 8), 8);
	close(fd);
	chmod(path, 0664);
	assert_int_equal(config_load(path, &c, &e), DMK_ERR_CONFIG);
	assert_non_null(strstr(e.msg, "writable by group or others"));
	chmod(path, 0644);
	assert_int_equal(config_load(path, &c, &e), 0);
	config_free(c);

	/* The folder: writable by group or others, the file could be replaced. */
	chmod(dir, 0770);
	assert_int_equal(config_load(path, &c, &e), DMK_ERR_CONFIG);
	assert_non_null(strstr(e.msg, "its folder"));
	assert_non_null(strstr(e.msg, dir));
	chmod(dir, 01777);
	assert_int_equal(config_load(path, &c, &e), DMK_ERR_CONFIG);
	chmod(dir, 0755);

	/* Through a link in a folder others can write: the link could be swapped. */
	{
		char ldir[] = "/tmp/dmkconflXXXXXX", link[64];
		assert_non_null(mkdtemp(ldir));
		snprintf(link, sizeof(link), "%s/dmkagent.conf", ldir);
		assert_int_equal(symlink(path, link), 0);
		chmod(ldir, 0777);
		assert_int_equal(config_load(link, &c, &e), DMK_ERR_CONFIG);
		assert_non_null(strstr(e.msg, ldir));
		chmod(ldir, 0700);
		assert_int_equal(config_load(link, &c, &e), 0);
		config_free(c);
		unlink(link);
		rmdir(ldir);
	}

	/* Owned by another user (needs root to set up). */
	if (geteuid() == 0) {
		assert_int_equal(chown(path, 65534, 65534), 0);
		assert_int_equal(config_load(path, &c, &e), DMK_ERR_CONFIG);
		assert_non_null(strstr(e.msg, "owned by uid 65534"));
		assert_non_null(strstr(e.msg, path));
		assert_int_equal(chown(path, 0, 0), 0);
		assert_int_equal(chown(dir, 65534, 65534), 0);
		assert_int_equal(config_load(path, &c, &e), DMK_ERR_CONFIG);
		assert_non_null(strstr(e.msg, "its folder"));
		assert_int_equal(chown(dir, 0, 0), 0);
		assert_int_equal(config_load(path, &c, &e), 0);
		config_free(c);
	}
	unlink(path);
	rmdir(dir);
	assert_int_equal(config_load("/nonexistent/x.conf", &c, &e), DMK_ERR_CONFIG);
	assert_non_null(strstr(e.msg, "/nonexistent/x.conf: cannot open"));
}

/*
 * A line longer than inih's buffer: inih would parse its tail as a line of
 * its own, so a comment could carry a key.  Refused, naming FILE:LINE.
 */
static void
test_long_line(void **st)
{
	char text[4096], line[1024];
	struct config *c = NULL;
	struct dmk_err e;
	size_t i;

	(void)st;
	/* ';' and 198 x: inih's 200-byte buffer ends there, the key follows. */
	line[0] = ';';
	for (i = 1; i < 199; i++)
		line[i] = 'x';
	memcpy(line + 199, "listener = evil:1433", 21);
	snprintf(text, sizeof(text), GOOD_HEAD "[ag AG2]\nlogin = x\n"
	    "login_password = hcv:a\n%s\n", line);
	assert_int_equal(config_parse_string(text, "t.conf", &c, &e), DMK_ERR_CONFIG);
	assert_non_null(strstr(e.msg, "t.conf:16: line longer than"));
	assert_null(c);
	/* One short of the buffer still parses. */
	line[197] = '\0';
	snprintf(text, sizeof(text), GOOD_HEAD "%s\n", line);
	c = parse_ok(text);
	config_free(c);
}

static void
test_secret_key_names(void **st)
{
	assert_true(conf_key_is_secret("dmk_password"));
	assert_true(conf_key_is_secret("client_secret"));
	assert_true(conf_key_is_secret("secret_id"));
	assert_true(conf_key_is_secret("token"));
	assert_true(conf_key_is_secret("audit_key"));
	assert_false(conf_key_is_secret("role_id"));
	assert_false(conf_key_is_secret("listener"));
	assert_false(conf_key_is_secret("keyring"));
}

static void
test_reach_keys(void **st)
{
	struct config *c = parse_ok(GOOD_HEAD "domain = corp.example.com\nbrowser_port = 11434\n"
	    "tls_name = sql.corp.example.com\nencrypt = mandatory\n"
	    "tls_name SQLNODE2\\INST1 = node2.corp.example.com\n"
	    "replica SQLNODE3 = 10.0.0.13:1433\ntls_name SQLNODE3 = sqlnode3.corp.example.com\n"
	    "[database AG1/X]\ndmk_password = hcv:a/b\n");

	assert_string_equal(c->ags[0].domain, "corp.example.com");
	assert_int_equal(c->ags[0].browser_port, 11434);
	assert_string_equal(c->ags[0].tls_name, "sql.corp.example.com");
	assert_int_equal(c->ags[0].nreplicas, 2);
	assert_string_equal(c->ags[0].replicas[0].name, "SQLNODE2\\INST1");
	assert_string_equal(c->ags[0].replicas[0].host, "");
	assert_string_equal(c->ags[0].replicas[0].tls_name, "node2.corp.example.com");
	assert_string_equal(c->ags[0].replicas[1].host, "10.0.0.13");
	assert_string_equal(c->ags[0].replicas[1].tls_name, "sqlnode3.corp.example.com");
	config_free(c);
	c = parse_ok(GOOD_HEAD "[database AG1/X]\ndmk_password = hcv:a/b\n");
	assert_int_equal(c->ags[0].browser_port, 1434);
	config_free(c);
	expect_err(GOOD_HEAD "domain = corp example\n", "'domain' in [ag AG1] must be a DNS name");
	expect_err(GOOD_HEAD "browser_port = 0\n", "'browser_port' in [ag AG1]");
	expect_err(GOOD_HEAD "encrypt = optional\n", "must be one of mandatory|strict");
	c = parse_ok(GOOD_HEAD "encrypt = strict\n[database AG1/X]\ndmk_password = hcv:a/b\n");
	assert_int_equal(c->ags[0].encrypt, ENCRYPT_STRICT);
	config_free(c);
	expect_err(GOOD_HEAD "tls_name A = x y\n", "'tls_name A' in [ag AG1] must be a DNS name");
	expect_err(GOOD_HEAD "replica A = h:1\nreplica A = h:2\n", "'replica A' is set twice");
}


/* config check reports every error, each with FILE:LINE and the key, and the
 * configuration is still refused as a whole (issue 15). */
static void
test_every_error(void **st)
{
	static const char text[] =
	    "[agent]\nstate_dir = /tmp/x\naudit_log = /tmp/x/audit.jsonl\n"
	    "bogus_key = 1\n"                                   /* line 4 */
	    "[store hcv]\ntype = hashicorp-vault\naddress = https://v:8200\nauth = token\n"
	    "token = env:VAULT_TOKEN\n"
	    "[ag AG1]\nlistener = ag1.example.com:1433\nlogin = dmkagent\n"
	    "login_password = hcv:sql/logins/dmkagent#password\n"
	    "connect_timeout = soon\n"                          /* line 14 */
	    "[database AG1/CM_P01]\n"
	    "dmk_password = Secret123!\n"                       /* line 16 */
	    "rotate_every = 90d\n";
	struct config_errors *errs = calloc(1, sizeof(*errs));
	struct config *c = NULL;
	struct dmk_err e;

	(void)st;
	assert_non_null(errs);
	assert_int_equal(config_parse_string_all(text, "t.conf", &c, errs, &e), DMK_ERR_CONFIG);
	assert_null(c);
	assert_int_equal(errs->n, 3);
	assert_non_null(strstr(errs->msg[0], "t.conf:4: "));
	assert_non_null(strstr(errs->msg[0], "bogus_key"));
	assert_non_null(strstr(errs->msg[1], "t.conf:14: "));
	assert_non_null(strstr(errs->msg[1], "connect_timeout"));
	assert_non_null(strstr(errs->msg[2], "t.conf:16: "));
	assert_non_null(strstr(errs->msg[2], "dmk_password"));
	assert_null(strstr(errs->msg[2], "Secret123"));
	/* the first error is the one config_parse_string gives */
	assert_non_null(strstr(e.msg, "t.conf:4: "));
	/* a store section left out is not reported again by what refers to it */
	assert_int_equal(config_parse_string_all("[store hcv]\ntype = nosuch\n"
	    "[ag AG1]\nlistener = a:1433\nlogin = x\nlogin_password = hcv:p#f\n"
	    "[database AG1/D]\ndmk_password = hcv:d#p\nrotate_every = never\n", "t.conf", &c,
	    errs, &e), DMK_ERR_CONFIG);
	assert_int_equal(errs->n, 2);
	assert_non_null(strstr(errs->msg[0], "t.conf:2: "));
	assert_non_null(strstr(errs->msg[1], "t.conf:9: "));
	/* a section error that does not follow from its bad key is still reported */
	assert_int_equal(config_parse_string_all(GOOD_HEAD "[database AG2/D]\n"
	    "dmk_password = hcv:d#p\nrotate_every = never\n", "t.conf", &c, errs, &e),
	    DMK_ERR_CONFIG);
	assert_int_equal(errs->n, 2);
	assert_non_null(strstr(errs->msg[0], "t.conf:15: 'rotate_every'"));
	assert_non_null(strstr(errs->msg[1], "t.conf:13: "));
	assert_non_null(strstr(errs->msg[1], "no [ag AG2]"));
	free(errs);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ref_parse),
		cmocka_unit_test(test_good_config),
		cmocka_unit_test(test_database_name_key),
		cmocka_unit_test(test_literal_secret),
		cmocka_unit_test(test_errors_name_line),
		cmocka_unit_test(test_every_error),
		cmocka_unit_test(test_file_mode),
		cmocka_unit_test(test_long_line),
		cmocka_unit_test(test_secret_key_names),
		cmocka_unit_test(test_reach_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
