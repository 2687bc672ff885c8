"""Check a notebook's parameters in every run: unknown names and wrong types stop it before any file is written.

papermill injects `-p NAME VALUE` as a global assignment after the cell tagged `parameters`, and only warns
when the notebook does not define `NAME` (so `-p SFT_STEP 2000` silently runs the default). Each notebook's
next cell calls `check(globals(), "<its stem>")`, which compares every UPPER_CASE global with the names and
default types of the notebook's own `parameters` cell.
"""
from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

from conrec_lib import runs

NOTEBOOK_DIR = runs.project_root() / "notebooks"
_UPPER = re.compile(r"^[A-Z][A-Z0-9_]*$")


class ParameterError(ValueError):
    """A notebook got a parameter it does not define, or one of the wrong type."""


def notebook_path(notebook: str | os.PathLike) -> Path:
    """`"03_positivity_bias"` -> `notebooks/03_positivity_bias.ipynb`; a path to an .ipynb is kept."""
    path = Path(notebook)
    if path.suffix != ".ipynb":
        path = NOTEBOOK_DIR / f"{path.name}.ipynb"
    if not path.is_file():
        raise FileNotFoundError(f"{runs.shown(path)}: notebook not found; pass a stem such as '01_data_exploration'")
    return path


def defaults(notebook: str | os.PathLike) -> dict[str, Any]:
    """The names and default values of the notebook's cell tagged `parameters` (UPPER_CASE = literal lines)."""
    path = notebook_path(notebook)
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return _literal_assignments("".join(cell["source"]), path)
    raise ValueError(f"{runs.shown(path)}: no code cell tagged 'parameters'; papermill needs one to inject parameters")


def _literal_assignments(source: str, path: Path) -> dict[str, Any]:
    """`NAME = literal` lines of a parameters cell, in order."""
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError as err:
                raise ValueError(f"{runs.shown(path)}: parameter {node.targets[0].id} is not a literal "
                                 f"(line {node.lineno}); the parameters cell holds UPPER_CASE = literal lines only") from err
    return found


def type_name(default: Any) -> str:
    """What a parameter with this default accepts, in words.

    >>> type_name(0.5), type_name(3), type_name(True), type_name("x")
    ('float (or int)', 'int', 'bool (True or False)', 'str')
    """
    if isinstance(default, bool):
        return "bool (True or False)"
    if isinstance(default, float):
        return "float (or int)"
    return type(default).__name__


def accepts(default: Any, value: Any) -> bool:
    """Whether `value` has the type of `default`: an int is a fine float, a bool is never an int or float.

    >>> accepts(0.5, 2), accepts(2, 0.5), accepts(2, True), accepts(True, 1), accepts("a", "b")
    (True, False, False, False, True)
    """
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def problems(values: Mapping[str, Any], known: Mapping[str, Any]) -> list[str]:
    """One sentence per unknown name or wrongly typed value (empty when all is well)."""
    found = []
    for name, value in values.items():
        if name not in known:
            found.append(f"unknown parameter {name} = {value!r}")
        elif not accepts(known[name], value):
            hint = " (pass strings with papermill's -r NAME VALUE)" if isinstance(known[name], str) else ""
            found.append(f"parameter {name} expects {type_name(known[name])}, got {type(value).__name__} "
                         f"{value!r}{hint}")
    return found


def check(namespace: Mapping[str, Any], notebook: str | os.PathLike) -> None:
    """Raise `ParameterError` when `namespace` (a notebook's `globals()`) holds an UPPER_CASE name the notebook's
    `parameters` cell does not define, or a defined one of the wrong type; the message names the parameter, the
    expected type and the known names."""
    known = defaults(notebook)
    values = {k: v for k, v in namespace.items() if _UPPER.match(k)}
    found = problems(values, known)
    if found:
        listing = ", ".join(f"{k} ({type_name(v)})" for k, v in known.items())
        raise ParameterError(f"{notebook_path(notebook).name}: " + "; ".join(found)
                             + f". Known parameters: {listing}. Fix the -p option and run again.")
