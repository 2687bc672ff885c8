"""benchmarks/headline_seeds.py without running the chain: what it reads from a run folder and how it summarises."""
import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "headline_seeds.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("headline_seeds", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(root: Path, seed: int, conrec: float, ratio_ci: list) -> Path:
    head = {"n_rows": 10, "best_baseline": "most_disliked", "best_baseline_fhr": 0.3, "conrec_fhr": conrec,
            "ratio": conrec / 0.3, "ratio_ci95": ratio_ci, "difference_ci95": [-0.1, 0.1], "most_disliked_fhr": 0.3,
            "oracle_fhr": 0.5, "gap_closed": (conrec - 0.3) / 0.2, "own_negatives_fhr": 0.4, "context_gain": 0.01,
            "context_gain_ci95": [-0.01, 0.03], "valid_sid_mass": 0.8, "nll_per_item": 8.4, "nll_uniform": 7.6}
    run = root / f"smoke-seed{seed}"
    (run / "06_evaluation").mkdir(parents=True)
    results = {"simulator (tutorial run)": {"warm-up (04)": {"FHR@20": conrec + 0.02}}}
    (run / "06_evaluation" / "metrics.json").write_text(json.dumps({"headline": head, "results": results}))
    return run


def test_collect_only_reads_each_seed_and_summarises_mean_and_spread(bench, tmp_path):
    fake_run(tmp_path, 0, 0.28, [0.9, 1.05])
    fake_run(tmp_path, 1, 0.36, [1.05, 1.3])
    out = tmp_path / "result.json"
    result = bench.main(["--seeds", "0", "1", "--profile", "smoke", "--run-root", str(tmp_path), "--collect-only",
                         "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["per_seed"]["1"]["warmup_fhr"] == pytest.approx(0.38)
    s = result["summary"]
    assert s["conrec_fhr"]["mean"] == pytest.approx(0.32) and s["conrec_fhr"]["std"] == pytest.approx(0.0566, abs=1e-4)
    assert s["beats_best_baseline"] == 1  # only seed 1's ratio interval lies above 1
    assert s["seconds"] is None  # nothing was run


def test_another_world_has_its_own_run_folders_and_collects_its_findings(bench, tmp_path):
    run = fake_run(tmp_path, 0, 0.28, [0.9, 1.05])
    run = run.rename(tmp_path / bench.run_name("smoke", 0, "misleading"))
    assert run.name == "misleading-smoke-seed0" and bench.run_name("smoke", 0, "default") == "smoke-seed0"
    dose = [{"positives": 0, "FHR@20": 0.35, "n_rows": 9, "HR@20": 0.1},
            {"positives": 5, "FHR@20": 0.28, "n_rows": 9, "fhr_vs_none_ci95": [-0.09, -0.05]}]
    (run / "05_progressive_grpo").mkdir()
    (run / "05_progressive_grpo" / "metrics.json").write_text(json.dumps({"positives_dose": dose}))
    out = tmp_path / "result.json"
    result = bench.main(["--seeds", "0", "--profile", "smoke", "--run-root", str(tmp_path), "--collect-only",
                         "--world", "misleading", "--out", str(out)])
    seed = result["per_seed"]["0"]
    assert result["world"] == "misleading"
    assert seed["positives_dose"] == [{"positives": 0, "FHR@20": 0.35, "fhr_vs_none_ci95": None, "n_rows": 9},
                                      {"positives": 5, "FHR@20": 0.28, "fhr_vs_none_ci95": [-0.09, -0.05],
                                       "n_rows": 9}]
    assert seed["lcrec_positives_fhr_drop"] is None  # notebook 03 did not run in this fake folder
    with pytest.raises(SystemExit):
        bench.main(["--world", "nope", "--collect-only", "--run-root", str(tmp_path)])


def test_a_missing_run_folder_names_the_folder_and_what_to_do(bench, tmp_path):
    with pytest.raises(FileNotFoundError, match="notebook 06 has not finished.*without --collect-only"):
        bench.main(["--seeds", "5", "--profile", "smoke", "--run-root", str(tmp_path), "--collect-only",
                    "--out", str(tmp_path / "r.json")])


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPT.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_baseline_tuning_scores_each_setting_around_its_base_as_notebook_06_does(tiny_run, tmp_path):
    from conrec_lib.baselines import sasrec
    from conrec_lib.data import dataprep
    from conrec_lib.data.histories import split_rows
    from conrec_lib.llm import recommend
    from conrec_lib.sids import item_tokenizer

    tuning = load_script("baseline_tuning")
    out = tmp_path / "tuning.json"
    result = tuning.main(["--run-dir", str(tiny_run.root), "--small", "--max-rows", "8", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert [(r["model"], r["changes"]) for r in result["settings"]] == [
        ("sasrec", {}), ("sasrec", {"epochs": 1}), ("tiger", {}), ("tiger", {"epochs": 1})]
    assert result["n_rows"] == 8 and all(0 <= r["FHR@20"] <= 1 for r in result["settings"])
    assert result["best"]["sasrec"]["FHR@20"] == max(r["FHR@20"] for r in result["settings"][:2])
    assert result["base"] == tuning.BASE
    # the {} row is SASRec at the grid's base config, scored on the same rows through recommend.score
    prepared, tokenized = dataprep.load_prepared(tiny_run), item_tokenizer.load_sids(tiny_run)
    rows = split_rows(prepared, "test").iloc[tuning.sample_positions(len(split_rows(prepared, "test")), 8, 0)]
    rows = rows.reset_index(drop=True)
    fitted = sasrec.SASRecBaseline.fit(prepared, tokenized,
                                       dataclasses.replace(sasrec.SASRecConfig(), **tuning.BASE["sasrec"]))
    assert result["settings"][0]["FHR@20"] == recommend.score(fitted.recommend(rows), rows, prepared, tokenized)["FHR@20"]


def test_sid_cap_scores_own_negatives_over_sid_tokens_beside_the_true_facets(tiny_run, tmp_path):
    cap = load_script("sid_cap")
    assert cap.sid_token_facets([[5, 2, 9]]) == [frozenset({"sid_a=5", "sid_b=2", "sid_c=9"})]
    out = tmp_path / "cap.json"
    result = cap.main(["--run-dir", str(tiny_run.root), "--small", "--max-rows", "8", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert [(r["item_text"], r["quantizer"]) for r in result["settings"]] == [("title", "rqkmeans"),
                                                                            ("columns", "rqkmeans")]
    assert result["n_rows"] == 8 and all(0 <= r["FHR@20"] <= 1 for r in result["settings"])
    assert set(result["reference"]) == {"own_negatives (true facets)", "most_disliked"}
    assert set(result["settings"][1]["level_purity"]) == {"category", "style", "material", "color", "feature", "tier"}


def test_nll_breakdown_splits_the_loss_by_targets_never_seen_as_training_negatives(tiny_run):
    import numpy as np
    from conrec_lib.data import dataprep

    bench = load_script("nll_breakdown")
    prepared = dataprep.load_prepared(tiny_run)
    rows = prepared.split.test
    inter = prepared.dataset.interactions
    before = inter[(inter["feedback"] == "negative") & (inter["timestamp"] < rows["cutoff_ts"].min())]
    seen = rows["next_negative"].isin(before["item_id"]).to_numpy()
    nll = np.where(seen, 5.0, 9.0)  # a model that pays 5 nats on seen targets and 9 on the others
    out = bench.breakdown(nll, rows, prepared)
    assert out["n_rows"] == len(rows) and out["uniform"] == round(float(np.log(prepared.dataset.n_items)), 3)
    assert out["share_never_a_training_negative"] == round(float(1 - seen.mean()), 4)
    assert out["model_seen"] == 5.0
    if (~seen).any():
        assert out["model_never_a_training_negative"] == 9.0
        assert out["unseen_targets_add"] == round(4.0 * (~seen).mean(), 3)
    prior = bench.popularity_nll(prepared, rows["next_negative"].astype(int).to_numpy(), rows["cutoff_ts"].min())
    assert (prior > 0).all() and out["popularity_prior"] == round(float(prior.mean()), 3)
    # an item disliked more often before the cutoff costs the prior less
    counts = before["item_id"].value_counts()
    top, rare = int(counts.index[0]), int(counts.index[-1])
    assert bench.popularity_nll(prepared, np.array([top]), rows["cutoff_ts"].min())[0] <= \
        bench.popularity_nll(prepared, np.array([rare]), rows["cutoff_ts"].min())[0]


def test_nll_breakdown_calibration_picks_the_temperature_of_the_held_out_examples(tiny_prepared):
    import pandas as pd
    from conrec_lib.llm import model, tasks
    from conrec_lib.llm.prompts import PromptConfig

    bench = load_script("nll_breakdown")
    prepared, tokenized = tiny_prepared
    table = tokenized.sids.table
    train = tasks.next_negative_examples(prepared, table, PromptConfig(), "train")[:6]
    test = tasks.next_negative_examples(prepared, table, PromptConfig(), "test")[:6]
    bundle = model.load_model(model.ModelConfig(device="cpu", lora=False, sid_init="mean", hidden_size=32,
                                                num_layers=1, num_heads=2, intermediate_size=64),
                              table.vocabulary(), [e.prompt for e in train])
    rows = pd.DataFrame({"next_negative": [e.target_item for e in test]})
    out = bench.calibration(bundle, train, test, rows, table)
    held = {float(t): v for t, v in out["held_out_by_temperature"].items()}
    assert set(held) == set(bench.TEMPERATURES) and out["n_held_out"] == 6
    assert held[out["best_temperature"]] == min(held.values())
    assert out["test_at_best_temperature"] == out["test_by_temperature"][str(out["best_temperature"])]
