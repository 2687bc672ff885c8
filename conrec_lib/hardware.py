"""Where code runs: the torch device, how many CPU threads a block may use, independent jobs side by side in
processes, a block's own seeded RNG, and transformers kept quiet (its progress bars and notes would flood a
notebook's output)."""
from __future__ import annotations

import concurrent.futures
import contextlib
import io
import multiprocessing
import os
import pickle
import sys
from typing import Any, Callable, Iterator, Optional, Sequence

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


WORKERS_ENV = "CONREC_WORKERS"  # set to 1 to run every job in the calling process


def job_workers(n_jobs: int, device: Optional[str] = None) -> int:
    """How many processes `run_jobs` uses: one per CPU core up to `n_jobs`, 1 on a GPU (the jobs would share it)
    or when the environment variable CONREC_WORKERS says so (it caps the number)."""
    if resolve_device(device) != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = os.environ.get(WORKERS_ENV, "").strip()
    if limit:
        if not limit.isdigit() or int(limit) < 1:
            raise ValueError(f"{WORKERS_ENV}={limit!r}: use a whole number >= 1 (1: no worker processes)")
        cores = min(cores, int(limit))
    return max(1, min(n_jobs, cores))


def _job(fn: Callable, threads: Optional[int], args: tuple) -> Any:
    with cpu_threads(threads):
        return fn(*args)


def _captured_job(fn: Callable, threads: Optional[int], args: tuple) -> tuple[Any, str, str]:
    """`_job`, and what it printed to stdout and stderr (shown later, in the order of the jobs)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        result = _job(fn, threads, args)
    return result, out.getvalue(), err.getvalue()


def _pickled_job(payload: bytes) -> bytes:
    from conrec_lib import progress, runs

    progress.QUIET = True  # a worker's bars would not reach the notebook
    os.environ[WORKERS_ENV] = "1"  # a job inside a job runs in its worker: the cores are taken
    fn, threads, args, building = pickle.loads(payload)
    runs._BUILDING.update(building)  # the stages the caller is building: `Run.stage_dir` finds their temp folders
    return pickle.dumps(_captured_job(fn, threads, args))


def run_jobs(fn: Callable, jobs: Sequence[tuple], threads: Optional[int] = 1, workers: int = 1) -> list:
    """`[fn(*args) for args in jobs]`, each job on `threads` CPU threads; with `workers` > 1, `workers` jobs run
    side by side: the calling process takes jobs in turn (the first one first, so its progress bars show), and
    `workers - 1` fresh (spawned) processes take the others. The results come back in the order of `jobs`.

    The small models train on one thread (`cpu_threads`), so a 2-core machine runs two of them in the time of one.
    Every job must be a pure function of its arguments (its own seeds, no shared state): then a worker computes
    bit for bit what the calling process would, and the results do not depend on `workers` (tests compare both).
    The jobs given to workers and their results travel by pickle (`fn` must live in a module); an exception in
    any job is raised here. What the jobs print (stdout, stderr) comes out here in the order of the jobs, as one
    process would print it: the first job's live, the others' as soon as the jobs before them are done.
    """
    if workers <= 1 or len(jobs) <= 1:
        return [_job(fn, threads, args) for args in jobs]
    from conrec_lib import runs

    results: dict[int, Any] = {}
    waiting = list(range(1, len(jobs)))  # job 0 is the calling process's
    building = dict(runs._BUILDING)
    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools mid-use
    with concurrent.futures.ProcessPoolExecutor(workers - 1, mp_context=context) as pool:
        running: dict[concurrent.futures.Future, int] = {}

        def hand_out() -> None:  # keep each worker busy, with one job queued behind the one it runs
            while waiting and len(running) < 2 * (workers - 1):
                n = waiting.pop(0)
                # plain pickle, here and now, between the calling process's own jobs: the pool would pickle in a
                # thread of its own, with torch's reducers, which move tensors into shared memory under a running
                # job's feet (measured: NaNs)
                running[pool.submit(_pickled_job, pickle.dumps((fn, threads, jobs[n], building)))] = n

        printed: dict[int, tuple[str, str]] = {}
        shown = [1]  # the next job whose printed text is due (job 0 printed live)

        def show() -> None:
            while shown[0] in printed:
                out, err = printed.pop(shown[0])
                sys.stdout.write(out)
                sys.stderr.write(err)
                shown[0] += 1

        def collect(done) -> None:
            for future in done:
                n = running.pop(future)
                results[n], *printed[n] = pickle.loads(future.result())
            show()

        hand_out()
        results[0] = _job(fn, threads, jobs[0])
        while waiting:
            collect([f for f in running if f.done()])
            hand_out()
            if not waiting:
                break
            mine = waiting.pop(0)
            results[mine], *printed[mine] = _captured_job(fn, threads, jobs[mine])
            show()
        while running:
            collect(concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED).done)
    show()
    return [results[n] for n in range(len(jobs))]


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
