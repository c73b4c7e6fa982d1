/*
 * bootfuzz firmware stub: a 64 KiB image for QEMU's `-bios`.
 *
 * QEMU maps a 64 KiB BIOS image at 0xFFFF0000 (the CPU resets to
 * 0xFFFFFFF0 there) and again at 0xF0000.  The stub replaces SeaBIOS: it
 * reads the hand-off block our loader wrote (bootfuzz/abi/handoff.py) and
 * puts the CPU into exactly the state the plan asks for, then jumps to the
 * kernel (or whatever the plan's rip is).  For the 32- and 64-bit modes there
 * are no BIOS services and no tables: the loader wrote everything else the
 * kernel reads.  The REAL_16 mode (the 16-bit boot protocol) stays in real
 * mode and installs the small BIOS in bios16.S first.
 *
 * Linked to run at FW_BASE (0xF0000).  GNU as does not run cpp, so every
 * constant comes from handoff.inc, which bootfuzz/harness.py generates from
 * the Python declarations.  Comments use C style: as strips them itself.
 */
	.include "handoff.inc"

	/* The 16-bit code below addresses the block with DS = 0. */
	.if HANDOFF_ADDR + HANDOFF_SIZE > 0x10000
	.error "hand-off block must lie below 64 KiB"
	.endif
	.if FW_STACK_TOP > 0x10000
	.error "firmware stack must lie below 64 KiB"
	.endif

	.text
fw_image:

/* ---- 16-bit real mode, CS = 0xF000 (base 0xF0000) ---- */
	.code16
start16:
	cli
	cld
	xorw	%ax, %ax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %ss
	/* A few bytes of stack for the far return below, in the boot stack region. */
	movw	$FW_STACK_TOP, %sp

	/* Fast A20 (port 0x92 bit 1), so odd megabytes do not alias. */
	inb	$PORT_SYS_CTRL_A, %al
	orb	$0x02, %al
	andb	$0xfe, %al              /* bit 0 would reset the machine */
	outb	%al, $PORT_SYS_CTRL_A

	cmpl	$HANDOFF_MAGIC, HANDOFF_ADDR + HO_MAGIC
	jne	bad_magic
	cmpl	$HANDOFF_MODE_REAL_16, HANDOFF_ADDR + HO_MODE
	je	enter_real16

	/* gdt_limit (16 bits) and gdt_base (32 bits) are the 6-byte lgdt operand. */
	lgdtl	HANDOFF_ADDR + HO_GDT_LIMIT
	movl	%cr0, %eax
	orl	$X86_CR0_PE, %eax
	movl	%eax, %cr0

	/* Far return to firmware_code_selector:pm32 (a 32-bit lret from 16-bit code). */
	movzwl	HANDOFF_ADDR + HO_FIRMWARE_CODE_SELECTOR, %eax
	pushl	%eax
	pushl	$pm32
	lretl

/* The block is not ours to trust: say so on COM1 and stop. */
bad_magic:
	movw	$(msg_bad_magic - fw_image), %si
	call	puts16
halt16:
	hlt
	jmp	halt16

/* Writes the NUL-terminated string at CS:SI to COM1; preserves all but SI, flags. */
puts16:
	pushw	%ax
	pushw	%dx
1:	movb	%cs:(%si), %al
	incw	%si
	testb	%al, %al
	jz	3f
	call	putc16
	jmp	1b
3:	popw	%dx
	popw	%ax
	ret

/* Writes AL to COM1, polling THRE first; preserves all registers but flags. */
putc16:
	pushw	%ax
	pushw	%dx
	movb	%al, %ah
	movw	$(COM1_BASE + UART_LSR), %dx
1:	inb	%dx, %al
	testb	$UART_LSR_THRE, %al
	jz	1b
	movb	%ah, %al
	movw	$COM1_BASE, %dx
	outb	%al, %dx
	popw	%dx
	popw	%ax
	ret

	.include "bios16.S"

/* ---- 32-bit protected mode, flat segments from the plan's GDT ---- */
	.code32
