/*
 * wipefree.c: every free() in the process wipes what it releases.
 *
 * Our own code wipes secrets explicitly (struct secret, buf, Jansson's
 * allocator), but FreeTDS and libcurl copy a password or token into their
 * own buffers (RPC parameters, packet buffers, header lists) and free them
 * without wiping.  Interposing free() and realloc() in the executable covers
 * them too: glibc exports __libc_free/__libc_malloc for exactly this.
 * Sanitizer builds replace the allocator themselves, so this is left out
 * there (ASan poisons freed memory instead).
 */
#include <malloc.h>
#include <string.h>

#include "dmk.h"

#if defined(__has_feature)
# if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#  define DMK_NO_WIPEFREE 1
# endif
#endif
#if defined(__SANITIZE_ADDRESS__)
# define DMK_NO_WIPEFREE 1
#endif

#ifndef DMK_NO_WIPEFREE
extern void *__libc_malloc(size_t);
extern void __libc_free(void *);

void
free(void *p)
{
	if (p != NULL) {
		explicit_bzero(p, malloc_usable_size(p));
		__libc_free(p);
	}
}

void *
realloc(void *p, size_t n)
{
	void *q;
	size_t old;

	if (p == NULL)
		return __libc_malloc(n);
	if (n == 0) {
		free(p);
		return NULL;
	}
	old = malloc_usable_size(p);
	if (n <= old)
		return p;   /* shrinking in place keeps the bytes where they were */
	if ((q = __libc_malloc(n)) == NULL)
		return NULL;
	memcpy(q, p, old);
	free(p);
	return q;
}

int dmk_wipefree_active = 1;
#else
int dmk_wipefree_active = 0;
#endif
