"""Stage 7, fuzzing: generating cases, running campaigns, keeping what failed.

Takes kernels and a generator configuration (or Hypothesis strategies); gives
``BootCase`` streams, campaign state and summaries, failure signatures (triage),
minimized cases, and reproducer files (format, load, replay) under ``corpus/``; each
kernel's memory floor, measured by real boots and cached (floors); how deep each case
is booted, and which shallow ones are booted to the end (depth); what each guided case
reached first (coverage_log) and the coverage report drawn from it (coverage_report);
what a case can be, one draw and fit rule per dimension for the generator, the
strategies and the mutator (draws), a guided campaign's corpus of cases that showed
something new (corpus) and its one-dimension mutants (mutate).  Device-tree cases:
their draws and faults (dt_draws), strategies (dt_strategies), campaign (dt_campaign)
and reproducer keys (dt_reproducer).
"""
