/* secret.c: the secret type; see secret.h for its invariants. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "dmk.h"
#include "secret.h"
#include "lockmem.h"

struct secret {
	unsigned char *data;   /* mapping of cap bytes; data[len] == 0 */
	size_t len;
	size_t cap;
};

static int mlock_warned;

static size_t
page_round(size_t n)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	return (n + pg - 1) / pg * pg;
}

static unsigned char *
map_secret(size_t cap)
{
	void *p;

	p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
#ifdef MADV_DONTDUMP
	(void)madvise(p, cap, MADV_DONTDUMP);
#endif
	if (mlock(p, cap) == -1 && !mlock_warned) {
		mlock_warned = 1;
		log_warn("cannot lock secret memory (RLIMIT_MEMLOCK?); secrets may be swapped");
	}
	return p;
}

static void
unmap_secret(unsigned char *p, size_t cap)
{
	if (p == NULL)
		return;
	OPENSSL_cleanse(p, cap);
	munlock(p, cap);
	munmap(p, cap);
}

struct secret *
secret_new(void)
{
	struct secret *s;

	if ((s = calloc(1, sizeof(*s))) == NULL)
		return NULL;
	s->cap = page_round(1);
	if ((s->data = map_secret(s->cap)) == NULL) {
		free(s);
		return NULL;
	}
	return s;
}

struct secret *
secret_from(const void *data, size_t len)
{
	struct secret *s;

	if ((s = secret_new()) == NULL)
		return NULL;
	if (secret_append(s, data, len) != 0) {
		secret_free(s);
		return NULL;
	}
	return s;
}

struct secret *
secret_from_str(const char *str)
{
	return secret_from(str, strlen(str));
}

struct secret *
secret_dup(const struct secret *s)
{
	return secret_from(s->data, s->len);
}

void
secret_free(struct secret *s)
{
	if (s == NULL)
		return;
	unmap_secret(s->data, s->cap);
	OPENSSL_cleanse(s, sizeof(*s));
	free(s);
}

int
secret_append(struct secret *s, const void *data, size_t len)
{
	unsigned char *n;
	size_t ncap;

	if (len > SECRET_MAX || s->len + len > SECRET_MAX)
		return DMK_ERR_TOOBIG;
	if (s->len + len + 1 > s->cap) {
		ncap = page_round(s->len + len + 1);
		if ((n = map_secret(ncap)) == NULL)
			return DMK_ERR_NOMEM;
		memcpy(n, s->data, s->len);
		unmap_secret(s->data, s->cap);
		s->data = n;
		s->cap = ncap;
	}
	memcpy(s->data + s->len, data, len);
	s->len += len;
	s->data[s->len] = '\0';
	return 0;
}

void
secret_clear(struct secret *s)
{
	OPENSSL_cleanse(s->data, s->cap);
	s->len = 0;
}

void
secret_trim_newline(struct secret *s)
{
	if (s->len > 0 && s->data[s->len - 1] == '\n') {
		s->data[--s->len] = '\0';
		if (s->len > 0 && s->data[s->len - 1] == '\r')
			s->data[--s->len] = '\0';
	}
}

size_t
secret_len(const struct secret *s)
{
	return s->len;
}

const char *
secret_reveal(const struct secret *s)
{
	return (const char *)s->data;
}

int
secret_equal(const struct secret *a, const struct secret *b)
{
	if (a->len != b->len)
		return 0;
	return CRYPTO_memcmp(a->data, b->data, a->len) == 0;
}

int
secret_occurs_in(const struct secret *s, const void *hay, size_t n)
{
	const unsigned char *h = hay;
	int found = 0;
	size_t i;

	if (s->len == 0 || n < s->len)
		return 0;
	for (i = 0; i + s->len <= n; i++)
		found |= CRYPTO_memcmp(h + i, s->data, s->len) == 0;
	return found;
}

void
secure_wipe(void *p, size_t n)
{
	if (p != NULL)
		OPENSSL_cleanse(p, n);
}

/* Allocations with a size prefix, so free can wipe what it releases. */
#define WIPE_HDR 16

void *
wiping_malloc(size_t n)
{
	unsigned char *p;

	if (n > SIZE_MAX - WIPE_HDR || (p = malloc(n + WIPE_HDR)) == NULL)
		return NULL;
	memcpy(p, &n, sizeof(n));
	return p + WIPE_HDR;
}

void
wiping_free(void *q)
{
	unsigned char *p;
	size_t n;

	if (q == NULL)
		return;
	p = (unsigned char *)q - WIPE_HDR;
	memcpy(&n, p, sizeof(n));
	OPENSSL_cleanse(p, n + WIPE_HDR);
	free(p);
}

void
secret_install_json_allocator(void)
{
	json_set_alloc_funcs(lockmem_malloc, lockmem_free);
}

/* ---- secrets from the environment ---- */

#define ENV_KEPT_MAX 32

static pthread_mutex_t env_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct {
	char name[128];
	struct secret *value;
} env_kept[ENV_KEPT_MAX];
static size_t env_nkept;

/* Under env_mtx: the kept entry for name, taking it from environ first. */
static int
env_find(const char *name)
{
	size_t i;
	char *v;

	for (i = 0; i < env_nkept; i++)
		if (strcmp(env_kept[i].name, name) == 0)
			break;
	if ((v = getenv(name)) == NULL)
		return i < env_nkept ? (int)i : -1;
	/* Set (again): the environment's value replaces a kept one. */
	if (i == ENV_KEPT_MAX || strlen(name) >= sizeof(env_kept[0].name))
		return -1;
	secret_free(env_kept[i].value);
	env_kept[i].value = NULL;
	if (*v != '\0' && (env_kept[i].value = secret_from_str(v)) == NULL)
		return -1;
	memcpy(env_kept[i].name, name, strlen(name) + 1);
	if (i == env_nkept)
		env_nkept++;
	/* In place first: the initial environment's bytes outlive unsetenv(). */
	OPENSSL_cleanse(v, strlen(v));
	unsetenv(name);
	return (int)i;
}

struct secret *
secret_env_take(const char *name)
{
	struct secret *s = NULL;
	int i;

	pthread_mutex_lock(&env_mtx);
	if ((i = env_find(name)) >= 0 && env_kept[i].value != NULL)
		s = secret_dup(env_kept[i].value);
	pthread_mutex_unlock(&env_mtx);
	return s;
}

int
secret_env_present(const char *name)
{
	int i, present;

	pthread_mutex_lock(&env_mtx);
	present = (i = env_find(name)) >= 0 && env_kept[i].value != NULL;
	pthread_mutex_unlock(&env_mtx);
	return present;
}

void
secret_env_forget(const char *name)
{
	size_t i;

	pthread_mutex_lock(&env_mtx);
	for (i = 0; i < env_nkept; i++)
		if (strcmp(env_kept[i].name, name) == 0) {
			secret_free(env_kept[i].value);
			env_kept[i].value = NULL;
		}
	pthread_mutex_unlock(&env_mtx);
}

void
secret_env_scrub(const char *const *names)
{
	for (; *names != NULL; names++)
		(void)secret_env_present(*names);
}

void
json_free_dump(void *p)
{
	json_malloc_t m;
	json_free_t f;

	if (p == NULL)
		return;
	json_get_alloc_funcs(&m, &f);
	f(p);
}
