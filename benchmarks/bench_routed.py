"""Serving cost of the ``fork`` tier: a RoutedForecastNet against its base network alone.

The routed network runs the base over every window and the fork over the routed (new-line)
windows only, so its cost grows with the share of routed windows in a batch. This times a
forward pass of a batch (calibrated outputs, no gradients, one torch thread) for the base
alone (the baseline, measured in the same run) and for the routed network at several
routed shares, and prints each as a ratio of the baseline, plus the parameter counts.

The networks are a real base checkpoint's (``--ckpt``, default the experiment's Auckland
base) with a fork copied from it; the inputs are random windows of that network's shape
(outputs do not change the cost). Without the checkpoint, a network of the experiment's
recipe (hidden 32, line embedding 32, 62 lines) is built instead.

Usage: ``.venv/bin/python benchmarks/bench_routed.py [--quick] [--ckpt CKPT]``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc

from transitnet.datasets.windows import CONTEXT_FEATURES
from transitnet.models.forecaster import ForecastNet
from transitnet.models.routed import fork_network
from transitnet.tasks.forecasting import ForecastingTask

logger = logging.getLogger("bench_routed")
SHARES = (0.0, 1 / 64, 0.25, 1.0)


def load_base(ckpt: Path) -> ForecastNet:
    """The checkpoint's network, or one of the experiment's recipe when it is missing."""
    if ckpt.is_file():
        net = ForecastingTask.load_from_checkpoint(ckpt, map_location="cpu").net
        if isinstance(net, ForecastNet):
            return net.eval()
    logger.warning("%s not found: timing a recipe-sized network instead", ckpt)
    return ForecastNet(
        num_lines=62, line_dim=32, n_features=8, horizons=[120.0, 300.0, 600.0],
        hidden_dim=32, n_context=len(CONTEXT_FEATURES),
    ).eval()  # fmt: skip


def make_inputs(
    net: ForecastNet, batch: int, share: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ``(past, lengths, line_ids, context)``; ``share`` of the windows on the last row."""
    g = torch.Generator().manual_seed(0)
    n_rows = net.line_embedding.num_lines
    ids = torch.randint(1, n_rows - 1, (batch,), generator=g)
    ids[: round(share * batch)] = n_rows - 1
    past = torch.randn(batch, 8, net.encoder.n_features, generator=g)
    lengths = torch.randint(1, 9, (batch,), generator=g)
    return past, lengths, ids, torch.randn(batch, net.n_context, generator=g)


def main(argv: list[str] | None = None) -> int:
    """Time base vs routed forwards and print the ratios."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = bc.build_parser(__doc__, "Fewer repeats and batches.")
    parser.add_argument("--ckpt", type=Path, default=Path("runs/work/auckland/base.ckpt"))
    parser.add_argument("--batch", type=int, default=256, help="Windows per batch (256).")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    logger.info(bc.machine_facts("torch"))
    base = load_base(args.ckpt)
    routed = fork_network(base, [base.line_embedding.num_lines - 1]).eval()
    repeats, loops = (3, 5) if args.quick else (7, 40)
    n_base = sum(p.numel() for p in base.parameters())
    n_routed = sum(p.numel() for p in routed.parameters())
    logger.info("parameters: base %d, routed %d (%.2fx)", n_base, n_routed, n_routed / n_base)

    def timed(net: torch.nn.Module, share: float) -> float:
        inputs = make_inputs(base, args.batch, share)

        def run() -> None:
            with torch.no_grad():
                for _ in range(loops):
                    net(*inputs)

        return bc.time_best_of(run, repeats).cpu_s / loops

    baseline = timed(base, 0.0)
    logger.info("base alone: %.3f ms CPU per batch of %d (baseline 1.00x)", 1e3 * baseline,
                args.batch)  # fmt: skip
    for share in SHARES:
        t = timed(routed, share)
        logger.info("routed, %5.1f %% of windows to the fork: %.3f ms (%.2fx the base)",
                    100 * share, 1e3 * t, t / baseline)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
