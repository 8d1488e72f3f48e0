/* main.c: harden the process, set up the libraries, run the command line. */
#include <malloc.h>
#include <stdio.h>

#include <curl/curl.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "core/lockmem.h"
#include "cli.h"

static const char *const env_secrets[] = {
	"VAULT_TOKEN", "AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PASSWORD", NULL,
};

int
main(int argc, char **argv)
{
	struct dmk_err err;
	int r;

	/*
	 * Two malloc arenas, not one per thread (up to 8 per core): a replica
	 * and a relay thread per replica each touched an arena of their own
	 * (bench/README.md: -1.6 MiB at 100 databases on 5 replicas).
	 */
	(void)mallopt(M_ARENA_MAX, 2);
	/* No core dumps, not dumpable: a dump would hold whatever secret was in memory. */
	if (util_harden_process(&err) != 0)
		log_warn("%s", err.msg);
	secret_install_json_allocator();
	/*
	 * Credentials in the environment leave it now, while there is one
	 * thread: kept in locked memory, their bytes overwritten in place.
	 */
	secret_env_scrub(env_secrets);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "dmkagent: cannot initialise libcurl\n");
		return DMK_EXIT_FAILED;
	}
	r = cli_main(argc, argv);
	{
		struct lockmem_stats ls;
		lockmem_get_stats(&ls);
		if (ls.fallbacks > 0)
			log_info("%zu allocations for data in transit found the locked arena (%zu "
			    "bytes) full and used the ordinary heap (wiped on free)", ls.fallbacks,
			    ls.arena_size);
	}
	curl_global_cleanup();
	return r;
}
