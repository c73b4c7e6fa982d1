"""Stage 5, running: the side effects of one boot, strung together in ``run.boot``.

Takes a ``BootPlan`` and built guest artifacts; gives a ``Transcript`` from a backend
(``qemu-tcg``, or ``kvm``: our own VMM over /dev/kvm in ``run.kvm``) driven through a
pexpect console session (``run.console``), the guest's exit classified once from each
backend's exit-status table (``run.exits``), and (``run.boot``) a ``BootResult``:
case -> plan -> backend -> transcript -> observation -> verdict.  ``run.probe`` boots a
probe guest the same way.  ``run.memory_files`` writes the files both backends load
a plan's memory from.  ``run.qmp`` asks QEMU over QMP whether its guest halted with
interrupts off (a hang judged at once), ``run.silence`` learns per kernel how quiet a
healthy boot gets (the silence timeout), ``run.phases`` splits a boot's time into
phases.  ``run.coverage`` reads the QEMU plugin's block map into a KASLR-normalized
``BlockCoverage`` (``BootResult.coverage``), named with symbols ``run.kallsyms``
reads from the kernel itself in a one-off boot, cached per kernel.  ``run.dt_boot``
strings a device-tree boot together on ``run.backends.qemu_virt`` (aarch64/riscv64).
"""
