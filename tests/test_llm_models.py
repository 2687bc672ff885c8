"""The tutorial's LLMs as recommenders: names and stage errors, and the sub-run pipeline end to end (tiny)."""
import pytest

from conrec_lib import hardware, runs
from conrec_lib.evaluation import comparisons as evaluation, llm_models
from conrec_lib.evaluation.comparisons import EvaluationConfig
from conrec_lib.baselines.sasrec import SASRecConfig
from conrec_lib.baselines.tiger import TIGERConfig


@pytest.fixture(autouse=True)
def one_cpu_thread():
    with hardware.cpu_threads(1):
        yield


def test_unknown_llm_and_missing_stage_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown LLM"):
        llm_models.tutorial_models(runs.Run.at(tmp_path), ("gpt",))
    with pytest.raises(runs.StageMissingError, match="04_context_discerning"):
        llm_models.tutorial_models(runs.Run.at(tmp_path), ("conrec",))


def test_pipeline_trains_both_llms_in_a_sub_run_and_scores_them_on_its_rows(tmp_path):
    cfg = EvaluationConfig(datasets=("simulator",), simulator_scale="tiny", baselines=("most_disliked",),
                           codebook_size=8, max_test_examples=10, sasrec=SASRecConfig(epochs=1, dim=16),
                           tiger=TIGERConfig(epochs=1, dim=16, max_items=4))
    small = llm_models.PipelineConfig(context_steps=4, warmup_steps=2, n_train=32, stage_steps=1, n_eval=4)
    result = evaluation.evaluate_sub_run(cfg, runs.Run.at(tmp_path), "simulator", 0, llm_models.Pipeline(small))
    assert set(result.metrics) == {"most_disliked", "llm-sft (04)", "conrec", *evaluation.YARDSTICKS}
    for scores in result.metrics.values():
        assert scores["n_examples"] == 10 and 0 <= scores["HR@20"] <= scores["FHR@20"] <= 1
    sub = result.folder
    assert (sub / "04_context_discerning" / "metrics.json").is_file()
    assert (sub / "05_progressive_grpo" / "conrec" / "adapter").is_dir()
