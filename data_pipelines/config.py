"""``feeds.yaml``: which feeds to poll and how.

Example::

    defaults:              # optional: applied to every feed unless it sets the key itself
      interval_s: 30
      user_agent: "my-agency-archiver/1.0 (ops@example.org)"
    feeds:
      - id: akl
        url: https://api.example.org/realtime/vehiclepositions.pb
        headers_from_env: {Ocp-Apim-Subscription-Key: AKL_API_KEY}   # env-var NAMES
        timezone: Pacific/Auckland
        static: gtfs/akl.zip       # path (relative to this file) or URL; enables static rules

Keys per feed: see :class:`FeedConfig`. Unknown keys, bad types, timeouts not shorter than
the interval, keys pasted into the URL and duplicate ids are all clear
errors (:class:`ConfigError`) naming the feed and key.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from transitnet.realtime.fetch import FeedEndpoint
from transitnet.store.layout import InvalidFeedIdError, check_feed_id

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_PARAMS = re.compile(r"key|token|secret|password|passwd|auth|signature|sig$", re.I)


class ConfigError(ValueError):
    """A ``feeds.yaml`` that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class FeedConfig:
    """One feed to poll.

    Attributes:
        id: Stable feed id (letters, digits, ``_.-``): names partitions and files.
        url: HTTP(S) URL of the VehiclePositions feed, without keys in it.
        interval_s: Seconds between ticks of ``ingest run``.
        connect_timeout_s: Connect timeout; must be shorter than the interval.
        read_timeout_s: Read timeout; must be shorter than the interval.
        max_bytes: Largest accepted body, in bytes.
        user_agent: ``User-Agent`` header (some servers reject requests without one).
        headers_from_env: Header → NAME of the environment variable holding its value.
        params_from_env: Query parameter → NAME of the environment variable holding it.
        timezone: The agency's IANA time zone (service dates are local).
        static: Static GTFS zip/folder path or URL; enables the static validator rules.
    """

    id: str
    url: str
    interval_s: float = 30.0
    # Fetch defaults come from FeedEndpoint, so the two cannot drift apart.
    connect_timeout_s: float = FeedEndpoint.connect_timeout_s
    read_timeout_s: float = FeedEndpoint.read_timeout_s
    max_bytes: int = FeedEndpoint.max_bytes
    user_agent: str = FeedEndpoint.user_agent
    headers_from_env: dict[str, str] = field(default_factory=dict)
    params_from_env: dict[str, str] = field(default_factory=dict)
    timezone: str = "UTC"
    static: str | None = None

    def to_endpoint(self) -> FeedEndpoint:
        """The fetch settings of this feed."""
        return FeedEndpoint(
            feed_id=self.id,
            url=self.url,
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
            max_bytes=self.max_bytes,
            user_agent=self.user_agent,
            headers_from_env=dict(self.headers_from_env),
            params_from_env=dict(self.params_from_env),
        )


@dataclass(frozen=True)
class IngestConfig:
    """Every feed of one ``feeds.yaml``.

    Attributes:
        feeds: The feeds, in file order.
        source: Where the config was read from (for messages).
    """

    feeds: tuple[FeedConfig, ...]
    source: str = "<memory>"


FEED_KEYS = tuple(f.name for f in dataclasses.fields(FeedConfig))


def load_config(path: str | Path) -> IngestConfig:
    """Read and check a ``feeds.yaml``.

    Raises:
        ConfigError: for a missing/unreadable file, bad YAML or any invalid setting.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read feed config {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_config(data, source=str(path), base_dir=path.parent)


def parse_config(
    data: Any, *, source: str = "<memory>", base_dir: Path | None = None
) -> IngestConfig:
    """Check an already-parsed YAML document (see the module docstring for the layout).

    Args:
        data: The YAML document.
        source: Name used in error messages.
        base_dir: Folder that relative ``static`` paths are resolved against.

    Raises:
        ConfigError: naming the feed and the key at fault.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping with a 'feeds:' list at the top")
    unknown = sorted(set(data) - {"feeds", "defaults"})
    if unknown:
        raise ConfigError(f"{source}: unknown top-level keys {unknown} (use 'feeds', 'defaults')")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping) or "id" in defaults or "url" in defaults:
        raise ConfigError(f"{source}: 'defaults' must be a mapping without 'id' or 'url'")
    entries = data.get("feeds")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: 'feeds' must be a non-empty list of mappings")
    feeds = tuple(
        parse_feed({**defaults, **_mapping(e, f"{source}: feeds[{i}]")}, f"{source}: feeds[{i}]",
                   base_dir)
        for i, e in enumerate(entries)
    )  # fmt: skip
    ids = [f.id for f in feeds]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"{source}: duplicate feed ids {dupes}")
    return IngestConfig(feeds, source)


