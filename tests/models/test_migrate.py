import pytest
import torch

from transitnet.datasets.vocab import LineVocabulary, build_row_map
from transitnet.models.forecaster import ForecastNet, add_lines
from transitnet.models.losses import pinball_loss
from transitnet.models.migrate import migrate_optimizer_state, migrate_rows

ROWS_KEY = "line_embedding.table.rows"


def test_migrate_rows_moves_rows_by_key_and_fills_absent_keys():
    old = torch.arange(8.0).view(4, 2)  # rows 0..2 for keys, row 3 a spare padded row
    full = torch.full((5, 2), -1.0)
    out = migrate_rows(old, ["u", "a", "b"], ["u", "a", "b", "c", "d"], full)
    assert out.tolist() == [[0, 1], [2, 3], [4, 5], [-1, -1], [-1, -1]]
    per_key = migrate_rows(old, ["u", "a", "b"], ["u", "a", "b", "c"], torch.tensor([[9.0, 9.0]]))
    assert per_key[3].tolist() == [9, 9]
    mean = migrate_rows(
        old, ["u", "a", "b"], ["u", "a", "b", "c"], lambda rows, n: rows.mean(0).expand(n, -1)
    )
    assert mean[3].tolist() == [2, 3]
    spare = migrate_rows(old, ["u", "a", "b"], ["u", "a", "b", "c"], torch.zeros(6, 2))
    assert spare.shape == (6, 2)  # the new table keeps its own spare rows
    moved = migrate_rows(old, ["u", "a", "b"], ["u", "b", "a"], full[:3], allow_reorder=True)
    assert moved.tolist() == [[0, 1], [4, 5], [2, 3]]
    dropped = migrate_rows(
        old, ["u", "a", "b"], ["u", "b"], full[:2], allow_drop=True, allow_reorder=True
    )
    assert dropped.tolist() == [[0, 1], [4, 5]]


@pytest.mark.parametrize(
    ("old_keys", "new_keys", "init", "match"),
    [
        (["u", "a", "b"], ["u", "a"], torch.zeros(2, 2), "truncate"),
        (["u", "a", "b"], ["u", "b", "a"], torch.zeros(3, 2), "re-order"),
        (["u", "a", "b"], ["u", "a", "b", "c", "d"], torch.zeros(3, 2), "need 2"),
        (["u", "a", "b"], ["u", "a", "b", "c"], torch.zeros(4, 3), "do not match"),
        (["u", "a", "b", "c", "d"], ["u", "a", "b", "c", "d"], torch.zeros(5, 2), "rows for 5"),
        (["u", "a", "a"], ["u", "a"], torch.zeros(2, 2), "duplicates"),
    ],
)
def test_migrate_rows_refuses_silent_damage(old_keys, new_keys, init, match):
    with pytest.raises(ValueError, match=match):
        migrate_rows(torch.zeros(4, 2), old_keys, new_keys, init)


def _net(num_lines, pad=None):
    torch.manual_seed(0)
    return ForecastNet(
        num_lines, 4, 3, (60, 300), (0.1, 0.5, 0.9), hidden_dim=8, pad_lines_to_multiple_of=pad
    )


def _inputs(line_ids):
    gen = torch.Generator().manual_seed(1)
    return (
        torch.randn(len(line_ids), 5, 3, generator=gen),
        torch.full((len(line_ids),), 5),
        torch.tensor(line_ids),
    )


@pytest.mark.parametrize(("old_pad", "new_pad"), [(None, None), (8, None), (None, 16)])
def test_checkpoint_round_trip_from_n_to_n_plus_k_lines(tmp_path, old_pad, new_pad):
    old_vocab = LineVocabulary(["a", "b", "c", "d", "e"])
    old_net = _net(len(old_vocab), old_pad).eval()
    torch.save(
        {"state_dict": old_net.state_dict(), "vocab": old_vocab.state_dict()}, tmp_path / "old.ckpt"
    )
    old_ids = list(range(len(old_vocab)))
    expected = old_net(*_inputs(old_ids))

    ckpt = torch.load(tmp_path / "old.ckpt")
    vocab = LineVocabulary.from_state_dict(ckpt["vocab"])
    vocab.add(["f", "g", "h"])
    new_net = _net(len(vocab), new_pad).eval()  # built at the new size, as from hparams
    new_rows = new_net.line_embedding.weight[6:].detach().clone()
    touched = new_net.line_embedding.migrate_state_dict(
        ckpt["state_dict"],
        "line_embedding.",
        LineVocabulary.from_state_dict(ckpt["vocab"]).keys,
        vocab.keys,
    )
    assert touched == [ROWS_KEY, "line_embedding.row_count"]
    new_net.load_state_dict(ckpt["state_dict"])  # strict
    assert torch.equal(new_net(*_inputs(old_ids)), expected)
    assert torch.equal(new_net.line_embedding.weight[6:], new_rows)
    assert torch.isfinite(new_net(*_inputs([6, 7, 8]))).all()


