/*
 * bootfuzz firmware, part 2: the BIOS of the 16-bit boot protocol (REAL_16).
 *
 * Included by stub.S (same image, same section, linked at FW_BASE; code runs
 * with CS = FW_BASE >> 4).  The kernel's real-mode setup code (arch/x86/boot)
 * asks the BIOS for the memory map, video state, keyboard, disks and time; we
 * answer from the BIOS data block the loader wrote (BIOS_DATA_ADDR, declared
 * in bootfuzz/abi/handoff.py), so the kernel's own E820 probe reads back the
 * plan's table.  Services, each as the setup code uses it:
 *
 *   INT 15h  E820h   memory map, 20-byte entries, EBX continuation, 'SMAP'
 *            E801h   AX=CX KiB 1..16 MiB, BX=DX 64 KiB blocks above 16 MiB
 *            88h     AX KiB from 1 MiB (capped, see EXT_MEM_KIB_MAX)
 *            2400h..2403h  A20 through port 0x92
 *            C0h, 53xxh    CF=1 AH=86h (no config table, no APM)
 *   INT 10h  00h set mode, 02h/03h cursor, 0Fh get mode (80x25 text, mode 3);
 *            0Eh teletype (discarded: the kernel's serial console carries text);
 *            12h, 1Ah, 4Fh answered "not EGA/VGA/VBE" by leaving AL/BL alone
 *   INT 16h  01h/11h no key (ZF=1), 00h/10h Enter, 02h/12h no shift keys, 03h ok
 *   INT 13h  everything: CF=1 AH=01h (no EDD, no disks)
 *   INT 1Ah  02h RTC time from the CMOS (the setup's "wait 30 s" counts on it)
 *   other    CF=1 (INT 15h: AH=86h); a debug build logs the vector on COM1
 *
 * Handlers keep every register they do not answer in; CF, ZF are set in the
 * caller's saved FLAGS, so IRET restores the caller's IF and DF.
 */

	.code16

	.if BIOS_DATA_ADDR + BIOS_E820_TABLE > 0x10000
	.error "the BIOS data block must lie below 64 KiB (DS = 0 addressing)"
	.endif

	.equ	IVT_VECTORS, 256
	.equ	INT_STUB_SIZE, 8
	.equ	FW_SEGMENT, FW_BASE >> 4
	.equ	FLAGS_CF, 0x0001
	.equ	FLAGS_ZF, 0x0040
	/* Offset of the caller's FLAGS after `pushw %bp; movw %sp, %bp`. */
	.equ	FRAME_FLAGS, 6
	/* INT 16h: BIOS scan code 1Ch with ASCII CR, the Enter key. */
	.equ	KEY_ENTER, 0x1c0d
	/* INT 15h AX=2403h: BX bit 1 = A20 through system control port A. */
	.equ	A20_SUPPORT_PORT92, 0x0002

/* ---- entry: DS = ES = SS = 0, SP = FW_STACK_TOP, IF = 0 (from start16) ---- */
enter_real16:
	cmpl	$BIOS_DATA_MAGIC, BIOS_DATA_ADDR + BD_MAGIC
	jne	bad_magic

	/* The setup code runs `sti`: no 8259 input may reach our IVT. */
	movb	$0xff, %al
	outb	%al, $PIC_MASTER_IMR
	outb	%al, $PIC_SLAVE_IMR

	/* Every vector to its default stub at FW_SEGMENT:int_stubs + 8 * vector. */
	cld
	xorw	%di, %di
	movw	$(int_stubs - fw_image), %bx
	movw	$IVT_VECTORS, %cx
