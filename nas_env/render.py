"""Frames for ``render_mode="rgb_array"``: the architecture chosen so far drawn with matplotlib
(:func:`architecture_image`, through the spaces' drawings in :mod:`nas_env.spaces.drawing`).

The frame size is fixed (:data:`FRAME_SHAPE`) so that video recorders get frames of one shape.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

#: (height, width, channels) of every frame
FRAME_SHAPE = (320, 480, 3)
_DPI = 80


def architecture_image(space: Any, tokens: Sequence[int], caption: Sequence[str] = ()) -> np.ndarray:
    """The architecture chosen so far (the first ``len(tokens)`` decisions of ``space``, partial ones too)
    drawn on a white frame of :data:`FRAME_SHAPE` (uint8 RGB), with ``caption`` lines under it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from nas_env.spaces.drawing import draw_partial
    except ImportError as exc:  # matplotlib is the "report" extra
        raise ImportError("render_mode='rgb_array' draws with matplotlib: pip install 'nas-rl[report]'") from exc
    height, width, _ = FRAME_SHAPE
    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    canvas = FigureCanvasAgg(figure)
    ax = figure.add_axes((0.01, 0.14, 0.98, 0.84))
    draw_partial(space, tokens, ax)
    figure.text(0.02, 0.02, "\n".join(list(caption)[-2:]), va="bottom", ha="left", family="monospace", fontsize=8)
    canvas.draw()
    frame = np.asarray(canvas.buffer_rgba())[..., :3]
    return np.ascontiguousarray(frame[:height, :width])
