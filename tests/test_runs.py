import json

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
    run.start("01_data", {"seed": 1})  # a restarted stage is unfinished again
    assert not run.is_done("01_data")


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
