"""Stage 3, the guest side: what runs inside the guest and what we put in its initrd.

Takes an ``InitrdSpec`` and the harness sources under ``harness/``; gives built,
cached artifacts: our agent (``/init``), our firmware stub and probe images, initrd
archives (cpio newc, compressed), and the protocol constants both sides share
(console markers, exit ports, the firmware hand-off block's fields);
``guest.coverage_tools`` builds the QEMU block-coverage plugin and the kallsyms
dumper from ``harness/coverage``.  ``guest.harness.build_dt_harness`` cross-builds the
agent and the entry stub for aarch64 and riscv64.
"""
