/*
 * test_wire.c: what sql/ reads off the wire, each length checked before
 * use: the relay's TDS framing and PRELOGIN parser (sql/relay_int.h), the
 * result value decoder (sql_cell_decode) and replica addresses taken from
 * the catalog (sql_replica_address).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sybfront.h>
#include <sybdb.h>

#include "core/dmk.h"
#include "core/buf.h"
#include "sql/sql.h"
#include "sql/sql_int.h"
#include "sql/relay_int.h"

static void
hdr(unsigned char *h, int type, int status, unsigned len)
{
	h[0] = (unsigned char)type;
	h[1] = (unsigned char)status;
	h[2] = (unsigned char)(len >> 8);
	h[3] = (unsigned char)len;
	h[4] = h[5] = h[7] = 0;
	h[6] = 1;
}

static void
tds_header_checks(void **state)
{
	struct relay_tds_pkt p;
	unsigned char h[8];
	const char *why;

	(void)state;
	hdr(h, RELAY_TDS_REPLY, 1, 65535);
	assert_int_equal(relay_tds_header(h, -1, 0, RELAY_HANDSHAKE_MAX, &p, &why), 0);
	assert_int_equal(p.payload, 65527);
	assert_int_equal(p.eom, 1);
	hdr(h, RELAY_TDS_REPLY, 1, 7);
	assert_int_equal(relay_tds_header(h, -1, 0, RELAY_HANDSHAKE_MAX, &p, &why),
	    DMK_ERR_PROTOCOL);
	assert_non_null(why);
	hdr(h, RELAY_TDS_REPLY, 1, 0);
	assert_int_equal(relay_tds_header(h, -1, 0, RELAY_HANDSHAKE_MAX, &p, &why),
	    DMK_ERR_PROTOCOL);
	hdr(h, 0x17, 1, 100);   /* a TLS record, not TDS */
	assert_int_equal(relay_tds_header(h, -1, 0, RELAY_HANDSHAKE_MAX, &p, &why),
	    DMK_ERR_PROTOCOL);
	hdr(h, RELAY_TDS_REPLY, 1, 100);   /* type changes mid-message */
	assert_int_equal(relay_tds_header(h, RELAY_TDS_PRELOGIN, 10, RELAY_HANDSHAKE_MAX, &p,
	    &why), DMK_ERR_PROTOCOL);
	hdr(h, RELAY_TDS_PRELOGIN, 0, 65535);
	assert_int_equal(relay_tds_header(h, RELAY_TDS_PRELOGIN, RELAY_HANDSHAKE_MAX - 65526,
	    RELAY_HANDSHAKE_MAX, &p, &why), DMK_ERR_TOOBIG);
	assert_int_equal(relay_tds_header(h, RELAY_TDS_PRELOGIN, RELAY_HANDSHAKE_MAX - 65527,
	    RELAY_HANDSHAKE_MAX, &p, &why), 0);
	assert_int_equal(relay_tds_header(h, RELAY_TDS_PRELOGIN, (size_t)-1,
	    RELAY_HANDSHAKE_MAX, &p, &why), DMK_ERR_TOOBIG);
}

/* Feed a stream byte by byte, then whole: same messages either way. */
static int
frame_all(const unsigned char *in, size_t n, size_t step, struct buf *last, int *nmsg)
{
	struct relay_framer f;
	struct buf msg;
	const char *why;
	size_t pos = 0, used, k;
	int rc = 0;

	*nmsg = 0;
	buf_init(&msg, RELAY_HANDSHAKE_MAX);
	relay_framer_init(&f, RELAY_HANDSHAKE_MAX);
	while (pos < n) {
		k = n - pos < step ? n - pos : step;
		rc = relay_tds_frame(&f, in + pos, k, &used, &msg, &why);
		assert_true(used <= k);
		pos += used;
		if (rc < 0)
			break;
		if (rc == 1) {
			(*nmsg)++;
			buf_reset(last);
			assert_int_equal(buf_append(last, msg.data, msg.len), 0);
			buf_reset(&msg);
		} else
			assert_int_equal(used, k);
	}
	buf_free(&msg);
	return rc < 0 ? rc : 0;
}

