import json
import os
import shutil
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

from conrec_lib import runs


def test_atomic_path_leaves_old_content_on_crash(tmp_path):
    target = tmp_path / "a.json"
    runs.write_json(target, {"x": 1})
    with pytest.raises(RuntimeError):
        with runs.atomic_path(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("crash")
    assert json.loads(target.read_text()) == {"x": 1}
    assert list(tmp_path.iterdir()) == [target]  # no temp file left behind


def test_write_json_handles_numpy_scalars_and_tuples(tmp_path):
    runs.write_json(tmp_path / "m.json", {"a": np.float32(0.5), "b": (1, np.int64(2))})
    assert runs.read_json(tmp_path / "m.json") == {"a": 0.5, "b": [1, 2]}


def test_read_json_names_a_corrupt_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        runs.read_json(tmp_path / "bad.json")


def test_stage_is_done_only_after_metrics(tmp_path):
    run = runs.Run.at(tmp_path / "r")
    run.start("01_data", {"seed": 0})
    assert not run.is_done("01_data")
    with pytest.raises(runs.StageMissingError, match="01_data_exploration.ipynb"):
        run.require("01_data")
    run.finish("01_data", {"n_users": 3})
    assert run.metrics("01_data") == {"n_users": 3}
    out = run.start("01_data", {"seed": 1})  # a re-run builds beside the finished stage, which stays until finish
    assert out != run.root / "01_data" and run.stage_dir("01_data") == out
    assert run.metrics("01_data") == {"n_users": 3}
    run.finish("01_data", {"n_users": 4})
    assert run.metrics("01_data") == {"n_users": 4} and runs.read_json(run.root / "01_data" / "config.json") == {"seed": 1}
    assert sorted(p.name for p in run.root.iterdir()) == ["01_data"]  # no build folder, no lock left


def test_unknown_stage_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown stage"):
        runs.Run.at(tmp_path).stage_dir("99_nope")


def test_relative_run_dirs_resolve_from_the_project_root():
    assert runs.resolve("runs/x") == runs.project_root() / "runs" / "x"
    assert (runs.project_root() / "pyproject.toml").is_file()


def test_atomic_dir_replaces_a_folder_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "adapter"
    with runs.atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError):
        with runs.atomic_dir(target) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("crash")
    assert (target / "weights").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temporary folders left behind
    with runs.atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v2")
    assert (target / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


# --- run-folder integrity: atomic re-runs, fingerprints, the lock, RUN_DIR --------------------------------------

def finished(run, stage, config, metrics=None):
    with run.building(stage, config) as out:
        (out / "artifact.txt").write_text(str(config))
        run.finish(stage, metrics or {"config": config})
    return out


def test_a_failed_re_run_keeps_the_finished_stage_and_its_config(tmp_path):
    run = runs.Run.at(tmp_path / "r")
    finished(run, "02_semantic_ids", {"embedder": "minilm"})
    with pytest.raises(ValueError, match="unknown embedder"):
        with run.building("02_semantic_ids", {"embedder": "minilmm"}) as out:
            (out / "artifact.txt").write_text("half")
            raise ValueError("unknown embedder 'minilmm'")
    stage = run.require("02_semantic_ids")
    assert runs.read_json(stage / "config.json") == {"embedder": "minilm"}
    assert (stage / "artifact.txt").read_text() == str({"embedder": "minilm"})
    assert sorted(p.name for p in run.root.iterdir()) == ["02_semantic_ids"]


KILLED = """
import os, sys
from conrec_lib import runs
run = runs.Run.at(sys.argv[1])
out = run.start("01_data", {"seed": 1})
(out / "half.parquet").write_text("half-written")
os._exit(9)  # killed mid-stage: no finish, no clean-up
"""


def test_a_killed_re_run_loses_nothing_and_its_leftovers_go_at_the_next_start(tmp_path):
    run = runs.Run.at(tmp_path / "r")
    finished(run, "01_data", {"seed": 0})
    done = subprocess.run([sys.executable, "-c", KILLED, str(run.root)], cwd=runs.project_root())
    assert done.returncode == 9
    assert any(".build-" in p.name for p in run.root.iterdir()) and (run.root / runs.LOCK).exists()
    assert runs.read_json(run.require("01_data") / "config.json") == {"seed": 0}  # the finished stage is intact
    finished(run, "01_data", {"seed": 2})  # the dead process's lock is taken over, its build folder removed
    assert sorted(p.name for p in run.root.iterdir()) == ["01_data"]
    assert runs.read_json(run.require("01_data") / "config.json") == {"seed": 2}


def test_a_swap_killed_half_way_is_recovered(tmp_path):
    run = runs.Run.at(tmp_path / "r")
    finished(run, "01_data", {"seed": 0})
    os.replace(run.root / "01_data", run.root / ".01_data.old-99999")  # killed between the two renames
    run.start("02_semantic_ids", {"x": 1})
    assert runs.read_json(run.root / "01_data" / "config.json") == {"seed": 0}
    run.abort("02_semantic_ids")


def test_a_later_stage_built_on_an_older_earlier_stage_is_stale(tmp_path):
    run = runs.Run.at(tmp_path / "r")
    finished(run, "01_data", {"seed": 0})
    finished(run, "02_semantic_ids", {"k": 8})
    finished(run, "03_positivity_bias", {"steps": 2})
    run.require("03_positivity_bias")
    finished(run, "01_data", {"seed": 1})  # notebook 01 re-run with another seed
    for stage in ("02_semantic_ids", "03_positivity_bias"):
        with pytest.raises(runs.StaleStageError, match="01_data has been re-run") as err:
            run.require(stage)
        assert "02_semantic_ids.ipynb, notebooks/03_positivity_bias.ipynb" in str(err.value)
    finished(run, "02_semantic_ids", {"k": 8})
    run.require("02_semantic_ids")
    with pytest.raises(runs.StaleStageError, match="03_positivity_bias.ipynb"):
        run.require("03_positivity_bias")  # still built from the old 01 and 02


def test_a_stage_without_inputs_record_is_stale_and_a_stage_cannot_finish_unstarted(tmp_path):
    run = runs.Run.at(tmp_path / "r")
    finished(run, "01_data", {"seed": 0})
    (run.root / "01_data" / runs.INPUTS).unlink()
    with pytest.raises(runs.StaleStageError, match="no inputs.json"):
        run.require("01_data")
    with pytest.raises(RuntimeError, match="not started"):
        run.finish("02_semantic_ids", {})
    with pytest.raises(RuntimeError, match="without run.finish"):
        with run.building("02_semantic_ids", {}):
            pass
    assert not run.is_done("02_semantic_ids")


HOLDER = """
import sys, time
from conrec_lib import runs
run = runs.Run.at(sys.argv[1])
run.start("01_data", {"seed": 1})
print("started", flush=True)
time.sleep(60)
"""


def test_a_second_run_into_a_folder_in_use_stops_at_once_naming_the_first(tmp_path):
    run = runs.Run.at(tmp_path / "r")
    other = subprocess.Popen([sys.executable, "-c", HOLDER, str(run.root)], cwd=runs.project_root(),
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "started"
        with pytest.raises(runs.RunLockedError, match=rf"process {other.pid} .*building stage '01_data' since") as err:
            run.start("01_data", {"seed": 0})
        assert "delete" in str(err.value) and ".lock" in str(err.value)
        assert not run.is_done("01_data")
    finally:
        other.kill()
        other.wait()
    finished(run, "01_data", {"seed": 0})  # its lock is stale once it has gone
    assert runs.read_json(run.require("01_data") / "config.json") == {"seed": 0}


@pytest.mark.parametrize("run_dir, message", [
    ("", "is empty"),
    ("   ", "is empty"),
    (".", "repository root"),
    ("notebooks", "notebooks/ folder"),  # a run would overwrite the project's own files
    ("conrec_lib/x", "conrec_lib/ folder"),
    ("..", "folder above it"),
    ("/", "folder above it"),
])
def test_bad_run_dirs_are_refused(run_dir, message):
    with pytest.raises(ValueError, match=message):
        runs.Run.at(run_dir)


def test_run_dir_expands_home_and_refuses_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert runs.Run.at("~/myrun").root == tmp_path / "myrun"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        runs.Run.at(tmp_path / "afile")


def test_artifacts_are_written_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        path = runs.write_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_damaged_json_file_names_the_notebook_that_writes_it(tmp_path):
    run = runs.Run.at(tmp_path / "r")
    finished(run, "01_data", {"seed": 0})
    (run.root / "01_data" / "metrics.json").write_text("{half")
    with pytest.raises(ValueError, match=r"metrics.json: not valid JSON .*Re-run notebooks/01_data_exploration.ipynb"):
        run.metrics("01_data")


def test_a_stage_records_the_inputs_it_read_not_the_ones_there_at_finish(tmp_path):
    """Read 01, then another process re-runs 01, then 02 finishes: 02 was built from the old 01, so it is stale."""
    run = runs.Run.at(tmp_path / "r")
    finished(run, "01_data", {"seed": 0})
    run.require("01_data")  # 02 reads its input before it starts
    code = "import sys; from conrec_lib import runs; r = runs.Run.at(sys.argv[1]); r.start('01_data', {'seed': 1}); " \
           "r.finish('01_data', {})"
    subprocess.run([sys.executable, "-c", code, str(run.root)], cwd=runs.project_root(), check=True)
    finished(run, "02_semantic_ids", {"k": 8})
    with pytest.raises(runs.StaleStageError, match="01_data has been re-run"):
        run.require("02_semantic_ids")


def test_a_removed_input_is_named_in_the_notebooks_to_re_run(tmp_path):
    run = runs.Run.at(tmp_path / "r")
    for stage in ("01_data", "02_semantic_ids", "03_positivity_bias"):
        finished(run, stage, {"s": stage})
    shutil.rmtree(run.root / "01_data")
    with pytest.raises(runs.StaleStageError, match="Re-run, in order: notebooks/01_data_exploration.ipynb, "
                                                   "notebooks/02_semantic_ids.ipynb, notebooks/03_positivity_bias"):
        run.require("03_positivity_bias")


def test_a_lock_being_written_is_held_not_taken_over(tmp_path):
    run = runs.Run.at(tmp_path / "r")
    run.root.mkdir(parents=True)
    (run.root / runs.LOCK).write_text("")  # another process between creating and filling it (not ours: we link)
    with pytest.raises(runs.RunLockedError, match="in use"):
        run.start("01_data", {})
    old = time.time() - 3600
    os.utime(run.root / runs.LOCK, (old, old))  # an hour old and unreadable: stale
    run.start("01_data", {})
    run.abort("01_data")
    assert not (run.root / runs.LOCK).exists()


def test_saved_model_files_are_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        with runs.atomic_dir(tmp_path / "adapter") as tmp:
            fd = os.open(tmp / "model.safetensors", os.O_CREAT | os.O_WRONLY, 0o600)  # as save_pretrained may
            os.close(fd)
            (tmp / "sub").mkdir(mode=0o700)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "adapter" / "model.safetensors").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "adapter" / "sub").stat().st_mode) == 0o755


def test_run_dir_below_a_file_is_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        runs.Run.at(tmp_path / "afile" / "sub")
