/*
 * bootfuzz guest agent: /init (PID 1) of the initramfs bootfuzz builds.
 *
 * It reports, in ONE line on the console, what the booted kernel actually
 * received -- command line, initramfs payload digest, firmware memory map,
 * boot_params, setup_data nodes -- so the host's oracles can compare it with
 * what the loader planned, and then it powers the guest off through a port the
 * backend traps.
 *
 * No libc: the initramfs holds nothing else, and a static freestanding binary
 * behaves the same under every kernel we boot.  Raw syscalls, static buffers,
 * no heap.  Built by bootfuzz/harness.py, which passes the constants below
 * with -D so they are declared once, in Python.
 *
 * Built with -DAGENT_SELFTEST it becomes a host program for the unit tests:
 * every path is read below argv[1] instead of /, nothing is mounted, and it
 * exits instead of powering off.
 */
#include <stddef.h>
#include <stdint.h>

#include "sha256.h"

#if !defined(AGENT_EXIT_PORT) || !defined(AGENT_EXIT_VALUE) || \
	!defined(AGENT_LINE_PREFIX) || !defined(AGENT_FORMAT_VERSION)
#error "build through bootfuzz.harness: it passes AGENT_* with -D"
#endif

/* ---- raw Linux x86_64 syscalls (arch/x86/entry/syscalls/syscall_64.tbl) ---- */

#define SYS_read 0
#define SYS_write 1
#define SYS_open 2
#define SYS_close 3
#define SYS_ioctl 16
#define SYS_pause 34
#define SYS_exit 60
#define SYS_fcntl 72
#define SYS_mkdir 83
#define SYS_mount 165
#define SYS_reboot 169
#define SYS_ioperm 173

/* include/uapi/asm-generic/fcntl.h, errno-base.h, asm-generic/ioctls.h, linux/reboot.h */
#define O_RDONLY 00
#define O_WRONLY 01
#define O_NOCTTY 0400
#define O_DIRECTORY 0200000
#define F_GETFD 1
#define ENOENT 2
#define EEXIST 17
#define EINTR 4
#define EAGAIN 11
#define TCSBRK 0x5409
#define LINUX_REBOOT_MAGIC1 0xfee1dead
#define LINUX_REBOOT_MAGIC2 672274793
#define LINUX_REBOOT_CMD_POWER_OFF 0x4321fedc

static long syscall6(long n, long a, long b, long c, long d, long e, long f)
{
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	long ret;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}

#define SC(n, a, b, c) syscall6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)

/*
 * Entry: the kernel starts us with argc at (%rsp).  Align the stack the way
 * the ABI expects at a call and hand agent_main the original stack pointer.
 */
__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	xor %ebp, %ebp\n"
	"	mov %rsp, %rdi\n"
	"	and $-16, %rsp\n"
	"	call agent_main\n"
	"	ud2\n");

/* gcc may emit calls to these even when freestanding. */
void *memset(void *d, int c, size_t n)
{
	unsigned char *p = d;

	while (n--)
		*p++ = (unsigned char)c;
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	unsigned char *p = d;
	const unsigned char *q = s;

	while (n--)
		*p++ = *q++;
	return d;
}

