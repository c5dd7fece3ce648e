"""The paper's depth curriculum: start shallow, add layers as the search goes on."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DepthCurriculum:
    """Depth = ``start_layers + step_layers * (num_sampled // every)``, capped at ``max_layers``.

    Paper defaults: start at 6 layers, +2 every 1,600 sampled architectures (12,800 in total, so the
    last stage reaches 20 layers).
    """

    start_layers: int = 6
    step_layers: int = 2
    every: int = 1600
    max_layers: int | None = None

    def __post_init__(self) -> None:
        if self.start_layers < 1 or self.step_layers < 0 or self.every < 1:
            raise ValueError(f"bad curriculum {self}: need start_layers >= 1, step_layers >= 0, every >= 1")
        if self.max_layers is not None and self.max_layers < self.start_layers:
            raise ValueError(f"max_layers {self.max_layers} is below start_layers {self.start_layers}")

    def depth(self, num_sampled: int) -> int:
        """Number of layers for the next architecture after ``num_sampled`` have been sampled."""
        depth = self.start_layers + self.step_layers * (num_sampled // self.every)
        return depth if self.max_layers is None else min(depth, self.max_layers)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
