"""The paper's recurrent-cell search space (Zoph & Le 2017, section 3.4 and Figure 5; Penn Treebank).

The controller fills a complete binary tree with ``num_leaves`` leaves (the paper's "base 8":
``num_leaves=8``). Nodes are numbered leaves first (``0..L-1``), then each higher level left to right,
so there are ``N = 2L - 1`` nodes and the root is ``N - 1``; at every level the internal nodes combine
the pairs ``(0, 1), (2, 3), ...`` of the level below.

- Every node has a combination op (``"add"`` or ``"elem_mult"``) and an activation (``"identity"``,
  ``"tanh"``, ``"sigmoid"``, ``"relu"``). Leaf ``i`` computes ``act_i(comb_i(W_i x_t, U_i h_{t-1}))``;
  internal node ``k`` computes ``act_k(comb_k(a_left, a_right))``.
- "Cell inject": a combination op and an activation. Right after node ``inject_into`` is computed, its
  output ``a`` is replaced by ``act_inj(comb_inj(a, c_{t-1}))``; its parent uses that value (and it is
  ``h_t`` when ``inject_into`` is the root).
- "Cell index": ``cell_from`` (``c_t`` is node ``cell_from``'s value *before* its activation) and
  ``inject_into``, both in ``0..N-1``.
- ``h_t`` is the root's output.

Tokens, in order: for each node ``n`` in ``0..N-1``: ``node{n}.combine`` (kind ``"combine"``),
``node{n}.activation`` (kind ``"activation"``); then ``inject.combine`` (kind ``"combine"``),
``inject.activation`` (kind ``"activation"``); then ``cell_from`` and ``inject_into`` (kind
``"cell_index"``, choices ``0..N-1``). That is ``2N + 4`` tokens (34 for ``num_leaves=8``). A
controller shares one softmax head per kind, so every decision of a kind has the same choices.

Size: ``(2 * 4) ** (N + 1) * N ** 2`` architectures. For ``num_leaves=8`` (N = 15) this is
``8 ** 16 * 225 = 63,331,869,759,897,600`` (about 6.3e16, the paper's "6 x 10^16"). Token strings
that build the same function (e.g. swapped subtrees under a commutative op) are *not* merged.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, ClassVar, Sequence

from nas_env.spaces.base import Architecture, Decision, InvalidTokenError, SearchSpace

#: the combination ops (the token is the index into this tuple)
COMBINES: tuple[str, ...] = ("add", "elem_mult")
#: the activations (the token is the index into this tuple)
ACTIVATIONS: tuple[str, ...] = ("identity", "tanh", "sigmoid", "relu")

_SYMBOLS = {"add": "+", "elem_mult": "*"}


def _check_num_leaves(num_leaves: Any) -> int:
    if isinstance(num_leaves, bool) or not isinstance(num_leaves, int) or num_leaves < 2:
        raise ValueError(f"num_leaves must be a power of two >= 2, got {num_leaves!r}")
    if num_leaves & (num_leaves - 1):
        raise ValueError(f"num_leaves must be a power of two >= 2, got {num_leaves}")
    return num_leaves


def tree_children(num_leaves: int) -> tuple[tuple[int, int] | None, ...]:
    """For every node, its ``(left, right)`` children, or ``None`` for a leaf (numbering as above)."""
    num_leaves = _check_num_leaves(num_leaves)
    children: list[tuple[int, int] | None] = [None] * num_leaves
    start, width = 0, num_leaves
    while width > 1:
        children += [(start + 2 * j, start + 2 * j + 1) for j in range(width // 2)]
        start, width = start + width, width // 2
    return tuple(children)


def tree_parents(num_leaves: int) -> tuple[int | None, ...]:
    """For every node, its parent (``None`` for the root)."""
    children = tree_children(num_leaves)
    parents: list[int | None] = [None] * len(children)
    for k, pair in enumerate(children):
        if pair is not None:
            parents[pair[0]] = parents[pair[1]] = k
    return tuple(parents)


def _check_pair(field: str, value: Any) -> tuple[str, str]:
    """A ``(combine, activation)`` pair, validated; ``field`` names it in errors."""
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{field} must be a (combine, activation) pair, got {value!r}")
    combine, activation = value
    if combine not in COMBINES:
        raise ValueError(f"{field}: unknown combine {combine!r}; choose one of {list(COMBINES)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"{field}: unknown activation {activation!r}; choose one of {list(ACTIVATIONS)}")
    return (combine, activation)


@dataclasses.dataclass(frozen=True)
class RNNCellArchitecture(Architecture):
    """One recurrent cell: ``nodes[k] = (combine, activation)`` of tree node ``k`` (leaves first), the
    cell inject ``(combine, activation)``, and the two cell indices."""

    nodes: tuple[tuple[str, str], ...]
    inject: tuple[str, str]
    cell_from: int
    inject_into: int
    space_name: ClassVar[str] = "rnn_cell"

    def __post_init__(self) -> None:
        if isinstance(self.nodes, str) or not isinstance(self.nodes, Sequence):
            raise ValueError(f"nodes must be a sequence of (combine, activation) pairs, got {self.nodes!r}")
        n = len(self.nodes)
        leaves = (n + 1) // 2
        if n < 3 or (n + 1) % 2 or leaves & (leaves - 1):
            raise ValueError(
                f"nodes must have 2L - 1 entries for a power of two L >= 2 leaves (3, 7, 15, ...), got {n}"
            )
        # lists in (e.g. from JSON), hashable tuples stored
        object.__setattr__(self, "nodes", tuple(_check_pair(f"nodes[{k}]", p) for k, p in enumerate(self.nodes)))
        object.__setattr__(self, "inject", _check_pair("inject", self.inject))
        for field in ("cell_from", "inject_into"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < n:
                raise ValueError(f"{field} must be a node index in 0..{n - 1}, got {value!r}")
            object.__setattr__(self, field, int(value))  # numpy ints in, plain int stored (hash/JSON)

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def num_leaves(self) -> int:
        return (len(self.nodes) + 1) // 2

    @property
    def root(self) -> int:
        return len(self.nodes) - 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": [list(p) for p in self.nodes],
            "inject": list(self.inject),
            "cell_from": self.cell_from,
            "inject_into": self.inject_into,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RNNCellArchitecture":
        missing = [k for k in ("nodes", "inject", "cell_from", "inject_into") if k not in d]
        if missing:
            raise ValueError(f"an RNN cell architecture dict needs {missing}, got keys {sorted(d)}")
        return cls(
            nodes=tuple(tuple(p) for p in d["nodes"]),
            inject=tuple(d["inject"]),
            cell_from=d["cell_from"],
            inject_into=d["inject_into"],
        )

    def formula(self) -> str:
        """The cell as expressions in ``x`` (= W x_t), ``h`` (= U h_{t-1}) and ``c`` (= c_{t-1}).

        E.g. the paper's example reads ``h_t = sigmoid(relu(tanh(x + h) + c) * relu(x * h)); c_t = x * h``.
        """
        children = tree_children(self.num_leaves)
        pre: list[str] = []
        out: list[str] = []  # operands are parenthesised when they are a bare (identity) binary expression
        for k, ((combine, activation), pair) in enumerate(zip(self.nodes, children)):
            a, b = ("x", "h") if pair is None else (_operand(out[pair[0]]), _operand(out[pair[1]]))
            pre.append(f"{a} {_SYMBOLS[combine]} {b}")
            value = _apply(activation, pre[k])
            if k == self.inject_into:
                value = _apply(self.inject[1], f"{_operand(value)} {_SYMBOLS[self.inject[0]]} c")
            out.append(value)
        return f"h_t = {out[-1]}; c_t = {pre[self.cell_from]}"

    def __str__(self) -> str:
        nodes = " ".join(f"{k}:{c}/{a}" for k, (c, a) in enumerate(self.nodes))
        return (
            f"nodes {nodes} | inject {self.inject[0]}/{self.inject[1]} into {self.inject_into}"
            f" | c_t from {self.cell_from}"
        )


def _apply(activation: str, expr: str) -> str:
    return expr if activation == "identity" else f"{activation}({expr})"


def _operand(expr: str) -> str:
    """``expr`` as an operand of a binary op: a bare ``a + b`` / ``a * b`` gets parentheses."""
    depth = 0
    for ch in expr:
        depth += ch == "("
        depth -= ch == ")"
        if ch == " " and depth == 0:
            return f"({expr})"
    return expr


class RNNCellSpace(SearchSpace):
    """The paper's recurrent-cell space with ``num_leaves`` leaves (see the module docstring).

    ``key`` is the architecture's JSON: cells that compute the same function but differ in their tokens
    (swapped subtrees under ``add``/``elem_mult``, an unused ``c_{t-1}`` ...) are *not* merged.
    """

    name: ClassVar[str] = "rnn_cell"

    def __init__(self, num_leaves: int = 8) -> None:
        self.num_leaves = _check_num_leaves(num_leaves)
        self.num_nodes = 2 * self.num_leaves - 1
        indices = tuple(range(self.num_nodes))
        out: list[Decision] = []
        for n in range(self.num_nodes):
            out.append(Decision(f"node{n}.combine", "combine", COMBINES))
            out.append(Decision(f"node{n}.activation", "activation", ACTIVATIONS))
        out.append(Decision("inject.combine", "combine", COMBINES))
        out.append(Decision("inject.activation", "activation", ACTIVATIONS))
        out.append(Decision("cell_from", "cell_index", indices))
        out.append(Decision("inject_into", "cell_index", indices))
        self._decisions = tuple(out)

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return self._decisions

    @property
    def num_architectures(self) -> int:
        """Product of the choice counts: ``8 ** (N + 1) * N ** 2`` (63,331,869,759,897,600 for 8 leaves)."""
        total = 1
        for d in self._decisions:
            total *= d.num_choices
        return total

    def config(self) -> dict[str, Any]:
        return {"num_leaves": self.num_leaves}

    def decode(self, tokens: Sequence[int]) -> RNNCellArchitecture:
        tokens = self.check_tokens(tokens)
        n = self.num_nodes
        nodes = tuple((COMBINES[tokens[2 * k]], ACTIVATIONS[tokens[2 * k + 1]]) for k in range(n))
        inject = (COMBINES[tokens[2 * n]], ACTIVATIONS[tokens[2 * n + 1]])
        return RNNCellArchitecture(
            nodes=nodes, inject=inject, cell_from=tokens[2 * n + 2], inject_into=tokens[2 * n + 3]
        )

    def encode(self, arch: Architecture) -> tuple[int, ...]:
        if not isinstance(arch, RNNCellArchitecture) or arch.num_leaves != self.num_leaves:
            raise InvalidTokenError(f"{arch!r} is not a {self.num_leaves}-leaf RNN cell architecture")
        tokens: list[int] = []
        for combine, activation in (*arch.nodes, arch.inject):
            tokens += [COMBINES.index(combine), ACTIVATIONS.index(activation)]
        return (*tokens, arch.cell_from, arch.inject_into)

    def architecture_from_dict(self, d: dict[str, Any]) -> RNNCellArchitecture:
        return RNNCellArchitecture.from_dict(d)

    def key(self, arch: Architecture) -> str:
        """The architecture's JSON; equivalent cells (e.g. swapped subtrees) are not merged."""
        if not isinstance(arch, RNNCellArchitecture):
            raise InvalidTokenError(f"{arch!r} is not an RNN cell architecture")
        return arch.to_json()


def paper_example() -> RNNCellArchitecture:
    """The two-leaf example of the paper's section 3.4 / Figure 5 (tokens ``0 1 1 3 1 2 0 3 1 0``):
    ``h_t = sigmoid(relu(tanh(x + h) + c) * relu(x * h))``, ``c_t = x * h``."""
    return RNNCellArchitecture(
        nodes=(("add", "tanh"), ("elem_mult", "relu"), ("elem_mult", "sigmoid")),
        inject=("add", "relu"),
        cell_from=1,
        inject_into=0,
    )
