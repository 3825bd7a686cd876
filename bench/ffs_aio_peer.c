// SPDX-License-Identifier: GPL-3.0-or-later
/*
 * ffs_aio_peer: the bench's C peer at the FunctionFS limit. A FunctionFS source AND sink over
 * Linux AIO, both directions at once, with what gadgetd's sourcesink function uses: the same
 * descriptors and strings (the blob files `python -m gadgetd blobs
 * configfs_templates/sourcesink.toml ss0 --out DIR` writes), the same request size and queue
 * depth. It is what a FunctionFS program written in C can do, for gadgetd to be measured against.
 *
 *   ffs_aio_peer MOUNTPOINT DESCRIPTORS_BLOB STRINGS_BLOB [REQUEST_SIZE [QUEUE_DEPTH]]
 *                                                         (defaults 65536 and 8)
 *
 * Source: QUEUE_DEPTH writes of REQUEST_SIZE zero bytes (pattern 0) on the bulk IN endpoint.
 * Sink: QUEUE_DEPTH reads of REQUEST_SIZE bytes on the bulk OUT endpoint, data discarded.
 * Each request is submitted again as soon as it completes, while the function is enabled.
 * Control: Gadget Zero's vendor echo, as gadgetd's sourcesink answers it (0x5b, OUT, device
 * recipient: store up to 4096 bytes; 0x5c, IN: return them, zero padded); every other SETUP is
 * STALLed. It gives the control round trip of a FunctionFS program written in C.
 *
 * The descriptor blob decides which endpoint file is which: epN is the N-th endpoint descriptor,
 * and the blob must have exactly one bulk IN and one bulk OUT endpoint (sourcesink.toml: ep1 IN,
 * ep2 OUT). The blobs are written to ep0 byte for byte as read.
 *
 * stdout: one JSON line per second, "in" = device to host (what the source sent), "out" = host
 * to device (what the sink received): bytes in that second and in total, plus counters; a last
 * line with "final": true on exit. stderr: ep0 events and errors.
 * Exit status: 0 on SIGTERM/SIGINT, 1 on a fatal error, 2 on usage errors.
 *
 * Build: gcc -O2 -Wall -Wextra -o ffs_aio_peer ffs_aio_peer.c -laio
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libaio.h>
#include <limits.h>
#include <linux/usb/ch9.h>
#include <linux/usb/functionfs.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_REQUEST_SIZE 65536
#define DEFAULT_QUEUE_DEPTH 8
#define MAX_REQUEST_SIZE (16u << 20)
#define MAX_QUEUE_DEPTH 256
#define MAX_BLOB (1u << 20)
#define EP0_EVENTS 4 /* f_fs queues at most four events */
#define CANCEL_WAIT_MS 3000

enum dir { IN, OUT };
static const char *const dir_name[] = {"in", "out"};

struct request {
	struct iocb iocb; /* first: an io_event's obj points here */
	enum dir dir;
	bool in_flight;
};

struct stats {
	uint64_t bytes[2];    /* completed, per direction */
	uint64_t cancelled[2]; /* -ESHUTDOWN / -ECONNRESET completions */
	uint64_t not_enabled[2]; /* -EAGAIN/-ENODEV completions: submitted while disabled */
	uint64_t errors[2];   /* any other failed completion or submit */
	uint64_t events;      /* ep0 events read */
	uint64_t stalls;      /* SETUPs STALLed */
	uint64_t setups_cancelled; /* SETUPs a newer event cancelled before the STALL */
};

struct peer {
	int ep0, ep[2], efd;
	io_context_t ctx;
	struct request *req; /* 2 * depth: IN requests first */
	struct iocb **batch; /* scratch for io_submit */
	struct io_event *done; /* scratch for io_getevents */
	unsigned depth, nreq;
	size_t size;
	bool running; /* enabled: completed requests are submitted again */
	unsigned in_flight;
	struct stats st;
};

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
	stop_signal = sig;
}

