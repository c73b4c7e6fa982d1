"""``python -m bootfuzz.run.kvm run MANIFEST.json``: the VMM process the kvm backend starts."""

from __future__ import annotations

import sys

from bootfuzz.run.kvm.vmm import main

if __name__ == "__main__":
    sys.exit(main())
