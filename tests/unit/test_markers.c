/*
 * test_markers.c: the pure rules over store markers (agent/markers.c), one
 * row per way a run can have stopped.  Every resume case the fault matrix
 * reaches by killing a real run is here as a store state: the matrix proves
 * the states arise, this table proves what is made of each.
 *
 * A version is written "ID[ STATE][ key=value...][ !deleted|!disabled]";
 * keys: r (replaces), m (mode), id (rotation id).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/dmk.h"
#include "agent/markers.h"

static size_t
parse(const char *const *spec, struct prov_version *v)
{
	size_t n = 0;
	char buf[256], *tok, *save;

	for (; spec[n] != NULL; n++) {
		memset(&v[n], 0, sizeof(v[n]));
		snprintf(buf, sizeof(buf), "%s", spec[n]);
		tok = strtok_r(buf, " ", &save);
		snprintf(v[n].id, sizeof(v[n].id), "%s", tok);
		v[n].num = atoll(tok);
		while ((tok = strtok_r(NULL, " ", &save)) != NULL) {
			if (strcmp(tok, "!deleted") == 0)
				v[n].deleted = 1;
			else if (strcmp(tok, "!disabled") == 0)
				v[n].disabled = 1;
			else if (strncmp(tok, "r=", 2) == 0)
				prov_meta_set(&v[n].meta, MARK_REPLACES, tok + 2);
			else if (strncmp(tok, "m=", 2) == 0)
				prov_meta_set(&v[n].meta, MARK_MODE, tok + 2);
			else if (strncmp(tok, "id=", 3) == 0)
				prov_meta_set(&v[n].meta, MARK_ROTATION, tok + 3);
			else
				prov_meta_set(&v[n].meta, MARK_STATE, tok);
		}
	}
	return n;
}

struct row {
	const char *what;
	const char *versions[8];
	enum mk_start start;
	const char *oldv, *newv, *prev;   /* ids; NULL: none */
	int mode;                         /* -1: not known from the store */
	const char *rotation;
};

