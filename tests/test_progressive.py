"""Notebook 05's stage: config checks, the curriculum's prompts, and a tiny end-to-end run writing metrics.json."""
import pytest

from conrec_lib.context import context_discerning as cd
from conrec_lib import hardware, runs
from conrec_lib.rl import progressive
from conrec_lib.rl.grpo import GRPOConfig
from conrec_lib.llm.sft import SFTConfig


@pytest.fixture(autouse=True)
def one_cpu_thread():
    with hardware.cpu_threads(1):
        yield


def test_curriculum_prompts_widen_from_recent_negatives_to_positives():
    first, second, third = progressive.ProgressiveConfig(recent_days=3, max_positives=7).prompts()
    assert (first.window_days, first.include_positives) == (3, False)
    assert (second.window_days, second.include_positives) == (None, False)
    assert (third.window_days, third.include_positives, third.max_positives) == (None, True, 7)


def test_arms_and_config_errors():
    cfg = progressive.ProgressiveConfig(reward_variants=("hit",), plain_grpo=False)
    assert cfg.arms() == ["progressive_next_negative", "progressive_negatives", "conrec", "hit"]
    assert [cfg.reward_of(a) for a in cfg.arms()] == ["next_negative_hit", "negatives_only", "conrec", "hit"]
    with pytest.raises(ValueError, match="one value per curriculum stage"):
        progressive.ProgressiveConfig(stage_steps=(1, 2))
    with pytest.raises(ValueError, match="reward_variants"):
        progressive.ProgressiveConfig(reward_variants=("ndcg",))
    with pytest.raises(ValueError, match="stage_eval_arms"):
        progressive.ProgressiveConfig(stage_eval_arms=("plain_grpo",), plain_grpo=False)
    with pytest.raises(ValueError, match="dose_positives"):
        progressive.ProgressiveConfig(dose_positives=(0, -5))


def test_dose_table_measures_each_dose_against_none():
    rows = [{"positives": k, "HR@20": 0.1, "FHR@20": f, "LUF@20": 0.0, "LIF@20": 0.0, "CandAcc": 0.1, "n_rows": 9}
            for k, f in ((0, 0.30), (5, 0.29), (20, 0.25))]
    table = progressive.dose_table({"positives_dose": rows})
    assert table["FHR@20 vs none"].round(3).tolist() == [0.0, -0.01, -0.05]
    assert "95% CI" not in table  # metrics written before the dose had intervals
    rows[1]["fhr_vs_none_ci95"], rows[2]["fhr_vs_none_ci95"] = [-0.03, 0.01], [-0.08, -0.02]
    assert progressive.dose_table({"positives_dose": rows})["95% CI"].tolist() == [
        "", "[-0.030, +0.010]", "[-0.080, -0.020]"]
    assert progressive.dose_table({}).empty


def test_stage_record_notes_a_stage_that_loses_ground(capsys):
    stage = progressive.CurriculumStage("all negatives", None, GRPOConfig(max_steps=3, beta=0.1), [])
    metrics = {"HR@20": 0.1, "FHR@20": 0.2, "LUF@20": 0.0, "LIF@20": 0.0, "CandAcc": 0.3}
    kept = progressive.stage_record(1, stage, metrics, {"FHR@20": 0.2})
    lost = progressive.stage_record(1, stage, metrics, {"FHR@20": 0.25})
    assert not kept["lost_ground"] and "note" not in kept
    assert lost["lost_ground"] and "lost ground" in lost["note"] and "lost ground" in capsys.readouterr().out


