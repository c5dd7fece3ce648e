"""Frames for ``render_mode="rgb_array"``: the chosen decisions drawn as an image with matplotlib.

The frame size is fixed (:data:`FRAME_SHAPE`) so that video recorders get frames of one shape.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: (height, width, channels) of every frame
FRAME_SHAPE = (320, 480, 3)
_DPI = 80


def text_image(lines: Sequence[str]) -> np.ndarray:
    """``lines`` drawn top to bottom on a white frame of :data:`FRAME_SHAPE` (uint8 RGB)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError as exc:  # matplotlib is the "report" extra
        raise ImportError("render_mode='rgb_array' draws with matplotlib: pip install 'nas-rl[report]'") from exc
    height, width, _ = FRAME_SHAPE
    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    canvas = FigureCanvasAgg(figure)
    shown = list(lines)[-24:]  # the last decisions when a deep architecture does not fit
    figure.text(0.02, 0.98, "\n".join(shown) or "(no token chosen yet)", va="top", ha="left",
                family="monospace", fontsize=8)  # fmt: skip
    canvas.draw()
    frame = np.asarray(canvas.buffer_rgba())[..., :3]
    return np.ascontiguousarray(frame[:height, :width])
