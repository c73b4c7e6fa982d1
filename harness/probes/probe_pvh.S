/*
 * bootfuzz probe for the PVH entry: a tiny ELF64 "vmlinux" whose Xen note
 * XEN_ELFNOTE_PHYS32_ENTRY names pvh_entry (bootfuzz/probes.py links it at
 * PVH_LOAD_ADDR with a generated linker script and wraps it as a bzImage
 * payload, which is where our loader's PVH path takes a vmlinux from).
 *
 * Entered in 32-bit protected mode with paging off and EBX = hvm_start_info,
 * as pvh.pandoc describes.  It records the entry state before touching
 * anything, reads start_info through EBX (fields, module 0, the memory map,
 * the command line and the module's first and last bytes through their
 * addresses, the whole page), prints one BOOTFUZZ-PROBE line on COM1 and exits
 * through the exit port.  With paging off only the low 32 bits of an address
 * can be followed; a table or string above 4 GiB is reported empty.
 */
	.include "probes.inc"
	.include "probe_common.inc"

	.macro	PUTS label
	movl	$\label, %esi
	call	puts
	.endm

/* The note Linux's PVH loaders look for: name "Xen", type PHYS32_ENTRY, an 8-byte address. */
	.section .note.Xen, "a", @note
	.balign	4
	.long	2f - 1f			/* namesz */
	.long	4f - 3f			/* descsz */
	.long	XEN_ELFNOTE_PHYS32_ENTRY
1:	XEN_NOTE_NAME
2:	.balign	4
3:	.quad	pvh_entry
4:	.balign	4

	.text
	.code32
	.globl	pvh_entry
pvh_entry:
	/* Nothing here may change a flag or a register before it is saved. */
	movl	%ebx, saved_ebx
	movl	%esi, saved_esi
	movl	%esp, saved_esp
	movl	$stack_top, %esp	/* our own stack: PVH promises none */
	pushfl
	popl	saved_eflags
	movl	$0, module0		/* do not count on a zeroed bss */
	call	1f
1:	popl	%eax
	subl	$(1b - pvh_entry), %eax	/* where we really run */
	movl	%eax, saved_eip
	movw	%cs, saved_cs
	movw	%ds, saved_ds
	movw	%es, saved_es
	movw	%ss, saved_ss
	movl	%cr0, %eax
	movl	%eax, saved_cr0
	movl	%cr4, %eax
	movl	%eax, saved_cr4
	sgdt	saved_gdt_limit

	PUTS	s_head
	PUTS	s_regs
	movl	$regs_fields, %edi
	movl	$saved, %ebx
	call	fields

	/* The GDT the GDTR points at (limit + 1 bytes, at most GDT_MAX_BYTES). */
	PUTS	s_gdt
	movzwl	saved_gdt_limit, %ecx
	incl	%ecx
	cmpl	$GDT_MAX_BYTES, %ecx
	jbe	1f
	movl	$GDT_MAX_BYTES, %ecx
1:	movl	saved_gdt_base, %esi
	call	hex_bytes

	PUTS	s_start_info
	movl	$si_fields, %edi
	movl	saved_ebx, %ebx
	call	fields

	/* Module 0, when there is one and the list is reachable. */
	PUTS	s_module0
	cmpl	$0, HSI_NR_MODULES(%ebx)
	je	1f
	cmpl	$0, HSI_MODLIST_PADDR + 4(%ebx)
	jne	1f
	movl	HSI_MODLIST_PADDR(%ebx), %eax
	movl	%eax, module0
	PUTS	s_open
	movl	$mod_fields, %edi
	movl	module0, %ebx
	call	fields
	PUTS	s_close
	movl	saved_ebx, %ebx
	jmp	2f
1:	PUTS	s_null

	/* The memory map: memmap_entries (at most MEMMAP_MAX_ENTRIES) entries. */
2:	PUTS	s_memmap
	xorl	%ecx, %ecx
	cmpl	$0, HSI_MEMMAP_PADDR + 4(%ebx)
	jne	1f
	movl	HSI_MEMMAP_ENTRIES(%ebx), %ecx
	cmpl	$MEMMAP_MAX_ENTRIES, %ecx
	jbe	1f
	movl	$MEMMAP_MAX_ENTRIES, %ecx
