"""atheris target: the bzImage parser (bootfuzz.kernel.image.parse_kernel_image).

Run: python -m tests.fuzz.fuzz_image /tmp/new-corpus corpus/atheris/image -atheris_runs=100000
Any exception but a BootfuzzError (ImageError) is a crash.
"""

from __future__ import annotations

from tests.fuzz._common import instrumented, main

with instrumented(__name__ == "__main__"):
    from bootfuzz.errors import BootfuzzError
    from bootfuzz.kernel.image import parse_kernel_image

TARGET = "image"


def TestOneInput(data: bytes) -> None:
    try:
        image = parse_kernel_image(data)
    except BootfuzzError:
        return
    # Everything a loader reads of a parsed image must answer too.
    _ = (image.cmdline_size, image.initrd_addr_max, image.xloadflags, image.has_64bit_entry,
         image.pref_address, image.init_size, image.kernel_alignment, image.payload,
         image.kernel_version_string, image.protected_mode_code, image.header.build())


if __name__ == "__main__":
    main(TestOneInput)
