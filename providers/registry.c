/* registry.c: the stores dmkagent knows, and what is common to all of them. */
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "core/secret.h"
#include "provider.h"

extern const struct prov_ops prov_hcvault;
extern const struct prov_ops prov_azkv;

/* A new store is a new file and one line here. */
const struct prov_ops *const providers[] = {
	&prov_hcvault,
	&prov_azkv,
	NULL,
};

const struct prov_ops *
prov_find(const char *type)
{
	size_t i;

	for (i = 0; providers[i] != NULL; i++)
		if (strcmp(providers[i]->type, type) == 0)
			return providers[i];
	return NULL;
}

const char *
prov_meta_get(const struct prov_meta *m, const char *key)
{
	size_t i;

	for (i = 0; m != NULL && i < m->n; i++)
		if (strcmp(m->kv[i].key, key) == 0)
			return m->kv[i].value;
	return NULL;
}

int
prov_meta_set(struct prov_meta *m, const char *key, const char *value)
{
	size_t i;

	if (key[0] == '\0')
		return DMK_ERR_BADINPUT;
	if (strlen(key) >= sizeof(m->kv[0].key) || strlen(value) >= sizeof(m->kv[0].value))
		return DMK_ERR_TOOBIG;
	for (i = 0; i < m->n; i++)
		if (strcmp(m->kv[i].key, key) == 0)
			break;
	/* Never an empty marker (Vault refuses empty custom_metadata values):
	 * an empty value means no marker, which readers take the same way. */
	if (value[0] == '\0') {
		if (i < m->n) {
			memmove(&m->kv[i], &m->kv[i + 1], (m->n - i - 1) * sizeof(m->kv[0]));
			m->n--;
			memset(&m->kv[m->n], 0, sizeof(m->kv[0]));
		}
		return 0;
	}
	if (i == m->n) {
		if (m->n == PROV_META_MAX)
			return DMK_ERR_TOOBIG;
		m->n++;
	}
	util_strlcpy(m->kv[i].key, key, sizeof(m->kv[i].key));
	util_strlcpy(m->kv[i].value, value, sizeof(m->kv[i].value));
	return 0;
}
