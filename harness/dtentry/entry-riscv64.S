/*
 * bootfuzz riscv64 entry: hands our DTB and our kernel address to OpenSBI fw_dynamic.
 *
 * QEMU's generic loader sets the PC here in M-mode.  OpenSBI's fw_dynamic expects
 * (docs/firmware/fw_dynamic.md) a0 = hart id, a1 = the FDT, a2 = a struct
 * fw_dynamic_info naming the next stage (our Image, S-mode).  It then enters the
 * kernel as Documentation/arch/riscv/boot.rst says: a0 = hart id, a1 = the FDT,
 * satp = 0.  The three addresses (FDT, fw_dynamic_info, OpenSBI) are the 24 bytes
 * the loader appends after this code (bootfuzz.run.backends.qemu_virt).
 */
	.text
	.global _start
_start:
	csrr	a0, mhartid
	lla	t0, params
	ld	a1, 0(t0)
	ld	a2, 8(t0)
	ld	t1, 16(t0)
	jr	t1
	.balign 8
params:
