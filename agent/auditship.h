/*
 * auditship.h: audit records shipped off the host as RFC 5424 syslog.
 *
 * [agent] audit_syslog = unix:PATH | udp:HOST:PORT | tcp+tls:HOST:PORT.
 * Each record becomes one message:
 *   <85>1 TIME HOST dmkagent PID ACTION [dmkagent@32473 seq="N" hash="H"
 *   record="THE RECORD LINE"] ACTION OUTCOME
 * (facility authpriv, severity notice; 32473 is the private enterprise
 * number RFC 5612 reserves for examples: override by agreement with the
 * SIEM).  hash is the SHA-256 of the record's line, the prev of the next.
 * tcp+tls frames messages by octet counting (RFC 5425/6587) and checks the
 * server's certificate and name (audit_syslog_ca, else the system's CAs).
 *
 * Delivery: state_dir/audit-syslog.json holds the seq and hash of the last
 * record delivered.  After each audit batch, every record after it in the
 * log is sent, and the checkpoint moves past each delivered one.  A failure
 * is logged (once per run) and the rest waits: the next batch does not try
 * again in the same run (a rotation never waits on a SIEM), run-end does,
 * and so does every later run, or `dmkagent audit ship`.  At least once:
 * a run killed between a send and the checkpoint sends it again.  unix
 * knows a datagram was taken, tcp+tls that it was written to the
 * connection (closed cleanly: close_notify, then the listener's close),
 * udp nothing.  The checkpoint keeps the next record's byte offset too, a
 * hint trusted only while the record there chains to the last delivered.
 */
#ifndef DMK_AUDITSHIP_H
#define DMK_AUDITSHIP_H

#include <stddef.h>

#include "core/dmk.h"
#include "core/buf.h"

struct audit_ship;

/* 0 when spec is one of the three forms; else a reason into why. */
int audit_ship_check_spec(const char *spec, char *why, size_t len);

int audit_ship_open(const char *spec, const char *ca_file, const char *log_path,
    const char *ckpt_path, struct audit_ship **out, struct dmk_err *err);
/*
 * Send what the checkpoint has not seen.  *sent gets the number delivered.
 * Returns 0 when everything is delivered, DMK_ERR_UNREACHABLE (or
 * DMK_ERR_IO) when something waits.
 */
int audit_ship_flush(struct audit_ship *s, long long *sent, struct dmk_err *err);
/* audit_after_fn: flush unless this run already failed to deliver. */
void audit_ship_after(void *ship);
/* This run's delivery failure (for an audit-syslog record), or NULL. */
const char *audit_ship_failure(const struct audit_ship *s);
/* A last try (run-end), then free. */
void audit_ship_close(struct audit_ship *s);

/* One record line (no newline) as an RFC 5424 message, into out (reset). */
int audit_ship_format(const char *line, size_t len, struct buf *out, struct dmk_err *err);

#endif
