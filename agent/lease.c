/* lease.c: the per-database rotation lease in the store; see lease.h. */
#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <jansson.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "lease.h"

/* A name component safe in both stores' paths: [A-Za-z0-9-], others '-'. */
static void
path_part(char *dst, size_t n, const char *src)
{
	size_t i;

	for (i = 0; i + 1 < n && src[i] != '\0'; i++) {
		unsigned char c = (unsigned char)src[i];
		dst[i] = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
		    (c >= 'A' && c <= 'Z') || c == '-' ? (char)c : '-';
	}
	dst[i] = '\0';
}

/* Where the lease lives: a path beside the store's other secrets, by the
 * store's own naming rules (its table row): hierarchical paths get
 * dmkagent/leases/AG/DB, flat names (Azure secret names) dmkagent-lease-AG-DB. */
static int
lease_ref(const struct store *st, const struct secret_ref *near, const char *ag,
    const char *db, struct secret_ref *out, struct dmk_err *err)
{
	char a2[200], d2[200];

	memset(out, 0, sizeof(*out));
	out->kind = REF_STORE;
	util_strlcpy(out->store, near->store, sizeof(out->store));
	path_part(a2, sizeof(a2), ag);
	path_part(d2, sizeof(d2), db != NULL ? db : "");
	if (db == NULL && !st->ops->flat_names)   /* the AG's own (lease_take_ag) */
		snprintf(out->path, sizeof(out->path), "dmkagent/ag-leases/%s", a2);
	else if (db == NULL)
		snprintf(out->path, sizeof(out->path), "dmkagent-aglease-%s", a2);
	else if (!st->ops->flat_names)
		snprintf(out->path, sizeof(out->path), "dmkagent/leases/%s/%s", a2, d2);
	else
		snprintf(out->path, sizeof(out->path), "dmkagent-lease-%s-%s", a2, d2);
	if (strlen(out->path) > st->ops->name_max || strlen(out->path) >= sizeof(out->path) - 1)
		return dmk_errf(err, DMK_ERR_CONFIG, "lease name for %s/%s is too long", ag,
		    db != NULL ? db : "(AG)");
	if (near->field[0])
		util_strlcpy(out->field, "lease", sizeof(out->field));
	snprintf(out->text, sizeof(out->text), "%s:%s%s%s", out->store, out->path,
	    out->field[0] ? "#" : "", out->field);
	return 0;
}

/* ---- who we are, who holds it ---- */

/* The first line of a small file, when it is made only of allowed chars. */
static int
read_token(const char *path, char *out, size_t n, size_t minlen, const char *allowed)
{
	char b[128];
	size_t len;
	FILE *f;

	if ((f = fopen(path, "re")) == NULL)
		return -1;
	len = fread(b, 1, sizeof(b) - 1, f);
	fclose(f);
	b[len] = '\0';
	len = strcspn(b, "\n");
	b[len] = '\0';
	if (len < minlen || len >= n || strspn(b, allowed) != len)
		return -1;
	memcpy(out, b, len + 1);
	return 0;
}

/* Is the /proc we see that of our own PID namespace?  (unshare --pid
 * without a new /proc mount: /proc/PID would be another process.) */
static int
proc_is_ours(void)
{
	char b[32];
	ssize_t n = readlink("/proc/self", b, sizeof(b) - 1);

	if (n <= 0)
		return 0;
	b[n] = '\0';
	return strtoll(b, NULL, 10) == (long long)getpid();
}

/* Field 22 of /proc/PID/stat (starttime): 0, or -1 with errno. */
static int
proc_start(long long pid, unsigned long long *start)
{
	char path[64], b[1024], *p, *end;
	size_t len;
	FILE *f;
	int i;

	snprintf(path, sizeof(path), "/proc/%lld/stat", pid);
	if ((f = fopen(path, "re")) == NULL)
		return -1;
	len = fread(b, 1, sizeof(b) - 1, f);
	fclose(f);
	b[len] = '\0';
	/* comm may hold spaces and parentheses: fields count from the last ')'. */
	if ((p = strrchr(b, ')')) == NULL) {
		errno = EINVAL;
		return -1;
	}
	p++;
	for (i = 3; i < 22; i++) {
		while (*p == ' ')
			p++;
		if ((p = strchr(p, ' ')) == NULL) {
			errno = EINVAL;
			return -1;
		}
	}
	errno = 0;
	*start = strtoull(p, &end, 10);
	if (errno != 0 || end == p) {
		errno = EINVAL;
		return -1;
	}
	return 0;
}

