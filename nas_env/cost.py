"""Rewards that count cost: a hard limit on parameters or FLOPs, and MnasNet's soft reward.

:class:`CostAwareEvaluator` wraps any evaluator that can tell an architecture's cost without training it
(``inner.cost(arch) -> {"params": ..., "flops": ...}``: the CNN trainer and the synthetic evaluator count the
child in closed form, the NB201 table looks its columns up, the PTB trainer counts the language model's
parameters). The cost is computed *before* training, so:

* **hard limit** (``limit``): an architecture whose cost is above ``limit`` is never trained. Its result has
  status ``over_limit``, an ``error`` saying which cost exceeded which limit, the inner evaluator's failure
  reward, its params/FLOPs, and no training time (``wall_time_s`` is the counting alone; no simulated
  training time). It is cached like any other deterministic result, and the search goes on.
* **soft reward** (``target``, ``w``), MnasNet (Tan et al. 2019, eq. 2 with alpha = beta = w):
  ``reward = R x (cost / target) ^ w``, where ``R`` is the inner evaluator's reward (validation accuracy on
  NAS-Bench-201, its cube on CIFAR-10 with the paper's shaping) and ``w < 0`` (MnasNet: -0.07) rewards
  smaller children. ``metric`` (the validation accuracy) is left as it is; ``extra`` records the unscaled
  reward (``reward_before_cost``), the factor (``cost_factor``) and the cost used (``cost_value``).
  Failures keep the failure reward (it is not scaled).

Both may be given: the limit is checked first. The settings are in :meth:`config`, so they are part of the
fingerprint: results with and without a cost never mix in a store. Every env id takes them as
``cost={"metric": "params", "limit": 1e6}`` or ``cost={"metric": "flops", "target": 5e7, "w": -0.07}``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping

from nas_env.errors import SetupError
from nas_env.evaluators import Evaluator
from nas_env.results import EvalResult, Status, failure
from nas_env.spaces.base import Architecture

METRICS = ("params", "flops")
#: MnasNet's exponent for the soft constraint
DEFAULT_W = -0.07
COST_KEYS = ("metric", "limit", "target", "w")


class CostAwareEvaluator(Evaluator):
    """``inner`` with a hard ``limit`` and/or the soft reward ``R x (cost / target) ^ w`` on ``metric``."""

    def __init__(
        self,
        inner: Evaluator,
        metric: str = "params",
        limit: float | None = None,
        target: float | None = None,
        w: float = DEFAULT_W,
    ) -> None:
        if metric not in METRICS:
            raise ValueError(f"cost metric must be one of {METRICS}, got {metric!r}")
        if limit is None and target is None:
            raise ValueError("a cost needs a hard 'limit', a soft 'target' (with exponent 'w'), or both")
        for name, value in (("limit", limit), ("target", target)):
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"cost {name} must be a positive number, got {value!r}")
        if not (isinstance(w, (int, float)) and math.isfinite(w)):
            raise ValueError(f"cost exponent w must be a finite number, got {w!r}")
        if not callable(getattr(inner, "cost", None)):
            raise ValueError(f"{type(inner).__name__} cannot tell an architecture's cost without training it"
                             " (it has no cost(arch) method), so it cannot have a cost-aware reward")  # fmt: skip
        self.inner = inner
        self.metric = metric
        self.limit = None if limit is None else float(limit)
        self.target = None if target is None else float(target)
        self.w = float(w)

    @property
    def failure_reward(self) -> float:  # type: ignore[override]
        return self.inner.failure_reward

    def config(self) -> dict[str, Any]:
        return {
            "inner_class": type(self.inner).__name__,
            "inner": self.inner.config(),
            "cost": {"metric": self.metric, "limit": self.limit, "target": self.target, "w": self.w},
        }

    def prepare(self, check_device: bool = True) -> None:
        self.inner.prepare(check_device=check_device)

    def cost(self, arch: Architecture) -> dict[str, int]:
        return self.inner.cost(arch)  # type: ignore[attr-defined]

    def factor(self, value: float) -> float:
        """The soft reward's multiplier ``(value / target) ^ w`` (1 without a target)."""
        return 1.0 if self.target is None else (float(value) / self.target) ** self.w

    def evaluate(self, arch: Architecture, checkpoint_path: str | Path | None = None) -> EvalResult:
        start = time.perf_counter()
        cost = self.cost(arch)
        value = cost.get(self.metric)
        if value is None:  # a setting no child can satisfy: stop the search rather than fail every child
            raise SetupError(f"{type(self.inner).__name__} does not count {self.metric}; use a cost on"
                             f" {[m for m in METRICS if cost.get(m) is not None]}")  # fmt: skip
        if self.limit is not None and value > self.limit:
            return failure(
                Status.OVER_LIMIT,
                error=f"not trained: {self.metric} {value:,} exceed the hard limit {self.limit:,.0f}",
                reward=self.failure_reward,
                params=cost.get("params"),
                flops=cost.get("flops"),
                wall_time_s=time.perf_counter() - start,
                extra={"cost_metric": self.metric, "cost_value": value, "cost_limit": self.limit},
            )
        result = self.inner.evaluate(arch, checkpoint_path=checkpoint_path)
        extra = {**result.extra, "cost_metric": self.metric, "cost_value": value}
        counted = {  # the counted cost where the inner result has none (the synthetic evaluator)
            "params": result.params if result.params is not None else cost.get("params"),
            "flops": result.flops if result.flops is not None else cost.get("flops"),
        }
        if self.target is None or not result.ok:
            return result.with_updates(extra=extra, **counted)
        factor = self.factor(value)
        extra.update(reward_before_cost=result.reward, cost_factor=factor, cost_target=self.target, cost_w=self.w)
        return result.with_updates(reward=float(result.reward) * factor, extra=extra, **counted)

    def __getattr__(self, name: str) -> Any:
        # what reports ask of the evaluator behind (NB201's table(), dataset, fidelity, noise, ...)
        if name.startswith("__") or name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def with_cost(evaluator: Evaluator, cost: Mapping[str, Any] | None) -> Evaluator:
    """``evaluator`` wrapped in a :class:`CostAwareEvaluator` built from the env kwarg ``cost`` (None: as is)."""
    if cost is None:
        return evaluator
    if not isinstance(cost, Mapping):
        raise ValueError(f"cost must be a dict like {{'metric': 'params', 'limit': 1e6}}, got {cost!r}")
    unknown = sorted(set(cost) - set(COST_KEYS))
    if unknown:
        raise ValueError(f"unknown cost key(s) {unknown}; known keys: {list(COST_KEYS)}")
    return CostAwareEvaluator(evaluator, **dict(cost))


def base_evaluator(evaluator: Evaluator) -> Evaluator:
    """The evaluator behind any cost wrappers (what a report asks about the benchmark itself)."""
    while isinstance(evaluator, CostAwareEvaluator):
        evaluator = evaluator.inner
    return evaluator
