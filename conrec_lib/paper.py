"""The paper's reported numbers, in one place (docs/paper.md; Chen et al., arXiv:2601.15721, Taobao, Qwen3-14B).

Every table and plot that sets our measurements beside the paper's reads them from here. Metrics are at k = 20.
"""
from __future__ import annotations

# Notebook 03, "Three problems" 2 and 3: how much of a user's top aversion the target window covers, and the
# positivity bias (an LC-Rec style model with negatives only vs negatives + positives in the prompt).
COVERAGE_TOP1 = {"next": 0.07, "7d": 0.18, "7d_swing": 0.25}
COVERAGE_TOP4 = {"next": 0.17, "7d": 0.48, "7d_swing": 0.64}
POSITIVITY_BIAS = {"neg_only": {"HR@20": 0.0296, "CandAcc": 0.289},
                   "neg_pos": {"HR@20": 0.0159, "CandAcc": 0.133}}

# Notebooks 04 and 05: the cumulative ablation, HR@20 / FHR@20 / candidate accuracy per row.
ABLATION = {"translation only": (0.0286, 0.0364, 0.276), "+ item-level alignment": (0.0294, 0.0382, 0.509),
            "+ progressive GRPO": (0.0308, 0.0393, 0.548), "+ future-negative reward": (0.0330, 0.0434, 0.653),
            "+ positive penalty": (0.0330, 0.0441, 0.695)}
ABLATION_COLUMNS = ("HR@20", "FHR@20", "CandAcc")

# Notebook 04: item-level alignment accuracy after alignment and after a later next-item SFT (31.4% forgotten).
FORGETTING_SFT = {"after_alignment": 0.755, "after_warmup": 0.518, "rate": 0.314}
# Notebook 05: the forgetting rate of alignment after CoNRec's progressive GRPO and after plain GRPO.
FORGETTING_RL = {"conrec": 0.136, "plain_grpo": 0.285}

# Notebook 06: CoNRec's relative improvement over the best baseline.
RELATIVE_TO_BEST = {"HR@20": 0.115, "FHR@20": 0.137, "LUF@20": 0.151, "LIF@20": 0.249, "CandAcc": 1.01}


def ablation_row(row: str) -> dict[str, float]:
    """One row of the paper's ablation as {metric: value}.

    >>> ablation_row("translation only")
    {'HR@20': 0.0286, 'FHR@20': 0.0364, 'CandAcc': 0.276}
    """
    return dict(zip(ABLATION_COLUMNS, ABLATION[row]))
