/*
 * relay_int.h: the relay's parsers of what comes off the wire, pure
 * functions with no socket and no state, so that unit tests and fuzz
 * targets reach exactly the code the relay runs.
 *
 * Every length in a TDS packet header or a PRELOGIN option table is checked
 * here against the bytes that exist before anything is read or copied.
 */
#ifndef DMK_SQL_RELAY_INT_H
#define DMK_SQL_RELAY_INT_H

#include <stddef.h>

#include "core/buf.h"

#define RELAY_TDS_HDR         8
#define RELAY_TDS_PRELOGIN    0x12
#define RELAY_TDS_REPLY       0x04
#define RELAY_TDS_EOM         0x01
/* A PRELOGIN message (TLS handshake flights included) is never larger. */
#define RELAY_HANDSHAKE_MAX   (256 * 1024)

struct relay_tds_pkt {
	int type;              /* the packet's type byte */
	int eom;               /* last packet of its message */
	size_t payload;        /* bytes after the header: 0 .. 65527 */
};

/*
 * Check one packet header h[RELAY_TDS_HDR] of a message of which `have`
 * payload bytes have arrived (first_type -1 for the first packet, else the
 * first packet's type): the length covers at least the header, the type is
 * PRELOGIN or REPLY and stays the same across the message, and the message
 * stays within max bytes.  0, or DMK_ERR_PROTOCOL / DMK_ERR_TOOBIG with
 * *why saying what is wrong (static text).
 */
int relay_tds_header(const unsigned char *h, int first_type, size_t have, size_t max,
    struct relay_tds_pkt *pkt, const char **why);

/*
 * One step of TDS framing over a byte stream: append to msg what of
 * in[0..n) belongs to the message being assembled, set *used to how many
 * bytes were consumed.  1: a message is complete in msg (its type in
 * f->msg_type; the next call starts a new one, msg is the caller's to
 * reset), 0: more bytes needed, or a negative DMK_ERR_* with *why (static
 * text).  The framer keeps a partial header between calls.
 */
struct relay_framer {
	unsigned char hdr[RELAY_TDS_HDR];
	size_t hdr_len;        /* header bytes seen of the current packet */
	size_t left;           /* payload bytes still due for the current packet */
	int eom;               /* the current packet ends the message */
	int type;              /* the message's type, -1 before its first packet */
	int msg_type;          /* the type of the message last completed */
	size_t max;            /* largest message accepted */
};
void relay_framer_init(struct relay_framer *f, size_t max);
int relay_tds_frame(struct relay_framer *f, const unsigned char *in, size_t n, size_t *used,
    struct buf *msg, const char **why);

struct relay_prelogin {
	int have_version, have_enc;
	unsigned char version[6];
	int enc;               /* ENCRYPTION's value, -1 if absent */
};

/*
 * Parse a PRELOGIN message (a server's answer or a client's request):
 * 0, or DMK_ERR_PROTOCOL with *why (static text) when the option table has
 * no terminator, an entry is cut, a value lies outside the message or
 * inside the table, an option repeats, or VERSION / ENCRYPTION have the
 * wrong size.
 */
int relay_parse_prelogin(const unsigned char *p, size_t n, struct relay_prelogin *pl,
    const char **why);

#endif
