"""Does averaging the top-k retrained models beat the single best? (an open question the paper leaves)

The members are the retrained architectures ranked by validation accuracy (the test split chooses
nothing); the ensemble averages their softmax outputs on the official test split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch


@torch.no_grad()
def ensemble_accuracies(
    weights_paths: Sequence[str | Path], data_dir: str | Path | None = None, download: bool = True
) -> list[float]:
    """Test accuracy of the mean softmax of the first k models, for k = 1..len(weights_paths)."""
    from evaluation.retrain import load_retrained
    from nas_env.data.cifar10 import find_cifar10, load_cifar10
    from nas_env.training import normalize, prepare_eval_images

    if not weights_paths:
        return []
    images, labels = load_cifar10(find_cifar10(data_dir, download=download), "test")
    cache: dict[int, Any] = {}  # resolution -> (images, labels) as the trainer sees them
    total, accuracies = None, []
    for path in weights_paths:
        model, saved = load_retrained(path)
        resolution = int(saved["resolution"])
        if resolution not in cache:
            cache[resolution] = prepare_eval_images(images, labels, resolution, "cpu")
        x, y = cache[resolution]
        probs = torch.cat([model(normalize(x[i : i + 1000])).softmax(dim=1) for i in range(0, len(y), 1000)])
        total = probs if total is None else total + probs
        accuracies.append(float((total.argmax(dim=1) == y).float().mean()))
    return accuracies
