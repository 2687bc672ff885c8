"""Progress bars that end as text, so a saved notebook shows the finished bar and never a frozen 0%.

`tqdm.auto` draws a widget in Jupyter; a notebook file stores a widget's text fallback as it was when the bar was
created ("0/60"), which is what GitHub, nbconvert and a kernel-less JupyterLab show. The plain-text bar on stdout
ends in its final state (papermill's `coalesce_streams`, used by `conrec_lib.tutorial`, keeps only that state).
"""
from __future__ import annotations

import sys

from tqdm.std import tqdm as _text_tqdm


QUIET = False  # True in the worker processes of `hardware.run_jobs`: their bars would not reach the notebook


def tqdm(iterable=None, **kwargs):
    """`tqdm.tqdm` drawn as text on stdout (not stderr: a notebook's stderr is kept for real warnings); none in a
    worker process (`QUIET`)."""
    if QUIET:
        kwargs["disable"] = True
    kwargs.setdefault("file", sys.stdout)
    kwargs.setdefault("leave", True)
    return _text_tqdm(iterable, **kwargs)
