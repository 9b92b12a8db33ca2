"""API keys for feeds: read from environment variables at fetch time, scrubbed everywhere.

A feed config names environment VARIABLES (``headers_from_env``, ``params_from_env``);
their values are read only when a request is made. Every string or body that leaves the
fetcher is scrubbed of those values (raw and URL-encoded), and a logging filter scrubs
urllib3's DEBUG lines, which carry full request URLs.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

REDACTED = "REDACTED"


class MissingSecretError(RuntimeError):
    """An environment variable named in the feed config is not set."""


@dataclass(frozen=True)
class Secrets:
    """Values read from the environment at fetch time.

    Attributes:
        headers: Header name → value.
        params: Query parameter → value.
        values: Every secret value, for scrubbing.
    """

    headers: dict[str, str]
    params: dict[str, str]
    values: tuple[str, ...]


def read_secrets(
    headers_from_env: Mapping[str, str],
    params_from_env: Mapping[str, str],
    environ: Mapping[str, str] | None = None,
) -> Secrets:
    """Read header/param values from the environment variables the config names.

    Also registers the values with the log filter that scrubs urllib3's debug lines.

    Raises:
        MissingSecretError: naming the unset VARIABLE (never a value).
    """
    env = os.environ if environ is None else environ
    resolved: list[dict[str, str]] = [{}, {}]
    for target, names in zip(resolved, (headers_from_env, params_from_env), strict=True):
        for key, var in names.items():
            value = env.get(var)
            if not value:
                raise MissingSecretError(f"environment variable {var} (for {key!r}) is not set")
            target[key] = value
    values = tuple(v for d in resolved for v in d.values())
    _register_log_secrets(values)
    return Secrets(resolved[0], resolved[1], values)


def scrub_text(text: str, secrets: tuple[str, ...]) -> str:
    """Replace every secret value (raw or URL-encoded) in ``text`` with ``REDACTED``."""
    for value in sorted(secrets, key=len, reverse=True):
        for form in {value, quote(value, safe=""), quote_plus(value)}:
            text = text.replace(form, REDACTED)
    return text


def scrub_bytes(body: bytes, secrets: tuple[str, ...]) -> tuple[bytes, bool]:
    """Replace secret values in a body; returns the bytes and whether any were found."""
    found = False
    for value in sorted(secrets, key=len, reverse=True):
        raw = value.encode("utf-8")
        if raw and raw in body:
            body, found = body.replace(raw, REDACTED.encode()), True
    return body, found


_LOG_SECRETS: set[str] = set()
_LOG_LOCK = threading.Lock()


class _ScrubFilter(logging.Filter):
    """Scrubs known secret values from urllib3 records (its DEBUG lines carry full URLs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        with _LOG_LOCK:
            secrets = tuple(_LOG_SECRETS)
        if secrets:
            record.msg = scrub_text(record.getMessage(), secrets)
            record.args = ()
        return True


_FILTER = _ScrubFilter()


def _register_log_secrets(values: tuple[str, ...]) -> None:
    if not values:
        return
    with _LOG_LOCK:
        _LOG_SECRETS.update(values)
    for name in ("urllib3.connectionpool", "urllib3.util.retry", "requests"):
        lg = logging.getLogger(name)
        if _FILTER not in lg.filters:
            lg.addFilter(_FILTER)