def test_tiny_stage_runs_end_to_end_and_writes_metrics_last(tiny_run, tiny_model_cfg):
    run, model_cfg = tiny_run, tiny_model_cfg
    cd.train_context(cd.ContextConfig(model=model_cfg, sft=SFTConfig(max_steps=2, batch_size=4, warmup_steps=1),
                                      warmup=SFTConfig(max_steps=2, batch_size=4, warmup_steps=1), n_train=8,
                                      n_warmup=8, n_align_eval=8, n_translation_eval=2, n_rec_eval=4), run,
                     progress=False)
    cfg = progressive.ProgressiveConfig(stage_steps=(1, 1, 1), grpo=GRPOConfig(num_generations=2, prompts_per_batch=2),
                                        n_train=6, reward_variants=("hit",), n_rec_eval=4, dose_positives=(0, 2),
                                        n_dose_eval=4)
    result = progressive.train_progressive(cfg, run, progress=False)
    saved = runs.read_json(run.root / progressive.STAGE / "metrics.json")
    ablation = {row.pop("row"): row for row in saved["ablation"]}
    assert list(ablation) == ["translation only", "+ item-level alignment", "+ progressive GRPO",
                                       "+ future-negative reward", "+ positive penalty"]
    assert all(set(cd.REC_KEYS) == set(row) - {"diagnostics"} for row in ablation.values())
    assert ablation["+ item-level alignment"]["FHR@20"] == run.metrics(cd.STAGE)["with_alignment"]["FHR@20"]
    assert set(saved["reward_variants"]) == {"negatives_only", "conrec", "hit"}
    assert set(saved["warmup_last_prompt"]) == set(cd.REC_KEYS) | {"diagnostics"}
    for arm in ("conrec", "plain_grpo"):
        f = saved["forgetting"][arm]
        assert f["after_alignment"] == run.metrics(cd.STAGE)["with_alignment"]["align_acc"]
        assert f["rate"] is None or f["rate"] == pytest.approx(1 - f["after_grpo"] / f["after_alignment"])
    assert [s["stage"] for s in saved["stages"]["conrec"]] == [1, 2, 3] and "FHR@20" in saved["stages"]["conrec"][0]
    assert "FHR@20" not in saved["stages"]["hit"][0]  # only stage_eval_arms are evaluated mid-curriculum
    assert len(result.histories["conrec"]) == 3 and result.histories["conrec"]["stage"].tolist() == [1, 2, 3]
    assert len(saved["example_user"]["before"]) == len(saved["example_user"]["after"]) == 20
    assert saved["seconds"] > 0
    # the dose: no positives is notebook 04's prompt, so the same model on the same rows scores as 04 measured it
    assert [(r["positives"], r["n_rows"]) for r in saved["positives_dose"]] == [(0, 4), (2, 4)]
    assert saved["positives_dose"][0]["FHR@20"] == run.metrics(cd.STAGE)["with_alignment"]["FHR@20"]
    lo, hi = saved["positives_dose"][1]["fhr_vs_none_ci95"]  # paired over the same 4 rows
    change = saved["positives_dose"][1]["FHR@20"] - saved["positives_dose"][0]["FHR@20"]
    assert "fhr_vs_none_ci95" not in saved["positives_dose"][0] and lo <= change <= hi
    assert progressive.load_bundle(run).sid_token_ids == result.bundle.sid_token_ids
    # what notebook 05 shows, read from the same metrics
    saved = runs.read_json(run.root / progressive.STAGE / "metrics.json")  # (the rows above lost their "row")
    table = progressive.ablation_table(saved)
    assert table.loc["+ positive penalty", "ours FHR@20"] == ablation["+ positive penalty"]["FHR@20"]
    assert table.loc["translation only", "paper CandAcc"] == 0.276
    assert list(progressive.stages_table(saved).index) == [1, 2, 3]
    assert set(progressive.variants_table(saved).index) == {"negatives_only", "conrec", "hit"}
    assert progressive.forgetting_table(saved).loc["plain_grpo", "paper_rate"] == 0.285
    ctx = progressive.build_context(cfg, run)
    demo = progressive.reward_demo(ctx, ctx.stage_examples[-1][0], cfg)
    assert demo.loc["next negative", "next_negative_hit"] == 1.0 and demo.loc["next negative", "hit"] == 1.0
    assert demo.loc["next negative", "negatives_only"] == pytest.approx(1.0)
    assert (demo.loc["least similar item", "negatives_only"] <= demo["negatives_only"]).all()
    assert len(progressive.example_table(saved["example_user"], ctx, top=5)) == 5
    assert progressive.ProgressiveConfig.for_run(run).grpo == progressive.ProgressiveConfig().grpo  # tiny: defaults
    assert progressive.ProgressiveConfig.for_run(run, learning_rate=1e-3).grpo.learning_rate == 1e-3


def test_curriculum_table_lists_the_three_stages():
    table = progressive.curriculum_table(progressive.ProgressiveConfig(stage_steps=(1, 2, 3)))
    assert table["steps"].tolist() == [1, 2, 3] and table["positives"].tolist() == [False, False, True]
    assert table["window_days"].iloc[0] == 3 and set(table["G"]) == {8}


def test_example_row_prefers_a_prompt_with_history():
    rows = [{"prompt": "nothing"}, {"prompt": "<a_1><b_2> <a_3><b_4>"}]
    ctx = progressive.Context(None, None, None, [rows] * 3, [])
    assert progressive.example_row(ctx, stage=3, min_items=2) is rows[1]
    assert progressive.example_row(ctx, stage=1, min_items=5) is rows[0]  # none long enough: the first


def test_the_arms_side_by_side_give_the_numbers_of_one_process(tiny_run, tiny_model_cfg, monkeypatch, tmp_path):
    import json
    import shutil

    import torch
    from conrec_lib import hardware

    monkeypatch.setenv(hardware.WORKERS_ENV, "1")
    cd.train_context(cd.ContextConfig(model=tiny_model_cfg, sft=SFTConfig(max_steps=2, batch_size=4, warmup_steps=1),
                                      warmup=SFTConfig(max_steps=2, batch_size=4, warmup_steps=1), n_train=8,
                                      n_warmup=8, n_align_eval=8, n_translation_eval=2, n_rec_eval=4), tiny_run,
                     progress=False)
    twin = runs.Run.at(tmp_path / "twin")
    shutil.copytree(tiny_run.root, twin.root)
    cfg = progressive.ProgressiveConfig(stage_steps=(1, 1, 1), grpo=GRPOConfig(num_generations=2, prompts_per_batch=2),
                                        n_train=6, reward_variants=("hit",), n_rec_eval=4, dose_positives=(0, 2),
                                        n_dose_eval=4)
    alone = progressive.train_progressive(cfg, tiny_run, progress=False)
    monkeypatch.setenv(hardware.WORKERS_ENV, "2")
    side = progressive.train_progressive(cfg, twin, progress=False)

    def numbers(m):  # as text: NaN equals NaN there
        return json.dumps({k: v for k, v in m.items() if k != "seconds"}, sort_keys=True)

    assert numbers(side.metrics) == numbers(alone.metrics)
    for a, b in zip(alone.bundle.model.state_dict().values(), side.bundle.model.state_dict().values()):
        assert torch.equal(a, b)
