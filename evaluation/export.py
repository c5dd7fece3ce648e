"""Export a retrained architecture as a plain PyTorch program (``torch.export``): it loads and runs with
torch alone (``torch.export.load(path).module()``), without this package installed.

The program takes float32 RGB images (B, 3, r, r) in [0, 1] at the resolution the child was trained at
and returns class logits; the CIFAR-10 normalisation is inside it. A JSON file beside it says what it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evaluation.retrain import read_summary
from evaluation.retrained import load_retrained
from nas_env.data.cifar10 import CLASSES
from nas_env.training import CIFAR10_MEAN, CIFAR10_STD


class NormalizedClassifier(nn.Module):
    """A child CNN behind the trainer's normalisation: images in [0, 1] in, logits out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CIFAR10_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)


def export_retrained(run_dir: str | Path, out: str | Path, rank: int = 1) -> dict[str, Any]:
    """Export the ``rank``-th best retrained architecture of ``run_dir`` (by validation accuracy) to ``out``
    (a ``.pt2`` file) and write ``out`` + ``.json`` beside it; returns that metadata."""
    rows = [r for r in read_summary(run_dir)["rows"] if r["chosen"] and r["weights_path"]]
    rows.sort(key=lambda r: -r["val_accuracy"])
    if not 1 <= rank <= len(rows):
        raise ValueError(f"rank must be in 1..{len(rows)} (the retrained architectures with weights), got {rank}")
    row = rows[rank - 1]
    model, saved = load_retrained(row["weights_path"])
    resolution = int(saved["resolution"])
    program = torch.export.export(
        NormalizedClassifier(model).eval(),
        (torch.rand(2, 3, resolution, resolution),),
        dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=1 << 16)}},
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, out)
    meta = {
        "input": f"float32 RGB images (batch, 3, {resolution}, {resolution}) with values in [0, 1]",
        "output": "logits over the classes below",
        "classes": list(CLASSES),
        "architecture": json.loads(row["arch_json"]),
        "hyperparameters": row["chosen"],
        "val_accuracy": row["val_accuracy"],
        "test_accuracy": row["test_accuracy"],
        "resolution": resolution,
        "load_with": f"torch.export.load({out.name!r}).module()",
    }
    Path(f"{out}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta
