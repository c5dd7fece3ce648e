"""Does averaging the top-k retrained models beat the single best? (an open question the paper leaves)

The members are the retrained architectures ranked by validation accuracy (the test split chooses
nothing); the ensemble averages their softmax outputs on the official test split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch


@torch.no_grad()
def ensemble_accuracies(
    weights_paths: Sequence[str | Path], data_dir: str | Path | None = None, download: bool = True
) -> list[float]:
    """Test accuracy of the mean softmax of the first k models, for k = 1..len(weights_paths)."""
    from evaluation.retrained import load_retrained, test_split
    from nas_env.training import normalize

    total, accuracies = None, []
    for path in weights_paths:
        model, saved = load_retrained(path)
        x, y = test_split(data_dir, int(saved["resolution"]), "cpu", download)
        probs = torch.cat([model(normalize(x[i : i + 1000])).softmax(dim=1) for i in range(0, len(y), 1000)])
        total = probs if total is None else total + probs
        accuracies.append(float((total.argmax(dim=1) == y).float().mean()))
    return accuracies
