"""`transitnet evaluate --trip-updates`: observed arrivals reach metrics.json and the report."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.transit import gtfs_realtime_pb2 as pb

from tests.test_evaluate_eta import T0, V82, tiny_artefacts, tiny_windows
from transitnet.cli import main
from transitnet.evaluate import Evaluation


def snapshot(header_s: int, stop: str, arrival_s: int) -> bytes:
    msg = pb.FeedMessage()
    msg.header.gtfs_realtime_version = "2.0"
    msg.header.timestamp = header_s
    tu = msg.entity.add(id="1").trip_update
    tu.trip.trip_id = "RT" + V82
    stu = tu.stop_time_update.add(stop_id=stop + V82)
    stu.arrival.time = arrival_s
    return msg.SerializeToString()


def test_evaluate_cli_scores_etas_from_a_trip_updates_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = int(T0.timestamp())
    members = {
        "a.pb": snapshot(t0 + 160, "B", t0 + 150),  # the model says 150 s
        "b.pb": b"<html>502</html>",  # a bad poll: counted and reported, not fatal
        "c.pb": snapshot(t0 + 260, "C", t0 + 250),
    }
    archive = tmp_path / "tu.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    windows = tiny_windows(["RT" + V82], [500.0])
    model = np.repeat(windows.targets[..., None], 3, axis=2)
    baselines = {"persistence": np.zeros_like(windows.targets)}
    evaluation = Evaluation(windows, model, baselines, (0.1, 0.5, 0.9), tiny_artefacts())
    seen: dict[str, Any] = {}

    def fake_run_evaluation(ckpt: Path, **kwargs: Any) -> Evaluation:
        seen.update(kwargs, ckpt=ckpt)
        return evaluation

    monkeypatch.setattr("transitnet.evaluate.run_evaluation", fake_run_evaluation)
    out = tmp_path / "out"
    argv = ["evaluate", "--ckpt", "m.ckpt", "--trip-updates", str(archive), "--out", str(out)]
    assert main(argv) == 0
    assert seen["ckpt"] == Path("m.ckpt")
    assert "failed to decode: {'html': 1}" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    eta = metrics["model"]["eta"]
    assert eta["n"] == 2 and eta["score"] == 1.0 and eta["mae_s"] == 0.0  # perfect forecast
    assert "ETA accuracy" in (out / "report.md").read_text()