void
lease_self(struct lease_ident *me)
{
	static const char hex[] = "0123456789abcdef";
	char b[256];
	struct stat sb;
	FILE *f;

	memset(me, 0, sizeof(*me));
	if (gethostname(me->host, sizeof(me->host)) != 0)
		util_strlcpy(me->host, "?", sizeof(me->host));
	me->host[sizeof(me->host) - 1] = '\0';
	me->pid = (long long)getpid();
	me->have_machine = read_token("/etc/machine-id", me->machine, sizeof(me->machine),
	    32, hex) == 0 || read_token("/var/lib/dbus/machine-id", me->machine,
	    sizeof(me->machine), 32, hex) == 0;
	me->have_boot = read_token("/proc/sys/kernel/random/boot_id", me->boot,
	    sizeof(me->boot), 32, "0123456789abcdef-") == 0;
	if (stat("/proc/self/ns/pid", &sb) == 0 && sb.st_ino != 0) {
		me->pidns = (unsigned long long)sb.st_ino;
		me->have_pidns = 1;
	}
	if (proc_is_ours() && proc_start(me->pid, &me->start) == 0)
		me->have_start = 1;
	if ((f = fopen("/proc/stat", "re")) != NULL) {
		long long bt;
		while (fgets(b, sizeof(b), f) != NULL)
			if (sscanf(b, "btime %lld", &bt) == 1 && bt > 0) {
				me->boot_time = (time_t)bt;
				break;
			}
		fclose(f);
	}
}

void
lease_proc_of(long long pid, struct lease_proc *p)
{
	memset(p, 0, sizeof(*p));
	p->state = LEASE_PROC_UNKNOWN;
	if (pid <= 0 || pid > 0x7fffffffLL || !proc_is_ours())
		return;
	if (proc_start(pid, &p->start) == 0) {
		p->state = LEASE_PROC_ALIVE;
		p->have_start = 1;
		return;
	}
	if (errno != ENOENT)
		return;
	/* hidepid hides other users' processes from /proc: ask the kernel too. */
	if (kill((pid_t)pid, 0) == -1 && errno == ESRCH)
		p->state = LEASE_PROC_GONE;
	else
		p->state = LEASE_PROC_ALIVE;
}

/* ---- the record ---- */

/* An optional string field: absent 0 (out ""), present and sane 0, else -1. */
static int
field_str(json_t *o, const char *key, char *out, size_t n, int required)
{
	json_t *v = json_object_get(o, key);
	const char *s;
	size_t len, i;

	out[0] = '\0';
	if (v == NULL)
		return required ? -1 : 0;
	if (!json_is_string(v))
		return -1;
	s = json_string_value(v);
	len = json_string_length(v);
	if (len >= n || strlen(s) != len)
		return -1;
	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return -1;
	memcpy(out, s, len + 1);
	return 0;
}

/* An optional integer field in [lo, hi]: absent 0 (*have 0), else -1. */
static int
field_int(json_t *o, const char *key, long long lo, long long hi, long long *out, int *have)
{
	json_t *v = json_object_get(o, key);

	*have = 0;
	if (v == NULL)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
		return -1;
	*out = json_integer_value(v);
	*have = 1;
	return 0;
}

int
lease_parse(const char *text, size_t len, const char *ref, struct lease_holder *h,
    struct dmk_err *err)
{
	static const char *const bad_names[] = { "state", "run", "owner", "host", "command",
	    "expires", "taken", "machine_id", "boot_id", "nonce", "base", "pid", "pidns",
	    "start", "seq" };
	char st[16], taken[40];
	long long v = 0;
	json_t *o;
	int have, bad = -1;

