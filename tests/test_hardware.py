"""Where code runs: `hardware.run_jobs` (independent jobs side by side in processes) and its worker count."""
import operator
import os

import pytest

from conrec_lib import hardware


def test_run_jobs_returns_every_result_in_the_order_of_the_jobs():
    jobs = [(n, 3) for n in range(7)]
    assert hardware.run_jobs(operator.mul, jobs, workers=2) == [3 * n for n in range(7)]
    assert hardware.run_jobs(operator.mul, jobs, workers=1) == [3 * n for n in range(7)]
    assert hardware.run_jobs(operator.mul, [], workers=2) == []


def test_run_jobs_shares_the_jobs_between_this_process_and_a_worker():
    pids = hardware.run_jobs(os.getpid, [()] * 4, workers=2)
    assert pids[0] == os.getpid()  # the first job runs here, where its progress bars can show
    assert len(set(pids)) == 2


def test_a_failing_job_raises_in_the_caller_wherever_it_ran():
    for bad in (0, 1):  # here, and in the worker (it takes jobs 1 and 2 first)
        jobs = [(1, 1)] * 4
        jobs[bad] = (1, 0)
        with pytest.raises(ZeroDivisionError):
            hardware.run_jobs(operator.truediv, jobs, workers=2)


def test_job_workers_reads_its_cap_from_the_environment(monkeypatch):
    monkeypatch.setenv(hardware.WORKERS_ENV, "1")
    assert hardware.job_workers(5, "cpu") == 1
    assert hardware.job_workers(5, "cuda") == 1
    monkeypatch.setenv(hardware.WORKERS_ENV, "two")
    with pytest.raises(ValueError, match="CONREC_WORKERS='two'"):
        hardware.job_workers(5, "cpu")
    monkeypatch.delenv(hardware.WORKERS_ENV)
    assert 1 <= hardware.job_workers(5, "cpu") <= 5 and hardware.job_workers(1, "cpu") == 1


def test_what_the_jobs_print_comes_out_in_the_order_of_the_jobs(capsys):
    lines = [f"job {n}" for n in range(6)]
    hardware.run_jobs(print, [(line,) for line in lines], workers=2)
    assert capsys.readouterr().out.splitlines() == lines
