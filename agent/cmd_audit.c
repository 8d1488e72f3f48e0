/* cmd_audit.c: dmkagent audit verify FILE. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "cli.h"

int
cmd_audit_verify(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	static const struct option opts[] = {
		{ "key", required_argument, NULL, 'k' },
		{ NULL, 0, NULL, 0 },
	};
	struct secret_ref kref;
	struct secret *key = NULL;
	const char *keytext = NULL;
	long long n = 0;
	int ch, r, macs = 0;

	while ((ch = getopt_long(argc, argv, "k:", opts, NULL)) != -1) {
		if (ch == 'k')
			keytext = optarg;
		else
			return dmk_errf(err, DMK_ERR_USAGE, "usage: dmkagent audit verify [--key REF] FILE");
	}
	if (optind != argc - 1)
		return dmk_errf(err, DMK_ERR_USAGE, "usage: dmkagent audit verify [--key REF] FILE");
	if (keytext != NULL) {
		if (ref_parse(keytext, &kref, err) != 0)
			return dmk_err_prefix(err, "--key");
		if (kref.kind == REF_STORE &&
		    (r = agent_load_config(a, a->config_path, err)) != 0)
			return r;
		if ((r = agent_resolve(a, &kref, 0, &key, NULL, err)) != 0)
			return r;
	} else if (agent_load_config(a, a->config_path, err) == 0 && a->cfg->has_audit_key) {
		if ((r = agent_resolve(a, &a->cfg->audit_key, 0, &key, NULL, err)) != 0)
			return dmk_err_prefix(err, "audit_key");
	} else
		dmk_err_clear(err);
	r = audit_verify(argv[optind], key, &n, &macs, err);
	secret_free(key);
	if (r != 0)
		return r;
	if (a->output == OUTPUT_JSON)
		fprintf(a->out, "{\"file\":\"%s\",\"records\":%lld,\"chain\":\"ok\",\"mac\":\"%s\"}\n",
		    argv[optind], n, key ? "ok" : macs ? "not checked" : "absent");
	else {
		fprintf(a->out, "%s: %lld records, hash chain intact", argv[optind], n);
		if (keytext != NULL || (a->cfg && a->cfg->has_audit_key))
			fprintf(a->out, ", MACs verified\n");
		else
			fprintf(a->out, macs ? "; MACs present but not checked (no key: use --key)\n" :
			    "; no MACs (set audit_key to key the chain)\n");
	}
	return 0;
}
