import pytest
import torch

from transitnet.models.embedding import LineEmbedding, SplitRows, dropout_ids
from transitnet.models.migrate import compute_init_rows


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _emb(num_lines=6, dim=4, **kw):
    return LineEmbedding(num_lines, dim, generator=_gen(), **kw)


def test_lookup_matches_the_table_and_rejects_bad_ids():
    emb = _emb()
    ids = torch.tensor([[0, 5], [3, 3]])
    assert torch.equal(emb(ids), emb.weight[ids])
    with pytest.raises(IndexError, match="resize"):
        emb(torch.tensor([6]))
    with pytest.raises(IndexError):
        emb(torch.tensor([-1]))
    with pytest.raises(TypeError):
        emb(torch.tensor([1.0]))
    assert emb(torch.zeros(0, dtype=torch.long)).shape == (0, 4)


def test_resize_keeps_old_rows_and_the_base_parameter_object():
    emb = _emb()
    base, before = emb.table.base, emb.weight.detach().clone()
    emb.resize(9, init="mean")
    assert emb.num_lines == 9 and emb.capacity == 9
    assert emb.table.base is base  # an optimizer over the base stays valid
    assert torch.equal(emb.weight[:6], before)
    with pytest.raises(ValueError, match="shrink"):
        emb.resize(8)


def test_init_unknown_mean_similar_and_callable():
    rows = torch.randn(6, 4, generator=_gen())
    assert torch.equal(compute_init_rows(rows, 2, "unknown"), rows[[0, 0]])
    mean = compute_init_rows(rows, 3, "mean")
    assert torch.allclose(mean, rows[1:].mean(0).expand(3, -1))  # row 0 excluded
    assert torch.equal(compute_init_rows(rows[:1], 1, "mean"), rows[:1])  # only row 0 yet
    similar = compute_init_rows(rows, 1, "similar:2,4")
    assert torch.allclose(similar[0], (rows[2] + rows[4]) / 2)
    doubled = compute_init_rows(rows, 2, lambda old, n: old[-1:].repeat(n, 1) * 2)
    assert torch.equal(doubled, rows[[5, 5]] * 2)
    for bad in ("similar:9", "similar:x", "similar:", "nearest", lambda old, n: old):
        with pytest.raises(ValueError):
            compute_init_rows(rows, 2, bad)
    with pytest.raises(ValueError, match="non-finite"):
        compute_init_rows(rows, 1, lambda old, n: torch.full((n, 4), float("nan")))


def test_init_mean_cov_samples_around_the_mean_and_falls_back_to_it():
    rows = torch.randn(400, 3, generator=_gen()) @ torch.tensor(
        [[2.0, 0, 0], [0.5, 1, 0], [0, 0, 0.3]]
    )
    line_rows = rows[1:]
    mu = line_rows.mean(0)
    tiny = compute_init_rows(rows, 4, "mean_cov", _gen(1))  # Hugging Face's ε = 1e-9
    assert not torch.equal(tiny, mu.expand(4, -1)) and torch.allclose(
        tiny, mu.expand(4, -1), atol=1e-3
    )
    wide = compute_init_rows(rows, 20000, "mean_cov:1.0", _gen(2))
    cov = torch.cov(line_rows.T, correction=0)
    assert torch.allclose(torch.cov(wide.T), cov, atol=0.1)
    assert torch.allclose(wide.mean(0), mu, atol=0.05)
    singular = torch.randn(3, 8, generator=_gen())  # 2 line rows in 8 dims: Σ is not PD
    fallback = compute_init_rows(singular, 2, "mean_cov", _gen())
    assert torch.allclose(fallback, singular[1:].mean(0).expand(2, -1))


def test_init_random_matches_the_std_of_the_old_rows():
    rows = torch.randn(50, 8, generator=_gen()) * 3.0
    out = compute_init_rows(rows, 4000, "random", _gen(1))
    assert abs(out.std().item() / rows[1:].std().item() - 1) < 0.05
    assert abs(out.mean().item()) < 0.1
    assert torch.equal(out, compute_init_rows(rows, 4000, "random", _gen(1)))


def test_padded_rows_are_initialised_masked_and_reinitialised_on_use():
    emb = _emb(num_lines=5, pad_to_multiple_of=8)
    assert (emb.num_lines, emb.capacity) == (5, 8)
    assert torch.isfinite(emb.table.full()).all()
    with pytest.raises(IndexError):
        emb(torch.tensor([5]))
    emb.resize(6, init="unknown", pad_to_multiple_of=4)
    table = emb.table.full().detach()
    assert (emb.num_lines, emb.capacity) == (6, 8)
    assert torch.equal(table[5:], table[[0, 0, 0]])  # new row and both spare rows
    emb.resize(7, init="similar:2")  # grows into a spare row: it gets the requested init
    assert torch.equal(emb.weight[6], emb.weight[2])
    emb.resize(9, init="mean", pad_to_multiple_of=4)
    assert (emb.num_lines, emb.capacity) == (9, 12)
    assert torch.isfinite(emb.table.full()).all()


def test_row_only_gradients_and_merge():
    emb = _emb()
    emb.resize(8, init="mean")
    emb.freeze_old()
    assert emb.new_parameters() == [emb.table.new] and not emb.table.base.requires_grad
    emb(torch.tensor([1, 6, 7])).sum().backward()
    assert emb.table.base.grad is None
    assert torch.equal(emb.table.new.grad, torch.ones(2, 4))
    values = emb.weight.detach().clone()
    emb.merge()
    assert emb.table.n_base == 8 and emb.table.new.shape == (0, 4)
    assert not emb.table.base.requires_grad  # the frozen flag survives the merge
    assert torch.equal(emb.weight, values)


def test_state_dict_is_one_table_independent_of_the_split():
    emb = _emb()
    emb.resize(8, init="mean", pad_to_multiple_of=5)
    state = emb.state_dict()
    assert set(state) == {"table.rows", "row_count"} and state["table.rows"].shape == (10, 4)
    other = LineEmbedding(10, 4, num_base=3)  # same capacity, other split and row count
    other.load_state_dict(state)
    assert other.num_lines == 8 and other.table.n_base == 3
    assert torch.equal(other.weight, emb.weight)
    with pytest.raises(RuntimeError, match="migrate_rows"):
        LineEmbedding(6, 4).load_state_dict(state)
    with pytest.raises(RuntimeError, match="row_count"):
        other.load_state_dict({**state, "row_count": torch.tensor(11)})
    with pytest.raises(RuntimeError, match="Missing"):
        other.load_state_dict({"row_count": torch.tensor(2)})
    with pytest.raises(RuntimeError, match="Unexpected"):
        other.load_state_dict({**state, "table.extra": torch.zeros(1)})


def test_split_rows_validates_and_overwrites_only_new_rows():
    rows = SplitRows(torch.arange(12.0).view(6, 2), n_base=4)
    with pytest.raises(ValueError):
        rows.set_rows(2, torch.zeros(1, 2))
    with pytest.raises(ValueError):
        SplitRows(torch.zeros(2, 2), n_base=3)
    rows.set_rows(5, torch.full((2, 2), -1.0))
    assert rows.full().tolist()[4:] == [[8.0, 9.0], [-1.0, -1.0], [-1.0, -1.0]]


def test_dropout_ids():
    ids = torch.arange(1, 10001)
    assert torch.equal(dropout_ids(ids, 0.0), ids)
    assert (dropout_ids(ids, 1.0) == 0).all()
    dropped = dropout_ids(ids, 0.2, _gen(3))
    assert torch.equal(dropped, dropout_ids(ids, 0.2, _gen(3)))
    zero = dropped == 0
    assert 0.18 < zero.float().mean() < 0.22 and torch.equal(dropped[~zero], ids[~zero])
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError):
            dropout_ids(ids, p)
