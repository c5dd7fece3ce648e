"""Training throughput of the fast child trainer against a naive DataLoader baseline, side by side.

Both train the same architecture (same initial weights) on the same real CIFAR-10 images, with the same
batch size, optimizer and number of images; the first batch of each run (warm-up) is not timed.

- fast: ``nas_env.training.train_child``: data resident on the device as uint8, vectorised crop + flip,
  channels-last (autocast on CUDA); its own per-epoch training time, validation excluded.
- naive: ``torch.utils.data.DataLoader`` over a Dataset whose ``__getitem__`` converts one image to float,
  zero-pads, randomly crops, flips and normalises it in Python (what torchvision's
  RandomCrop(padding) + RandomHorizontalFlip + ToTensor + Normalize do, written by hand), default
  collate, NCHW float32, ``num_workers`` 0 and 2.

It also times the setup check a search runs before any child (``TrainingEvaluator.prepare()``) on the
intact data and on a copy with a truncated batch file, against one fast epoch.

Images below 32x32 are downsampled once, before either run, and both get the same downsampled images.
Data: ``$NAS_DATA_DIR/cifar10-subset`` (or ``--data-dir``).

Example: ``python benchmarks/bench_trainer.py --resolution 32 --images 1536 --layers 6 --repeats 3``
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from nas_env.children import build_cnn, count_flops, count_params
from nas_env.data import load_cifar10
from nas_env.spaces import CNNArchitecture, ConvLayer
from nas_env.training import CIFAR10_MEAN, CIFAR10_STD, TrainingRecipe, crop_padding, prepare_data, train_child


class NaiveCIFAR(Dataset):
    """Per-image transforms in Python, as a torchvision pipeline would run them."""

    def __init__(self, images_nhwc: np.ndarray, labels: np.ndarray, padding: int) -> None:
        self.images, self.labels, self.padding = images_nhwc, labels, padding
        self.mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
        self.std = torch.tensor(CIFAR10_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = torch.from_numpy(self.images[i]).permute(2, 0, 1).float().div(255)  # ToTensor
        _, h, w = img.shape
        p = self.padding
        img = F.pad(img, (p, p, p, p))  # RandomCrop(padding=p): zero pad, then a random window
        top, left = random.randint(0, 2 * p), random.randint(0, 2 * p)
        img = img[:, top : top + h, left : left + w]
        if random.random() < 0.5:  # RandomHorizontalFlip
            img = img.flip(-1)
        return (img - self.mean) / self.std, int(self.labels[i])  # Normalize


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def naive_images_per_s(
    model: nn.Module, dataset: Dataset, recipe: TrainingRecipe, device: torch.device, workers: int
) -> float:
    """One epoch of a plain DataLoader loop; images per second after the first (warm-up) batch."""
    loader = DataLoader(dataset, batch_size=recipe.batch_size, shuffle=True, drop_last=True, num_workers=workers)
    model = model.to(device).train()
    opt = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay, nesterov=True
    )
    start, images, running = 0.0, 0, 0.0
    for k, (x, y) in enumerate(loader):
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        running += loss.item()
        if k == 0:
            sync(device)
            start = time.perf_counter()
        else:
            images += len(y)
    sync(device)
    return images / (time.perf_counter() - start)


def fast_images_per_s(
    model: nn.Module, images, labels, recipe: TrainingRecipe, device: torch.device, compile: bool, amp: bool | None
) -> float:
    """The trainer's own figure for one epoch, after a one-batch warm-up call on the same model."""
    warm = TrainingRecipe.from_dict({**recipe.to_dict(), "train_images": recipe.batch_size})
    warm_data = prepare_data(images, labels, images[:100], labels[:100], warm, device=device)
    train_child(model, warm_data, warm, device=device, compile=compile, amp=amp)
    data = prepare_data(images, labels, images[:100], labels[:100], recipe, device=device)
    out = train_child(model, data, recipe, device=device, compile=compile, amp=amp)
    return out.train_images_per_s


