"""RoutedForecastNet: routing by embedding row, bit-identical base rows, clear errors."""

from __future__ import annotations

import pytest
import torch

from transitnet.models.forecaster import ForecastNet
from transitnet.models.routed import RoutedForecastNet, fork_network


def _net(num_lines: int = 4, seed: int = 0) -> ForecastNet:
    torch.manual_seed(seed)
    return ForecastNet(
        num_lines=num_lines, line_dim=3, n_features=2, horizons=[60.0, 120.0], n_context=2,
        hidden_dim=8,
    ).eval()  # fmt: skip


def _inputs(n: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    past = torch.randn(n, 5, 2, generator=g)
    lengths = torch.randint(1, 6, (n,), generator=g)
    ids = torch.tensor([i % 4 for i in range(n)])
    return past, lengths, ids, torch.randn(n, 2, generator=g)


def test_routed_rows_go_to_the_fork_and_the_rest_to_the_base_bit_identically() -> None:
    base = _net()
    routed = fork_network(base, [3])
    with torch.no_grad():
        for p in routed.fork.parameters():
            p.add_(0.1)  # the fork moves, the base must not notice
    past, lengths, ids, ctx = _inputs()
    with torch.no_grad():
        out = routed(past, lengths, ids, ctx)
        from_base = base(past, lengths, ids, ctx)
        from_fork = routed.fork(past, lengths, ids, ctx)
    is_fork = ids == 3
    assert torch.equal(out[~is_fork], from_base[~is_fork])
    torch.testing.assert_close(out[is_fork], from_fork[is_fork])
    assert not torch.allclose(out[is_fork], from_base[is_fork])
    assert routed.routed_rows() == [3]


def test_a_batch_without_routed_rows_is_the_base_alone() -> None:
    base = _net()
    routed = RoutedForecastNet(base, _net(seed=5), [3])
    past, lengths, _, ctx = _inputs()
    ids = torch.tensor([1, 2] * 5)
    with torch.no_grad():
        assert torch.equal(routed(past, lengths, ids, ctx), base(past, lengths, ids, ctx))


def test_the_state_dict_holds_both_networks_and_the_routing() -> None:
    routed = fork_network(_net(), [2, 3])
    again = RoutedForecastNet(_net(seed=7), _net(seed=8), [1])
    again.load_state_dict(routed.state_dict())
    assert again.routed_rows() == [2, 3]
    past, lengths, ids, ctx = _inputs()
    with torch.no_grad():
        assert torch.equal(again(past, lengths, ids, ctx), routed(past, lengths, ids, ctx))


@pytest.mark.parametrize("rows", [[0], [4], [-1]])
def test_routing_the_unknown_row_or_a_missing_row_is_refused(rows: list[int]) -> None:
    with pytest.raises(ValueError, match="routed rows"):
        fork_network(_net(), rows)


def test_base_and_fork_of_different_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="same vocabulary"):
        RoutedForecastNet(_net(4), _net(5), [3])


def test_a_line_id_outside_the_vocabulary_is_an_index_error() -> None:
    past, lengths, ids, ctx = _inputs()
    with pytest.raises(IndexError):
        fork_network(_net(), [3])(past, lengths, torch.full_like(ids, 9), ctx)
