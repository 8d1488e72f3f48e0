/*
 * Unit tests of the lease in a store without check-and-set (Azure Key
 * Vault's model), through lease_take and lease_guard against an in-memory
 * store: the claims written "at the same moment" by another contender are
 * injected when ours is written, with Key Vault's one-second created time.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "agent/lease.h"

#define NV 64
struct fver {
	char id[80];
	time_t created;
	char value[2048];
};
static struct fver vers[NV];
static size_t nvers;
static time_t clock_s = 1800000000;
static unsigned long idseq;
/* written right after (or before) our next put, same created second */
static char inject_after[2048], inject_before[2048];
static time_t inject_created;     /* 0: the same second as ours */

static void
add(const char *value, time_t created)
{
	struct fver *v = &vers[nvers++];

	assert_true(nvers <= NV);
	/* version ids in random-looking order, as Key Vault's are */
	snprintf(v->id, sizeof(v->id), "%08lx%024lu", (idseq * 2654435761UL) & 0xffffffffUL,
	    idseq);
	idseq++;
	v->created = created;
	snprintf(v->value, sizeof(v->value), "%s", value);
}

static int
f_get(struct store *st, const struct secret_ref *ref, const char *version,
    struct secret **out, struct prov_version *ver, struct dmk_err *err)
{
	size_t i;

	(void)st;
	(void)ref;
	if (nvers == 0)
		return dmk_errf(err, DMK_ERR_NOTFOUND, "none");
	i = nvers - 1;
	if (version != NULL)
		for (i = 0; i < nvers && strcmp(vers[i].id, version) != 0; i++)
			;
	if (i == nvers)
		return dmk_errf(err, DMK_ERR_NOTFOUND, "no version %s", version);
	*out = secret_from_str(vers[i].value);
	if (ver != NULL) {
		memset(ver, 0, sizeof(*ver));
		snprintf(ver->id, sizeof(ver->id), "%s", vers[i].id);
		ver->created = vers[i].created;
	}
	return 0;
}

static int
f_put(struct store *st, const struct secret_ref *ref, const struct secret *value,
    const char *expect, const struct prov_meta *meta, struct prov_version *out,
    struct dmk_err *err)
{
	(void)st;
	(void)ref;
	(void)meta;
	(void)err;
	assert_null(expect);    /* no check-and-set here */
	if (inject_before[0]) {
		add(inject_before, inject_created ? inject_created : clock_s);
		inject_before[0] = '\0';
	}
	add(secret_reveal(value), clock_s);
	memset(out, 0, sizeof(*out));
	snprintf(out->id, sizeof(out->id), "%s", vers[nvers - 1].id);
	out->created = clock_s;
	if (inject_after[0]) {
		add(inject_after, inject_created ? inject_created : clock_s);
		inject_after[0] = '\0';
	}
	return 0;
}

static int
f_list(struct store *st, const struct secret_ref *ref, struct prov_version **out, size_t *n,
    struct dmk_err *err)
{
	size_t i;

	(void)st;
	(void)ref;
	(void)err;
	*out = calloc(nvers ? nvers : 1, sizeof(**out));
	/* listed newest first: the agent must not rely on any order */
	for (i = 0; i < nvers; i++) {
		snprintf((*out)[i].id, sizeof((*out)[i].id), "%s", vers[nvers - 1 - i].id);
		(*out)[i].created = vers[nvers - 1 - i].created;
	}
	*n = nvers;
	return 0;
}

static const struct prov_ops fake_ops = {
	.type = "fake", .caps = PROV_CAP_VERSIONS, .lease = PROV_LEASE_READBACK, .name_max = 127,
	.flat_names = 1, .get = f_get, .put = f_put,
	.list_versions = f_list,
};

static struct config cfg;
static struct conf_store cst;
static struct store st;
static int sstate = 1;
static struct agent ag;
static struct secret_ref near;

