/*
 * Fuzz target: dmkagent hook serve's request handling (agent/cmd_hook.c), fed
 * from memory in pieces as a TLS session would: request line, headers, the
 * code parameter, Content-Length, the body and every event in it must never
 * crash, leak or hang, whatever arrives.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "agent/agent.h"
#include "agent/hook.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char conf[] =
    "[agent]\nstate_dir = /nonexistent/dmkfuzz\n"
    "[store akv]\ntype = azure-key-vault\nvault_url = https://fuzzvault.vault.azure.net\n"
    "auth = managed-identity\n"
    "[ag AG1]\nlistener = 127.0.0.1:1433\nlogin = sa\nlogin_password = file:/nonexistent/pw\n"
    "[database AG1/CM_P01]\ndmk_password = akv:sql-ag1-cm-p01-dmk\n"
    "[hook]\nlisten = 127.0.0.1:8443\ntls_cert = /nonexistent/c.pem\n"
    "tls_key = file:/nonexistent/k.pem\nkey = file:/nonexistent/code\n";

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct agent a;
	static int ready;
	struct dmk_err e;

	if (!ready) {
		log_init("fuzz", LOG_LVL_ERROR, 0);
		agent_init(&a);
		if (config_parse_string(conf, "fuzz.conf", &a.cfg, &e) != 0)
			abort();
		ready = 1;
	}
	if (size > 2 * 1024 * 1024)
		return 0;
	hook_fuzz_request(&a, "fuzz-code-0123456789", data, size);
	return 0;
}
