"""Architectures drawn with matplotlib: one function per search space, for whole and partial architectures.

- :func:`draw_cnn`: the CNN child as its layers in a line (filter height x width, filters, strides), the
  image on the left, the classifier head on the right (the space has no pooling layer: the outputs that feed
  no later layer are concatenated and globally average-pooled); every input connection is an arrow, the
  skip connections are arcs above the line.
- :func:`draw_nb201`: the NB201 cell as its 4-node DAG with the operation on each edge (``none`` dashed).
- :func:`draw_rnn_cell`: the PTB cell as its binary tree (combination and activation of each node), the
  cell inject (``c_{t-1}`` into node ``inject_into``) and the cell index (``c_t`` from node ``cell_from``).

Each takes a *view*: the decisions made so far, ``None`` for those not made yet, so the environment's
``rgb_array`` frames can draw an architecture while it is being chosen (:func:`partial_view`). Whole
architectures go through :func:`draw_architecture`; :func:`architecture_figure` and :func:`architecture_svg`
size a figure to the architecture (the reports inline the SVG). Text forms stay with the architectures'
``__str__`` (terminal tables).
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Any, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
from matplotlib.path import Path as MplPath

from nas_env.spaces.base import Architecture, SearchSpace
from nas_env.spaces.cnn import CNNArchitecture
from nas_env.spaces.nb201 import EDGES, NUM_NODES, NB201Architecture
from nas_env.spaces.rnn_cell import RNNCellArchitecture, tree_children

__all__ = [
    "CNNLayerView", "CNNView", "NB201View", "RNNCellView", "architecture_figure", "architecture_svg",
    "draw_architecture", "draw_cnn", "draw_nb201", "draw_partial", "draw_rnn_cell", "partial_view", "view_of",
]

UNKNOWN = "?"
_BOX = dict(boxstyle="round,pad=0.02,rounding_size=0.06", linewidth=1.0)
_DONE, _TODO, _EDGE, _SKIP, _OUT = "#dce9f7", "#f0f0f0", "#333333", "#d9480f", "#2b8a3e"
NB201_COLOURS = {"none": "#adb5bd", "skip_connect": "#495057", "nor_conv_1x1": "#1c7ed6",
                 "nor_conv_3x3": "#d9480f", "avg_pool_3x3": "#2b8a3e"}  # fmt: skip


# ---------------------------------------------------------------------------------------------- views
@dataclasses.dataclass(frozen=True)
class CNNLayerView:
    """One layer as far as it is decided (``None``: not yet); ``inputs_known``: every anchor decided."""

    filter_height: int | None = None
    filter_width: int | None = None
    num_filters: int | None = None
    stride_height: int | None = 1
    stride_width: int | None = 1
    inputs: tuple[int, ...] = ()
    inputs_known: bool = True
    pooling: str | None = None  # none in the paper's space; drawn when a layer has one


@dataclasses.dataclass(frozen=True)
class CNNView:
    layers: tuple[CNNLayerView, ...]
    complete: bool = True


@dataclasses.dataclass(frozen=True)
class NB201View:
    ops: tuple[str | None, ...]  # one per edge of EDGES


@dataclasses.dataclass(frozen=True)
class RNNCellView:
    nodes: tuple[tuple[str | None, str | None], ...]
    inject: tuple[str | None, str | None]
    cell_from: int | None
    inject_into: int | None


def view_of(arch: Architecture) -> CNNView | NB201View | RNNCellView:
    """The drawing view of a whole architecture."""
    if isinstance(arch, CNNArchitecture):
        return CNNView(tuple(
            CNNLayerView(l.filter_height, l.filter_width, l.num_filters, l.stride_height, l.stride_width, l.inputs,
                         pooling=getattr(l, "pooling", None))
            for l in arch.layers))  # fmt: skip
    if isinstance(arch, NB201Architecture):
        return NB201View(tuple(arch.ops))
    if isinstance(arch, RNNCellArchitecture):
        return RNNCellView(tuple(arch.nodes), tuple(arch.inject), arch.cell_from, arch.inject_into)  # type: ignore[arg-type]
    raise TypeError(f"no drawing for {type(arch).__name__}")


def partial_view(space: SearchSpace, tokens: Sequence[int]) -> CNNView | NB201View | RNNCellView:
    """The view of the first ``len(tokens)`` decisions of ``space`` (the rest not made yet)."""
    chosen = {d.name: d.choices[int(t)] for d, t in zip(space.decisions, tokens)}
    if space.name == "cnn":
        num_layers = int(space.num_layers)  # type: ignore[attr-defined]
        layers = []
        for i in range(num_layers):
            anchors = [f"layer{i}.skip_from_{j}" for j in range(i)]
            get = lambda f, default=None: chosen.get(f"layer{i}.{f}", default)  # noqa: E731
            strided = bool(getattr(space, "predict_strides", False))
            layers.append(CNNLayerView(
                get("filter_height"), get("filter_width"), get("num_filters"),
                get("stride_height") if strided else 1, get("stride_width") if strided else 1,
                tuple(j for j in range(i) if chosen.get(anchors[j]) == 1),
                inputs_known=all(a in chosen for a in anchors),
            ))  # fmt: skip
        return CNNView(tuple(layers), complete=len(tokens) == space.num_steps)
    if space.name == "nb201":
        return NB201View(tuple(chosen.get(f"edge{s}->{t}") for s, t in EDGES))
    if space.name == "rnn_cell":
        n = int(space.num_nodes)  # type: ignore[attr-defined]
        return RNNCellView(
            tuple((chosen.get(f"node{k}.combine"), chosen.get(f"node{k}.activation")) for k in range(n)),
            (chosen.get("inject.combine"), chosen.get("inject.activation")),
            chosen.get("cell_from"), chosen.get("inject_into"),
        )
    raise ValueError(f"no drawing for the search space {space.name!r}")


# ---------------------------------------------------------------------------------------------- primitives
def _box(ax: Axes, x: float, y: float, w: float, h: float, text: str, done: bool = True, fontsize: float = 8,
         edge: str = _EDGE, face: str | None = None) -> None:
    """A rounded box centred on (x, y) with ``text`` in it."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, facecolor=face or (_DONE if done else _TODO),
                                edgecolor=edge if done else "#adb5bd", **_BOX))  # fmt: skip
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, color="black" if done else "#868e96")