static int
setup(void **state)
{
	(void)state;
	memset(vers, 0, sizeof(vers));
	nvers = 0;
	inject_after[0] = inject_before[0] = '\0';
	inject_created = 0;
	memset(&cfg, 0, sizeof(cfg));
	memset(&cst, 0, sizeof(cst));
	memset(&st, 0, sizeof(st));
	memset(&ag, 0, sizeof(ag));
	snprintf(cst.name, sizeof(cst.name), "akv");
	cfg.stores = &cst;
	cfg.nstores = 1;
	cfg.lease_ttl = 900;
	st.ops = &fake_ops;
	st.conf = &cst;
	ag.cfg = &cfg;
	ag.stores = &st;
	ag.store_state = &sstate;
	snprintf(ag.run_id, sizeof(ag.run_id), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	memset(&near, 0, sizeof(near));
	near.kind = REF_STORE;
	snprintf(near.store, sizeof(near.store), "akv");
	snprintf(near.path, sizeof(near.path), "sql-ag1-cm-p01-dmk");
	snprintf(near.text, sizeof(near.text), "akv:sql-ag1-cm-p01-dmk");
	return 0;
}

/* A record of another run: run r, nonce n, seq s, on base b. */
static void
other(char *out, size_t len, const char *state, char r, char n, int seq, const char *base)
{
	char run[33], nonce[33];

	memset(run, r, 32);
	run[32] = '\0';
	memset(nonce, n, 32);
	nonce[32] = '\0';
	snprintf(out, len, "{\"state\":\"%s\",\"owner\":\"x\",\"host\":\"elsewhere\",\"pid\":7,"
	    "\"run\":\"%s\",\"command\":\"rotate\",\"taken\":\"2027-01-15T08:00:00Z\","
	    "\"expires\":\"2099-01-01T00:00:00Z\",\"machine_id\":\"%s\",\"nonce\":\"%s\","
	    "\"seq\":%d,\"base\":\"%s\"}", state, run, "ffffffffffffffffffffffffffffffff", nonce,
	    seq, base);
}

static void
released_base(void)
{
	char rec[2048];

	other(rec, sizeof(rec), "released", 'c', 'c', 3, "");
	add(rec, clock_s - 100);
}

static void
test_alone_takes_and_keeps(void **state)
{
	struct lease l;
	struct dmk_err err;

	(void)state;
	released_base();
	assert_int_equal(lease_take(&ag, &near, "AG1", "CM_P01", "rotate", &l, &err), 0);
	assert_true(l.held);
	assert_int_equal(lease_guard(&ag, &l, &err), 0);
	assert_int_equal(lease_release(&ag, &l, &err), 0);
}

static void
test_same_second_smaller_nonce_wins(void **state)
{
	struct lease l;
	struct dmk_err err;

	(void)state;
	released_base();
	/* the other claim lands after ours, in the same second, nonce 0000...:
	 * it wins, whatever the order of writes or of the listing */
	other(inject_after, sizeof(inject_after), "held", 'b', '0', 0, vers[0].id);
	assert_int_equal(lease_take(&ag, &near, "AG1", "CM_P01", "rotate", &l, &err),
	    DMK_ERR_LOCKED);
	assert_false(l.held);
	assert_non_null(strstr(err.msg, "same moment"));
}

static void
test_same_second_larger_nonce_loses(void **state)
{
	struct lease l;
	struct dmk_err err;

	(void)state;
	released_base();
	/* written before ours (the current version is then ours), nonce ffff... */
	other(inject_before, sizeof(inject_before), "held", 'b', 'f', 0, vers[0].id);
	assert_int_equal(lease_take(&ag, &near, "AG1", "CM_P01", "rotate", &l, &err), 0);
	assert_true(l.held);
	assert_int_equal(lease_guard(&ag, &l, &err), 0);
}

static void
test_earlier_second_wins(void **state)
{
	struct lease l;
	struct dmk_err err;

	(void)state;
	released_base();
	/* created a second before ours: it wins even with a larger nonce */
	other(inject_after, sizeof(inject_after), "held", 'b', 'f', 0, vers[0].id);
	inject_created = clock_s - 1;
	assert_int_equal(lease_take(&ag, &near, "AG1", "CM_P01", "rotate", &l, &err),
	    DMK_ERR_LOCKED);
}

static void
test_loser_current_winner_keeps(void **state)
{
	struct lease l;
	struct dmk_err err;
	char rec[2048];

	(void)state;
	released_base();
	assert_int_equal(lease_take(&ag, &near, "AG1", "CM_P01", "rotate", &l, &err), 0);
	/* a late loser's claim on the same base is now the current version: the
	 * lease is still ours (and a third agent sees us as the holder) */
	other(rec, sizeof(rec), "held", 'b', 'f', 0, vers[0].id);
	add(rec, clock_s + 1);
	assert_int_equal(lease_guard(&ag, &l, &err), 0);
	assert_true(l.held);
}

static void
test_claim_on_our_version_is_a_takeover(void **state)
{
	struct lease l;
	struct dmk_err err;
	char rec[2048], mine[80];
	struct secret *s = NULL;

	(void)state;
	released_base();
	assert_int_equal(lease_take(&ag, &near, "AG1", "CM_P01", "rotate", &l, &err), 0);
	snprintf(mine, sizeof(mine), "%s", l.version);
	/* another agent judged our record expired and claimed on it; then our
	 * own record was written again after it (current is ours): still lost */
	other(rec, sizeof(rec), "held", 'b', 'f', 0, mine);
	add(rec, clock_s + 5);
	assert_int_equal(f_get(NULL, NULL, mine, &s, NULL, &err), 0);
	add(secret_reveal(s), clock_s + 6);
	secret_free(s);
	snprintf(l.version, sizeof(l.version), "%s", vers[nvers - 1].id);
	assert_int_equal(lease_guard(&ag, &l, &err), DMK_ERR_LOCKED);
	assert_false(l.held);
	assert_non_null(strstr(err.msg, "was taken over"));
	/* and lease_release writes nothing over it */
	assert_int_equal(lease_release(&ag, &l, &err), 0);
	assert_non_null(strstr(vers[nvers - 1].value, "\"held\""));
}

static void
test_garbled_current_is_an_error(void **state)
{
	struct lease l;
	struct dmk_err err;

	(void)state;
	add("{\"state\":\"held\",\"pid\":[1]}", clock_s - 10);
	assert_int_equal(lease_take(&ag, &near, "AG1", "CM_P01", "rotate", &l, &err),
	    DMK_ERR_PROTOCOL);
	assert_non_null(strstr(err.msg, "akv:dmkagent-lease-AG1-CM-P01"));
	assert_int_equal(nvers, 1);    /* nothing written */
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_alone_takes_and_keeps, setup),
		cmocka_unit_test_setup(test_same_second_smaller_nonce_wins, setup),
		cmocka_unit_test_setup(test_same_second_larger_nonce_loses, setup),
		cmocka_unit_test_setup(test_earlier_second_wins, setup),
		cmocka_unit_test_setup(test_loser_current_winner_keeps, setup),
		cmocka_unit_test_setup(test_claim_on_our_version_is_a_takeover, setup),
		cmocka_unit_test_setup(test_garbled_current_is_an_error, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
