"""Credentials never leave the process: one redaction for URLs, text, data and log records.

Configured URLs may carry secrets: ``mqtt://user:pass@broker``, ``rtsp://admin:pw@cam/stream``,
``socket://host:1?token=...``. Whatever prints, reports or logs a value that may hold one
(``edge-agent config``, ``HealthRegistry``, the ``device.health`` events built from it, error
messages naming a source, every log line through ``RedactingFilter``) passes it through here:

- ``redact_url("rtsp://admin:pw@cam/s?token=x&fps=5")`` → ``rtsp://admin:***@cam/s?token=***&fps=5``:
  the userinfo's password and every query parameter whose name looks secret become ``***``;
  the user name, host, path and other parameters stay, so the value is still useful to read;
- ``redact_text`` does that to every URL inside a longer string (an error, a repr, a log line);
- ``redact_data`` walks dicts and lists, redacting strings and masking values of secret keys.

Pure and total: no input raises, and redacting twice gives the same result as once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

__all__ = [
    "MASK",
    "RedactingFilter",
    "install_log_redaction",
    "is_secret_name",
    "redact_data",
    "redact_text",
    "redact_url",
]

MASK = "***"

# Substrings of parameter and key names that hold secrets ("pass" covers password, passwd,
# passphrase; "key" covers api_key, apikey, access_key; "auth" covers authorization).
_SECRET_PARTS = ("pass", "pwd", "token", "secret", "auth", "key", "credential", "signature")

# A URL inside any text: a scheme, "://", then everything up to whitespace or a quote/bracket
# that ends a repr or a message.
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")


def is_secret_name(name: str) -> bool:
    """Whether a key or parameter name looks like it holds a secret (``password``, ``token``)."""
    low = name.lower()
    return any(part in low for part in _SECRET_PARTS)


def _redact_query(query: str) -> str:
    out = []
    for pair in re.split(r"([&;])", query):
        if pair in ("&", ";"):
            out.append(pair)
            continue
        name, sep, value = pair.partition("=")
        out.append(f"{name}={MASK}" if sep and value and is_secret_name(name) else pair)
    return "".join(out)


def redact_url(url: str) -> str:
    """``url`` with the userinfo's password and secret query parameters replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    # the query starts at the first "?" (or the fragment at "#"); userinfo ends at the last "@"
    # before it, so a password holding "@" or "/" is still taken whole (an odd path holding
    # "@" may be over-masked: the safe direction)
    cut = len(rest)
    for mark in ("?", "#"):
        at = rest.find(mark)
        if at != -1:
            cut = min(cut, at)
    head, tail = rest[:cut], rest[cut:]
    at = head.rfind("@")
    if at != -1:
        userinfo, hostpart = head[:at], head[at + 1 :]
        user, colon, password = userinfo.partition(":")
        if colon and password:
            head = f"{user}:{MASK}@{hostpart}"
    if tail.startswith("?"):
        query, hash_, fragment = tail[1:].partition("#")
        tail = "?" + _redact_query(query) + hash_ + fragment
    return f"{scheme}://{head}{tail}"


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (see ``redact_url``)."""
    if "://" not in text:
        return text  # the common case costs one substring search
    return _URL_RE.sub(lambda m: redact_url(m.group(0)), text)


def redact_data(obj: Any, *, mask_keys: bool = True) -> Any:
    """A copy of JSON-like data with every string redacted; with ``mask_keys``, non-empty values
    of secret-looking keys (``password``, ``token``...) become ``***`` too."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {
            k: (
                MASK
                if mask_keys and isinstance(k, str) and is_secret_name(k) and v
                else redact_data(v, mask_keys=mask_keys)
            )
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [redact_data(v, mask_keys=mask_keys) for v in obj]
    return obj


class RedactingFilter(logging.Filter):
    """Redacts URLs in every record's message (and its exception text) before it is written.

    Installed on a handler, it covers every logger, ours and the libraries'.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops one."""
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the handler report it as it would
            return True
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # format the traceback now so its text can be redacted too (handlers reuse exc_text)
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def install_log_redaction(handlers: Iterable[logging.Handler] | None = None) -> None:
    """Add a ``RedactingFilter`` to ``handlers`` (default: the root logger's), once each."""
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
