/*
 * fuzz_tds.c: arbitrary bytes as what a server (or FreeTDS) sends the
 * relay before TLS: TDS framing (relay_tds_frame) in pieces of the sizes
 * the first byte picks, and every message it completes through the
 * PRELOGIN parser.  Whatever the input, no message exceeds the handshake
 * limit, the framer never claims more bytes than it was given, and a
 * parsed PRELOGIN's ENCRYPTION came from inside the message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dmk.h"
#include "core/buf.h"
#include "sql/relay_int.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct relay_framer f;
	struct relay_prelogin pl;
	struct buf msg;
	const char *why;
	size_t pos, step, k, used;
	int rc;

	if (size < 1)
		return 0;
	step = (size_t)data[0] * 37 + 1;   /* 1 .. 9436 bytes a read */
	data++;
	size--;
	buf_init(&msg, RELAY_HANDSHAKE_MAX);
	relay_framer_init(&f, RELAY_HANDSHAKE_MAX);
	for (pos = 0; pos < size;) {
		k = size - pos < step ? size - pos : step;
		rc = relay_tds_frame(&f, data + pos, k, &used, &msg, &why);
		if (used > k || msg.len > RELAY_HANDSHAKE_MAX)
			abort();
		pos += used;
		if (rc < 0) {
			if (why == NULL)
				abort();
			break;
		}
		if (rc == 0 && used != k)
			abort();
		if (rc == 1) {
			if (f.msg_type != RELAY_TDS_PRELOGIN && f.msg_type != RELAY_TDS_REPLY)
				abort();
			if (relay_parse_prelogin((const unsigned char *)msg.data, msg.len, &pl,
			    &why) == 0) {
				if (pl.have_enc && (pl.enc < 0 || pl.enc > 255))
					abort();
			} else if (why == NULL)
				abort();
			buf_reset(&msg);
		}
	}
	buf_free(&msg);
	return 0;
}
