/*
 * bootfuzz probe for the 64-bit boot protocol: the protected-mode code of a
 * tiny bzImage (bootfuzz/probes.py adds the setup sectors and header).
 *
 * Entered at offset STARTUP_64_OFFSET of the protected-mode code in long mode,
 * as a kernel is.  It records the entry state before touching anything,
 * reads boot_params through RSI (fields, the E820 table, the command line and
 * the ramdisk's first and last bytes through their pointers, the last byte of
 * the init_size window), prints one BOOTFUZZ-PROBE line on COM1 and exits
 * through the exit port.  Every read goes through the identity map the loader
 * built: an unmapped byte faults, and with no IDT that is a triple fault, a
 * reset the host sees instead of a report.
 *
 * Position independent (RIP-relative only): it runs wherever it was loaded.
 */
	.include "probes.inc"
	.include "probe_common.inc"

	.macro	PUTS label
	leaq	\label(%rip), %rsi
	call	puts
	.endm

	.text
pm_start:

/* Offset 0 is the 32-bit entry (startup_32); this probe only answers the 64-bit one. */
	.code32
startup_32:
	cli
1:	hlt
	jmp	1b

	.org	STARTUP_64_OFFSET
	.code64
startup_64:
	/* Nothing here may change a flag or a register before it is saved. */
	movq	%rsi, saved_rsi(%rip)
	movq	%rbx, saved_rbx(%rip)
	movq	%rsp, saved_rsp(%rip)
	leaq	startup_64(%rip), %rax
	movq	%rax, saved_rip(%rip)
	leaq	stack_top(%rip), %rsp	/* our own stack from here on */
	pushfq
	popq	saved_rflags(%rip)
	movw	%cs, saved_cs(%rip)
	movw	%ds, saved_ds(%rip)
	movw	%es, saved_es(%rip)
	movw	%ss, saved_ss(%rip)
	movq	%cr0, %rax
	movq	%rax, saved_cr0(%rip)
	movq	%cr3, %rax
	movq	%rax, saved_cr3(%rip)
	movq	%cr4, %rax
	movq	%rax, saved_cr4(%rip)
	movl	$MSR_EFER, %ecx
	rdmsr
	movl	%eax, saved_efer(%rip)
	movl	%edx, saved_efer + 4(%rip)
	sgdt	saved_gdt_limit(%rip)

	/* The last byte of [load, load + init_size): the window must be mapped. */
	movq	saved_rsi(%rip), %rbx
	movq	saved_rip(%rip), %rax
	subq	$STARTUP_64_OFFSET, %rax
	movl	BP_INIT_SIZE(%rbx), %ecx
	movb	-1(%rax,%rcx), %al

	PUTS	s_head
	PUTS	s_regs
	leaq	regs_fields(%rip), %rdi
	leaq	saved(%rip), %rbx
	call	fields

	/* The GDT the GDTR points at (limit + 1 bytes, at most GDT_MAX_BYTES). */
	PUTS	s_gdt
	movzwl	saved_gdt_limit(%rip), %ecx
	incl	%ecx
	cmpl	$GDT_MAX_BYTES, %ecx
	jbe	1f
	movl	$GDT_MAX_BYTES, %ecx
1:	movq	saved_gdt_base(%rip), %rsi
	call	hex_bytes

	PUTS	s_boot_params
	leaq	bp_fields(%rip), %rdi
	movq	saved_rsi(%rip), %rbx
	call	fields

	/* The E820 table: e820_entries (at most the zero page's capacity) entries. */
	PUTS	s_e820
	movzbl	BP_E820_ENTRIES(%rbx), %ecx
	cmpl	$E820_MAX_ENTRIES, %ecx
	jbe	1f
	movl	$E820_MAX_ENTRIES, %ecx
1:	imull	$E820_ENTRY_SIZE, %ecx
	leaq	BP_E820_TABLE(%rbx), %rsi
	call	hex_bytes

	/* The command line through cmd_line_ptr | ext_cmd_line_ptr << 32. */
	PUTS	s_cmdline
	movl	BP_CMD_LINE_PTR(%rbx), %esi
	movl	BP_EXT_CMD_LINE_PTR(%rbx), %eax
	shlq	$32, %rax
	orq	%rax, %rsi
	xorl	%ecx, %ecx
	testq	%rsi, %rsi
	jz	1f
	movl	$CMDLINE_BYTES, %ecx
1:	call	cstr_hex

	/* The ramdisk's first and last RAMDISK_EDGE bytes (fewer if it is smaller). */
	movl	BP_RAMDISK_IMAGE(%rbx), %r8d
	movl	BP_EXT_RAMDISK_IMAGE(%rbx), %eax
	shlq	$32, %rax
	orq	%rax, %r8		/* %r8: address */
	movl	BP_RAMDISK_SIZE(%rbx), %r9d
	movl	BP_EXT_RAMDISK_SIZE(%rbx), %eax
	shlq	$32, %rax
	orq	%rax, %r9		/* %r9: size */
	movl	$RAMDISK_EDGE, %r10d
	cmpq	%r9, %r10
	jbe	1f
	movq	%r9, %r10		/* %r10: bytes per edge */
1:	PUTS	s_ramdisk_head
	movq	%r8, %rsi
	movq	%r10, %rcx
	call	hex_bytes
	PUTS	s_ramdisk_tail
	leaq	(%r8,%r9), %rsi
	subq	%r10, %rsi
	movq	%r10, %rcx
	call	hex_bytes

	/* The whole zero page, for an exact comparison. */
	PUTS	s_zero_page
	movq	saved_rsi(%rip), %rsi
	movl	$BP_SIZE, %ecx
	call	hex_bytes
	PUTS	s_end
	jmp	done

	PROBE_ROUTINES %rax, %rbx, %rcx, %rdx, %rsi, %rdi

/* ---- data (the protected-mode code is in RAM: writable) ---- */
	.balign	8
saved:
saved_rsi:	.quad	0
saved_rbx:	.quad	0
saved_rsp:	.quad	0
saved_rip:	.quad	0
saved_rflags:	.quad	0
saved_cr0:	.quad	0
saved_cr3:	.quad	0
saved_cr4:	.quad	0
saved_efer:	.quad	0
saved_cs:	.short	0
saved_ds:	.short	0
saved_es:	.short	0
saved_ss:	.short	0
/* sgdt in long mode stores the limit (2 bytes), then the base (8 bytes). */
saved_gdt_limit: .short	0
saved_gdt_base:	.quad	0

/* The \"regs\" object: names and sizes from bootfuzz/probes.py, one saved_<name> slot each. */
regs_fields:
	FIELDS_REGS_64

bp_fields:
	FIELDS_BOOT_PARAMS

s_head:		PROBE_HEAD_64
s_regs:		.asciz	",\"regs\":{"
s_gdt:		.asciz	"},\"gdt_hex\":\""
s_boot_params:	.asciz	"\",\"boot_params\":{"
s_e820:		.asciz	"},\"e820_hex\":\""
s_cmdline:	.asciz	"\",\"cmdline_hex\":\""
s_ramdisk_head:	.asciz	"\",\"ramdisk_head_hex\":\""
s_ramdisk_tail:	.asciz	"\",\"ramdisk_tail_hex\":\""
s_zero_page:	.asciz	"\",\"zero_page_hex\":\""
s_end:		.asciz	"\"}\n"

	.balign	16
stack:	.fill	PROBE_STACK_SIZE, 1, 0
stack_top:
