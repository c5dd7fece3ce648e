"""Evaluators turn an architecture into an :class:`EvalResult`.

An evaluator is a small picklable object: the dispatcher sends it, with the architecture, to a worker
(subprocess or SLURM job). ``fingerprint()`` names everything that changes the result (budget,
dataset, reward shaping), so the store keys a result by architecture + fingerprint.
"""

from __future__ import annotations

import abc
import hashlib
import json
import pickle
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nas_env.results import EvalResult, Status
from nas_env.spaces.base import Architecture, SearchSpace


def reward_from_metric(metric: float, shaping: str = "cube") -> float:
    """The paper's reward is the validation accuracy cubed; ``shaping`` picks another monotone map.

    ``cube``: R = acc^3 (Zoph & Le); ``identity``: R = acc; ``square``: R = acc^2.
    """
    powers = {"identity": 1, "square": 2, "cube": 3}
    if shaping not in powers:
        raise ValueError(f"unknown reward shaping {shaping!r}; choose one of {sorted(powers)}")
    return float(metric) ** powers[shaping]


class Evaluator(abc.ABC):
    """Scores architectures. Subclasses must stay picklable (plain attributes, no open handles)."""

    #: reward recorded for failures (diverged, OOM, timeout, raised); the paper has no failures, 0 is natural
    failure_reward: float = 0.0

    @abc.abstractmethod
    def evaluate(self, arch: Architecture, checkpoint_path: str | Path | None = None) -> EvalResult:
        """Evaluate one architecture. ``checkpoint_path``: where a long evaluation may save and
        resume its progress (used when a SLURM job is preempted and requeued)."""

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """Everything that defines this evaluator's results, JSON-serialisable."""

    def fingerprint(self) -> str:
        """Short stable hash of :meth:`config`: part of the store key."""
        blob = json.dumps({"class": type(self).__name__, **self.config()}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def __call__(self, arch: Architecture) -> EvalResult:
        return self.evaluate(arch)


class SyntheticEvaluator(Evaluator):
    """A cheap, exactly known reward over a real token space: the fraction of decisions that match a
    hidden target architecture (sampled from ``target_seed``).

    Used to test that agents learn, and to exercise dispatchers without GPU time. It can pretend to
    train for ``epochs`` epochs of ``seconds_per_epoch`` each (saving progress to ``checkpoint_path``
    so a preempted job resumes), and raise for the architectures whose canonical keys are in
    ``fail_keys`` (fault injection for tests and demos).
    """

    def __init__(
        self,
        space: SearchSpace,
        target_seed: int = 0,
        epochs: int = 1,
        seconds_per_epoch: float = 0.0,
        fail_keys: Sequence[str] = (),
        failure_reward: float = 0.0,
    ) -> None:
        self.space = space
        self.target_seed = int(target_seed)
        self.target_tokens = space.sample_tokens(np.random.default_rng(target_seed))
        self.epochs = int(epochs)
        self.seconds_per_epoch = float(seconds_per_epoch)
        self.fail_keys = frozenset(fail_keys)
        self.failure_reward = float(failure_reward)

    def config(self) -> dict[str, Any]:
        return {
            "space": {"name": self.space.name, **self.space.config()},
            "target_seed": self.target_seed,
            "epochs": self.epochs,
        }

    def score(self, tokens: Sequence[int]) -> float:
        """Fraction of decisions equal to the target's."""
        return float(np.mean(np.asarray(tokens) == np.asarray(self.target_tokens)))

    def evaluate(self, arch: Architecture, checkpoint_path: str | Path | None = None) -> EvalResult:
        start = time.perf_counter()
        if self.space.key(arch) in self.fail_keys:
            raise RuntimeError(f"injected failure for architecture {self.space.key(arch)}")
        metric = self.score(self.space.encode(arch))
        epoch, resumed_from = 0, 0
        path = Path(checkpoint_path) if checkpoint_path else None
        if path is not None and path.exists():
            epoch = resumed_from = pickle.loads(path.read_bytes())["epoch"]
        while epoch < self.epochs:
            time.sleep(self.seconds_per_epoch)
            epoch += 1
            if path is not None:
                path.write_bytes(pickle.dumps({"epoch": epoch}))
        curve = tuple(metric * (e + 1) / self.epochs for e in range(self.epochs))
        return EvalResult(
            status=Status.OK,
            reward=metric,
            metric=metric,
            curve=curve,
            wall_time_s=time.perf_counter() - start,
            extra={"resumed_from_epoch": resumed_from},
        )
