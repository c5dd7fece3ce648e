"""The child trainer on one GPU: images/s against a naive DataLoader, epoch and child times, children per hour.

Run through ``benchmarks/gpu_suite.sh`` (at most 8 minutes on one GPU). Sections, each printed as it ends:

1. throughput: the paper's 6- and 15-layer children (seeded random samples of ``CNNSpace(6)`` and the v1
   space), the fast trainer (``train_child``: bf16 autocast, channels_last, data on the device) eager and
   under ``torch.compile`` (the compile time reported apart), against a naive DataLoader loop (per-image
   Python transforms, fp32, ``benchmarks/bench_trainer.py``'s baseline);
2. epoch: seconds per training epoch of 45,000 images, per validation pass of 5,000, and per 50-epoch child;
3. sharing: k = 1, 2, 4, 8 worker processes (this script's ``worker`` command) train a child each at the
   same time on the device; all wait on a start file until every one has its data and model ready, so
   the timed epochs overlap. Children per hour per GPU = k * 3600 / (50 epochs at the slowest worker's
   pace); each worker's peak memory is reported.

Data: CIFAR-10 from ``$NAS_DATA_DIR`` (or ``--data-dir``) when it holds the full 50,000 training images;
otherwise CIFAR-shaped uint8 images and labels generated on the device (the output says which: speed is
the same, accuracies are meaningless). ``--device cpu --quick`` is a dry run of every section in well
under a minute (tiny sizes, k = 1 and 2, no compile), used by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_trainer's naive baseline, beside this file
from bench_trainer import NaiveCIFAR, naive_images_per_s  # noqa: E402

from nas_env.children import build_cnn, count_params  # noqa: E402
from nas_env.spaces.cnn import CNNSpace  # noqa: E402
from nas_env.training import (  # noqa: E402
    TrainingRecipe,
    crop_padding,
    evaluate_accuracy,
    prepare_data,
    train_child,
)

FULL_TRAIN, FULL_VAL, PAPER_EPOCHS = 45_000, 5_000, 50


def sizes(quick: bool) -> dict[str, Any]:
    """Images per measurement: full on a GPU, tiny for the CPU dry run."""
    if quick:
        return {"throughput": 64, "naive": 64, "epoch": 64, "val": 32, "share": 32, "epochs": 1,
                "share_epochs": 1, "ks": (1, 2), "batch": 32, "layers": (6, 15), "resolution": 8}  # fmt: skip
    return {"throughput": 10_240, "naive": 5_120, "epoch": FULL_TRAIN, "val": FULL_VAL, "share": FULL_TRAIN,
            "epochs": 2, "share_epochs": 1, "ks": (1, 2, 4, 8), "batch": 128, "layers": (6, 15), "resolution": 32}  # fmt: skip


def architecture(layers: int) -> Any:
    """The seeded child of the paper's space with ``layers`` layers (6: the curriculum's start, 15: v1)."""
    return CNNSpace(layers).sample(np.random.default_rng([layers, 2017]))


def load_images(data_dir: Path | None, n_train: int, n_val: int, device: torch.device) -> tuple[Any, ...]:
    """(train images, labels, val images, labels, where they came from): real CIFAR-10 if the folder holds
    enough images, else uint8 images and labels drawn on the device."""
    from nas_env.data.cifar10 import find_cifar10, load_cifar10

    reason = "no data folder given"
    if data_dir is not None:
        try:
            images, labels = load_cifar10(find_cifar10(data_dir, download=False), "train")
        except Exception as exc:  # noqa: BLE001 - any unreadable folder falls back to generated data
            reason = f"no CIFAR-10 found there ({type(exc).__name__})"
        else:
            if len(labels) >= n_train + n_val:
                src = f"real CIFAR-10 from the data folder ({len(labels):,} training images)"
                return images[:n_train], labels[:n_train], images[n_train:n_train + n_val], \
                    labels[n_train:n_train + n_val], src  # fmt: skip
            reason = f"the CIFAR-10 there has {len(labels):,} training images, fewer than {n_train + n_val:,}"
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randint(0, 256, (n_train + n_val, 32, 32, 3), generator=g, device=device, dtype=torch.uint8)
    y = torch.randint(0, 10, (n_train + n_val,), generator=g, device=device)
    src = f"CIFAR-shaped data GENERATED ON THE DEVICE ({reason}): speeds are real, accuracies meaningless"
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:], src


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: allocated on the GPU, resident on the host for a CPU run."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fast_run(model: torch.nn.Module, data: Any, recipe: TrainingRecipe, device: torch.device, compile: bool
             ) -> tuple[float, float]:  # fmt: skip
    """(images/s of one epoch, seconds of the one-step warm-up call before it: the compile time when compiling)."""
    warm_recipe = TrainingRecipe.from_dict({**recipe.to_dict(), "train_images": recipe.batch_size})
    warm = prepare_data(data.train_images.permute(0, 2, 3, 1), data.train_labels, data.val_images.permute(0, 2, 3, 1),
                        data.val_labels, warm_recipe, device=device)  # fmt: skip
    start = time.perf_counter()
    train_child(model, warm, warm_recipe, device=device, compile=compile, amp=True)
    sync(device)
    warm_s = time.perf_counter() - start
    out = train_child(model, data, recipe, device=device, compile=compile, amp=True)
    return out.train_images_per_s, warm_s


def throughput(args: argparse.Namespace, sz: dict[str, Any], device: torch.device) -> None:
    """Section 1: fast eager / fast compiled / naive DataLoader, images per second, per depth."""
    xt, yt, xv, yv, src = load_images(args.data_dir, sz["throughput"], 100, device)
    print(f"data: {src}")
    res = sz["resolution"]
    recipe = TrainingRecipe(epochs=1, batch_size=sz["batch"], train_images=sz["throughput"], val_images=100,
                            resolution=res)  # fmt: skip
    data = prepare_data(xt, yt, xv, yv, recipe, device=device)
    host = data.train_images.permute(0, 2, 3, 1)[: sz["naive"]].cpu().numpy()
    naive_set = NaiveCIFAR(host, data.train_labels[: sz["naive"]].cpu().numpy(), crop_padding(res))
    workers = 0 if args.quick else min(4, os.cpu_count() or 1)
    print(f"\n== 1. training images/s at {res}x{res}, batch {sz['batch']} ({sz['throughput']:,} images per fast run, "
          f"{sz['naive']:,} per naive run, naive num_workers={workers})")
    print(f"{'child':<10} {'params':>10} {'naive fp32':>11} {'fast bf16':>10} {'ratio':>6} "
          f"{'compiled':>9} {'ratio':>6} {'compile s':>9} {'peak MB':>8}")
    for layers in sz["layers"]:
        arch = architecture(layers)
        reset_peak(device)
        torch.manual_seed(0)
        initial = build_cnn(arch)
        naive = naive_images_per_s(_copy(initial), naive_set, recipe, device, workers)
        eager, _ = fast_run(_copy(initial), data, recipe, device, compile=False)
        if args.compile:
            compiled, compile_s = fast_run(_copy(initial), data, recipe, device, compile=True)
            comp = f"{compiled:>9.0f} {compiled / naive:>5.2f}x {compile_s:>9.1f}"
        else:
            comp = f"{'skipped':>9} {'':>6} {'':>9}"
        print(f"{layers:>2} layers {count_params(initial):>10,} {naive:>11.0f} {eager:>10.0f} {eager / naive:>5.2f}x "
              f"{comp} {peak_memory_mb(device):>8.0f}", flush=True)  # fmt: skip
        print(f"           {arch}")


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model)


def epoch_times(args: argparse.Namespace, sz: dict[str, Any], device: torch.device) -> None:
    """Section 2: one child's training epoch and validation pass at the paper's sizes, and a 50-epoch child."""
    xt, yt, xv, yv, src = load_images(args.data_dir, sz["epoch"], sz["val"], device)
    print(f"\n== 2. seconds per epoch ({sz['epoch']:,} training images, {sz['val']:,} validation; bf16, eager); data: {src}")
    recipe = TrainingRecipe(epochs=sz["epochs"], batch_size=sz["batch"], train_images=sz["epoch"],
                            val_images=sz["val"], resolution=sz["resolution"])  # fmt: skip
    data = prepare_data(xt, yt, xv, yv, recipe, device=device)
    for layers in sz["layers"]:
        reset_peak(device)
        torch.manual_seed(0)
        model = build_cnn(architecture(layers))
        rates: list[float] = []
        out = train_child(model, data, recipe, device=device, amp=True, log=lambda row: rates.append(row["train_images_per_s"]))
        start = time.perf_counter()
        evaluate_accuracy(model, data.val_images, data.val_labels, torch.bfloat16)
        sync(device)
        val_s = time.perf_counter() - start
        train_s = sz["epoch"] / rates[-1]  # the last epoch: cuDNN's autotuning is behind it
        child_s = PAPER_EPOCHS * (train_s * FULL_TRAIN / sz["epoch"] + val_s * FULL_VAL / sz["val"])
        print(f"{layers:>2} layers: train {train_s:.2f} s/epoch ({rates[-1]:,.0f} img/s), validation {val_s:.2f} s, "
              f"a {PAPER_EPOCHS}-epoch child at 45,000 images {child_s / 60:.1f} min "
              f"(status {out.status.value}), peak {peak_memory_mb(device):.0f} MB", flush=True)  # fmt: skip


def sharing(args: argparse.Namespace, sz: dict[str, Any], device: torch.device) -> None:
    """Section 3: k workers on one device at once; children per hour per GPU and each worker's peak memory."""
    print(f"\n== 3. children per hour per {device.type.upper()} with k processes sharing it "
          f"(6-layer child, {sz['share']:,} images x {sz['share_epochs']} epoch(s) each, timed together)")
    print(f"{'k':>2} {'slowest epoch s':>16} {'children/hour':>14} {'vs k=1':>7} {'peak MB per worker':>19}")
    base = None
    for k in sz["ks"]:
        with tempfile.TemporaryDirectory() as tmp:
            go = Path(tmp) / "go"
            cmd = [sys.executable, __file__, "worker", "--device", str(device), "--images", str(sz["share"]),
                   "--epochs", str(sz["share_epochs"]), "--batch", str(sz["batch"]),
                   "--resolution", str(sz["resolution"]), "--go", str(go)]  # fmt: skip
            if args.data_dir is not None:
                cmd += ["--data-dir", str(args.data_dir)]
            procs = [subprocess.Popen(cmd + ["--ready", str(Path(tmp) / f"ready-{i}")], stdout=subprocess.PIPE,
                                      text=True) for i in range(k)]  # fmt: skip
            while not all((Path(tmp) / f"ready-{i}").exists() for i in range(k)):
                if any(p.poll() not in (None, 0) for p in procs):
                    raise SystemExit("a worker failed before it was ready")
                time.sleep(0.05)
            go.touch()
            results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
        epoch_s = max(r["epoch_s"] for r in results) * FULL_TRAIN / sz["share"]
        per_hour = k * 3600 / (PAPER_EPOCHS * epoch_s)
        base = base or per_hour
        mems = ", ".join(f"{r['peak_mb']:.0f}" for r in results)
        rate = f"{per_hour:.1f}" if per_hour >= 1 else f"{per_hour:.2g}"  # a slow CPU's dry run is not "0.0"
        print(f"{k:>2} {epoch_s:>16.2f} {rate:>14} {per_hour / base:>6.2f}x {mems:>19}", flush=True)
    print("(epoch s scaled to 45,000 images; a child = 50 such epochs, validation not included)")