static const struct row rows[] = {
	{ "empty store (recover)", { NULL }, MK_START_NEW, NULL, NULL, NULL, -1, "" },
	{ "first version, put by store put", { "1 current", NULL },
	  MK_START_NEW, "1", NULL, NULL, -1, "" },
	{ "first version, put by hand without markers", { "1", NULL },
	  MK_START_NEW, "1", NULL, NULL, -1, "" },
	{ "after-lease, after-prove, after-backup: nothing written yet", { "1 current", NULL },
	  MK_START_NEW, "1", NULL, NULL, -1, "" },
	{ "after-pending, after-add, after-register, after-verify",
	  { "1 current", "2 pending r=1 m=rotate id=R", NULL },
	  MK_RESUME_PENDING, "1", "2", NULL, MK_MODE_ROTATE, "R" },
	{ "regenerate, pending", { "1 current", "2 pending r=1 m=regenerate id=G", NULL },
	  MK_RESUME_PENDING, "1", "2", NULL, MK_MODE_REGENERATE, "G" },
	{ "after-mark-current", { "1 current", "2 current r=1 id=R", NULL },
	  MK_RESUME_DROP, "1", "2", NULL, -1, "R" },
	{ "after-verify-mark, after-drop-primary, after-drop-replicas",
	  { "1 retiring", "2 current r=1 id=R", NULL },
	  MK_RESUME_DROP, "1", "2", NULL, -1, "R" },
	{ "retiring, the new version lost its replaces marker",
	  { "1 retiring", "2 current id=R", NULL },
	  MK_RESUME_DROP, "1", "2", NULL, -1, "R" },
	{ "after-retire, after-release: finished", { "1 retired", "2 current r=1 id=R", NULL },
	  MK_START_NEW, "2", NULL, NULL, -1, "" },
	{ "the next rotation, pending", { "1 retired", "2 current r=1", "3 pending r=2 id=S", NULL },
	  MK_RESUME_PENDING, "2", "3", NULL, MK_MODE_ROTATE, "S" },
	{ "pending without replaces: the current version is the old one",
	  { "1 current", "2 pending", NULL },
	  MK_RESUME_PENDING, "1", "2", NULL, MK_MODE_ROTATE, "" },
	{ "pending without replaces, only a retiring one left", { "1 retiring", "2 pending", NULL },
	  MK_RESUME_PENDING, "1", "2", NULL, MK_MODE_ROTATE, "" },
	{ "pending replaces a version that is gone", { "1 current", "2 pending r=9", NULL },
	  MK_RESUME_PENDING, "1", "2", NULL, MK_MODE_ROTATE, "" },
	{ "recover: pending, nothing to replace", { "1 pending m=recover id=V", NULL },
	  MK_RESUME_PENDING, NULL, "1", NULL, MK_MODE_RECOVER, "V" },
	{ "recover over an unknown password: pending does not replace the current one",
	  { "1 current", "2 pending m=recover", NULL },
	  MK_RESUME_PENDING, NULL, "2", NULL, MK_MODE_RECOVER, "" },
	{ "a deleted pending version is no rotation", { "1 current", "2 pending r=1 !deleted", NULL },
	  MK_START_NEW, "1", NULL, NULL, -1, "" },
	{ "a disabled (Azure) current version does not count",
	  { "1 current", "2 current r=1 !disabled", NULL },
	  MK_START_NEW, "1", NULL, NULL, -1, "" },
	{ "an operator's write on top of the current version",
	  { "1 current", "2", NULL },
	  MK_START_NEW, "2", NULL, "1", -1, "" },
	{ "an operator's second write, nothing marked (both count as current)",
	  { "1", "2", NULL },
	  MK_START_NEW, "2", NULL, "1", -1, "" },
	{ "an operator's write behind a retired version",
	  { "1 retired", "2", NULL },
	  MK_START_NEW, "2", NULL, NULL, -1, "" },
	{ "an operator's write on top of an abandoned pending version",
	  { "1 current", "2 pending r=1", "3", NULL },
	  MK_START_NEW, "3", NULL, "1", -1, "" },
	{ "a retired version named by replaces is done", { "1 retired", "2 current r=1", "3 retired", NULL },
	  MK_START_NEW, "2", NULL, NULL, -1, "" },
	{ "only pending versions that are not newest", { "1 pending", "2 retired", NULL },
	  MK_START_NEW, NULL, NULL, NULL, -1, "" },
};

static void
check_id(const struct prov_version *v, long i, const char *want, const char *what,
    const char *field)
{
	if (want == NULL) {
		if (i != -1)
			fail_msg("%s: %s is %s, want none", what, field, v[i].id);
		return;
	}
	if (i < 0)
		fail_msg("%s: %s is none, want %s", what, field, want);
	if (strcmp(v[i].id, want) != 0)
		fail_msg("%s: %s is %s, want %s", what, field, v[i].id, want);
}

static void
test_plan_table(void **state)
{
	struct prov_version v[8];
	struct mk_plan p;
	size_t i, n;

	(void)state;
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *w = &rows[i];
		n = parse(w->versions, v);
		markers_plan(v, n, &p);
		if (p.start != w->start)
			fail_msg("%s: start %d, want %d", w->what, p.start, w->start);
		check_id(v, p.oldv, w->oldv, w->what, "old");
		check_id(v, p.newv, w->newv, w->what, "new");
		check_id(v, p.prev, w->prev, w->what, "prev");
		if (w->mode < 0 && p.mode_known)
			fail_msg("%s: mode %d from the store, want none", w->what, p.mode);
		if (w->mode >= 0 && (!p.mode_known || (int)p.mode != w->mode))
			fail_msg("%s: mode %d, want %d", w->what, p.mode, w->mode);
		if (strcmp(p.rotation, w->rotation) != 0)
			fail_msg("%s: rotation '%s', want '%s'", w->what, p.rotation, w->rotation);
		if (p.resumed != (w->start != MK_START_NEW))
			fail_msg("%s: resumed %d", w->what, p.resumed);
		if (p.latest != (long)n - 1)
			fail_msg("%s: latest %ld, want %zu", w->what, p.latest, n - 1);
	}
}

