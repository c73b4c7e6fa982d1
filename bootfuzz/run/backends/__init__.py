"""Execution backends: each runs a BootPlan on some machine and reports how it ended."""

from __future__ import annotations

from bootfuzz.errors import ConfigError
from bootfuzz.run.backends.base import Backend


def get_backend(name: str) -> Backend:
    """The backend called *name* ("auto": kvm on hardware KVM, else qemu-tcg)."""
    if name == "auto":
        from bootfuzz.run.doctor import pick_backend

        name = pick_backend()
    from bootfuzz.run.backends.kvm import KvmBackend
    from bootfuzz.run.backends.qemu_tcg import QemuTcgBackend

    backends: dict[str, type[Backend]] = {
        QemuTcgBackend.name: QemuTcgBackend,
        KvmBackend.name: KvmBackend,
    }
    try:
        return backends[name]()
    except KeyError:
        known = ", ".join([*sorted(backends), "auto"])
        raise ConfigError(f"unknown backend {name!r} (known: {known})") from None


__all__ = ["Backend", "get_backend"]
