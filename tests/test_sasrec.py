"""The SASRec baseline: it learns a hand-made cycle, its loss falls, and it only outputs valid, unseen items."""
import pytest
import torch

from conrec_lib.baselines import heuristics as baselines, sasrec
from conrec_lib.llm import recommend
from conrec_lib.baselines.sasrec import SASRecConfig

TINY = dict(max_len=8, dim=16, num_layers=1, num_heads=2, dropout=0.0, batch_size=8, lr=1e-2)


def test_windows_make_every_item_a_target_once():
    pieces = sasrec.windows(list(range(7)), max_len=3)
    targets = [t for p in pieces for t in p[1:]]
    assert targets == [i + sasrec.OFFSET for i in range(7)] and all(len(p) <= 4 for p in pieces)
    assert pieces[0][0] == sasrec.BOS


def test_sasrec_learns_a_cycle_and_its_loss_falls():
    cycle = [[(s + t) % 5 for t in range(12)] for s in range(5)]  # 0 1 2 3 4 0 1 ... from every start
    model, history = sasrec.train_model(cycle, n_items=6, cfg=SASRecConfig(epochs=40, **TINY))
    assert all(map(torch.isfinite, map(torch.tensor, history))) and history[-1] < 0.5 * history[0]
    top = sasrec.top_items(model, [[0, 1, 2], [2, 3]], k=2, max_len=8)
    assert [t[0] for t in top] == [3, 4] and not {0, 1, 2} & set(top[0]) and not {2, 3} & set(top[1])
    again, history2 = sasrec.train_model(cycle, n_items=6, cfg=SASRecConfig(epochs=40, **TINY))
    assert history2 == history  # the seed fixes weights, order and dropout


def test_empty_training_data_is_an_error():
    with pytest.raises(ValueError, match="no training sequence"):
        sasrec.train_model([[]], n_items=3, cfg=SASRecConfig(epochs=1, **TINY))


def test_sasrec_baseline_outputs_valid_unseen_items_through_recommend_score(tiny_prepared):
    prepared, tokenized = tiny_prepared
    model = sasrec.SASRecBaseline.fit(prepared, tokenized, SASRecConfig(epochs=3))
    assert model.history[-1] < model.history[0]
    rows = prepared.split.test
    predictions = model.recommend(rows, k=20)
    seen = baselines.history_items(prepared, rows, "negative")
    n_items = prepared.dataset.n_items
    assert all(len(p) == 20 == len(set(p)) and all(0 <= i < n_items for i in p) and not set(p) & s
               for p, s in zip(predictions, seen))
    scores = recommend.score(predictions, rows, prepared, tokenized)
    assert 0.0 <= scores["HR@20"] <= scores["FHR@20"] <= 1.0


def test_config_errors_say_how_to_fix():
    with pytest.raises(ValueError, match="num_heads"):
        SASRecConfig(dim=30, num_heads=4)
    with pytest.raises(ValueError, match="epochs"):
        SASRecConfig(epochs=0)
