"""Every space's drawing: random architectures (all skip patterns, strides, depths 2..15; every NB201 op; PTB
base 2 and 8), partial architectures, the inline SVG, and the rgb_array frames' documented shape."""

from __future__ import annotations

import itertools
import re

import gymnasium as gym
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import nas_env  # noqa: F401 - registers the ids
from nas_env.render import FRAME_SHAPE
from nas_env.spaces import CNNArchitecture, CNNSpace, ConvLayer, RNNCellSpace
from nas_env.spaces.drawing import architecture_figure, architecture_svg, draw_architecture, draw_partial, to_rgb
from nas_env.spaces.nb201 import EDGES, OPS, NB201Architecture, NB201Space
from nas_env.spaces.rnn_cell import paper_example


def _render(arch: object) -> np.ndarray:
    image = to_rgb(architecture_figure(arch))  # type: ignore[arg-type]
    assert image.ndim == 3 and image.shape[2] == 3
    assert (image < 250).any(), "the drawing is blank"
    return image


@pytest.mark.parametrize("depth", range(2, 16))
def test_cnn_random_architectures_of_every_depth_draw(depth: int) -> None:
    space = CNNSpace(depth, predict_strides=True)
    rng = np.random.default_rng(depth)
    for _ in range(3):
        _render(space.sample(rng))


def test_cnn_every_skip_pattern_draws() -> None:
    depth = 4  # every subset of earlier layers for every layer: 2^(0+1+2+3) = 64 architectures
    anchors = [(i, j) for i in range(depth) for j in range(i)]
    for bits in itertools.product((0, 1), repeat=len(anchors)):
        on = {a for a, b in zip(anchors, bits) if b}
        layers = tuple(ConvLayer(3, 5, 24, 2 if i % 2 else 1, 3 if i == 3 else 1,
                                 tuple(j for j in range(i) if (i, j) in on)) for i in range(depth))  # fmt: skip
        figure = Figure()
        FigureCanvasAgg(figure)
        draw_architecture(CNNArchitecture(layers), figure.add_subplot())
        figure.canvas.draw()
    _render(CNNArchitecture(layers))  # the last one (every skip) to pixels


def test_cnn_drawing_shows_filters_strides_and_skips() -> None:
    arch = CNNArchitecture((ConvLayer(3, 5, 36, 2, 1), ConvLayer(7, 1, 64, 1, 1, (0,)), ConvLayer(1, 1, 24, 1, 1, (0, 1))))
    svg = architecture_svg(arch)
    for text in ("3x5", "36 f", "s2x1", "7x1", "64 f", "GAP"):
        assert text in svg, text
    assert svg.startswith("<svg") and "<metadata" not in svg
    assert re.findall(r'(?:href|src)="(?!#)', svg) == []  # nothing outside the drawing is referenced


@pytest.mark.parametrize("op", OPS)
def test_nb201_every_op_on_every_edge_draws(op: str) -> None:
    svg = architecture_svg(NB201Architecture((op,) * len(EDGES)))
    assert op.replace("nor_", "").replace("_connect", "") in svg
    rng = np.random.default_rng(0)
    for _ in range(5):
        _render(NB201Space().sample(rng))


@pytest.mark.parametrize("leaves", [2, 8])
def test_ptb_cells_draw(leaves: int) -> None:
    space = RNNCellSpace(leaves)
    rng = np.random.default_rng(leaves)
    for _ in range(5):
        _render(space.sample(rng))
    svg = architecture_svg(paper_example())
    assert "sigmoid" in svg and "inject" in svg and "c_t" in svg


@pytest.mark.parametrize("space", [CNNSpace(5, predict_strides=True), NB201Space(), RNNCellSpace(2), RNNCellSpace(8)],
                         ids=["cnn", "nb201", "ptb2", "ptb8"])
def test_partial_architectures_draw_at_every_step(space: object) -> None:
    tokens = space.sample_tokens(np.random.default_rng(1))  # type: ignore[attr-defined]
    for n in range(len(tokens) + 1):
        figure = Figure()
        FigureCanvasAgg(figure)
        draw_partial(space, tokens[:n], figure.add_subplot())  # type: ignore[arg-type]
        figure.canvas.draw()


@pytest.mark.parametrize("env_id, kwargs", [("NAS-Bench-201-v0", {}), ("NAS-Synthetic-v0", {"num_layers": 15}),
                                            ("NAS-Synthetic-v0", {"num_layers": 2, "predict_strides": True})])
def test_rgb_array_frames_draw_the_architecture_so_far_in_the_documented_shape(env_id: str, kwargs: dict) -> None:
    env = gym.make(env_id, render_mode="rgb_array", **kwargs)
    env.reset(seed=0)
    frames = [env.render()]
    terminated = False
    rng = np.random.default_rng(0)
    while not terminated:
        mask = env.unwrapped.action_masks()
        _, _, terminated, _, _ = env.step(int(rng.choice(np.flatnonzero(mask))))
        frames.append(env.render())
    for frame in frames:
        assert frame.shape == FRAME_SHAPE and frame.dtype == np.uint8
    assert len({f.tobytes() for f in frames}) > len(frames) // 2  # the drawing changes as decisions are made
    assert isinstance(gym.make(env_id, render_mode="ansi", **kwargs).unwrapped.render(), str)


def test_ptb_frames_have_the_documented_shape() -> None:
    from nas_env.render import architecture_image

    space = RNNCellSpace(8)
    tokens = space.sample_tokens(np.random.default_rng(3))
    for n in (0, 7, len(tokens)):
        assert architecture_image(space, tokens[:n], ["caption"]).shape == FRAME_SHAPE