pm32:
	movzwl	HANDOFF_ADDR + HO_DATA_SELECTOR, %eax
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %fs
	movw	%ax, %gs
	movw	%ax, %ss
	movl	HANDOFF_ADDR + HO_RSP, %esp

	movl	$msg_entering, %esi
	call	puts32

	movl	HANDOFF_ADDR + HO_MODE, %eax
	cmpl	$HANDOFF_MODE_LONG_64, %eax
	je	enter_long64
	cmpl	$HANDOFF_MODE_PROTECTED_32, %eax
	je	enter_protected32
	movl	$msg_bad_mode, %esi
	call	puts32
halt32:
	hlt
	jmp	halt32

/* The 32-bit boot protocol and PVH: paging off, ESI = boot_params / start_info. */
enter_protected32:
	movl	HANDOFF_ADDR + HO_CR0, %eax
	movl	%eax, %cr0
	movzwl	HANDOFF_ADDR + HO_CODE_SELECTOR, %eax
	pushl	%eax
	pushl	HANDOFF_ADDR + HO_RIP
	movl	HANDOFF_ADDR + HO_RSI, %esi
	movl	HANDOFF_ADDR + HO_RBX, %ebx
	xorl	%eax, %eax
	xorl	%ecx, %ecx
	xorl	%edx, %edx
	xorl	%edi, %edi
	xorl	%ebp, %ebp
	/* Pops rip and code_selector, leaving ESP at the plan's rsp. */
	lretl

/* The 64-bit boot protocol: PAE + LME + PG with the plan's page tables. */
enter_long64:
	movl	HANDOFF_ADDR + HO_CR4, %eax
	movl	%eax, %cr4
	movl	HANDOFF_ADDR + HO_CR3, %eax
	movl	%eax, %cr3
	movl	$MSR_EFER, %ecx
	movl	HANDOFF_ADDR + HO_EFER, %eax
	movl	HANDOFF_ADDR + HO_EFER + 4, %edx
	wrmsr
	/* Setting PG with EFER.LME activates IA-32e: compatibility mode until CS changes. */
	movl	HANDOFF_ADDR + HO_CR0, %eax
	movl	%eax, %cr0
	movzwl	HANDOFF_ADDR + HO_CODE_SELECTOR, %eax
	pushl	%eax
	pushl	$lm64
	lretl

	.code64
lm64:
	movq	HANDOFF_ADDR + HO_RSI, %rsi
	movq	HANDOFF_ADDR + HO_RBX, %rbx
	movq	HANDOFF_ADDR + HO_RSP, %rsp
	xorl	%eax, %eax
	xorl	%ecx, %ecx
	xorl	%edx, %edx
	xorl	%edi, %edi
	xorl	%ebp, %ebp
	jmpq	*HANDOFF_ADDR + HO_RIP

	.code32
/* Writes the NUL-terminated string at ESI to COM1, polling THRE before each byte. */
puts32:
	lodsb
	testb	%al, %al
	jz	3f
	movb	%al, %bl
	movw	$(COM1_BASE + UART_LSR), %dx
1:	inb	%dx, %al
	testb	$UART_LSR_THRE, %al
	jz	1b
	movb	%bl, %al
	movw	$COM1_BASE, %dx
	outb	%al, %dx
	jmp	puts32
3:	ret

/* The texts are macros from handoff.inc: the backend matches them too. */
msg_bad_magic:
	FW_MSG_BAD_MAGIC
msg_bad_mode:
	FW_MSG_BAD_MODE
msg_entering:
	FW_MSG_ENTERING
msg_unserved:
	FW_MSG_UNSERVED

/* ---- reset vector: linear 0xFFFFFFF0 = image offset 0xFFF0 ---- */
	.org	RESET_VECTOR_OFFSET
	.code16
reset_vector:
	/* Leave the 0xFFFF0000 alias for the copy at 0xF0000 we are linked for. */
	ljmp	$(FW_BASE >> 4), $(start16 - fw_image)
	.org	FW_SIZE
