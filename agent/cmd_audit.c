/*
 * cmd_audit.c: dmkagent audit verify [FILE...] and audit reset-checkpoint.
 * verify checks the chain and MACs of the files as one log, then compares
 * its head with the checkpoint in state_dir and the audit anchor in the
 * store (when the last file is the configured audit_log).
 */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <fcntl.h>
#include <unistd.h>

#include <jansson.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "cli.h"
#include "markers.h"

#define VERIFY_USAGE "usage: dmkagent audit verify [--key REF] [FILE...]"

/* Is path the configured audit log? */
int
is_audit_log(const struct agent *a, const char *path)
{
	char p1[PATH_MAX], p2[PATH_MAX];

	if (a->cfg == NULL)
		return 0;
	if (realpath(path, p1) == NULL || realpath(a->cfg->audit_log, p2) == NULL)
		return strcmp(path, a->cfg->audit_log) == 0;
	return strcmp(p1, p2) == 0;
}

static const char *
mac_text(const struct secret *key, int seen, int checked)
{
	if (checked)
		return ", MACs verified";
	if (seen)
		return key ? "" : "; MACs present but not checked: no audit_key (use --key REF)";
	return key ? "" : "; no MACs (set audit_key to key the chain)";
}

int
cmd_audit_verify(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	static const struct option opts[] = {
		{ "key", required_argument, NULL, 'k' },
		{ NULL, 0, NULL, 0 },
	};
	struct secret_ref kref;
	struct secret *key = NULL;
	const char *keytext = NULL, *lastfile, *files[1];
	const char *const *paths;
	struct audit_ckpt local, anchor;
	struct audit_check chk[2];
	struct audit_report *rep = NULL;
	char ckpath[4096], anchor_state[32] = "none", local_state[32] = "none";
	size_t nchk = 0, npaths, i;
	int ch, r, found, have_config = 0, lockfd = -1;

	while ((ch = getopt_long(argc, argv, "k:", opts, NULL)) != -1) {
		if (ch == 'k')
			keytext = optarg;
		else
			return dmk_errf(err, DMK_ERR_USAGE, VERIFY_USAGE);
	}
	if (keytext != NULL) {
		if (ref_parse(keytext, &kref, err) != 0)
			return dmk_err_prefix(err, "--key");
		if ((r = agent_load_config(a, a->config_path, err)) == 0)
			have_config = 1;
		else if (kref.kind == REF_STORE)
			return r;
		dmk_err_clear(err);
		if ((r = agent_resolve(a, &kref, 0, &key, NULL, err)) != 0)
			return r;
	} else if (agent_load_config(a, a->config_path, err) == 0) {
		have_config = 1;
		if (a->cfg->has_audit_key &&
		    (r = agent_resolve(a, &a->cfg->audit_key, 0, &key, NULL, err)) != 0)
			return dmk_err_prefix(err, "audit_key");
	} else
		dmk_err_clear(err);
	if (optind == argc) {
		if (!have_config)
			return dmk_errf(err, DMK_ERR_USAGE, VERIFY_USAGE " (no FILE, and no "
			    "configuration to name the audit log)");
		files[0] = a->cfg->audit_log;
		paths = files;
		npaths = 1;
	} else {
		paths = (const char *const *)&argv[optind];
		npaths = (size_t)(argc - optind);
	}
	if (npaths > AUDIT_VERIFY_FILES_MAX)
		return dmk_errf(err, DMK_ERR_USAGE, "audit verify: at most %d files",
		    AUDIT_VERIFY_FILES_MAX);
	lastfile = paths[npaths - 1];
	if ((rep = calloc(1, sizeof(*rep))) == NULL) {
		r = dmk_errf(err, DMK_ERR_NOMEM, "out of memory");
		goto out;
	}
	buf_init(&rep->notes, 64 * 1024);
	if (have_config && is_audit_log(a, lastfile)) {
		/* The store first: not while holding the log's lock (the agent waits on it). */
		if (a->cfg->has_audit_anchor) {
			if ((r = agent_audit_anchor_get(a, key, &anchor, &found, err)) != 0)
				goto out;
			if (found) {
				chk[nchk].name = a->cfg->audit_anchor.text;
				chk[nchk++].ckpt = &anchor;
				snprintf(anchor_state, sizeof(anchor_state), "seq %lld", anchor.seq);
			} else
				snprintf(anchor_state, sizeof(anchor_state), "absent");
		}
		/* The agent's lock on the log: the checkpoint and the file agree while we read. */
		if ((lockfd = open(lastfile, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) != -1)
			flock(lockfd, LOCK_SH);
		if ((r = agent_audit_checkpoint_path(a, ckpath, sizeof(ckpath), err)) != 0 ||
		    (r = audit_ckpt_read(ckpath, key, &local, &found, err)) != 0)
			goto out;
		if (found) {
			chk[nchk].name = ckpath;
			chk[nchk++].ckpt = &local;
			snprintf(local_state, sizeof(local_state), "seq %lld", local.seq);
		} else
			snprintf(local_state, sizeof(local_state), "absent");
	}
	if ((r = audit_verify_files(paths, npaths, key, chk, nchk, rep, err)) != 0)
		goto out;
	if (a->output == OUTPUT_JSON) {
		json_t *o = json_object(), *fl = json_array(), *nl = json_array();
		char *s, *line, *save = NULL;
		for (i = 0; i < npaths; i++) {
			json_t *f = json_object();
			json_object_set_new(f, "file", json_string(paths[i]));
			json_object_set_new(f, "records", json_integer(rep->file[i].nrecords));
			json_object_set_new(f, "continues", json_boolean(rep->file[i].continues));
			json_array_append_new(fl, f);
		}
		for (line = strtok_r(rep->notes.data ? rep->notes.data : (char *)"", "\n", &save);
		    line != NULL; line = strtok_r(NULL, "\n", &save))
			json_array_append_new(nl, json_string(line));
		json_object_set_new(o, "file", json_string(lastfile));
		json_object_set_new(o, "records", json_integer(rep->nrecords));
		json_object_set_new(o, "chain", json_string("ok"));
		json_object_set_new(o, "mac", json_string(rep->macs_checked ? "ok" :
		    rep->macs_seen ? "not checked" : "absent"));
		json_object_set_new(o, "head_seq", json_integer(rep->head_seq));
		json_object_set_new(o, "checkpoint", json_string(!have_config ? "no configuration" :
		    !is_audit_log(a, lastfile) ? "not compared" : local_state));
		json_object_set_new(o, "anchor", json_string(anchor_state));
		json_object_set_new(o, "files", fl);
		json_object_set_new(o, "notes", nl);
		if ((s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER)) != NULL)
			fprintf(a->out, "%s\n", s);
		json_free_dump(s);
		json_decref(o);
	} else {
		for (i = 0; i < npaths; i++)
			fprintf(a->out, "%s: %lld records, hash chain intact%s%s\n", paths[i],
			    rep->file[i].nrecords, rep->file[i].continues && i > 0 ?
			    " (continues the previous file)" : "",
			    mac_text(key, rep->file[i].macs_seen, rep->file[i].macs_checked));
		if (!have_config)
			fprintf(a->out, "checkpoint: not compared (no configuration read: the end of "
			    "the log is not checked)\n");
		else if (!is_audit_log(a, lastfile))
			fprintf(a->out, "checkpoint: not compared (%s is not the configured "
			    "audit_log %s)\n", lastfile, a->cfg->audit_log);
		else {
			for (i = 0; i < nchk; i++)
				fprintf(a->out, "checkpoint %s: seq %lld, the log holds it%s\n",
				    chk[i].name, chk[i].ckpt->seq, chk[i].ckpt->mac_checked ?
				    " (MAC verified)" : chk[i].ckpt->keyed ?
				    " (MAC present but not checked: no audit_key)" :
				    " (no MAC: set audit_key, or anyone who can write it can move it)");
			if (strcmp(local_state, "absent") == 0)
				fprintf(a->out, "checkpoint: none in %s yet (written by the next run)\n",
				    a->cfg->state_dir);
			if (strcmp(anchor_state, "absent") == 0)
				fprintf(a->out, "anchor %s: not written yet\n",
				    a->cfg->audit_anchor.text);
		}
		if (rep->notes.len > 0)
			for (char *line = rep->notes.data, *nl; *line; line = nl + 1) {
				if ((nl = strchr(line, '\n')) == NULL)
					break;
				fprintf(a->out, "note: %.*s\n", (int)(nl - line), line);
			}
	}
	r = 0;
out:
	if (lockfd != -1)
		close(lockfd);
	if (rep != NULL) {
		buf_free(&rep->notes);
		free(rep);
	}
	secret_free(key);
	return r;
}

