/*
 * bootfuzz kallsyms dumper: /init of a one-off boot that names a kernel's code.
 *
 * The pinned kernels carry no symbol table, but the running kernel lists its
 * own in /proc/kallsyms.  This program mounts /proc, lets root see the real
 * addresses (kptr_restrict 0), keeps kernel messages off the console, and
 * copies the code symbols (types t, T, w, W) and the section marks the host
 * needs (_text, _etext, _sinittext, _einittext) to the console between two
 * marker lines, then leaves through the exit port.  The host side is
 * bootfuzz/run/kallsyms.py; the markers and the port come from -D flags.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/io.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <unistd.h>

static void put_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY);

	if (fd >= 0) {
		if (write(fd, text, strlen(text)) < 0)
			perror(path);
		close(fd);
	}
}

static int wanted(const char *line)
{
	const char *type = strchr(line, ' ');
	const char *name;

	if (type == NULL || type[1] == '\0' || type[2] != ' ')
		return 0;
	if (strchr("tTwW", type[1]) != NULL)
		return strchr(type + 3, '[') == NULL;  /* built-in code, not modules */
	name = type + 3;
	return strcmp(name, "_text\n") == 0 || strcmp(name, "_etext\n") == 0 ||
	       strcmp(name, "_sinittext\n") == 0 || strcmp(name, "_einittext\n") == 0;
}

int main(void)
{
	static char buf[1 << 16];
	char line[512];
	FILE *in, *out;

	mkdir("/proc", 0755);
	mkdir("/dev", 0755);
	mount("proc", "/proc", "proc", 0, NULL);
	if (access("/dev/console", F_OK) != 0)
		mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	put_file("/proc/sys/kernel/printk", "1");
	put_file("/proc/sys/kernel/kptr_restrict", "0");
	out = fopen("/dev/console", "w");
	in = fopen("/proc/kallsyms", "r");
	if (out != NULL) {
		setvbuf(out, buf, _IOFBF, sizeof(buf));
		fputs("\n" KALLSYMS_BEGIN "\n", out);
		while (in != NULL && fgets(line, sizeof(line), in) != NULL)
			if (wanted(line))
				fputs(line, out);
		fputs(KALLSYMS_END "\n", out);
		fflush(out);
	}
	if (ioperm(EXIT_PORT, 1, 1) == 0)
		outb(EXIT_VALUE, EXIT_PORT);
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}
