"""The findings nbval checks: each answer follows its numbers, with its margin, and flips when they cross it."""
import copy
import json
import types

import pytest

from conrec_lib import findings, tutorial
from conrec_lib.context import context_discerning
from conrec_lib.diagnosis import positivity_bias
from conrec_lib.evaluation import assessment
from conrec_lib.rl import progressive
from conrec_lib.sids import item_tokenizer


def test_findings_read_as_aligned_yes_no_lines_and_refuse_a_question_asked_twice():
    f = findings.Findings.of(("Short?", True), ("A longer question?", False))
    assert str(f) == "Short?              yes\nA longer question?  no"
    assert repr(f) == str(f) and f.as_dict() == {"Short?": True, "A longer question?": False}
    with pytest.raises(KeyError, match="Short"):
        f["Missing?"]
    with pytest.raises(ValueError, match="asked twice"):
        findings.Findings.of(("Same?", True), ("Same?", False))


def test_margins_are_strict_and_a_missing_number_is_never_a_yes():
    assert not findings.above(0.27, 0.25, margin=0.02) and findings.above(0.2701, 0.25, margin=0.02)
    assert not findings.below(float("nan"), 0.25) and not findings.above(0.3, None)
    assert findings.includes([0.0, 0.1], 0.0) and not findings.includes([float("nan"), 0.1], 0.0)
    assert findings.entirely_above([0.001, 0.1], 0.0) and not findings.entirely_above([0.0, 0.1], 0.0)
    assert findings.entirely_below([0.7, 0.99], 1.0) and not findings.entirely_below([0.7, 1.0], 1.0)


def _diag(mass=0.03, nll=12.0, gain_ci=(-0.02, 0.01), own=0.2, shuffled=0.2):
    return {"valid_sid_mass": mass, "nll_per_item": nll, "nll_uniform": 7.6, "context_gain_ci95": list(gain_ci),
            "fhr_own": own, "fhr_shuffled": shuffled}


def bias_metrics():
    cover = {"next": 0.6, "7d": 0.9, "7d_swing": 0.92}
    return {"coverage_top1": cover, "coverage_top4": cover, "popularity": {"FHR@20": 0.30},
            "neg_only": {"FHR@20": 0.19, "diagnostics": _diag()}, "neg_pos": {"FHR@20": 0.21, "diagnostics": _diag()},
            "relative_drop_ci95": {"FHR@20": [-0.3, 0.07], "HR@20": [-0.6, 0.2]},
            "paper": {"relative_drop": {"HR@20": 0.4628}},
            "attention": {"neg_pos": {"negative": 0.25, "positive": 0.39, "positive_tokens": 0.69}}}


def test_notebook_03_findings_follow_the_numbers():
    m = bias_metrics()
    assert all(positivity_bias.findings(m).as_dict().values())
    m["neg_pos"]["diagnostics"]["context_gain_ci95"] = [0.01, 0.05]  # this model reads the user
    m["attention"]["neg_pos"]["positive"] = 0.66  # within 0.05 of its token share: not "less"
    answers = positivity_bias.findings(m).as_dict()
    assert [q for q, a in answers.items() if not a] == [
        "Does the 95% interval of both models' context gain include 0 (they do not read the user)?",
        "Does the positive section take less of the last position's attention than its share of the tokens?"]


