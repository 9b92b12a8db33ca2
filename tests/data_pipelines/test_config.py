from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from data_pipelines.config import ConfigError, FeedConfig, load_config, parse_config

EXAMPLES = Path(__file__).resolve().parents[2] / "data_pipelines" / "examples"


def test_example_config_parses() -> None:
    config = load_config(EXAMPLES / "feeds.example.yaml")
    ids = [f.id for f in config.feeds]
    assert ids == ["akl", "tfnsw-bus", "mbta", "example-query-key"]
    akl, tfnsw = config.feeds[0], config.feeds[1]
    assert akl.headers_from_env == {"Ocp-Apim-Subscription-Key": "AT_API_KEY"}
    assert akl.interval_s == 30 and tfnsw.interval_s == 15 and tfnsw.read_timeout_s == 8
    assert akl.user_agent.startswith("transitnet/") and akl.timezone == "Pacific/Auckland"
    endpoint = config.feeds[3].to_endpoint()
    assert endpoint.params_from_env == {"api_key": "EXAMPLE_API_KEY"}
    assert endpoint.max_bytes == 52428800 and endpoint.feed_id == "example-query-key"


def test_minimal_config_gets_defaults() -> None:
    (feed,) = parse_config({"feeds": [{"id": "f", "url": "http://127.0.0.1:8/vp"}]}).feeds
    assert feed == FeedConfig("f", "http://127.0.0.1:8/vp")
    assert feed.connect_timeout_s < feed.interval_s and feed.read_timeout_s < feed.interval_s


def test_relative_static_path_is_resolved_against_the_config(tmp_path: Path) -> None:
    (tmp_path / "gtfs.zip").write_bytes(b"zip")
    path = tmp_path / "feeds.yaml"
    path.write_text(yaml.safe_dump({"feeds": [{"id": "f", "url": "https://x.org/vp",
                                               "static": "gtfs.zip"}]}))  # fmt: skip
    assert load_config(path).feeds[0].static == str(tmp_path / "gtfs.zip")
    url = {"feeds": [{"id": "f", "url": "https://x.org/vp", "static": "https://x.org/g.zip"}]}
    assert parse_config(url).feeds[0].static == "https://x.org/g.zip"


GOOD = {"id": "f", "url": "https://x.org/vp"}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (None, "expected a mapping"),
        ({"feeds": []}, "non-empty list"),
        ({"feeds": [GOOD], "extra": 1}, "unknown top-level keys"),
        ({"feeds": ["https://x.org"]}, "expected a mapping"),
        ({"feeds": [{"url": "https://x.org/vp"}]}, "'id' is required"),
        ({"feeds": [{**GOOD, "intreval_s": 5}]}, "unknown keys"),
        ({"feeds": [{**GOOD, "id": "a/b"}]}, "invalid feed id"),
        ({"feeds": [{**GOOD, "url": "ftp://x.org/vp"}]}, "http"),
        ({"feeds": [{**GOOD, "url": "https://x.org/vp?api_key=abc123"}]}, "params_from_env"),
        ({"feeds": [{**GOOD, "url": "https://u:p@x.org/vp"}]}, "credentials"),
        ({"feeds": [{**GOOD, "interval_s": -1}]}, "positive number"),
        ({"feeds": [{**GOOD, "interval_s": "30"}]}, "positive number"),
        ({"feeds": [{**GOOD, "max_bytes": 1.5}]}, "positive integer"),
        ({"feeds": [{**GOOD, "interval_s": 10, "read_timeout_s": 10}]}, "shorter than"),
        ({"feeds": [{**GOOD, "headers_from_env": {"X-Key": "abc-123-real-key"}}]}, "environment"),
        ({"feeds": [{**GOOD, "params_from_env": ["KEY"]}]}, "environment-variable NAMES"),
        ({"feeds": [{**GOOD, "timezone": "Mars/Olympus"}]}, "unknown timezone"),
        ({"feeds": [{**GOOD, "static": "nowhere.zip"}]}, "not found"),
        ({"feeds": [GOOD, GOOD]}, "duplicate feed ids"),
        ({"defaults": {"url": "https://x.org"}, "feeds": [GOOD]}, "defaults"),
    ],
)
def test_bad_configs_are_clear_errors(doc: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(doc)


def test_defaults_apply_unless_a_feed_overrides() -> None:
    doc = {"defaults": {"interval_s": 60, "user_agent": "ua"},
           "feeds": [GOOD, {"id": "g", "url": "https://x.org/g", "interval_s": 20}]}  # fmt: skip
    f, g = parse_config(doc).feeds
    assert (f.interval_s, g.interval_s, f.user_agent, g.user_agent) == (60, 20, "ua", "ua")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("feeds: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
