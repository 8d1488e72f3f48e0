/*
 * Unit tests: locked, dump-excluded, wiped memory for data in transit
 * (core/lockmem.h), and its users: Jansson's allocator and HTTP bodies.
 * Its own executable: the arena's size is set before its first use.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <jansson.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "core/lockmem.h"
#include "providers/http.h"

#define ARENA (256 * 1024)

/* AddressSanitizer turns mlock() into a no-op: locking is not checked there. */
#if defined(__SANITIZE_ADDRESS__)
# define NO_MLOCK 1
#elif defined(__has_feature)
# if __has_feature(address_sanitizer)
#  define NO_MLOCK 1
# endif
#endif
#ifndef NO_MLOCK
# define NO_MLOCK 0
#endif
#define CANARY "canary-token-in-transit-93b1d7"

/*
 * The VmFlags of the mapping that holds addr, from /proc/self/smaps
 * ("dd": excluded from core dumps, "lo": locked).
 */
static int
vmflags(const void *addr, char *out, size_t outlen)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	int in = 0;
	uintptr_t a = (uintptr_t)addr;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = a >= lo && a < hi;
		else if (in && strncmp(line, "VmFlags:", 8) == 0) {
			snprintf(out, outlen, "%s", line + 8);
			fclose(f);
			return 0;
		}
	}
	fclose(f);
	return -1;
}

static int
all_zero(const unsigned char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i] != 0)
			return 0;
	return 1;
}

static void
test_arena_wiped_dontdump(void **st)
{
	char flags[256];
	unsigned char *p, *q;

	(void)st;
	p = lockmem_malloc(100);
	assert_non_null(p);
	memcpy(p, CANARY, sizeof(CANARY));
	assert_int_equal(vmflags(p, flags, sizeof(flags)), 0);
	assert_non_null(strstr(flags, " dd"));
	if (geteuid() == 0 && !NO_MLOCK)   /* root may lock without limit */
		assert_non_null(strstr(flags, " lo"));
	lockmem_free(p);
	/* Still mapped (the arena): every byte past the free-list link is zero. */
	assert_true(all_zero(p + sizeof(void *), 128 - sizeof(void *)));
	/* Reused at its size, and clean. */
	q = lockmem_malloc(128);
	assert_ptr_equal(p, q);
	assert_true(all_zero(q, 128));
	lockmem_free(q);

	/* A large block: a mapping of its own, excluded from dumps too. */
	p = lockmem_malloc(200 * 1024);
	assert_non_null(p);
	memset(p, 'x', 200 * 1024);
	assert_int_equal(vmflags(p, flags, sizeof(flags)), 0);
	assert_non_null(strstr(flags, " dd"));
	p = lockmem_realloc(p, 300 * 1024);
	assert_non_null(p);
	assert_int_equal(p[200 * 1024 - 1], 'x');
	lockmem_free(p);
}

/* The arena full: blocks come from the heap, counted, still usable. */
static void
test_exhausted_falls_back(void **st)
{
	struct lockmem_stats s0, s1;
	void *v[300];
	size_t i;

	(void)st;
	lockmem_get_stats(&s0);
	for (i = 0; i < 300; i++) {
		v[i] = lockmem_malloc(1000);
		assert_non_null(v[i]);
		memset(v[i], 'y', 1000);
	}
	lockmem_get_stats(&s1);
	assert_int_equal(s1.arena_size, ARENA);
	assert_true(s1.fallbacks > s0.fallbacks);
	assert_true(s1.arena_used <= ARENA);
	for (i = 0; i < 300; i++)
		lockmem_free(v[i]);
	lockmem_get_stats(&s1);
	assert_int_equal(s1.in_use, s0.in_use);
}

static void *
hammer(void *arg)
{
	unsigned seed = (unsigned)(uintptr_t)arg;
	void *v[64] = { 0 };
	int i;

	for (i = 0; i < 20000; i++) {
		int k = (int)(rand_r(&seed) % 64);
		if (v[k] != NULL) {
			if (((unsigned char *)v[k])[0] != (unsigned char)k)
				abort();   /* no cmocka assertions off the main thread */
			lockmem_free(v[k]);
			v[k] = NULL;
		} else if ((v[k] = lockmem_malloc(16 + rand_r(&seed) % 3000)) != NULL)
			((unsigned char *)v[k])[0] = (unsigned char)k;
	}
	for (i = 0; i < 64; i++)
		lockmem_free(v[i]);
	return NULL;
}

static void
test_threads(void **st)
{
	struct lockmem_stats s0, s1;
	pthread_t t[4];
	int i;

	(void)st;
	lockmem_get_stats(&s0);
	for (i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, hammer, (void *)(uintptr_t)(i + 1)), 0);
	for (i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	lockmem_get_stats(&s1);
	assert_int_equal(s1.in_use, s0.in_use);
}

/* A parsed response's strings live in dump-excluded memory, wiped on free. */
static void
test_json_and_http_body(void **st)
{
	char flags[256];
	struct http_response resp;
	json_t *j;
	const char *v;
	unsigned char *at;
	size_t n;

	(void)st;
	secret_install_json_allocator();
	j = json_loads("{\"data\":{\"data\":{\"password\":\"" CANARY "\"}}}", 0, NULL);
	assert_non_null(j);
	v = json_string_value(json_object_get(json_object_get(json_object_get(j, "data"), "data"),
	    "password"));
	assert_string_equal(v, CANARY);
	assert_int_equal(vmflags(v, flags, sizeof(flags)), 0);
	assert_non_null(strstr(flags, " dd"));
	at = (unsigned char *)v;
	n = strlen(v);
	json_decref(j);
	/* Wiped: all but a free-list link at the block's start is zero. */
	assert_true(memcmp(at, CANARY, n) != 0);
	assert_true(all_zero(at + sizeof(void *), n - sizeof(void *)));

	http_response_init(&resp);
	assert_int_equal(buf_append(&resp.body, CANARY, strlen(CANARY)), 0);
	assert_int_equal(vmflags(resp.body.data, flags, sizeof(flags)), 0);
	assert_non_null(strstr(flags, " dd"));
	http_response_free(&resp);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_arena_wiped_dontdump),
		/* before the arena is filled on purpose: after that a small block may
		 * only come from the heap (what test_exhausted_falls_back proves), and
		 * whether a free one is left depends on test_threads' interleaving */
		cmocka_unit_test(test_json_and_http_body),
		cmocka_unit_test(test_exhausted_falls_back),
		cmocka_unit_test(test_threads),
	};

	lockmem_set_arena_size(ARENA);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
