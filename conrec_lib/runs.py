"""Run folders: `runs/<name>/<NN_stage>/`, atomic artifact writes, and stage bookkeeping.

Every stage writes `config.json`, its artifacts, and `metrics.json` *last*: a stage folder without
`metrics.json` is unfinished and is never trusted by a later stage. Three rules keep a run folder honest:

- **A stage is replaced only when its re-run succeeds.** `Run.start` builds into a hidden sibling folder
  (`.<stage>.build-<pid>`); `Run.finish` swaps it in. An error or a kill leaves the previous result intact, and the
  next start cleans what a killed run left behind.
- **Stages know what they were built from.** `inputs.json` records the fingerprint (a hash of `config.json`,
  `inputs.json` and `metrics.json`) of every earlier stage it depends on (`DEPENDS`). `Run.require` refuses a stage
  whose inputs have since been re-run, naming the notebooks to re-run.
- **One builder at a time.** `Run.start` takes `<run>/.lock` (pid, host, start time); a second process building into
  the same run folder stops at once with a message naming the first. A lock whose process has gone is taken over.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional

# Stage folder -> the notebook that produces it (named in "run this first" errors).
STAGES = {
    "01_data": "01_data_exploration.ipynb",
    "02_semantic_ids": "02_semantic_ids.ipynb",
    "03_positivity_bias": "03_positivity_bias.ipynb",
    "04_context_discerning": "04_context_discerning.ipynb",
    "05_progressive_grpo": "05_progressive_grpo.ipynb",
    "06_evaluation": "06_evaluation.ipynb",
}

# Stage -> the earlier stages it reads (transitively closed): a re-run of any of them makes it stale.
DEPENDS = {
    "01_data": (),
    "02_semantic_ids": ("01_data",),
    "03_positivity_bias": ("01_data", "02_semantic_ids"),
    "04_context_discerning": ("01_data", "02_semantic_ids"),
    "05_progressive_grpo": ("01_data", "02_semantic_ids", "04_context_discerning"),
    "06_evaluation": ("01_data", "02_semantic_ids", "03_positivity_bias", "04_context_discerning",
                      "05_progressive_grpo"),
}
INPUTS = "inputs.json"
SOURCE_FOLDERS = ("notebooks", "conrec_lib", "tests", "data", "docs", "scripts", "benchmarks", ".git")
LOCK = ".lock"


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


class StaleStageError(RuntimeError):
    """A stage was built from an earlier stage that has been re-run (or removed) since."""


class RunLockedError(RuntimeError):
    """Another live process is building a stage in the same run folder."""


def _file_mode() -> int:
    """0644 under the usual umask: artifacts read like any other file (mkstemp makes them 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


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
        if tmp_path.exists():
            tmp_path.chmod(_file_mode())
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
        readable(tmp)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def readable(folder: Path) -> None:
    """Files under `folder` 0644 and folders 0755 (under the usual umask): what libraries' `save_pretrained` wrote
    privately (0600) reads like any other artifact."""
    mode = _file_mode()
    for entry in folder.rglob("*"):
        if entry.is_file() and not entry.is_symlink():
            entry.chmod(mode)
        elif entry.is_dir():
            entry.chmod(mode | (mode & 0o444) >> 2)  # x wherever r: 0644 -> 0755


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
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        from conrec_lib.artifacts import rewrite_hint  # core as well; it imports this module

        raise ValueError(f"{shown(path)}: not valid JSON ({err}). {rewrite_hint(path)}") from err


# --- run-folder bookkeeping: builds in progress, the lock, fingerprints ------------------------------

# (run root, stage) -> the hidden folder this process is building the stage in.
_BUILDING: dict[tuple[Path, str], Path] = {}
# (run root, stage) -> the fingerprint of the stage when this process last read it (`require`): what a stage built
# here was built from, even when it read its inputs before `start` or another process re-ran them since.
_READ: dict[tuple[Path, str], str] = {}
# run root -> how many stages this process is building there (the lock is released at zero).
_HOLDING: dict[Path, int] = {}


def check_run_dir(run_dir: str | os.PathLike) -> Path:
    """`RUN_DIR` as a folder path: `~` expanded, relative paths from the project root; refuse what cannot be one."""
    text = os.fspath(run_dir)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"RUN_DIR={text!r} is empty: give a run folder such as 'runs/tutorial'")
    path = resolve(Path(text.strip()).expanduser())
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"RUN_DIR={text!r}: {parent} is a file, not a folder; choose another RUN_DIR")
    real, root = path.resolve(), project_root().resolve()
    if real == root or real in root.parents:
        raise ValueError(f"RUN_DIR={text!r} is the repository root or a folder above it; use a folder inside it "
                         "such as 'runs/tutorial'")
    source = [root / name for name in SOURCE_FOLDERS]
    if any(real == s or s in real.parents for s in source):
        raise ValueError(f"RUN_DIR={text!r} lies in the project's own {shown(real).split('/')[0]}/ folder, which "
                         "a run would overwrite; use a folder under runs/, e.g. 'runs/tutorial'")
    return path


