"""One error tree for the whole package.

The root says "bootfuzz refused or failed"; the three branches say who is at fault,
which is what the CLI's exit code reports (LAVA's split of blame):

* :class:`ConfigError` -- the user's input (a kernel that is not a bzImage, a
  memory size that cannot hold the kernel, a command line over cmdline_size). Exit 2.
* :class:`InfrastructureError` -- the machine we run on (QEMU missing, no compiler,
  a package that left the archive, a backend that would not start). Exit 3.
* :class:`HarnessBug` -- bootfuzz itself is wrong. Never expected.

A kernel that panics or hangs is *not* an exception: it is an observation that the
oracles turn into a verdict.
"""

from __future__ import annotations


class BootfuzzError(Exception):
    """Root of every error bootfuzz raises on purpose."""

    component = "bootfuzz"

    def __str__(self) -> str:
        return f"{self.component}: {super().__str__()}"


class ConfigError(BootfuzzError):
    """The input is wrong; the user can fix it."""


class InfrastructureError(BootfuzzError):
    """The machine or a tool we depend on is missing or misbehaved."""


class HarnessBug(BootfuzzError):
    """An internal invariant of bootfuzz broke."""


class ImageError(ConfigError):
    """A kernel image is truncated, foreign, or lacks what the chosen entry needs."""

    component = "kernel image"


class LayoutError(ConfigError):
    """A boot case cannot be laid out in guest memory; the message names the constraint."""

    component = "loader"


class CmdlineError(ConfigError):
    """The command line breaks a protocol limit."""

    component = "command line"


class KernelError(ConfigError):
    """An unknown kernel name or an unusable user-supplied kernel path."""

    component = "kernels"


class KernelFetchError(InfrastructureError):
    """A pinned kernel could not be fetched or did not verify."""

    component = "kernels"


class InitramfsError(ConfigError):
    """An initrd spec that cannot be built (bad size, bad name, unknown compression)."""

    component = "initramfs"


class BackendError(InfrastructureError):
    """A backend is missing or failed to start or run a guest."""

    component = "backend"


class StorageError(InfrastructureError):
    """A file bootfuzz must write cannot be: a read-only file system, a full disk, a
    directory that is a file.  The message names the path; what was half written is
    removed by whoever raised it."""

    component = "storage"

    @classmethod
    def writing(cls, path: object, exc: OSError) -> StorageError:
        """The error for *exc*, raised while writing *path*."""
        return cls(f"cannot write {path}: {exc.strerror or exc}")


class HarnessBuildError(InfrastructureError):
    """The guest agent or firmware could not be built from source."""

    component = "harness build"
