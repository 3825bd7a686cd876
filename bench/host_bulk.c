/*
 * host_bulk: host-side throughput and control-latency benchmark for a source/sink gadget
 * (Gadget Zero protocol: bulk IN source, bulk OUT sink, vendor control requests 0x5b/0x5c).
 *
 * Written for gadgetd's bench with libusb-1.0's asynchronous API.
 *
 *   host_bulk --device VID:PID [options] in|out|ctrl
 *
 *   in    read --bytes bytes from the first bulk IN endpoint of interface 0, keeping --depth
 *         transfers of --size bytes in flight; report MiB/s.
 *   out   the same, writing to the first bulk OUT endpoint (data: --pattern).
 *   ctrl  --count round trips: vendor OUT request (--req-out, device recipient, wValue =
 *         wIndex = 0) carrying --len bytes, then vendor IN request (--req-in) of --len bytes;
 *         the data read back must equal the data written. Report p50/p99/mean microseconds.
 *
 * Output: one JSON line on stdout. Exit status: 0 on success, 1 on a transfer error (timeout,
 * stall, short control transfer, data mismatch, device gone), 2 on usage or set-up errors.
 *
 * Build: cc -O2 -Wall -o host_bulk host_bulk.c $(pkg-config --cflags --libs libusb-1.0)
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libusb.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MiB (1024.0 * 1024.0)

struct options {
	uint16_t vid, pid;
	bool have_device;
	const char *mode;
	int interface;
	unsigned size;
	unsigned depth;
	uint64_t bytes;
	unsigned count;
	unsigned len;
	unsigned req_out, req_in;
	unsigned timeout_ms;
	double wait_s;
	int pattern;
	bool check;
	bool zerocopy;
	bool clear_halt;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Error line: still one JSON object on stdout, plus a human message on stderr. */
static void json_error(const struct options *o, const char *what, const char *detail)
{
	fprintf(stderr, "host_bulk: %s: %s\n", what, detail);
	printf("{\"mode\":\"%s\",\"device\":\"%04x:%04x\",\"ok\":false,\"error\":\"%s: %s\"}\n",
	       o->mode ? o->mode : "", o->vid, o->pid, what, detail);
	fflush(stdout);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: host_bulk --device VID:PID [options] in|out|ctrl\n"
		"  -d, --device VID:PID   device to open (hex), required\n"
		"  -i, --interface N      interface to claim (default 0)\n"
		"  -s, --size BYTES       bulk request size (default 16384)\n"
		"  -q, --depth N          bulk transfers kept in flight (default 8)\n"
		"  -n, --bytes BYTES      bytes to move in in/out mode (default 64M; K/M/G suffixes)\n"
		"  -p, --pattern 0|1      data pattern: 0 zeros, 1 (i %% maxpacket) %% 63 (default 0)\n"
		"      --check            in mode: verify every byte read against --pattern\n"
		"      --zerocopy         allocate bulk buffers with libusb_dev_mem_alloc (usbfs mmap)\n"
		"      --clear-halt       in/out mode: CLEAR_FEATURE(ENDPOINT_HALT) on the endpoint first\n"
		"  -c, --count N          ctrl mode: round trips (default 1000)\n"
		"  -l, --len BYTES        ctrl mode: data length (default 64; libusb allows <= 4096)\n"
		"      --req-out N        ctrl mode: vendor OUT bRequest (default 0x5b)\n"
		"      --req-in N         ctrl mode: vendor IN bRequest (default 0x5c)\n"
		"  -t, --timeout MS       timeout of each transfer (default 5000)\n"
		"  -w, --wait SECONDS     wait this long for the device to appear (default 0)\n");
}

static bool parse_uint(const char *s, uint64_t *out, bool suffixes)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *s == '-')
		return false;
	if (suffixes && *end) {
		switch (*end++) {
		case 'k': case 'K': v <<= 10; break;
		case 'm': case 'M': v <<= 20; break;
		case 'g': case 'G': v <<= 30; break;
		default: return false;
		}
		if (*end == 'i' && end[1] == 'B')
			end += 2;
	}
	if (*end)
		return false;
	*out = v;
	return true;
}

static bool parse_u32(const char *s, unsigned *out, unsigned max)
{
	uint64_t v;

	if (!parse_uint(s, &v, false) || v > max)
		return false;
	*out = (unsigned)v;
	return true;
}

