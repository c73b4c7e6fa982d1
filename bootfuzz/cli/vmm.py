"""``python -m bootfuzz.cli.vmm run MANIFEST | calibrate``: our KVM VMM as a process.

The kvm backend (bootfuzz.run.backends.kvm) starts ``run`` under the console session
exactly as it starts QEMU: the guest's serial console on stdout, diagnostics on
stderr, and an exit status the backend classifies (bootfuzz.run.kvm.vmm names them).
``calibrate`` prints how fast this machine's KVM runs guest code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bootfuzz.errors import BootfuzzError, ConfigError, HarnessBug


def main(argv: Sequence[str] | None = None) -> int:
    from bootfuzz.cli.case_args import seconds
    from bootfuzz.run.kvm.vmm import (
        EXIT_INFRASTRUCTURE,
        EXIT_INTERNAL_ERROR,
        EXIT_USAGE,
        diagnostic,
        run_manifest,
    )

    parser = argparse.ArgumentParser(prog="python -m bootfuzz.cli.vmm",
                                     description="bootfuzz's KVM VMM")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the guest a manifest describes")
    run.add_argument("manifest", type=Path)
    run.add_argument("--timeout", type=seconds, default=None,
                     help="stop the guest after this many seconds (exit 124)")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="name unhandled ports and MMIO on stderr, print exit counts")
    cal = sub.add_parser("calibrate", help="print guest instructions per second")
    cal.add_argument("--seconds", type=seconds, default=1.0)
    args = parser.parse_args(argv)
    try:
        if args.command == "calibrate":
            from bootfuzz.run.kvm.calibrate import measure_guest_ips

            print(f"{measure_guest_ips(args.seconds):.0f} guest instructions/s")
            return 0
        return run_manifest(args.manifest, timeout=args.timeout, verbose=args.verbose)
    except ConfigError as e:
        diagnostic(str(e))
        return EXIT_USAGE
    except HarnessBug as e:
        diagnostic(str(e))
        return EXIT_INTERNAL_ERROR
    except BootfuzzError as e:
        diagnostic(str(e))
        return EXIT_INFRASTRUCTURE


if __name__ == "__main__":
    sys.exit(main())
