"""Stage 1, the kernel: what a kernel image is and what it can do.

Takes a file (a bzImage, a vmlinux ELF, a Debian ``.deb``) or the name of a pinned
kernel; gives a parsed ``KernelImage`` (setup header, payload, vmlinux notes), the
kernel's ``KernelCapabilities`` (entry paths, initrd compressions, messages it prints),
and pinned kernels fetched, verified by sha256 and cached; ``kernel.symbols`` holds a
kernel's function symbols as offsets from ``_text`` (from its own kallsyms) and finds
one boot's KASLR slide from its covered blocks.  arm64/RISC-V ``Image`` files are
read by ``kernel.dt_image`` (their capabilities: ``kernel.dt_capabilities``), and
foreign-architecture packages fetched through a private apt (``kernel.foreign_apt``).
Knows nothing of guests.
"""
