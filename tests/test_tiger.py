"""The TIGER baseline: constrained beam search returns only valid SIDs, it learns a cycle, and it goes
through recommend.score."""
import numpy as np
import pytest

from conrec_lib.baselines import heuristics as baselines, sasrec, tiger
from conrec_lib.llm import recommend
from conrec_lib.llm.decoding import SIDTrie
from conrec_lib.baselines.tiger import TIGERConfig

# 5 items, SIDs of 2 levels: level a codes 0..2 (tokens 0..2), level b codes 0..1 (tokens 3..4)
CODES = np.array([[0, 0], [0, 1], [1, 0], [2, 0], [2, 1]])


def cycle_model(epochs: int = 60):
    """SASRec over the code tokens of the cycle 0 1 2 3 4 0 1 ... (what TIGERBaseline trains)."""
    tokens = tiger.code_tokens(CODES)
    sequences = [tiger.flatten([(s + t) % 5 for t in range(10)], tokens) for s in range(5)]
    cfg = TIGERConfig(max_items=3, dim=16, num_layers=1, dropout=0.0, epochs=epochs, batch_size=8, lr=1e-2)
    model, history = sasrec.train_model(sequences, int(tokens.max()) + 1, cfg.network(tokens.shape[1]))
    return tokens, model, history


def test_context_keeps_whole_sids_aligned_with_training_pieces():
    tokens = tiger.code_tokens(CODES)
    assert tiger.context([0], tokens, max_items=3) == [sasrec.BOS, 0 + sasrec.OFFSET, 3 + sasrec.OFFSET]
    long = tiger.context([0, 1, 2, 3, 4], tokens, max_items=2)
    assert len(long) == 1 + 2 * 2 and long[1:] == [t + sasrec.OFFSET for t in tiger.flatten([3, 4], tokens)]


def test_beam_search_returns_only_valid_distinct_sids_and_learns_the_cycle():
    tokens, model, history = cycle_model()
    assert np.isfinite(history).all() and history[-1] < 0.5 * history[0]
    trie = SIDTrie(tokens.tolist())
    prefixes = [tiger.context(h, tokens, 3) for h in ([0, 1], [3], [])]
    found = tiger.beam_search(model, trie, prefixes, width=4)
    valid = {tuple(r) for r in tokens.tolist()}
    assert all(len(f) == 4 and len(set(f)) == 4 and set(f) <= valid for f in found)
    item_of = {tuple(r): i for i, r in enumerate(tokens.tolist())}
    assert [item_of[f[0]] for f in found[:2]] == [2, 4]  # the next item of the cycle


def test_beam_search_never_returns_more_than_the_catalogue():
    tokens, model, _ = cycle_model(epochs=1)
    found = tiger.beam_search(model, SIDTrie(tokens.tolist()), [[sasrec.BOS]], width=50)
    assert sorted(found[0]) == sorted(tuple(r) for r in tokens.tolist())  # all 5 SIDs, each once


def test_beam_search_masks_the_excluded_sids_and_still_fills_the_width():
    tokens, model, _ = cycle_model()
    trie, valid = SIDTrie(tokens.tolist()), [tuple(r) for r in tokens.tolist()]
    prefixes = [tiger.context([0, 1], tokens, 3)]
    best = tiger.beam_search(model, trie, prefixes, width=2)[0]
    found = tiger.beam_search(model, trie, prefixes, width=2, exclude=[[best[0]]])[0]
    assert best[0] not in found and len(found) == 2 and found[0] == best[1] and set(found) <= set(valid)


def test_tiger_baseline_outputs_valid_unseen_items_through_recommend_score(tiny_prepared):
    prepared, tokenized = tiny_prepared
    model = tiger.TIGERBaseline.fit(prepared, tokenized, TIGERConfig(epochs=3, dim=32))
    assert np.isfinite(model.history).all() and model.history[-1] < model.history[0]
    rows = prepared.split.test.iloc[:40]
    predictions = model.recommend(rows, k=20)
    seen = baselines.history_items(prepared, rows, "negative")
    # past negatives are masked inside the search (the rule of every model), so a full top-20 always remains
    assert all(len(p) == len(set(p)) == 20 and not set(p) & s for p, s in zip(predictions, seen))
    assert all(0 <= i < prepared.dataset.n_items for p in predictions for i in p)
    scores = recommend.score(predictions, rows.reset_index(drop=True), prepared, tokenized)
    assert 0.0 <= scores["HR@20"] <= scores["FHR@20"] <= 1.0


def test_config_errors_say_how_to_fix():
    with pytest.raises(ValueError, match="num_beams"):
        TIGERConfig(num_beams=0)
    with pytest.raises(ValueError, match="max_items"):
        TIGERConfig(max_items=0)