static void vnote(const char *fmt, va_list ap)
{
	fputs("ffs_aio_peer: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

static void note(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vnote(fmt, ap);
	va_end(ap);
}

static void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vnote(fmt, ap);
	va_end(ap);
	exit(1);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* --- blobs ---------------------------------------------------------------------------------- */

static unsigned char *read_blob(const char *path, size_t *len)
{
	struct stat sb;
	unsigned char *data;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		die("%s: %s", path, strerror(errno));
	if (fstat(fd, &sb) < 0)
		die("%s: %s", path, strerror(errno));
	if (!S_ISREG(sb.st_mode) || sb.st_size < 16 || (uintmax_t)sb.st_size > MAX_BLOB)
		die("%s: not a blob file (a regular file of 16 bytes to 1 MiB)", path);
	data = malloc(sb.st_size);
	if (!data)
		die("out of memory");
	while (got < (size_t)sb.st_size) {
		ssize_t r = read(fd, data + got, sb.st_size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			die("%s: %s", path, r < 0 ? strerror(errno) : "shorter than its size");
		got += r;
	}
	close(fd);
	*len = got;
	return data;
}

static uint32_t le32_at(const unsigned char *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

/*
 * Check a v2 descriptor blob and find its endpoints: *ep_in and *ep_out become the numbers of
 * the files (epN) of the bulk IN and the bulk OUT endpoint, numbered in descriptor order of the
 * first speed the blob has, as f_fs numbers them.
 */
static void parse_descriptors(const char *path, const unsigned char *blob, size_t len,
			      unsigned *ep_in, unsigned *ep_out)
{
	const uint32_t speeds = FUNCTIONFS_HAS_FS_DESC | FUNCTIONFS_HAS_HS_DESC |
				FUNCTIONFS_HAS_SS_DESC;
	const uint32_t known = speeds | FUNCTIONFS_HAS_MS_OS_DESC | FUNCTIONFS_ALL_CTRL_RECIP |
			       FUNCTIONFS_CONFIG0_SETUP;
	uint32_t flags, count = 0;
	size_t off = 12;
	unsigned endpoints = 0, i;

	if (le32_at(blob) != FUNCTIONFS_DESCRIPTORS_MAGIC_V2)
		die("%s: not a FunctionFS v2 descriptor blob (magic %" PRIu32 ", want %d)", path,
		    le32_at(blob), FUNCTIONFS_DESCRIPTORS_MAGIC_V2);
	if (le32_at(blob + 4) != len)
		die("%s: its length field says %" PRIu32 " bytes, the file has %zu", path,
		    le32_at(blob + 4), len);
	flags = le32_at(blob + 8);
	if (flags & ~known)
		die("%s: flags 0x%" PRIx32 " not supported here (VIRTUAL_ADDR renames the endpoint "
		    "files, EVENTFD needs an fd of ours)", path, flags & ~known);
	if (!(flags & speeds))
		die("%s: no descriptors for any speed", path);
	/* fs_count, hs_count, ss_count for the speeds present (then os_count): take the first */
	for (i = 0; i < 3; i++) {
		if (!(flags & (1u << i)))
			continue;
		if (off + 4 > len)
			die("%s: truncated header", path);
		if (!count)
			count = le32_at(blob + off);
		off += 4;
	}
	if (flags & FUNCTIONFS_HAS_MS_OS_DESC)
		off += 4;
	*ep_in = *ep_out = 0;
	for (i = 0; i < count; i++) {
		const unsigned char *d = blob + off;

		if (off + 2 > len || d[0] < 2 || off + d[0] > len)
			die("%s: descriptor %u runs past the end of the blob", path, i);
		if (d[1] == USB_DT_ENDPOINT) {
			const struct usb_endpoint_descriptor *ep = (const void *)d;

			if (d[0] < USB_DT_ENDPOINT_SIZE)
				die("%s: short endpoint descriptor", path);
			endpoints++;
			if ((ep->bmAttributes & USB_ENDPOINT_XFERTYPE_MASK) ==
			    USB_ENDPOINT_XFER_BULK) {
				unsigned *slot = (ep->bEndpointAddress & USB_DIR_IN) ? ep_in : ep_out;

				if (*slot)
					die("%s: more than one bulk %s endpoint", path,
					    slot == ep_in ? "IN" : "OUT");
				*slot = endpoints;
			}
		}
		off += d[0];
	}
	if (endpoints != 2 || !*ep_in || !*ep_out)
		die("%s: want exactly two endpoints, one bulk IN and one bulk OUT (found %u "
		    "endpoints)", path, endpoints);
}

static void parse_strings(const char *path, const unsigned char *blob, size_t len)
{
	if (le32_at(blob) != FUNCTIONFS_STRINGS_MAGIC)
		die("%s: not a FunctionFS strings blob (magic %" PRIu32 ", want %d)", path,
		    le32_at(blob), FUNCTIONFS_STRINGS_MAGIC);
	if (le32_at(blob + 4) != len)
		die("%s: its length field says %" PRIu32 " bytes, the file has %zu", path,
		    le32_at(blob + 4), len);
}

static void write_blob(int ep0, const char *ep0_path, const char *what,
		       const unsigned char *blob, size_t len)
{
	ssize_t r;

	do
		r = write(ep0, blob, len);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		die("%s: writing the %s: %s", ep0_path, what, strerror(errno));
	if ((size_t)r != len)
		die("%s: writing the %s: %zd of %zu bytes written", ep0_path, what, r, len);
}

/* --- AIO ------------------------------------------------------------------------------------ */

/* Submit the given requests; those the kernel refuses stay idle (counted as errors). */
static void submit(struct peer *p, unsigned n)
{
	unsigned done = 0, i;

	while (done < n) {
		int r = io_submit(p->ctx, n - done, p->batch + done);

		if (r == -EINTR)
			continue;
		if (r <= 0) {
			struct request *rq = (struct request *)p->batch[done];

			p->st.errors[rq->dir]++;
			note("io_submit (%s): %s", dir_name[rq->dir], strerror(r < 0 ? -r : EIO));
			break;
		}
		for (i = done; i < done + (unsigned)r; i++)
			((struct request *)p->batch[i])->in_flight = true;
		p->in_flight += r;
		done += r;
	}
}

/* ENABLE: every idle request goes out (those still in flight follow as they complete). */
static void submit_idle(struct peer *p)
{
	unsigned i, n = 0;

	for (i = 0; i < p->nreq; i++)
		if (!p->req[i].in_flight)
			p->batch[n++] = &p->req[i].iocb;
	submit(p, n);
}

static void reap(struct peer *p)
{
	struct timespec zero = {0, 0};
	unsigned n = 0;
	uint64_t count;
	int got, i;

	if (read(p->efd, &count, sizeof(count)) < 0 && errno != EAGAIN && errno != EINTR)
		die("reading the eventfd: %s", strerror(errno));
	do {
		do
			got = io_getevents(p->ctx, 0, p->nreq, p->done, &zero);
		while (got == -EINTR);
		if (got < 0)
			die("io_getevents: %s", strerror(-got));
		for (i = 0; i < got; i++) {
			struct request *rq = (struct request *)p->done[i].obj;
			long res = (long)p->done[i].res;

			rq->in_flight = false;
			p->in_flight--;
			if (res >= 0) {
				p->st.bytes[rq->dir] += res;
			} else if (res == -EAGAIN || res == -ENODEV) {
				/* submitted while the endpoint was disabled: wait for ENABLE */
				p->st.not_enabled[rq->dir]++;
				continue;
			} else if (res == -ESHUTDOWN || res == -ECONNRESET) {
				/* dequeued: endpoint disabled, re-enabled, or cancelled */
				p->st.cancelled[rq->dir]++;
			} else {
				if (p->st.errors[rq->dir]++ < 10)
					note("bulk %s request failed: %s", dir_name[rq->dir],
					     strerror(-res));
			}
			if (p->running)
				p->batch[n++] = &rq->iocb;
		}
	} while (got == (int)p->nreq);
	submit(p, n);
}

/* Exit: cancel what is in flight, collect the completions (f_fs delivers them on the ring). */
static void cancel_all(struct peer *p)
{
	struct io_event ev;
	double deadline;
	unsigned i;

	p->running = false;
	for (i = 0; i < p->nreq; i++)
		if (p->req[i].in_flight)
			io_cancel(p->ctx, &p->req[i].iocb, &ev); /* 0 or -EINPROGRESS: fine */
	deadline = now_s() + CANCEL_WAIT_MS / 1000.0;
	while (p->in_flight && now_s() < deadline) {
		struct pollfd pfd = {.fd = p->efd, .events = POLLIN};

		if (poll(&pfd, 1, 100) > 0)
			reap(p);
	}
	if (p->in_flight)
		note("%u requests still in flight after cancelling them", p->in_flight);
}

/* --- ep0 ------------------------------------------------------------------------------------ */

/* f_fs STALLs when the data stage goes the wrong way: read for an IN request, write for an OUT
 * one. It answers EL2HLT; EIDRM means a newer event cancelled the SETUP first. Either way ep0 has
 * no pending SETUP afterwards. */
static void stall(struct peer *p, const struct usb_ctrlrequest *setup)
{
	ssize_t r;

	do
		r = (setup->bRequestType & USB_DIR_IN) ? read(p->ep0, NULL, 0)
						      : write(p->ep0, NULL, 0);
	while (r < 0 && errno == EINTR);
	if (r < 0 && errno == EL2HLT)
		p->st.stalls++;
	else if (r < 0 && errno == EIDRM)
		p->st.setups_cancelled++;
	else
		note("STALL of SETUP %02x %02x did not stall: %s", setup->bRequestType,
		     setup->bRequest, r < 0 ? strerror(errno) : "the call succeeded");
}

/* Gadget Zero's vendor requests (f_sourcesink.c), answered from one buffer. */
#define GZ_WRITE 0x5b
#define GZ_READ 0x5c
#define GZ_MAX 4096
static unsigned char control_buffer[GZ_MAX];

/* The data stage of an echo request; false when the SETUP is not one (it is STALLed then). */
static bool echo(struct peer *p, const struct usb_ctrlrequest *s)
{
	size_t len = le16toh(s->wLength);
	bool in = s->bRequestType & USB_DIR_IN;
	ssize_t r;

	if ((s->bRequestType & (USB_TYPE_MASK | USB_RECIP_MASK)) != (USB_TYPE_VENDOR | USB_RECIP_DEVICE)
	    || s->wValue || s->wIndex || len > GZ_MAX
	    || !((s->bRequest == GZ_WRITE && !in) || (s->bRequest == GZ_READ && in)))
		return false;
	do
		r = in ? write(p->ep0, control_buffer, len) : read(p->ep0, control_buffer, len);
	while (r < 0 && errno == EINTR);
	if (r < 0 && errno == EIDRM)
		p->st.setups_cancelled++;
	else if (r < 0)
		note("echo %02x of %zu bytes: %s", s->bRequest, len, strerror(errno));
	return true;
}

static const char *event_name(unsigned type)
{
	switch (type) {
	case FUNCTIONFS_BIND: return "BIND";
	case FUNCTIONFS_UNBIND: return "UNBIND";
	case FUNCTIONFS_ENABLE: return "ENABLE";
	case FUNCTIONFS_DISABLE: return "DISABLE";
	case FUNCTIONFS_SETUP: return "SETUP";
	case FUNCTIONFS_SUSPEND: return "SUSPEND";
	case FUNCTIONFS_RESUME: return "RESUME";
	default: return "UNKNOWN";
	}
}

static void handle_ep0(struct peer *p, const char *ep0_path)
{
	struct usb_functionfs_event ev[EP0_EVENTS];
	ssize_t r = read(p->ep0, ev, sizeof(ev));
	size_t i, n;

	if (r < 0) {
		/* EIDRM: a SETUP was cancelled, nothing to read */
		if (errno == EIDRM || errno == EINTR || errno == EAGAIN)
			return;
		die("%s: reading events: %s", ep0_path, strerror(errno));
	}
	if (r == 0)
		die("%s: reading events: end of file (not a FunctionFS ep0?)", ep0_path);
	if (r % sizeof(ev[0]))
		die("%s: reading events: %zd bytes, not a multiple of %zu (not a FunctionFS ep0?)",
		    ep0_path, r, sizeof(ev[0]));
	n = r / sizeof(ev[0]);
	for (i = 0; i < n; i++) {
		const struct usb_ctrlrequest *s = &ev[i].u.setup;

		p->st.events++;
		switch (ev[i].type) {
		case FUNCTIONFS_ENABLE:
			note("ENABLE");
			p->running = true;
			submit_idle(p);
			break;
		case FUNCTIONFS_DISABLE:
		case FUNCTIONFS_UNBIND:
			/* in-flight requests complete with -ESHUTDOWN and stay idle */
			note("%s", event_name(ev[i].type));
			p->running = false;
			break;
		case FUNCTIONFS_SETUP:
			if (echo(p, s))
				break;
			note("SETUP bRequestType %02x bRequest %02x wValue %04x wIndex %04x "
			     "wLength %u: STALL", s->bRequestType, s->bRequest,
			     le16toh(s->wValue), le16toh(s->wIndex), le16toh(s->wLength));
			stall(p, s);
			break;
		default: /* BIND, SUSPEND, RESUME */
			note("%s", event_name(ev[i].type));
			break;
		}
	}
}

/* --- main ----------------------------------------------------------------------------------- */

static void report(struct peer *p, double t, const uint64_t last[2], double span, bool final)
{
	uint64_t d_in = p->st.bytes[IN] - last[IN], d_out = p->st.bytes[OUT] - last[OUT];

	printf("{\"t\": %.3f, \"in_bytes\": %" PRIu64 ", \"out_bytes\": %" PRIu64
	       ", \"in_mib_s\": %.2f, \"out_mib_s\": %.2f, \"in_total\": %" PRIu64
	       ", \"out_total\": %" PRIu64 ", \"enabled\": %s, \"in_flight\": %u"
	       ", \"cancelled\": [%" PRIu64 ", %" PRIu64 "], \"not_enabled\": [%" PRIu64
	       ", %" PRIu64 "], \"errors\": [%" PRIu64 ", %" PRIu64 "], \"events\": %" PRIu64
	       ", \"stalls\": %" PRIu64 ", \"setups_cancelled\": %" PRIu64 "%s}\n",
	       t, d_in, d_out, span > 0 ? d_in / span / 1048576.0 : 0.0,
	       span > 0 ? d_out / span / 1048576.0 : 0.0, p->st.bytes[IN], p->st.bytes[OUT],
	       p->running ? "true" : "false", p->in_flight, p->st.cancelled[IN],
	       p->st.cancelled[OUT], p->st.not_enabled[IN], p->st.not_enabled[OUT],
	       p->st.errors[IN], p->st.errors[OUT], p->st.events, p->st.stalls,
	       p->st.setups_cancelled, final ? ", \"final\": true" : "");
	fflush(stdout);
}

static unsigned long parse_number(const char *s, const char *what, unsigned long lo,
				  unsigned long hi)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi) {
		fprintf(stderr, "ffs_aio_peer: %s must be a number from %lu to %lu, not %s\n", what,
			lo, hi, s);
		exit(2);
	}
	return v;
}

static char *join(const char *dir, const char *name)
{
	char *path;

	if (asprintf(&path, "%s/%s", dir, name) < 0)
		die("out of memory");
	return path;
}

int main(int argc, char **argv)
{
	struct peer p = {.ep0 = -1, .ep = {-1, -1}, .efd = -1};
	unsigned char *descs, *strs;
	size_t descs_len, strs_len;
	unsigned ep_num[2], i;
	char *ep0_path, *ep_path[2], name[16];
	void *source;
	struct sigaction sa;
	sigset_t block, wait_mask;
	double start, next, last_t;
	uint64_t last[2] = {0, 0};
	int r;

	if (argc < 4 || argc > 6) {
		fprintf(stderr, "usage: ffs_aio_peer MOUNTPOINT DESCRIPTORS_BLOB STRINGS_BLOB "
			"[REQUEST_SIZE [QUEUE_DEPTH]]\n"
			"  (defaults %d and %d; blobs: python -m gadgetd blobs TEMPLATE FUNCTION "
			"--out DIR)\n", DEFAULT_REQUEST_SIZE, DEFAULT_QUEUE_DEPTH);
		return 2;
	}
	p.size = argc > 4 ? parse_number(argv[4], "REQUEST_SIZE", 1, MAX_REQUEST_SIZE)
			  : DEFAULT_REQUEST_SIZE;
	p.depth = argc > 5 ? parse_number(argv[5], "QUEUE_DEPTH", 1, MAX_QUEUE_DEPTH)
			   : DEFAULT_QUEUE_DEPTH;
	p.nreq = 2 * p.depth;

	descs = read_blob(argv[2], &descs_len);
	strs = read_blob(argv[3], &strs_len);
	parse_descriptors(argv[2], descs, descs_len, &ep_num[IN], &ep_num[OUT]);
	parse_strings(argv[3], strs, strs_len);

	/* Signals are only taken inside ppoll(): no request is ever half handled. */
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	if (sigprocmask(SIG_BLOCK, &block, &wait_mask) < 0)
		die("sigprocmask: %s", strerror(errno));
	sigdelset(&wait_mask, SIGTERM);
	sigdelset(&wait_mask, SIGINT);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	ep0_path = join(argv[1], "ep0");
	p.ep0 = open(ep0_path, O_RDWR | O_CLOEXEC);
	if (p.ep0 < 0)
		die("%s: %s", ep0_path, strerror(errno));
	write_blob(p.ep0, ep0_path, "descriptors", descs, descs_len);
	write_blob(p.ep0, ep0_path, "strings", strs, strs_len);
	free(descs);
	free(strs);

	/* Non-blocking: I/O on a disabled endpoint then fails (-EAGAIN) instead of waiting in
	 * io_submit() for the next ENABLE, which would keep ep0 unserved. */
	for (i = IN; i <= OUT; i++) {
		snprintf(name, sizeof(name), "ep%u", ep_num[i]);
		ep_path[i] = join(argv[1], name);
		p.ep[i] = open(ep_path[i], O_RDWR | O_NONBLOCK | O_CLOEXEC);
		if (p.ep[i] < 0)
			die("%s: %s", ep_path[i], strerror(errno));
	}

	r = io_setup(p.nreq, &p.ctx);
	if (r < 0)
		die("io_setup(%u): %s", p.nreq, strerror(-r));
	p.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p.efd < 0)
		die("eventfd: %s", strerror(errno));

	/* One zero-filled buffer for all writes (f_fs copies it at submit time); one buffer per
	 * read. Page aligned. */
	p.req = calloc(p.nreq, sizeof(*p.req));
	p.batch = calloc(p.nreq, sizeof(*p.batch));
	p.done = calloc(p.nreq, sizeof(*p.done));
	if (!p.req || !p.batch || !p.done)
		die("out of memory");
	if ((r = posix_memalign(&source, 4096, p.size)))
		die("posix_memalign: %s", strerror(r));
	memset(source, 0, p.size);
	for (i = 0; i < p.nreq; i++) {
		struct request *rq = &p.req[i];

		rq->dir = i < p.depth ? IN : OUT;
		if (rq->dir == IN) {
			io_prep_pwrite(&rq->iocb, p.ep[IN], source, p.size, 0);
		} else {
			void *buf;

			if ((r = posix_memalign(&buf, 4096, p.size)))
				die("posix_memalign: %s", strerror(r));
			memset(buf, 0, p.size);
			io_prep_pread(&rq->iocb, p.ep[OUT], buf, p.size, 0);
		}
		io_set_eventfd(&rq->iocb, p.efd);
	}
	note("%s: descriptors and strings written; source on %s, sink on %s, %u x %zu bytes "
	     "each", ep0_path, ep_path[IN], ep_path[OUT], p.depth, p.size);

	start = last_t = now_s();
	next = start + 1;
	while (!stop_signal) {
		struct pollfd fds[2] = {{.fd = p.ep0, .events = POLLIN},
					{.fd = p.efd, .events = POLLIN}};
		double now = now_s(), wait = next > now ? next - now : 0;
		struct timespec timeout = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};

		r = ppoll(fds, 2, &timeout, &wait_mask);
		if (r < 0 && errno != EINTR)
			die("ppoll: %s", strerror(errno));
		if (r > 0) {
			if (fds[0].revents & (POLLERR | POLLHUP | POLLNVAL))
				die("%s: poll says 0x%x", ep0_path, fds[0].revents);
			if (fds[0].revents & POLLIN)
				handle_ep0(&p, ep0_path);
			if (fds[1].revents & POLLIN)
				reap(&p);
		}
		now = now_s();
		if (now >= next) {
			report(&p, now - start, last, now - last_t, false);
			last[IN] = p.st.bytes[IN];
			last[OUT] = p.st.bytes[OUT];
			last_t = now;
			next += 1;
			if (next <= now) /* fell behind: do not print a burst */
				next = now + 1;
		}
	}

	note("signal %d: stopping", (int)stop_signal);
	cancel_all(&p);
	report(&p, now_s() - start, last, now_s() - last_t, true);
	io_destroy(p.ctx);
	close(p.efd);
	close(p.ep[IN]);
	close(p.ep[OUT]);
	close(p.ep0);
	return 0;
}
