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

#if defined(__x86_64__)
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
#define SYS_getdents64 217
#elif defined(__aarch64__) || defined(__riscv)
/*
 * ---- the generic syscall table (include/uapi/asm-generic/unistd.h), which arm64
 * and riscv64 use: no open/mkdir/pause, only their *at and ppoll forms ----
 */
#define SYS_fcntl 25
#define SYS_ioctl 29
#define SYS_mkdirat 34
#define SYS_mount 40
#define SYS_openat 56
#define SYS_close 57
#define SYS_getdents64 61
#define SYS_read 63
#define SYS_write 64
#define SYS_ppoll 73
#define SYS_exit 93
#define SYS_reboot 142
#define AT_FDCWD (-100)
#else
#error "the agent knows the x86_64, aarch64 and riscv64 syscall ABIs"
#endif

/* include/uapi/asm-generic/fcntl.h, errno-base.h, asm-generic/ioctls.h, linux/reboot.h */
#define O_RDONLY 00
#define O_WRONLY 01
#define O_NOCTTY 0400
#if defined(__aarch64__)
#define O_DIRECTORY 040000 /* arch/arm64/include/uapi/asm/fcntl.h */
#else
#define O_DIRECTORY 0200000
#endif
#define F_GETFD 1
#define ENOENT 2
#define EEXIST 17
#define EINTR 4
#define EAGAIN 11
#define TCSBRK 0x5409
#define LINUX_REBOOT_MAGIC1 0xfee1dead
#define LINUX_REBOOT_MAGIC2 672274793
#define LINUX_REBOOT_CMD_POWER_OFF 0x4321fedc

#if defined(__x86_64__)
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
#elif defined(__aarch64__)
/* arm64: svc #0 with the number in x8, arguments in x0..x5, result in x0. */
static long syscall6(long n, long a, long b, long c, long d, long e, long f)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	register long x4 __asm__("x4") = e;
	register long x5 __asm__("x5") = f;

	__asm__ volatile("svc #0"
			 : "+r"(x0)
			 : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
			 : "memory", "cc");
	return x0;
}

/* Entry: argc at [sp]; hand agent_main the original stack pointer. */
__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	mov x29, xzr\n"
	"	mov x0, sp\n"
	"	and sp, x0, #-16\n"
	"	bl agent_main\n"
	"	brk #0\n");
#else
/* riscv64: ecall with the number in a7, arguments in a0..a5, result in a0. */
static long syscall6(long n, long a, long b, long c, long d, long e, long f)
{
	register long a7 __asm__("a7") = n;
	register long a0 __asm__("a0") = a;
	register long a1 __asm__("a1") = b;
	register long a2 __asm__("a2") = c;
	register long a3 __asm__("a3") = d;
	register long a4 __asm__("a4") = e;
	register long a5 __asm__("a5") = f;

	__asm__ volatile("ecall"
			 : "+r"(a0)
			 : "r"(a7), "r"(a1), "r"(a2), "r"(a3), "r"(a4), "r"(a5)
			 : "memory");
	return a0;
}

/* Entry: set gp for linker relaxation, argc at (sp). */
__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	.option push\n"
	"	.option norelax\n"
	"	lla gp, __global_pointer$\n"
	"	.option pop\n"
	"	mv a0, sp\n"
	"	andi sp, sp, -16\n"
	"	call agent_main\n"
	"	ebreak\n");
#endif

#define SC(n, a, b, c) syscall6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)

#if defined(SYS_openat)
/* openat ignores the mode for an existing file; every open here is of one. */
#define SYS_OPEN(path, flags, mode) SC(SYS_openat, AT_FDCWD, (path), (flags))
#define SYS_MKDIR(path, mode) SC(SYS_mkdirat, AT_FDCWD, (path), (mode))
#else
#define SYS_OPEN(path, flags, mode) SC(SYS_open, (path), (flags), (mode))
#define SYS_MKDIR(path, mode) SC(SYS_mkdir, (path), (mode), 0)
#endif

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
	return SYS_OPEN(at(path), flags, 0);
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
	long r = SYS_MKDIR(target, 0555);

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
	long fd = SYS_OPEN(path, O_WRONLY, 0);
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
	return SYS_OPEN(path, O_WRONLY | O_NOCTTY, 0);
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
#if defined(__x86_64__)
	if (SC(SYS_ioperm, AGENT_EXIT_PORT, 1, 1) == 0)
		__asm__ volatile("outb %b0, %w1"
				 :
				 : "a"((uint8_t)AGENT_EXIT_VALUE), "Nd"((uint16_t)AGENT_EXIT_PORT));