def fingerprint(stage_dir: Path) -> str:
    """A hash of what a finished stage says about itself: its config, its inputs and its metrics."""
    digest = hashlib.sha256()
    for name in ("config.json", INPUTS, "metrics.json"):
        file = stage_dir / name
        digest.update(name.encode() + b"\0" + (file.read_bytes() if file.is_file() else b"") + b"\0")
    return digest.hexdigest()[:16]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _lock_holder(lock: Path) -> Optional[dict]:
    """Who holds `lock`, or None when the lock is gone or its process has died (a stale lock)."""
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):  # not ours (we link whole files): held while it is young
        age = time.time() - lock.stat().st_mtime
        return {"pid": "?", "host": "?", "stage": "?", "started": f"{age:.0f} s ago"} if age < 60 else None
    if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1))):
        return None
    return holder


def _acquire(root: Path, stage: str) -> None:
    if _HOLDING.get(root):
        _HOLDING[root] += 1
        return
    root.mkdir(parents=True, exist_ok=True)
    lock = root / LOCK
    me = {"pid": os.getpid(), "host": socket.gethostname(), "stage": stage,
          "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    mine = root / f".lock.{os.getpid()}.tmp"
    mine.write_text(json.dumps(me), encoding="utf-8")
    try:
        for _ in range(3):
            try:  # a hard link appears whole, with its content: nobody ever reads a half-written lock
                os.link(mine, lock)
            except FileExistsError:
                holder = _lock_holder(lock)
                if holder is None or (holder.get("pid") == me["pid"] and holder.get("host") == me["host"]):
                    lock.unlink(missing_ok=True)  # its process has gone, or it is this process's: take it over
                    continue
                raise RunLockedError(
                    f"{shown(root)} is in use: process {holder.get('pid')} on {holder.get('host')} has been "
                    f"building stage {holder.get('stage')!r} since {holder.get('started')}. Wait for it to finish, "
                    f"or use another RUN_DIR. If that process is gone (e.g. on another machine), delete "
                    f"{shown(lock)}.") from None
            _HOLDING[root] = 1
            return
    finally:
        mine.unlink(missing_ok=True)
    raise RunLockedError(f"{shown(lock)}: could not take the run lock; delete it if no run is using {shown(root)}")


def _release(root: Path) -> None:
    _HOLDING[root] = _HOLDING.get(root, 1) - 1
    if _HOLDING[root] <= 0:
        _HOLDING.pop(root, None)
        (root / LOCK).unlink(missing_ok=True)


def _clean_leftovers(root: Path) -> None:
    """Remove what killed runs left in `root` (we hold the lock, so no other builder is at work there).

    A finished stage moved aside for a swap that was killed half-way is moved back.
    """
    ours = set(_BUILDING.values())
    for entry in root.iterdir():
        name = entry.name
        if entry in ours or not name.startswith("."):
            continue
        if ".old-" in name:
            final = root / name[1:name.index(".old-")]
            if not final.exists():
                os.replace(entry, final)
                continue
        if ".build-" in name or ".old-" in name or name.endswith(".tmp"):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)


