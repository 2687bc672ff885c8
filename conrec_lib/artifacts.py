"""Reading run-folder artifacts: a damaged or truncated file names itself and the notebook that writes it.

A stage writes its files atomically (`runs.atomic_path`), but a copied, synced or hand-edited run folder can still
hold a truncated parquet, npz or checkpoint. The reader's own error (pyarrow's "Parquet magic bytes not found",
numpy's "cannot reshape array") names neither the file nor the fix; `reading` turns it into an `ArtifactError`:

    with artifacts.reading(path):
        frame = pd.read_parquet(path)

A missing file keeps the reader's own error (FileNotFoundError for a file), and an error that is not a reader's
(a KeyError in the caller's code) passes through unchanged.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pyarrow as pa
from safetensors import SafetensorError

from conrec_lib import runs


class ArtifactError(ValueError):
    """A run-folder file exists but cannot be read: damaged or truncated."""


# What readers raise on a damaged file: pyarrow (ArrowInvalid is a ValueError, ArrowIOError an OSError), numpy
# (ValueError, EOFError, BadZipFile, zlib.error), pandas' csv parser (ValueError), torch.load (RuntimeError,
# UnpicklingError), transformers (OSError) and safetensors (SafetensorError) for saved models.
READ_ERRORS = (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile, zlib.error, pickle.UnpicklingError,
               json.JSONDecodeError, pa.ArrowException, SafetensorError)
# Passed on as they are: the reader's error already says what is wrong (for an ArtifactError, a nested `reading`).
PASSED_ON = (FileNotFoundError, IsADirectoryError, PermissionError, ArtifactError)


@contextlib.contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
    """Turn a reader's error inside the block into an `ArtifactError` naming `path` and how to write it again."""
    try:
        yield
    except PASSED_ON:
        raise
    except READ_ERRORS as err:
        if not Path(path).exists():
            raise  # missing, not damaged: the reader's own error (a model folder's OSError, for one)
        raise ArtifactError(f"{runs.shown(runs.resolve(path))}: damaged or truncated ({type(err).__name__}: "
                            f"{_first_line(err)}). {rewrite_hint(path)}") from err


def read(reader: Callable[..., Any], path: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
    """`reader(path, *args, **kwargs)` inside `reading(path)`: `read(pd.read_parquet, folder / "items.parquet")`."""
    with reading(path):
        return reader(path, *args, **kwargs)


def rewrite_hint(path: str | os.PathLike) -> str:
    """What writes `path` again: the notebook of its stage folder with that RUN_DIR, else "delete it".

    >>> rewrite_hint("runs/tutorial/02_semantic_ids/sids/quantizer.npz")
    "Re-run notebooks/02_semantic_ids.ipynb with RUN_DIR='runs/tutorial' to write it again."
    >>> rewrite_hint("runs/tutorial/cache/embeddings/tfidf_0a1b.npy")
    'Delete it and run again: the step that wrote it writes it again.'
    """
    stage = stage_folder(path)
    if stage is None:
        return "Delete it and run again: the step that wrote it writes it again."
    run_dir = runs.shown(runs.resolve(stage.parent))
    return f"Re-run notebooks/{runs.STAGES[stage.name]} with RUN_DIR={run_dir!r} to write it again."


def stage_folder(path: str | os.PathLike) -> Optional[Path]:
    """The stage folder (`runs/<name>/<NN_stage>`) holding `path`, or None.

    The outermost one wins: notebook 06 writes whole sub-runs inside its own stage folder
    (`06_evaluation/simulator_seed0/01_data/...`), and it is notebook 06 that writes them again.
    """
    parents = [p for p in Path(path).parents if p.name in runs.STAGES]
    return parents[-1] if parents else None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else "no message"
