/*
 * dbstate.c: what the store says about one database (dbstate.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "agent.h"
#include "backup.h"
#include "dbstate.h"
#include "markers.h"

/* When a version was written: its marker, else the store's own time. */
static time_t
written_at(const struct prov_version *v)
{
	const char *t = prov_meta_get(&v->meta, MARK_TIME);
	time_t x;

	if (v->created != 0)
		return v->created;
	if (t != NULL && util_parse_rfc3339(t, &x) == 0)
		return x;
	return 0;
}

static void
escrow_state(struct agent *a, const struct secret_ref *ref, struct db_state_view *s)
{
	struct prov_version *v = NULL;
	struct secret_ref bref;
	struct store *st;
	struct dmk_err e;
	size_t n = 0, i;

	if (escrow_ref(ref, "dmk", NULL, &bref, &e) != 0 ||
	    agent_store(a, bref.store, &st, &e) != 0 ||
	    !store_can(st, PROV_CAP_VERSIONS | PROV_CAP_META) ||
	    store_list_versions(st, &bref, &v, &n, &e) != 0)
		return;
	for (i = n; i-- > 0; ) {
		const char *t;
		time_t x;

		if (!markers_live(&v[i]))
			continue;
		if (s->backup == 0) {
			s->backup = written_at(&v[i]);
			util_strlcpy(s->backup_version, v[i].id, sizeof(s->backup_version));
		}
		if ((t = prov_meta_get(&v[i].meta, MARK_RESTORED)) != NULL &&
		    util_parse_rfc3339(t, &x) == 0 && x > s->restore_test)
			s->restore_test = x;
	}
	free(v);
}

void
db_state_read(struct agent *a, const struct conf_db *db, int backups,
    struct db_state_view *s)
{
	const struct secret_ref *ref = &db->dmk_password;
	struct prov_version *v = NULL;
	struct mk_plan mp;
	struct store *st;
	struct dmk_err e;
	size_t n = 0, cnt = 0;
	long cur, first;
	int r;

	memset(s, 0, sizeof(*s));
	s->headroom = -1;
	if (ref->kind != REF_STORE) {
		util_strlcpy(s->error, "not in a store", sizeof(s->error));
		return;
	}
	if ((r = agent_store(a, ref->store, &st, &e)) != 0) {
		util_strlcpy(s->error, e.msg, sizeof(s->error));
		return;
	}
	if (!store_can(st, PROV_CAP_VERSIONS | PROV_CAP_META)) {
		snprintf(s->error, sizeof(s->error), "store %s keeps no versions", ref->store);
		return;
	}
	r = store_list_versions(st, ref, &v, &n, &e);
	if (r == DMK_ERR_NOTFOUND)
		r = 0, n = 0;
	if (r != 0) {
		snprintf(s->error, sizeof(s->error), "%s", e.msg);
		return;
	}
	s->known = 1;
	markers_plan(v, n, &mp);
	if ((cur = markers_in_force(v, n)) >= 0) {
		util_strlcpy(s->in_force, v[cur].id, sizeof(s->in_force));
		s->changed = written_at(&v[cur]);
		/* as rotate --if-due counts: from the version's creation */
		if (db->rotate_every > 0 && s->changed != 0)
			s->next_due = s->changed + (time_t)db->rotate_every;
	}
	if (mp.resumed) {
		s->unfinished = 1;
		s->step = mp.start == MK_RESUME_PENDING ? "apply" : "drop";
		util_strlcpy(s->mode, mp.mode_known ? markers_mode_name(mp.mode) : "rotate",
		    sizeof(s->mode));
		util_strlcpy(s->rotation, mp.rotation ? mp.rotation : "", sizeof(s->rotation));
		if (mp.newv >= 0) {
			util_strlcpy(s->new_version, v[mp.newv].id, sizeof(s->new_version));
			s->since = written_at(&v[mp.newv]);
		}
		if (mp.oldv >= 0)
			util_strlcpy(s->old_version, v[mp.oldv].id, sizeof(s->old_version));
	}
	if (store_version_limit(st, ref, &s->limit, &cnt, NULL, 0, &e) == 0) {
		s->nversions = cnt ? cnt : n;
		s->headroom = store_headroom(st, v, n, s->limit, &first);
		if (first >= 0)
			util_strlcpy(s->oldest_kept, v[first].id, sizeof(s->oldest_kept));
	}
	free(v);
	if (backups)
		escrow_state(a, ref, s);
}

const char *
db_state_step_text(const char *step)
{
	if (step != NULL && strcmp(step, "apply") == 0)
		return "the new password is in the store, pending: SQL Server may not have it yet";
	return "the new password is in force: the old one is still to be dropped";
}