	memset(h, 0, sizeof(*h));
	h->seq = -1;
	if (len > 8192)
		return dmk_errf(err, DMK_ERR_PROTOCOL, "lease %s: a record of %zu bytes is not a "
		    "lease record", ref, len);
	o = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(o)) {
		json_decref(o);
		return dmk_errf(err, DMK_ERR_PROTOCOL, "lease %s: not a lease record (not a JSON "
		    "object)", ref);
	}
	if (field_str(o, "state", st, sizeof(st), 1) != 0 ||
	    (strcmp(st, "held") != 0 && strcmp(st, "released") != 0))
		bad = 0;
	else if (field_str(o, "run", h->run, sizeof(h->run), 0) != 0)
		bad = 1;
	else if (field_str(o, "owner", h->owner, sizeof(h->owner), 0) != 0)
		bad = 2;
	else if (field_str(o, "host", h->id.host, sizeof(h->id.host), 0) != 0)
		bad = 3;
	else if (field_str(o, "command", h->command, sizeof(h->command), 0) != 0)
		bad = 4;
	else if (field_str(o, "expires", h->expires_s, sizeof(h->expires_s), 0) != 0 ||
	    (h->expires_s[0] && util_parse_rfc3339(h->expires_s, &h->expires) != 0))
		bad = 5;
	else if (field_str(o, "taken", taken, sizeof(taken), 0) != 0 ||
	    (taken[0] && util_parse_rfc3339(taken, &h->taken) != 0))
		bad = 6;
	else if (field_str(o, "machine_id", h->id.machine, sizeof(h->id.machine), 0) != 0)
		bad = 7;
	else if (field_str(o, "boot_id", h->id.boot, sizeof(h->id.boot), 0) != 0)
		bad = 8;
	else if (field_str(o, "nonce", h->nonce, sizeof(h->nonce), 0) != 0)
		bad = 9;
	else if (field_str(o, "base", h->base, sizeof(h->base), 0) != 0)
		bad = 10;
	else if (field_int(o, "pid", 1, 0x7fffffffLL, &h->id.pid, &have) != 0)
		bad = 11;
	else if (field_int(o, "pidns", 1, 0x7fffffffffffffffLL, &v, &h->id.have_pidns) != 0)
		bad = 12;
	else {
		h->id.pidns = (unsigned long long)v;
		if (field_int(o, "start", 0, 0x7fffffffffffffffLL, &v, &h->id.have_start) != 0)
			bad = 13;
		else {
			h->id.start = (unsigned long long)v;
			if (field_int(o, "seq", 0, 0x7fffffffffffffffLL, &h->seq, &have) != 0)
				bad = 14;
			else if (!have)
				h->seq = -1;
		}
	}
	json_decref(o);
	if (bad >= 0)
		return dmk_errf(err, DMK_ERR_PROTOCOL, "lease %s: not a lease record (field %s "
		    "missing, of the wrong type, or out of range)", ref, bad_names[bad]);
	h->held = strcmp(st, "held") == 0;
	if (h->held && h->expires_s[0] == '\0')
		return dmk_errf(err, DMK_ERR_PROTOCOL, "lease %s: not a lease record (held, "
		    "with no expires)", ref);
	h->id.have_machine = h->id.machine[0] != '\0';
	h->id.have_boot = h->id.boot[0] != '\0';
	return 0;
}

static void
describe(const struct lease_holder *h, char *why, size_t wl)
{
	if (!h->held)
		snprintf(why, wl, "released by %s@%s pid %lld (run %s)", h->owner[0] ? h->owner :
		    "?", h->id.host[0] ? h->id.host : "?", h->id.pid, h->run[0] ? h->run : "?");
	else
		snprintf(why, wl, "held by %s@%s pid %lld (run %s) until %s", h->owner[0] ?
		    h->owner : "?", h->id.host[0] ? h->id.host : "?", h->id.pid, h->run[0] ?
		    h->run : "?", h->expires_s);
}

