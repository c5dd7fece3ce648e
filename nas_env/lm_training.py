"""The child trainer for language models (the paper's Penn Treebank search): truncated BPTT on token ids
held on the device, validation perplexity after every epoch, checkpoint and resume per epoch.

The default recipe is the classic word-level one (PyTorch's word_language_model example): plain SGD with a
high learning rate on the summed-over-time gradient, gradient-norm clipping, dropout on the embedding
and the cell output, tied input/output embeddings. The learning rate follows a cosine over all steps; the loop,
schedule and checkpoints are :mod:`nas_env.recipe`'s, shared with the CIFAR-10 trainer. Cheap recipes can
swap in Adam and an adaptive softmax (Grave et al. 2017): on a CPU the 10,000-word softmax, not the cell,
sets the pace, and the adaptive one sees about three times the tokens per second.
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
from torch import nn

from nas_env.recipe import (
    Recipe,
    check_device,
    check_float,
    check_int,
    learning_rate,
    load_checkpoint,
    run_epochs,
    save_checkpoint,
)
from nas_env.results import Status

__all__ = ["LMOutcome", "LMRecipe", "LMTensors", "evaluate_perplexity", "prepare_lm_data", "train_language_model"]

LM_OPTIMIZERS = ("sgd", "adam")
MAX_PERPLEXITY = 1e9  # exp(loss) beyond this is reported as this value (float overflow otherwise)


@dataclasses.dataclass(frozen=True)
class LMRecipe(Recipe):
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
    lr_schedule: str = "cosine"  # "cosine" or "linear" to 0 over all steps after the warm-up, or "constant"
    warmup: float = 0.0  # fraction of all steps with a linear warm-up of the learning rate (0: none)
    optimizer: str = "sgd"  # "sgd" (plain, the classic recipe) or "adam"
    #: () : a full softmax tied to the embedding; else torch's adaptive softmax over the words ranked by their
    #: frequency in the training tokens, its clusters starting at these ranks (e.g. (500, 2000))
    adaptive_softmax_cutoffs: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self._check_common()
        owner = type(self).__name__
        if self.optimizer not in LM_OPTIMIZERS:
            raise ValueError(f"{owner}.optimizer must be one of {list(LM_OPTIMIZERS)}, got {self.optimizer!r}")
        cutoffs = self.adaptive_softmax_cutoffs
        if not isinstance(cutoffs, (tuple, list)) or any(type(c) is not int for c in cutoffs):
            raise ValueError(f"{owner}.adaptive_softmax_cutoffs must be a list of word ranks, got {cutoffs!r}")
        if any(c < 1 for c in cutoffs) or list(cutoffs) != sorted(set(cutoffs)):
            raise ValueError(f"{owner}.adaptive_softmax_cutoffs must increase and be >= 1, got {list(cutoffs)}")
        object.__setattr__(self, "adaptive_softmax_cutoffs", tuple(cutoffs))  # a JSON list reads back equal
        for name in ("batch_size", "eval_batch_size", "bptt", "embed_size", "hidden_size"):
            check_int(owner, name, getattr(self, name), 1)
        for name in ("train_tokens", "val_tokens"):
            if getattr(self, name) is not None:
                check_int(owner, name, getattr(self, name), 2)
        check_float(owner, "dropout", self.dropout, lambda v: 0 <= v < 1, "in [0, 1)")
        check_float(owner, "clip", self.clip, lambda v: v > 0, "> 0")
@dataclasses.dataclass(frozen=True, eq=False)
class LMTensors:
    """Token ids on one device in the (T, B) language-model layout, the vocabulary size, and each word's rank
    by its frequency in the training tokens (0: the most frequent; what an adaptive softmax clusters by)."""

    train: torch.Tensor
    valid: torch.Tensor
    vocab_size: int
    word_rank: torch.Tensor

    @property
    def device(self) -> torch.device:
        return self.train.device


def prepare_lm_data(
    train_ids: np.ndarray | torch.Tensor,
    valid_ids: np.ndarray | torch.Tensor,
    vocab_size: int,
    recipe: LMRecipe,
    device: str | torch.device = "cpu",
) -> LMTensors:
    """Move the recipe's leading ``train_tokens`` / ``val_tokens`` to the device once, in (T, B) layout, with the
    words' frequency ranks in those training tokens (ties and unseen words in id order)."""
    from nas_env.data.ptb import batchify

    cutoffs = recipe.adaptive_softmax_cutoffs
    if cutoffs and cutoffs[-1] >= vocab_size:
        raise ValueError(f"adaptive_softmax_cutoffs {list(cutoffs)} must stay below the {vocab_size} words")
    train = batchify(train_ids[: recipe.train_tokens], recipe.batch_size)
    valid = batchify(valid_ids[: recipe.val_tokens], recipe.eval_batch_size)
    for name, ids in (("train", train), ("valid", valid)):
        if ids.shape[0] < 2:
            raise ValueError(f"{ids.numel()} {name} tokens are too few for batches of {ids.shape[1]}")
        if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
            raise ValueError(f"{name} token ids must lie in 0..{vocab_size - 1}")
    counts = torch.bincount(train.reshape(-1), minlength=vocab_size)
    order = torch.sort(-counts, stable=True).indices
    word_rank = torch.empty_like(order)
    word_rank[order] = torch.arange(vocab_size)
    device = torch.device(device)
    return LMTensors(train=train.to(device), valid=valid.to(device), vocab_size=int(vocab_size),
                     word_rank=word_rank.to(device))  # fmt: skip


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
        loss, state = model.next_word_loss(ids[i : i + n], ids[i + 1 : i + 1 + n], state)
        total += loss.item() * n * ids.shape[1]
        count += n * ids.shape[1]
    model.train(was_training)
    mean = total / count
    return math.exp(mean) if mean < math.log(MAX_PERPLEXITY) else (MAX_PERPLEXITY if math.isfinite(mean) else math.inf)


