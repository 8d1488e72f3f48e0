/* hook.h: dmkagent hook serve (cmd_hook.c); what its fuzz target reaches. */
#ifndef DMK_HOOK_H
#define DMK_HOOK_H

#include <stddef.h>

struct agent;

/*
 * One HTTP request from memory through the same code as a TLS connection
 * (a.cfg must hold the configuration; key is the expected code).  Returns
 * the status answered, or -1 when the request ended before its end.  A
 * queued event goes nowhere (no worker); the queue holds 2.
 */
int hook_fuzz_request(struct agent *a, const char *key, const unsigned char *data, size_t n);

#endif
