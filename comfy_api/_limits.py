"""How much of a server's reply is read: a dead server is cut by the request timeout, a hostile one by size.

A reply is read in chunks up to its cap plus one byte, so a server streaming gigabytes costs at most the cap in
memory before the request ends with one clear line (the request timeout alone let a 3 GB body reach 1.5 GB of
memory within 1.5 s).
"""

from __future__ import annotations

from typing import Protocol

from ..telemetry import ClientError

MAX_REPLY_BYTES = 256 * 1024 * 1024
"""JSON replies (``/history?max_items=10000`` of a busy server is tens of MB; ten times that is not a reply)."""
MAX_VIEW_BYTES = 4 * 1024 * 1024 * 1024
"""``/view`` file copies (a frame or a rendered video)."""
_CHUNK = 1024 * 1024


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class ReplyTooLarge(ClientError):
    """A reply past its cap: ``reply larger than N bytes: METHOD`` with the URL as the error's path."""


def read_capped(response: _Readable, limit: int, *, method: str = "GET", url: str | None = None) -> bytes:
    """The whole body of *response*, or :class:`ReplyTooLarge` as soon as it passes *limit* bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = response.read(min(_CHUNK, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise ReplyTooLarge(f"reply larger than {limit} bytes: {method}", path=url)
        chunks.append(chunk)
