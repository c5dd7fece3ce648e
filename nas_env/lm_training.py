"""The child trainer for language models (the paper's Penn Treebank search): truncated BPTT on token ids
held on the device, validation perplexity after every epoch, checkpoint and resume per epoch.

The recipe is the classic word-level one (PyTorch's word_language_model example): plain SGD with a
high learning rate on the summed-over-time gradient, gradient-norm clipping, dropout on the embedding
and the cell output, tied input/output embeddings. The learning rate follows a cosine over all steps.
A loss that becomes NaN/inf ends the run as ``diverged`` (searched cells with relu and products can).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas_env.config_dicts import dataclass_from_dict
from nas_env.results import Status

__all__ = ["LMBudget", "LMOutcome", "LMTensors", "evaluate_perplexity", "prepare_lm_data", "train_language_model"]

LR_SCHEDULES = ("cosine", "constant")
CHECKPOINT_VERSION = 1
MAX_PERPLEXITY = 1e9  # exp(loss) beyond this is reported as this value (float overflow otherwise)


@dataclasses.dataclass(frozen=True)
class LMBudget:
    """How a child language model is trained. ``epochs`` is the paper's 35; the sizes are the classic
    small PTB model's (the paper does not give its children's sizes). CPU tests cap the tokens."""

    epochs: int = 35  # paper: 35 epochs per child
    train_tokens: int | None = None  # None: the whole training split
    val_tokens: int | None = None  # None: the whole validation split
    batch_size: int = 20
    eval_batch_size: int = 10
    bptt: int = 35
    embed_size: int = 200
    hidden_size: int = 200
    dropout: float = 0.2
    lr: float = 20.0
    clip: float = 0.25
    lr_schedule: str = "cosine"

    def __post_init__(self) -> None:
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("eval_batch_size", 1), ("bptt", 1),
                              ("embed_size", 1), ("hidden_size", 1)):  # fmt: skip
            _check_int(name, getattr(self, name), minimum)
        for name in ("train_tokens", "val_tokens"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 2)
        _check_float("dropout", self.dropout, lambda v: 0 <= v < 1, "in [0, 1)")
        _check_float("lr", self.lr, lambda v: v > 0, "> 0")
        _check_float("clip", self.clip, lambda v: v > 0, "> 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"LMBudget.lr_schedule must be one of {list(LR_SCHEDULES)}, got {self.lr_schedule!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LMBudget":
        return dataclass_from_dict(cls, d, "LMBudget field")


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"LMBudget.{name} must be an integer >= {minimum}, got {value!r}")


def _check_float(name: str, value: object, ok: Callable[[float], bool], rule: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"LMBudget.{name} must be a number {rule}, got {value!r}")
    if not math.isfinite(value) or not ok(float(value)):
        raise ValueError(f"LMBudget.{name} must be a finite number {rule}, got {value!r}")


@dataclasses.dataclass(frozen=True, eq=False)
class LMTensors:
    """Token ids on one device in the (T, B) language-model layout, and the vocabulary size."""

    train: torch.Tensor
    valid: torch.Tensor
    vocab_size: int

    @property
    def device(self) -> torch.device:
        return self.train.device


def prepare_lm_data(
    train_ids: np.ndarray | torch.Tensor,
    valid_ids: np.ndarray | torch.Tensor,
    vocab_size: int,
    budget: LMBudget,
    device: str | torch.device = "cpu",
) -> LMTensors:
    """Move the budget's leading ``train_tokens`` / ``val_tokens`` to the device once, in (T, B) layout."""
    from nas_env.data.ptb import batchify

    train = batchify(train_ids[: budget.train_tokens], budget.batch_size)
    valid = batchify(valid_ids[: budget.val_tokens], budget.eval_batch_size)
    for name, ids in (("train", train), ("valid", valid)):
        if ids.shape[0] < 2:
            raise ValueError(f"{ids.numel()} {name} tokens are too few for batches of {ids.shape[1]}")
        if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
            raise ValueError(f"{name} token ids must lie in 0..{vocab_size - 1}")
    device = torch.device(device)
    return LMTensors(train=train.to(device), valid=valid.to(device), vocab_size=int(vocab_size))


@dataclasses.dataclass(frozen=True)
class LMOutcome:
    """How a language-model training run ended: status, validation perplexity per epoch, speed."""

    status: Status
    val_curve: tuple[float, ...]
    epochs_done: int
    wall_time_s: float
    train_tokens_per_s: float
    resumed_from_epoch: int = 0
    error: str | None = None

    def min_recent_perplexity(self, last: int) -> float:
        """The lowest validation perplexity of the last ``last`` epochs."""
        if not self.val_curve:
            raise ValueError("no epoch was completed")
        return min(self.val_curve[-last:])


def _detach(state: Any) -> Any:
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


