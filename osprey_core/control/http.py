"""What the HTTP-based connectors (LabVIEW, Archiver Appliance) share: URL checks, TLS."""

from __future__ import annotations

import ssl
from pathlib import Path
from urllib.parse import urlsplit

from osprey_core.errors import ConfigError


def check_http_url(url: str, field: str, *, allow_credentials: bool = False) -> str:
    """``url`` if it is an http(s) URL with a host and a valid port, no query or fragment
    (and, unless allowed, no user:password); otherwise ``ValueError`` naming ``field``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{field} {url!r} must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError(f"{field} must not hold a query or fragment")
    if not allow_credentials and (parts.username or parts.password):
        raise ValueError(f"{field} must not hold credentials (use auth)")
    try:
        parts.port  # noqa: B018 -- raises on a bad port
    except ValueError as exc:
        raise ValueError(f"{field} {url!r}: {exc}") from None
    return url


def tls_context(ca_file: Path | None, *, verify: bool, section: str) -> ssl.SSLContext:
    """A client TLS context trusting ``ca_file`` (or the system store); ``verify=False``
    turns certificate and host checks off, for test benches only."""
    cafile = None if ca_file is None else str(ca_file)
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{section}.ca_file {cafile}: cannot load it: {exc}") from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
