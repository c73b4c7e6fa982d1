"""``python -m bootfuzz.kvm run MANIFEST.json``: the VMM process the kvm backend starts."""

from __future__ import annotations

import sys

from bootfuzz.kvm.vmm import main

if __name__ == "__main__":
    sys.exit(main())
