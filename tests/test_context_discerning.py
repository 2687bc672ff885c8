"""Notebook 04's stage: task mixing by ratios, warm-up examples, config checks, and a tiny end-to-end run."""
import json
import os
import re
from collections import Counter

import numpy as np
import pytest

from conrec_lib.context import context_discerning as cd
from conrec_lib import hardware, runs
from conrec_lib.data import dataprep, loaders, splits
from conrec_lib.llm import tasks
from conrec_lib.llm.model import ModelConfig
from conrec_lib.sids.semantic_ids import SIDTable
from conrec_lib.llm.sft import SFTConfig

DAY = 86_400


@pytest.fixture(autouse=True)
def one_cpu_thread():
    """Small matrices: one torch thread is far faster than two on a shared CPU (hardware.cpu_threads)."""
    with hardware.cpu_threads(1):
        yield


def test_allocate_splits_by_largest_remainder():
    assert cd.allocate({"a": 1, "b": 1, "c": 1}, 10) == {"a": 4, "b": 3, "c": 3}
    assert cd.allocate({"a": 0.9, "b": 0.1}, 7) == {"a": 6, "b": 1}
    with pytest.raises(ValueError, match="non-negative"):
        cd.allocate({"a": -1, "b": 2}, 3)
    with pytest.raises(ValueError, match="at least one > 0"):
        cd.allocate({"a": 0}, 3)


def test_mix_respects_ratios_repeats_short_tasks_and_is_seeded():
    task_examples = {"a": [f"a{i}" for i in range(10)], "b": [f"b{i}" for i in range(3)], "c": ["c0"]}
    mixed = cd.mix(task_examples, {"a": 0.75, "b": 0.25}, n=8, seed=0)
    counts = Counter(e[0] for e in mixed)
    assert counts == {"a": 6, "b": 2}  # "c" has no ratio: unused
    assert len(set(e for e in mixed if e[0] == "a")) == 6  # drawn without replacement while there are enough
    many_b = [e for e in cd.mix(task_examples, {"b": 1.0}, n=7, seed=0)]
    assert sorted(Counter(many_b).values()) == [2, 2, 3]  # two whole passes, then one more draw
    assert mixed == cd.mix(task_examples, {"a": 0.75, "b": 0.25}, n=8, seed=0)
    assert mixed != cd.mix(task_examples, {"a": 0.75, "b": 0.25}, n=8, seed=1)
    assert [e[0] for e in mixed] != sorted(e[0] for e in mixed)  # tasks are interleaved, not blocked
    with pytest.raises(ValueError, match="not in tasks"):
        cd.mix(task_examples, {"z": 1.0}, n=2)
    with pytest.raises(ValueError, match="no examples"):
        cd.mix({"a": []}, {"a": 1.0}, n=2)


