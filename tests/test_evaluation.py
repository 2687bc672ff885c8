"""Notebook 06's comparison: summaries on a hand-made table, and end to end on a tiny simulator and KuaiRand."""
import math
import os
from pathlib import Path

import pandas as pd
import pytest

from conrec_lib import runs
from conrec_lib.evaluation import comparisons as evaluation
from conrec_lib.evaluation.comparisons import EvaluationConfig
from conrec_lib.baselines.sasrec import SASRecConfig
from conrec_lib.baselines.tiger import TIGERConfig

FAST = dict(codebook_size=8, max_test_examples=15, sasrec=SASRecConfig(epochs=1, dim=16),
            tiger=TIGERConfig(epochs=1, dim=16, max_items=4))


def hand_table() -> pd.DataFrame:
    rows = [("sim", "ours", 0, "FHR@20", 0.30), ("sim", "ours", 1, "FHR@20", 0.34),
            ("sim", "swing", 0, "FHR@20", 0.20), ("sim", "swing", 1, "FHR@20", 0.30),
            ("sim", "most_disliked", 0, "FHR@20", 0.10), ("sim", "most_disliked", 1, "FHR@20", 0.10),
            ("sim", "ours", 0, "HR@20", 0.0), ("sim", "swing", 0, "HR@20", 0.0)]
    return pd.DataFrame(rows, columns=["dataset", "model", "seed", "metric", "value"])


def test_summary_table_gives_mean_std_and_count_per_model():
    wide = evaluation.summary_table(hand_table(), "sim")
    assert wide.loc["swing", ("FHR@20", "mean")] == pytest.approx(0.25)
    assert wide.loc["swing", ("FHR@20", "std")] == pytest.approx(0.0707107, rel=1e-5)  # ddof=1
    assert wide.loc["ours", ("HR@20", "n")] == 1 and math.isnan(wide.loc["ours", ("HR@20", "std")])
    assert list(dict.fromkeys(m for m, _ in wide.columns)) == ["HR@20", "FHR@20"]  # METRICS order
    assert evaluation.mean_pm_std(hand_table(), "sim").loc["swing", "FHR@20"] == "0.2500 ± 0.0707"
    with pytest.raises(ValueError, match="no rows for dataset"):
        evaluation.summary_table(hand_table(), "kuairand")


def test_relative_improvement_is_over_the_best_baseline():
    table = evaluation.relative_improvement(hand_table(), "ours").set_index("metric")
    assert table.loc["FHR@20", "best_baseline"] == "swing"
    assert table.loc["FHR@20", "relative"] == pytest.approx((0.32 - 0.25) / 0.25)
    assert math.isnan(table.loc["HR@20", "relative"])  # the best baseline scores 0


def test_config_checks_names_and_folders():
    with pytest.raises(ValueError, match="unknown"):
        EvaluationConfig(datasets=("netflix",))
    with pytest.raises(ValueError, match="embedders lacks"):
        EvaluationConfig(embedders={"simulator": "tfidf"})
    with pytest.raises(FileNotFoundError, match="data_dir"):
        EvaluationConfig(data_dir="/nonexistent").data_config("movielens", 0)
    full = EvaluationConfig.full()
    assert full.seeds == (0, 1, 2) and full.max_test_examples is None and full.quantizer == "rqvae"


def peeker(sub: evaluation.SubRun) -> dict[str, list[list[int]]]:
    """An extra model that knows each row's next negative: HR@20 must come out 1."""
    return {"peeker": [[int(i)] for i in sub.examples["next_negative"]]}


def test_tiny_simulator_end_to_end_with_an_extra_model(tmp_path):
    cfg = EvaluationConfig(datasets=("simulator",), seeds=(0, 1), simulator_scale="tiny", **FAST)
    run = runs.Run.at(tmp_path / "run")
    result = evaluation.evaluate_datasets(cfg, run, extra_models=peeker, progress=False)
    assert [(r.dataset, r.seed) for r in result.runs] == [("simulator", 0), ("simulator", 1)]
    models = {*evaluation.BASELINES, *evaluation.YARDSTICKS, "peeker"}
    assert set(result.tidy["model"]) == models and len(result.tidy) == 2 * len(models) * 5
    assert (result.tidy.query("model == 'peeker' and metric == 'HR@20'")["value"] == 1.0).all()
    for r in result.runs:
        assert all((r.folder / stage / "metrics.json").is_file() for stage in ("01_data", "02_semantic_ids"))
        assert (r.folder / "scores.json").is_file() and r.metrics["peeker"]["n_examples"] == 15
        assert (r.folder / "cache").resolve() == (run.root / "cache").resolve()
    assert (run.root / "06_evaluation" / "baselines.csv").is_file()
    gain = evaluation.relative_improvement(result.tidy, "peeker").set_index("metric")
    assert gain.loc["HR@20", "relative"] > 0
    assert evaluation.summary_table(result.tidy, "simulator").loc["peeker", ("HR@20", "n")] == 2
    oracle = result.tidy.query("model == 'oracle' and metric == 'FHR@20'")["value"].mean()
    most = result.tidy.query("model == 'most_disliked' and metric == 'FHR@20'")["value"].mean()
    assert oracle > most  # the ceiling lies above the most-disliked list


def test_extra_models_must_return_one_list_per_test_row(tmp_path):
    cfg = EvaluationConfig(datasets=("simulator",), simulator_scale="tiny", baselines=("most_disliked",), **FAST)
    with pytest.raises(ValueError, match="one list per row"):
        evaluation.evaluate_datasets(cfg, runs.Run.at(tmp_path), extra_models=lambda sub: {"bad": [[0]]}, progress=False)


def test_kuairand_end_to_end(tmp_path):
    cfg = EvaluationConfig(datasets=("kuairand",), **FAST)
    result = evaluation.evaluate_datasets(cfg, runs.Run.at(tmp_path), progress=False)
    assert set(result.tidy["model"]) == set(evaluation.BASELINES) | {"own_negatives"}  # no oracle on real data
    assert result.tidy["value"].dropna().between(0, 1).all() and result.runs[0].metrics["swing"]["n_examples"] == 15


def test_shared_cache_link_resolves_from_a_relative_run_root(tmp_path, monkeypatch):
    # a run given as a relative path used to get a link "runs/x/cache" read from inside the sub-run: dangling
    monkeypatch.chdir(tmp_path)
    parent = runs.Run(Path("runs") / "rel")
    sub = runs.Run(parent.root / "06_evaluation" / "simulator_seed0")
    evaluation.share_cache(parent, sub)
    (sub.root / "cache" / "probe.txt").write_text("x")
    assert (parent.root / "cache" / "probe.txt").read_text() == "x"
    assert not Path(os.readlink(sub.root / "cache")).is_absolute()  # the run folder can be moved as a whole
