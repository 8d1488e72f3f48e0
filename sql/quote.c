/* quote.c: placeholder until the sql/ issue lands. */
#include "../agent/dmk.h"