int
cmd_audit_reset(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	static const struct option opts[] = {
		{ "reason", required_argument, NULL, 'r' },
		{ "ticket", required_argument, NULL, 'T' },
		{ NULL, 0, NULL, 0 },
	};
	const char *reason = NULL;
	int ch, r;

	while ((ch = getopt_long(argc, argv, "r:", opts, NULL)) != -1) {
		if (ch == 'r')
			reason = optarg;
		else if (ch == 'T' && (r = markers_check_ticket(optarg, err)) == 0)
			a->ticket = optarg;
		else if (ch == 'T')
			return r;
		else
			return dmk_errf(err, DMK_ERR_USAGE, "usage: dmkagent audit reset-checkpoint "
			    "--reason TEXT [--ticket ID]");
	}
	if (optind != argc || reason == NULL || reason[0] == '\0' || strlen(reason) > 200 ||
	    !util_utf8_valid(reason, strlen(reason)))
		return dmk_errf(err, DMK_ERR_USAGE, "usage: dmkagent audit reset-checkpoint "
		    "--reason TEXT (1 to 200 characters, recorded in the audit log) [--ticket ID]");
	if (a->cfg->require_ticket && a->ticket == NULL)
		return dmk_errf(err, DMK_ERR_USAGE, "audit reset-checkpoint: require_ticket = yes "
		    "in [agent]: give --ticket ID (nothing was changed)");
	a->audit_reset_reason = reason;
	a->reason = reason;
	if ((r = agent_begin(a, "audit reset-checkpoint", err)) != 0)
		return r;
	fprintf(a->out, "%s: accepted as it is; the checkpoint now names its head "
	    "(a checkpoint-reset record says why)\n", a->cfg->audit_log);
	agent_end(a, "audit reset-checkpoint", 0);
	return 0;
}
