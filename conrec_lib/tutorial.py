"""Run the notebook sequence with papermill: profiles, parameter checking, wall times.

This is what `make tutorial`, `python -m conrec_lib run` and the notebook tests call, so that all
three run the notebooks the same way.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from conrec_lib import parameters, runs

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


class UnknownParameterError(parameters.ParameterError):
    """A parameter was passed that the notebook's `parameters` cell does not define, or one of the wrong type."""


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
    return parameters.defaults(path)


def check_parameters(path: Path, values: Mapping[str, Any]) -> None:
    """Raise if a parameter is not defined by the notebook or has the wrong type (papermill would only warn)."""
    known = notebook_parameters(path)
    found = parameters.problems(values, known)
    if found:
        raise UnknownParameterError(f"{Path(path).name}: " + "; ".join(found) + f"; the notebook defines {sorted(known)}")


def select(only: Sequence[str] | None, folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The notebooks named by `only` (full stems or their number, e.g. "03"), in reading order; all when empty."""
    paths = notebooks(folder)
    if not only:
        return paths
    chosen = [p for p in paths if any(p.stem == o or p.stem.split("_")[0] == o for o in only)]
    missing = [o for o in only if not any(p.stem == o or p.stem.split("_")[0] == o for p in paths)]
    if missing:
        raise ValueError(f"--only {missing}: no such notebook; choose from {[p.stem for p in paths]} (or their numbers)")
    return chosen


def parse_value(text: str, default: Any, name: str) -> Any:
    """A command-line value converted to the type of the notebook's default (`-p SFT_STEPS 10` -> 10).

    >>> parse_value("10", 150, "SFT_STEPS"), parse_value("1e-4", 0.0, "LR"), parse_value("false", True, "X")
    (10, 0.0001, False)
    """
    try:
        if isinstance(default, bool):
            return {"true": True, "1": True, "false": False, "0": False}[text.lower()]
        if isinstance(default, (int, float)):
            return type(default)(text)
    except (KeyError, ValueError):
        raise ValueError(f"-p {name} {text}: {name} expects {parameters.type_name(default)}") from None
    return text


def cli_overrides(pairs: Sequence[Sequence[str]], paths: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """`-p NAME VALUE` pairs -> overrides per notebook stem: each goes to every selected notebook defining NAME."""
    out: dict[str, dict[str, Any]] = {p.stem: {} for p in paths}
    for name, text in pairs:
        if name == "RUN_DIR":
            raise ValueError("-p RUN_DIR: use --run-dir, which every notebook of the run shares")
        targets = [p for p in paths if name in notebook_parameters(p)]
        if not targets:
            known = sorted({k for p in paths for k in notebook_parameters(p)})
            raise ValueError(f"-p {name}: no selected notebook ({[p.stem for p in paths]}) defines {name}; "
                             f"known: {known} (`python -m conrec_lib list` shows each notebook's)")
        for path in targets:
            out[path.stem][name] = parse_value(text, notebook_parameters(path)[name], name)
    return out


def relative_metadata(output: Path, shown_as: Path) -> None:
    """Replace the machine paths papermill records in the output's metadata with repository-relative ones
    (`shown_as`: the path the executed notebook ends up at)."""
    nb = json.loads(output.read_text(encoding="utf-8"))
    meta = nb.get("metadata", {}).get("papermill", {})
    if meta.get("input_path"):
        meta["input_path"] = runs.shown(meta["input_path"])
    if meta.get("output_path"):
        meta["output_path"] = runs.shown(shown_as)
    runs.write_text(output, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def run_notebook(path: Path, out_dir: Path, values: Mapping[str, Any],
                 failed_dir: Path | None = None) -> NotebookRun:
    """Execute one notebook with papermill into `out_dir` with parameter `values`, failing loudly on the first error.

    The executed copy replaces `out_dir/<name>` only when the run succeeds; a failed run is kept beside it as
    `<stem>.failed.ipynb` (with the error in its cells; in `failed_dir` when given), so the last good executed
    notebook is never lost.
    """
    import papermill as pm

    check_parameters(path, values)
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / path.name
    running = out_dir / f".{path.stem}.running-{os.getpid()}.ipynb"
    start = time.perf_counter()
    try:  # coalesce_streams: one stdout output per cell, progress bars stored in their final state
        pm.execute_notebook(str(path), str(running), parameters=dict(values), cwd=str(runs.project_root()),
                            progress_bar=False, kernel_name="python3", coalesce_streams=True)
    except BaseException:
        if running.is_file():
            failed = (failed_dir or out_dir) / f"{path.stem}.failed.ipynb"
            failed.parent.mkdir(parents=True, exist_ok=True)
            relative_metadata(running, failed)
            os.replace(running, failed)
        raise
    relative_metadata(running, output)
    os.replace(running, output)
    ((failed_dir or out_dir) / f"{path.stem}.failed.ipynb").unlink(missing_ok=True)
    return NotebookRun(path.name, output, time.perf_counter() - start)


def run_all(profile: str = "tutorial", run_dir: str | Path = "runs/tutorial", only: list[str] | None = None,
            extra: Mapping[str, Mapping[str, Any]] | None = None, echo: bool = True) -> list[NotebookRun]:
    """Run every notebook in order with the profile's parameters and `RUN_DIR=run_dir`."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    root = runs.check_run_dir(run_dir)  # before anything is written: an empty, "~" or file RUN_DIR stops here
    out_dir = root / "notebooks"
    done = []
    for path in select(only):
        params = {"RUN_DIR": runs.shown(root), **PROFILES[profile].get(path.stem, {}),
                  **(extra or {}).get(path.stem, {})}
        result = run_notebook(path, out_dir, params)
        done.append(result)
        if echo:
            print(f"{path.name:<34} {result.seconds:7.1f} s  -> {runs.shown(result.output)}", flush=True)
    return done


def refresh(only: list[str] | None = None, echo: bool = True) -> list[NotebookRun]:
    """Re-execute the committed notebooks in place at their defaults (what nbval later compares)."""
    done = []
    for path in select(only):
        result = run_notebook(path, path.parent, {}, failed_dir=runs.resolve("runs") / "refresh-failed")
        done.append(result)
        if echo:
            print(f"refreshed {path.name:<34} {result.seconds:7.1f} s", flush=True)
    return done
