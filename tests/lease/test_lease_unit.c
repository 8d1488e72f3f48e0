/*
 * Unit tests of the lease takeover decision (agent/lease.c): a pure
 * function of the holder's record, our identity and what /proc says of
 * the holder's pid; and of the parser that stands between the store and
 * that decision (every field hostile).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/dmk.h"
#include "agent/lease.h"

#define REF "vault:dmkagent/leases/AG1/CM-P01#lease"
#define MACHINE "0123456789abcdef0123456789abcdef"
#define BOOT "11111111-2222-3333-4444-555555555555"
#define NOW ((time_t)1800000000)            /* 2027-01-15T08:00:00Z */
#define LATER "2027-01-15T08:10:00Z"        /* NOW + 600 */
#define TAKEN "2027-01-15T07:59:00Z"        /* NOW - 60 */

static struct lease_ident me;

static void
me_init(void)
{
	memset(&me, 0, sizeof(me));
	strcpy(me.host, "sqlhost");
	me.pid = 4242;
	strcpy(me.machine, MACHINE);
	strcpy(me.boot, BOOT);
	me.pidns = 4026531836ULL;
	me.start = 9000;
	me.boot_time = NOW - 3600;
	me.have_machine = me.have_boot = me.have_pidns = me.have_start = 1;
}

/* A record as this agent writes it, with overrides: each extra is
 * "key":value JSON text (a later key in extra replaces nothing: the
 * caller leaves it out of the base with omit). */
static void
rec(char *out, size_t n, const char *omit, const char *extra)
{
	static const char *const base[][2] = {
		{ "state", "\"held\"" }, { "owner", "\"dmk\"" }, { "host", "\"sqlhost\"" },
		{ "pid", "777" }, { "run", "\"" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" "\"" },
		{ "command", "\"rotate\"" }, { "taken", "\"" TAKEN "\"" },
		{ "expires", "\"" LATER "\"" }, { "machine_id", "\"" MACHINE "\"" },
		{ "boot_id", "\"" BOOT "\"" }, { "pidns", "4026531836" }, { "start", "1234" },
		{ "nonce", "\"0123456789abcdef0123456789abcdef\"" }, { "seq", "0" },
		{ "base", "\"\"" },
	};
	size_t i, len;

	len = (size_t)snprintf(out, n, "{");
	for (i = 0; i < sizeof(base) / sizeof(base[0]); i++) {
		char k[40];
		snprintf(k, sizeof(k), ",%s,", base[i][0]);
		if (omit != NULL && strstr(omit, k) != NULL)
			continue;
		len += (size_t)snprintf(out + len, n - len, "%s\"%s\":%s", len > 1 ? "," : "",
		    base[i][0], base[i][1]);
	}
	if (extra != NULL)
		len += (size_t)snprintf(out + len, n - len, "%s%s", len > 1 ? "," : "", extra);
	snprintf(out + len, n - len, "}");
}

