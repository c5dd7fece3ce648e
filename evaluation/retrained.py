"""A retrained child and the data it is tested on, shared by ``nas retrain``, the ensemble and ``nas export``.

:func:`load_retrained` reads the weights one retraining job saved; :func:`test_split` is the official
CIFAR-10 test split as the trainer sees it, read once per process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

def test_split(data_dir: str | Path | None, resolution: int, device: str = "cpu", download: bool = True) -> Any:
    """The official CIFAR-10 test split as the trainer sees it (uint8 at ``resolution`` on ``device``) and its
    labels; read once per process and setting."""
    from nas_env.data.cifar10 import find_cifar10, load_cifar10
    from nas_env.data_cache import cached
    from nas_env.training import prepare_eval_images

    def build() -> Any:
        images, labels = load_cifar10(find_cifar10(data_dir, download=download), "test")
        return prepare_eval_images(images, labels, resolution, device)

    return cached(("cifar10-test", None if data_dir is None else str(data_dir), resolution, device), build)


def load_retrained(weights_path: str | Path) -> tuple[Any, dict[str, Any]]:
    """The trained child of one retraining job (eval mode, on the CPU) and what was saved with it."""
    import torch

    from nas_env.children.cnn import build_cnn
    from nas_env.spaces.cnn import CNNArchitecture

    saved = torch.load(weights_path, map_location="cpu", weights_only=True)
    model = build_cnn(CNNArchitecture.from_dict(json.loads(saved["arch_json"])), bn_eps=float(saved["bn_eps"]))
    model.load_state_dict(saved["state_dict"])
    return model.eval(), saved
