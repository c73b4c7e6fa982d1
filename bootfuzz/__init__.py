"""bootfuzz: a reproducible test harness and fuzzer for the Linux x86 boot protocol."""

__version__ = "0.1.0"
