/*
 * bootfuzz probe for the 16-bit boot protocol: real-mode code in the setup
 * sectors of the probe bzImage.  bootfuzz/guest/probes.py links it at
 * PROBE16_OFFSET and puts it there, so its addresses are offsets from X, the
 * base of the real-mode part.
 *
 * Entered as a kernel's setup code is (boot.rst "Running the kernel"):
 * CS = X/16 + 0x20 and IP = 0, the 2-byte jump at offset 0x200; the header's
 * end jumps on to here.  It records the entry state before touching anything,
 * then asks the BIOS what the kernel's setup code asks it: the memory map
 * (INT 15h E820h, as arch/x86/boot/memory.c does), E801h, 88h and the BDA's
 * base memory.  It reads the setup header in its own segment, where the loader
 * wrote it, and the command line and the ramdisk's first and last bytes
 * through their pointers: the ramdisk lies above 1 MiB, which real mode cannot
 * reach, so FS is given a flat 4 GiB segment in protected mode and keeps it
 * back in real mode ("unreal" mode).  Then it prints one BOOTFUZZ-PROBE line
 * on COM1 and exits through the exit port.
 */
	.include "probes.inc"
	.include "probe_common.inc"

	.macro	PUTS label
	movl	$\label, %esi
	call	puts
	.endm

	.equ	FLAT_DATA_SELECTOR, 0x08
	.equ	CR0_PE, 0x01

	.text
	.code16
probe16_entry:
	/* Nothing here may change a flag or a register before it is saved.  Until
	   CS is rebased, memory is reached through CS, whose base is X plus
	   SETUP_ENTRY_OFFSET: link addresses less that. */
	movw	%sp, %cs:saved_sp - SETUP_ENTRY_OFFSET
	movw	%ss, %cs:saved_ss - SETUP_ENTRY_OFFSET
	movw	%ds, %cs:saved_ds - SETUP_ENTRY_OFFSET
	movw	%es, %cs:saved_es - SETUP_ENTRY_OFFSET
	movw	%fs, %cs:saved_fs - SETUP_ENTRY_OFFSET
	movw	%gs, %cs:saved_gs - SETUP_ENTRY_OFFSET
	movw	%cs, %cs:saved_cs - SETUP_ENTRY_OFFSET
	movw	%cs, %ax		/* our own stack: the setup code's is not ours */
	movw	%ax, %ss
	movw	$stack_top - SETUP_ENTRY_OFFSET, %sp
	pushfl
	popl	%cs:saved_eflags - SETUP_ENTRY_OFFSET
	/* IP at the entry: where this call returns, less how far that is from the
	   entry's jump at SETUP_ENTRY_OFFSET. */
	call	1f
1:	popw	%ax
	subw	$(1b - SETUP_ENTRY_OFFSET), %ax
	movw	%ax, %cs:saved_ip - SETUP_ENTRY_OFFSET
	movl	%cr0, %eax
	movl	%eax, %cs:saved_cr0 - SETUP_ENTRY_OFFSET
	movl	%cr4, %eax
	movl	%eax, %cs:saved_cr4 - SETUP_ENTRY_OFFSET

	/* CS = DS = ES = SS = X/16, X as boot.rst relates it to CS. */
	movw	%cs, %ax
	subw	$(SETUP_ENTRY_OFFSET >> 4), %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	movw	$stack_top, %sp
	pushw	%ax
	pushw	$rebased
	lretw
rebased:
	cld

	/* The memory map, 20-byte entries at ES:DI until EBX comes back 0. */
	xorl	%ebx, %ebx
	movw	$e820_buf, %di
1:	movl	$0xe820, %eax
	movl	$E820_SMAP, %edx
	movl	$E820_ENTRY_SIZE, %ecx
	int	$0x15
	jc	2f
	cmpl	$E820_SMAP, %eax
	jne	2f
	incw	e820_count
	addw	$E820_ENTRY_SIZE, %di
	testl	%ebx, %ebx
	jz	2f
	cmpw	$E820_MAX_ENTRIES, e820_count
	jb	1b
2:
	/* E801h and 88h, registers as they come back (a refusal shows as AH = 86h). */
	movl	$0xe801, %eax
	xorl	%ebx, %ebx
	xorl	%ecx, %ecx
	xorl	%edx, %edx
	stc
	int	$0x15
	movw	%ax, saved_bios_e801_ax
	movw	%bx, saved_bios_e801_bx
	movw	%cx, saved_bios_e801_cx
	movw	%dx, saved_bios_e801_dx
	movl	$0x8800, %eax
	stc
	int	$0x15
	movw	%ax, saved_bios_ext_mem_kib
	xorw	%ax, %ax
	movw	%ax, %fs
	movw	%fs:BDA_BASE_MEM_KIB, %ax
	movw	%ax, saved_bios_base_mem_kib

	/* A flat 4 GiB FS: loaded in protected mode, kept in real mode. */
	movw	%ds, %ax
	movzwl	%ax, %eax
	shll	$4, %eax
	addl	$gdt, %eax
	movl	%eax, gdt_ptr + 2
	lgdtl	gdt_ptr
	movl	%cr0, %eax
	orb	$CR0_PE, %al
	movl	%eax, %cr0
	jmp	1f
1:	movw	$FLAT_DATA_SELECTOR, %bx
	movw	%bx, %fs
	andb	$~CR0_PE, %al
	movl	%eax, %cr0
	jmp	1f
