/* rotate.c: dmkagent rotate and recover.  (Filled in by the rotation issue.) */
#include "dmk.h"
#include "cli.h"
#include "failpoint.h"
#include "replicas.h"

int
cmd_rotate(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	return dmk_errf(err, DMK_ERR_UNSUPPORTED, "rotate is not built yet");
}

int
cmd_recover(struct agent *a, int argc, char **argv, struct dmk_err *err)
{
	return dmk_errf(err, DMK_ERR_UNSUPPORTED, "recover is not built yet");
}