int
lease_decide(const struct lease_holder *h, const char *my_run,
    const struct lease_ident *me, const struct lease_proc *proc, time_t now,
    char *why, size_t wl)
{
	char who[400];
	const char *wait = NULL;
	int same_machine, same_boot;

	describe(h, who, sizeof(who));
	if (!h->held) {
		snprintf(why, wl, "%s", who);
		return LEASE_TAKE;
	}
	if (my_run != NULL && h->run[0] && strcmp(h->run, my_run) == 0) {
		snprintf(why, wl, "this run's own record");
		return LEASE_TAKE;
	}
	if (h->expires <= now) {
		snprintf(why, wl, "%s: expired", who);
		return LEASE_TAKE;
	}
	/* Before its expiry only a proof of death: each step below that
	 * cannot be proven means wait.  One machine is one machine id, or one
	 * running kernel: the same boot id (128 random bits a boot) is the same
	 * kernel, whatever /etc/machine-id says or lacks (a chroot, a minimal
	 * container); the PID namespace check below then makes the pid exact. */
	same_machine = h->id.have_machine && me->have_machine &&
	    strcmp(h->id.machine, me->machine) == 0;
	same_boot = h->id.have_boot && me->have_boot && strcmp(h->id.boot, me->boot) == 0;
	if (!same_machine && !same_boot)
		wait = "another machine, or one that cannot be told apart";
	else if (strcmp(h->id.host, me->host) != 0)
		wait = "another host name";
	else if (!h->id.have_boot || !me->have_boot)
		wait = "its boot cannot be told";
	else if (strcmp(h->id.boot, me->boot) != 0) {
		/* A holder of a previous boot of this machine wrote its record
		 * before this boot began; a record written since is a clone's. */
		if (h->taken != 0 && me->boot_time != 0 && h->taken + 5 < me->boot_time) {
			snprintf(why, wl, "%s: this machine rebooted since", who);
			return LEASE_TAKE;
		}
		wait = "same machine id, another boot, written since this boot (a cloned machine?)";
	} else if (!h->id.have_pidns || !me->have_pidns || h->id.pidns != me->pidns)
		wait = "another PID namespace, or one that cannot be told";
	else if (h->id.pid <= 0)
		wait = "no pid";
	else if (proc->state == LEASE_PROC_GONE) {
		snprintf(why, wl, "%s: no process %lld in this PID namespace", who, h->id.pid);
		return LEASE_TAKE;
	} else if (proc->state == LEASE_PROC_ALIVE && proc->have_start && h->id.have_start &&
	    proc->start != h->id.start) {
		snprintf(why, wl, "%s: pid %lld is another process now (start time %llu, not %llu)",
		    who, h->id.pid, proc->start, h->id.start);
		return LEASE_TAKE;
	} else if (proc->state == LEASE_PROC_ALIVE && proc->have_start && h->id.have_start)
		wait = "alive";
	else
		wait = "cannot tell whether it is alive";
	snprintf(why, wl, "%s (%s)", who, wait);
	return LEASE_WAIT;
}

static struct secret *
record(struct agent *a, struct lease *l, const char *state, time_t expires, const char *base)
{
	struct lease_ident me;
	struct passwd *pw = getpwuid(geteuid());
	char t[32], e[32];
	struct secret *s;
	json_t *o;
	char *txt;
	int bad;

	lease_self(&me);
	util_rfc3339(time(NULL), t, sizeof(t));
	util_rfc3339(expires, e, sizeof(e));
	o = json_pack("{s:s,s:s,s:s,s:I,s:s,s:s,s:s,s:s,s:s,s:I,s:s}", "state", state, "owner",
	    pw && pw->pw_name ? pw->pw_name : "?", "host", me.host, "pid", (json_int_t)me.pid,
	    "run", a->run_id, "command", l->command, "taken", t, "expires", e,
	    "nonce", l->nonce, "seq", (json_int_t)l->seq, "base", base ? base : "");
	if (o == NULL)
		return NULL;
	bad = (me.have_machine && json_object_set_new(o, "machine_id",
	    json_string(me.machine)) != 0) ||
	    (me.have_boot && json_object_set_new(o, "boot_id", json_string(me.boot)) != 0) ||
	    (me.have_pidns && me.pidns <= 0x7fffffffffffffffULL && json_object_set_new(o,
	    "pidns", json_integer((json_int_t)me.pidns)) != 0) ||
	    (me.have_start && me.start <= 0x7fffffffffffffffULL && json_object_set_new(o,
	    "start", json_integer((json_int_t)me.start)) != 0);
	txt = bad ? NULL : json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	if (txt == NULL)
		return NULL;
	s = secret_from_str(txt);
	json_free_dump(txt);
	return s;
}