1:
	/* The command line through cmd_line_ptr (0: none). */
	movl	BP_CMD_LINE_PTR, %esi
	xorl	%ecx, %ecx
	testl	%esi, %esi
	jz	1f
	movl	$CMDLINE_BYTES, %ecx
1:	movl	%ecx, cmdline_len
	movw	$cmdline_buf, %di
	call	fs_copy

	/* The ramdisk's first and last RAMDISK_EDGE bytes (fewer if it is smaller). */
	movl	BP_RAMDISK_IMAGE, %esi
	movl	BP_RAMDISK_SIZE, %edx
	xorl	%ecx, %ecx
	testl	%esi, %esi
	jz	1f
	movl	$RAMDISK_EDGE, %ecx
	cmpl	%edx, %ecx
	jbe	1f
	movl	%edx, %ecx
1:	movl	%ecx, ramdisk_edge
	movw	$ramdisk_head, %di
	call	fs_copy
	addl	%edx, %esi
	subl	%ecx, %esi
	movw	$ramdisk_tail, %di
	call	fs_copy

	PUTS	s_head
	PUTS	s_regs
	movl	$regs_fields, %edi
	movl	$saved, %ebx
	call	fields
	PUTS	s_setup_header
	movl	$sh_fields, %edi
	xorl	%ebx, %ebx		/* the header sits at its boot_params offsets from X */
	call	fields
	PUTS	s_bios
	movl	$bios_fields, %edi
	movl	$saved, %ebx
	call	fields
	PUTS	s_e820
	movzwl	e820_count, %ecx
	imull	$E820_ENTRY_SIZE, %ecx
	movl	$e820_buf, %esi
	call	hex_bytes
	PUTS	s_cmdline
	movl	cmdline_len, %ecx
	movl	$cmdline_buf, %esi
	call	cstr_hex
	PUTS	s_ramdisk_head
	movl	ramdisk_edge, %ecx
	movl	$ramdisk_head, %esi
	call	hex_bytes
	PUTS	s_ramdisk_tail
	movl	ramdisk_edge, %ecx
	movl	$ramdisk_tail, %esi
	call	hex_bytes
	/* The boot sector and the header's sector, as the loader left them. */
	PUTS	s_page
	xorl	%esi, %esi
	movl	$PROBE16_PAGE_BYTES, %ecx
	call	hex_bytes
	PUTS	s_end
	jmp	done

/* fs_copy: %ecx bytes from linear address %esi, through FS, to DS:%di. */
fs_copy:
	pushl	%eax
	pushl	%ecx
	pushl	%esi
	pushw	%di
	testl	%ecx, %ecx
	jz	2f
1:	movb	%fs:(%esi), %al
	movb	%al, (%di)
	incl	%esi
	incw	%di
	decl	%ecx
	jnz	1b
2:	popw	%di
	popl	%esi
	popl	%ecx
	popl	%eax
	ret

	/* The shared routines, in 16-bit code with 32-bit registers: every
	   address they use is an offset inside this segment. */
	PROBE_ROUTINES %eax, %ebx, %ecx, %edx, %esi, %edi

/* ---- data (the setup sectors are in RAM: writable) ---- */
	.balign	4
saved:
saved_eflags:	.long	0
saved_cr0:	.long	0
saved_cr4:	.long	0
saved_cs:	.short	0
saved_ip:	.short	0
saved_ds:	.short	0
saved_es:	.short	0
saved_fs:	.short	0
saved_gs:	.short	0
saved_ss:	.short	0
saved_sp:	.short	0
saved_bios_e801_ax:	.short	0
saved_bios_e801_bx:	.short	0
saved_bios_e801_cx:	.short	0
saved_bios_e801_dx:	.short	0
saved_bios_ext_mem_kib:	.short	0
saved_bios_base_mem_kib: .short	0
e820_count:	.short	0
	.balign	4
cmdline_len:	.long	0
ramdisk_edge:	.long	0

/* null, then flat data: base 0, limit 4 GiB (G), read/write, present. */
	.balign	8
gdt:	.quad	0
	.quad	0x00cf92000000ffff
gdt_end:
gdt_ptr:
	.short	gdt_end - gdt - 1
	.long	0			/* X + gdt, filled in at run time */

regs_fields:
	FIELDS_REGS_16
sh_fields:
	FIELDS_SETUP_HEADER
bios_fields:
	FIELDS_BIOS_16

s_head:		PROBE_HEAD_16
s_regs:		.asciz	",\"regs\":{"
s_setup_header:	.asciz	"},\"setup_header\":{"
s_bios:		.asciz	"},\"bios\":{"
s_e820:		.asciz	"},\"e820_hex\":\""
s_cmdline:	.asciz	"\",\"cmdline_hex\":\""
s_ramdisk_head:	.asciz	"\",\"ramdisk_head_hex\":\""
s_ramdisk_tail:	.asciz	"\",\"ramdisk_tail_hex\":\""
s_page:		.asciz	"\",\"setup_page_hex\":\""
s_end:		.asciz	"\"}\n"

/* Buffers and the stack lie past the loaded bytes, in the setup heap boot.rst
   grants the setup code (bootfuzz/guest/probes.py checks the footprint). */
	.balign	16
code_end:
	.equ	cmdline_buf, code_end
	.equ	ramdisk_head, cmdline_buf + CMDLINE_BYTES
	.equ	ramdisk_tail, ramdisk_head + RAMDISK_EDGE
	.equ	e820_buf, ramdisk_tail + RAMDISK_EDGE
	.equ	stack_top, e820_buf + E820_MAX_ENTRIES * E820_ENTRY_SIZE + PROBE16_STACK_BYTES
