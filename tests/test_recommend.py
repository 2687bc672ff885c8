"""predict and evaluate_model on the tiny simulator with a tiny untrained model: valid ids, the metric keys,
and scoring with the embeddings reconstructed from the SID codebooks."""
import numpy as np
import pytest

from conrec_lib.data import histories
from conrec_lib import metrics
from conrec_lib.llm import model, recommend, tasks
from conrec_lib.llm.prompts import PromptConfig

KEYS = {"HR@20", "FHR@20", "LUF@20", "LIF@20", "CandAcc", "positive_leakage", "n_examples"}


@pytest.fixture(scope="module")
def setup(tiny_prepared):
    prepared, tokenized = tiny_prepared
    table = tokenized.sids.table
    corpus = [e.prompt for e in tasks.next_negative_examples(prepared, table, PromptConfig(), "train")[:20]]
    bundle = model.load_model(model.ModelConfig(device="cpu", sid_init="mean", hidden_size=32, num_layers=1, num_heads=2,
                                                intermediate_size=64), table.vocabulary(), corpus)
    return prepared, tokenized, bundle


def test_predict_returns_k_distinct_valid_items_best_first(setup):
    prepared, tokenized, bundle = setup
    table = tokenized.sids.table
    examples = tasks.next_negative_examples(prepared, table, PromptConfig(), "test", max_examples=4)
    trie = recommend.sid_trie(bundle, table)
    for k in (1, 7):
        predictions = recommend.predict(bundle, [e.prompt for e in examples], trie, table, k=k, batch_size=3)
        assert len(predictions) == 4
        for items in predictions:
            assert len(items) == k == len(set(items))
            assert all(0 <= i < prepared.dataset.n_items for i in items)


def test_evaluate_model_scores_the_test_rows_it_predicted(setup):
    prepared, tokenized, bundle = setup
    result = recommend.evaluate_model(bundle, prepared, tokenized, PromptConfig(include_positives=True),
                                      max_examples=6, seed=1)
    assert set(result.metrics) == KEYS and result.metrics["n_examples"] == 6
    assert len(result.predictions) == len(result.examples) == len(result.prompts) == 6
    assert all(len(p) == 20 == len(set(p)) for p in result.predictions)
    expected = tasks.next_negative_examples(prepared, tokenized.sids.table, PromptConfig(include_positives=True),
                                            "test", max_examples=6, seed=1)
    assert result.prompts == [e.prompt for e in expected]
    assert result.examples["user_id"].tolist() == [e.user_id for e in expected]
    for key in KEYS - {"n_examples", "LUF@20", "LIF@20"}:
        assert 0.0 <= result.metrics[key] <= 1.0


def test_score_uses_the_embeddings_reconstructed_from_the_codebooks(setup):
    prepared, tokenized, _ = setup
    rows = prepared.split.test
    perfect = [[int(i)] for i in rows["next_negative"]]
    scored = recommend.score(perfect, rows, prepared, tokenized, k=20)
    assert scored["HR@20"] == 1.0 and scored["FHR@20"] == 1.0
    rebuilt = recommend.reconstructed_embeddings(tokenized)
    assert rebuilt.shape[0] == prepared.dataset.n_items
    assert not np.allclose(rebuilt, tokenized.item_embeddings[:, :rebuilt.shape[1]])
    assert scored == metrics.evaluate_rankings(perfect, rows, rebuilt, prepared.split.longtail_items, 20)
    assert scored["CandAcc"] > 0.5  # the true negative scores cosine 1 with itself (ties share the credit)


def test_deployment_predict_sets_reads_only_history_before_the_cutoff(setup):
    from conrec_lib.evaluation import deployment

    prepared, tokenized, bundle = setup
    table, inter = tokenized.sids.table, prepared.dataset.interactions
    end = int(inter["timestamp"].max()) + 1
    users = [0, 1, 2]
    sets = deployment.predict_sets(bundle, prepared, table, PromptConfig(include_positives=True), users, end, k=5)
    assert len(sets) == 3 and all(len(s) == len(set(s)) == 5 for s in sets)
    assert sets == deployment.predict_sets(bundle, prepared, table, PromptConfig(include_positives=True), users, end,
                                           k=5)  # deterministic
    index = histories.FeedbackIndex.of(prepared)
    first = int(inter["timestamp"].min())  # nothing before it: the prompt has empty sections
    empty = tasks.render_prompt(index, prepared, table, PromptConfig(include_positives=True), 0, first)
    trie = recommend.sid_trie(bundle, table)
    assert deployment.predict_sets(bundle, prepared, table, PromptConfig(include_positives=True), [0], first, k=5) \
        == recommend.predict(bundle, [empty], trie, table, k=5)


def test_predict_never_returns_an_excluded_item_and_still_fills_k(setup):
    prepared, tokenized, bundle = setup
    table = tokenized.sids.table
    examples = tasks.next_negative_examples(prepared, table, PromptConfig(), "test", max_examples=3)
    trie = recommend.sid_trie(bundle, table)
    prompts = [e.prompt for e in examples]
    free = recommend.predict(bundle, prompts, trie, table, k=10)
    banned = [set(p[:5]) for p in free]  # the model's own favourites
    kept = recommend.predict(bundle, prompts, trie, table, k=10, exclude=banned)
    for items, b in zip(kept, banned):
        assert len(items) == 10 and not set(items) & b


def test_evaluate_model_excludes_the_users_past_negatives(setup):
    prepared, tokenized, bundle = setup
    result = recommend.evaluate_model(bundle, prepared, tokenized, PromptConfig(), max_examples=8)
    past = recommend.excluded_items(prepared, result.examples)
    assert any(past) and all(not set(p) & s for p, s in zip(result.predictions, past))


def test_predict_searches_beam_width_beams_since_a_narrow_search_misses_likely_items(setup, monkeypatch):
    prepared, tokenized, bundle = setup
    table = tokenized.sids.table
    examples = tasks.next_negative_examples(prepared, table, PromptConfig(), "test", max_examples=3)
    prompts, trie = [e.prompt for e in examples], recommend.sid_trie(bundle, table)
    widths, search = [], recommend.decoding.beam_search

    def spy(*args, num_beams, **kwargs):
        widths.append(num_beams)
        return search(*args, num_beams=num_beams, **kwargs)

    monkeypatch.setattr(recommend.decoding, "beam_search", spy)
    recommend.predict(bundle, prompts, trie, table, k=5)
    recommend.predict(bundle, prompts, trie, table, k=5, num_beams=5)
    recommend.predict(bundle, prompts, trie, table, k=recommend.BEAM_WIDTH + 3)
    assert widths == [recommend.BEAM_WIDTH, 5, recommend.BEAM_WIDTH + 3]
    monkeypatch.setattr(recommend.decoding, "beam_search", search)
    narrow = search(bundle.model, bundle.tokenizer, prompts, trie, num_beams=5, top_k=5)
    wide = search(bundle.model, bundle.tokenizer, prompts, trie, num_beams=len(trie), top_k=5)  # exhaustive
    for n, w in zip(narrow, wide):  # an exhaustive search's top 5 are at least as likely as a narrow one's
        assert sum(s.score for s in w) >= sum(s.score for s in n) - 1e-5
