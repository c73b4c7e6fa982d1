"""A stand-in for Debian's snapshot archive: its two requests, served by http.server in a
thread on 127.0.0.1, for the snapshot-fallback tests (unit: a fake .deb; integration: a
real pinned one).  Every request path is recorded."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import TypeVar


def listing_path(package: str, version: str) -> str:
    """The request path of a binfiles listing (names percent-encoded, as HTTP wants)."""
    quote = urllib.parse.quote
    return f"/mr/binary/{quote(package, safe='')}/{quote(version, safe='')}/binfiles"


def listing(package: str, version: str, *entries: dict[str, str]) -> bytes:
    """A binfiles answer in the archive's shape (with keys the client does not read)."""
    return json.dumps({
        "_comment": "foo", "binary": package, "binary_version": version,
        "result": list(entries),
    }).encode()


class Archive(http.server.ThreadingHTTPServer):
    """Answers path -> (status, body); anything else is a 404."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.requests: list[str] = []
        #: Paths answered with a Content-Length 1000 bytes beyond the body, then a hang-up.
        self.cut: set[str] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def offer(self, deb: bytes, package: str, version: str, *, arch: str = "amd64",
              digest: str | None = None) -> str:
        """List ``deb`` as the one ``arch`` file of package=version and serve it by its sha1
        (or by ``digest``); the digest it is served under."""
        digest = digest or hashlib.sha1(deb).hexdigest()
        self.routes[listing_path(package, version)] = (
            200, listing(package, version, {"architecture": arch, "hash": digest}))
        self.routes[f"/file/{digest}"] = (200, deb)
        return digest


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Archive

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        status, body = self.server.routes.get(self.path, (404, b"Not found\n"))
        self.send_response(status)
        length = len(body) + (1000 if self.path in self.server.cut else 0)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


A = TypeVar("A", bound=Archive)


@contextlib.contextmanager
def serving(factory: Callable[[], A]) -> Iterator[A]:
    """An Archive (made by ``factory``, e.g. the class) answering in a thread until the
    block ends."""
    server = factory()
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
