/*
 * test_store.c: the store table and its wrappers (providers/store.c): every
 * registered store's row is consistent, an inconsistent row is refused, and
 * an operation a store lacks is one error code that names the store.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "core/dmk.h"
#include "providers/provider.h"

static int
fake_open(struct store *st, struct dmk_err *err)
{
	(void)st; (void)err;
	return 0;
}

static int
fake_get(struct store *st, const struct secret_ref *ref, const char *version,
    struct secret **out, struct prov_version *ver, struct dmk_err *err)
{
	(void)st; (void)ref; (void)version; (void)out; (void)ver;
	return dmk_errf(err, DMK_ERR_NOTFOUND, "nothing here");
}

static int
fake_put(struct store *st, const struct secret_ref *ref, const struct secret *value,
    const char *expect, const struct prov_meta *meta, struct prov_version *out,
    struct dmk_err *err)
{
	(void)st; (void)ref; (void)value; (void)expect; (void)out; (void)err;
	return meta == NULL ? 0 : DMK_ERR_INTERNAL;   /* markers dropped where none are kept */
}

static const struct conf_keydef no_keys[] = { { NULL, 0, 0, NULL, 0, 0 } };

static const struct prov_ops fake_ops = {
	.type = "fake", .caps = 0, .lease = PROV_LEASE_READBACK, .name_max = 64,
	.keys = no_keys, .open = fake_open, .get = fake_get, .put = fake_put,
};

static void
test_registered_rows(void **state)
{
	struct dmk_err e;
	char types[256];
	size_t i;

	(void)state;
	for (i = 0; providers[i] != NULL; i++) {
		dmk_err_clear(&e);
		if (prov_check_ops(providers[i], &e) != 0)
			fail_msg("%s: %s", providers[i]->type, e.msg);
		assert_true(prov_find(providers[i]->type) == providers[i]);
	}
	assert_true(i >= 2);
	prov_type_list(types, sizeof(types));
	assert_non_null(strstr(types, "hashicorp-vault"));
	assert_non_null(strstr(types, "azure-key-vault"));
	assert_int_equal(prov_check_ops(&fake_ops, &e), 0);
}

static void
test_inconsistent_rows(void **state)
{
	struct prov_ops o = fake_ops;
	struct dmk_err e;

	(void)state;
	o.caps = PROV_CAP_VERSIONS;           /* says versions, has no list_versions */
	assert_int_equal(prov_check_ops(&o, &e), DMK_ERR_INTERNAL);
	o = fake_ops;
	o.caps = PROV_CAP_CAS;                /* check-and-set but a read-back lease */
	assert_int_equal(prov_check_ops(&o, &e), DMK_ERR_INTERNAL);
	o = fake_ops;
	o.name_max = 0;                       /* no naming rule */
	assert_int_equal(prov_check_ops(&o, &e), DMK_ERR_INTERNAL);
	o = fake_ops;
	o.put = NULL;
	assert_int_equal(prov_check_ops(&o, &e), DMK_ERR_INTERNAL);
}

static void
test_unsupported_is_one_code(void **state)
{
	struct conf_store cs;
	struct store st;
	struct secret_ref ref;
	struct prov_version *v = (struct prov_version *)&st;
	struct prov_meta m;
	size_t n = 7;
	struct dmk_err e;

	(void)state;
	memset(&cs, 0, sizeof(cs));
	memset(&ref, 0, sizeof(ref));
	memset(&m, 0, sizeof(m));
	snprintf(cs.name, sizeof(cs.name), "mystore");
	cs.ops = &fake_ops;
	assert_int_equal(store_open(&st, &cs, NULL, NULL, &e), 0);
	assert_int_equal(store_list_versions(&st, &ref, &v, &n, &e), DMK_ERR_UNSUPPORTED);
	assert_null(v);
	assert_int_equal(n, 0);
	assert_non_null(strstr(e.msg, "mystore"));
	assert_int_equal(store_set_meta(&st, &ref, "1", &m, &e), DMK_ERR_UNSUPPORTED);
	assert_int_equal(store_delete_version(&st, &ref, "1", &e), DMK_ERR_UNSUPPORTED);
	assert_int_equal(store_check(&st, NULL, 0, NULL, &e), DMK_ERR_UNSUPPORTED);
	assert_int_equal(store_require(&st, PROV_CAP_META, "rotation", &e), DMK_ERR_UNSUPPORTED);
	assert_non_null(strstr(e.msg, "rotation"));
	assert_null(store_cas(&st, "3"));
	prov_meta_set(&m, "dmkagent-state", "current");
	assert_int_equal(store_put(&st, &ref, NULL, NULL, &m, NULL, &e), 0);
	store_close(&st);
}

static void
test_no_empty_marker(void **st)
{
	struct prov_meta m;

	(void)st;
	memset(&m, 0, sizeof(m));
	assert_int_equal(prov_meta_set(&m, "", "x"), DMK_ERR_BADINPUT);
	assert_int_equal(prov_meta_set(&m, "dmkagent-node", ""), 0);
	assert_int_equal(m.n, 0);
	assert_int_equal(prov_meta_set(&m, "dmkagent-state", "current"), 0);
	assert_int_equal(prov_meta_set(&m, "dmkagent-node", "SQLNODE1"), 0);
	assert_int_equal(prov_meta_set(&m, "dmkagent-time", "2026-01-01T00:00:00Z"), 0);
	assert_int_equal(prov_meta_set(&m, "dmkagent-node", ""), 0);
	assert_int_equal(m.n, 2);
	assert_null(prov_meta_get(&m, "dmkagent-node"));
	assert_string_equal(prov_meta_get(&m, "dmkagent-state"), "current");
	assert_string_equal(prov_meta_get(&m, "dmkagent-time"), "2026-01-01T00:00:00Z");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_registered_rows),
		cmocka_unit_test(test_inconsistent_rows),
		cmocka_unit_test(test_unsupported_is_one_code),
		cmocka_unit_test(test_no_empty_marker),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
