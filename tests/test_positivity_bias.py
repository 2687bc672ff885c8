"""Notebook 03's stage: coverage on a hand-made log, attention shares, the baseline, and diagnose end to end."""
import math

import numpy as np
import pandas as pd
import pytest

from conrec_lib import runs
from conrec_lib.baselines import heuristics as baselines
from conrec_lib.data import dataset as data, dataprep, splits
from conrec_lib.diagnosis import attention, coverage
from conrec_lib.sids import item_tokenizer
from conrec_lib.llm import model, prompts, tasks
from conrec_lib.diagnosis import positivity_bias as pb
from conrec_lib.sids.embeddings import EmbedConfig
from conrec_lib.llm.model import ModelConfig
from conrec_lib.llm.prompts import PromptConfig
from conrec_lib.sids.quantizer import SIDConfig
from conrec_lib.llm.sft import SFTConfig
from conrec_lib.baselines.swing import SwingConfig

DAY = data.SECONDS_PER_DAY
TINY_MODEL = dict(device="cpu", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, lora=False)


def hand_made() -> dataprep.PreparedData:
    """Items 0..4 in categories A..E. Users 1-3 disliked items 1 and 2 before the test cutoff (day 7), so
    Swing links 1 -> 2. User 0, whose interests are A, B, C, D, dislikes item 0 (A) then 1 (B) in the test
    window: next covers A; the week covers A, B; plus Swing neighbours also C (item 2)."""
    rows = [(0, 3, 1 * DAY, "negative"), (0, 0, 8 * DAY, "negative"), (0, 1, 9 * DAY, "negative"),
            (1, 4, 13 * DAY, "positive")]
    rows += [(u, i, (1 + i) * DAY + u, "negative") for u in (1, 2, 3) for i in (1, 2)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "feedback"])
    inter = inter.assign(day=inter["timestamp"] // DAY, raw_label="x").sort_values("timestamp", kind="stable")
    items = pd.DataFrame({"item_id": range(5), "raw_id": list("01234"), "title": list("vwxyz"),
                          "category": list("ABCDE")})
    truth = pd.DataFrame({"user_id": 0, "rank": range(4), "facet": [f"category={c}" for c in "ABCD"],
                          "strength": [1.0, 0.9, 0.8, 0.7]})
    ds = data.Dataset("hand", inter.reset_index(drop=True)[list(data.INTERACTION_COLUMNS)], items, "", "",
                      ground_truth=truth)
    return dataprep.PreparedData(ds, splits.make_split(ds, splits.SplitConfig(train_cutoff_days=(2,))), {})


def test_coverage_rises_next_week_swing_on_a_hand_made_log():
    prepared = hand_made()
    table = coverage.interest_coverage(prepared, SwingConfig(min_co_users=3), k_neighbours=5)
    assert table.loc["next", "top1"] == table.loc["7d", "top1"] == table.loc["7d_swing", "top1"] == 1.0
    assert table["top4"].tolist() == [0.25, 0.5, 0.75]
    assert table["mean_items"].tolist() == [1.0, 2.0, 3.0]
    assert coverage.target_sets(prepared, SwingConfig(min_co_users=3), 5).week_swing == [{0, 1, 2}]
    # Swing only learns from negatives before the test cutoff: user 0's test-window dislikes of 0 and 1 are unseen
    seen = baselines.training_negatives(prepared)[["user_id", "item_id"]].to_numpy()
    assert set(map(tuple, seen)) == {(0, 3), (1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)}


def test_proxy_interests_rank_categories_by_negatives():
    prepared = hand_made()
    proxy = coverage.user_interests(prepared.dataset, 2, "proxy")
    assert proxy[0] == ["category=A", "category=B"]  # one negative each of A, B, D: ties by name
    assert proxy[1] == ["category=B", "category=C"] and 4 not in proxy  # user 4 does not exist
    assert coverage.user_interests(prepared.dataset, 1, "auto")[0] == ["category=A"]  # ground truth wins
    table = coverage.interest_coverage(prepared, SwingConfig(min_co_users=3), 5, interests="proxy")
    assert table.loc["next", "top1"] == 1.0 and table.loc["next", "top4"] == pytest.approx(1 / 3)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = runs.Run.at(tmp_path_factory.mktemp("bias"))
    dataprep.prepare(dataprep.DataConfig(scale="tiny"), run, progress=False)
    cfg = item_tokenizer.TokenizerConfig(embed=EmbedConfig(encoder="tfidf", dim=16),
                                         sid=SIDConfig(quantizer="rqkmeans", codebook_size=8), compare=False)
    item_tokenizer.tokenize(cfg, run, progress=False)
    return run


def test_coverage_is_monotone_on_the_simulator(tiny_run):
    table = coverage.interest_coverage(dataprep.load_prepared(tiny_run), SwingConfig(min_co_users=2), k_neighbours=5)
    for col in ("top1", "top4", "mean_items"):
        assert table.loc["next", col] <= table.loc["7d", col] <= table.loc["7d_swing", col]
    shares = table[["top1", "top4", "top1_random", "top4_random"]]
    assert shares.notna().all().all() and (shares >= 0).all().all() and (shares <= 1).all().all()


def test_attention_shares_are_shares_and_sections_are_found(tiny_run):
    prepared, tokenized = dataprep.load_prepared(tiny_run), item_tokenizer.load_sids(tiny_run)
    table = tokenized.sids.table
    examples = tasks.next_negative_examples(prepared, table, PromptConfig(include_positives=True), "test", 3)
    bundle = model.load_model(ModelConfig(**TINY_MODEL, sid_init="mean"), table.vocabulary(), [e.prompt for e in examples])
    ids, labels = attention.token_sections(bundle, examples[0].prompt)
    tokens = bundle.tokenizer.convert_ids_to_tokens(ids)
    positive_sids = [t for t, lab in zip(tokens, labels) if lab == 2 and t.startswith("<")]
    section = examples[0].prompt.split(prompts.NEGATIVE_HEADER)[0].split(prompts.POSITIVE_HEADER)[1]
    assert "".join(positive_sids) == "".join(section.split())
    share = attention.mean_attention_share(bundle, [e.prompt for e in examples])
    for key in ("negative", "positive", "other"):
        assert 0.0 <= share[key] <= 1.0
    assert share["negative"] + share["positive"] <= 1.0 + 1e-6
    assert math.isclose(share["negative"] + share["positive"] + share["other"], 1.0, rel_tol=1e-4)
    assert share["positive_tokens"] > 0 and share["negative_tokens"] > 0


def test_popularity_baseline_skips_the_users_own_past_negatives(tiny_run):
    prepared = dataprep.load_prepared(tiny_run)
    rows = prepared.split.test
    predictions = baselines.popularity_predictions(prepared, rows, k=20)
    seen = baselines.history_items(prepared, rows, "negative")
    assert all(len(p) == 20 == len(set(p)) and not set(p) & s for p, s in zip(predictions, seen))


def test_like_history_ranks_by_shared_first_code_then_popularity():
    prepared = hand_made()
    rows = prepared.split.test  # user 0 at day 7: past negative item 3 only
    codes = np.array([5, 6, 6, 5, 6])  # items 0 and 3 share a first code
    assert baselines.like_history_predictions(prepared, codes, rows, "negative", k=3) == [[0, 1, 2]]
    assert baselines.popularity_predictions(prepared, rows, k=2) == [[1, 2]]  # 3 disliked items 1, 2; item 3 excluded


def test_genrec_mix_keeps_every_positive_and_one_prompt_per_negative_row():
    neg = [tasks.Example(0, 1, f"n{i}", "<a_1>", 1, i) for i in range(100)]
    both = [tasks.Example(0, 1, f"p{i}", "<a_1>", 1, i) for i in range(100)]
    pos = [tasks.Example(0, 1, "q", "<a_2>", 2, 0)] * 7
    mix = pb.genrec_mix(neg, both, pos, seed=0)
    assert len(mix) == 107 and mix[-7:] == pos
    assert [e.row for e in mix[:100]] == list(range(100))
    assert 30 < sum(e.prompt.startswith("p") for e in mix[:100]) < 70


def test_for_model_gives_pretrained_backbones_lora_and_their_chat_template():
    cfg = pb.BiasConfig.for_model("smollm2-135m", max_test_examples=5)
    assert cfg.model.name == "smollm2-135m" and cfg.model.lora and cfg.prompt.chat_template
    assert (cfg.prior_steps, cfg.sft.lr, cfg.max_test_examples) == (0, 2e-4, 5)
    assert pb.BiasConfig.for_model("tiny") == pb.BiasConfig()


def test_config_errors_say_how_to_fix():
    with pytest.raises(ValueError, match="positive_task_share"):
        pb.BiasConfig(positive_task_share=1.0)
    with pytest.raises(ValueError, match="lora=True"):
        pb.BiasConfig(model=ModelConfig(name="smollm2-135m", lora=False))


def test_diagnose_runs_end_to_end_and_writes_metrics_last(tiny_run):
    cfg = pb.BiasConfig(model=ModelConfig(**TINY_MODEL),
                        sft=SFTConfig(max_steps=3, batch_size=4, warmup_steps=1, log_every=1), prior_steps=2,
                        max_train_examples=16, max_test_examples=6, attention_prompts=2,
                        swing=SwingConfig(min_co_users=2), swing_neighbours=3)
    result = pb.diagnose(cfg, tiny_run, progress=False)
    m = tiny_run.metrics(pb.STAGE)
    for key in ("coverage_top1", "coverage_top4"):
        assert set(m[key]) == {"next", "7d", "7d_swing"}
    for name in ("neg_only", "neg_pos", "genrec_neg_only", "genrec_neg_pos", *pb.BASELINES):
        assert {"HR@20", "FHR@20", "CandAcc", "positive_leakage", "history_positive_share",
                "aversion_share"} <= set(m[name])
        assert m[name]["n_examples"] == 6
        assert ("context_overlap" in m[name]) == (name not in pb.BASELINES)
    assert set(m["relative_drop"]) == {"HR@20", "FHR@20", "CandAcc"}
    assert set(m["attention"]) == {"neg_pos", "genrec"}
    assert m["n_train_examples"]["neg_only"] == 16 and m["n_train_examples"]["genrec"] == 32
    stage = tiny_run.root / pb.STAGE
    last = max(stage.rglob("*"), key=lambda p: p.stat().st_mtime_ns if p.is_file() else 0)
    assert last == stage / "metrics.json"  # written last: marks the stage done
    loaded = pb.load_result(tiny_run)
    assert loaded.metrics == m
    pd.testing.assert_frame_equal(loaded.predictions, result.predictions)
    assert set(loaded.predictions["evaluation"]) == {*pb.BASELINES, "neg_only", "neg_pos", "genrec_neg_only",
                                                     "genrec_neg_pos"}
    assert set(loaded.histories) == {"prior", *pb.VARIANTS}
    assert list(pb.results_table(m).index[:3]) == list(pb.BASELINES)
    assert set(loaded.user.predictions["model"]) == {"neg_only", "neg_pos", "genrec_neg_only", "genrec_neg_pos"}
    assert np.isclose(loaded.coverage.loc["7d", "top1"], result.coverage.loc["7d", "top1"])


def test_the_variants_side_by_side_give_the_numbers_and_files_of_one_process(tiny_run, monkeypatch, tmp_path):
    import json
    import shutil

    from conrec_lib import hardware

    assert sorted(pb.JOB_ORDER) == sorted(pb.VARIANTS)
    cfg = pb.BiasConfig(model=ModelConfig(**TINY_MODEL),
                        sft=SFTConfig(max_steps=3, batch_size=4, warmup_steps=1, log_every=1), prior_steps=2,
                        max_train_examples=16, max_test_examples=6, attention_prompts=2,
                        swing=SwingConfig(min_co_users=2), swing_neighbours=3)
    twin = runs.Run.at(tmp_path / "twin")
    shutil.copytree(tiny_run.root, twin.root)
    monkeypatch.setenv(hardware.WORKERS_ENV, "1")
    alone = pb.diagnose(cfg, tiny_run, progress=False)
    monkeypatch.setenv(hardware.WORKERS_ENV, "2")
    side = pb.diagnose(cfg, twin, progress=False)

    def numbers(m):  # as text: NaN equals NaN there
        return json.dumps({k: v for k, v in m.items() if k != "timings"}, sort_keys=True)

    assert numbers(side.metrics) == numbers(alone.metrics)
    assert list(side.metrics["timings"]) == list(alone.metrics["timings"])
    pd.testing.assert_frame_equal(side.predictions, alone.predictions)  # same rows in the same order
    assert set(side.histories) == set(alone.histories)


def test_drop_interval_is_paired_and_brackets_a_clear_drop():
    before = pd.DataFrame({"HR@20": [1.0, 1.0, 0.0, 1.0] * 25})
    assert pb.drop_interval(before, before)["HR@20"] == [0.0, 0.0]  # identical models: no drop, no spread
    after = pd.DataFrame({"HR@20": [0.0, 1.0, 0.0, 0.0] * 25})  # 75 hits -> 25 hits: a 2/3 drop
    lo, hi = pb.drop_interval(before, after, n_boot=500)["HR@20"]
    assert 0.4 < lo < 2 / 3 < hi < 0.9