static int parse_args(int argc, char **argv, struct options *o)
{
	enum { OPT_REQ_OUT = 256, OPT_REQ_IN, OPT_CHECK, OPT_ZEROCOPY, OPT_CLEAR_HALT };
	static const struct option longopts[] = {
		{"device", required_argument, NULL, 'd'},
		{"interface", required_argument, NULL, 'i'},
		{"size", required_argument, NULL, 's'},
		{"depth", required_argument, NULL, 'q'},
		{"bytes", required_argument, NULL, 'n'},
		{"pattern", required_argument, NULL, 'p'},
		{"check", no_argument, NULL, OPT_CHECK},
		{"zerocopy", no_argument, NULL, OPT_ZEROCOPY},
		{"clear-halt", no_argument, NULL, OPT_CLEAR_HALT},
		{"count", required_argument, NULL, 'c'},
		{"len", required_argument, NULL, 'l'},
		{"req-out", required_argument, NULL, OPT_REQ_OUT},
		{"req-in", required_argument, NULL, OPT_REQ_IN},
		{"timeout", required_argument, NULL, 't'},
		{"wait", required_argument, NULL, 'w'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	uint64_t v;
	unsigned vid, pid, n;
	int c, used;
	char *end;

	while ((c = getopt_long(argc, argv, "d:i:s:q:n:p:c:l:t:w:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			if (sscanf(optarg, "%x:%x%n", &vid, &pid, &used) != 2 || optarg[used] ||
			    vid > 0xffff || pid > 0xffff)
				goto bad;
			o->vid = vid;
			o->pid = pid;
			o->have_device = true;
			break;
		case 'i':
			if (!parse_u32(optarg, &n, 255))
				goto bad;
			o->interface = (int)n;
			break;
		case 's':
			if (!parse_uint(optarg, &v, true) || v == 0 || v > (1u << 30))
				goto bad;
			o->size = (unsigned)v;
			break;
		case 'q':
			if (!parse_u32(optarg, &o->depth, 4096) || o->depth == 0)
				goto bad;
			break;
		case 'n':
			if (!parse_uint(optarg, &o->bytes, true) || o->bytes == 0)
				goto bad;
			break;
		case 'p':
			if (!parse_u32(optarg, &n, 1))
				goto bad;
			o->pattern = (int)n;
			break;
		case OPT_CHECK:
			o->check = true;
			break;
		case OPT_ZEROCOPY:
			o->zerocopy = true;
			break;
		case OPT_CLEAR_HALT:
			o->clear_halt = true;
			break;
		case 'c':
			if (!parse_u32(optarg, &o->count, 100000000) || o->count == 0)
				goto bad;
			break;
		case 'l':
			if (!parse_u32(optarg, &o->len, 0xffff))
				goto bad;
			break;
		case OPT_REQ_OUT:
			if (!parse_u32(optarg, &o->req_out, 0xff))
				goto bad;
			break;
		case OPT_REQ_IN:
			if (!parse_u32(optarg, &o->req_in, 0xff))
				goto bad;
			break;
		case 't':
			if (!parse_u32(optarg, &o->timeout_ms, 3600000))
				goto bad;
			break;
		case 'w':
			o->wait_s = strtod(optarg, &end);
			if (*end || o->wait_s < 0)
				goto bad;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind != argc - 1 || !o->have_device) {
		usage(stderr);
		return -1;
	}
	o->mode = argv[optind];
	if (strcmp(o->mode, "in") && strcmp(o->mode, "out") && strcmp(o->mode, "ctrl")) {
		usage(stderr);
		return -1;
	}
	return 0;
bad:
	fprintf(stderr, "host_bulk: bad value for -%c: %s\n", c < 256 ? c : '-', optarg);
	return -1;
}

static const char *speed_name(int speed)
{
	switch (speed) {
	case LIBUSB_SPEED_LOW: return "low";
	case LIBUSB_SPEED_FULL: return "full";
	case LIBUSB_SPEED_HIGH: return "high";
	case LIBUSB_SPEED_SUPER: return "super";
	case LIBUSB_SPEED_SUPER_PLUS: return "super-plus";
	default: return "unknown";
	}
}

static const char *transfer_status_name(enum libusb_transfer_status s)
{
	switch (s) {
	case LIBUSB_TRANSFER_COMPLETED: return "completed";
	case LIBUSB_TRANSFER_ERROR: return "transfer error";
	case LIBUSB_TRANSFER_TIMED_OUT: return "timed out";
	case LIBUSB_TRANSFER_CANCELLED: return "cancelled";
	case LIBUSB_TRANSFER_STALL: return "stall";
	case LIBUSB_TRANSFER_NO_DEVICE: return "no device";
	case LIBUSB_TRANSFER_OVERFLOW: return "overflow";
	default: return "unknown status";
	}
}

/* ------------------------------------------------------------------------------------------ */
/* Device set-up */

struct device {
	libusb_context *ctx;
	libusb_device_handle *h;
	uint8_t ep_in, ep_out;
	uint16_t mps_in, mps_out;
	int speed;
};

static int open_device(const struct options *o, struct device *d)
{
	struct libusb_config_descriptor *cfg = NULL;
	double deadline = now_s() + o->wait_s;
	int r, i, a, e;

	r = libusb_init(&d->ctx);
	if (r) {
		json_error(o, "libusb_init", libusb_strerror(r));
		return -1;
	}
	for (;;) {
		d->h = libusb_open_device_with_vid_pid(d->ctx, o->vid, o->pid);
		if (d->h || now_s() >= deadline)
			break;
		usleep(100000);
	}
	if (!d->h) {
		json_error(o, "open", "device not found (or no permission)");
		return -1;
	}
	d->speed = libusb_get_device_speed(libusb_get_device(d->h));
	/* usbtest (or any driver) may be bound to the interface: detach it while we use it. */
	libusb_set_auto_detach_kernel_driver(d->h, 1);
	r = libusb_claim_interface(d->h, o->interface);
	if (r) {
		json_error(o, "claim interface", libusb_strerror(r));
		return -1;
	}
	r = libusb_get_active_config_descriptor(libusb_get_device(d->h), &cfg);
	if (r) {
		json_error(o, "config descriptor", libusb_strerror(r));
		return -1;
	}
	for (i = 0; i < cfg->bNumInterfaces; i++) {
		const struct libusb_interface *itf = &cfg->interface[i];

		for (a = 0; a < itf->num_altsetting; a++) {
			const struct libusb_interface_descriptor *alt = &itf->altsetting[a];

			/* the interface's current altsetting is 0 right after configuration */
			if (alt->bInterfaceNumber != o->interface || alt->bAlternateSetting != 0)
				continue;
			for (e = 0; e < alt->bNumEndpoints; e++) {
				const struct libusb_endpoint_descriptor *ep = &alt->endpoint[e];

				if ((ep->bmAttributes & 3) != LIBUSB_TRANSFER_TYPE_BULK)
					continue;
				if ((ep->bEndpointAddress & LIBUSB_ENDPOINT_IN) && !d->ep_in) {
					d->ep_in = ep->bEndpointAddress;
					d->mps_in = ep->wMaxPacketSize & 0x7ff;
				} else if (!(ep->bEndpointAddress & LIBUSB_ENDPOINT_IN) && !d->ep_out) {
					d->ep_out = ep->bEndpointAddress;
					d->mps_out = ep->wMaxPacketSize & 0x7ff;
				}
			}
		}
	}
	libusb_free_config_descriptor(cfg);
	return 0;
}

static void close_device(const struct options *o, struct device *d)
{
	if (d->h) {
		libusb_release_interface(d->h, o->interface);
		libusb_close(d->h);
	}
	if (d->ctx)
		libusb_exit(d->ctx);
}

static void fill_pattern(uint8_t *buf, size_t len, int pattern, unsigned mps)
{
	size_t i;

	if (pattern == 0 || !mps) {
		memset(buf, 0, len);
		return;
	}
	for (i = 0; i < len; i++)
		buf[i] = (uint8_t)((i % mps) % 63);
}

/* ------------------------------------------------------------------------------------------ */
/* Bulk streaming: DEPTH transfers of SIZE bytes in flight until BYTES have moved. */

struct stream {
	const struct options *o;
	bool is_in;
	uint64_t target;        /* bytes to move */
	uint64_t done;          /* bytes moved (actual_length) */
	uint64_t inflight_len;  /* bytes requested by transfers in flight */
	unsigned inflight;
	uint64_t transfers;
	uint64_t short_transfers;
	const uint8_t *expected; /* in mode with --check: reference buffer of SIZE bytes */
	bool failed;
	char error[160];
};

static void stream_fail(struct stream *s, const char *fmt, const char *detail)
{
	if (!s->failed) {
		s->failed = true;
		snprintf(s->error, sizeof s->error, fmt, detail);
	}
}

static int stream_submit(struct stream *s, struct libusb_transfer *t)
{
	uint64_t left = s->target - s->done - s->inflight_len;
	int r;

	t->length = (int)(left < s->o->size ? left : s->o->size);
	r = libusb_submit_transfer(t);
	if (r) {
		stream_fail(s, "submit: %s", libusb_strerror(r));
		return r;
	}
	s->inflight++;
	s->inflight_len += (uint64_t)t->length;
	return 0;
}

static void LIBUSB_CALL stream_cb(struct libusb_transfer *t)
{
	struct stream *s = t->user_data;

	s->inflight--;
	s->inflight_len -= (uint64_t)t->length;
	if (t->status != LIBUSB_TRANSFER_COMPLETED) {
		if (t->status != LIBUSB_TRANSFER_CANCELLED || !s->failed)
			stream_fail(s, "bulk transfer: %s", transfer_status_name(t->status));
		return;
	}
	s->transfers++;
	s->done += (uint64_t)t->actual_length;
	if (t->actual_length < t->length)
		s->short_transfers++;
	if (s->expected && memcmp(t->buffer, s->expected, (size_t)t->actual_length)) {
		stream_fail(s, "%s", "IN data does not match the pattern");
		return;
	}
	if (s->failed)
		return;
	if (!s->is_in && t->actual_length < t->length) {
		stream_fail(s, "%s", "short OUT transfer");
		return;
	}
	if (s->done + s->inflight_len < s->target)
		stream_submit(s, t);
}

static int run_stream(const struct options *o, struct device *d)
{
	bool is_in = !strcmp(o->mode, "in");
	uint8_t ep = is_in ? d->ep_in : d->ep_out;
	unsigned mps = is_in ? d->mps_in : d->mps_out;
	struct libusb_transfer **xfers;
	uint8_t **bufs;
	uint8_t *expected = NULL;
	struct stream s = {.o = o, .is_in = is_in, .target = o->bytes};
	bool zerocopy = o->zerocopy;
	double t0, t1;
	unsigned i;
	int r;

	if (!ep) {
		json_error(o, "endpoint", is_in ? "no bulk IN endpoint on the interface"
						: "no bulk OUT endpoint on the interface");
		return 2;
	}
	if (o->clear_halt) {
		r = libusb_clear_halt(d->h, ep);
		if (r) {
			json_error(o, "clear halt", libusb_strerror(r));
			return 1;
		}
	}
	xfers = calloc(o->depth, sizeof *xfers);
	bufs = calloc(o->depth, sizeof *bufs);
	if (!xfers || !bufs) {
		json_error(o, "memory", strerror(ENOMEM));
		return 2;
	}
	for (i = 0; i < o->depth; i++) {
		bufs[i] = zerocopy ? libusb_dev_mem_alloc(d->h, o->size) : NULL;
		if (!bufs[i]) { /* no usbfs mmap: plain memory (reported as "zerocopy":false) */
			zerocopy = false;
			bufs[i] = malloc(o->size);
		}
		xfers[i] = libusb_alloc_transfer(0);
		if (!bufs[i] || !xfers[i]) {
			json_error(o, "memory", strerror(ENOMEM));
			return 2;
		}
		if (is_in)
			memset(bufs[i], 0x55, o->size);
		else
			fill_pattern(bufs[i], o->size, o->pattern, mps);
		libusb_fill_bulk_transfer(xfers[i], d->h, ep, bufs[i], (int)o->size, stream_cb, &s,
					  o->timeout_ms);
	}
	if (is_in && o->check) {
		expected = malloc(o->size);
		if (!expected) {
			json_error(o, "memory", strerror(ENOMEM));
			return 2;
		}
		fill_pattern(expected, o->size, o->pattern, mps);
		s.expected = expected;
	}

	t0 = now_s();
	for (i = 0; i < o->depth && s.done + s.inflight_len < s.target && !s.failed; i++)
		stream_submit(&s, xfers[i]);
	while (s.inflight) {
		if (s.failed) {
			for (i = 0; i < o->depth; i++)
				libusb_cancel_transfer(xfers[i]); /* NOT_FOUND for idle ones: fine */
		}
		r = libusb_handle_events(d->ctx);
		if (r && r != LIBUSB_ERROR_INTERRUPTED) {
			stream_fail(&s, "handle events: %s", libusb_strerror(r));
			break;
		}
	}
	t1 = now_s();

	if (s.failed) {
		fprintf(stderr, "host_bulk: %s after %" PRIu64 " bytes\n", s.error, s.done);
		printf("{\"mode\":\"%s\",\"device\":\"%04x:%04x\",\"ok\":false,\"error\":\"%s\","
		       "\"bytes\":%" PRIu64 ",\"seconds\":%.6f}\n",
		       o->mode, o->vid, o->pid, s.error, s.done, t1 - t0);
		return 1;
	}
	printf("{\"mode\":\"%s\",\"device\":\"%04x:%04x\",\"ok\":true,\"speed\":\"%s\","
	       "\"endpoint\":\"0x%02x\",\"max_packet\":%u,\"size\":%u,\"depth\":%u,"
	       "\"bytes\":%" PRIu64 ",\"transfers\":%" PRIu64 ",\"short_transfers\":%" PRIu64 ","
	       "\"pattern\":%d,\"checked\":%s,\"zerocopy\":%s,\"seconds\":%.6f,\"mib_per_s\":%.2f}\n",
	       o->mode, o->vid, o->pid, speed_name(d->speed), ep, mps, o->size, o->depth, s.done,
	       s.transfers, s.short_transfers, o->pattern, s.expected ? "true" : "false",
	       zerocopy ? "true" : "false", t1 - t0, s.done / MiB / (t1 - t0));
	/* buffers and transfers are released at exit */
	return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Control round trips, one transfer at a time through the asynchronous API. */

struct ctrl_wait {
	int done; /* an int: libusb_handle_events_completed() watches it */
};

static void LIBUSB_CALL ctrl_cb(struct libusb_transfer *t)
{
	((struct ctrl_wait *)t->user_data)->done = 1;
}

/* Submit one control transfer and run the event loop until it completes. Returns the
 * transfer status, or LIBUSB_TRANSFER_ERROR with *submit_error set if it was not submitted. */
static enum libusb_transfer_status ctrl_once(struct device *d, struct libusb_transfer *t,
					     int *submit_error)
{
	struct ctrl_wait w = {0};
	int r;

	t->user_data = &w;
	t->callback = ctrl_cb;
	t->actual_length = 0;
	*submit_error = libusb_submit_transfer(t);
	if (*submit_error)
		return LIBUSB_TRANSFER_ERROR;
	while (!w.done) {
		r = libusb_handle_events_completed(d->ctx, &w.done);
		if (r && r != LIBUSB_ERROR_INTERRUPTED) {
			libusb_cancel_transfer(t);
			while (!w.done)
				libusb_handle_events_completed(d->ctx, &w.done);
			return LIBUSB_TRANSFER_ERROR;
		}
	}
	return t->status;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double percentile(const double *sorted, unsigned n, double p)
{
	/* nearest rank */
	unsigned rank = (unsigned)(p * n + 0.999999);

	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return sorted[rank - 1];
}

static int run_ctrl(const struct options *o, struct device *d)
{
	size_t buflen = LIBUSB_CONTROL_SETUP_SIZE + o->len;
	uint8_t *out = malloc(buflen), *in = malloc(buflen);
	double *lat = calloc(o->count, sizeof *lat);
	struct libusb_transfer *t = libusb_alloc_transfer(0);
	enum libusb_transfer_status st;
	int serr;
	char err[200] = "";
	double t0, t1, sum = 0, start;
	unsigned i, j, done = 0;

	if (!out || !in || !lat || !t) {
		json_error(o, "memory", strerror(ENOMEM));
		return 2;
	}
	t0 = now_s();
	for (i = 0; i < o->count; i++) {
		for (j = 0; j < o->len; j++)
			out[LIBUSB_CONTROL_SETUP_SIZE + j] = (uint8_t)(i + j);
		memset(in + LIBUSB_CONTROL_SETUP_SIZE, 0xa5, o->len);
		libusb_fill_control_setup(out, LIBUSB_ENDPOINT_OUT | LIBUSB_REQUEST_TYPE_VENDOR |
					  LIBUSB_RECIPIENT_DEVICE, (uint8_t)o->req_out, 0, 0,
					  (uint16_t)o->len);
		libusb_fill_control_setup(in, LIBUSB_ENDPOINT_IN | LIBUSB_REQUEST_TYPE_VENDOR |
					  LIBUSB_RECIPIENT_DEVICE, (uint8_t)o->req_in, 0, 0,
					  (uint16_t)o->len);

		start = now_s();
		libusb_fill_control_transfer(t, d->h, out, NULL, NULL, o->timeout_ms);
		st = ctrl_once(d, t, &serr);
		if (st != LIBUSB_TRANSFER_COMPLETED || (unsigned)t->actual_length != o->len) {
			snprintf(err, sizeof err, "OUT request 0x%02x #%u: %s, %d of %u bytes",
				 o->req_out, i, serr ? libusb_strerror(serr) : transfer_status_name(st),
				 t->actual_length, o->len);
			break;
		}
		libusb_fill_control_transfer(t, d->h, in, NULL, NULL, o->timeout_ms);
		st = ctrl_once(d, t, &serr);
		if (st != LIBUSB_TRANSFER_COMPLETED || (unsigned)t->actual_length != o->len) {
			snprintf(err, sizeof err, "IN request 0x%02x #%u: %s, %d of %u bytes",
				 o->req_in, i, serr ? libusb_strerror(serr) : transfer_status_name(st),
				 t->actual_length, o->len);
			break;
		}
		lat[i] = (now_s() - start) * 1e6;
		if (memcmp(in + LIBUSB_CONTROL_SETUP_SIZE, out + LIBUSB_CONTROL_SETUP_SIZE, o->len)) {
			for (j = 0; j < o->len; j++)
				if (in[LIBUSB_CONTROL_SETUP_SIZE + j] != out[LIBUSB_CONTROL_SETUP_SIZE + j])
					break;
			snprintf(err, sizeof err,
				 "data mismatch in round trip #%u at byte %u: read 0x%02x, wrote 0x%02x",
				 i, j, in[LIBUSB_CONTROL_SETUP_SIZE + j], out[LIBUSB_CONTROL_SETUP_SIZE + j]);
			break;
		}
		sum += lat[i];
		done++;
	}
	t1 = now_s();
	libusb_free_transfer(t);

	if (err[0]) {
		fprintf(stderr, "host_bulk: %s\n", err);
		printf("{\"mode\":\"ctrl\",\"device\":\"%04x:%04x\",\"ok\":false,\"error\":\"%s\","
		       "\"completed\":%u}\n", o->vid, o->pid, err, done);
		return 1;
	}
	qsort(lat, done, sizeof *lat, cmp_double);
	printf("{\"mode\":\"ctrl\",\"device\":\"%04x:%04x\",\"ok\":true,\"speed\":\"%s\","
	       "\"req_out\":\"0x%02x\",\"req_in\":\"0x%02x\",\"len\":%u,\"count\":%u,"
	       "\"p50_us\":%.1f,\"p99_us\":%.1f,\"mean_us\":%.1f,\"min_us\":%.1f,\"max_us\":%.1f,"
	       "\"seconds\":%.6f}\n",
	       o->vid, o->pid, speed_name(d->speed), o->req_out, o->req_in, o->len, done,
	       percentile(lat, done, 0.50), percentile(lat, done, 0.99), sum / done, lat[0],
	       lat[done - 1], t1 - t0);
	return 0;
}

int main(int argc, char **argv)
{
	struct options o = {
		.size = 16384, .depth = 8, .bytes = 64ull << 20, .count = 1000, .len = 64,
		.req_out = 0x5b, .req_in = 0x5c, .timeout_ms = 5000,
	};
	struct device d = {0};
	int status;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (parse_args(argc, argv, &o))
		return 2;
	if (open_device(&o, &d)) {
		close_device(&o, &d);
		return 2;
	}
	status = !strcmp(o.mode, "ctrl") ? run_ctrl(&o, &d) : run_stream(&o, &d);
	close_device(&o, &d);
	return status;
}
