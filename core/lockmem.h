/*
 * lockmem.h: memory for data in transit that may carry a secret (HTTP
 * bodies, Authorization headers, Jansson trees of a response), kept like
 * the secret type keeps a password.
 *
 * Invariants:
 *  - Every block comes from an anonymous mapping excluded from core dumps
 *    (MADV_DONTDUMP) and locked in memory where the system allows it (one
 *    warning when it cannot): a shared arena of ARENA bytes for blocks up to
 *    64 KiB, a mapping of its own for a larger block.
 *  - lockmem_free() wipes every byte of the block (OPENSSL_cleanse) before
 *    it is reused or unmapped.
 *  - When the arena is exhausted (or a mapping cannot be made), the block
 *    comes from the ordinary heap instead, still wiped on free, and
 *    lockmem_stats() counts it in fallbacks: never a failure for that alone.
 *  - Thread-safe: one mutex guards the arena and the counters.
 *  - lockmem_free() takes only what lockmem_malloc() returned (or NULL).
 */
#ifndef DMK_LOCKMEM_H
#define DMK_LOCKMEM_H

#include <stddef.h>

struct lockmem_stats {
	size_t arena_size;    /* bytes reserved for the arena */
	size_t arena_used;    /* bytes of it handed out at least once */
	size_t in_use;        /* bytes in live blocks (all kinds) */
	size_t large;         /* live blocks with a mapping of their own */
	size_t fallbacks;     /* blocks that came from the ordinary heap */
	int locked;           /* 1 while every locked page could be locked */
};

void *lockmem_malloc(size_t n);
void lockmem_free(void *p);
/* Grow or shrink: a new block, the old one copied and wiped. */
void *lockmem_realloc(void *p, size_t n);
void lockmem_get_stats(struct lockmem_stats *st);
/* Only for tests: the arena's size (before its first use). */
void lockmem_set_arena_size(size_t n);

#endif
