"""Building frozen config dataclasses from plain dicts (JSON/TOML files, CLI), refusing unknown keys."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def dataclass_from_dict(cls: type[T], data: Mapping[str, Any], what: str) -> T:
    """``cls(**data)``, but a key that is not a field is an error naming it: typos must not pass silently."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} key(s) {unknown}; known keys: {sorted(known)}")
    return cls(**dict(data))


def check_kwargs(func: Any, kwargs: Mapping[str, Any], what: str) -> None:
    """Refuse keyword arguments that ``func`` does not take, or whose value does not match its type hint.

    One line naming the key and what is expected, e.g. ``NAS-Bench-201-v0: unknown keyword 'fidelty'
    (did you mean 'fidelity'?)`` or ``... keyword 'fidelity' expects int, got str '12'``. Hints this check
    cannot read (``Any``, a class it cannot import) accept anything.
    """
    import difflib
    import inspect
    import typing

    params = inspect.signature(func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - an unresolvable hint only weakens the check
        hints = {}
    for key, value in kwargs.items():
        if key not in params:
            close = difflib.get_close_matches(key, list(params), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ArgumentError(f"{what}: unknown keyword {key!r}{hint}; it takes {', '.join(params)}")
        expected = hints.get(key)
        if expected is not None and not _matches(value, expected):
            raise ArgumentError(
                f"{what}: keyword {key!r} expects {_type_name(expected)}, got {type(value).__name__} {value!r}"
            )


class ArgumentError(ValueError):
    """A keyword argument that a function does not take, or one of the wrong type."""


def _matches(value: Any, hint: Any) -> bool:
    import os
    import types
    import typing

    if hint is Any or hint is object:
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(_matches(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is not None:  # dict[str, Any], list[int], ...: check the container only
        return isinstance(value, origin)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type) and issubclass(hint, os.PathLike):
        return isinstance(value, (str, os.PathLike))
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _type_name(hint: Any) -> str:
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "None"
    return getattr(hint, "__name__", str(hint))