1:	movw	%bx, %ax
	stosw
	movw	$FW_SEGMENT, %ax
	stosw
	addw	$INT_STUB_SIZE, %bx
	loop	1b
	movw	$(int10_handler - fw_image), 0x10 * 4
	movw	$(int13_handler - fw_image), 0x13 * 4
	movw	$(int15_handler - fw_image), 0x15 * 4
	movw	$(int16_handler - fw_image), 0x16 * 4
	movw	$(int1a_handler - fw_image), 0x1a * 4

	/* BIOS data area: zero, then what the kernel reads. */
	movw	$BDA_ADDR, %di
	movw	$(BDA_SIZE / 2), %cx
	xorw	%ax, %ax
	rep stosw
	movw	BIOS_DATA_ADDR + BD_EBDA_SEGMENT, %ax
	movw	%ax, BDA_ADDR + BDA_EBDA_SEGMENT
	movw	BIOS_DATA_ADDR + BD_BASE_MEM_KIB, %ax
	movw	%ax, BDA_ADDR + BDA_BASE_MEM_KIB
	movb	$VIDEO_MODE_TEXT_80X25, BDA_ADDR + BDA_VIDEO_MODE
	movw	$VIDEO_COLS, BDA_ADDR + BDA_VIDEO_COLS
	movb	$(VIDEO_ROWS - 1), BDA_ADDR + BDA_VIDEO_ROWS_MINUS1
	movw	$VIDEO_CHAR_HEIGHT, BDA_ADDR + BDA_CHAR_HEIGHT

	movw	$(msg_entering - fw_image), %si
	call	puts16

	/* boot.rst, "Running the kernel": CS:IP = seg+0x20:0, DS=ES=FS=GS=SS = seg,
	   SP = heap end, interrupts off.  Everything is read before DS changes. */
	movw	HANDOFF_ADDR + HO_DATA_SELECTOR, %ax
	movw	HANDOFF_ADDR + HO_CODE_SELECTOR, %bx
	movw	HANDOFF_ADDR + HO_RIP, %cx
	movzwl	HANDOFF_ADDR + HO_RSP, %edx
	movw	%ax, %ss
	movl	%edx, %esp
	pushw	%bx
	pushw	%cx
	movw	%ax, %ds
	movw	%ax, %es
	movw	%ax, %fs
	movw	%ax, %gs
	xorl	%eax, %eax
	xorl	%ebx, %ebx
	xorl	%ecx, %ecx
	xorl	%edx, %edx
	xorl	%esi, %esi
	xorl	%edi, %edi
	xorl	%ebp, %ebp
	/* Pops IP and CS, leaving SP at the plan's value. */
	lretw

/* ---- common exits: the stack holds the caller's IP, CS, FLAGS ---- */
iret_cf_clear:
	pushw	%bp
	movw	%sp, %bp
	andw	$~FLAGS_CF, FRAME_FLAGS(%bp)
	popw	%bp
	iret

iret_cf_set:
	pushw	%bp
	movw	%sp, %bp
	orw	$FLAGS_CF, FRAME_FLAGS(%bp)
	popw	%bp
	iret

/* An interrupt we do not serve; the stack holds the vector, then IP, CS, FLAGS. */
int_unserved:
	.if FW_DEBUG
	call	log_unserved
	.endif
	addw	$2, %sp
	jmp	iret_cf_set

/* The same for an INT 15h function: AH = 86h, "function not supported". */
int15_unserved:
	.if FW_DEBUG
	call	log_unserved
	.endif
	addw	$2, %sp
	movb	$INT15_UNSUPPORTED, %ah
	jmp	iret_cf_set

	.if FW_DEBUG
/* Logs "unserved int 0x<vector> ax=<AX>" on COM1; the vector is the word
   above the return address.  Preserves all registers but flags. */
log_unserved:
	pushw	%bp
	movw	%sp, %bp
	pushw	%si
	pushw	%ax
	movw	$(msg_unserved - fw_image), %si
	call	puts16
	movb	4(%bp), %al
	call	puthex8
	movw	$(msg_ax - fw_image), %si
	call	puts16
	popw	%ax
	pushw	%ax
	xchgb	%al, %ah
	call	puthex8
	xchgb	%al, %ah
	call	puthex8
	movb	$'\n', %al
	call	putc16
	popw	%ax
	popw	%si
	popw	%bp
	ret
msg_ax:
	.asciz	" ax="
	.endif

	.if FW_DEBUG
/* Writes AL as two hex digits; preserves all registers but flags. */
puthex8:
	pushw	%ax
	shrb	$4, %al
	call	puthex4
	popw	%ax
	pushw	%ax
	call	puthex4
	popw	%ax
	ret
puthex4:
	andb	$0x0f, %al
	addb	$'0', %al
	cmpb	$'9', %al
	jbe	1f
	addb	$('a' - '0' - 10), %al
1:	jmp	putc16
	.endif