def test_notebook_04_findings_follow_the_numbers():
    variant = {"align_acc": 0.27, "CandAcc": 0.08, "translation_acc": 0.10,
               "diagnostics": _diag(mass=0.8, nll=8.5, gain_ci=(0.03, 0.15), own=0.235, shuffled=0.145)}
    m = {"translation_only": copy.deepcopy(variant), "with_alignment": copy.deepcopy(variant),
         "chance_align_acc": 0.25, "dislike_rate_align_acc": 0.34, "forgetting": {"rate": -0.1}}
    m["with_alignment"]["translation_acc"] = 0.05
    assert all(context_discerning.findings(m).as_dict().values())
    m["with_alignment"]["diagnostics"]["valid_sid_mass"] = 0.95
    m["with_alignment"]["align_acc"] = 0.33
    m["with_alignment"]["diagnostics"]["fhr_shuffled"] = 0.22  # own history only 0.015 ahead: within noise
    answers = context_discerning.findings(m).as_dict()
    assert not answers["Does the with_alignment model score higher with the user's own history than a shuffled one "
                       "(by 0.02+)?"]
    assert not answers["Do both still put less than the diagnostics' bar of 90% on real SIDs?"]
    assert not answers["Is with_alignment's alignment accuracy within 0.07 of chance (0.25) (not learnt)?"]
    assert not answers["Is it below the no-model most-disliked option (0.34) by more than 0.03?"]
    m["with_alignment"]["align_acc"], m["translation_only"]["align_acc"] = 0.27, 0.40  # only the trained variant counts
    assert context_discerning.findings(m).as_dict()["Is with_alignment's alignment accuracy within 0.07 of chance "
                                                    "(0.25) (not learnt)?"]


def progressive_metrics():
    rec = lambda fhr: {"FHR@20": fhr}  # noqa: E731
    return {"ablation": [{"row": "translation only", **rec(0.235)}, {"row": "+ item-level alignment", **rec(0.285)},
                         {"row": "+ progressive GRPO", **rec(0.27)}, {"row": "+ future-negative reward", **rec(0.255)},
                         {"row": "+ positive penalty", **rec(0.265), "diagnostics": _diag(0.78, 8.6, (0.02, 0.1))}],
            "warmup_last_prompt": {**rec(0.27), "diagnostics": _diag(0.77, 8.6, (0.0, 0.08))},
            "plain_grpo": rec(0.275), "reward_variants": {"conrec": rec(0.265), "hit": rec(0.25)},
            "yardsticks": {"most_disliked": rec(0.255), "own_negatives": rec(0.375), "oracle": rec(0.52)},
            "forgetting": {"conrec": {"rate": -0.18}, "plain_grpo": {"rate": -0.13}}}


def test_notebook_05_findings_follow_the_numbers():
    m = progressive_metrics()
    answers = progressive.findings(m).as_dict()
    assert not answers["Does any GRPO arm end above the warm-up model's FHR@20 by more than 0.03?"]
    assert all(a for q, a in answers.items() if not q.startswith("Does any GRPO arm"))
    m["reward_variants"]["hit"] = {"FHR@20": 0.33}  # above the warm-up by 0.045, and 0.065 above conrec's variant
    answers = progressive.findings(m).as_dict()
    assert answers["Does any GRPO arm end above the warm-up model's FHR@20 by more than 0.03?"]
    assert not answers["Do the reward variants finish within 0.06 of each other on FHR@20?"]
    close = "Does full CoNRec end within 0.05 of most_disliked, and more than 0.05 below own_negatives?"
    m["ablation"][-1]["FHR@20"] = 0.195  # 0.06 below most_disliked
    assert not progressive.findings(m).as_dict()[close]
    m["ablation"][-1]["FHR@20"] = 0.30  # within 0.05 of most_disliked, but only 0.075 below own_negatives: still yes
    assert progressive.findings(m).as_dict()[close]
    m["yardsticks"]["own_negatives"]["FHR@20"] = 0.33
    assert not progressive.findings(m).as_dict()[close]


