"""Where code runs: the torch device and how many CPU threads a block may use."""
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