def test_checkpoint_migration_refuses_reordered_or_truncated_vocabularies():
    old_vocab = LineVocabulary(["a", "b", "c"])
    state = _net(len(old_vocab)).state_dict()
    rebuilt = LineVocabulary(["c", "a", "b", "d"])  # e.g. rebuilt from sorted keys of new data
    with pytest.raises(ValueError, match="re-order"):
        _net(len(rebuilt)).line_embedding.migrate_state_dict(
            dict(state), "line_embedding.", old_vocab.keys, rebuilt.keys
        )
    smaller = LineVocabulary(["a", "b"])
    with pytest.raises(ValueError, match="truncate"):
        _net(len(smaller)).line_embedding.migrate_state_dict(
            dict(state), "line_embedding.", old_vocab.keys, smaller.keys
        )
    with pytest.raises(ValueError, match="old / "):
        _net(6).line_embedding.migrate_state_dict(
            dict(state), "line_embedding.", old_vocab.keys, rebuilt.keys
        )
    with pytest.raises(RuntimeError, match="migrate_rows"):
        _net(5).load_state_dict(state)  # loading without migration fails loudly


def _train(net, opt, line_ids, steps=3):
    for _ in range(steps):
        opt.zero_grad()
        out = net(*_inputs(line_ids))
        pinball_loss(out, out.detach()[..., 1] + 10, None, net.quantiles).backward()
        opt.step()


def test_adamw_state_keeps_old_row_moments_and_resumes():
    old_vocab = LineVocabulary(["a", "b", "c"])
    old_net = _net(len(old_vocab))
    opt = torch.optim.AdamW(old_net.parameters(), lr=0.01, weight_decay=0.1)
    _train(old_net, opt, [1, 2, 3, 0])
    saved_opt, saved_state = opt.state_dict(), old_net.state_dict()
    names = [n for n, _ in old_net.named_parameters()]
    table_index = names.index("line_embedding.table.base")

    vocab = LineVocabulary.from_state_dict(old_vocab.state_dict())
    net = _net(len(old_vocab))
    add_lines(net, vocab, ["d", "e"], init="mean")
    net.line_embedding.merge()  # all rows in one trainable base, as in the old run
    net.line_embedding.migrate_state_dict(
        saved_state, "line_embedding.", old_vocab.keys, vocab.keys
    )
    net.load_state_dict(saved_state)
    row_map = build_row_map(old_vocab.keys, vocab.keys)
    migrated = migrate_optimizer_state(saved_opt, {table_index: row_map})
    old_moments = saved_opt["state"][table_index]
    moments = migrated["state"][table_index]
    assert torch.equal(moments["exp_avg"][:4], old_moments["exp_avg"])
    assert torch.equal(moments["exp_avg_sq"][:4], old_moments["exp_avg_sq"])
    assert (moments["exp_avg"][4:] == 0).all() and (moments["exp_avg_sq"][4:] == 0).all()
    assert torch.equal(moments["step"], old_moments["step"])
    assert saved_opt["state"][table_index]["exp_avg"].shape[0] == 4  # input untouched

    new_opt = torch.optim.AdamW(net.parameters(), lr=0.01, weight_decay=0.1)
    new_opt.load_state_dict(migrated)
    _train(net, new_opt, [1, 4, 5, 2])  # resumes without shape errors
    assert new_opt.state_dict()["state"][table_index]["exp_avg"].shape == (6, 4)

    reset = migrate_optimizer_state(saved_opt, {table_index: row_map}, reset=True)
    assert table_index not in reset["state"] and len(reset["state"]) == len(saved_opt["state"]) - 1
    with pytest.raises(ValueError, match="row map needs row"):
        migrate_optimizer_state(saved_opt, {table_index: torch.tensor([0, 1, 9])})
