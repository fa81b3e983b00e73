"""Secrets out of what tunelog writes or prints: a URL's password and token-like query values.

Anyone who can read an experiment can read its tags and notes; a storage URL with its
password (`postgresql://user:secret@host/db`) must reach them as `postgresql://user:***@host/db`.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_KEYS = re.compile(r"pass|pwd|secret|token|key|auth|credential|signature", re.I)


def redact_url(url: str) -> str:
    """The URL with its password and any secret-looking query values replaced by `***`; other text as is."""
    if "://" not in str(url):
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
    netloc, query = parts.netloc, parts.query
    userinfo, at, host = netloc.rpartition("@")
    has_password = bool(at) and ":" in userinfo
    pairs = parse_qsl(query, keep_blank_values=True)
    has_secret_query = any(_SECRET_KEYS.search(k) for k, _ in pairs)
    if not (has_password or has_secret_query):
        return url  # nothing secret: the URL exactly as given (sqlite:/// keeps its three slashes)
    if has_password:
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    if has_secret_query:
        query = urlencode([(k, "***" if _SECRET_KEYS.search(k) else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
