"""The training recipe shared by the child trainers (CIFAR-10 classifiers, PTB language models).

A child's *recipe* is how it is trained (epochs, data sizes, optimiser settings, schedule); the search's
budget is something else (its number of evaluations). This module holds what both trainers share:
checking a recipe's fields, building one from a preset name or a dict, the learning-rate schedule, atomic
checkpoints tied to the recipe that wrote them, and the epoch loop that turns divergence and
out-of-memory into a status instead of an exception.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, TypeVar

import numpy as np
import torch

from nas_env.config_dicts import dataclass_from_dict
from nas_env.failures import classify
from nas_env.results import Status

__all__ = [
    "CHECKPOINT_VERSION",
    "LR_SCHEDULES",
    "EpochRun",
    "Progress",
    "Recipe",
    "check_device",
    "check_float",
    "check_int",
    "learning_rate",
    "load_checkpoint",
    "recipe_from",
    "run_epochs",
    "save_checkpoint",
]

LR_SCHEDULES = ("cosine", "linear", "constant")
#: version 2: the recipe is stored under "recipe" (version 1 called it "budget")
CHECKPOINT_VERSION = 2

R = TypeVar("R", bound="Recipe")


# -------------------------------------------------------------------------------------------- recipe
def check_int(owner: str, name: str, value: object, minimum: int) -> None:
    """ValueError naming ``owner.name`` unless value is an int (not bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{owner}.{name} must be an integer >= {minimum}, got {value!r}")


def check_float(owner: str, name: str, value: object, ok: Callable[[float], bool], rule: str) -> None:
    """ValueError naming ``owner.name`` unless value is a finite real number satisfying ``ok``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{owner}.{name} must be a number {rule}, got {value!r}")
    if not math.isfinite(value) or not ok(float(value)):
        raise ValueError(f"{owner}.{name} must be a finite number {rule}, got {value!r}")


class Recipe:
    """What every recipe dataclass shares: ``epochs``, ``lr``, ``lr_schedule``, ``warmup``; dict round trip;
    the identity a checkpoint must match. Subclasses are frozen dataclasses that call :meth:`_check_common`."""

    epochs: int
    lr: float
    lr_schedule: str
    warmup: float  # fraction of all steps over which the learning rate rises linearly from 0 (0: none)

    def _check_common(self) -> None:
        owner = type(self).__name__
        check_int(owner, "epochs", self.epochs, 1)
        check_float(owner, "lr", self.lr, lambda v: v > 0, "> 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"{owner}.lr_schedule must be one of {list(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        check_float(owner, "warmup", self.warmup, lambda v: 0 <= v < 1, "in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[R], d: Mapping[str, Any]) -> R:
        return dataclass_from_dict(cls, d, f"{cls.__name__} field")

    def identity(self) -> dict[str, Any]:
        """The fields a resumed run must share with its checkpoint: all but ``epochs`` (a resumed run
        may ask for more epochs; the schedule then spans the new total)."""
        return {k: v for k, v in self.to_dict().items() if k != "epochs"}


def recipe_from(recipe: Any, recipe_type: type[R], presets: Mapping[str, Mapping[str, Any]], what: str) -> R:
    """A ``recipe_type`` from an instance, a dict of its fields or the name of one of ``presets``."""
    if isinstance(recipe, recipe_type):
        return recipe
    if isinstance(recipe, str):
        if recipe not in presets:
            raise ValueError(f"unknown {what} preset {recipe!r}; choose one of {sorted(presets)}")
        return recipe_type(**presets[recipe])
    if isinstance(recipe, dict):
        return recipe_type.from_dict(recipe)
    raise TypeError(f"recipe must be a {recipe_type.__name__}, a dict or a preset name, not {type(recipe).__name__}")


def learning_rate(recipe: Recipe, step: int, total_steps: int) -> float:
    """The learning rate before optimizer step ``step`` (0-based) of ``total_steps``: a linear warm-up from
    0 over the first ``recipe.warmup`` of the steps (short budgets need a high rate that a cold start cannot
    take), then ``recipe.lr`` decayed to 0 at the last step by a cosine or a straight line, or kept constant."""
    step = min(step, total_steps)
    warm = recipe.warmup * total_steps
    if step < warm:
        return recipe.lr * (step + 1) / (warm + 1)
    if recipe.lr_schedule == "constant":
        return recipe.lr
    done = (step - warm) / max(total_steps - warm, 1e-9)
    if recipe.lr_schedule == "linear":
        return recipe.lr * (1.0 - done)
    return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * done))


# ----------------------------------------------------------------------------------------- checkpoint
def save_checkpoint(path: Path, recipe: Recipe, payload: dict[str, Any]) -> None:
    """Write ``payload`` with the version and the recipe's identity atomically (a temp file beside it,
    then os.replace), so a preempted job never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({**payload, "version": CHECKPOINT_VERSION, "recipe": recipe.identity()}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, recipe: Recipe, expected: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a checkpoint (tensors on the CPU) and check it was written with this recipe and the
    ``expected`` values (e.g. the data's size and seed): a ValueError naming the mismatch otherwise."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint {path} has version {payload.get('version')}, expected {CHECKPOINT_VERSION};"
                         " delete it to start over")  # fmt: skip
    wanted, stored = recipe.identity(), payload.get("recipe", {})
    diff = sorted(k for k in wanted if stored.get(k) != wanted[k])
    if diff:
        raise ValueError(f"checkpoint {path} was written with another recipe (fields differ: {diff});"
                         " delete it to start over")  # fmt: skip
    if any(payload.get(k) != v for k, v in (expected or {}).items()):
        raise ValueError(f"checkpoint {path} was written for other training data; delete it to start over")
    return payload


# ------------------------------------------------------------------------------------------ epoch loop
def check_device(data_device: torch.device, device: str | torch.device) -> torch.device:
    """``device`` as a torch.device; a ValueError if the data lives on another kind of device."""
    device = torch.device(device)
    if data_device.type != device.type:
        raise ValueError(f"data is on {data_device} but training was asked on {device}")
    return device


class EpochRun(Protocol):
    """One trainer's mutable run state, as :func:`run_epochs` drives it."""

    recipe: Recipe
    curve: list[float]  # the validation metric of every epoch done, including those before a resume
    step: int  # optimizer steps done
    total_steps: int  # optimizer steps of the whole recipe
    items_per_epoch: int  # images or tokens trained on per epoch
    metric_name: str  # the log's name of the validation metric, e.g. "val_accuracy"
    rate_name: str  # the log's name of the throughput, e.g. "train_images_per_s"

    def train_epoch(self) -> tuple[float, str | None]:
        """One epoch: (mean training loss, None), or (nan, where the loss became non-finite)."""

    def validate(self) -> float: ...

    def save(self, path: Path) -> None: ...

    def restore(self, path: Path) -> None: ...


@dataclasses.dataclass(frozen=True)
class Progress:
    """How :func:`run_epochs` ended: status, curve, timing; the trainers turn it into their outcome."""

    status: Status
    val_curve: tuple[float, ...]
    wall_time_s: float
    items_per_s: float  # this call's training throughput (images or tokens per second)
    resumed_from_epoch: int
    error: str | None = None

    @property
    def epochs_done(self) -> int:
        return len(self.val_curve)


def run_epochs(
    run: EpochRun,
    device: torch.device,
    checkpoint_path: str | Path | None = None,
    log: Callable[[dict[str, Any]], None] | None = None,
    start: float | None = None,
) -> Progress:
    """Train ``run`` epoch by epoch up to ``run.recipe.epochs``, validating after each.

    With ``checkpoint_path``, progress is restored from the file if it exists and saved after every
    epoch. Divergence (a non-finite training loss or validation metric) ends as Status.DIVERGED and an
    out-of-memory error (see :func:`nas_env.failures.classify`) as Status.OOM; other errors propagate.
    ``log`` receives one dict of named scalars per epoch.
    """
    start = time.perf_counter() if start is None else start
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    if path is not None and path.exists():
        run.restore(path)
    resumed_from = len(run.curve)
    train_seconds, items_done = 0.0, 0

    def progress(status: Status, error: str | None = None) -> Progress:
        rate = items_done / train_seconds if train_seconds > 0 else 0.0
        return Progress(status, tuple(run.curve), time.perf_counter() - start, rate, resumed_from, error)

    try:
        while len(run.curve) < run.recipe.epochs:
            epoch, epoch_start = len(run.curve) + 1, time.perf_counter()
            train_loss, diverged_at = run.train_epoch()
            if diverged_at is not None:
                return progress(Status.DIVERGED, f"loss became non-finite in epoch {epoch}, {diverged_at}")
            epoch_seconds = time.perf_counter() - epoch_start
            train_seconds += epoch_seconds
            items_done += run.items_per_epoch
            metric = run.validate()
            if not math.isfinite(metric):
                return progress(Status.DIVERGED, f"validation loss became non-finite in epoch {epoch}")
            run.curve.append(metric)
            if path is not None:
                run.save(path)
            if log is not None:
                log({
                    "epoch": epoch,
                    "train_loss": train_loss,
                    run.metric_name: metric,
                    "lr": learning_rate(run.recipe, run.step - 1, run.total_steps),  # the epoch's last step
                    run.rate_name: run.items_per_epoch / epoch_seconds,
                })  # fmt: skip
    except Exception as exc:
        if classify(exc) is not Status.OOM:
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return progress(Status.OOM, f"out of memory: {exc}")
    return progress(Status.OK)