def test_warmup_prompts_show_only_the_window_of_negatives():
    ds = loaders.load("simulated", seed=0, scale="tiny")
    prepared = dataprep.PreparedData(ds, splits.make_split(ds), {})
    table = SIDTable(np.array([[i // 4, i % 4, 0] for i in range(ds.n_items)]), codebook_size=40, levels=2)
    examples = cd.warmup_examples(prepared, table, window_days=3, max_examples=40, seed=0, max_targets=1)
    inter = ds.interactions
    assert len(examples) == 40
    for e in examples:
        assert "clicked or bought" not in e.prompt
        recent = inter[(inter["user_id"] == e.user_id) & (inter["feedback"] == "negative")
                       & (inter["timestamp"] < e.cutoff_ts) & (inter["timestamp"] >= e.cutoff_ts - 3 * DAY)]
        shown = re.findall(r"<a_\d+><b_\d+><c_\d+>", e.prompt)
        assert shown == [table.sid_of(i) for i in recent["item_id"]][-20:]


def test_config_checks_ratios_and_variants():
    with pytest.raises(ValueError, match="ratios"):
        cd.ContextConfig(ratios={"translation": 1.0})
    with pytest.raises(ValueError, match="ratios"):
        cd.ContextConfig(ratios={"translation": 0.5, "recommendation": 0.5})
    cfg = cd.ContextConfig()
    assert cfg.variant_ratios("translation_only") == {"translation": 1.0}
    assert cfg.variant_ratios("with_alignment") == {"translation": 0.5, "alignment": 0.5}
    with pytest.raises(ValueError, match="variant"):
        cfg.variant_ratios("both")
    with pytest.raises(ValueError, match="would wreck it"):
        cd.ContextConfig(model=ModelConfig(name="smollm2-135m", lora=False))


def test_for_model_gives_pretrained_backbones_lora_and_a_small_lr():
    assert cd.ContextConfig.for_model("tiny") == cd.ContextConfig()
    cfg = cd.ContextConfig.for_model("smollm2-135m", n_train=100)
    assert cfg.model.name == "smollm2-135m" and cfg.model.lora and cfg.n_train == 100
    assert cfg.sft.lr == cfg.warmup.lr == 2e-4 and cfg.sft.max_steps == cd.ContextConfig().sft.max_steps


def test_tiny_stage_writes_the_metrics_and_an_adapter_notebook_05_can_load(tiny_run, tiny_model_cfg):
    run, model_cfg = tiny_run, tiny_model_cfg
    cfg = cd.ContextConfig(model=model_cfg, sft=SFTConfig(max_steps=3, batch_size=4, warmup_steps=1),
                           warmup=SFTConfig(max_steps=2, batch_size=4, warmup_steps=1), n_train=12,
                           n_warmup=8, n_align_eval=8, n_translation_eval=2, n_rec_eval=4)
    result = cd.train_context(cfg, run, progress=False)
    saved = runs.read_json(run.root / cd.STAGE / "metrics.json")
    for variant in cd.VARIANTS:
        assert {"align_acc", "translation_acc", "HR@20", "FHR@20", "CandAcc"} <= set(saved[variant])
        assert 0 <= saved[variant]["align_acc"] <= 1 and len(result.histories[variant]["context"]) >= 1
    forgetting = saved["forgetting"]
    assert forgetting["after_alignment"] == saved["with_alignment"]["align_acc"]
    if forgetting["after_alignment"] > 0:  # 8 questions: a tiny model may answer none right (rate: NaN)
        assert forgetting["rate"] == pytest.approx(1 - forgetting["after_warmup"] / forgetting["after_alignment"])
    assert saved["n_examples"]["align_eval"] == 8 and saved["chance_align_acc"] == 0.25
    bundle = cd.load_bundle(run)
    assert bundle.sid_token_ids == result.bundle.sid_token_ids
    assert all(isinstance(e, tasks.Example) for e in result.data.align_eval)


def test_with_steps_sets_both_phases_and_keeps_lr_warmup_below_the_run():
    cfg = cd.ContextConfig().with_steps(6, 4)
    assert (cfg.sft.max_steps, cfg.warmup.max_steps) == (6, 4)
    assert cfg.sft.warmup_steps < 6 and cfg.warmup.warmup_steps < 4
    assert cd.ContextConfig().with_steps(600, 1000) == cd.ContextConfig()


def test_warmup_examples_cover_the_windows_negatives_with_one_prompt_per_row():
    ds = loaders.load("simulated", seed=0, scale="tiny")
    prepared = dataprep.PreparedData(ds, splits.make_split(ds), {})
    table = SIDTable(np.array([[i // 4, i % 4, 0] for i in range(ds.n_items)]), codebook_size=40, levels=2)
    examples = cd.warmup_examples(prepared, table, max_examples=30, seed=0, max_targets=3)
    train = prepared.split.train
    by_row: dict = {}
    for e in examples:
        by_row.setdefault(e.row, []).append(e)
    assert len(by_row) == 30 and len(examples) > 30
    for row, group in by_row.items():
        r = train.iloc[row]
        window = [int(r["next_negative"])] + [int(i) for i in r["future_negatives"] if int(i) != int(r["next_negative"])]
        assert [e.target_item for e in group] == window[:3]
        assert len({e.prompt for e in group}) == 1  # one prompt: the user's history before the cutoff
    with pytest.raises(ValueError, match="max_targets"):
        cd.warmup_examples(prepared, table, max_targets=0)


def test_the_variants_side_by_side_give_the_numbers_of_one_process(tiny_run, tiny_model_cfg, monkeypatch, tmp_path):
    import shutil

    import torch
    from conrec_lib import hardware

    cfg = cd.ContextConfig(model=tiny_model_cfg, sft=SFTConfig(max_steps=3, batch_size=4, warmup_steps=1),
                           warmup=SFTConfig(max_steps=2, batch_size=4, warmup_steps=1), n_train=12,
                           n_warmup=8, n_align_eval=8, n_translation_eval=2, n_rec_eval=4)
    twin = runs.Run.at(tmp_path / "twin")
    shutil.copytree(tiny_run.root, twin.root)
    monkeypatch.setenv(hardware.WORKERS_ENV, "1")
    alone = cd.train_context(cfg, tiny_run, progress=False)
    monkeypatch.setenv(hardware.WORKERS_ENV, "2")
    assert hardware.job_workers(2, "cpu") == min(2, len(os.sched_getaffinity(0)))
    side = cd.train_context(cfg, twin, progress=False)

    def numbers(m):  # as text: NaN (no long-tail users in 4 rows) equals NaN there
        return json.dumps({v: {k: x for k, x in m[v].items() if "seconds" not in k} for v in cd.VARIANTS},
                          sort_keys=True)

    assert numbers(side.metrics) == numbers(alone.metrics)
    for a, b in zip(alone.bundle.model.state_dict().values(), side.bundle.model.state_dict().values()):
        assert torch.equal(a, b)

