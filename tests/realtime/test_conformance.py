"""Conformance: our VehiclePositions-rule flags equal the Java reference validator's goldens.

For every file of ``fault_corpus/conformance`` and ``fault_corpus/jar`` (manifest order,
"now" = the manifest ``mtime``, the group's GTFS), the golden ``results.json`` occurrences
are attributed to the header, to a VehiclePosition row, or to a TripUpdate/Alert entity
(not ours), by the prefix formats the reference prints for each rule. Our feed-level rules
must equal the golden's header rules and our flagged rows must equal the golden's rows.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import gtfs_kit as gk
import numpy as np
import pandas as pd
import pytest

from transitnet.gtfs.static_rules import StaticRuleChecker
from transitnet.realtime.decode import FeedDecodeError, decode_vehicle_positions
from transitnet.realtime.validate import FeedValidator, ValidatedSnapshot
from transitnet.schema import VP_RULES, flag_column

pytestmark = pytest.mark.real_data

# ---------------------------------------------------------------- golden attribution

#: Rules whose every occurrence belongs to the header / the sequence of headers.
HEADER_ONLY = {"E017", "E018", "W007", "W008", "E038", "E048", "E049"}
_VID = r"(?:vehicle\.id (?P<vdot>.*?)|entity ID (?P<veid>.*?))"
#: The prefix the reference prints for an occurrence on a VehiclePosition, per rule.
VP_PATTERNS: dict[str, str] = {
    "E001": r"vehicle_id (?P<vid>.*?) timestamp -?\d+",
    "E012": r"vehicle_id (?P<vid>.*?) timestamp -?\d+",
    "E050": r"vehicle_id (?P<vid>.*?) timestamp \S+ \(-?\d+\) is .*",
    "W001": r"vehicle_id (?P<vid>.*)",
    "E003": r"vehicle_id (?P<vid>.*?) trip_id (?P<tid>.*)",
    "E016": r"vehicle_id (?P<vid>.*?) trip_id (?P<tid>.*)",
    "E004": r"vehicle_id (?P<vid>.*?) route_id (?P<rid>.*)",
    "E006": r"vehicle_id (?P<vid>.*?) trip_id (?P<tid>.*) is missing start_(date|time)",
    "E013": r"vehicle_id (?P<vid>.*?) trip_id (?P<tid>.*) schedule_relationship \w+",
    "E011": r"(vehicle_id (?P<vid>.*?) )?stop_id (?P<sid>.*)",
    "E015": r"(vehicle_id (?P<vid>.*?) )?stop_id (?P<sid>.*)",
    "E019": r"GTFS-rt trip_id (?P<tid>.*?) has start_time of (?P<st>.*?) and GTFS .*",
    "E020": r"vehicle_id (?P<vid>.*?) trip_id (?P<tid>.*?) start_time is (?P<st>.*)",
    "E021": r"vehicle_id (?P<vid>.*?) trip_id (?P<tid>.*?) start_date is .*",
    "E023": r"GTFS-rt vehicle_id (?P<vid>.*?) trip_id (?P<tid>.*?) start_time is .*",
    "E024": r"GTFS-rt vehicle_id (?P<vid>.*?) trip_id (?P<tid>.*?) trip\.direction_id is .*",
    "E026": _VID + r" (has latitude/longitude of|position is missing) .*",
    "E027": _VID + r" has bearing of .*",
    "W004": _VID + r" speed of .*",
    "E028": _VID + r" at \(.*\) is more than .*",
    "E029": _VID + r" trip_id (?P<tid>.*?) at \(.*\) is more than .*",
    "E035": r"GTFS-rt entity ID (?P<eid>.*?) trip_id (?P<tid>.*?) has route_id .*",
    "E039": r"entity ID (?P<eid>.*?) has is_deleted=.*",
    "E052": r"entity ID (?P<eid>.*?) has vehicle\.id (?P<vid>.*)",
    "W002": r"entity ID (?P<eid>.*)",
    "W005": r"entity ID(?P<eid>.*?)with trip_id (?P<tid>.*)",
    "W006": r"entity ID (?P<eid>.*)",
    "W009": r"trip_id (?P<tid>.*)|entity ID (?P<eid>.*)",
}
#: Rules whose VehiclePosition prefix is also printed for TripUpdate/Alert entities.
SHARED_FORMAT = {"E019", "E035", "E039", "W002", "W006", "W009"}


@dataclass(frozen=True)
class GoldenAttribution:
    """Golden occurrences split into header rules, VehiclePosition rows, and not-ours."""

    header: frozenset[str]
    rows: dict[str, frozenset[int]]
    others: tuple[tuple[str, str], ...]

    @property
    def vp_rules(self) -> set[str]:
        return set(self.header) | set(self.rows)


def read_golden(path: Path) -> list[tuple[str, str]]:
    """(rule id, occurrence prefix) for every occurrence in a reference results.json."""
    out = []
    for error in json.loads(path.read_text(encoding="utf-8")):
        rule = error["errorMessage"]["validationRule"]["errorId"]
        out.extend((rule, occ["prefix"]) for occ in error["occurrenceList"])
    return out


def _vp_fields(entity: Any, row: int) -> dict[str, Any]:
    vp = entity.vehicle
    has_id = vp.HasField("vehicle") and vp.vehicle.HasField("id")
    return {
        "row": row, "eid": entity.id, "vid": vp.vehicle.id, "has_vid": has_id,
        "tid": vp.trip.trip_id, "has_tid": vp.trip.HasField("trip_id"), "rid": vp.trip.route_id,
        "st": vp.trip.start_time, "sid": vp.stop_id,
    }  # fmt: skip


def _matches(vp: dict[str, Any], groups: dict[str, str | None]) -> bool:
    checks = {
        "vid": lambda v: vp["vid"] == v,
        "vdot": lambda v: vp["has_vid"] and vp["vid"] == v,
        "veid": lambda v: not vp["has_vid"] and vp["eid"] == v,
        "eid": lambda v: vp["eid"] == v,
        "tid": lambda v: vp["has_tid"] and vp["tid"] == v,
        "rid": lambda v: vp["rid"] == v,
        "st": lambda v: vp["st"] == v,
        "sid": lambda v: vp["sid"] == v,
    }
    return all(checks[k](v) for k, v in groups.items() if v is not None)


def _other_entity_matches(message: Any, groups: dict[str, str | None]) -> bool:
    """True when a TripUpdate/Alert entity carries the id the prefix names."""
    for entity in message.entity:
        if not (entity.HasField("trip_update") or entity.HasField("alert")):
            continue
        if groups.get("eid") is not None and entity.id == groups["eid"]:
            return True
        tu = entity.trip_update
        if groups.get("tid") is not None and entity.HasField("trip_update"):
            if tu.trip.trip_id == groups["tid"]:
                return True
    return False


def attribute_golden(occurrences: list[tuple[str, str]], message: Any) -> GoldenAttribution:
    """Split golden occurrences into header rules, VehiclePosition rows and the rest."""
    vps = [
        _vp_fields(e, i) for i, e in enumerate(e for e in message.entity if e.HasField("vehicle"))
    ]
    header: set[str] = set()
    rows: dict[str, set[int]] = {}
    others = []
    for rule, prefix in occurrences:
        if rule in HEADER_ONLY or (rule, prefix) in {
            ("E001", "header.timestamp"),
            ("W001", "header"),
        }:
            header.add(rule)
            continue
        if rule == "E050" and prefix.startswith("header.timestamp "):
            header.add(rule)
            continue
        match = re.fullmatch(VP_PATTERNS[rule], prefix) if rule in VP_PATTERNS else None
        groups = match.groupdict() if match else {}
        hits = {vp["row"] for vp in vps if _matches(vp, groups)} if match else set()
        if hits and rule in SHARED_FORMAT and _other_entity_matches(message, groups):
            raise AssertionError(f"ambiguous golden occurrence {rule} {prefix!r}")
        if hits:
            rows.setdefault(rule, set()).update(hits)
        else:
            others.append((rule, prefix))
    return GoldenAttribution(
        frozenset(header), {k: frozenset(v) for k, v in rows.items()}, tuple(others)
    )


# ---------------------------------------------------------------- static feeds


def read_gtfs(path: Path) -> Any:
    """Read a static GTFS zip; tables gtfs-kit cannot type (e.g. direction_id "N") as text."""
    try:
        return gk.read_feed(path, dist_units="km")
    except ValueError:
        pass
    tables = {}
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            table = Path(name).stem
            if name.endswith(".txt") and table in gk.constants.DTYPES:
                df = pd.read_csv(zf.open(name), dtype="string", encoding="utf-8-sig")
                tables[table] = df.rename(columns=str.strip)
    return gk.Feed(dist_units="km", **tables)


@cache
def _checker(gtfs: Path, ignore_shapes: bool) -> StaticRuleChecker:
    return StaticRuleChecker(read_gtfs(gtfs), ignore_shapes=ignore_shapes)


# ---------------------------------------------------------------- the groups


def _groups(corpus: Path) -> list[dict[str, Any]]:
    groups = []
    conformance = json.loads((corpus / "conformance" / "manifest.json").read_text())
    for group in conformance["groups"]:
        groups.append({**group, "dir": corpus / "conformance" / group["name"]})
    jar = json.loads((corpus / "jar" / "manifest.json").read_text())
    groups.append({**jar, "name": "jar", "dir": corpus / "jar", "ignore_shapes": False})
    return groups


GROUP_NAMES = ["bullrunner", "bullrunner-ignoring-shapes", "testagency2", "timepoints", "jar"]


@pytest.fixture(scope="module")
def corpus(shared_data: Path) -> Path:
    return shared_data / "fault_corpus"


def _run_group(corpus: Path, name: str) -> list[tuple[dict[str, Any], str, Any]]:
    """Replay a group as the reference's batch mode does; (input, outcome, payload) per file."""
    group = next(g for g in _groups(corpus) if g["name"] == name)
    checker = _checker(corpus / "gtfs" / group["gtfs"], bool(group["ignore_shapes"]))
    validator = FeedValidator(name, checker)
    results = []
    for item in group["inputs"]:
        body = (group["dir"] / item["name"]).read_bytes()
        sha256 = hashlib.sha256(body).hexdigest()
        assert sha256 == item["sha256"], f"{item['name']} differs from the manifest"
        if validator.is_duplicate(sha256):
            results.append((item, "duplicate", None))
            continue
        try:
            decoded = decode_vehicle_positions(body, feed_id=name, source_file=item["name"])
        except FeedDecodeError as exc:
            results.append((item, "decode", exc))
            continue
        now = datetime.fromtimestamp(item["mtime"], UTC)
        results.append((item, "ok", (decoded, validator.validate(decoded, now=now, sha256=sha256))))
    return results


