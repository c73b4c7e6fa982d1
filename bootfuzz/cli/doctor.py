"""``bootfuzz doctor``: which backends can run here, and how fast."""

from __future__ import annotations

import argparse

from bootfuzz.cli.exits import ExitStatus
from bootfuzz.run.doctor import pick_backend, report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Checks each backend; for kvm it runs a calibration guest and tells "
                     "hardware KVM from an emulating one by the measured guest instructions "
                     "per second.")


def run(args: argparse.Namespace) -> int:
    for status in report():
        state = "usable" if status.usable else "NOT usable"
        print(f"{status.name:<9} {state}: {status.detail}")
    print(f"--backend auto picks: {pick_backend()}")
    return ExitStatus.PASS