/* ---- INT 15h: system services ---- */
int15_handler:
	cmpl	$0xe820, %eax
	je	int15_e820
	cmpw	$0xe801, %ax
	je	int15_e801
	cmpb	$0x88, %ah
	je	int15_88
	cmpb	$0x24, %ah
	je	int15_a20
	cmpb	$0xc0, %ah
	je	int15_fail
	cmpb	$0x53, %ah
	je	int15_fail
	pushw	$0x15
	jmp	int15_unserved

int15_fail:
	movb	$INT15_UNSUPPORTED, %ah
	jmp	iret_cf_set

/* EDX = 'SMAP', EBX = continuation (0 first), ECX = buffer size, ES:DI = buffer.
   Out: the entry at ES:DI, EAX = 'SMAP', ECX = 20, EBX = next or 0 after the
   last, CF = 0; CF = 1 for a bad signature, a short buffer or an EBX past the end. */
int15_e820:
	cmpl	$E820_SMAP, %edx
	jne	int15_fail
	cmpl	$E820_ENTRY_SIZE, %ecx
	jb	int15_fail
	pushw	%ds
	pushw	%si
	pushw	%di
	xorw	%si, %si
	movw	%si, %ds
	cmpl	BIOS_DATA_ADDR + BD_E820_COUNT, %ebx
	jae	9f
	imulw	$E820_ENTRY_SIZE, %bx, %si
	addw	$(BIOS_DATA_ADDR + BIOS_E820_TABLE), %si
	movw	$E820_ENTRY_SIZE, %cx
	cld
	rep movsb
	incl	%ebx
	cmpl	BIOS_DATA_ADDR + BD_E820_COUNT, %ebx
	jb	1f
	xorl	%ebx, %ebx
1:	popw	%di
	popw	%si
	popw	%ds
	movl	$E820_SMAP, %eax
	movl	$E820_ENTRY_SIZE, %ecx
	jmp	iret_cf_clear
9:	popw	%di
	popw	%si
	popw	%ds
	jmp	int15_fail

int15_e801:
	pushw	%ds
	xorw	%ax, %ax
	movw	%ax, %ds
	movw	BIOS_DATA_ADDR + BD_E801_LOW_KIB, %ax
	movw	%ax, %cx
	movw	BIOS_DATA_ADDR + BD_E801_HIGH_BLOCKS, %bx
	movw	%bx, %dx
	popw	%ds
	jmp	iret_cf_clear

int15_88:
	pushw	%ds
	xorw	%ax, %ax
	movw	%ax, %ds
	movw	BIOS_DATA_ADDR + BD_EXT_MEM_KIB, %ax
	popw	%ds
	jmp	iret_cf_clear

/* AL = 0 disable, 1 enable, 2 status (AL = 0/1), 3 support (BX); AH = 0. */
int15_a20:
	cmpb	$0x03, %al
	ja	int15_fail
	je	3f
	cmpb	$0x02, %al
	je	2f
	pushw	%dx
	movb	%al, %dl
	inb	$PORT_SYS_CTRL_A, %al
	andb	$0xfc, %al              /* bit 0 would reset the machine */
	shlb	$1, %dl
	orb	%dl, %al
	outb	%al, $PORT_SYS_CTRL_A
	popw	%dx
	xorb	%ah, %ah
	jmp	iret_cf_clear
2:	inb	$PORT_SYS_CTRL_A, %al
	shrb	$1, %al
	andb	$0x01, %al
	xorb	%ah, %ah
	jmp	iret_cf_clear
3:	movw	$A20_SUPPORT_PORT92, %bx
	xorb	%ah, %ah
	jmp	iret_cf_clear

/* ---- INT 10h: a text adapter without a screen ---- */
int10_handler:
	cmpb	$0x0e, %ah
	je	int10_done
	cmpb	$0x00, %ah
	je	int10_set_mode
	cmpb	$0x02, %ah
	je	int10_set_cursor
	cmpb	$0x03, %ah
	je	int10_get_cursor
	cmpb	$0x0f, %ah
	je	int10_get_mode
	/* 12h BL=10h (EGA info), 1Ah (display combination), 4Fh (VBE): leaving BL,
	   AL and AX as they came is each call's "not supported" answer. */
	cmpb	$0x12, %ah
	je	int10_done
	cmpb	$0x1a, %ah
	je	int10_done
	cmpb	$0x4f, %ah
	je	int10_done
	pushw	$0x10
	jmp	int_unserved