static size_t str_len(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

/* ---- output: one growing line, flushed to the console fd when full ---- */

struct buf {
	char *data;
	size_t len, cap;
	int overflow;   /* set when a fixed-size buffer had to drop bytes */
};

static int out_fd = -1;
static char line_storage[256 * 1024];
static struct buf line = { line_storage, 0, sizeof(line_storage), 0 };
/* Error strings collect here (already JSON-escaped) and go out last. */
static char errs_storage[16 * 1024];
static struct buf errs = { errs_storage, 0, sizeof(errs_storage), 0 };

/* Writes everything, retrying short writes: a console write may stop early. */
static void write_all(int fd, const char *p, size_t n)
{
	while (n) {
		long r = SC(SYS_write, fd, p, n);

		if (r == -EINTR || r == -EAGAIN)
			continue;
		if (r <= 0)
			return;  /* nowhere left to report it */
		p += r;
		n -= (size_t)r;
	}
}

static void put_bytes(struct buf *b, const char *p, size_t n)
{
	while (n) {
		if (b->len == b->cap) {
			if (b != &line) {
				b->overflow = 1;
				return;
			}
			/* The line may outgrow the buffer (a huge memmap): stream it. */
			write_all(out_fd, b->data, b->len);
			b->len = 0;
		}
		b->data[b->len++] = *p++;
		n--;
	}
}

static void put(struct buf *b, const char *s)
{
	put_bytes(b, s, str_len(s));
}

static void put_u64(struct buf *b, uint64_t v)
{
	char tmp[24];
	int i = sizeof(tmp);

	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	put_bytes(b, tmp + i, sizeof(tmp) - (size_t)i);
}

static const char hexdigits[] = "0123456789abcdef";

static void put_hex(struct buf *b, const uint8_t *p, size_t n)
{
	while (n--) {
		char two[2] = { hexdigits[*p >> 4], hexdigits[*p & 15] };

		put_bytes(b, two, 2);
		p++;
	}
}

/*
 * A JSON string.  Besides '"' and '\', control characters and every byte
 * >= 0x7f become \u00XX (read as Latin-1), so the line stays pure ASCII
 * whatever sysfs hands us and always decodes.
 */
static void put_json_string(struct buf *b, const char *p, size_t n)
{
	put(b, "\"");
	for (; n; n--, p++) {
		unsigned char c = (unsigned char)*p;

		if (c == '"' || c == '\\') {
			char esc[2] = { '\\', (char)c };

			put_bytes(b, esc, 2);
		} else if (c < 0x20 || c >= 0x7f) {
			char esc[6] = { '\\', 'u', '0', '0', hexdigits[c >> 4], hexdigits[c & 15] };

			put_bytes(b, esc, 6);
		} else {
			put_bytes(b, (const char *)p, 1);
		}
	}
	put(b, "\"");
}

/* Records "<op> <path>: errno N" (or ": <detail>" when errno is 0). */
static void error3(const char *op, const char *path, long neg_errno, const char *detail)
{
	char msg[512];
	struct buf m = { msg, 0, sizeof(msg), 0 };

	put(&m, op);
	put(&m, " ");
	put(&m, path);
	put(&m, ": ");
	if (detail) {
		put(&m, detail);
	} else {
		put(&m, "errno ");
		put_u64(&m, (uint64_t)-neg_errno);
	}
	if (errs.len)
		put(&errs, ",");
	put_json_string(&errs, m.data, m.len);
}

#define error_errno(op, path, r) error3((op), (path), (r), 0)

/* ---- paths: the real root, or a directory under the self-test's argv[1] ---- */

static const char *root = "";

/* Returns root + path in a static slot; two slots so two paths can be live. */
static const char *at(const char *path)
{
	static char slots[2][4096];
	static int next;
	char *dst = slots[next ^= 1];
	struct buf b = { dst, 0, sizeof(slots[0]) - 1, 0 };

	put(&b, root);
	put(&b, path);
	dst[b.len] = 0;
	return dst;
}

static long open_at(const char *path, long flags)
{
	return SC(SYS_open, at(path), flags, 0);
}

/*
 * Reads a whole small file into p[0..cap).  Returns the length, or -errno.
 * *more is set when the file is longer than cap.
 */
static long read_small(const char *path, uint8_t *p, size_t cap, int *more)
{
	long fd = open_at(path, O_RDONLY);
	size_t len = 0;
	long r = 0;

	*more = 0;
	if (fd < 0)
		return fd;
	while (len < cap) {
		r = SC(SYS_read, fd, p + len, cap - len);
		if (r == -EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	if (r >= 0 && len == cap) {
		uint8_t extra;

		*more = SC(SYS_read, fd, &extra, 1) > 0;
	}
	SC(SYS_close, fd, 0, 0);
	return r < 0 ? r : (long)len;
}

/* ---- the steps ---- */

#ifndef AGENT_SELFTEST
static void mount_fs(const char *source, const char *target, const char *type)
{
	long r = SC(SYS_mkdir, target, 0555, 0);

	if (r < 0 && r != -EEXIST)
		error_errno("mkdir", target, r);
	r = syscall6(SYS_mount, (long)source, (long)target, (long)type, 0, 0, 0);
	if (r < 0)
		error_errno("mount", target, r);
}

/* Keep kernel messages off the console so they cannot split our line. */
static void quiet_printk(void)
{
	const char *path = "/proc/sys/kernel/printk";
	long fd = SC(SYS_open, path, O_WRONLY, 0);
	long r;

	if (fd < 0) {
		error_errno("open", path, fd);
		return;
	}
	r = SC(SYS_write, fd, "1", 1);
	if (r < 0)
		error_errno("write", path, r);
	SC(SYS_close, fd, 0, 0);
}

static long open_console(const char *path)
{
	return SC(SYS_open, path, O_WRONLY | O_NOCTTY, 0);
}

/*
 * The kernel opens /dev/console as fds 0-2 for PID 1 when the initramfs has
 * that node.  If it did not, try the node ourselves, then the serial port,
 * then once more after mounting devtmpfs (which creates both).
 */
static int console_fd(void)
{
	long fd;

	if (SC(SYS_fcntl, 1, F_GETFD, 0) >= 0)
		return 1;
	fd = open_console("/dev/console");
	if (fd < 0)
		fd = open_console("/dev/ttyS0");
	if (fd < 0) {
		mount_fs("devtmpfs", "/dev", "devtmpfs");
		fd = open_console("/dev/console");
		if (fd < 0)
			fd = open_console("/dev/ttyS0");
	}
	if (fd < 0)
		error_errno("open", "/dev/console", fd);
	return (int)fd;
}

/*
 * isa-debug-exit (QEMU) or our VMM's trap on the same port ends the guest
 * with a status the host recognises.  The reboot syscall is the fallback;
 * without ACPI it may only halt, so the host also has a timeout.
 */
static void __attribute__((noreturn)) power_off(void)
{
	if (SC(SYS_ioperm, AGENT_EXIT_PORT, 1, 1) == 0)
		__asm__ volatile("outb %b0, %w1"
				 :
				 : "a"((uint8_t)AGENT_EXIT_VALUE), "Nd"((uint16_t)AGENT_EXIT_PORT));
	SC(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_POWER_OFF);
	for (;;)
		SC(SYS_pause, 0, 0, 0);
}
#endif

/* /proc/cmdline as hex; the kernel appends one newline we did not pass. */
static void report_cmdline(void)
{
	static uint8_t cmdline[64 * 1024];
	const char *path = "/proc/cmdline";
	int more;
	long n = read_small(path, cmdline, sizeof(cmdline), &more);

	put(&line, "\"cmdline\":");
	if (n < 0) {
		error_errno("read", path, n);
		put(&line, "null");
		return;
	}
	if (more)
		error3("read", path, 0, "longer than 65536 bytes, truncated");
	if (n > 0 && cmdline[n - 1] == '\n')
		n--;
	put(&line, "\"");
	put_hex(&line, cmdline, (size_t)n);
	put(&line, "\"");
}

static int is_hex(uint8_t c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* /payload.sha256: 64 hex digits, optionally followed by whitespace (sha256sum style). */
static void put_expected_digest(void)
{
	const char *path = "/payload.sha256";
	uint8_t text[128];
	int more, i;
	long n = read_small(path, text, sizeof(text), &more);

	put(&line, "\"expected\":\"");
	if (n == -ENOENT) {
		/* No expectation shipped: not an error. */
	} else if (n < 0) {
		error_errno("read", path, n);
	} else {
		for (i = 0; i < 64 && i < n && is_hex(text[i]); i++)
			;
		if (i < 64 || (n > 64 && text[64] != '\n' && text[64] != ' ' && text[64] != '\t')) {
			error3("parse", path, 0, "not 64 hex digits");
		} else {
			for (i = 0; i < 64; i++) {
				char c = (char)(text[i] >= 'A' && text[i] <= 'F' ? text[i] + 32 : text[i]);

				put_bytes(&line, &c, 1);
			}
		}
	}
	put(&line, "\"");
}

/* /payload streamed through SHA-256 in 1 MiB chunks: it may be hundreds of MiB. */
static void report_payload(void)
{
	static uint8_t chunk[1024 * 1024];
	const char *path = "/payload";
	struct sha256 ctx;
	uint8_t digest[SHA256_DIGEST];
	long fd = open_at(path, O_RDONLY);
	long r;

	put(&line, "\"payload\":");
	if (fd < 0) {
		error_errno("open", path, fd);
		put(&line, "null");
		return;
	}
	sha256_init(&ctx);
	for (;;) {
		r = SC(SYS_read, fd, chunk, sizeof(chunk));
		if (r == -EINTR)
			continue;
		if (r <= 0)
			break;
		sha256_update(&ctx, chunk, (size_t)r);
	}
	SC(SYS_close, fd, 0, 0);
	if (r < 0) {
		/* A digest of part of the file would only mislead. */
		error_errno("read", path, r);
		put(&line, "null");
		return;
	}
	sha256_final(&ctx, digest);
	put(&line, "{\"size\":");
	put_u64(&line, ctx.total);
	put(&line, ",\"sha256\":\"");
	put_hex(&line, digest, sizeof(digest));
	put(&line, "\",");
	put_expected_digest();
	put(&line, "}");
}

/* One sysfs attribute as a JSON string, trailing newlines dropped. */
static void put_sysfs_string(const char *path)
{
	uint8_t text[256];
	int more;
	long n = read_small(path, text, sizeof(text), &more);

	if (n < 0) {
		error_errno("read", path, n);
		n = 0;
	}
	while (n > 0 && text[n - 1] == '\n')
		n--;
	put_json_string(&line, (const char *)text, (size_t)n);
}

/* /sys/firmware/memmap/<i>/{start,end,type} for i = 0, 1, ... until one is missing. */
/* Set *p to "<dir>/<i>" (NUL-terminated in its buffer) and tell whether that
 * directory exists; a missing one ends a numbered sysfs listing, any other error
 * is reported. */
static int numbered_dir_exists(struct buf *p, const char *dir, unsigned long i)
{
	long fd;

	put(p, dir);
	put(p, "/");
	put_u64(p, i);
	p->data[p->len] = 0;
	fd = open_at(p->data, O_RDONLY | O_DIRECTORY);
	if (fd < 0) {
		if (fd != -ENOENT)
			error_errno("open", p->data, fd);
		return 0;
	}
	SC(SYS_close, fd, 0, 0);
	return 1;
}

static void report_memmap(void)
{
	const char *dir = "/sys/firmware/memmap";
	static const char *const attrs[3] = { "/start", "/end", "/type" };
	char path[128];
	long fd = open_at(dir, O_RDONLY | O_DIRECTORY);
	uint64_t i;
	int a;

	put(&line, "\"memmap\":[");
	if (fd < 0) {
		error_errno("open", dir, fd);
		put(&line, "]");
		return;
	}
	SC(SYS_close, fd, 0, 0);
	for (i = 0; i < 65536; i++) {
		struct buf p = { path, 0, sizeof(path) - 1, 0 };
		size_t entry_len;

		if (!numbered_dir_exists(&p, dir, i))
			break;
		entry_len = p.len;
		put(&line, i ? ",[" : "[");
		for (a = 0; a < 3; a++) {
			p.len = entry_len;
			put(&p, attrs[a]);
			path[p.len] = 0;
			if (a)
				put(&line, ",");
			put_sysfs_string(path);
		}
		put(&line, "]");
	}
	put(&line, "]");
}

/* The boot_params the kernel kept (arch/x86/kernel/ksysfs.c), 4096 bytes, as hex. */
static void report_boot_params(void)
{
	static uint8_t data[4096];
	const char *path = "/sys/kernel/boot_params/data";
	int more;
	long n = read_small(path, data, sizeof(data), &more);

	put(&line, "\"boot_params\":");
	if (n < 0) {
		error_errno("read", path, n);
		put(&line, "null");
		return;
	}
	if (n != sizeof(data) || more)
		error3("read", path, 0, "not 4096 bytes");
	put(&line, "\"");
	put_hex(&line, data, (size_t)n);
	put(&line, "\"");
}

/*
 * /sys/kernel/boot_params/setup_data/<n>/{type,data} for n = 0, 1, ... until
 * one is missing (arch/x86/kernel/ksysfs.c numbers the nodes in chain order).
 * The directory exists only when hdr.setup_data is set: absent, the list is
 * empty and nothing is wrong.  type is printed "0x%x\n"; data is binary and
 * goes out as hex, at most SETUP_DATA_CAP bytes, with "truncated" beyond that.
 */
#define SETUP_DATA_CAP (64 * 1024)
#define SETUP_DATA_MAX_NODES 4096

static void report_setup_data(void)
{
	static uint8_t data[SETUP_DATA_CAP];
	const char *dir = "/sys/kernel/boot_params/setup_data";
	char path[128];
	long fd = open_at(dir, O_RDONLY | O_DIRECTORY);
	uint64_t i;

	put(&line, "\"setup_data\":[");
	if (fd < 0) {
		if (fd != -ENOENT)
			error_errno("open", dir, fd);
		put(&line, "]");
		return;
	}
	SC(SYS_close, fd, 0, 0);
	for (i = 0; i < SETUP_DATA_MAX_NODES; i++) {
		struct buf p = { path, 0, sizeof(path) - 1, 0 };
		size_t node_len;
		int more;
		long n;

		if (!numbered_dir_exists(&p, dir, i))
			break;
		node_len = p.len;
		put(&line, i ? ",{\"type\":" : "{\"type\":");
		put(&p, "/type");
		path[p.len] = 0;
		put_sysfs_string(path);
		p.len = node_len;
		put(&p, "/data");
		path[p.len] = 0;
		n = read_small(path, data, sizeof(data), &more);
		if (n < 0) {
			error_errno("read", path, n);
			n = 0;
			more = 0;
		}
		put(&line, ",\"data\":\"");
		put_hex(&line, data, (size_t)n);
		put(&line, more ? "\",\"truncated\":true}" : "\"}");
	}
	put(&line, "]");
}

static void report(void)
{
	put(&line, AGENT_LINE_PREFIX " {\"v\":");
	put_u64(&line, AGENT_FORMAT_VERSION);
	put(&line, ",");
	report_cmdline();
	put(&line, ",");
	report_payload();
	put(&line, ",");
	report_memmap();
	put(&line, ",");
	report_boot_params();
	put(&line, ",");
	report_setup_data();
	if (errs.overflow) {
		errs.overflow = 0;
		errs.len = 0;
		error3("report", "errors", 0, "too many errors, list dropped");
	}
	put(&line, ",\"errors\":[");
	put_bytes(&line, errs.data, errs.len);
	put(&line, "]}\n");
	write_all(out_fd, line.data, line.len);
	line.len = 0;
	/* tcdrain: the bytes must be on the wire before we power off. */
	SC(SYS_ioctl, out_fd, TCSBRK, 1);
}

void __attribute__((noreturn, used)) agent_main(long *sp)
{
#ifdef AGENT_SELFTEST
	char **argv = (char **)(sp + 1);

	if (sp[0] < 2) {
		write_all(2, "usage: agent-selftest ROOT\n", 27);
		SC(SYS_exit, 2, 0, 0);
	}
	root = argv[1];
	out_fd = 1;
	report();
	SC(SYS_exit, 0, 0, 0);
	for (;;)
		;
#else
	(void)sp;
	mount_fs("proc", "/proc", "proc");
	mount_fs("sysfs", "/sys", "sysfs");
	out_fd = console_fd();
	quiet_printk();
	report();
	power_off();
#endif
}