/* ---- stores without check-and-set: the claims counted ---- */

#define LEASE_SCAN 12     /* newest versions read to count claims */

struct claim {
	struct prov_version v;
	struct lease_holder h;
};

static int
claim_cmp_created(const void *x, const void *y)
{
	const struct prov_version *a = x, *b = y;

	/* newest first; the same second: by version id, only to be deterministic */
	if (a->created != b->created)
		return a->created < b->created ? 1 : -1;
	return strcmp(b->id, a->id);
}

/* The newest LEASE_SCAN lease records created at or after since (0: any),
 * parsed (garbled ones left out). */
static int
scan_claims(struct lease *l, time_t since, struct claim *c, size_t *nc, struct dmk_err *err)
{
	struct prov_version *vs = NULL;
	struct secret *s;
	struct dmk_err e2;
	size_t n = 0, i;
	int r;

	*nc = 0;
	if ((r = store_list_versions(l->st, &l->ref, &vs, &n, err)) != 0)
		return dmk_err_prefix(err, "lease %s: listing its versions", l->ref.text);
	qsort(vs, n, sizeof(*vs), claim_cmp_created);
	for (i = 0; i < n && *nc < LEASE_SCAN; i++) {
		if (vs[i].deleted || vs[i].destroyed || vs[i].disabled)
			continue;
		if (since != 0 && vs[i].created != 0 && vs[i].created < since)
			break;    /* newest first: the rest are older still */
		s = NULL;
		if ((r = store_get(l->st, &l->ref, vs[i].id, &s, NULL, err)) != 0) {
			free(vs);
			return dmk_err_prefix(err, "lease %s version %s", l->ref.text, vs[i].id);
		}
		memset(&c[*nc], 0, sizeof(c[*nc]));
		if (lease_parse(secret_reveal(s), secret_len(s), l->ref.text, &c[*nc].h, &e2) == 0 &&
		    c[*nc].h.nonce[0] != '\0' && c[*nc].h.seq >= 0) {
			c[*nc].v = vs[i];
			(*nc)++;
		}
		secret_free(s);
	}
	free(vs);
	return 0;
}

/* Of the claims (seq 0) on base, the winner: the earliest created, then
 * the smallest nonce.  NULL when none is among those read. */
static const struct claim *
contest(const struct claim *c, size_t nc, const char *base)
{
	const struct claim *w = NULL;
	size_t i;

	for (i = 0; i < nc; i++) {
		if (c[i].h.seq != 0 || strcmp(c[i].h.base, base) != 0)
			continue;
		if (w == NULL || c[i].v.created < w->v.created || (c[i].v.created ==
		    w->v.created && strcmp(c[i].h.nonce, w->h.nonce) < 0))
			w = &c[i];
	}
	return w;
}

/* The newest record of a claim's run (its highest seq). */
static const struct claim *
latest_of(const struct claim *c, size_t nc, const char *nonce)
{
	const struct claim *w = NULL;
	size_t i;

	for (i = 0; i < nc; i++)
		if (strcmp(c[i].h.nonce, nonce) == 0 && (w == NULL || c[i].h.seq > w->h.seq))
			w = &c[i];
	return w;
}

/*
 * Who holds the lease, given the current record cur of version curv: with
 * check-and-set, cur itself.  Without, cur may be a claim that lost (or
 * came late to) a contest: the holder is the newest record of the claim
 * that won on cur's base.
 */
static int
effective(struct lease *l, time_t since, const struct lease_holder *cur, const char *curv,
    struct lease_holder *out, char *outv, size_t ovl, struct dmk_err *err)
{
	struct claim *c;
	const struct claim *mine, *w, *last;
	size_t nc, i;
	int r, iter;

