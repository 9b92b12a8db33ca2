"""``--data.KEY VALUE`` overrides for subcommands that rebuild a checkpoint's DataModule."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


def parse_data_overrides(extra: Sequence[str], config: Path | None = None) -> dict[str, Any]:
    """Collect DataModule arguments from a LightningCLI config and ``--data.*`` flags.

    The config's ``data.init_args`` come first, then each ``--data.KEY VALUE`` (or
    ``--data.KEY=VALUE``); values are read as YAML, so ``'[2017-03-16]'`` is a list.

    Raises:
        ValueError: an argument that is not ``--data.KEY`` or has no value.
    """
    out: dict[str, Any] = {}
    if config is not None:
        data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
        out.update(data.get("init_args", data if "class_path" not in data else {}))
    items = list(extra)
    i = 0
    while i < len(items):
        flag = items[i]
        if not flag.startswith("--data."):
            raise ValueError(f"unexpected argument {flag!r}: only --data.KEY VALUE is accepted")
        if "=" in flag:
            key, value = flag[len("--data.") :].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(items):
                raise ValueError(f"{flag} needs a value")
            key, value = flag[len("--data.") :], items[i + 1]
            i += 2
        out[key] = _dates_as_text(yaml.safe_load(value))
    return out


def _dates_as_text(value: Any) -> Any:
    """YAML reads ``2017-03-16`` as a date; periods are given as text, so turn it back."""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list):
        return [_dates_as_text(v) for v in value]
    return value
