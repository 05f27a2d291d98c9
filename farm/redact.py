"""Credentials out of URLs before anything prints, logs or records them.

A broker URL (``redis://:secret@host:6379/0``, ``rediss://user:secret@host``) or a server URL may carry a
user name and password. :func:`redact_url` keeps the scheme, host, port and path and replaces the user
information with ``***``, so a log line still says *which* broker, never how to log into it.
"""

from __future__ import annotations

import re
import urllib.parse

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")


def redact_url(url: str) -> str:
    """*url* with any ``user:password@`` replaced by ``***@`` (query secrets such as ``password=`` too)."""
    text = _USERINFO.sub(r"\g<scheme>***@", url)
    parts = urllib.parse.urlsplit(text)
    if not parts.query:
        return text
    query = [
        (key, "***" if any(word in key.lower() for word in ("pass", "token", "secret", "key")) else value)
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, safe="*")))


def redact_text(text: str, *secrets_of: str) -> str:
    """*text* with every URL in *secrets_of* replaced by its redacted form, and any other userinfo hidden."""
    for url in secrets_of:
        if url:
            text = text.replace(url, redact_url(url))
    return _USERINFO.sub(r"\g<scheme>***@", text)