	*out = *cur;
	util_strlcpy(outv, curv, ovl);
	if ((l->st->ops->lease == PROV_LEASE_CAS) || cur->nonce[0] == '\0' || cur->seq < 0)
		return 0;
	if ((c = calloc(LEASE_SCAN, sizeof(*c))) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	if ((r = scan_claims(l, since, c, &nc, err)) != 0)
		goto out;
	/* The claim that began cur's run, and the contest it was part of. */
	if ((mine = contest(c, nc, cur->base)) == NULL || cur->seq != 0) {
		mine = NULL;
		for (i = 0; i < nc; i++)
			if (strcmp(c[i].h.nonce, cur->nonce) == 0 && c[i].h.seq == 0)
				mine = &c[i];
		if (mine == NULL)
			goto out;    /* its claim is older than what was read: long settled */
	}
	if ((w = contest(c, nc, mine->h.base)) == NULL)
		goto out;
	/* A claim on one of the winner's versions (it released, expired or
	 * died then) carries the lease on; bounded against a hostile cycle. */
	for (iter = 0; iter < LEASE_SCAN; iter++) {
		const struct claim *next = NULL, *cw;
		for (i = 0; i < nc; i++)
			if (strcmp(c[i].h.nonce, w->h.nonce) == 0 &&
			    (cw = contest(c, nc, c[i].v.id)) != NULL &&
			    strcmp(cw->h.nonce, w->h.nonce) != 0 && (next == NULL ||
			    cw->v.created < next->v.created))
				next = cw;
		if (next == NULL)
			break;
		w = next;
	}
	if ((last = latest_of(c, nc, w->h.nonce)) == NULL)
		goto out;
	*out = last->h;
	util_strlcpy(outv, last->v.id, ovl);
out:
	free(c);
	return r;
}

/* ---- taking, keeping, releasing ---- */

/* The current record and who holds it.  1: none there (or deleted).  since:
 * claims older than that need not be read (0: read the newest LEASE_SCAN). */
static int
read_lease(struct lease *l, time_t since, struct lease_holder *h, char *hv, size_t hvl,
    struct prov_version *ver, struct dmk_err *err)
{
	struct secret *cur = NULL;
	struct lease_holder raw;
	int r;

