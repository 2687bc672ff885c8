"""Run the notebook sequence with papermill: profiles, parameter checking, wall times.

This is what `make tutorial`, `python -m conrec_lib run` and the notebook tests call, so that all
three run the notebooks the same way.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Mapping

from conrec_lib import runs

NOTEBOOK_DIR = runs.project_root() / "notebooks"

# Parameter overrides per profile and notebook (by file stem). "tutorial" = the notebooks' own
# defaults, which run on a 2-core CPU; "smoke" = tiny settings for the test suite.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "tutorial": {},
    "smoke": {
        "01_data_exploration": {"SCALE": "tiny"},
        "02_semantic_ids": {"EMBEDDER": "tfidf", "CODEBOOK_SIZE": 16, "EPOCHS": 5},
        "03_positivity_bias": {"SFT_STEPS": 4, "PRIOR_STEPS": 6, "MAX_TRAIN_EXAMPLES": 48, "MAX_TEST_EXAMPLES": 12},
        "04_context_discerning": {"CONTEXT_STEPS": 6, "WARMUP_STEPS": 4, "N_TRAIN": 96, "N_WARMUP": 32,
                                  "N_ALIGN_EVAL": 16, "N_TRANSLATION_EVAL": 4, "N_REC_EVAL": 12},
        "05_progressive_grpo": {"STAGE_STEPS": 2, "NUM_GENERATIONS": 2, "PROMPTS_PER_BATCH": 2, "N_TRAIN": 16,
                                "N_REC_EVAL": 12, "REWARD_VARIANTS": "hit"},
        "06_evaluation": {"MAX_TEST_EXAMPLES": 12, "DATASETS": "simulator", "SIM_SCALE": "tiny", "AB_DAYS": 1,
                          "AB_SEEDS": 1},
    },
}


class UnknownParameterError(ValueError):
    """A parameter was passed that the notebook's `parameters` cell does not define."""


@dataclasses.dataclass
class NotebookRun:
    notebook: str
    output: Path
    seconds: float


def notebooks(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The tutorial notebooks in reading order (`NN_name.ipynb`)."""
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"{folder}: no notebooks named NN_*.ipynb")
    return found


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The names and default values assigned in the notebook's cell tagged `parameters`."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse("".join(cell["source"]))
            return {t.id: ast.literal_eval(node.value) for node in tree.body
                    if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}
    raise ValueError(f"{path}: no code cell tagged 'parameters'; papermill needs one to inject parameters")


def check_parameters(path: Path, parameters: Mapping[str, Any]) -> None:
    """Raise if a parameter is not defined by the notebook (papermill would only warn)."""
    known = notebook_parameters(path)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise UnknownParameterError(
            f"{Path(path).name}: unknown parameter(s) {unknown}; the notebook defines {sorted(known)}")


def run_notebook(path: Path, out_dir: Path, parameters: Mapping[str, Any]) -> NotebookRun:
    """Execute one notebook with papermill into `out_dir`, failing loudly on the first error."""
    import papermill as pm

    check_parameters(path, parameters)
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / path.name
    start = time.perf_counter()
    pm.execute_notebook(str(path), str(output), parameters=dict(parameters), cwd=str(runs.project_root()),
                        progress_bar=False, kernel_name="python3")
    return NotebookRun(path.name, output, time.perf_counter() - start)


def run_all(profile: str = "tutorial", run_dir: str | Path = "runs/tutorial", only: list[str] | None = None,
            extra: Mapping[str, Mapping[str, Any]] | None = None, echo: bool = True) -> list[NotebookRun]:
    """Run every notebook in order with the profile's parameters and `RUN_DIR=run_dir`."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    out_dir = runs.resolve(run_dir) / "notebooks"
    done = []
    for path in notebooks():
        if only and path.stem not in only:
            continue
        params = {"RUN_DIR": str(run_dir), **PROFILES[profile].get(path.stem, {}),
                  **(extra or {}).get(path.stem, {})}
        result = run_notebook(path, out_dir, params)
        done.append(result)
        if echo:
            print(f"{path.name:<34} {result.seconds:7.1f} s  -> {result.output}", flush=True)
    return done


def refresh(only: list[str] | None = None, echo: bool = True) -> list[NotebookRun]:
    """Re-execute the committed notebooks in place at their defaults (what nbval later compares)."""
    done = []
    for path in notebooks():
        if only and path.stem not in only:
            continue
        result = run_notebook(path, path.parent, {})
        done.append(result)
        if echo:
            print(f"refreshed {path.name:<34} {result.seconds:7.1f} s", flush=True)
    return done
