/* main.c: harden the process, set up the libraries, run the command line. */
#include <stdio.h>

#include <curl/curl.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "cli.h"

int
main(int argc, char **argv)
{
	struct dmk_err err;
	int r;

	/* No core dumps, not dumpable: a dump would hold whatever secret was in memory. */
	if (util_harden_process(&err) != 0)
		log_warn("%s", err.msg);
	secret_install_json_allocator();
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "dmkagent: cannot initialise libcurl\n");
		return DMK_EXIT_FAILED;
	}
	r = cli_main(argc, argv);
	curl_global_cleanup();
	return r;
}
