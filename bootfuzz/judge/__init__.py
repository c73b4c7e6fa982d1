"""Stage 4, the judge: from what the kernel printed to a verdict, with no side effects.

Takes a ``Transcript`` (the console text and how the guest ended) and the ``BootPlan``
that was meant; gives an ``Observation`` (parsed ``BIOS-e820:``, ``RAMDISK:``,
``Command line:``, the agent's report), ``OracleResult`` values and a ``Verdict``.
Holds the models of what the kernel does with our input (E820 sanitizer, mem=/memmap=,
setup_data), the layout rules on a plan, and the validity rules on any loader's boot.
"""
