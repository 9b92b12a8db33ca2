"""Committed notebooks carry no outputs, and start with a papermill-style parameters cell."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_there() -> None:
    names = [p.name for p in NOTEBOOKS]
    assert names == [
        "01_feed_quality.ipynb",
        "02_map_matching.ipynb",
        "03_train_and_evaluate.ipynb",
        "04_new_line.ipynb",
        "05_head_extension.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; strip them before committing"
    assert "widgets" not in nb.metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_starts_with_a_parameters_cell(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in first.metadata.get("tags", [])
    names = {line.split("=")[0].strip() for line in first.source.splitlines() if "=" in line}
    assert {"FAST", "DATA", "WORK"} <= names
