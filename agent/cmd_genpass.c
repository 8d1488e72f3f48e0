/* cmd_genpass.c: dmkagent genpass --dry-run: the policy, never a password. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "cli.h"
#include "genpass.h"

int
cmd_genpass(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	static const struct option opts[] = {
		{ "dry-run", no_argument, NULL, 'n' },
		{ "length", required_argument, NULL, 'l' },
		{ "avoid", required_argument, NULL, 'a' },
		{ NULL, 0, NULL, 0 },
	};
	struct pass_policy p;
	char classes[4][96];
	size_t sizes[4], total;
	int ch, dry = 0, r, length_set = 0;
	double bits;

	memset(&p, 0, sizeof(p));
	p.length = PASS_DEFAULT;
	/* Defaults from the configuration when it can be read. */
	if (agent_load_config(a, a->config_path, err) == 0) {
		p.length = a->cfg->password_length;
		util_strlcpy(p.avoid, a->cfg->password_avoid, sizeof(p.avoid));
	}
	dmk_err_clear(err);
	while ((ch = getopt_long(argc, argv, "nl:a:", opts, NULL)) != -1) {
		switch (ch) {
		case 'n':
			dry = 1;
			break;
		case 'l':
			p.length = atoi(optarg);
			length_set = 1;
			break;
		case 'a':
			util_strlcpy(p.avoid, optarg, sizeof(p.avoid));
			break;
		default:
			return dmk_errf(err, DMK_ERR_USAGE, "usage: dmkagent genpass --dry-run "
			    "[--length N] [--avoid CHARS]");
		}
	}
	(void)length_set;
	if (!dry)
		return dmk_errf(err, DMK_ERR_USAGE, "genpass only shows the policy (--dry-run): "
		    "generated passwords go to the store and SQL Server, never to the screen");
	if (p.length < PASS_MIN || p.length > PASS_MAX)
		return dmk_errf(err, DMK_ERR_USAGE, "--length must be %d to %d", PASS_MIN, PASS_MAX);
	if ((r = pass_alphabet(&p, classes, sizes, err)) != 0)
		return r;
	total = sizes[0] + sizes[1] + sizes[2] + sizes[3];
	bits = p.length * log2((double)total);
	if (a->output == OUTPUT_JSON) {
		fprintf(a->out, "{\"length\":%d,\"alphabet_size\":%zu,\"classes\":{\"upper\":%zu,"
		    "\"lower\":%zu,\"digit\":%zu,\"symbol\":%zu},\"symbols\":\"%s\","
		    "\"entropy_bits_max\":%.1f,\"requires_all_classes\":true,"
		    "\"sql_server_policy\":\"8-128 characters, 3 of 4 classes\"}\n",
		    p.length, total, sizes[0], sizes[1], sizes[2], sizes[3], classes[3], bits);
		return 0;
	}
	fprintf(a->out,
	    "Generated passwords (OpenSSL RAND_bytes, rejection sampling, no modulo bias):\n"
	    "  length:    %d characters\n"
	    "  alphabet:  %zu characters: %zu upper-case, %zu lower-case, %zu digits,\n"
	    "             %zu symbols %s\n"
	    "  classes:   every password holds all four classes, so it meets SQL Server's\n"
	    "             policy on Windows and Linux (8 to 128 characters, 3 of 4 classes)\n"
	    "  strength:  about %.0f bits\n",
	    p.length, total, sizes[0], sizes[1], sizes[2], sizes[3], classes[3], bits);
	if (p.avoid[0])
		fprintf(a->out, "  avoided:   %zu character(s) from password_avoid\n", strlen(p.avoid));
	return 0;
}
