"""The LLM diagnostics: exact valid-SID mass, per-item NLL, the shuffled-history context test, the verdict."""
import math

import numpy as np
import pytest

from conrec_lib.llm import diagnostics as diag, model, recommend, sft, tasks
from conrec_lib.llm.prompts import PromptConfig


@pytest.fixture(scope="module")
def setup(tiny_prepared):
    prepared, tokenized = tiny_prepared
    table = tokenized.sids.table
    examples = tasks.next_negative_examples(prepared, table, PromptConfig(), "train")
    bundle = model.load_model(model.ModelConfig(device="cpu", lora=False, sid_init="mean", hidden_size=32, num_layers=1, num_heads=2,
                                                intermediate_size=64), table.vocabulary(),
                              [e.prompt for e in examples[:20]])
    return prepared, tokenized, bundle, examples


def test_valid_mass_is_exact_sum_over_all_sids(setup):
    prepared, tokenized, bundle, examples = setup
    table = tokenized.sids.table
    prompt = examples[0].prompt
    mass, shares = diag.valid_mass(bundle, prompt, recommend.sid_trie(bundle, table))
    brute = np.exp(-diag.item_nll(bundle, [prompt] * len(table.strings), table.strings)).sum()
    assert mass == pytest.approx(brute, rel=1e-4)
    assert len(shares) == len(table.strings[0].split("><")) and all(0 < s <= 1 for s in shares)
    assert mass == pytest.approx(np.prod(shares), rel=1e-4)  # the levels' shares multiply to the whole


def test_temperature_divides_the_logits(setup):
    prepared, tokenized, bundle, examples = setup
    p, c = [e.prompt for e in examples[:4]], [e.completion for e in examples[:4]]
    assert np.allclose(diag.item_nll(bundle, p, c, temperature=1.0), diag.item_nll(bundle, p, c))
    hot, cold = diag.item_nll(bundle, p, c, temperature=50.0), diag.item_nll(bundle, p, c, temperature=0.5)
    assert not np.allclose(cold, diag.item_nll(bundle, p, c))
    # a very high temperature flattens the softmax: each SID token costs about log(vocabulary size)
    n_tokens = np.array([len(bundle.tokenizer(x, add_special_tokens=False)["input_ids"]) for x in c])
    assert np.allclose(hot, n_tokens * math.log(len(bundle.tokenizer)), rtol=0.1)
    with pytest.raises(ValueError, match="temperature=0"):
        diag.item_nll(bundle, p, c, temperature=0)


def test_training_raises_valid_mass_and_lowers_nll(setup):
    prepared, tokenized, _, examples = setup
    table = tokenized.sids.table
    bundle = model.load_model(model.ModelConfig(device="cpu", lora=False, sid_init="mean", hidden_size=32, num_layers=1, num_heads=2,
                                                intermediate_size=64), table.vocabulary(),
                              [e.prompt for e in examples[:20]])
    trie = recommend.sid_trie(bundle, table)
    p, c = [e.prompt for e in examples[:16]], [e.completion for e in examples[:16]]
    before = diag.valid_mass(bundle, p[0], trie)[0], diag.item_nll(bundle, p, c).mean()
    sft.train(bundle, tasks.pairs(examples), sft.SFTConfig(max_steps=60, lr=3e-3, warmup_steps=5), progress=False)
    after = diag.valid_mass(bundle, p[0], trie)[0], diag.item_nll(bundle, p, c).mean()
    assert after[0] > before[0] and after[1] < before[1]


def test_shuffled_prompts_never_keep_a_row_in_place():
    prompts = [f"p{i}" for i in range(7)]
    out = diag.shuffled(prompts, seed=3)
    assert sorted(out) == sorted(prompts) and all(a != b for a, b in zip(out, prompts))


def test_paired_bootstrap_of_identical_rows_is_zero_and_of_a_sure_gain_is_positive():
    from conrec_lib import metrics
    a = np.array([1.0, 0.0, 1.0, 1.0])
    assert metrics.paired_bootstrap(a, a) == (0.0, 0.0)
    lo, hi = metrics.paired_bootstrap(np.ones(50), np.zeros(50))
    assert lo == hi == 1.0
    lo, hi = metrics.paired_ratio_bootstrap(np.r_[np.ones(30), np.zeros(30)], np.r_[np.ones(15), np.zeros(45)])
    assert lo < 2.0 < hi


def test_verdict_names_each_failed_check():
    d = diag.Diagnostics(nll_per_item=9.0, nll_uniform=7.6, valid_sid_mass=0.03, valid_share_by_level=[1, 0.1],
                         distinct_items=30, fhr_own=0.2, fhr_shuffled=0.2, context_gain=0.0,
                         context_gain_ci95=(-0.01, 0.01), n_rows=100)
    words = " ".join(d.verdict())
    assert "not below a uniform guess" in words and "3% of its probability" in words and "includes 0" in words
    ok = diag.Diagnostics(7.0, 7.6, 0.95, [1.0, 0.95], 300, 0.3, 0.2, 0.1, (0.05, 0.15), 100)
    assert ok.verdict() == [] and ok.as_dict()["passes"] is True


def test_diagnose_on_an_evaluated_model(setup):
    prepared, tokenized, bundle, _ = setup
    result = recommend.evaluate_model(bundle, prepared, tokenized, PromptConfig(), max_examples=6)
    d = diag.diagnose(bundle, prepared, tokenized, result, n_mass_prompts=2)
    assert d.n_rows == 6 and d.nll_uniform == pytest.approx(math.log(prepared.dataset.n_items))
    assert 0 < d.valid_sid_mass <= 1 and d.distinct_items >= 20 and d.context_gain == d.fhr_own - d.fhr_shuffled
    assert set(diag.table({"m": d}).columns) >= {"valid-SID mass", "context gain", "passes"}