	memset(ver, 0, sizeof(*ver));
	r = store_get(l->st, &l->ref, NULL, &cur, ver, err);
	if (r == DMK_ERR_NOTFOUND || r == DMK_ERR_DELETED) {
		dmk_err_clear(err);
		return 1;
	}
	if (r != 0)
		return dmk_err_prefix(err, "lease %s", l->ref.text);
	r = lease_parse(secret_reveal(cur), secret_len(cur), l->ref.text, &raw, err);
	secret_free(cur);
	if (r != 0)
		return r;
	return effective(l, since, &raw, ver->id, h, hv, hvl, err);
}

static int
try_take(struct agent *a, struct lease *l, char *why, size_t wl, struct dmk_err *err)
{
	struct secret *rec = NULL;
	struct prov_version ver, nv;
	struct lease_holder h;
	struct lease_ident me;
	struct lease_proc proc;
	char hv[80];
	const char *expect;
	int r, existed, cas = (l->st->ops->lease == PROV_LEASE_CAS) != 0;

	r = read_lease(l, 0, &h, hv, sizeof(hv), &ver, err);
	if (r < 0) {
		if (r == DMK_ERR_PROTOCOL)
			dmk_err_prefix(err, "delete the lease record (no rotation runs while it is "
			    "there) or wait until it is rewritten");
		return r;
	}
	existed = r != 1;
	if (r == 1)
		expect = ver.deleted && ver.id[0] ? ver.id : "0";
	else {
		lease_self(&me);
		lease_proc_of(h.id.pid, &proc);
		if (lease_decide(&h, a->run_id, &me, &proc, time(NULL), why, wl) != LEASE_TAKE)
			return DMK_ERR_LOCKED;
		if (h.held && strcmp(h.run, a->run_id) != 0)
			log_info("taking over lease %s: %s", l->ref.text, why);
		expect = ver.id;
	}
	if (util_random_id(l->nonce, sizeof(l->nonce)) != 0)
		return dmk_errf(err, DMK_ERR_INTERNAL, "no random nonce");
	l->seq = 0;
	l->written_ms = util_now_ms();
	if ((rec = record(a, l, "held", time(NULL) + a->cfg->lease_ttl, ver.id)) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	memset(&nv, 0, sizeof(nv));
	/* Without check-and-set every contender writes its claim; the count
	 * after LEASE_SETTLE_MS decides. */
	r = store_put(l->st, &l->ref, rec, cas ? expect : NULL, NULL, &nv, err);
	secret_free(rec);
	if (r == DMK_ERR_CONFLICT) {
		snprintf(why, wl, "another agent took it at the same moment");
		return DMK_ERR_LOCKED;
	}
	if (r != 0)
		return dmk_err_prefix(err, "taking lease %s", l->ref.text);
	util_strlcpy(l->version, nv.id, sizeof(l->version));
	l->since = existed ? ver.created : 0;
	if (!cas) {
		struct claim *c;
		const struct claim *w;
		size_t nc;

		util_sleep_ms(LEASE_SETTLE_MS);
		if ((c = calloc(LEASE_SCAN, sizeof(*c))) == NULL)
			return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		if ((r = scan_claims(l, ver.created, c, &nc, err)) != 0) {
			free(c);
			return r;
		}
		w = contest(c, nc, ver.id);
		if (w == NULL || strcmp(w->h.nonce, l->nonce) != 0) {
			if (w != NULL)
				describe(&w->h, why, wl);
			snprintf(why + strlen(why), wl - strlen(why), "%sanother agent claimed it "
			    "at the same moment", w != NULL ? ": " : "");
			free(c);
			return DMK_ERR_LOCKED;
		}
		free(c);
	}
	l->held = 1;
	return 0;
}

/*
 * Take the lease of database db of AG ag, or with db NULL the AG's own
 * claim (lease_take_ag), waiting up to --wait for another holder.
 */
static int
acquire(struct agent *a, const struct secret_ref *near, const char *ag, const char *db,
    const char *command, struct lease *l, struct dmk_err *err)
{
	long long deadline = util_now_ms() + a->wait_seconds * 1000;
	char why[600] = "";
	int r;

	memset(l, 0, sizeof(*l));
	if (near->kind != REF_STORE)
		return 0;   /* a file: reference has no store to coordinate in */
	util_strlcpy(l->command, command, sizeof(l->command));
	if ((r = agent_store(a, near->store, &l->st, err)) != 0 ||
	    (r = lease_ref(l->st, near, ag, db, &l->ref, err)) != 0)
		return r;
	/* A read-back lease (no check-and-set) is decided among the versions. */
	if (l->st->ops->lease == PROV_LEASE_READBACK &&
	    (r = store_require(l->st, PROV_CAP_VERSIONS, "a lease without check-and-set", err)) != 0)
		return r;
	for (;;) {
		why[0] = '\0';
		r = try_take(a, l, why, sizeof(why), err);
		if (r != DMK_ERR_LOCKED)   /* a store that refused: which credentials */
			return r != 0 ? agent_store_cred_hint(a, near->store, err) : 0;
		if (util_now_ms() >= deadline)
			break;
		util_sleep_ms(1000);
	}
	if (db == NULL)
		return dmk_errf(err, DMK_ERR_LOCKED, "%s: another run is working on this "
		    "availability group (another shard?): lease %s %s; left to it", ag,
		    l->ref.text, why);
	return dmk_errf(err, DMK_ERR_LOCKED, "%s/%s: another rotation is under way: lease %s %s%s",
	    ag, db, l->ref.text, why, a->wait_seconds ? "" : "; use --wait SECONDS to wait");
}

int
lease_take(struct agent *a, const struct secret_ref *near, const char *ag, const char *db,
    const char *command, struct lease *l, struct dmk_err *err)
{
	return acquire(a, near, ag, db, command, l, err);
}

int
lease_take_ag(struct agent *a, const struct secret_ref *near, const char *ag,
    const char *command, struct lease *l, struct dmk_err *err)
{
	return acquire(a, near, ag, NULL, command, l, err);
}

/* Does the holder h (of version hv) name this run's lease? */
static int
names_us(struct agent *a, const struct lease *l, const struct lease_holder *h, const char *hv)
{
	if (strcmp(hv, l->version) == 0)
		return h->held && strcmp(h->run, a->run_id) == 0;
	return h->held && strcmp(h->run, a->run_id) == 0 && strcmp(h->nonce, l->nonce) == 0;
}

static int
lost(struct lease *l, const char *why, struct dmk_err *err)
{
	l->held = 0;    /* not ours to release */
	return dmk_errf(err, DMK_ERR_LOCKED, "lease %s was taken over (%s); stopping before "
	    "the next change (a rerun continues where it stopped)", l->ref.text, why);
}

int
lease_guard(struct agent *a, struct lease *l, struct dmk_err *err)
{
	struct secret *rec = NULL;
	struct prov_version ver, nv;
	struct lease_holder h;
	long long ttl_ms = a->cfg->lease_ttl * 1000, age, now = util_now_ms();
	char why[600] = "", hv[80] = "";
	int r, cas = (l->st != NULL && (l->st->ops->lease == PROV_LEASE_CAS) != 0);

	if (!l->held)
		return 0;
	age = now - l->written_ms;
	if (age >= ttl_ms)
		return lost(l, "it expired: this run could not renew it within lease_ttl", err);
	r = read_lease(l, l->since, &h, hv, sizeof(hv), &ver, err);
	if (r == 1)
		return lost(l, "the record is gone", err);
	if (r == DMK_ERR_PROTOCOL) {
		snprintf(why, sizeof(why), "overwritten by something that is not a lease record: "
		    "%s", err->msg);
		return lost(l, why, err);
	}
	if (r == 0) {
		if (!names_us(a, l, &h, hv)) {
			describe(&h, why, sizeof(why));
			return lost(l, why, err);
		}
		if (h.expires <= time(NULL))
			return lost(l, "its record expired", err);
		if (age * 3 < ttl_ms)
			return 0;
		/* Due: renew. */
		now = util_now_ms();
		l->seq++;
		if ((rec = record(a, l, "held", time(NULL) + a->cfg->lease_ttl, ver.id)) == NULL)
			return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		memset(&nv, 0, sizeof(nv));
		r = store_put(l->st, &l->ref, rec, cas ? ver.id : NULL, NULL, &nv, err);
		secret_free(rec);
		if (r == DMK_ERR_CONFLICT) {
			l->held = 0;
			return dmk_errf(err, DMK_ERR_LOCKED, "lease %s: another agent took it over while "
			    "this run renewed it; stopping before the next change", l->ref.text);
		}
		if (r == 0) {
			util_strlcpy(l->version, nv.id, sizeof(l->version));
			l->written_ms = now;
			l->renewals++;
			log_debug("lease %s renewed (version %s)", l->ref.text, l->version);
			return 1;
		}
	}
	/* The store could not be asked: no one may take the lease before it
	 * expires, so carry on while two thirds of the TTL are left. */
	if (age * 3 < ttl_ms * 2 && dmk_err_is_temporary(r)) {
		log_warn("lease %s: could not be read or renewed, will try again before the next "
		    "change: %s", l->ref.text, err->msg);
		dmk_err_clear(err);
		return 0;
	}
	return dmk_err_prefix(err, "checking lease %s (it expires by itself; stopping before "
	    "the next change)", l->ref.text);
}

int
lease_release(struct agent *a, struct lease *l, struct dmk_err *err)
{
	struct secret *rec;
	struct prov_version nv;
	int r, cas;

	if (!l->held)
		return 0;
	cas = (l->st->ops->lease == PROV_LEASE_CAS) != 0;
	l->seq++;
	if ((rec = record(a, l, "released", time(NULL), l->version)) == NULL)
		return dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
	memset(&nv, 0, sizeof(nv));
	r = store_put(l->st, &l->ref, rec, cas ? l->version : NULL, NULL, &nv, err);
	secret_free(rec);
	l->held = 0;
	if (r == DMK_ERR_CONFLICT)
		return dmk_errf(err, r, "lease %s: another agent took it over (this run outlived "
		    "lease_ttl?)", l->ref.text);
	if (r != 0)
		return dmk_err_prefix(err, "releasing lease %s (it expires by itself)", l->ref.text);
	return 0;
}
