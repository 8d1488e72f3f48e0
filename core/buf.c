/* buf.c: the size-capped buffer; see buf.h for its invariants. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "dmk.h"
#include "buf.h"
#include "lockmem.h"

void
buf_init(struct buf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max ? max : BUF_DEFAULT_MAX;
}

void
buf_init_locked(struct buf *b, size_t max)
{
	buf_init(b, max);
	b->locked = 1;
}

static void
release(struct buf *b, char *p)
{
	if (b->locked)
		lockmem_free(p);    /* wipes */
	else {
		OPENSSL_cleanse(p, b->alloc);
		free(p);
	}
}

void
buf_free(struct buf *b)
{
	if (b->data != NULL)
		release(b, b->data);
	b->data = NULL;
	b->len = b->alloc = 0;
}

void
buf_reset(struct buf *b)
{
	if (b->data != NULL) {
		OPENSSL_cleanse(b->data, b->alloc);
		b->data[0] = '\0';
	}
	b->len = 0;
}

static int
buf_reserve(struct buf *b, size_t extra)
{
	size_t need, nalloc;
	char *n;

	if (extra > b->max || b->len + extra > b->max)
		return DMK_ERR_TOOBIG;
	need = b->len + extra + 1;
	if (need <= b->alloc)
		return 0;
	nalloc = b->alloc ? b->alloc : 256;
	while (nalloc < need)
		nalloc *= 2;
	if ((n = b->locked ? lockmem_malloc(nalloc) : malloc(nalloc)) == NULL)
		return DMK_ERR_NOMEM;
	if (b->data != NULL) {
		memcpy(n, b->data, b->len);
		release(b, b->data);
	}
	b->data = n;
	b->alloc = nalloc;
	b->data[b->len] = '\0';
	return 0;
}

int
buf_append(struct buf *b, const void *data, size_t len)
{
	int r;

	if ((r = buf_reserve(b, len)) != 0)
		return r;
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
	return 0;
}

int
buf_puts(struct buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

int
buf_putc(struct buf *b, char c)
{
	return buf_append(b, &c, 1);
}

int
buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	int n, r;

	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return DMK_ERR_INTERNAL;
	if ((r = buf_reserve(b, (size_t)n)) != 0)
		return r;
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return 0;
}

int
buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = buf_vprintf(b, fmt, ap);
	va_end(ap);
	return r;
}
