"""The shipped scheduling examples must stay in step with the CLI."""

from __future__ import annotations

import argparse
import configparser
import shlex
from pathlib import Path

import pytest
import yaml

from transitnet.cli import build_parser

EXAMPLES = Path(__file__).resolve().parents[2] / "data_pipelines" / "examples"


def parse_cli(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def is_cli(word: str) -> bool:
    return word == "transitnet" or word.endswith("/bin/transitnet")


def transitnet_args(command: str) -> list[str]:
    words = shlex.split(command)
    start = next(i for i, w in enumerate(words) if is_cli(w))
    end = next((i for i, w in enumerate(words) if w in (">>", ">", "2>&1")), len(words))
    return words[start + 1 : end]


def test_crontab_lines_parse() -> None:
    lines = (EXAMPLES / "crontab").read_text().splitlines()
    jobs = [line for line in lines if line[:1] in "*0123456789" and line.strip()]
    jobs = [line for line in jobs if any(is_cli(w) for w in shlex.split(line))]
    assert len(jobs) == 2
    parsed = [parse_cli(transitnet_args(" ".join(line.split()[5:]))) for line in jobs]
    assert [p.command for p in parsed] == ["ingest", "compact"]
    assert parsed[0].ingest_command == "once"


@pytest.mark.parametrize(
    ("unit", "subcommand"),
    [("transitnet-ingest-once.service", "once"), ("transitnet-ingest-run.service", "run"),
     ("transitnet-compact.service", None)],
)  # fmt: skip
def test_systemd_services_parse(unit: str, subcommand: str | None) -> None:
    ini = configparser.ConfigParser(strict=False, interpolation=None)
    ini.optionxform = str  # type: ignore[assignment,method-assign]
    ini.read(EXAMPLES / unit)
    args = parse_cli(transitnet_args(ini["Service"]["ExecStart"]))
    assert getattr(args, "ingest_command", None) == subcommand
    if subcommand == "run":
        assert ini["Service"]["KillSignal"] == "SIGTERM"


@pytest.mark.parametrize("timer", ["transitnet-ingest-once.timer", "transitnet-compact.timer"])
def test_systemd_timers_point_at_services(timer: str) -> None:
    ini = configparser.ConfigParser(strict=False, interpolation=None)
    ini.optionxform = str  # type: ignore[assignment,method-assign]
    ini.read(EXAMPLES / timer)
    assert (EXAMPLES / ini["Timer"]["Unit"]).is_file() and ini["Timer"]["OnCalendar"]


def test_kubernetes_cronjobs_parse() -> None:
    docs = list(yaml.safe_load_all((EXAMPLES / "cronjob.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["CronJob", "CronJob"]
    ingest_job = docs[0]["spec"]
    assert ingest_job["concurrencyPolicy"] == "Forbid"
    container = ingest_job["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert parse_cli(container["args"]).ingest_command == "once"
    compact_args = docs[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert parse_cli(compact_args["args"]).command == "compact"