static void
test_in_force(void **state)
{
	static const char *const a[] = { "1 current", "2 pending r=1", NULL };
	static const char *const b[] = { "1 retired", "2 current r=1", NULL };
	static const char *const c[] = { "1 pending m=recover", NULL };
	static const char *const d[] = { "1 current", "2 retiring", "3 current !deleted", NULL };
	static const char *const e[] = { "1", NULL };
	struct prov_version v[8];

	(void)state;
	assert_int_equal(markers_in_force(v, parse(a, v)), 0);
	assert_int_equal(markers_in_force(v, parse(b, v)), 1);
	assert_int_equal(markers_in_force(v, parse(c, v)), -1);
	assert_int_equal(markers_in_force(v, parse(d, v)), 0);
	assert_int_equal(markers_in_force(v, parse(e, v)), 0);
	assert_int_equal(markers_in_force(v, 0), -1);
}

/* What must stay (markers_keep), and the headroom it leaves (store_headroom). */
static void
test_keep_and_headroom(void **state)
{
	static const char *const a[] = { "1 retired", "2 retired", "3 current", "4 pending r=3",
	    NULL };
	static const char *const b[] = { "1", "2 retired", "3 retired", NULL };
	static const char *const c[] = { "1 retiring", "2 current", NULL };
	static const char *const d[] = { "1 current !deleted", "2", NULL };
	struct prov_version v[8];
	struct store st;
	long first;
	size_t n;

	(void)state;
	memset(&st, 0, sizeof(st));
	st.keep = markers_keep;
	n = parse(a, v);
	assert_false(markers_keep(v, n, 0));
	assert_false(markers_keep(v, n, 1));
	assert_true(markers_keep(v, n, 2));
	assert_true(markers_keep(v, n, 3));
	assert_false(markers_keep(v, n, 4));
	/* 4 held, 10 kept: 8 more writes, the 9th would drop version 3 */
	assert_int_equal(store_headroom(&st, v, n, 10, &first), 8);
	assert_int_equal(first, 2);
	assert_int_equal(store_headroom(&st, v, n, 4, &first), 2);
	assert_int_equal(store_headroom(&st, v, n, 0, &first), -1);   /* all kept */
	assert_int_equal(first, -1);
	/* an unmarked version in force at the limit: the next write is refused */
	n = parse(b, v);
	assert_true(markers_keep(v, n, 0));
	assert_int_equal(store_headroom(&st, v, n, 3, &first), 0);
	assert_int_equal(first, 0);
	n = parse(c, v);
	assert_true(markers_keep(v, n, 0));     /* retiring: its password is still being dropped */
	assert_int_equal(store_headroom(&st, v, n, 2, NULL), 0);
	n = parse(d, v);
	assert_false(markers_keep(v, n, 0));    /* deleted: nothing to keep */
	assert_int_equal(store_headroom(&st, v, n, 2, &first), 1);
	assert_int_equal(first, 1);
	st.keep = NULL;
	assert_int_equal(store_headroom(&st, v, n, 2, &first), -1);
}

static void
test_stamp(void **state)
{
	struct prov_meta m;

	(void)state;
	memset(&m, 0, sizeof(m));
	markers_stamp(&m, "pending");
	assert_string_equal(prov_meta_get(&m, MARK_STATE), "pending");
	assert_non_null(strchr(prov_meta_get(&m, MARK_BY), '@'));
	assert_non_null(prov_meta_get(&m, MARK_TIME));
	assert_string_equal(markers_mode_name(MK_MODE_RECOVER), "recover");
	assert_string_equal(markers_mode_name((enum mk_mode)7), "?");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plan_table),
		cmocka_unit_test(test_in_force),
		cmocka_unit_test(test_keep_and_headroom),
		cmocka_unit_test(test_stamp),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