#endif
	/* On the device-tree machines this is the way out: PSCI SYSTEM_OFF (arm64) or
	 * SBI system reset (riscv64); the kernel says "reboot: Power down" first. */
	SC(SYS_reboot, LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, LINUX_REBOOT_CMD_POWER_OFF);
	for (;;)
#if defined(SYS_pause)
		SC(SYS_pause, 0, 0, 0);
#else
		SC(SYS_ppoll, 0, 0, 0);
#endif
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

#ifndef AGENT_DEVICETREE /* x86: the firmware map, boot_params, setup_data */
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

#endif

#ifdef AGENT_DEVICETREE
/*
 * ---- the device tree the kernel kept (/sys/firmware/devicetree/base, drivers/of/
 * kobj.c: one directory per node, one binary file per property) and /proc/iomem ----
 */
struct dirent64 {
	uint64_t d_ino;
	int64_t d_off;
	uint16_t d_reclen;
	uint8_t d_type;
	char d_name[];
};

#define DT_BASE "/sys/firmware/devicetree/base"
#define DT_MAX_NAMES 128
#define DT_NAME_MAX 64
static char dt_names[DT_MAX_NAMES][DT_NAME_MAX];

static int starts_with(const char *s, const char *prefix)
{
	while (*prefix)
		if (*s++ != *prefix++)
			return 0;
	return 1;
}

/* The entries of *dir* (not "." or ".."), at most DT_MAX_NAMES, into dt_names. */
static int list_dir(const char *dir)
{
	static char dents[16384];
	long fd = open_at(dir, O_RDONLY | O_DIRECTORY);
	int count = 0;

	if (fd < 0) {
		if (fd != -ENOENT)
			error_errno("open", dir, fd);
		return -1;
	}
	for (;;) {
		long n = SC(SYS_getdents64, fd, dents, sizeof(dents));
		long off = 0;

		if (n < 0)
			error_errno("getdents64", dir, n);
		if (n <= 0)
			break;
		while (off < n) {
			struct dirent64 *d = (struct dirent64 *)(dents + off);
			size_t len = str_len(d->d_name);

			off += d->d_reclen;
			if (d->d_name[0] == '.' && (len == 1 || (len == 2 && d->d_name[1] == '.')))
				continue;
			if (count == DT_MAX_NAMES || len >= DT_NAME_MAX) {
				error3("list", dir, 0, "too many or too long names, some left out");
				continue;
			}
			memcpy(dt_names[count], d->d_name, len + 1);
			count++;
		}
	}
	SC(SYS_close, fd, 0, 0);
	return count;
}

/* "name":"hex of the property file" for the property at dir/name. */
static void put_dt_prop(const char *dir, const char *name)
{
	static uint8_t value[4096];
	char path[256];
	struct buf p = { path, 0, sizeof(path) - 1, 0 };
	int more;
	long n;

	put(&p, dir);
	put(&p, "/");
	put(&p, name);
	path[p.len] = 0;
	n = read_small(path, value, sizeof(value), &more);
	put_json_string(&line, name, str_len(name));
	put(&line, ":\"");
	if (n < 0)
		error_errno("read", path, n);
	else
		put_hex(&line, value, (size_t)n);
	put(&line, "\"");
	if (more)
		error3("read", path, 0, "longer than 4096 bytes, truncated");
}

/* {"prop":"hex",...} for every property file of a node directory. */
static void put_dt_node_props(const char *dir)
{
	static char names[DT_MAX_NAMES][DT_NAME_MAX];
	char path[256];
	int count = list_dir(dir), i, first = 1;

	put(&line, "{");
	for (i = 0; i < count; i++)
		memcpy(names[i], dt_names[i], DT_NAME_MAX);
	for (i = 0; i < count; i++) {
		struct buf p = { path, 0, sizeof(path) - 1, 0 };
		long fd;

		put(&p, dir);
		put(&p, "/");
		put(&p, names[i]);
		path[p.len] = 0;
		fd = open_at(path, O_RDONLY | O_DIRECTORY);
		if (fd >= 0) { /* a child node, not a property */
			SC(SYS_close, fd, 0, 0);
			continue;
		}
		if (!first)
			put(&line, ",");
		first = 0;
		put_dt_prop(dir, names[i]);
	}
	put(&line, "}");
}

