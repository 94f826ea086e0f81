"""The one way a URL is made printable: credentials in it become ``***``.

    redact_url("postgresql://u:pw@db/x?sslpassword=k&sslmode=require")
    -> "postgresql://u:***@db/x?sslpassword=***&sslmode=require"
    redact_urls("cannot connect to postgresql://u:pw@db/x: refused")   # every URL inside a text

Every message, log line and table that shows a URL (state store, service URLs) passes it through here.
A URL that cannot be parsed is not shown at all: its text could be anything, a password included.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

__all__ = ["SENSITIVE_PARAMETERS", "is_sensitive_parameter", "redact_url", "redact_urls"]

MASK = "***"

# Query parameters that carry a credential: libpq's password and sslpassword, signed-URL signatures
# (Azure SAS `sig`, AWS `X-Amz-Signature`), OAuth tokens and API keys. Compared lower-case, with '-' as '_'.
SENSITIVE_PARAMETERS = frozenset({
    "password", "passwd", "pwd", "pass", "sslpassword", "sig", "signature", "x_amz_signature",
    "x_amz_credential", "x_amz_security_token", "token", "access_token", "refresh_token", "id_token",
    "secret", "client_secret", "key", "api_key", "apikey", "sslkey", "auth", "authorization", "code",
})
_SENSITIVE_SUFFIXES = ("password", "secret", "token", "_key", "signature")

# scheme://... up to whitespace or a character that cannot end a URL in running text.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")


def is_sensitive_parameter(name: str) -> bool:
    """Whether a query parameter named ``name`` holds a credential."""
    key = unquote(name).strip().lower().replace("-", "_")
    return key in SENSITIVE_PARAMETERS or key.endswith(_SENSITIVE_SUFFIXES)


def redact_url(url: str) -> str:
    """``url`` with the password of its user-info and the values of credential parameters replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
    query = _redact_query(parts.query)
    fragment = _redact_query(parts.fragment) if "=" in parts.fragment else parts.fragment
    return parts._replace(netloc=netloc, query=query, fragment=fragment).geturl()


def redact_urls(text: str) -> str:
    """``text`` with every URL in it passed through ``redact_url``."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def _redact_query(query: str) -> str:
    if not query:
        return query
    out = []
    for item in query.split("&"):
        name, sep, _ = item.partition("=")
        out.append(f"{name}={MASK}" if sep and is_sensitive_parameter(name) else item)
    return "&".join(out)
