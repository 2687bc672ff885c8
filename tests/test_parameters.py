"""Parameters are checked in every run: unknown names and wrong types stop a notebook before it writes a file."""
import json
import subprocess
import sys

import pytest

import conrec_lib.parameters as parameters
from conrec_lib import __main__ as cli
from conrec_lib import runs, tutorial

NB = "01_data_exploration"


def test_defaults_read_the_parameters_cell():
    d = parameters.defaults(NB)
    assert d["SEED"] == 0 and d["RUN_DIR"] == "runs/tutorial" and d["DATASET"] == "simulated"


def test_every_notebook_checks_its_parameters_right_after_the_parameters_cell():
    for path in tutorial.notebooks():
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        assert "parameters" in cells[0]["metadata"].get("tags", []), path.name
        assert f'parameters.check(globals(), "{path.stem}")' in "".join(cells[1]["source"]), path.name


def test_the_defaults_pass():
    for path in tutorial.notebooks():
        parameters.check(parameters.defaults(path), path.stem)


def test_lower_case_and_ipython_names_are_ignored():
    parameters.check({"In": [], "_": None, "pd": object(), "SEED": 3}, NB)


def test_an_unknown_name_is_named_with_the_known_ones():
    with pytest.raises(parameters.ParameterError, match=r"unknown parameter NO_SUCH = 1.*Known parameters: .*SEED \(int\)"):
        parameters.check({"SEED": 0, "NO_SUCH": 1}, NB)


@pytest.mark.parametrize("name, value, expected", [
    ("SEED", "abc", "int"),  # papermill's -p SEED abc arrives as a str
    ("SEED", 1.5, "int"),
    ("SEED", True, "int"),
    ("DATASET", 3, "str"),
])
def test_a_wrong_type_names_the_parameter_and_the_type(name, value, expected):
    with pytest.raises(parameters.ParameterError, match=rf"parameter {name} expects {expected}"):
        parameters.check({name: value}, NB)


def test_int_is_fine_for_a_float_but_bool_must_be_bool():
    assert parameters.accepts(0.5, 2) and parameters.accepts(0.5, 2.5)
    assert not parameters.accepts(0.5, True) and not parameters.accepts(True, 1) and not parameters.accepts(True, "True")
    parameters.check({"LEARNING_RATE": 1, "PLAIN_GRPO": False}, "05_progressive_grpo")


def test_an_unknown_notebook_says_how_to_name_one():
    with pytest.raises(FileNotFoundError, match="pass a stem"):
        parameters.defaults("99_nope")


def test_tutorial_rejects_a_wrong_type_before_running(tmp_path):
    with pytest.raises(tutorial.UnknownParameterError, match="SEED expects int"):
        tutorial.run_notebook(tutorial.NOTEBOOK_DIR / f"{NB}.ipynb", tmp_path, {"SEED": "abc"})
    assert not any(tmp_path.iterdir())


def test_cli_overrides_go_to_every_selected_notebook_that_defines_the_name():
    paths = tutorial.select(["03", "05_progressive_grpo"])
    assert [p.stem for p in paths] == ["03_positivity_bias", "05_progressive_grpo"]
    extra = tutorial.cli_overrides([["SFT_STEPS", "10"], ["SEED", "2"], ["LEARNING_RATE", "1e-4"]], paths)
    assert extra == {"03_positivity_bias": {"SFT_STEPS": 10, "SEED": 2},
                     "05_progressive_grpo": {"SEED": 2, "LEARNING_RATE": 1e-4}}


@pytest.mark.parametrize("pairs, message", [
    ([["NO_SUCH", "1"]], "no selected notebook .* defines NO_SUCH"),
    ([["SFT_STEPS", "ten"]], "SFT_STEPS expects int"),
    ([["RUN_DIR", "x"]], "use --run-dir"),
])
def test_cli_overrides_fail_with_a_fix(pairs, message):
    with pytest.raises(ValueError, match=message):
        tutorial.cli_overrides(pairs, tutorial.select(["03"]))


def test_cli_run_with_a_bad_parameter_exits_2(capsys):
    assert cli.main(["run", "--only", "03", "-p", "NO_SUCH", "1"]) == 2
    assert "NO_SUCH" in capsys.readouterr().err


def test_unknown_only_is_an_error():
    with pytest.raises(ValueError, match="no such notebook"):
        tutorial.select(["07"])


@pytest.mark.slow
def test_papermill_with_an_unknown_parameter_fails_before_writing(tmp_path):
    """What papermill alone (no CLI) does: the notebook's own check cell stops the run."""
    run_dir = tmp_path / "run"
    out = tmp_path / "out.ipynb"
    proc = subprocess.run([sys.executable, "-m", "papermill", str(tutorial.NOTEBOOK_DIR / f"{NB}.ipynb"), str(out),
                           "-p", "NO_SUCH", "1", "-p", "RUN_DIR", str(run_dir), "-k", "python3",
                           "--cwd", str(runs.project_root())], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "NO_SUCH" in proc.stdout + proc.stderr
    assert not run_dir.exists() or not any(run_dir.iterdir())
