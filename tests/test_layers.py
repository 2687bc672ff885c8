"""The library's layers point one way: a package never imports one above it (STYLE.md, "Layout").

core (the top-level modules) < data < sids < baselines < llm < diagnosis, context < rl < evaluation; packages on
one level do not import each other. Every import counts, also those inside functions.
"""
import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "conrec_lib"
LEVEL = {"core": 0, "data": 1, "sids": 2, "baselines": 3, "llm": 4, "diagnosis": 5, "context": 5, "rl": 6,
         "evaluation": 7}
TOP = {"tutorial", "__main__"}  # the command line runs notebooks: above every package, imported by none


def package_of(module: str) -> str:
    """'conrec_lib.rl.grpo' -> 'rl'; a top-level module ('conrec_lib.runs') -> 'core'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else ("top" if parts[-1] in TOP else "core")


def imports(path: Path) -> set[str]:
    """The conrec_lib modules `path` imports (`from conrec_lib.x import y` counts y when it is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("conrec_lib.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("conrec_lib"):
            if node.module == "conrec_lib" or node.module.count(".") == 1 and (LIB / node.module.split(".")[1]).is_dir():
                found |= {f"{node.module}.{a.name}" for a in node.names}
            else:
                found.add(node.module)
    return found


def module_name(path: Path) -> str:
    return ".".join(("conrec_lib", *path.relative_to(LIB).with_suffix("").parts))


MODULES = sorted(p for p in LIB.rglob("*.py") if p.name != "__init__.py")


def test_every_package_has_a_level_and_an_empty_init():
    packages = {p.name for p in LIB.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LEVEL) - {"core"}
    assert all((LIB / p / "__init__.py").read_text() == "" for p in packages)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_point_down_the_layers(path):
    here = package_of(module_name(path))
    wrong = []
    for target in sorted(imports(path)):
        there = package_of(target)
        if here == "top" or there == here:
            continue
        if there == "top" or LEVEL[there] >= LEVEL[here]:
            wrong.append(f"{target} ({there})")
    assert not wrong, f"{module_name(path)} ({here}) imports a package on its level or above: {wrong}"


def test_the_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from conrec_lib.rl import grpo\n    import conrec_lib.llm.model as model\n")
    assert imports(bad) == {"conrec_lib.rl.grpo", "conrec_lib.llm.model"}
    assert package_of("conrec_lib.rl.grpo") == "rl" and package_of("conrec_lib.runs") == "core"
