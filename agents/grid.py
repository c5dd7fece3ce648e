"""Grid search: walk a fixed, documented grid of architectures once, never repeating one, then stop.

The seed notes ask how much time the controller saves against a grid search; this is that baseline. Rewards
are ignored. Each space has its own coarse grid (all of them are listed in ``docs/presets.md``):

* **CNN** (``cnn``, every depth and preset): every layer gets the *same* filter height, filter width,
  (strides, when the space predicts them) and number of filters, one choice per token kind, combined with one
  of four fixed skip patterns (:data:`CNN_SKIP_PATTERNS`): ``chain`` (layer i reads layer i-1: a plain stack),
  ``residual`` (layer i reads i-1 and i-2), ``dense`` (layer i reads every earlier layer) and ``none`` (no
  anchors: every layer reads the image and all of them meet at the classifier). With the paper's choices that
  is 4 x 4 x 4 x 4 = 256 points, x 9 with strides (2,304).
* **NAS-Bench-201** (``nb201``): the space already is a grid, 5 ops on each of 6 edges; the grid is all
  15,625 cells. A coarser one would have to drop ops and with them the table's optimum, so time to the
  optimum would be undefined for grid search.
* **PTB cells** (``rnn_cell``): every leaf shares one (combination, activation) pair, every internal node
  another, the cell inject a third (8 x 8 x 8), with one of three memory-cell wirings
  (:func:`rnn_cell_index_patterns`): ``c_t`` read at the first leaf and ``c_{t-1}`` injected at the first
  internal node, read at the first internal node and injected at the root, or read at the root's left child
  and injected at the first leaf: 1,536 points.

Any other space is enumerated completely (every token combination) if it has at most 100,000 architectures.

The order of the points is a permutation drawn from the seed (``order="seeded"``, the default: runs with
different seeds visit the grid in different orders, so a comparison over seeds measures the grid, not one
lucky order), or the lexicographic order of the description above (``order="fixed"``: every seed the same).

When every point has been asked for, :meth:`GridSearchAgent.ask` returns fewer proposals than asked, then
none, and the search loop (:meth:`agents.search.Search.run`) ends there: an exhausted grid is a finished
search. Under a depth curriculum each depth has its own grid and position; the search ends when the grid of
the current depth is spent, even if its curriculum stage is not over.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from agents.base import Agent, Proposal, space_key
from nas_env.spaces.base import SearchSpace

#: the fixed skip patterns of the CNN grid: name -> the earlier layers that layer ``i`` reads
CNN_SKIP_PATTERNS: dict[str, Callable[[int], tuple[int, ...]]] = {
    "chain": lambda i: (i - 1,) if i >= 1 else (),
    "residual": lambda i: tuple(j for j in (i - 2, i - 1) if j >= 0),
    "dense": lambda i: tuple(range(i)),
    "none": lambda i: (),
}

ORDERS = ("seeded", "fixed")


def cnn_grid(space: Any) -> list[tuple[int, ...]]:
    """The CNN grid of ``space`` (a :class:`~nas_env.spaces.cnn.CNNSpace`) as token sequences."""
    fields = space._layer_fields()  # [(field, choices), ...] in token order
    points = []
    for pattern in CNN_SKIP_PATTERNS.values():
        for values in itertools.product(*(range(len(choices)) for _, choices in fields)):
            tokens: list[int] = []
            for i in range(space.num_layers):
                reads = set(pattern(i))
                tokens += [1 if j in reads else 0 for j in range(i)]
                tokens += list(values)
            points.append(tuple(tokens))
    return list(dict.fromkeys(points))  # shallow spaces: several patterns give the same wiring, keep one


def every_sequence(space: SearchSpace) -> list[tuple[int, ...]]:
    """Every token sequence of ``space`` in lexicographic order (NAS-Bench-201's grid: all its cells)."""
    return [tuple(t) for t in itertools.product(*(range(d.num_choices) for d in space.decisions))]


def rnn_cell_index_patterns(space: Any) -> tuple[tuple[int, int], ...]:
    """The three ``(cell_from, inject_into)`` wirings of the PTB grid (see the module docstring)."""
    first_internal, root = space.num_leaves, space.num_nodes - 1
    left_of_root = root - 2 if space.num_nodes >= 3 else 0
    return ((0, first_internal), (first_internal, root), (left_of_root, 0))


def rnn_cell_grid(space: Any) -> list[tuple[int, ...]]:
    """The PTB grid: shared (combine, activation) for leaves, for internal nodes, and for the inject."""
    pairs = list(itertools.product(range(2), range(4)))  # (combine, activation) token pairs
    points = []
    for cell_from, inject_into in rnn_cell_index_patterns(space):
        for leaf, inner, inject in itertools.product(pairs, pairs, pairs):
            tokens: list[int] = []
            for n in range(space.num_nodes):
                tokens += list(leaf if n < space.num_leaves else inner)
            points.append((*tokens, *inject, cell_from, inject_into))
    return points


GRIDS: dict[str, Callable[[Any], list[tuple[int, ...]]]] = {
    "cnn": cnn_grid,
    "nb201": every_sequence,
    "rnn_cell": rnn_cell_grid,
}


#: a space without a documented grid is enumerated completely when it has at most this many architectures
MAX_FULL_GRID = 100_000


def grid_points(space: SearchSpace) -> list[tuple[int, ...]]:
    """The documented grid of ``space`` in its fixed order. A space without one is enumerated completely
    (every token combination, lexicographic) when that is at most :data:`MAX_FULL_GRID` points; a clear
    error otherwise."""
    if space.name in GRIDS:
        return GRIDS[space.name](space)
    size = 1
    for d in space.decisions:
        size *= d.num_choices
    if size > MAX_FULL_GRID:
        raise ValueError(f"grid search has no grid for the {space.name!r} space (it has: {', '.join(GRIDS)}), "
                         f"and its {size:,} architectures are too many to enumerate (at most {MAX_FULL_GRID:,})")
    return every_sequence(space)


class GridSearchAgent(Agent):
    """Asks for the points of :func:`grid_points` in a seeded (or fixed) order, each once; ``order``: see the
    module docstring."""

    name: ClassVar[str] = "grid"

    def __init__(self, space: SearchSpace, seed: int = 0, order: str = "seeded", **hyperparameters: Any) -> None:
        super().__init__(space, seed, **hyperparameters)
        if order not in ORDERS:
            raise ValueError(f"grid order must be one of {ORDERS}, got {order!r}")
        self.order = order
        self._positions: dict[str, int] = {}  # space key -> how many points of its grid were asked for
        self._cache: tuple[str, list[tuple[int, ...]]] | None = None
        self.grid()  # an unsupported space fails now, not at the first ask

    def grid(self) -> list[tuple[int, ...]]:
        """The current space's grid in this agent's order."""
        key = space_key(self.space)
        if self._cache is None or self._cache[0] != key:
            points = grid_points(self.space)
            if self.order == "seeded":
                perm = np.random.default_rng([self.seed, 0x6772_6964]).permutation(len(points))
                points = [points[i] for i in perm]
            self._cache = (key, points)
        return self._cache[1]

    @property
    def remaining(self) -> int:
        """Points of the current space's grid not asked for yet."""
        return len(self.grid()) - self._positions.get(space_key(self.space), 0)

    def ask(self, n: int = 1) -> list[Proposal]:
        """The next ``n`` points, fewer (or none) once the grid is spent."""
        n = self._check_n(n)
        key, grid = space_key(self.space), self.grid()
        start = self._positions.get(key, 0)
        points: Sequence[tuple[int, ...]] = grid[start : start + n]
        self._positions[key] = start + len(points)
        return [self._new_proposal(tokens, self.space) for tokens in points]

    def tell(self, proposal: Proposal, reward: float) -> dict[str, float]:
        self._accept(proposal, reward)
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {**self._base_state(), "seed": self.seed, "order": self.order, "positions": dict(self._positions)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_base_state(state)
        if state.get("order", self.order) != self.order:
            raise ValueError(f"grid state has order {state['order']!r}, this agent {self.order!r}")
        self.seed = int(state["seed"])  # the seed orders the grid: the saved walk goes on in its own order
        self._cache = None
        self._positions = {str(k): int(v) for k, v in state["positions"].items()}
