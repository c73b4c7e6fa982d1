"""Stage 2, the loader: our boot loader, as a pure function of a case and a kernel.

Takes a ``BootCase`` and a ``KernelImage`` (and an initrd image's size and path); gives
a ``BootPlan``: the platform's memory, every blob placed in guest memory (kernel, zero
page or ``hvm_start_info``, command line, initrd, setup_data, page tables) and the
entry ``CpuState``.  One module per entry path, chosen by a dispatch table.  No I/O.
``memory`` says what memory holds once the blobs are written (RAM only, a later blob
over an earlier one); ``handover`` what the kernel takes from boot_params, the setup
header or ``hvm_start_info`` by its own rules.  The device-tree machines have their own
plan: ``dt_plan`` (a ``DtBootPlan`` for arm64/riscv64 on QEMU ``virt``, described in
``virt``) with the DTB written by ``fdt_writer``.
"""
