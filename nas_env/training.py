"""The fast child trainer: the whole (subset of the) dataset lives on the device, augmentation is vectorised.

Why it is fast: no DataLoader and no per-image Python. Images stay uint8 on the device (4x less memory
than float), each batch is gathered by index, randomly cropped and flipped by one gather over a padded
batch, normalised in float and fed channels-last; on CUDA with bf16/fp16 autocast, optionally compiled,
and on a CPU with native bf16 (AVX512-BF16, AMX) under bf16 autocast too.

Training follows the paper (Zoph & Le 2017): momentum SGD, lr 0.1, momentum 0.9, Nesterov, weight decay
1e-4, 50 epochs; the learning rate follows a cosine over all steps (short recipes add a warm-up and may
decay linearly instead). Randomness (shuffling, crops, flips)
comes from one ``torch.Generator`` seeded per run, so a CPU run is reproducible and resumes exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
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

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFARTensors",
    "TrainingOutcome",
    "TrainingRecipe",
    "crop_padding",
    "evaluate_accuracy",
    "learning_rate",
    "normalize",
    "prepare_data",
    "prepare_eval_images",
    "random_crop_flip",
    "train_child",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
EVAL_BATCH_SIZE = 1000
# On CUDA, checking the loss for NaN/inf forces a host sync; doing it every few steps keeps the GPU fed.
CUDA_FINITE_CHECK_EVERY = 8
_RESIZE_CHUNK = 4096


# --------------------------------------------------------------------------------------------- recipe
@dataclasses.dataclass(frozen=True)
class TrainingRecipe(Recipe):
    """How a child is trained. Defaults are the paper's; tests and CPU demos shrink epochs, images, resolution."""

    epochs: int = 50  # paper: 50 epochs per child
    train_images: int | None = None  # None: every image of the training split given to prepare_data
    val_images: int | None = None  # None: every image of the validation split
    resolution: int = 32  # lower: images downsampled once on the device (antialiased bilinear)
    batch_size: int = 128
    lr: float = 0.1  # paper
    momentum: float = 0.9  # paper
    weight_decay: float = 1e-4  # paper
    nesterov: bool = True  # paper
    lr_schedule: str = "cosine"  # "cosine" or "linear" to 0 over all steps after the warm-up, or "constant"
    warmup: float = 0.0  # fraction of all steps with a linear warm-up of the learning rate (0: none)
    label_smoothing: float = 0.0
    augment: bool = True  # random crop (zero padding, see crop_padding) + horizontal flip

    def __post_init__(self) -> None:
        self._check_common()
        owner = type(self).__name__
        for name in ("train_images", "val_images"):
            if getattr(self, name) is not None:
                check_int(owner, name, getattr(self, name), 1)
        check_int(owner, "resolution", self.resolution, 1)
        check_int(owner, "batch_size", self.batch_size, 1)
        check_float(owner, "momentum", self.momentum, lambda v: 0 <= v < 1, "in [0, 1)")
        check_float(owner, "weight_decay", self.weight_decay, lambda v: v >= 0, ">= 0")
        check_float(owner, "label_smoothing", self.label_smoothing, lambda v: 0 <= v < 1, "in [0, 1)")
        for name in ("nesterov", "augment"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{owner}.{name} must be a bool, got {getattr(self, name)!r}")
        if self.nesterov and self.momentum == 0:
            raise ValueError(f"{owner}.nesterov needs momentum > 0 (got momentum=0)")


def crop_padding(resolution: int) -> int:
    """Zero padding of the random crop: 4 pixels at 32x32 (the usual CIFAR recipe), scaled with resolution."""
    return max(1, round(4 * resolution / 32))


# ----------------------------------------------------------------------------------------------- data
@dataclasses.dataclass(frozen=True, eq=False)
class CIFARTensors:
    """The data a child trains on, resident on one device: uint8 images (N, C, H, W) in channels-last
    memory (an NHWC buffer), int64 labels. ``seed`` is the one that picked the image subsets."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    seed: int = 0

    @property
    def device(self) -> torch.device:
        return self.train_images.device

    @property
    def resolution(self) -> int:
        return int(self.train_images.shape[-1])

    @property
    def num_train(self) -> int:
        return int(self.train_images.shape[0])

    @property
    def num_val(self) -> int:
        return int(self.val_images.shape[0])


def _subset(n: int, wanted: int | None, rng: np.random.Generator, field: str) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``wanted`` among ``n`` (all when None)."""
    if wanted is None:
        return np.arange(n)
    if wanted > n:
        raise ValueError(f"TrainingRecipe.{field}={wanted} exceeds the {n} images available")
    return np.sort(rng.permutation(n)[:wanted])


def _to_device_images(images: np.ndarray | torch.Tensor, resolution: int, device: torch.device) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C, r, r) uint8 channels-last on ``device``, downsampled if r < H."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != x.shape[2]:
        raise ValueError(f"images must be uint8 (N, H, W, C) with H == W, got {x.dtype} {tuple(x.shape)}")
    size = int(x.shape[1])
    if resolution > size:
        raise ValueError(f"TrainingRecipe.resolution={resolution} exceeds the images' size {size} (only downsampling)")
    x = x.to(device).permute(0, 3, 1, 2)  # an NHWC buffer seen as NCHW is channels-last
    if resolution == size:
        return x.contiguous(memory_format=torch.channels_last)
    chunks = [
        F.interpolate(c.float(), size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for c in x.split(_RESIZE_CHUNK)
    ]
    return torch.cat(chunks).contiguous(memory_format=torch.channels_last)


def prepare_eval_images(
    images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, resolution: int,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Held-out images (e.g. the test split) on the device as the trainer sees them: uint8 (N, C, r, r)
    channels-last, downsampled to ``resolution`` like the training images; labels int64."""
    device = torch.device(device)
    return _to_device_images(images, resolution, device), torch.as_tensor(np.asarray(labels), dtype=torch.int64).to(device)


def prepare_data(
    images_train: np.ndarray | torch.Tensor,
    labels_train: np.ndarray | torch.Tensor,
    images_val: np.ndarray | torch.Tensor,
    labels_val: np.ndarray | torch.Tensor,
    recipe: TrainingRecipe,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> CIFARTensors:
    """Move the recipe's image subsets (seeded) to the device once, downsampled to ``recipe.resolution``."""
    device = torch.device(device)
    if len(images_train) != len(labels_train) or len(images_val) != len(labels_val):
        raise ValueError(
            f"images and labels differ in length: train {len(images_train)}/{len(labels_train)}, "
            f"val {len(images_val)}/{len(labels_val)}"
        )
    if len(images_train) == 0 or len(images_val) == 0:
        raise ValueError("prepare_data needs at least one training and one validation image")
    rng = np.random.default_rng(seed)
    train_idx = torch.as_tensor(_subset(len(images_train), recipe.train_images, rng, "train_images"))
    val_idx = torch.as_tensor(_subset(len(images_val), recipe.val_images, rng, "val_images"))
    return CIFARTensors(
        train_images=_to_device_images(torch.as_tensor(images_train)[train_idx], recipe.resolution, device),
        train_labels=torch.as_tensor(labels_train)[train_idx].to(device=device, dtype=torch.int64),
        val_images=_to_device_images(torch.as_tensor(images_val)[val_idx], recipe.resolution, device),
        val_labels=torch.as_tensor(labels_val)[val_idx].to(device=device, dtype=torch.int64),
        seed=int(seed),
    )


# --------------------------------------------------------------------------------------- batch helpers
def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int) -> torch.Tensor:
    """Random crop with ``padding`` zero pixels on each side plus random horizontal flip, for a whole batch.

    The batch is padded once (NHWC); each output pixel's source pixel gets a linear index, the flip folded
    into the column index by torch.where on a per-image mask, and one index_select copies whole pixels.
    Input and output: (B, C, H, W) tensors, the output channels-last.
    """
    b, c, h, w = images.shape
    device = images.device
    padded = F.pad(images.permute(0, 2, 3, 1), (0, 0, padding, padding, padding, padding))  # (B, H+2p, W+2p, C)
    hp, wp = h + 2 * padding, w + 2 * padding
    offsets = torch.randint(0, 2 * padding + 1, (2, b), generator=generator, device=device)
    flip = torch.rand(b, generator=generator, device=device) < 0.5
    ar_w = torch.arange(w, device=device)
    rows = torch.arange(b, device=device)[:, None] * hp + offsets[0, :, None] + torch.arange(h, device=device)
    cols = offsets[1, :, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # (B, W)
    pixels = rows[:, :, None] * wp + cols[:, None, :]  # (B, H, W) rows of padded.view(-1, C)
    out = padded.reshape(-1, c).index_select(0, pixels.view(-1))
    return out.view(b, h, w, c).permute(0, 3, 1, 2)  # NHWC buffer seen as NCHW: channels-last


@functools.lru_cache(maxsize=8)
def _normalize_constants(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with x_norm = x_uint8 * scale + shift, built once per device."""
    mean = torch.tensor(CIFAR10_MEAN, dtype=torch.float64)
    std = torch.tensor(CIFAR10_STD, dtype=torch.float64)
    scale, shift = 1.0 / (255.0 * std), -mean / std
    return scale.float().view(1, -1, 1, 1).to(device), shift.float().view(1, -1, 1, 1).to(device)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 normalised with the CIFAR-10 mean/std, memory format kept."""
    scale, shift = _normalize_constants(images.device)
    return torch.addcmul(shift, images.float(), scale)


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, amp_dtype: torch.dtype | None = None
) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` in eval mode over uint8 images; the model's mode is restored."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    for start in range(0, len(labels), EVAL_BATCH_SIZE):
        x = normalize(images[start : start + EVAL_BATCH_SIZE])
        with torch.autocast(images.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(x)
        correct += (logits.argmax(dim=1) == labels[start : start + EVAL_BATCH_SIZE]).sum()
    model.train(was_training)
    return correct.item() / len(labels)


# ---------------------------------------------------------------------------------------------- outcome
@dataclasses.dataclass(frozen=True)
class TrainingOutcome:
    """What one call of :func:`train_child` produced. ``val_curve`` holds every epoch done so far,
    including those done before a resume; ``train_images_per_s`` counts this call's training only."""

    status: Status
    val_curve: tuple[float, ...] = ()
    epochs_done: int = 0
    wall_time_s: float = 0.0
    train_images_per_s: float = 0.0
    resumed_from_epoch: int = 0
    error: str | None = None

    def max_recent_accuracy(self, last: int = 5) -> float | None:
        """The paper's metric: the best validation accuracy over the last ``last`` epochs (None if no epoch)."""
        return max(self.val_curve[-last:]) if self.val_curve else None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["status"] = self.status.value
        d["val_curve"] = list(self.val_curve)
        return d


# ---------------------------------------------------------------------------------------------- training
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions natively (oneDNN with AVX512-BF16 or AMX), where bf16
    autocast roughly doubles training speed; elsewhere it is emulated and slower than float32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _amp_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """The autocast dtype, or None for float32: bf16 where supported, else fp16 (CUDA). Default (None): on
    for CUDA, and on a CPU with native bf16 (:func:`cpu_has_fast_bf16`)."""
    if amp is None:
        amp = device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16())
    if not amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


class _Run:
    """The mutable state of one training run: model, optimizer, scaler, generator, step and curve
    (an :class:`~nas_env.recipe.EpochRun`)."""

    metric_name = "val_accuracy"
    rate_name = "train_images_per_s"

    def __init__(
        self,
        model: nn.Module,
        data: CIFARTensors,
        recipe: TrainingRecipe,
        device: torch.device,
        seed: int,
        compile: bool,
        amp_dtype: torch.dtype | None,
    ) -> None:
        self.model = model.to(device, memory_format=torch.channels_last).train()
        self.step_model = torch.compile(self.model) if compile else self.model
        self.data, self.recipe, self.device, self.amp_dtype = data, recipe, device, amp_dtype
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=recipe.lr,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
            nesterov=recipe.nesterov,
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype is torch.float16)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.batch_size = min(recipe.batch_size, data.num_train)
        self.steps_per_epoch = data.num_train // self.batch_size  # last incomplete batch dropped (BN needs > 1)
        self.items_per_epoch = self.steps_per_epoch * self.batch_size
        self.total_steps = recipe.epochs * self.steps_per_epoch
        self.step = 0
        self.curve: list[float] = []

    def autocast(self) -> torch.autocast:
        """bf16/fp16 autocast when enabled, a no-op context otherwise."""
        enabled = self.amp_dtype is not None
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=enabled)

    def train_epoch(self) -> tuple[float, str | None]:
        """One pass over the shuffled training images: (mean loss, None) or (nan, where it diverged)."""
        data, recipe = self.data, self.recipe
        check_every = 1 if self.device.type == "cpu" else CUDA_FINITE_CHECK_EVERY
        padding = crop_padding(data.resolution)
        images = data.train_images.permute(0, 2, 3, 1)  # NHWC, contiguous: a batch is a gather of rows
        order = torch.randperm(data.num_train, generator=self.generator, device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        for i in range(self.steps_per_epoch):
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate(recipe, self.step, self.total_steps)
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = images[idx].permute(0, 3, 1, 2)  # (B, C, H, W), channels-last uint8
            if recipe.augment:
                x = random_crop_flip(x, self.generator, padding)
            with self.autocast():
                logits = self.step_model(normalize(x))
            loss = F.cross_entropy(logits.float(), data.train_labels[idx], label_smoothing=recipe.label_smoothing)
            loss_sum += loss.detach()
            if (i + 1) % check_every == 0 and not torch.isfinite(loss_sum):
                return math.nan, f"step {i + 1}"
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
        mean_loss = loss_sum.item() / self.steps_per_epoch  # host sync: the epoch's work is done
        return (mean_loss, None) if math.isfinite(mean_loss) else (math.nan, "the end of the epoch")

    def validate(self) -> float:
        return evaluate_accuracy(self.model, self.data.val_images, self.data.val_labels, self.amp_dtype)

    def save(self, path: Path) -> None:
        save_checkpoint(path, self.recipe, {
            "epoch": len(self.curve),
            "step": self.step,
            "curve": list(self.curve),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(),
            **self._data_identity(),
        })  # fmt: skip

    def restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path, self.recipe, self._data_identity())
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["scaler"]:  # empty when the checkpointing run had no fp16 scaler
            self.scaler.load_state_dict(ckpt["scaler"])
        self.generator.set_state(ckpt["generator"])
        self.step = int(ckpt["step"])
        self.curve = [float(a) for a in ckpt["curve"]]

    def _data_identity(self) -> dict[str, int]:
        """What a checkpoint must share with the data it resumes on."""
        return {"num_train": self.data.num_train, "data_seed": self.data.seed}


def train_child(
    model: nn.Module,
    data: CIFARTensors,
    recipe: TrainingRecipe,
    device: str | torch.device = "cpu",
    seed: int = 0,
    compile: bool = False,
    amp: bool | None = None,
    checkpoint_path: str | Path | None = None,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> TrainingOutcome:
    """Train ``model`` on ``data`` for ``recipe.epochs`` epochs, validating after each; never raises for
    divergence (Status.DIVERGED) or out-of-memory (Status.OOM). Other errors propagate.

    The initial weights are the caller's (build the model under ``torch.manual_seed`` for a reproducible
    run). With ``checkpoint_path``, progress is saved after every epoch and resumed from if the file exists;
    a resumed run may ask for more epochs than the checkpointed one (the cosine then spans the new total).
    ``log`` receives one dict of named scalars per epoch. ``amp``: None = autocast on CUDA only.
    """
    start = time.perf_counter()
    device = check_device(data.device, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels
    run = _Run(model, data, recipe, device, seed, compile, _amp_dtype(device, amp))
    p = run_epochs(run, device, checkpoint_path, log, start)
    return TrainingOutcome(p.status, p.val_curve, p.epochs_done, p.wall_time_s, p.items_per_s, p.resumed_from_epoch,
                           p.error)  # fmt: skip
