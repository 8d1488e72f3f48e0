/* Fuzz target: a lease record read from the store (agent/lease.c).  A record
 * that parses has NUL-terminated, bounded, printable strings, and the
 * takeover decision on it is one of its two answers. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "agent/lease.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
sane(const char *s, size_t n)
{
	size_t len = strnlen(s, n), i;

	if (len == n)
		return 0;
	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20)
			return 0;
	return 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct lease_holder h;
	struct lease_ident me;
	struct lease_proc p;
	struct dmk_err e;
	char why[600];
	int d;

	if (lease_parse((const char *)data, size, "fuzz:lease", &h, &e) != 0) {
		if (e.code != DMK_ERR_PROTOCOL || strstr(e.msg, "fuzz:lease") == NULL)
			abort();
		return 0;
	}
	if (!sane(h.run, sizeof(h.run)) || !sane(h.id.host, sizeof(h.id.host)) ||
	    !sane(h.id.machine, sizeof(h.id.machine)) || !sane(h.id.boot, sizeof(h.id.boot)) ||
	    !sane(h.nonce, sizeof(h.nonce)) || !sane(h.base, sizeof(h.base)) ||
	    !sane(h.owner, sizeof(h.owner)) || !sane(h.expires_s, sizeof(h.expires_s)))
		abort();
	memset(&me, 0, sizeof(me));
	memcpy(me.host, h.id.host, sizeof(me.host));
	memcpy(me.machine, h.id.machine, sizeof(me.machine));
	memcpy(me.boot, h.id.boot, sizeof(me.boot));
	me.have_machine = me.have_boot = me.have_pidns = 1;
	me.pidns = h.id.pidns;
	me.boot_time = 1800000000;
	memset(&p, 0, sizeof(p));
	p.state = (int)(size % 3);
	p.have_start = 1;
	d = lease_decide(&h, "0123456789abcdef0123456789abcdef", &me, &p, 1700000000, why,
	    sizeof(why));
	if ((d != LEASE_TAKE && d != LEASE_WAIT) || strnlen(why, sizeof(why)) == sizeof(why))
		abort();
	return 0;
}
