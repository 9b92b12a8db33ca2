"""LineExtensionTask: what each tier's loss sees, distillation targets, the LR decay."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.synthetic import train_base_checkpoint
from transitnet.datasets.batches import ForecastBatch
from transitnet.extend import ExtensionConfig, build_extension_task, train_extension
from transitnet.models.forecaster import add_lines
from transitnet.tasks import ForecastingTask
from transitnet.tasks.extension import LineExtensionTask


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], ForecastingTask, Path]:
    ckpt, _ = train_base_checkpoint(tmp_path_factory.mktemp("ext_task"))
    return torch.load(ckpt, weights_only=False), ForecastingTask.load_from_checkpoint(ckpt), ckpt


def _grown(base: tuple[dict[str, Any], ForecastingTask, Path], **cfg: Any) -> LineExtensionTask:
    from transitnet.evaluate import load_datamodule

    ckpt, task, _ = base
    ext = build_extension_task(ckpt, task, ExtensionConfig(**cfg))
    dm = load_datamodule(ckpt, train_dates=None, val_dates=None)
    assert ext.net is not None
    n_old = len(dm.vocab)
    add_lines(ext.net, dm.vocab, ["C"], init="unknown")
    ext.line_keys = tuple(dm.vocab.keys)
    ext.prepare_tier(n_old)
    return ext


def _batch(ext: LineExtensionTask, n: int = 12) -> ForecastBatch:
    """Half old-line windows (rows 1..n_old-1), half the new line's (row n_old)."""
    g = torch.Generator().manual_seed(0)
    assert ext.net is not None
    n_f, n_c, n_h = ext.net.encoder.n_features, ext.net.n_context, len(ext.horizons_s)
    ids = torch.tensor(
        [1 + i % (ext.n_old_rows - 1) for i in range(n // 2)] + [ext.n_old_rows] * (n // 2)
    )
    return ForecastBatch(
        past=torch.randn(n, 4, n_f, generator=g),
        lengths=torch.full((n,), 4, dtype=torch.int64),
        context=torch.randn(n, n_c, generator=g),
        line_ids=ids,
        targets=torch.rand(n, n_h, generator=g) * 600.0,
        target_mask=torch.ones(n, n_h, dtype=torch.bool),
        index=torch.arange(n),
    )


def test_partial_forecast_loss_ignores_old_line_targets(base) -> None:
    ext = _grown(base, tier="partial", distill_weight=0.0)
    batch = _batch(ext)
    old = batch.line_ids < ext.n_old_rows
    moved = replace(batch, targets=torch.where(old[:, None], batch.targets + 5000.0, batch.targets))
    torch.manual_seed(0)
    loss = ext.training_step(batch, 0)
    torch.manual_seed(0)
    assert ext.training_step(moved, 0).item() == pytest.approx(loss.item(), rel=1e-6)


def test_replay_forecast_loss_uses_old_line_targets(base) -> None:
    ext = _grown(base, tier="replay", distill_weight=0.0)
    batch = _batch(ext)
    old = batch.line_ids < ext.n_old_rows
    moved = replace(batch, targets=torch.where(old[:, None], batch.targets + 5000.0, batch.targets))
    assert ext.training_step(moved, 0).item() > ext.training_step(batch, 0).item() + 1.0


def test_distillation_is_zero_before_training_and_uses_old_lines_own_rows(base) -> None:
    ext = _grown(base, tier="partial").eval()  # no dropout: student = teacher exactly
    batch = _batch(ext)
    assert ext.n_old_rows == 3  # unknown, A, B
    assert ext._distill(batch).item() == pytest.approx(0.0, abs=1e-7)
    assert ext.net is not None
    with torch.no_grad():
        ext.net.line_embedding.table.base[1] += 1.0  # move line A's row only
    on_b = replace(batch, line_ids=torch.full_like(batch.line_ids, 2))
    on_a = replace(batch, line_ids=torch.full_like(batch.line_ids, 1))
    # B's windows are distilled on B's own row (untouched), so nothing to distil; a
    # random old row would often be A's.
    assert ext._distill(on_b).item() == pytest.approx(0.0, abs=1e-7)
    assert ext._distill(on_a).item() > 1e-6


@pytest.mark.parametrize("decay", [False, True])
def test_lr_decay_reaches_zero_over_the_steps(base, decay: bool) -> None:
    from transitnet.evaluate import load_datamodule

    ckpt, task, _ = base
    dm = load_datamodule(ckpt, train_dates=["2024-05-07"], val_dates=None, exclude_lines=None)
    dm.setup("fit")
    cfg = ExtensionConfig(
        tier="partial", max_steps=6, new_row_lr=1e-2, lr_decay=decay, early_stopping="off"
    )
    ext, report = train_extension(ckpt, task, dm, ["C"], cfg, progress_bar=False)
    assert report.steps == 6
    lrs = [g["lr"] for g in ext.trainer.optimizers[0].param_groups]
    if decay:
        assert max(lrs) == pytest.approx(0.0, abs=1e-12)
    else:
        assert lrs == [1e-2, cfg.layer_lr]


def test_partial_with_distill_windows_adds_old_lines_inputs(base) -> None:
    from transitnet.evaluate import load_datamodule

    ckpt, task, _ = base
    dm = load_datamodule(ckpt, train_dates=["2024-05-07"], val_dates=None, exclude_lines=None)
    dm.setup("fit")
    cfg = ExtensionConfig(tier="partial", max_steps=2, distill_per_line=20, replay_new_share=0.5)
    _, report = train_extension(ckpt, task, dm, ["C"], cfg, progress_bar=False)
    keys = dm.windows["train"].meta["line_key"]
    assert report.replay_windows == 40 and (keys != "C").sum() == 40  # lines A and B
    assert (keys == "C").mean() >= 0.5


@pytest.mark.parametrize(
    ("tune_layers", "encoder_trains"), [(None, False), (["encoder", "trunk", "head"], True)]
)
def test_tune_layers_chooses_what_partial_and_replay_fine_tune(
    base, tune_layers: list[str] | None, encoder_trains: bool
) -> None:
    ext = _grown(base, tier="replay", tune_layers=tune_layers)
    assert ext.net is not None
    assert all(p.requires_grad is encoder_trains for p in ext.net.encoder.parameters())
    assert all(p.requires_grad for p in ext.net.trunk.parameters())
    in_groups = {id(p) for g in ext.parameter_groups() for p in g["params"]}
    assert all((id(p) in in_groups) is encoder_trains for p in ext.net.encoder.parameters())
    # Old embedding rows stay frozen whatever is tuned.
    assert not ext.net.line_embedding.table.base.requires_grad


def test_fork_trains_only_the_copy_and_ignores_old_line_targets(base) -> None:
    from transitnet.models.routed import RoutedForecastNet

    ext = _grown(base, tier="fork")
    assert isinstance(ext.net, RoutedForecastNet)
    assert not any(p.requires_grad for p in ext.net.base.parameters())
    ids = {id(p) for p in ext.trainable or []}
    assert ids <= {id(p) for p in ext.net.fork.parameters()}
    assert ext.net.routed_rows() == [ext.n_old_rows]
    batch = _batch(ext)
    old = batch.line_ids < ext.n_old_rows
    moved = replace(batch, targets=torch.where(old[:, None], batch.targets + 5000.0, batch.targets))
    ext.eval()
    loss = ext.training_step(batch, 0)
    assert ext.training_step(moved, 0).item() == pytest.approx(loss.item(), rel=1e-6)
    loss.backward()
    assert all(p.grad is None for p in ext.net.base.parameters())
    assert ext.net.fork.encoder is not None
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in ext.net.fork.encoder.parameters()
    )


def test_fork_tune_layers_leaves_the_rest_of_the_copy_frozen(base) -> None:
    from transitnet.models.routed import RoutedForecastNet

    ext = _grown(base, tier="fork", tune_layers=["trunk", "head"])
    assert isinstance(ext.net, RoutedForecastNet)
    assert not any(p.requires_grad for p in ext.net.fork.encoder.parameters())
    assert all(p.requires_grad for p in ext.net.fork.trunk.parameters())
    groups = ext.parameter_groups()
    assert [g["lr"] for g in groups] == [ext.hparams.new_row_lr, ext.hparams.layer_lr]