def worker(args: argparse.Namespace) -> None:
    """One child of section 3: ready file once data and model are set, wait for the go file, train, print JSON."""
    device = torch.device(args.device)
    torch.set_num_threads(1)
    xt, yt, xv, yv, _ = load_images(args.data_dir, args.images, 256, device)
    recipe = TrainingRecipe(epochs=args.epochs, batch_size=args.batch, train_images=args.images, val_images=256,
                            resolution=args.resolution)  # fmt: skip
    data = prepare_data(xt, yt, xv, yv, recipe, device=device)
    torch.manual_seed(0)
    model = build_cnn(architecture(6))
    warm = TrainingRecipe.from_dict({**recipe.to_dict(), "epochs": 1, "train_images": args.batch})
    train_child(model, prepare_data(xt, yt, xv, yv, warm, device=device), warm, device=device, amp=True)
    Path(args.ready).touch()
    while not Path(args.go).exists():
        time.sleep(0.01)
    rates: list[float] = []
    train_child(model, data, recipe, device=device, amp=True, log=lambda row: rates.append(row["train_images_per_s"]))
    print(json.dumps({"epoch_s": args.images / statistics.median(rates), "peak_mb": peak_memory_mb(device)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", nargs="?", default="all", choices=["all", "throughput", "epoch", "sharing", "worker"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, k = 1 and 2, no compile: a dry run")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile runs")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $NAS_DATA_DIR/cifar10 if it exists")
    for name in ("--images", "--epochs", "--batch", "--resolution"):  # the worker's
        parser.add_argument(name, type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    parser.add_argument("--go", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.data_dir is None and os.environ.get("NAS_DATA_DIR"):
        args.data_dir = Path(os.environ["NAS_DATA_DIR"])
    if args.command == "worker":
        worker(args)
        return
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.exit(2, f"{parser.prog}: error: --device {args.device}: torch sees no CUDA device here; "
                       "use --device cpu --quick for a dry run\n")  # fmt: skip
    if args.quick:
        args.compile = False
    if device.type == "cpu":
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    else:
        torch.backends.cudnn.benchmark = True
    sz = sizes(args.quick)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"gpu suite: device {device} ({name}), torch {torch.__version__}, quick={args.quick}, "
          f"compile={args.compile}")
    start = time.perf_counter()
    if args.command in ("all", "throughput"):
        throughput(args, sz, device)
    if args.command in ("all", "epoch"):
        epoch_times(args, sz, device)
    if args.command in ("all", "sharing"):
        sharing(args, sz, device)
    print(f"\ngpu suite done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
