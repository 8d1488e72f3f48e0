/* Fuzz target: the configuration parser must never crash, leak or hang. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "agent/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct config_errors errs;
	struct config *c = NULL;
	struct dmk_err e;
	char *t;

	if (size > 65536 || (t = malloc(size + 1)) == NULL)
		return 0;
	memcpy(t, data, size);
	t[size] = '\0';
	if (config_parse_string(t, "fuzz.conf", &c, &e) == 0)
		config_free(c);
	/* and every error (config check): each key or section left out in turn */
	if (config_parse_string_all(t, "fuzz.conf", &c, &errs, &e) == 0)
		config_free(c);
	else if ((errs.n == 0 && e.code != DMK_ERR_NOMEM) || errs.n > CONFIG_ERRORS_MAX)
		abort();
	free(t);
	return 0;
}
