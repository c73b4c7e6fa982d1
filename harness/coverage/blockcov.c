/*
 * bootfuzz block coverage: a QEMU TCG plugin (QEMU 7.2, plugin API version 1).
 *
 * At translation time it records the guest start address of every block into
 * an open-addressing hash set (linear probing, 0 = empty slot) in a file it
 * maps MAP_SHARED.  The pages belong to the page cache, so everything stored
 * before QEMU dies, even by SIGKILL, is in the file; nothing is written at exit.
 * A block is recorded when QEMU translates it, which happens before its first
 * execution: block coverage at one hash insert per translation, no cost per
 * execution.
 *
 * Usage: -plugin blockcov.so,map=FILE   (FILE is created and sized here)
 *
 * The header is declared once, in bootfuzz/guest/coverage_tools.py (MAP_HEADER),
 * and handed in with -D: each field's offset and size (MAP_OFF_<name>,
 * MAP_SIZE_<name>), MAP_MAGIC, MAP_VERSION, MAP_HEADER_SIZE, MAP_LOG2_SLOTS.
 *
 * Debian installs no qemu-plugin.h, so the few API entries used are declared
 * below from QEMU's documented plugin API (include/qemu/qemu-plugin.h).
 */
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* ---- the QEMU plugin API entries we use (API version 1, QEMU 7.2) ---- */
typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct qemu_info_t qemu_info_t;  /* read nowhere: kept opaque */
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id,
					       struct qemu_plugin_tb *tb);
extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id,
						  qemu_plugin_vcpu_tb_trans_cb_t cb);
extern uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
extern void qemu_plugin_outs(const char *string);

EXPORT int qemu_plugin_version = QEMU_PLUGIN_API_VERSION;

/* ---- the map file: header fields at the offsets the host declared ---- */
#define U64_FIELD(name) ((uint64_t *)(map + MAP_OFF_##name))
#define U32_FIELD(name) ((uint32_t *)(map + MAP_OFF_##name))
_Static_assert(MAP_SIZE_magic == 8 && MAP_SIZE_count == 8 && MAP_SIZE_dropped == 8 &&
	       MAP_SIZE_zero_seen == 8, "64-bit header fields");
_Static_assert(MAP_SIZE_version == 4 && MAP_SIZE_log2_slots == 4, "32-bit header fields");

static char *map;
static uint64_t *slots;
static uint64_t mask;

static uint64_t mix(uint64_t x)
{
	/* splitmix64's finalizer: block addresses differ mostly in low bits */
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static void record(uint64_t addr)
{
	uint64_t i, expected;

	if (addr == 0) {
		__atomic_store_n(U64_FIELD(zero_seen), 1, __ATOMIC_RELAXED);
		return;
	}
	for (i = mix(addr) & mask;; i = (i + 1) & mask) {
		uint64_t seen = __atomic_load_n(&slots[i], __ATOMIC_RELAXED);

		if (seen == addr)
			return;
		if (seen != 0)
			continue;
		if (__atomic_load_n(U64_FIELD(count), __ATOMIC_RELAXED) >= mask / 4 * 3) {
			__atomic_fetch_add(U64_FIELD(dropped), 1, __ATOMIC_RELAXED);
			return;
		}
		expected = 0;
		if (__atomic_compare_exchange_n(&slots[i], &expected, addr, 0,
						__ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
			__atomic_fetch_add(U64_FIELD(count), 1, __ATOMIC_RELAXED);
			return;
		}
		if (expected == addr)
			return;  /* another vCPU stored it first */
	}
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	(void)id;
	record(qemu_plugin_tb_vaddr(tb));
}

static int open_map(const char *path)
{
	size_t size = MAP_HEADER_SIZE + (sizeof(uint64_t) << MAP_LOG2_SLOTS);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	void *p;

	if (fd < 0)
		return -1;
	if (ftruncate(fd, (off_t)size) != 0) {
		close(fd);
		return -1;
	}
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return -1;
	map = p;
	slots = (uint64_t *)(map + MAP_HEADER_SIZE);
	mask = ((uint64_t)1 << MAP_LOG2_SLOTS) - 1;
	*U32_FIELD(log2_slots) = MAP_LOG2_SLOTS;
	*U32_FIELD(version) = MAP_VERSION;
	__atomic_store_n(U64_FIELD(magic), (uint64_t)MAP_MAGIC, __ATOMIC_RELEASE);
	return 0;
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
			       int argc, char **argv)
{
	const char *path = NULL;
	int i;

	(void)info;
	for (i = 0; i < argc; i++)
		if (strncmp(argv[i], "map=", 4) == 0)
			path = argv[i] + 4;
	if (path == NULL) {
		qemu_plugin_outs("bootfuzz blockcov: no map=FILE argument\n");
		return -1;
	}
	if (open_map(path) != 0) {
		qemu_plugin_outs("bootfuzz blockcov: cannot create the map file\n");
		return -1;
	}
	qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
	return 0;
}
