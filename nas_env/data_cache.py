"""One per-process cache of prepared datasets: tensors read and moved to a device once, reused by every
child the process trains (the CIFAR-10 and PTB evaluators, retraining's test split)."""

from __future__ import annotations

from typing import Any, Callable, Hashable, TypeVar

__all__ = ["cached", "clear"]

T = TypeVar("T")

_CACHE: dict[tuple[Hashable, ...], Any] = {}


def cached(key: tuple[Hashable, ...], build: Callable[[], T]) -> T:
    """The value stored under ``key``, built by ``build()`` the first time (start ``key`` with a name of
    its own, e.g. ``("cifar10-train", ...)``, so different datasets never share an entry)."""
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def clear() -> None:
    """Forget every prepared dataset (frees their memory once nothing else holds them)."""
    _CACHE.clear()
