"""Stage 6, peers: the same case through other loaders, and the comparisons.

Takes a ``BootCase`` and a target spec (``ours:BACKEND``, ``qemu-direct:...``,
``command:TEMPLATE``); gives a ``TargetRun`` judged by the validity oracles against
the target's promises (data: memory map, initrd placement rule, what memory size
means), differential reports between two targets, and the boot matrix (with its
architecture axis).  ``peers.dt_diff`` compares our device-tree loader with QEMU's own
``-kernel`` on ``virt``.
"""