def _curve(ax: Axes, p0: tuple[float, float], p2: tuple[float, float], bend: float, color: str = _EDGE,
           style: str = "-", width: float = 1.1, arrow: bool = True) -> tuple[float, float]:
    """A quadratic Bezier arrow from ``p0`` to ``p2`` in data coordinates, its control point ``bend`` times
    the chord's length off the chord (to the left of the direction of travel). Returns the curve's midpoint."""
    (x0, y0), (x2, y2) = p0, p2
    cx, cy = (x0 + x2) / 2 - bend * (y2 - y0), (y0 + y2) / 2 + bend * (x2 - x0)
    path = MplPath([(x0, y0), (cx, cy), (x2, y2)], [MplPath.MOVETO, MplPath.CURVE3, MplPath.CURVE3])
    ax.add_patch(FancyArrowPatch(path=path, arrowstyle="-|>" if arrow else "-", mutation_scale=8, color=color,
                                 linestyle=style, linewidth=width))  # fmt: skip
    return 0.25 * x0 + 0.5 * cx + 0.25 * x2, 0.25 * y0 + 0.5 * cy + 0.25 * y2


def _finish(ax: Axes, x0: float, x1: float, y0: float, y1: float, title: str | None) -> None:
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def _v(value: Any) -> str:
    return UNKNOWN if value is None else str(value)