def setup_check_seconds(data_dir: Path, repeats: int) -> tuple[float, float]:
    """Median seconds of ``TrainingEvaluator.prepare()`` (the driver's check before any child) on the intact
    data and on a copy whose data_batch_3 is cut in half (it must stop on that file, naming it)."""
    import shutil
    import tempfile

    from nas_env.data import CorruptDatasetError
    from nas_env.evaluators import TrainingEvaluator

    def timed(folder: Path, corrupt: bool) -> float:
        start = time.perf_counter()
        try:
            TrainingEvaluator(recipe="tiny", data_dir=folder, device="cpu", download=False).prepare()
        except CorruptDatasetError:
            if not corrupt:
                raise
        else:
            if corrupt:
                raise SystemExit("prepare() accepted a truncated batch file")
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "cifar10-subset"
        shutil.copytree(data_dir, copy)
        batch = copy / "data_batch_3"
        batch.write_bytes(batch.read_bytes()[: batch.stat().st_size // 2])
        intact = [timed(data_dir, False) for _ in range(repeats)]
        truncated = [timed(copy, True) for _ in range(repeats)]
    return statistics.median(intact), statistics.median(truncated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--images", type=int, default=1536, help="training images per timed run")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--layers", type=int, default=6, help="a chain of 3x3 convs of --filters filters")
    parser.add_argument("--filters", type=int, default=36)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each method (interleaved); medians shown")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader num_workers to try")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the fast path")
    parser.add_argument("--amp", choices=["auto", "on", "off"], default="auto", help="fast path autocast")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $NAS_DATA_DIR/cifar10-subset")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data_dir = args.data_dir or Path(os.environ.get("NAS_DATA_DIR", "")) / "cifar10-subset"
    images, labels = load_cifar10(data_dir, "train")
    if args.images > len(labels):
        parser.error(f"--images {args.images} exceeds the {len(labels)} training images in {data_dir}")
    images, labels = images[: args.images], labels[: args.images]
    recipe = TrainingRecipe(epochs=1, resolution=args.resolution, batch_size=args.batch_size)
    amp = {"auto": None, "on": True, "off": False}[args.amp]

    # the naive baseline gets the very images the fast trainer trains on (downsampled the same way)
    prepared = prepare_data(images, labels, images[:1], labels[:1], recipe, device="cpu")
    naive_set = NaiveCIFAR(
        prepared.train_images.permute(0, 2, 3, 1).contiguous().numpy(), labels, crop_padding(args.resolution)
    )

    arch = CNNArchitecture(
        tuple(ConvLayer(3, 3, args.filters, inputs=(i - 1,) if i else ()) for i in range(args.layers))
    )
    torch.manual_seed(0)
    initial = build_cnn(arch)
    print(f"architecture: {arch}  ({count_params(initial):,} params, "
          f"{count_flops(arch, args.resolution) / 1e6:.1f} M MACs/image at {args.resolution}x{args.resolution})")
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.images} images, batch {args.batch_size}, {args.repeats} repeats")

    results: dict[str, list[float]] = {"fast (train_child)": []}
    for w in args.workers:
        results[f"naive DataLoader, num_workers={w}"] = []
    for r in range(args.repeats):
        random.seed(r)
        results["fast (train_child)"].append(
            fast_images_per_s(copy.deepcopy(initial), images, labels, recipe, device, args.compile, amp)
        )
        for w in args.workers:
            results[f"naive DataLoader, num_workers={w}"].append(
                naive_images_per_s(copy.deepcopy(initial), naive_set, recipe, device, w)
            )
        print(f"  repeat {r + 1}: " + ", ".join(f"{v[-1]:.0f}" for v in results.values()), flush=True)

    print(f"\n{'method':<36} {'median img/s':>12} {'min':>8} {'max':>8}")
    for name, values in results.items():
        print(f"{name:<36} {statistics.median(values):>12.0f} {min(values):>8.0f} {max(values):>8.0f}")
    fast = statistics.median(results["fast (train_child)"])
    naive = {name: statistics.median(v) for name, v in results.items() if name.startswith("naive")}
    best = max(naive, key=naive.get)
    for name, value in naive.items():
        print(f"ratio fast / {name}: {fast / value:.2f}x")
    print(f"ratio fast / best naive ({best}): {fast / naive[best]:.2f}x")

    # the setup check a search runs before any child: it reads and verifies the batch files, nothing more
    intact_s, truncated_s = setup_check_seconds(data_dir, args.repeats)
    epoch_s = args.images / fast
    print(f"\nsetup check (prepare): intact data {intact_s:.3f} s, truncated batch file {truncated_s:.3f} s; "
          f"one fast epoch of {args.images} images {epoch_s:.3f} s")
    print(f"ratio setup check on truncated data / one fast epoch: {truncated_s / epoch_s:.2f}x")


if __name__ == "__main__":
    main()
