/*
 * failpoint.h: crash on purpose at a named step boundary, for the fault
 * matrix tests.  Compiled in only with -Dfailpoints=true (scripts/test.sh
 * builds the test binary that way); a release build has none.
 *
 *   DMKAGENT_FAILPOINT=rotate:after-pending dmkagent rotate
 * kills the process with SIGKILL when it reaches that boundary;
 *   DMKAGENT_FAILPOINT_STOP=rotate:after-add dmkagent rotate
 * stops it there (SIGSTOP) until the test sends SIGCONT.  NAME#N picks the
 * Nth time the process reaches NAME (rotate:after-add#2: the second
 * database of a batch past its ADD).
 */
#ifndef DMK_FAILPOINT_H
#define DMK_FAILPOINT_H

#ifdef DMK_FAILPOINTS
void failpoint(const char *name);
#else
#define failpoint(name) ((void)0)
#endif

#endif