# ---------------------------------------------------------------------------------------------- CNN
def draw_cnn(view: CNNView | CNNArchitecture, ax: Axes, title: str | None = None) -> None:
    """The CNN child: image -> layers in a line -> concat + global average pool + linear. An arrow for every
    input of a layer: from the previous layer straight, skips (and the image feeding a later layer) as arcs
    above; the layers feeding no later layer go to the head by arcs below."""
    if isinstance(view, CNNArchitecture):
        view = view_of(view)  # type: ignore[assignment]
    layers = view.layers  # type: ignore[union-attr]
    n = len(layers)
    step, w, h = 1.0, 0.78, 0.9
    xs = [step * (i + 1) for i in range(n)]
    fs = 7 if n <= 10 else 6
    _box(ax, 0.0, 0.0, w, h, "image", fontsize=fs, face="#fff3bf")
    for i, layer in enumerate(layers):
        done = None not in (layer.filter_height, layer.filter_width, layer.num_filters)
        started = done or any(v is not None for v in (layer.filter_height, layer.filter_width, layer.num_filters))
        text = f"{_v(layer.filter_height)}x{_v(layer.filter_width)}\n{_v(layer.num_filters)} f"
        if (layer.stride_height, layer.stride_width) != (1, 1):
            text += f"\ns{_v(layer.stride_height)}x{_v(layer.stride_width)}"
        if layer.pooling:
            text += f"\n{layer.pooling}"
        _box(ax, xs[i], 0.0, w, h, text, done=done or started and layer.inputs_known, fontsize=fs)
        ax.text(xs[i], -h / 2 - 0.08, f"L{i}", ha="center", va="top", fontsize=fs - 1, color="#868e96")
    top = h / 2
    max_rise = 0.0
    for i, layer in enumerate(layers):
        if not layer.inputs_known and not layer.inputs:
            continue
        sources = list(layer.inputs) if layer.inputs else ([-1] if layer.inputs_known else [])
        for j in sources:
            x_from = 0.0 if j < 0 else xs[j]
            if j == i - 1:  # the previous box: a straight arrow between the boxes
                _curve(ax, (x_from + w / 2, 0.0), (xs[i] - w / 2, 0.0), 0.0)
                continue
            span = xs[i] - x_from
            bend = 0.12 + 0.02 * min(span, 12) / step
            _curve(ax, (x_from + 0.12, top), (xs[i] - 0.12, top), bend, color=_SKIP if j >= 0 else "#e67700")
            max_rise = max(max_rise, bend * span / 2)
    head_x = step * (n + 1)
    if view.complete and n:  # type: ignore[union-attr]
        _box(ax, head_x, 0.0, w, h, "concat\nGAP\nlinear", fontsize=fs, face="#d3f9d8")
        used = {j for layer in layers for j in layer.inputs}
        outs = [i for i in range(n) if i not in used]
        for i in outs:
            if i == n - 1:
                _curve(ax, (xs[i] + w / 2, 0.0), (head_x - w / 2, 0.0), 0.0, color=_OUT)
            else:
                span = head_x - xs[i]
                _curve(ax, (xs[i] + 0.12, -top), (head_x - 0.12, -top), -(0.12 + 0.02 * min(span, 12)), color=_OUT)
                max_rise = max(max_rise, (0.12 + 0.02 * min(span, 12)) * span / 2)
    margin = max(0.3, max_rise + 0.15)
    _finish(ax, -w / 2 - 0.1, head_x + w / 2 + 0.1, -top - margin - 0.1, top + margin, title)


# ---------------------------------------------------------------------------------------------- NB201
#: node positions of the NB201 cell (0 input, 3 output): a diamond, so every edge label has room
_NB201_POS = {0: (0.0, 0.0), 1: (1.6, 1.0), 2: (1.6, -1.0), 3: (3.2, 0.0)}
_NB201_BEND = {(0, 1): 0.0, (0, 2): 0.0, (1, 2): 0.25, (0, 3): -0.3, (1, 3): 0.0, (2, 3): 0.0}


