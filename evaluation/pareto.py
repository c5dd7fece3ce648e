"""Pareto fronts: the architectures no other one beats on both accuracy (higher) and cost (lower)."""

from __future__ import annotations

from typing import Sequence


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated ``(cost, score)`` points, by increasing cost.

    A point is dominated when another has cost <= and score >= with one of them strict. Exact duplicates
    are all kept (neither dominates the other), so equal architectures stay visible.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best_score = float("-inf")
    last: tuple[float, float] | None = None
    for i in order:
        cost, score = points[i]
        if score > best_score or (last is not None and (cost, score) == last):
            front.append(i)
            best_score = max(best_score, score)
            last = (cost, score)
    return front