static void
tds_framer(void **state)
{
	unsigned char *s = calloc(1, 5 * 65535);
	struct buf last;
	int n;

	(void)state;
	buf_init(&last, 0);
	/* two packets of one message, then a one-packet message */
	hdr(s, RELAY_TDS_PRELOGIN, 0, 8 + 3);
	memcpy(s + 8, "abc", 3);
	hdr(s + 11, RELAY_TDS_PRELOGIN, 1, 8 + 2);
	memcpy(s + 19, "de", 2);
	hdr(s + 21, RELAY_TDS_REPLY, 1, 8 + 1);
	s[29] = 'x';
	assert_int_equal(frame_all(s, 30, 1, &last, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(last.len, 1);
	assert_int_equal(frame_all(s, 30, 30, &last, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(frame_all(s, 21, 7, &last, &n), 0);
	assert_int_equal(n, 1);
	assert_memory_equal(last.data, "abcde", 5);

	/* the largest packet the header allows */
	hdr(s, RELAY_TDS_REPLY, 1, 65535);
	memset(s + 8, 'A', 65527);
	assert_int_equal(frame_all(s, 65535, 4096, &last, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(last.len, 65527);

	/* packets without end, each at the cap: refused at 256 KiB */
	for (n = 0; n < 5; n++) {
		hdr(s + (size_t)n * 65535, RELAY_TDS_REPLY, 0, 65535);
		memset(s + (size_t)n * 65535 + 8, 'B', 65527);
	}
	assert_int_equal(frame_all(s, 5 * 65535, 65535, &last, &n), DMK_ERR_TOOBIG);

	/* length 4 */
	hdr(s, RELAY_TDS_REPLY, 1, 4);
	assert_int_equal(frame_all(s, 16, 16, &last, &n), DMK_ERR_PROTOCOL);
	buf_free(&last);
	free(s);
}

/* VERSION, ENCRYPTION, INSTOPT, terminator, values */
static size_t
prelogin(unsigned char *p, int enc)
{
	static const unsigned char t[] = {
		0x00, 0, 16, 0, 6,
		0x01, 0, 22, 0, 1,
		0x02, 0, 23, 0, 1,
		0xff,
		16, 0, 3, 0xe8, 0, 0,
		0x01,
		0x00,
	};
	memcpy(p, t, sizeof(t));
	p[22] = (unsigned char)enc;
	return sizeof(t);
}

static void
prelogin_parse(void **state)
{
	struct relay_prelogin pl;
	unsigned char p[64];
	const char *why;
	size_t n;

	(void)state;
	n = prelogin(p, 0x01);
	assert_int_equal(relay_parse_prelogin(p, n, &pl, &why), 0);
	assert_int_equal(pl.enc, 1);
	assert_int_equal(pl.have_version, 1);
	assert_int_equal(pl.version[0], 16);
	n = prelogin(p, 0x7f);
	assert_int_equal(relay_parse_prelogin(p, n, &pl, &why), 0);
	assert_int_equal(pl.enc, 0x7f);

	n = prelogin(p, 1);   /* ENCRYPTION's value past the end */
	p[6] = 0xff;
	assert_int_equal(relay_parse_prelogin(p, n, &pl, &why), DMK_ERR_PROTOCOL);
	n = prelogin(p, 1);   /* VERSION 65535 bytes long */
	p[3] = 0xff;
	p[4] = 0xff;
	assert_int_equal(relay_parse_prelogin(p, n, &pl, &why), DMK_ERR_PROTOCOL);
	n = prelogin(p, 1);   /* ENCRYPTION read from inside the table */
	p[7] = 0;
	assert_int_equal(relay_parse_prelogin(p, n, &pl, &why), DMK_ERR_PROTOCOL);
	n = prelogin(p, 1);   /* ENCRYPTION 2 bytes */
	p[9] = 2;
	assert_int_equal(relay_parse_prelogin(p, n, &pl, &why), DMK_ERR_PROTOCOL);
	n = prelogin(p, 1);   /* ENCRYPTION twice */
	p[10] = 0x01;
	assert_int_equal(relay_parse_prelogin(p, n, &pl, &why), DMK_ERR_PROTOCOL);
	n = prelogin(p, 1);   /* no terminator */
	p[15] = 0x03;
	assert_int_equal(relay_parse_prelogin(p, 15, &pl, &why), DMK_ERR_PROTOCOL);
	assert_int_equal(relay_parse_prelogin(p, 13, &pl, &why), DMK_ERR_PROTOCOL);
	assert_int_equal(relay_parse_prelogin(p, 0, &pl, &why), DMK_ERR_PROTOCOL);
	assert_non_null(why);
	p[0] = 0xff;          /* an empty table is well formed: no ENCRYPTION */
	assert_int_equal(relay_parse_prelogin(p, 1, &pl, &why), 0);
	assert_int_equal(pl.enc, -1);
}

static void
cell_decode(void **state)
{
	static const unsigned char guid[16] = { 0x33, 0x22, 0x11, 0x00, 0x55, 0x44, 0x77, 0x66,
		0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff };
	unsigned char b[16] = { 0 };
	struct sql_value v;
	const char *why;
	int32_t i4 = -5;

	(void)state;
	memcpy(b, &i4, 4);
	assert_int_equal(sql_cell_decode(SYBINT4, b, 4, &v, &why), 0);
	assert_int_equal(v.i, -5);
	assert_int_equal(sql_cell_decode(SYBINT4, b, 1, &v, &why), DMK_ERR_PROTOCOL);
	assert_int_equal(sql_cell_decode(SYBINT8, b, 4, &v, &why), DMK_ERR_PROTOCOL);
	assert_int_equal(sql_cell_decode(SYBINT2, b, 4, &v, &why), DMK_ERR_PROTOCOL);
	assert_int_equal(sql_cell_decode(SYBINTN, b, 3, &v, &why), DMK_ERR_PROTOCOL);
	assert_int_equal(sql_cell_decode(SYBINTN, b, 4, &v, &why), 0);
	assert_int_equal(v.i, -5);
	assert_int_equal(sql_cell_decode(SYBBIT, b, 2, &v, &why), DMK_ERR_PROTOCOL);
	assert_int_equal(sql_cell_decode(SYBINT4, NULL, 4, &v, &why), 0);
	assert_int_equal(v.type, SQLT_NULL);

	assert_int_equal(sql_cell_decode(36, guid, 16, &v, &why), 0);
	assert_string_equal(v.s, "00112233-4455-6677-8899-AABBCCDDEEFF");
	free(v.s);
	assert_int_equal(sql_cell_decode(36, guid, 15, &v, &why), DMK_ERR_PROTOCOL);
	assert_int_equal(sql_cell_decode(36, guid, 17, &v, &why), DMK_ERR_PROTOCOL);

	assert_int_equal(sql_cell_decode(SYBVARCHAR, (const unsigned char *)"ab\0cd", 5, &v, &why),
	    DMK_ERR_PROTOCOL);
	assert_int_equal(sql_cell_decode(SYBNVARCHAR, (const unsigned char *)"abcd", 4, &v, &why),
	    0);
	assert_int_equal(v.len, 4);
	assert_string_equal(v.s, "abcd");
	free(v.s);
	assert_int_equal(sql_cell_decode(SYBDATETIME, b, 8, &v, &why), 1);
}

static int
addr(const char *url, const char *name, char *host, int *port)
{
	struct sql_replica r;

	memset(&r, 0, sizeof(r));
	strcpy(r.routing_url, url);
	strcpy(r.name, name);
	return sql_replica_address(&r, host, 256, port);
}

static void
replica_address(void **state)
{
	char host[256], big[300];
	int port = 0;

	(void)state;
	assert_int_equal(addr("TCP://node2.corp:41002/x:y", "N", host, &port), 0);
	assert_string_equal(host, "node2.corp");
	assert_int_equal(port, 41002);
	assert_int_equal(addr("tcp://node2/a:b", "N", host, &port), 0);
	assert_string_equal(host, "node2");
	assert_int_equal(port, 1433);
	assert_int_equal(addr("tcp://[fe80::1]:2000", "N", host, &port), 0);
	assert_string_equal(host, "fe80::1");
	assert_true(addr("tcp://[::1]xyz", "N", host, &port) < 0);
	assert_true(addr("tcp://[::1", "N", host, &port) < 0);
	assert_true(addr("tcp://[a b]:1", "N", host, &port) < 0);
	assert_true(addr("tcp://h: 1433", "N", host, &port) < 0);
	assert_true(addr("tcp://h:+1433", "N", host, &port) < 0);
	assert_true(addr("tcp://h:-1", "N", host, &port) < 0);
	assert_true(addr("tcp://h:0", "N", host, &port) < 0);
	assert_true(addr("tcp://h:65536", "N", host, &port) < 0);
	assert_true(addr("tcp://h:000001433", "N", host, &port) < 0);
	assert_true(addr("tcp://h:", "N", host, &port) < 0);
	assert_true(addr("tcp://bad host:1", "N", host, &port) < 0);
	assert_true(addr("tcp://:1", "N", host, &port) < 0);
	assert_true(addr("http://h:1", "N", host, &port) < 0);
	assert_true(addr("", "bad name", host, &port) < 0);
	assert_true(addr("", "\\INST", host, &port) < 0);
	memset(big, 'a', 256);
	strcpy(big + 256, ":1");
	{
		struct sql_replica r;

		memset(&r, 0, sizeof(r));
		memcpy(r.routing_url, "tcp://", 6);
		memcpy(r.routing_url + 6, big, 249);   /* fills the field */
		assert_int_equal(sql_replica_address(&r, host, 256, &port), 0);
		assert_true(sql_replica_address(&r, host, 100, &port) < 0);   /* never cut */
	}
}

/* SQL Server Browser's SVR_RESP: every length and field from the network checked. */
static size_t
svr_resp(unsigned char *out, const char *data, int size_delta)
{
	size_t n = strlen(data);

	out[0] = 0x05;
	out[1] = (unsigned char)((n + (size_t)size_delta) & 0xff);
	out[2] = (unsigned char)((n + (size_t)size_delta) >> 8);
	memcpy(out + 3, data, n);
	return n + 3;
}

static void
ssrp_parse(void **state)
{
	unsigned char b[2048];
	const char *why;
	size_t n;
	int port = 0;
	char big[1100];

	(void)state;
	n = svr_resp(b, "ServerName;SQLNODE1;InstanceName;INST1;IsClustered;No;Version;"
	    "15.0.2000.5;tcp;49731;np;\\\\SQLNODE1\\pipe\\MSSQL$INST1\\sql\\query;;", 0);
	assert_int_equal(sql_ssrp_parse(b, n, "inst1", &port, &why), 0);
	assert_int_equal(port, 49731);
	/* two instances (a CLNT_UCAST_EX-style answer): the right block's port */
	n = svr_resp(b, "ServerName;S;InstanceName;A;tcp;1500;;ServerName;S;InstanceName;B;"
	    "tcp;1600;;", 0);
	assert_int_equal(sql_ssrp_parse(b, n, "B", &port, &why), 0);
	assert_int_equal(port, 1600);
	/* lengths and shapes refused */
	assert_true(sql_ssrp_parse(b, 2, "B", &port, &why) < 0);
	assert_non_null(why);
	n = svr_resp(b, "ServerName;S;InstanceName;B;tcp;1600;;", 1);
	assert_true(sql_ssrp_parse(b, n, "B", &port, &why) < 0);
	assert_string_equal(why, "RESP_SIZE does not match the datagram");
	n = svr_resp(b, "ServerName;S;InstanceName;B;tcp;1600;;", -1);
	assert_true(sql_ssrp_parse(b, n, "B", &port, &why) < 0);
	b[0] = 0x04;
	n = svr_resp(b, "ServerName;S;InstanceName;B;tcp;1600;;", 0);
	b[0] = 0x06;
	assert_true(sql_ssrp_parse(b, n, "B", &port, &why) < 0);
	n = svr_resp(b, "ServerName;S;InstanceName;B;tcp;70000;;", 0);
	assert_true(sql_ssrp_parse(b, n, "B", &port, &why) < 0);
	n = svr_resp(b, "ServerName;S;InstanceName;B;tcp;0;;", 0);
	assert_true(sql_ssrp_parse(b, n, "B", &port, &why) < 0);
	n = svr_resp(b, "ServerName;S;InstanceName;B;tcp;12a;;", 0);
	assert_true(sql_ssrp_parse(b, n, "B", &port, &why) < 0);
	n = svr_resp(b, "ServerName;S;InstanceName;B;tcp", 0);   /* unterminated */
	assert_true(sql_ssrp_parse(b, n, "B", &port, &why) < 0);
	n = svr_resp(b, "ServerName;S;InstanceName;C;tcp;1600;;", 0);
	assert_int_equal(sql_ssrp_parse(b, n, "B", &port, &why), DMK_ERR_NOTFOUND);
	n = svr_resp(b, "ServerName;S;InstanceName;B;np;x;;", 0);
	assert_int_equal(sql_ssrp_parse(b, n, "B", &port, &why), DMK_ERR_NOTFOUND);
	n = svr_resp(b, "ServerName;S;InstanceName;BB;tcp;1600;;", 0);   /* a prefix is not a match */
	assert_int_equal(sql_ssrp_parse(b, n, "B", &port, &why), DMK_ERR_NOTFOUND);
	n = svr_resp(b, "ServerName;S;Instance\nName;B;tcp;1600;;", 0);
	assert_true(sql_ssrp_parse(b, n, "B", &port, &why) < 0);
	/* more than the 1024 bytes CLNT_UCAST_INST allows */
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memcpy(big, "InstanceName;B;tcp;1600;", 24);
	n = svr_resp(b, big, 0);
	assert_true(sql_ssrp_parse(b, n, "B", &port, &why) < 0);
	/* instance names the agent asks about */
	assert_true(sql_instance_name_ok("INST1"));
	assert_true(sql_instance_name_ok("SQL$EXPRESS_2"));
	assert_false(sql_instance_name_ok(""));
	assert_false(sql_instance_name_ok("ABCDEFGHIJKLMNOPQ"));
	assert_false(sql_instance_name_ok("a;b"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(tds_header_checks),
		cmocka_unit_test(tds_framer),
		cmocka_unit_test(prelogin_parse),
		cmocka_unit_test(cell_decode),
		cmocka_unit_test(replica_address),
		cmocka_unit_test(ssrp_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
