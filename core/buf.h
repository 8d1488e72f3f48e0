/*
 * buf.h: a growable byte buffer with a size cap, for protocol data (HTTP
 * bodies, TDS packets, JSON text).
 *
 * Invariants:
 *  - data is NULL only while alloc == 0; otherwise data[len] == '\0', so the
 *    contents can always be read as a C string (len < alloc).
 *  - len never exceeds max; an append past max fails with DMK_ERR_TOOBIG and
 *    leaves the buffer unchanged.
 *  - Growing and freeing wipe the old storage: a response body that carried
 *    a secret leaves nothing behind in freed memory.
 *  - A buffer made with buf_init_locked() keeps its storage in locked,
 *    dump-excluded memory (core/lockmem.h): for bodies and headers that may
 *    carry a secret.
 */
#ifndef DMK_BUF_H
#define DMK_BUF_H

#include <stddef.h>
#include <stdarg.h>

struct buf {
	char *data;
	size_t len;
	size_t alloc;
	size_t max;
	int locked;       /* storage from lockmem_malloc */
};

#define BUF_DEFAULT_MAX (8u * 1024 * 1024)

void buf_init(struct buf *b, size_t max);   /* max 0 means BUF_DEFAULT_MAX */
void buf_init_locked(struct buf *b, size_t max);
void buf_free(struct buf *b);               /* wipe and release */
void buf_reset(struct buf *b);              /* wipe, keep the storage */
int buf_append(struct buf *b, const void *data, size_t len);
int buf_puts(struct buf *b, const char *s);
int buf_putc(struct buf *b, char c);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

#endif