def _mapping(entry: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a mapping with at least 'id' and 'url'")
    return entry


def parse_feed(entry: Mapping[str, Any], where: str, base_dir: Path | None = None) -> FeedConfig:
    """Check one feed mapping (defaults already merged in).

    Raises:
        ConfigError: naming ``where`` and the key at fault.
    """
    unknown = sorted(set(entry) - set(FEED_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; allowed: {', '.join(FEED_KEYS)}")
    for required in ("id", "url"):
        if not isinstance(entry.get(required), str) or not entry[required]:
            raise ConfigError(f"{where}: '{required}' is required and must be a string")
    where = f"{where} (id {entry['id']!r})"
    try:
        check_feed_id(entry["id"])
    except InvalidFeedIdError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    values = dict(entry)
    _check_url(values["url"], where)
    for name in ("interval_s", "connect_timeout_s", "read_timeout_s", "max_bytes"):
        if name in values:
            values[name] = _positive_number(values[name], f"{where}: {name}", name == "max_bytes")
    for name in ("headers_from_env", "params_from_env"):
        values[name] = _env_names(values.get(name) or {}, f"{where}: {name}")
    for name in ("user_agent", "timezone", "static"):
        if name in values and values[name] is not None and not isinstance(values[name], str):
            raise ConfigError(f"{where}: {name} must be a string")
    feed = FeedConfig(**values)
    _check_consistency(feed, where)
    if feed.static and not _is_url(feed.static):
        local = (base_dir or Path.cwd()) / feed.static
        if not local.exists():
            raise ConfigError(f"{where}: static GTFS {feed.static!r} not found at {local}")
        feed = dataclasses.replace(feed, static=str(local.resolve()))
    return feed


def _check_url(url: str, where: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: url must be http(s)://host/…, got {url[:80]!r}")
    if parts.username or parts.password:
        raise ConfigError(f"{where}: url must not carry credentials; use headers_from_env")
    secret = [k for k, _ in parse_qsl(parts.query) if _SECRET_PARAMS.search(k)]
    if secret:
        raise ConfigError(
            f"{where}: url carries {secret} in its query; name an environment variable in "
            "params_from_env instead so the key never reaches logs or the archive"
        )


def _positive_number(value: Any, where: str, integer: bool) -> float | int:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    if not ok or (integer and not isinstance(value, int)):
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{where} must be {kind}, got {value!r}")
    return int(value) if integer else float(value)


def _env_names(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must map names to environment-variable NAMES")
    out: dict[str, str] = {}
    for key, var in value.items():
        if not isinstance(key, str) or not isinstance(var, str) or not _ENV_NAME.match(var):
            raise ConfigError(
                f"{where}: {key!r} must name an environment variable (letters, digits, _), "
                "not hold the key itself"
            )
        out[key] = var
    return out


def _check_consistency(feed: FeedConfig, where: str) -> None:
    for name in ("connect_timeout_s", "read_timeout_s"):
        if getattr(feed, name) >= feed.interval_s:
            raise ConfigError(
                f"{where}: {name}={getattr(feed, name)} must be shorter than "
                f"interval_s={feed.interval_s}"
            )
    try:
        ZoneInfo(feed.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{where}: unknown timezone {feed.timezone!r}") from exc


def _is_url(value: str) -> bool:
    return urlsplit(value).scheme in ("http", "https")