@torch.no_grad()
def evaluate_perplexity(model: nn.Module, ids: torch.Tensor, bptt: int) -> float:
    """exp(mean next-token cross-entropy) over ``ids`` (T, B), carrying the state across windows."""
    was_training = model.training
    model.eval()
    state, total, count = None, 0.0, 0
    for i in range(0, ids.shape[0] - 1, bptt):
        n = min(bptt, ids.shape[0] - 1 - i)
        logits, state = model(ids[i : i + n], state)
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[i + 1 : i + 1 + n].reshape(-1),
                                 reduction="sum").item()  # fmt: skip
        count += n * ids.shape[1]
    model.train(was_training)
    mean = total / count
    return math.exp(mean) if mean < math.log(MAX_PERPLEXITY) else (MAX_PERPLEXITY if math.isfinite(mean) else math.inf)


def _identity(budget: LMBudget) -> dict[str, Any]:
    """What a checkpoint must share with the run resuming it (more epochs may be asked for)."""
    return {k: v for k, v in budget.to_dict().items() if k != "epochs"}


def _learning_rate(budget: LMBudget, step: int, total_steps: int) -> float:
    if budget.lr_schedule == "constant":
        return budget.lr
    return budget.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def train_language_model(
    model: nn.Module,
    data: LMTensors,
    budget: LMBudget,
    device: str | torch.device = "cpu",
    seed: int = 0,
    checkpoint_path: str | Path | None = None,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> LMOutcome:
    """Train ``model`` (``forward(ids (T, B), state) -> (logits, state)``) for ``budget.epochs`` epochs,
    validating after each. Never raises for divergence (Status.DIVERGED) or CUDA out-of-memory (OOM).

    Dropout draws from the global torch RNG, seeded here with ``seed``; with ``checkpoint_path`` progress
    (model, optimizer, step, curve, RNG state) is saved after every epoch and resumed from if present.
    """
    start = time.perf_counter()
    device = torch.device(device)
    if data.device.type != device.type:
        raise ValueError(f"data is on {data.device} but training was asked on {device}")
    model = model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=budget.lr)
    steps_per_epoch = math.ceil((data.train.shape[0] - 1) / budget.bptt)
    total_steps = budget.epochs * steps_per_epoch
    torch.manual_seed(seed)
    curve: list[float] = []
    step = 0
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    if path is not None and path.exists():
        ckpt = torch.load(path, map_location=device, weights_only=False)
        if ckpt.get("version") != CHECKPOINT_VERSION or ckpt.get("budget") != _identity(budget):
            raise ValueError(f"checkpoint {path} belongs to another budget or version; delete it to start over")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"])
        step, curve = int(ckpt["step"]), [float(p) for p in ckpt["curve"]]
    resumed_from = len(curve)
    train_seconds, tokens_done = 0.0, 0

    def outcome(status: Status, error: str | None = None) -> LMOutcome:
        return LMOutcome(status, tuple(curve), len(curve), time.perf_counter() - start,
                         tokens_done / train_seconds if train_seconds > 0 else 0.0, resumed_from, error)  # fmt: skip

    try:
        while len(curve) < budget.epochs:
            epoch_start, state, loss_sum = time.perf_counter(), None, 0.0
            for i in range(0, data.train.shape[0] - 1, budget.bptt):
                n = min(budget.bptt, data.train.shape[0] - 1 - i)
                for group in optimizer.param_groups:
                    group["lr"] = _learning_rate(budget, step, total_steps)
                state = None if state is None else _detach(state)  # truncated BPTT
                logits, state = model(data.train[i : i + n], state)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), data.train[i + 1 : i + 1 + n].reshape(-1))
                if not torch.isfinite(loss):
                    return outcome(Status.DIVERGED, f"loss became non-finite in epoch {len(curve) + 1}, step {step}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), budget.clip)
                optimizer.step()
                loss_sum += loss.item()
                step += 1
            seconds = time.perf_counter() - epoch_start
            train_seconds += seconds
            tokens_done += (data.train.shape[0] - 1) * data.train.shape[1]
            perplexity = evaluate_perplexity(model, data.valid, budget.bptt)
            if not math.isfinite(perplexity):
                return outcome(Status.DIVERGED, f"validation loss became non-finite in epoch {len(curve) + 1}")
            curve.append(perplexity)
            if path is not None:
                tmp = path.with_suffix(path.suffix + ".tmp")
                torch.save({"version": CHECKPOINT_VERSION, "budget": _identity(budget), "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(), "step": step,
                            "curve": curve}, tmp)  # fmt: skip
                tmp.replace(path)
            if log is not None:
                log({"epoch": len(curve), "train_loss": loss_sum / steps_per_epoch, "val_perplexity": perplexity,
                     "train_tokens_per_s": (data.train.shape[0] - 1) * data.train.shape[1] / seconds})  # fmt: skip
    except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
        if not (isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return outcome(Status.OOM, f"out of memory: {exc}")
    return outcome(Status.OK)
