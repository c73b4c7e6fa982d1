"""atheris target: reproducer files (bootfuzz.fuzz.reproducer), from JSON and from a path.

Run: python -m tests.fuzz.fuzz_reproducer /tmp/new-corpus corpus/atheris/reproducer \
    -atheris_runs=100000
Bytes that are not JSON are skipped for parse_reproducer (json.loads is not ours)
but still go through load_reproducer, which must report them itself.  Any exception
but a BootfuzzError (ReproducerError) is a crash; an accepted file must round-trip.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from tests.fuzz._common import instrumented, main

with instrumented(__name__ == "__main__"):
    from bootfuzz.errors import BootfuzzError
    from bootfuzz.fuzz.reproducer import load_reproducer, parse_reproducer, reproducer_json

TARGET = "reproducer"
_SCRATCH = Path(tempfile.mkdtemp(prefix="bootfuzz-fuzz-reproducer-"))
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)  # one per import, not left behind


def TestOneInput(data: bytes) -> None:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        doc = None
    if doc is not None:
        try:
            rep = parse_reproducer(doc)
        except BootfuzzError:
            pass
        else:
            again = parse_reproducer(json.loads(json.dumps(reproducer_json(rep))))
            assert again.case == rep.case and again.expect == rep.expect
    path = _SCRATCH / f"case-{os.getpid()}.json"
    path.write_bytes(data)
    with contextlib.suppress(BootfuzzError):
        load_reproducer(path)


if __name__ == "__main__":
    main(TestOneInput)