int10_done:
	iret

int10_set_mode:
	pushw	%ds
	pushw	%ax
	xorw	%ax, %ax
	movw	%ax, %ds
	popw	%ax
	pushw	%ax
	andb	$0x7f, %al              /* bit 7: keep the screen; no meaning here */
	movb	%al, BDA_ADDR + BDA_VIDEO_MODE
	movw	$0, BDA_ADDR + BDA_CURSOR_PAGE0
	popw	%ax
	popw	%ds
	iret

int10_set_cursor:
	pushw	%ds
	pushw	%ax
	xorw	%ax, %ax
	movw	%ax, %ds
	movw	%dx, BDA_ADDR + BDA_CURSOR_PAGE0
	popw	%ax
	popw	%ds
	iret

int10_get_cursor:
	pushw	%ds
	pushw	%ax
	xorw	%ax, %ax
	movw	%ax, %ds
	movw	BDA_ADDR + BDA_CURSOR_PAGE0, %dx
	movw	$VIDEO_CURSOR_SHAPE, %cx
	popw	%ax
	popw	%ds
	iret

/* AL = mode, AH = columns, BH = active page (0). */
int10_get_mode:
	pushw	%ds
	xorw	%ax, %ax
	movw	%ax, %ds
	movb	BDA_ADDR + BDA_VIDEO_MODE, %al
	movb	BDA_ADDR + BDA_VIDEO_COLS, %ah
	xorb	%bh, %bh
	popw	%ds
	iret

/* ---- INT 16h: a keyboard nobody types on ---- */
int16_handler:
	cmpb	$0x01, %ah
	je	int16_check
	cmpb	$0x11, %ah
	je	int16_check
	cmpb	$0x00, %ah
	je	int16_read
	cmpb	$0x10, %ah
	je	int16_read
	cmpb	$0x02, %ah
	je	int16_shift
	cmpb	$0x12, %ah
	je	int16_shift
	cmpb	$0x03, %ah
	je	int16_done
	pushw	$0x16
	jmp	int_unserved
/* No key waiting: ZF = 1. */
int16_check:
	xorw	%ax, %ax
	pushw	%bp
	movw	%sp, %bp
	orw	$FLAGS_ZF, FRAME_FLAGS(%bp)
	popw	%bp
	iret
/* Would wait for a key; Enter lets any prompt take its default instead. */
int16_read:
	movw	$KEY_ENTER, %ax
	iret
int16_shift:
	xorw	%ax, %ax
int16_done:
	iret

/* ---- INT 13h: no disks, no EDD ---- */
int13_handler:
	movb	$INT13_INVALID_FUNCTION, %ah
	jmp	iret_cf_set

/* ---- INT 1Ah: time of day ---- */
int1a_handler:
	cmpb	$0x02, %ah
	je	int1a_rtc_time
	pushw	$0x1a
	jmp	int_unserved
/* CH = hours, CL = minutes, DH = seconds (BCD, as the CMOS keeps them), DL = 0. */
int1a_rtc_time:
	pushw	%ax
	movb	$RTC_HOURS, %al
	outb	%al, $CMOS_INDEX
	inb	$CMOS_DATA, %al
	movb	%al, %ch
	movb	$RTC_MINUTES, %al
	outb	%al, $CMOS_INDEX
	inb	$CMOS_DATA, %al
	movb	%al, %cl
	movb	$RTC_SECONDS, %al
	outb	%al, $CMOS_INDEX
	inb	$CMOS_DATA, %al
	movb	%al, %dh
	xorb	%dl, %dl
	popw	%ax
	jmp	iret_cf_clear

/* ---- the default stubs: push the vector, then int_unserved ----
   Spelled as bytes so each is exactly INT_STUB_SIZE long (gas would pick the
   shorter push and jump forms where they fit). */
	.p2align 3
int_stubs:
	.set	vector, 0
	.rept	IVT_VECTORS
	.byte	0x68                    /* pushw imm16 */
	.word	vector
	.byte	0xe9                    /* jmp rel16 */
	.word	int_unserved - (. + 2)
	.byte	0x90, 0x90              /* nop padding to INT_STUB_SIZE */
	.set	vector, vector + 1
	.endr