def test_notebook_02_findings_follow_the_numbers():
    metrics = {"quantizer": "rqvae", "collision_rate": 0.0, "collision_rate_before_dedup": 0.1,
               "codebook_utilization": [1.0, 1.0, 0.95], "perplexity": [58.0, 55.0, 15.0],
               "reconstruction_cosine": 0.89, "prefix_category_purity": 1.0, "prefix_category_purity_shuffled": 0.19,
               "comparison": {"rqkmeans": {"reconstruction_cosine": 0.95}}}
    tok = types.SimpleNamespace(metrics=metrics, sids=types.SimpleNamespace(table=types.SimpleNamespace(codebook_size=64)))
    answers = item_tokenizer.findings(tok).as_dict()
    assert [q for q, a in answers.items() if not a] == [
        "Is code usage spread (perplexity above a quarter of the codebook size at every level)?"]
    assert "Does rqkmeans reconstruct better than rqvae (cosine higher by 0.02+)?" in answers


def test_notebook_06_findings_follow_the_numbers():
    head = {"best_baseline": "most_disliked", "best_baseline_fhr": 0.286, "ratio_ci95": [1.02, 1.2], "conrec_fhr": 0.31,
            "oracle_fhr": 0.536, "own_negatives_fhr": 0.404, "valid_sid_mass": 0.79, "nll_per_item": 8.5,
            "nll_uniform": 7.6}
    curve = [{"theta": 0.9, "negatives_filtered": 0.215, "positives_filtered": 0.154},
             {"theta": 1.0, "negatives_filtered": 0.0, "positives_filtered": 0.0}]
    results = {"simulator": {"own_negatives": 0.40, "most_disliked": 0.29, "oracle": 0.54},
               "kuairand": {"swing": 0.013}, "movielens": {"own_negatives": 0.116, "most_disliked": 0.143}}
    m = {"headline": head, "tradeoff_curve": curve, "theta": 1.0,
         "results": {d: {model: {"FHR@20": v} for model, v in models.items()} for d, models in results.items()},
         "ab_test": {"control": {"negative_rate": 0.042}, "category rule": {"negative_rate": 0.028}}}
    cfg = assessment.AssessmentConfig()
    assert all(assessment.findings(m, cfg).as_dict().values())
    head["ratio_ci95"], head["conrec_fhr"] = [0.9, 1.05], 0.23
    m["theta"] = 0.95
    answers = assessment.findings(m, cfg).as_dict()
    assert not answers["Does CoNRec beat the best baseline on FHR@20, the paired ratio interval above 1?"]
    assert not answers["Is CoNRec's FHR@20 within 0.05 of the best baseline's (level with it)?"]  # 0.056 below
    assert not answers["Does a 5% budget of liked items filtered force theta to 1 (a filter that filters nothing)?"]


# Checked cells whose output is the same on every machine (the simulator and counting, no trained model or SID).
MACHINE_INDEPENDENT = {"03_positivity_bias": ["result.coverage", "by_world = positivity_bias.coverage_by_world"],
                       "04_context_discerning": ['pd.Series({"translation'],
                       "05_progressive_grpo": ["toy = torch.tensor"], "06_evaluation": ["assessment.ab_table"]}


@pytest.mark.parametrize("stem", [p.stem for p in tutorial.notebooks()][1:])
def test_nbval_checks_findings_not_tables_of_trained_numbers(stem):
    """Notebooks 02-06: nbval checks the findings cell and the machine-independent cells only (issue 12: outputs
    of trained models differ between CPUs, so a table of them fails nbval on another machine)."""
    nb = json.loads(tutorial.NOTEBOOK_DIR.joinpath(f"{stem}.ipynb").read_text(encoding="utf-8"))
    checked = ["".join(c["source"]).split("\n", 1)[1] for c in nb["cells"]
               if c["cell_type"] == "code" and "".join(c["source"]).startswith("# NBVAL_CHECK_OUTPUT")]
    calls = [c for c in checked if ".findings(" in c]
    others = [c for c in checked if ".findings(" not in c]
    assert len(calls) == 1, f"{stem}: one checked findings cell expected, found {len(calls)}"
    assert all(any(c.startswith(k) for k in MACHINE_INDEPENDENT.get(stem, [])) for c in others), \
        f"{stem}: checked cells that print trained numbers: {[c.split(chr(10))[0] for c in others]}"
