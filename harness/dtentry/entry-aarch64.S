/*
 * bootfuzz arm64 entry: the few instructions of "our firmware" on QEMU virt.
 *
 * QEMU's generic loader sets the PC here (EL1, MMU and caches off, DAIF masked,
 * CNTFRQ programmed by the CPU model).  Documentation/arch/arm64/booting.rst,
 * "Call the kernel image": x0 = physical address of the DTB, x1 = x2 = x3 = 0,
 * then jump to the first byte of the Image.  The two addresses are the 16 bytes
 * the loader appends after this code (bootfuzz.run.backends.qemu_virt).
 */
	.text
	.global _start
_start:
	adr	x5, params
	ldr	x0, [x5]	/* the DTB */
	ldr	x4, [x5, #8]	/* the Image */
	mov	x1, xzr
	mov	x2, xzr
	mov	x3, xzr
	br	x4
	.balign 8
params:
