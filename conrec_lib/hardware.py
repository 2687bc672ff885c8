"""Where code runs: the torch device, how many CPU threads a block may use, a block's own seeded RNG, and
transformers kept quiet (its progress bars and notes would flood a notebook's output)."""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch


def resolve_device(device: Optional[str] = None) -> str:
    """`None` or "auto": "cuda" when a GPU is visible, else "cpu"; anything else as given.

    >>> resolve_device("cpu")
    'cpu'
    """
    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@contextlib.contextmanager
def cpu_threads(n: Optional[int]) -> Iterator[None]:
    """Run the block with `n` CPU threads in torch and in BLAS/OpenMP (k-means); None: unchanged.

    Small models train faster on one thread when the two cores are shared (measured: 3-8x); on an
    idle 2-core machine two threads are ~1.6x faster. The old setting is restored afterwards.
    """
    from threadpoolctl import threadpool_limits  # installed with scikit-learn

    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global RNG seeded, restoring the caller's RNG state afterwards.

    transformers initialises weights from the global RNG; this keeps that use local and reproducible.
    """
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def quiet_hub_progress() -> Iterator[None]:
    """Hide transformers' "Writing model shards" bars: a loop that saves often would flood a notebook's output."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Only transformers' errors are logged inside the block (its info-level notes flood notebook outputs)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