1:	imull	$MEMMAP_ENTRY_SIZE, %ecx
	movl	HSI_MEMMAP_PADDR(%ebx), %esi
	call	hex_bytes

	/* The command line at cmdline_paddr (0: none). */
	PUTS	s_cmdline
	xorl	%ecx, %ecx
	movl	HSI_CMDLINE_PADDR(%ebx), %eax
	cmpl	$0, HSI_CMDLINE_PADDR + 4(%ebx)
	jne	1f
	testl	%eax, %eax
	jz	1f
	movl	$CMDLINE_BYTES, %ecx
1:	movl	%eax, %esi
	call	cstr_hex

	/* Module 0's first and last RAMDISK_EDGE bytes (fewer if it is smaller). */
	xorl	%edi, %edi		/* %edi: bytes per edge */
	movl	module0, %edx
	testl	%edx, %edx
	jz	1f
	cmpl	$0, MOD_PADDR + 4(%edx)
	jne	1f
	cmpl	$0, MOD_SIZE + 4(%edx)
	jne	1f
	movl	MOD_PADDR(%edx), %ebp	/* %ebp: address */
	movl	MOD_SIZE(%edx), %edx	/* %edx: size */
	movl	$RAMDISK_EDGE, %edi
	cmpl	%edx, %edi
	jbe	1f
	movl	%edx, %edi
1:	PUTS	s_ramdisk_head
	movl	%ebp, %esi
	movl	%edi, %ecx
	call	hex_bytes
	PUTS	s_ramdisk_tail
	leal	(%ebp,%edx), %esi
	subl	%edi, %esi
	movl	%edi, %ecx
	call	hex_bytes

	/* The whole start_info page, for an exact comparison. */
	PUTS	s_start_info_page
	movl	saved_ebx, %esi
	movl	$START_INFO_PAGE_SIZE, %ecx
	call	hex_bytes
	PUTS	s_end
	jmp	done

	PROBE_ROUTINES %eax, %ebx, %ecx, %edx, %esi, %edi

	.section .rodata
/* The \"regs\" object: names and sizes from bootfuzz/probes.py, one saved_<name> slot each. */
regs_fields:
	FIELDS_REGS_PVH

si_fields:
	FIELDS_START_INFO
mod_fields:
	FIELDS_MODULE

s_head:		PROBE_HEAD_PVH
s_regs:		.asciz	",\"regs\":{"
s_gdt:		.asciz	"},\"gdt_hex\":\""
s_start_info:	.asciz	"\",\"start_info\":{"
s_module0:	.asciz	"},\"module0\":"
s_open:		.asciz	"{"
s_close:	.asciz	"}"
s_null:		.asciz	"null"
s_memmap:	.asciz	",\"memmap_hex\":\""
s_cmdline:	.asciz	"\",\"cmdline_hex\":\""
s_ramdisk_head:	.asciz	"\",\"ramdisk_head_hex\":\""
s_ramdisk_tail:	.asciz	"\",\"ramdisk_tail_hex\":\""
s_start_info_page: .asciz "\",\"start_info_page_hex\":\""
s_end:		.asciz	"\"}\n"

/* Written before it is read; in .data so the PT_LOAD has file bytes. */
	.data
	.balign	8
saved:
saved_ebx:	.long	0
saved_esi:	.long	0
saved_esp:	.long	0
saved_eip:	.long	0
saved_eflags:	.long	0
saved_cr0:	.long	0
saved_cr4:	.long	0
saved_cs:	.short	0
saved_ds:	.short	0
saved_es:	.short	0
saved_ss:	.short	0
/* sgdt in 32-bit mode stores the limit (2 bytes), then the base (4 bytes). */
saved_gdt_limit: .short	0
saved_gdt_base:	.long	0
	.balign	4
module0:	.long	0		/* address of module 0's entry, 0: none */

/* PT_LOAD memory past p_filesz: the loader leaves it to fresh RAM. */
	.bss
	.balign	16
stack:	.skip	PROBE_STACK_SIZE
stack_top:
