/* conf.c: reading a configuration section's keys. */
#include <string.h>

#include "dmk.h"
#include "conf.h"

int
conf_key_is_secret(const char *key)
{
	static const char *suffixes[] = { "password", "secret", "secret_id", "token", "_key" };
	size_t n = strlen(key), i;

	for (i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		size_t m = strlen(suffixes[i]);
		if (n >= m && strcmp(key + n - m, suffixes[i]) == 0)
			return 1;
	}
	return 0;
}

const struct conf_kv *
conf_store_kv(const struct conf_store *st, const char *key)
{
	size_t i;

	for (i = 0; i < st->nkv; i++)
		if (strcmp(st->kv[i].key, key) == 0)
			return &st->kv[i];
	return NULL;
}

const char *
conf_store_str(const struct conf_store *st, const char *key)
{
	const struct conf_kv *kv = conf_store_kv(st, key);

	return kv ? kv->value : NULL;
}