static int
decide(const char *omit, const char *extra, int proc_state, unsigned long long start,
    char *why, size_t wl)
{
	struct lease_holder h;
	struct lease_proc p;
	struct dmk_err err;
	char text[4096];

	rec(text, sizeof(text), omit, extra);
	assert_int_equal(lease_parse(text, strlen(text), REF, &h, &err), 0);
	memset(&p, 0, sizeof(p));
	p.state = proc_state;
	p.start = start;
	p.have_start = proc_state == LEASE_PROC_ALIVE && start != 0;
	return lease_decide(&h, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", &me, &p, NOW, why, wl);
}

static void
test_same_everything_dead_pid_takes(void **st)
{
	char why[600];

	me_init();
	assert_int_equal(decide(NULL, NULL, LEASE_PROC_GONE, 0, why, sizeof(why)), LEASE_TAKE);
	assert_non_null(strstr(why, "no process 777"));
}

static void
test_alive_same_start_waits(void **st)
{
	char why[600];

	me_init();
	assert_int_equal(decide(NULL, NULL, LEASE_PROC_ALIVE, 1234, why, sizeof(why)), LEASE_WAIT);
	assert_non_null(strstr(why, "alive"));
}

static void
test_pid_reused_takes(void **st)
{
	char why[600];

	me_init();
	assert_int_equal(decide(NULL, NULL, LEASE_PROC_ALIVE, 98765, why, sizeof(why)),
	    LEASE_TAKE);
	assert_non_null(strstr(why, "another process"));
}

static void
test_alive_start_unknown_waits(void **st)
{
	char why[600];

	me_init();
	/* hidepid: kill() says it exists, /proc will not say when it began */
	assert_int_equal(decide(NULL, NULL, LEASE_PROC_ALIVE, 0, why, sizeof(why)), LEASE_WAIT);
	assert_int_equal(decide(NULL, NULL, LEASE_PROC_UNKNOWN, 0, why, sizeof(why)), LEASE_WAIT);
	/* the holder's start missing (but pid reused): cannot prove */
	assert_int_equal(decide(",start,", NULL, LEASE_PROC_ALIVE, 98765, why, sizeof(why)),
	    LEASE_WAIT);
}

static void
test_other_pidns_waits(void **st)
{
	char why[600];

	me_init();
	/* the bug: same host name, a pid that does not exist here */
	assert_int_equal(decide(",pidns,", "\"pidns\":4026532999", LEASE_PROC_GONE, 0, why,
	    sizeof(why)), LEASE_WAIT);
	assert_non_null(strstr(why, "PID namespace"));
	assert_int_equal(decide(",pidns,", NULL, LEASE_PROC_GONE, 0, why, sizeof(why)),
	    LEASE_WAIT);
	me.have_pidns = 0;
	assert_int_equal(decide(NULL, NULL, LEASE_PROC_GONE, 0, why, sizeof(why)), LEASE_WAIT);
}

static void
test_other_machine_waits(void **st)
{
	char why[600];

	me_init();
	/* another machine id and another boot: another machine */
	assert_int_equal(decide(",machine_id,boot_id,", "\"machine_id\":\"ffffffffffffffffffff"
	    "ffffffffffff\",\"boot_id\":\"99999999-2222-3333-4444-555555555555\"",
	    LEASE_PROC_GONE, 0, why, sizeof(why)), LEASE_WAIT);
	assert_non_null(strstr(why, "another machine"));
	/* no machine id here (a chroot, a minimal container) and another boot:
	 * nothing proves it is this machine */
	me.have_machine = 0;
	assert_int_equal(decide(",boot_id,", "\"boot_id\":\"99999999-2222-3333-4444-"
	    "555555555555\"", LEASE_PROC_GONE, 0, why, sizeof(why)), LEASE_WAIT);
	assert_non_null(strstr(why, "another machine"));
	/* no machine id, but the same running kernel and PID namespace: the pid
	 * is exact, and a dead one is a proof */
	assert_int_equal(decide(NULL, NULL, LEASE_PROC_GONE, 0, why, sizeof(why)), LEASE_TAKE);
	/* ... and a live one is not */
	assert_int_equal(decide(NULL, NULL, LEASE_PROC_ALIVE, 1234, why, sizeof(why)),
	    LEASE_WAIT);
	/* the same kernel, another PID namespace: wait */
	assert_int_equal(decide(",pidns,", "\"pidns\":4026532000", LEASE_PROC_GONE, 0, why,
	    sizeof(why)), LEASE_WAIT);
	me_init();
	assert_int_equal(decide(",host,", "\"host\":\"otherhost\"", LEASE_PROC_GONE, 0, why,
	    sizeof(why)), LEASE_WAIT);
}

static void
test_same_machine_other_boot(void **st)
{
	char why[600];

	me_init();
	/* written before this boot: the holder died in the reboot */
	me.boot_time = NOW - 30;
	assert_int_equal(decide(",boot_id,", "\"boot_id\":\"99999999-2222-3333-4444-55555555"
	    "5555\"", LEASE_PROC_ALIVE, 1234, why, sizeof(why)), LEASE_TAKE);
	assert_non_null(strstr(why, "rebooted"));
	/* written since this boot began: a clone with the same machine id */
	me.boot_time = NOW - 3600;
	assert_int_equal(decide(",boot_id,", "\"boot_id\":\"99999999-2222-3333-4444-55555555"
	    "5555\"", LEASE_PROC_GONE, 0, why, sizeof(why)), LEASE_WAIT);
	/* no boot time known here: cannot prove */
	me.boot_time = 0;
	assert_int_equal(decide(",boot_id,", "\"boot_id\":\"99999999-2222-3333-4444-55555555"
	    "5555\"", LEASE_PROC_GONE, 0, why, sizeof(why)), LEASE_WAIT);
}

static void
test_old_format_waits(void **st)
{
	char why[600];

	me_init();
	/* what the previous agent wrote: host and pid, nothing else */
	assert_int_equal(decide(",machine_id,boot_id,pidns,start,nonce,seq,base,", NULL,
	    LEASE_PROC_GONE, 0, why, sizeof(why)), LEASE_WAIT);
	assert_int_equal(decide(",boot_id,", NULL, LEASE_PROC_GONE, 0, why, sizeof(why)),
	    LEASE_WAIT);
}

static void
test_released_expired_ours_take(void **st)
{
	char why[600];

	me_init();
	assert_int_equal(decide(",state,", "\"state\":\"released\"", LEASE_PROC_ALIVE, 1234, why,
	    sizeof(why)), LEASE_TAKE);
	assert_int_equal(decide(",expires,", "\"expires\":\"2027-01-15T07:59:59Z\"",
	    LEASE_PROC_ALIVE, 1234, why, sizeof(why)), LEASE_TAKE);
	assert_int_equal(decide(",run,", "\"run\":\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"",
	    LEASE_PROC_ALIVE, 1234, why, sizeof(why)), LEASE_TAKE);
	/* and a live holder of another machine (another machine id, another
	 * boot) waits, however dead its pid looks here */
	assert_int_equal(decide(",machine_id,boot_id,", "\"machine_id\":\"ffffffffffffffffffff"
	    "ffffffffffff\",\"boot_id\":\"99999999-2222-3333-4444-555555555555\"",
	    LEASE_PROC_GONE, 0, why, sizeof(why)), LEASE_WAIT);
}

static void
test_garbage_is_an_error(void **st)
{
	static const char *const bad[][2] = {
		{ ",pid,", "\"pid\":\"777\"" },
		{ ",pid,", "\"pid\":-1" },
		{ ",pid,", "\"pid\":99999999999" },
		{ ",pid,", "\"pid\":7.5" },
		{ ",pidns,", "\"pidns\":\"4026531836\"" },
		{ ",pidns,", "\"pidns\":0" },
		{ ",start,", "\"start\":-5" },
		{ ",seq,", "\"seq\":[]" },
		{ ",state,", "\"state\":\"maybe\"" },
		{ ",state,", "\"state\":1" },
		{ ",state,", NULL },
		{ ",machine_id,", "\"machine_id\":{}" },
		{ ",boot_id,", "\"boot_id\":\"a\\nb\"" },
		{ ",host,", "\"host\":\"a\\u0000b\"" },
		{ ",expires,", "\"expires\":\"tomorrow\"" },
		{ ",expires,", NULL },
		{ ",taken,", "\"taken\":5" },
		{ ",run,", "\"run\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"" },
		{ NULL, "\"pid\":778" },    /* a duplicate key */
	};
	static const char *const whole[] = { "", "not json", "[]", "\"held\"", "null", "{",
	    "{\"state\":\"held\"", "\xff\xfe" };
	struct lease_holder h;
	struct dmk_err err;
	char text[4096], big[10000];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		rec(text, sizeof(text), bad[i][0], bad[i][1]);
		memset(&err, 0, sizeof(err));
		if (lease_parse(text, strlen(text), REF, &h, &err) != DMK_ERR_PROTOCOL)
			fail_msg("accepted: %s", text);
		assert_non_null(strstr(err.msg, REF));
	}
	for (i = 0; i < sizeof(whole) / sizeof(whole[0]); i++) {
		memset(&err, 0, sizeof(err));
		assert_int_equal(lease_parse(whole[i], strlen(whole[i]), REF, &h, &err),
		    DMK_ERR_PROTOCOL);
		assert_non_null(strstr(err.msg, REF));
	}
	memset(big, ' ', sizeof(big));
	big[0] = '{';
	big[sizeof(big) - 1] = '}';
	assert_int_equal(lease_parse(big, sizeof(big), REF, &h, &err), DMK_ERR_PROTOCOL);
	/* a long host name is cut nowhere: it is refused */
	memset(big, 'h', 300);
	big[300] = '\0';
	snprintf(text, sizeof(text), "{\"state\":\"held\",\"expires\":\"%s\",\"host\":\"%s\"}",
	    LATER, big);
	assert_int_equal(lease_parse(text, strlen(text), REF, &h, &err), DMK_ERR_PROTOCOL);
}

static void
test_proc_facts(void **st)
{
	struct lease_ident self;
	struct lease_proc p;

	lease_self(&self);
	assert_int_equal(self.pid, (long long)getpid());
	if (access("/proc/self/stat", R_OK) != 0)
		skip();
	lease_proc_of(self.pid, &p);
	assert_int_equal(p.state, LEASE_PROC_ALIVE);
	if (self.have_start) {
		assert_true(p.have_start);
		assert_true(p.start == self.start);
	}
	/* above any pid_max: gone */
	lease_proc_of(0x7ffffff0LL, &p);
	assert_int_equal(p.state, LEASE_PROC_GONE);
	lease_proc_of(-3, &p);
	assert_int_equal(p.state, LEASE_PROC_UNKNOWN);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_everything_dead_pid_takes),
		cmocka_unit_test(test_alive_same_start_waits),
		cmocka_unit_test(test_pid_reused_takes),
		cmocka_unit_test(test_alive_start_unknown_waits),
		cmocka_unit_test(test_other_pidns_waits),
		cmocka_unit_test(test_other_machine_waits),
		cmocka_unit_test(test_same_machine_other_boot),
		cmocka_unit_test(test_old_format_waits),
		cmocka_unit_test(test_released_expired_ours_take),
		cmocka_unit_test(test_garbage_is_an_error),
		cmocka_unit_test(test_proc_facts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