def _our_rows(snapshot: ValidatedSnapshot) -> dict[str, frozenset[int]]:
    rows = {}
    for rule in VP_RULES:
        values = snapshot.positions.column(flag_column(rule)).to_numpy(zero_copy_only=False)
        flagged = frozenset(int(i) for i in np.flatnonzero(np.asarray(values == True)))  # noqa: E712
        if flagged:
            rows[rule] = flagged
    return rows


@pytest.mark.parametrize("name", GROUP_NAMES)
def test_group_matches_reference(corpus: Path, name: str) -> None:
    for item, outcome, payload in _run_group(corpus, name):
        assert outcome == ("ok" if item["skip"] is None else item["skip"]), item["name"]
        if outcome != "ok":
            continue
        decoded, snapshot = payload
        golden = read_golden(_results_path(corpus, name, item))
        assert sorted({r for r, _ in golden}) == sorted(item["rules"]), "manifest vs results"
        expected = attribute_golden(golden, decoded.message)
        assert sorted(snapshot.snapshot_rules) == sorted(expected.header), item["name"]
        ours = _our_rows(snapshot)
        n = snapshot.positions.num_rows
        for rule in VP_RULES:
            if rule in expected.header:
                assert ours.get(rule, frozenset()) == frozenset(range(n)), (item["name"], rule)
                assert snapshot.rule_counts[rule] == 1 + len(expected.rows.get(rule, ())), rule
            else:
                assert ours.get(rule, frozenset()) == expected.rows.get(rule, frozenset()), (
                    item["name"], rule, expected.others,
                )  # fmt: skip
        assert snapshot.positions.num_rows == decoded.positions.num_rows


def _results_path(corpus: Path, name: str, item: dict[str, Any]) -> Path:
    folder = corpus / "jar" if name == "jar" else corpus / "conformance" / name
    return folder / item["results"]


def test_decode_failures_are_classified(corpus: Path) -> None:
    kinds = {}
    for name in ("bullrunner", "jar"):
        for item, outcome, payload in _run_group(corpus, name):
            if outcome == "decode":
                kinds[item["name"]] = payload.kind
    assert kinds == {
        "13-truncated.pb": "truncated",
        "14-empty-file.pb": "empty",
        "06-truncated.pb": "truncated",
        "07-empty.pb": "empty",
    }
    with pytest.raises(FeedDecodeError) as info:
        decode_vehicle_positions((corpus / "jar" / "not-protobuf.pb").read_bytes(), feed_id="j")
    assert info.value.kind == "not_protobuf"


def test_every_corpus_file_is_replayed(corpus: Path) -> None:
    listed = {g["dir"] / item["name"] for g in _groups(corpus) for item in g["inputs"]}
    on_disk = set((corpus / "conformance").glob("*/*.pb")) | set((corpus / "jar").glob("*.pb"))
    assert on_disk - listed == {corpus / "jar" / "not-protobuf.pb"}
