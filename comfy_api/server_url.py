"""The one check of a ComfyUI base URL, shared by the client, the GPU probe and the CLI's ``--server``."""

from __future__ import annotations

import re
import urllib.parse

from ..telemetry import InvalidInputError

_USERINFO = re.compile(r"(?<=://)[^/?#\s]*@")


def _shown(text: str) -> str:
    """*text* as an error may repeat it: a ``user:password@`` becomes ``***@`` (errors end up in CI logs)."""
    return repr(_USERINFO.sub("***@", text))


def parse_server_url(text: str) -> str:
    """*text* as a ComfyUI base URL (``http(s)://host[:port][/path]``, no trailing slash).

    Only http(s): ``urllib`` would also open ``file://`` and ``ftp://`` URLs.
    """
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0-65535
    except ValueError as exc:
        raise InvalidInputError(f"server URL {_shown(text)} is malformed: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(f"server URL must be http(s)://host:port, got {_shown(text)}")
    if parts.username is not None or parts.password is not None:
        # The HTTP client cannot send them (the host would read as "user:password@host") and every error
        # line would repeat them: refused up front, without echoing them.
        raise InvalidInputError(
            f"server URL {_shown(text)} carries user:password; ComfyUI has no login: give http(s)://host:port"
        )
    return text.rstrip("/")
