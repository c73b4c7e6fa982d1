"""Typed reading of JSON documents, with the path of each value in every error.

Reproducers, agent and probe reports, the kernel manifest and campaign state are all
JSON (or TOML parsed to the same shapes) written by one program and read by another;
a bad value must produce one error naming the document, the field path and what was
wrong, never a ``KeyError`` or ``TypeError`` from deep inside a parser.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from bootfuzz.errors import BootfuzzError, ConfigError

U64_MAX = (1 << 64) - 1


class JsonReader:
    """Checks values of a document named *where*; errors are built by *error*."""

    def __init__(self, where: str,
                 error: Callable[[str], BootfuzzError] = ConfigError) -> None:
        self.where = where
        self._error = error

    def fail(self, path: str, message: str) -> BootfuzzError:
        return self._error(f"{self.where}: {path}: {message}")

    def as_obj(self, value: object, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected an object, got {type(value).__name__}")
        return value

    def keys(self, doc: dict[str, Any], allowed: Collection[str], path: str) -> None:
        unknown = sorted(set(doc) - set(allowed))
        if unknown:
            known = ", ".join(sorted(allowed))
            raise self.fail(path, f"unknown key {unknown[0]!r} (known: {known})")

    def field(self, doc: dict[str, Any], key: str, path: str) -> Any:
        """``doc[key]``, or an error naming the missing field."""
        if key not in doc:
            raise self.fail(f"{path}.{key}" if path else key, "missing")
        return doc[key]

    def as_int(self, value: object, path: str, lo: int = 0, hi: int = U64_MAX) -> int:
        if isinstance(value, bool):
            raise self.fail(path, "expected an integer, got a boolean")
        if isinstance(value, str):
            try:
                value = int(value, 0)
            except ValueError:
                raise self.fail(path, f"{value!r} is not an integer") from None
        if not isinstance(value, int):
            raise self.fail(path, f"expected an integer, got {type(value).__name__}")
        if not lo <= value <= hi:
            raise self.fail(path, f"{value:#x} is out of range [{lo:#x}, {hi:#x}]")
        return value

    def as_float(self, value: object, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(path, f"expected a number, got {type(value).__name__}")
        return float(value)

    def as_bool(self, value: object, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"expected true or false, got {type(value).__name__}")
        return value

    def as_str(self, value: object, path: str) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"expected a string, got {type(value).__name__}")
        return value

    def as_hex(self, value: object, path: str, size: int | None = None) -> bytes:
        text = self.as_str(value, path)
        try:
            data = bytes.fromhex(text)
        except ValueError:
            raise self.fail(path, "not a string of hex digits") from None
        if size is not None and len(data) != size:
            raise self.fail(path, f"expected {size} bytes, got {len(data)}")
        return data

    def as_list(self, value: object, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list, got {type(value).__name__}")
        return value

    def as_choice(self, value: object, path: str, choices: Collection[str]) -> str:
        text = self.as_str(value, path)
        if text not in choices:
            raise self.fail(path, f"{text!r} is not one of {', '.join(choices)}")
        return text