class _LMRun:
    """The mutable state of one language-model run (an :class:`~nas_env.recipe.EpochRun`). Dropout
    draws from the global torch RNG, seeded here and saved with every checkpoint."""

    metric_name = "val_perplexity"
    rate_name = "train_tokens_per_s"

    def __init__(self, model: nn.Module, data: LMTensors, recipe: LMRecipe, device: torch.device, seed: int) -> None:
        self.model = model.to(device).train()
        self.data, self.recipe = data, recipe
        optimizer = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.SGD
        self.optimizer = optimizer(self.model.parameters(), lr=recipe.lr)
        self.steps_per_epoch = math.ceil((data.train.shape[0] - 1) / recipe.bptt)
        self.items_per_epoch = (data.train.shape[0] - 1) * data.train.shape[1]
        self.total_steps = recipe.epochs * self.steps_per_epoch
        torch.manual_seed(seed)
        self.step = 0
        self.curve: list[float] = []

    def train_epoch(self) -> tuple[float, str | None]:
        """One pass of truncated BPTT over the training tokens: (mean loss, None) or (nan, where it diverged)."""
        ids, recipe, model = self.data.train, self.recipe, self.model
        state, loss_sum = None, 0.0
        for i in range(0, ids.shape[0] - 1, recipe.bptt):
            n = min(recipe.bptt, ids.shape[0] - 1 - i)
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate(recipe, self.step, self.total_steps)
            state = None if state is None else _detach(state)  # truncated BPTT
            loss, state = model.next_word_loss(ids[i : i + n], ids[i + 1 : i + 1 + n], state)
            if not torch.isfinite(loss):
                return math.nan, f"step {self.step}"
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), recipe.clip)
            self.optimizer.step()
            loss_sum += loss.item()
            self.step += 1
        return loss_sum / self.steps_per_epoch, None

    def validate(self) -> float:
        return evaluate_perplexity(self.model, self.data.valid, self.recipe.bptt)

    def save(self, path: Path) -> None:
        save_checkpoint(path, self.recipe, {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                                            "rng": torch.get_rng_state(), "step": self.step, "curve": self.curve})  # fmt: skip

    def restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path, self.recipe)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"])
        self.step, self.curve = int(ckpt["step"]), [float(p) for p in ckpt["curve"]]


def train_language_model(
    model: nn.Module,
    data: LMTensors,
    recipe: LMRecipe,
    device: str | torch.device = "cpu",
    seed: int = 0,
    checkpoint_path: str | Path | None = None,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> LMOutcome:
    """Train ``model`` (``next_word_loss(inputs (T, B), targets (T, B), state) -> (mean loss, state)``, as
    :class:`~nas_env.children.rnn_cell.RNNLanguageModel`) for ``recipe.epochs`` epochs,
    validating after each. Never raises for divergence (Status.DIVERGED) or out-of-memory (OOM).

    Dropout draws from the global torch RNG, seeded here with ``seed``; with ``checkpoint_path`` progress
    (model, optimizer, step, curve, RNG state) is saved after every epoch and resumed from if present.
    """
    start = time.perf_counter()
    device = check_device(data.device, device)
    p = run_epochs(_LMRun(model, data, recipe, device, seed), device, checkpoint_path, log, start)
    return LMOutcome(p.status, p.val_curve, p.epochs_done, p.wall_time_s, p.items_per_s, p.resumed_from_epoch, p.error)
