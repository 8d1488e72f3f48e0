/*
 * lockmem.c: locked, dump-excluded, wiped memory; see lockmem.h.
 *
 * The arena is one mapping reserved on first use; blocks are cut from its
 * top in power-of-two classes (32 B .. 64 KiB) and kept on a free list per
 * class when released, so a block is reused only at its own size and the
 * arena never needs compacting.  Pages are locked as the top first reaches
 * them, so the arena's size costs nothing until it is used.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "dmk.h"
#include "lockmem.h"

#define HDR 16                      /* keeps blocks 16-byte aligned */
#define NCLASS 12                   /* 32 << 0 .. 32 << 11 = 64 KiB */
#define CLASS_MIN 32
#define M_ARENA 0x6c6b6d61u         /* "amkl" */
#define M_LARGE 0x6c6b6d6cu
#define M_HEAP 0x6c6b6d68u

struct hdr {
	uint32_t magic;
	uint32_t cls;                   /* class index (arena blocks) */
	size_t size;                    /* usable bytes after the header */
};

static pthread_mutex_t mtx = PTHREAD_MUTEX_INITIALIZER;
static unsigned char *arena;        /* NULL until first use; MAP_FAILED: none */
static size_t arena_size = 16u * 1024 * 1024;
static size_t top;                  /* bytes handed out from the arena */
static size_t locked_to;            /* bytes locked from its start */
static int lock_failed;
static void *freelist[NCLASS];
static struct lockmem_stats stats;

static size_t
pagesz(void)
{
	static size_t pg;

	if (pg == 0)
		pg = (size_t)sysconf(_SC_PAGESIZE);
	return pg;
}

static void
note_lock_failure(void)
{
	if (!lock_failed) {
		lock_failed = 1;
		log_warn("cannot lock memory for data in transit (RLIMIT_MEMLOCK?); it may be "
		    "swapped, but is still excluded from core dumps and wiped");
	}
}

static void *
map_locked(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS |
	    MAP_NORESERVE, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
#ifdef MADV_DONTDUMP
	(void)madvise(p, len, MADV_DONTDUMP);
#endif
	return p;
}

void
lockmem_set_arena_size(size_t n)
{
	pthread_mutex_lock(&mtx);
	if (arena == NULL)
		arena_size = n;
	pthread_mutex_unlock(&mtx);
}

/* Under mtx. */
static void *
arena_take(unsigned cls)
{
	size_t bsize = HDR + ((size_t)CLASS_MIN << cls);
	struct hdr *h;
	void *p;

	if ((p = freelist[cls]) != NULL) {
		memcpy(&freelist[cls], p, sizeof(void *));
		memset(p, 0, sizeof(void *));
		return p;
	}
	if (arena == NULL) {
		arena = map_locked(arena_size);
		if (arena == NULL)
			arena = MAP_FAILED;
		else
			stats.arena_size = arena_size;
	}
	if (arena == MAP_FAILED || arena_size - top < bsize)
		return NULL;
	h = (struct hdr *)(arena + top);
	top += bsize;
	stats.arena_used = top;
	if (top > locked_to && !lock_failed) {
		size_t to = (top + pagesz() - 1) / pagesz() * pagesz();
		if (to > arena_size)
			to = arena_size;
		if (mlock(arena + locked_to, to - locked_to) == 0)
			locked_to = to;
		else
			note_lock_failure();
	}
	h->magic = M_ARENA;
	h->cls = cls;
	h->size = (size_t)CLASS_MIN << cls;
	return (unsigned char *)h + HDR;
}

void *
lockmem_malloc(size_t n)
{
	struct hdr *h;
	unsigned cls;
	void *p;

	if (n == 0)
		n = 1;
	if (n > SIZE_MAX / 2 - HDR - 4096)
		return NULL;
	for (cls = 0; cls < NCLASS && ((size_t)CLASS_MIN << cls) < n; cls++)
		;
	if (cls < NCLASS) {
		pthread_mutex_lock(&mtx);
		if ((p = arena_take(cls)) != NULL) {
			stats.in_use += (size_t)CLASS_MIN << cls;
			pthread_mutex_unlock(&mtx);
			return p;
		}
		pthread_mutex_unlock(&mtx);
	} else {
		size_t len = (n + HDR + pagesz() - 1) / pagesz() * pagesz();
		if ((h = map_locked(len)) != NULL) {
			if (mlock(h, len) != 0) {
				pthread_mutex_lock(&mtx);
				note_lock_failure();
				pthread_mutex_unlock(&mtx);
			}
			h->magic = M_LARGE;
			h->cls = 0;
			h->size = len - HDR;
			pthread_mutex_lock(&mtx);
			stats.in_use += h->size;
			stats.large++;
			pthread_mutex_unlock(&mtx);
			return (unsigned char *)h + HDR;
		}
	}
	/* The arena is full (or no mapping): the heap, still wiped on free. */
	if ((h = malloc(n + HDR)) == NULL)
		return NULL;
	h->magic = M_HEAP;
	h->cls = 0;
	h->size = n;
	pthread_mutex_lock(&mtx);
	stats.fallbacks++;
	stats.in_use += n;
	pthread_mutex_unlock(&mtx);
	return (unsigned char *)h + HDR;
}

void
lockmem_free(void *p)
{
	struct hdr *h;
	size_t size;

	if (p == NULL)
		return;
	h = (struct hdr *)((unsigned char *)p - HDR);
	size = h->size;
	OPENSSL_cleanse(p, size);
	switch (h->magic) {
	case M_ARENA:
		pthread_mutex_lock(&mtx);
		memcpy(p, &freelist[h->cls], sizeof(void *));
		freelist[h->cls] = p;
		stats.in_use -= size;
		pthread_mutex_unlock(&mtx);
		break;
	case M_LARGE:
		pthread_mutex_lock(&mtx);
		stats.in_use -= size;
		stats.large--;
		pthread_mutex_unlock(&mtx);
		munlock(h, size + HDR);
		munmap(h, size + HDR);
		break;
	case M_HEAP:
		pthread_mutex_lock(&mtx);
		stats.in_use -= size;
		pthread_mutex_unlock(&mtx);
		OPENSSL_cleanse(h, HDR);
		free(h);
		break;
	default:
		abort();    /* not ours: a bug that must not go on silently */
	}
}

void *
lockmem_realloc(void *p, size_t n)
{
	struct hdr *h;
	void *q;

	if (p == NULL)
		return lockmem_malloc(n);
	h = (struct hdr *)((unsigned char *)p - HDR);
	if (n <= h->size)
		return p;
	if ((q = lockmem_malloc(n)) == NULL)
		return NULL;
	memcpy(q, p, h->size < n ? h->size : n);
	lockmem_free(p);
	return q;
}

void
lockmem_get_stats(struct lockmem_stats *st)
{
	pthread_mutex_lock(&mtx);
	*st = stats;
	st->locked = !lock_failed;
	pthread_mutex_unlock(&mtx);
}