static void report_devicetree(void)
{
	static char nodes[DT_MAX_NAMES][DT_NAME_MAX];
	char path[256];
	int count, i, first = 1;

	put(&line, "\"devicetree\":{\"root\":");
	put_dt_node_props(DT_BASE);
	count = list_dir(DT_BASE);
	for (i = 0; i < count; i++)
		memcpy(nodes[i], dt_names[i], DT_NAME_MAX);
	put(&line, ",\"memory\":{");
	for (i = 0; i < count; i++) {
		struct buf p = { path, 0, sizeof(path) - 1, 0 };

		if (!starts_with(nodes[i], "memory"))
			continue;
		put(&p, DT_BASE "/");
		put(&p, nodes[i]);
		path[p.len] = 0;
		if (!first)
			put(&line, ",");
		first = 0;
		put_json_string(&line, nodes[i], str_len(nodes[i]));
		put(&line, ":");
		put_dt_node_props(path);
	}
	put(&line, "},\"chosen\":");
	put_dt_node_props(DT_BASE "/chosen");
	put(&line, ",\"reserved\":[");
	count = list_dir(DT_BASE "/reserved-memory");
	for (i = 0; i < count; i++) {
		if (i)
			put(&line, ",");
		put_json_string(&line, dt_names[i], str_len(dt_names[i]));
	}
	put(&line, "]}");
}

/* /proc/iomem as one JSON string: the kernel's resource tree, System RAM included. */
static void report_iomem(void)
{
	static uint8_t text[32768];
	const char *path = "/proc/iomem";
	int more;
	long n = read_small(path, text, sizeof(text), &more);

	put(&line, "\"iomem\":");
	if (n < 0) {
		error_errno("read", path, n);
		put(&line, "null");
		return;
	}
	if (more)
		error3("read", path, 0, "longer than 32768 bytes, truncated");
	put_json_string(&line, (const char *)text, (size_t)n);
}
#endif

static void report(void)
{
	put(&line, AGENT_LINE_PREFIX " {\"v\":");
	put_u64(&line, AGENT_FORMAT_VERSION);
	put(&line, ",");
	report_cmdline();
	put(&line, ",");
	report_payload();
	put(&line, ",");
#ifdef AGENT_DEVICETREE
	report_devicetree();
	put(&line, ",");
	report_iomem();
#else
	report_memmap();
	put(&line, ",");
	report_boot_params();
	put(&line, ",");
	report_setup_data();
#endif
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

#ifdef AGENT_KALLSYMS_DUMP
/*
 * The kallsyms dumper build of the device-tree agent (its own binary, so the agent
 * every other boot runs is unchanged): the kernel's code symbols for coverage, as the
 * x86 dumper (harness/coverage/kallsyms.c) prints them: built-in code (types t, T, w,
 * W) and the section marks, between the two marker lines, then power off.
 */
static int same(const char *a, const char *b, size_t n)
{
	while (n--)
		if (*a++ != *b++)
			return 0;
	return 1;
}

static int kallsyms_wanted(const char *l, size_t n)
{
	static const char *const marks[] = { "_text", "_etext", "_sinittext", "_einittext" };
	size_t i = 0, k;

	while (i < n && l[i] != ' ')
		i++;
	if (i + 3 > n || l[i + 2] != ' ')
		return 0;
	if (l[i + 1] == 't' || l[i + 1] == 'T' || l[i + 1] == 'w' || l[i + 1] == 'W') {
		for (k = i + 3; k < n; k++)
			if (l[k] == '[')
				return 0;  /* a module's */
		return 1;
	}
	for (k = 0; k < sizeof(marks) / sizeof(marks[0]); k++) {
		size_t m = str_len(marks[k]);

		if (n - (i + 3) == m && same(l + i + 3, marks[k], m))
			return 1;
	}
	return 0;
}

static void __attribute__((noreturn)) dump_kallsyms(void)
{
	static char in[1 << 16], part[512];
	size_t plen = 0;
	long fd = SYS_OPEN("/proc/sys/kernel/kptr_restrict", O_WRONLY, 0), r, i;

	if (fd >= 0) {
		SC(SYS_write, fd, "0", 1);
		SC(SYS_close, fd, 0, 0);
	}
	put(&line, "\n" AGENT_KALLSYMS_BEGIN "\n");
	fd = SYS_OPEN("/proc/kallsyms", O_RDONLY, 0);
	while (fd >= 0 && ((r = SC(SYS_read, fd, in, sizeof(in))) > 0 || r == -EINTR)) {
		for (i = 0; i < r; i++) {
			if (in[i] != '\n') {
				if (plen < sizeof(part))
					part[plen++] = in[i];
				continue;
			}
			if (plen < sizeof(part) && kallsyms_wanted(part, plen)) {
				put_bytes(&line, part, plen);
				put(&line, "\n");
			}
			plen = 0;
		}
	}
	put(&line, AGENT_KALLSYMS_END "\n");
	write_all(out_fd, line.data, line.len);
	SC(SYS_ioctl, out_fd, TCSBRK, 1);
	power_off();
}

#endif

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
#ifdef AGENT_KALLSYMS_DUMP
	dump_kallsyms();
#endif
	report();
	power_off();
#endif
}
