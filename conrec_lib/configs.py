"""Type checks for the config dataclasses: a wrongly typed field fails when the config is built, naming it.

Every `*Config.__post_init__` calls `check_types(self)` first, so `SplitConfig(horizon_days="7")` says
`SplitConfig.horizon_days: expected int, got str '7'` instead of failing later at a `<` deep in a stage.
The annotations are the contract. What they accept:

- `int`: an integer (numpy's too), never a bool or a float (`7.0` is a typo for `7` or a wrong formula);
- `float`: any real number, ints included (`weight_decay=0` is fine), never a bool;
- `str`, `bool`: only those;
- `Optional[X]`, `X | Y`: any arm; `Literal[...]`: one of the values;
- `tuple[X, ...]`, `tuple[X, Y]`, `list[X]`: a tuple, list or range (JSON gives back lists) whose items match;
  a tuple of pairs may also be given as a dict (`feedback_weights={"positive": 1.0}`);
- `dict[K, V]`: a mapping whose keys and values match; a bare `tuple` or `dict` checks the container only;
- a class (a nested config): an instance of it.
"""
from __future__ import annotations

import dataclasses
import functools
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Optional, Union

import numpy as np

SEQUENCES = (tuple, list, range, np.ndarray)


class ConfigTypeError(TypeError, ValueError):
    """A config field holds a value of the wrong type (also a ValueError: code that catches bad values still does)."""


def check_types(cfg: Any) -> None:
    """Raise `ConfigTypeError` naming the class, field, expected type and value found, at the first mismatch.

    >>> @dataclasses.dataclass
    ... class DemoConfig:
    ...     steps: int = 1
    ...     lr: float = 1e-3
    >>> check_types(DemoConfig(steps=10, lr=1))
    >>> check_types(DemoConfig(steps="7"))
    Traceback (most recent call last):
    ...
    conrec_lib.configs.ConfigTypeError: DemoConfig.steps: expected int, got str '7'
    """
    cls = type(cfg)
    for name, hint in _hints(cls).items():
        problem = _problem(getattr(cfg, name), hint, f"{cls.__name__}.{name}")
        if problem:
            raise ConfigTypeError(problem)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of the fields `__init__` takes (postponed annotations are strings)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _problem(value: Any, hint: Any, where: str) -> Optional[str]:
    """None when `value` fits `hint`, else the error message (naming the offending item of a container)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return None
    if origin in (Union, types.UnionType):
        return None if any(_problem(value, arm, where) is None for arm in args) else _wrong(value, hint, where)
    if origin is Literal:
        return None if value in args else f"{where}: expected one of {args}, got {value!r}"
    if hint in (tuple, list) or origin in (tuple, list):
        return _sequence_problem(value, hint, args, where)
    if hint is dict or origin is dict:
        return _mapping_problem(value, hint, args, where)
    if isinstance(hint, type):
        return None if _is_instance(value, hint) else _wrong(value, hint, where)
    return None  # an annotation this checker does not model (a Callable, a TypeVar): left to __post_init__


def _is_instance(value: Any, cls: type) -> bool:
    is_bool = isinstance(value, (bool, np.bool_))
    if cls is bool:
        return is_bool
    if cls is int:
        return isinstance(value, numbers.Integral) and not is_bool
    if cls is float:
        return isinstance(value, numbers.Real) and not is_bool
    return isinstance(value, cls)


def _sequence_problem(value: Any, hint: Any, args: tuple, where: str) -> Optional[str]:
    pairs = len(args) == 2 and args[1] is Ellipsis and typing.get_origin(args[0]) is tuple
    if pairs and isinstance(value, Mapping):
        value = list(value.items())  # a tuple of (key, value) pairs given as a dict
    if not isinstance(value, SEQUENCES):
        return _wrong(value, hint, where)
    if not args:
        return None
    if args[-1] is Ellipsis:
        item_hints = [args[0]] * len(value)
    elif len(args) != len(value):
        return f"{where}: expected {_name(hint)} ({len(args)} items), got {len(value)} items {_shown(value)}"
    else:
        item_hints = list(args)
    problems = (_problem(item, h, f"{where}[{i}]") for i, (item, h) in enumerate(zip(value, item_hints)))
    return next((p for p in problems if p), None)


def _mapping_problem(value: Any, hint: Any, args: tuple, where: str) -> Optional[str]:
    if not isinstance(value, Mapping):
        return _wrong(value, hint, where)
    if not args:
        return None
    key_hint, value_hint = args
    for key, item in value.items():
        problem = _problem(key, key_hint, f"{where} key {key!r}") or _problem(item, value_hint, f"{where}[{key!r}]")
        if problem:
            return problem
    return None


def _wrong(value: Any, hint: Any, where: str) -> str:
    return f"{where}: expected {_name(hint)}, got {type(value).__name__} {_shown(value)}"


def _name(hint: Any) -> str:
    """`int`, `int or None`, `tuple[int, ...]`: how an annotation reads in an error."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return "None"
    if origin in (Union, types.UnionType):
        arms = sorted(args, key=lambda a: a is type(None))  # None last
        return " or ".join(_name(a) for a in arms)
    if origin is not None and args:
        inner = ", ".join("..." if a is Ellipsis else _name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(hint, "__name__", str(hint).replace("typing.", ""))


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def from_dict(cls: type, saved: Mapping) -> Any:
    """A config rebuilt from its `config.json` dict: nested configs rebuilt, JSON lists back to tuples where the
    field is a tuple; keys the class no longer has are dropped (a field added since keeps its default).

    >>> @dataclasses.dataclass
    ... class DemoConfig:
    ...     sizes: tuple[int, ...] = (1,)
    ...     seed: int = 0
    >>> from_dict(DemoConfig, {"sizes": [2, 3], "seed": 1, "gone": True})
    DemoConfig(sizes=(2, 3), seed=1)
    """
    hints = _hints(cls)
    return cls(**{name: _rebuilt(hints[name], value) for name, value in saved.items() if name in hints})


def _rebuilt(hint: Any, value: Any) -> Any:
    arms = [a for a in typing.get_args(hint) if a is not type(None)] if _is_union(hint) else [hint]
    for arm in arms:
        if isinstance(arm, type) and dataclasses.is_dataclass(arm) and isinstance(value, Mapping):
            return from_dict(arm, value)
        if typing.get_origin(arm) is tuple and isinstance(value, list):
            args = typing.get_args(arm)
            inner = args[0] if len(args) == 2 and args[1] is Ellipsis else None
            return tuple(_rebuilt(inner, v) if inner is not None else v for v in value)
    return value


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)


def read(cls: type, path: Any) -> Any:
    """`from_dict(cls, ...)` of a stage's `config.json` (errors name the file)."""
    from conrec_lib import runs  # core, like this module; imported here so configs stays import-light

    return from_dict(cls, runs.read_json(path))
