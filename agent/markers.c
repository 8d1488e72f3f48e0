/* markers.c: the meaning of the agent's store markers; pure rules, no I/O. */
#include <ctype.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/dmk.h"
#include "markers.h"

static const char *const mode_names[] = { "rotate", "regenerate", "recover" };

const char *
markers_mode_name(enum mk_mode mode)
{
	return (unsigned)mode < sizeof(mode_names) / sizeof(mode_names[0]) ? mode_names[mode] : "?";
}

int
markers_live(const struct prov_version *v)
{
	return !v->deleted && !v->destroyed && !v->disabled;
}

const char *
markers_state(const struct prov_version *v)
{
	const char *s = prov_meta_get(&v->meta, MARK_STATE);
	return s ? s : "";
}

static int
is_state(const struct prov_version *v, const char *state)
{
	return strcmp(markers_state(v), state) == 0;
}

/* The live version whose id a marker of v names; -1 when none. */
static long
named_by(const struct prov_version *v, size_t n, const struct prov_version *from,
    const char *key)
{
	const char *id = prov_meta_get(&from->meta, key);
	size_t i;

	if (id == NULL || id[0] == '\0')
		return -1;
	for (i = 0; i < n; i++)
		if (strcmp(v[i].id, id) == 0 && markers_live(&v[i]))
			return (long)i;
	return -1;
}

static const char *
rotation_of(const struct prov_version *v)
{
	const char *m = prov_meta_get(&v->meta, MARK_ROTATION);
	return m ? m : "";
}

void
markers_plan(const struct prov_version *v, size_t n, struct mk_plan *p)
{
	const char *m;
	long i, newest = -1;

	memset(p, 0, sizeof(*p));
	p->latest = n > 0 ? (long)n - 1 : -1;
	p->pending = p->current = p->retiring = p->oldv = p->newv = p->prev = -1;
	p->rotation = "";
	p->start = MK_START_NEW;
	for (i = (long)n - 1; i >= 0 && newest < 0; i--)
		if (markers_live(&v[i]))
			newest = i;
	/* Only the newest live version can be an unfinished rotation's. */
	if (newest >= 0 && is_state(&v[newest], "pending"))
		p->pending = newest;
	for (i = (long)n - 1; i >= 0; i--) {
		if (!markers_live(&v[i]) || i == p->pending)
			continue;
		if (p->current < 0 && (is_state(&v[i], "") || is_state(&v[i], "current")))
			p->current = i;
		if (p->retiring < 0 && is_state(&v[i], "retiring"))
			p->retiring = i;
	}
	if (p->pending >= 0) {
		p->start = MK_RESUME_PENDING;
		p->resumed = 1;
		p->newv = p->pending;
		p->rotation = rotation_of(&v[p->pending]);
		m = prov_meta_get(&v[p->pending].meta, MARK_MODE);
		p->mode_known = 1;
		p->mode = m && strcmp(m, "regenerate") == 0 ? MK_MODE_REGENERATE :
		    m && strcmp(m, "recover") == 0 ? MK_MODE_RECOVER : MK_MODE_ROTATE;
		p->oldv = named_by(v, n, &v[p->pending], MARK_REPLACES);
		/* recover adds a password where none was known: no old one to drop */
		if (p->oldv < 0 && p->mode != MK_MODE_RECOVER)
			p->oldv = p->current >= 0 ? p->current : p->retiring;
		return;
	}
	if (p->current < 0)
		return;              /* nothing usable in the store (recover) */
	p->oldv = named_by(v, n, &v[p->current], MARK_REPLACES);
	if (p->oldv == p->current || (p->oldv >= 0 && is_state(&v[p->oldv], "retired")))
		p->oldv = -1;
	if (p->oldv < 0 && p->retiring >= 0 && p->retiring != p->current)
		p->oldv = p->retiring;
	if (p->oldv >= 0) {
		p->start = MK_RESUME_DROP;
		p->resumed = 1;
		p->newv = p->current;
		p->rotation = rotation_of(&v[p->current]);
		return;
	}
	/* Nothing unfinished: the current version is the old one of a new rotation.
	 * An unmarked one may be someone else's write on top of the one in force:
	 * prev is the one behind it (marked current, or unmarked too: both count
	 * as current; the rotation proves which opens before it adopts). */
	p->oldv = p->current;
	if (is_state(&v[p->current], ""))
		for (i = p->current - 1; i >= 0 && p->prev < 0; i--)
			if (markers_live(&v[i]) && (is_state(&v[i], "current") || is_state(&v[i], "")))
				p->prev = i;
}

long
markers_in_force(const struct prov_version *v, size_t n)
{
	size_t i;

	for (i = n; i-- > 0; )
		if (markers_live(&v[i]) && (is_state(&v[i], "") || is_state(&v[i], "current")))
			return (long)i;
	return -1;
}

int
markers_keep(const struct prov_version *v, size_t n, size_t i)
{
	if (i >= n || !markers_live(&v[i]))
		return 0;
	return (long)i == markers_in_force(v, n) || is_state(&v[i], "pending") ||
	    is_state(&v[i], "current") || is_state(&v[i], "retiring");
}

void
markers_stamp(struct prov_meta *m, const char *state)
{
	struct passwd *pw = getpwuid(geteuid());
	char by[300], host[256], t[32];

	if (gethostname(host, sizeof(host)) != 0)
		util_strlcpy(host, "?", sizeof(host));
	host[sizeof(host) - 1] = '\0';
	snprintf(by, sizeof(by), "%s@%s", pw && pw->pw_name ? pw->pw_name : "?", host);
	util_rfc3339(time(NULL), t, sizeof(t));
	if (state != NULL)
		prov_meta_set(m, MARK_STATE, state);
	prov_meta_set(m, MARK_BY, by);
	prov_meta_set(m, MARK_TIME, t);
}

static const char *why_reason, *why_ticket;

void
markers_set_why(const char *reason, const char *ticket)
{
	why_reason = reason;
	why_ticket = ticket;
}

void
markers_why(struct prov_meta *m)
{
	if (why_reason != NULL && why_reason[0] != '\0')
		prov_meta_set(m, MARK_REASON, why_reason);
	if (why_ticket != NULL && why_ticket[0] != '\0')
		prov_meta_set(m, MARK_TICKET, why_ticket);
}

int
markers_check_reason(const char *s, struct dmk_err *err)
{
	size_t i, n = strlen(s);

	if (n == 0 || n > MARK_REASON_MAX || !util_utf8_valid(s, n))
		return dmk_errf(err, DMK_ERR_USAGE, "--reason: 1 to %d bytes of UTF-8 text",
		    MARK_REASON_MAX);
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return dmk_errf(err, DMK_ERR_USAGE, "--reason: no control characters "
			    "(it goes into store markers and audit records)");
	return 0;
}

int
markers_check_ticket(const char *s, struct dmk_err *err)
{
	size_t i, n = strlen(s);

	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && strchr("._:/#-", s[i]) == NULL)
			break;
	if (n == 0 || n > MARK_TICKET_MAX || i != n)
		return dmk_errf(err, DMK_ERR_USAGE, "--ticket: 1 to %d characters of letters, "
		    "digits and . _ : / # - (such as CHG0012345)", MARK_TICKET_MAX);
	return 0;
}
