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


def pareto_ranks(points: Sequence[tuple[float, float]]) -> list[int]:
    """Non-dominated sorting of ``(cost, score)`` points: 1 for the Pareto front, 2 for the front of what is
    left once it is removed, and so on (lower cost and higher score are better)."""
    ranks = [0] * len(points)
    left = list(range(len(points)))
    rank = 0
    while left:
        rank += 1
        front = [left[i] for i in pareto_front([points[j] for j in left])]
        for i in front:
            ranks[i] = rank
        chosen = set(front)
        left = [i for i in left if i not in chosen]
    return ranks
