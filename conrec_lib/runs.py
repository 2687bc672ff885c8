"""Run folders: `runs/<name>/<NN_stage>/`, atomic artifact writes, and stage bookkeeping.

Every stage writes `config.json`, its artifacts, and `metrics.json` *last*: a stage folder without
`metrics.json` is unfinished and is never trusted by a later stage.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

# Stage folder -> the notebook that produces it (named in "run this first" errors).
STAGES = {
    "01_data": "01_data_exploration.ipynb",
    "02_semantic_ids": "02_semantic_ids.ipynb",
    "03_positivity_bias": "03_positivity_bias.ipynb",
    "04_context_discerning": "04_context_discerning.ipynb",
    "05_progressive_grpo": "05_progressive_grpo.ipynb",
    "06_evaluation": "06_evaluation.ipynb",
}


def project_root() -> Path:
    """The folder holding this project's `pyproject.toml` (found from this file), else the cwd."""
    for folder in Path(__file__).resolve().parents:
        if (folder / "pyproject.toml").is_file() and (folder / "conrec_lib").is_dir():
            return folder
    return Path.cwd()


def resolve(path: str | os.PathLike) -> Path:
    """A relative path is taken from the project root, so notebooks and the CLI agree on `runs/...`."""
    path = Path(path)
    return path if path.is_absolute() else project_root() / path


def shown(path: str | os.PathLike) -> str:
    """`path` relative to the project root when it lies inside it (what notebooks print: no machine paths).

    >>> shown(project_root() / "runs" / "x")
    'runs/x'
    """
    path = Path(path)
    try:
        return path.resolve().relative_to(project_root()).as_posix()
    except ValueError:
        return str(path)


class StageMissingError(FileNotFoundError):
    """A later stage asked for the output of a stage that has not finished."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    A crash inside the block leaves `path` untouched (old content or absent), never half-written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the finished folder should read like any other
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _to_jsonable(v) for k, v in dataclasses.asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` (dicts, lists, dataclasses, numpy scalars) as indented JSON, atomically."""
    return write_text(path, json.dumps(_to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming the file in the error when it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); delete it and re-run the stage") from err


@dataclasses.dataclass(frozen=True)
class Run:
    """A named run folder, `runs/<name>`; each notebook writes one stage sub-folder of it."""

    root: Path

    @classmethod
    def at(cls, run_dir: str | os.PathLike) -> "Run":
        return cls(resolve(run_dir))

    def stage_dir(self, stage: str) -> Path:
        """The folder of `stage` (created), e.g. `runs/tutorial/01_data`."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(STAGES)}")
        path = self.root / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def is_done(self, stage: str) -> bool:
        return (self.root / stage / "metrics.json").is_file()

    def require(self, stage: str) -> Path:
        """Return the folder of a finished stage, or say which notebook to run first."""
        if not self.is_done(stage):
            raise StageMissingError(
                f"{self.root / stage} has no metrics.json: stage {stage!r} has not finished. "
                f"Run notebooks/{STAGES[stage]} with RUN_DIR={str(self.root)!r} first."
            )
        return self.root / stage

    def start(self, stage: str, config: Any) -> Path:
        """Begin a stage: drop any old `metrics.json` (the stage is unfinished again), write config."""
        path = self.stage_dir(stage)
        (path / "metrics.json").unlink(missing_ok=True)
        write_json(path / "config.json", config)
        return path

    def finish(self, stage: str, metrics: dict) -> Path:
        """Mark a stage done by writing its `metrics.json` (always the last file written)."""
        return write_json(self.stage_dir(stage) / "metrics.json", metrics)

    def metrics(self, stage: str) -> dict:
        return read_json(self.require(stage) / "metrics.json")
