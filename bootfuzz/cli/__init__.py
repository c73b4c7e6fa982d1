"""The ``bootfuzz`` command: argument parsing and output, one module per subcommand.

Takes the command line; gives exit statuses (0 pass, 1 finding, 2 usage or bad
input, 3 infrastructure) and reports.  Each subcommand imports its stage only when
it runs, so ``bootfuzz --version`` and ``--help`` import no stage at all.
"""
