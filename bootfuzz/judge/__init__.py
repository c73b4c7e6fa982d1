"""Stage 4, the judge: from what the kernel printed to a verdict, with no side effects.

Takes a ``Transcript`` (the console text and how the guest ended) and the ``BootPlan``
that was meant; gives an ``Observation`` (parsed ``BIOS-e820:``, ``RAMDISK:``,
``Command line:``, the agent's report), ``OracleResult`` values and a ``Verdict``.

- ``patterns``: the console lines that matter (panic, oops/BUG, banner, our markers),
  once for the console session, the observation and reproducer evidence.
- ``observation``: transcript -> ``Observation``.
- ``verdict``: ``Verdict``, ``OracleResult``, ``overall``, the one oracle -> JSON.
- ``oracles``: the exact oracles on our own plan (``ExactEvidence``), ``layout_rules``
  on the plan alone (with ``region_rules`` for the platform's regions, and
  ``plan_view`` reading the plan's structures back from its bytes), ``validity`` on
  any loader's boot (``LoadRequest`` and the target's ``promises``), ``probe`` on a
  probe guest's report.
- Models of what the kernel does with our input: ``e820_model`` (sanitizer),
  ``user_memmap`` (mem=/memmap=), ``setup_data_model`` (the setup_data sysfs view),
  ``memory_floor`` (the least RAM a kernel needs for an initrd, from measured points).
- Device-tree boots: ``dt_observation`` (log and agent report), ``dt_rules`` (the
  ``dt-valid-*`` layout rules), ``dt_oracles`` (memory, initrd, cmdline, DT round trip).
"""
