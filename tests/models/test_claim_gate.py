import pytest
import torch

from transitnet.models.claim_gate import (
    QUANTILE_GRID,
    apply_gate,
    confidence_quantiles,
    gate_threshold,
)
from transitnet.models.classifier import MASKED_LOGIT


def test_quantiles_cover_only_the_correct_windows():
    logits = torch.tensor([[4.0, 0.0], [1.0, 0.0], [0.0, 3.0], [5.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])  # the last one is wrong (and the surest)
    grid = confidence_quantiles(logits, labels)
    conf = torch.tensor([4.0, 1.0, 3.0]).sigmoid()  # two-class softmax of the right three
    assert len(grid) == len(QUANTILE_GRID) and grid == sorted(grid)
    assert grid[0] == pytest.approx(float(conf.min()))
    assert gate_threshold(grid, 0.5) == pytest.approx(float(conf.median()))
    assert confidence_quantiles(logits, torch.tensor([1, 1, 0, 1])) == []  # none right


def test_gate_masks_new_classes_only_where_the_old_ones_are_sure():
    logits = torch.tensor([[5.0, 0.0, 9.0], [0.1, 0.0, 9.0], [0.0, 6.0, 1.0]])
    gated = torch.tensor([False, False, True])
    out = apply_gate(logits, gated, threshold=0.9)
    assert out[0, 2] == MASKED_LOGIT and out[0].argmax() == 0  # sure (p≈0.99): kept old
    assert torch.equal(out[1], logits[1]) and out[1].argmax() == 2  # unsure: new may take it
    assert out[2].argmax() == 1 and torch.equal(
        out[:, :2], logits[:, :2]
    )  # old logits as they were
    assert torch.equal(apply_gate(logits, torch.zeros(3, dtype=torch.bool), 0.5), logits)


def test_bad_levels_and_missing_quantiles_are_refused():
    with pytest.raises(ValueError, match="quantiles"):
        gate_threshold([], 0.1)
    with pytest.raises(ValueError, match=r"q=0\.7"):
        gate_threshold(list(range(101)), 0.7)