@dataclasses.dataclass(frozen=True)
class Run:
    """A named run folder, `runs/<name>`; each notebook writes one stage sub-folder of it."""

    root: Path

    @classmethod
    def at(cls, run_dir: str | os.PathLike) -> "Run":
        return cls(check_run_dir(run_dir))

    def stage_dir(self, stage: str) -> Path:
        """The folder of `stage` (created): while this process builds the stage, its hidden build folder."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(STAGES)}")
        path = _BUILDING.get((self.root, stage), self.root / stage)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def is_done(self, stage: str) -> bool:
        return (self.root / stage / "metrics.json").is_file()

    def stale_reason(self, stage: str) -> Optional[str]:
        """Why a finished `stage` cannot be trusted (an input re-run or missing since), or None."""
        recorded_file = self.root / stage / INPUTS
        if not recorded_file.is_file():
            return f"it has no {INPUTS} (built by an older conrec, or by hand)"
        recorded = read_json(recorded_file)
        for earlier in DEPENDS.get(stage, ()):
            if earlier not in recorded:
                continue  # it did not exist when this stage was built (this stage does not read it then)
            if not self.is_done(earlier):
                return f"{earlier} has been removed or is unfinished since"
            if fingerprint(self.root / earlier) != recorded[earlier]:
                return f"{earlier} has been re-run since it was built"
        return None

    def stale_stages(self) -> list[str]:
        """The stages to re-run, in order: every finished stage that is stale, and every stage a finished stage
        was built from that is gone or unfinished now."""
        todo = set()
        for stage in STAGES:
            if self.is_done(stage) and self.stale_reason(stage) is not None:
                todo.add(stage)
                recorded = self.root / stage / INPUTS
                if recorded.is_file():
                    todo |= {s for s in read_json(recorded) if s in STAGES and not self.is_done(s)}
        return [s for s in STAGES if s in todo]

    def require(self, stage: str) -> Path:
        """Return the folder of a finished, up-to-date stage, or say which notebooks to run first."""
        if not self.is_done(stage):
            raise StageMissingError(
                f"{shown(self.root / stage)} has no metrics.json: stage {stage!r} has not finished. "
                f"Run notebooks/{STAGES[stage]} with RUN_DIR={shown(self.root)!r} first."
            )
        reason = self.stale_reason(stage)
        if reason is not None:
            rerun = ", ".join(f"notebooks/{STAGES[s]}" for s in self.stale_stages())
            raise StaleStageError(
                f"{shown(self.root / stage)} is stale: {reason}. Re-run, in order: {rerun} "
                f"(with RUN_DIR={shown(self.root)!r}), or start a fresh RUN_DIR."
            )
        _READ[(self.root, stage)] = fingerprint(self.root / stage)
        return self.root / stage

    def start(self, stage: str, config: Any) -> Path:
        """Begin (re)building a stage in a hidden folder; the finished stage, if any, stays until `finish`.

        Takes the run lock, cleans leftovers of killed runs, writes `config.json` and returns the folder to write
        artifacts into. `finish` records the inputs.
        """
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {sorted(STAGES)}")
        key = (self.root, stage)
        if key in _BUILDING:  # restarted in the same process (e.g. a notebook cell run twice): start afresh
            self.abort(stage)
        _acquire(self.root, stage)
        try:
            _clean_leftovers(self.root)
            building = self.root / f".{stage}.build-{os.getpid()}"
            shutil.rmtree(building, ignore_errors=True)
            building.mkdir(parents=True)
            _BUILDING[key] = building
            write_json(building / "config.json", config)
        except BaseException:
            self.abort(stage)
            raise
        return building

    def finish(self, stage: str, metrics: dict) -> Path:
        """Write `metrics.json` (always the last file) and swap the built stage in place of the old one."""
        building = _BUILDING.get((self.root, stage))
        if building is None:
            raise RuntimeError(f"stage {stage!r} of {shown(self.root)} was not started in this process: "
                               f"call Run.start first")
        write_json(building / INPUTS, self._inputs(stage))
        write_json(building / "metrics.json", metrics)
        final, old = self.root / stage, self.root / f".{stage}.old-{os.getpid()}"
        if final.exists():
            os.replace(final, old)
        os.replace(building, final)
        del _BUILDING[(self.root, stage)]
        shutil.rmtree(old, ignore_errors=True)
        _release(self.root)
        return final / "metrics.json"

    def _inputs(self, stage: str) -> dict[str, str]:
        """The fingerprint of each earlier stage `stage` depends on, as this process read it (else as it is now)."""
        return {s: _READ.get((self.root, s), fingerprint(self.root / s)) for s in DEPENDS[stage] if self.is_done(s)}

    def abort(self, stage: str) -> None:
        """Drop a build in progress (the finished stage, if any, is untouched) and release the lock."""
        building = _BUILDING.pop((self.root, stage), None)
        if building is not None:
            shutil.rmtree(building, ignore_errors=True)
            _release(self.root)

    @contextlib.contextmanager
    def building(self, stage: str, config: Any) -> Iterator[Path]:
        """`start` ... `finish` as a block: an error or an interrupt inside it aborts the build.

        The block must call `run.finish(stage, metrics)` as its last step.
        """
        path = self.start(stage, config)
        try:
            yield path
        except BaseException:
            self.abort(stage)
            raise
        if (self.root, stage) in _BUILDING:
            self.abort(stage)
            raise RuntimeError(f"stage {stage!r}: the block ended without run.finish(...); nothing was kept")

    def metrics(self, stage: str) -> dict:
        return read_json(self.require(stage) / "metrics.json")
