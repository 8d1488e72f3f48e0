/*
 * conv.h: a scripted HTTP conversation from fuzz bytes, for the provider
 * targets (fuzz_hcvault_http, fuzz_azkv_http).  Header-only: each target
 * includes it once.
 *
 * Input: byte 0 picks the store configuration, byte 1 the operations (one
 * bit each), byte 2 is ignored (a newline in the seeds).  Then the answers
 * the replay transport gives, in order, separated by lines "%%":
 *
 *     STATUS
 *     Header: value
 *     ...
 *     (empty line)
 *     body
 *
 * A STATUS that is not a number is a failed connection (status 0).  When
 * the answers run out, every further request fails to connect.
 */
#ifndef FUZZ_CONV_H
#define FUZZ_CONV_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "providers/http.h"

#define CONV_MAX 48

struct conv {
	unsigned cfg, ops;
	struct http_replay_entry e[CONV_MAX];
	char *mem[3 * CONV_MAX];   /* status, headers, body */
	size_t n, nmem;
	struct http_replay rp;
};

static char *
conv_dup(struct conv *c, const char *p, size_t n)
{
	char *d = malloc(n + 1);

	if (d == NULL)
		return NULL;
	memcpy(d, p, n);
	d[n] = '\0';
	c->mem[c->nmem++] = d;
	return d;
}

/* One answer from [p, end). */
static int
conv_entry(struct conv *c, const char *p, const char *end)
{
	struct http_replay_entry *e = &c->e[c->n];
	const char *nl, *hs, *he = NULL;
	char *status;
	long s;

	nl = memchr(p, '\n', (size_t)(end - p));
	if (nl == NULL)
		nl = end;
	if ((status = conv_dup(c, p, (size_t)(nl - p))) == NULL)
		return -1;
	s = strtol(status, NULL, 10);
	e->status = s > 0 && s < 1000 ? s : 0;
	hs = nl < end ? nl + 1 : end;
	/* headers end at an empty line */
	for (p = hs; p < end; ) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (nl == NULL)
			nl = end;
		if (nl == p) {
			he = p;
			break;
		}
		p = nl < end ? nl + 1 : end;
	}
	if (he == NULL) {
		if ((e->headers = conv_dup(c, hs, (size_t)(end - hs))) == NULL)
			return -1;
		e->body = "";
	} else {
		if ((e->headers = conv_dup(c, hs, (size_t)(he - hs))) == NULL)
			return -1;
		p = he + 1 <= end ? he + 1 : end;
		if ((e->body = conv_dup(c, p, (size_t)(end - p))) == NULL)
			return -1;
	}
	c->n++;
	return 0;
}

/* 0, or -1 when the input is too short or memory ran out. */
static int
conv_parse(struct conv *c, const uint8_t *data, size_t size)
{
	const char *p, *end, *q, *sep;

	memset(c, 0, sizeof(*c));
	if (size < 3)
		return -1;
	c->cfg = data[0];
	c->ops = data[1];
	p = (const char *)data + 3;
	end = (const char *)data + size;
	while (p < end && c->n < CONV_MAX) {
		sep = NULL;
		for (q = p; q + 3 <= end; q++)
			if (q[0] == '\n' && q[1] == '%' && q[2] == '%' && (q + 3 == end || q[3] == '\n')) {
				sep = q;
				break;
			}
		if (conv_entry(c, p, sep ? sep : end) != 0)
			return -1;
		if (sep == NULL)
			break;
		p = sep + 3 < end ? sep + 4 : end;
	}
	c->rp.entries = c->e;
	c->rp.n = c->n;
	return 0;
}

static void
conv_free(struct conv *c)
{
	size_t i;

	http_replay_free(&c->rp);
	for (i = 0; i < c->nmem; i++)
		free(c->mem[i]);
	c->nmem = 0;
}

#endif