def draw_nb201(view: NB201View | NB201Architecture, ax: Axes, title: str | None = None) -> None:
    """The NB201 cell: nodes 0 (input) to 3 (output), each edge labelled with its operation; ``none`` edges
    dashed grey (no connection), undecided edges dotted with "?"."""
    if isinstance(view, NB201Architecture):
        view = view_of(view)  # type: ignore[assignment]
    r = 0.28
    for (s, t), op in zip(EDGES, view.ops):  # type: ignore[union-attr]
        (x0, y0), (x1, y1) = _NB201_POS[s], _NB201_POS[t]
        d = math.hypot(x1 - x0, y1 - y0)
        ux, uy = (x1 - x0) / d, (y1 - y0) / d
        p0, p1 = (x0 + r * ux, y0 + r * uy), (x1 - r * ux, y1 - r * uy)
        if op is None:
            color, style = "#ced4da", ":"
        else:
            color, style = NB201_COLOURS.get(op, _EDGE), "--" if op == "none" else "-"
        mx, my = _curve(ax, p0, p1, _NB201_BEND[(s, t)], color=color, style=style, width=1.6)
        label = UNKNOWN if op is None else op.replace("nor_", "").replace("_connect", "")
        ax.text(mx, my, label, ha="center", va="center", fontsize=7, color=color,
                bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none", alpha=0.9))  # fmt: skip
    for node, (x, y) in _NB201_POS.items():
        ax.add_patch(matplotlib_circle((x, y), r, _DONE if node not in (0, NUM_NODES - 1) else "#fff3bf"))
        ax.text(x, y, str(node), ha="center", va="center", fontsize=9)
    ax.text(0.0, -r - 0.1, "in", ha="center", va="top", fontsize=7, color="#868e96")
    ax.text(3.2, -r - 0.1, "out", ha="center", va="top", fontsize=7, color="#868e96")
    ax.set_aspect("equal")
    _finish(ax, -0.45, 3.65, -1.45, 1.45, title)


def matplotlib_circle(xy: tuple[float, float], radius: float, face: str) -> Any:
    from matplotlib.patches import Circle

    return Circle(xy, radius, facecolor=face, edgecolor=_EDGE, linewidth=1.0, zorder=3)


# ---------------------------------------------------------------------------------------------- PTB cell
_SYMBOL = {"add": "+", "elem_mult": "×", None: UNKNOWN}


def _node_text(combine: str | None, activation: str | None) -> str:
    return f"{_SYMBOL.get(combine, combine)}\n{_v(activation)}"


def draw_rnn_cell(view: RNNCellView | RNNCellArchitecture, ax: Axes, title: str | None = None) -> None:
    """The PTB cell: leaves (each ``comb(W x_t, U h_{t-1})`` then its activation) at the bottom, the root
    (``h_t``) at the top; node ``inject_into`` takes ``c_{t-1}`` through the inject's combination and
    activation; ``c_t`` leaves from node ``cell_from`` (before its activation)."""
    if isinstance(view, RNNCellArchitecture):
        view = view_of(view)  # type: ignore[assignment]
    nodes = view.nodes  # type: ignore[union-attr]
    leaves = (len(nodes) + 1) // 2
    children = tree_children(leaves)
    pos: dict[int, tuple[float, float]] = {}
    for k in range(leaves):
        pos[k] = (float(k), 0.0)
    for k, pair in enumerate(children):
        if pair is not None:
            (xa, ya), (xb, _) = pos[pair[0]], pos[pair[1]]
            pos[k] = ((xa + xb) / 2, ya + 1.0)
    w, h = 0.7, 0.55
    fs = 7 if leaves <= 4 else 6
    for k, pair in enumerate(children):
        if pair is not None:
            for c in pair:
                _curve(ax, (pos[c][0], pos[c][1] + h / 2), (pos[k][0], pos[k][1] - h / 2), 0.0)
    for k, (combine, activation) in enumerate(nodes):
        x, y = pos[k]
        _box(ax, x, y, w, h, _node_text(combine, activation), done=combine is not None and activation is not None,
             fontsize=fs)  # fmt: skip
        ax.text(x - w / 2 + 0.03, y + h / 2 - 0.03, str(k), ha="left", va="top", fontsize=fs - 2, color="#868e96")
        if children[k] is None:
            ax.text(x, y - h / 2 - 0.05, "x, h", ha="center", va="top", fontsize=fs - 1, color="#868e96")
    root = len(nodes) - 1
    rx, ry = pos[root]
    _curve(ax, (rx, ry + h / 2), (rx, ry + h / 2 + 0.45), 0.0)
    ax.text(rx, ry + h / 2 + 0.5, "h_t", ha="center", va="bottom", fontsize=fs + 1)
    # cell inject: c_{t-1} -> [inject comb/act] -> node inject_into
    top = ry + h / 2 + 0.9
    inj = view.inject_into  # type: ignore[union-attr]
    comb, act = view.inject  # type: ignore[union-attr]
    iy = ry if inj is None else pos[inj][1]
    _box(ax, leaves + 0.1, iy, 0.9, 0.5, f"inject c_(t-1)\n{_SYMBOL.get(comb, comb)}, {_v(act)}",
         done=comb is not None and act is not None, fontsize=fs - 1, face="#fff3bf")  # fmt: skip
    if inj is not None:
        _curve(ax, (leaves + 0.1 - 0.45, iy - 0.15), (pos[inj][0] + 0.2, pos[inj][1] - h / 2), 0.3, color=_SKIP)
    else:
        ax.text(leaves + 0.1, iy - 0.3, "into ?", ha="center", va="top", fontsize=fs - 1, color="#868e96")
    cf = view.cell_from  # type: ignore[union-attr]
    cy = ry if cf is None else pos[cf][1]
    _box(ax, -1.1, cy, 0.6, 0.4, "c_t", fontsize=fs, face="#d3f9d8")
    if cf is not None:
        _curve(ax, (pos[cf][0] - 0.2, pos[cf][1] - h / 2), (-1.1 + 0.3, cy - 0.1), 0.3, color=_OUT)
    else:
        ax.text(-1.1, cy - 0.25, "from ?", ha="center", va="top", fontsize=fs - 1, color="#868e96")
    _finish(ax, -1.5, leaves + 0.65, -0.9, top + 0.1, title)


# ---------------------------------------------------------------------------------------------- dispatch
def _drawer(view: Any) -> Any:
    if isinstance(view, CNNView):
        return draw_cnn
    if isinstance(view, NB201View):
        return draw_nb201
    if isinstance(view, RNNCellView):
        return draw_rnn_cell
    raise TypeError(f"no drawing for {type(view).__name__}")


def draw_architecture(arch: Architecture, ax: Axes, title: str | None = None) -> None:
    """Draw a whole architecture of any space on ``ax``."""
    view = view_of(arch)
    _drawer(view)(view, ax, title)


def draw_partial(space: SearchSpace, tokens: Sequence[int], ax: Axes, title: str | None = None) -> None:
    """Draw the architecture chosen so far (the first ``len(tokens)`` decisions of ``space``) on ``ax``."""
    view = partial_view(space, tokens)
    _drawer(view)(view, ax, title)


def figure_size(view: Any) -> tuple[float, float]:
    """(width, height) in inches that fits the drawing of ``view``."""
    if isinstance(view, CNNView):
        return (max(3.0, 0.62 * (len(view.layers) + 2)), 1.9 if len(view.layers) > 2 else 1.5)
    if isinstance(view, NB201View):
        return (3.4, 2.3)
    leaves = (len(view.nodes) + 1) // 2
    return (max(3.2, 0.62 * (leaves + 2.5)), 0.55 * (math.log2(leaves) + 3.2))


def architecture_figure(arch: Architecture, title: str | None = None, dpi: int = 90) -> Figure:
    """A figure sized to ``arch`` with its drawing (Agg canvas, no pyplot state)."""
    view = view_of(arch)
    figure = Figure(figsize=figure_size(view), dpi=dpi)
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0.01, 0.01, 0.98, 0.98 if title is None else 0.88))
    _drawer(view)(view, ax, title)
    return figure


def architecture_svg(arch: Architecture, title: str | None = None, css_class: str = "arch") -> str:
    """The drawing of ``arch`` as an inline ``<svg>`` element (text kept as text, no external reference)."""
    import matplotlib

    figure = architecture_figure(arch, title)
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "nas-rl"}):
        figure.savefig(buffer, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML declaration and DOCTYPE: not allowed inside HTML
    return svg.replace("<svg ", f'<svg class="{css_class}" role="img" ', 1)


def to_rgb(figure: Figure) -> np.ndarray:
    """The figure as an ``(H, W, 3)`` uint8 array."""
    canvas = figure.canvas
    canvas.draw()  # type: ignore[attr-defined]
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])  # type: ignore[attr-defined]
