"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020): 6 edges, each one of 5 operations.

A cell is a DAG on 4 nodes (node 0 is the input, node 3 the output, each node sums its incoming
edges). The 6 tokens pick the op of the edges 0->1, 0->2, 1->2, 0->3, 1->3, 2->3, in the order of
the official string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``. There are 5**6 = 15,625 cells, each a
separate row of the tabular benchmark (isomorphic cells are *not* merged: they were trained
separately and their accuracies differ).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Sequence

from nas_env.spaces.base import Architecture, Decision, InvalidTokenError, SearchSpace

#: the operations, in the official NB201 order (the token is the index into this tuple)
OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: the edges ``(source, target)``, in token order (= the order of the official string)
EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NUM_NODES = 4
NUM_ARCHITECTURES = len(OPS) ** len(EDGES)


@dataclasses.dataclass(frozen=True)
class NB201Architecture(Architecture):
    """One NB201 cell: ``ops[k]`` is the operation on edge ``EDGES[k]``."""

    ops: tuple[str, ...]
    space_name: ClassVar[str] = "nb201"

    def __post_init__(self) -> None:
        if isinstance(self.ops, str) or not isinstance(self.ops, Sequence):
            raise ValueError(f"ops must be a sequence of {len(EDGES)} op names, got {self.ops!r}")
        object.__setattr__(self, "ops", tuple(self.ops))  # lists in, hashable tuple stored
        if len(self.ops) != len(EDGES):
            raise ValueError(f"an NB201 cell has {len(EDGES)} edges {_edge_names()}, got {len(self.ops)} ops")
        for (source, target), op in zip(EDGES, self.ops):
            if op not in OPS:
                raise ValueError(f"edge {source}->{target}: unknown op {op!r}; choose one of {list(OPS)}")

    @property
    def arch_str(self) -> str:
        """The official NB201 string, e.g. ``|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|``."""
        groups = []
        for target in range(1, NUM_NODES):
            edges = [f"{op}~{source}" for (source, t), op in zip(EDGES, self.ops) if t == target]
            groups.append("|" + "|".join(edges) + "|")
        return "+".join(groups)

    @classmethod
    def from_arch_str(cls, text: str) -> "NB201Architecture":
        """Parse the official string; raises ``ValueError`` saying which part is malformed."""
        if not isinstance(text, str):
            raise ValueError(f"an NB201 arch string must be a str, got {type(text).__name__}")
        groups = text.strip().split("+")
        if len(groups) != NUM_NODES - 1:
            raise ValueError(f"{text!r}: expected {NUM_NODES - 1} '+'-separated node groups, got {len(groups)}")
        ops: list[str] = []
        for target, group in enumerate(groups, start=1):
            ops += _parse_group(text, target, group)
        return cls(tuple(ops))

    def to_dict(self) -> dict[str, Any]:
        return {"ops": list(self.ops)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NB201Architecture":
        if "ops" in d:
            return cls(tuple(d["ops"]))
        if "arch_str" in d:
            return cls.from_arch_str(d["arch_str"])
        raise ValueError(f"an NB201 architecture dict needs 'ops' (or 'arch_str'), got keys {sorted(d)}")

    def __str__(self) -> str:
        return self.arch_str


def _edge_names() -> list[str]:
    return [f"{s}->{t}" for s, t in EDGES]


def _parse_group(text: str, target: int, group: str) -> list[str]:
    """The ops of node ``target``'s group ``|op~0|op~1|``, checking that sources run 0..target-1."""
    if not (group.startswith("|") and group.endswith("|") and len(group) > 1):
        raise ValueError(f"{text!r}: node {target} group {group!r} must look like '|op~0|...|'")
    items = group[1:-1].split("|")
    if len(items) != target:
        raise ValueError(f"{text!r}: node {target} must have {target} incoming edges, got {len(items)} in {group!r}")
    ops = []
    for expected_source, item in enumerate(items):
        op, sep, source = item.rpartition("~")
        if not sep or source != str(expected_source):
            raise ValueError(f"{text!r}: edge {item!r} of node {target} should read 'op~{expected_source}'")
        if op not in OPS:
            raise ValueError(
                f"{text!r}: unknown op {op!r} on edge {expected_source}->{target}; choose one of {list(OPS)}"
            )
        ops.append(op)
    return ops


class NB201Space(SearchSpace):
    """6 decisions of kind ``"op"`` (one shared softmax head in a controller), 5 choices each.

    ``key`` is the arch string, so isomorphic cells stay distinct, exactly as in the table.
    """

    name: ClassVar[str] = "nb201"

    def __init__(self) -> None:
        # layer/source are left None: in the protocol they mark anchor (skip) decisions, and these
        # are op choices; the edge is in the name and in EDGES.
        self._decisions = tuple(Decision(f"edge{s}->{t}", "op", OPS) for s, t in EDGES)

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return self._decisions

    @property
    def num_architectures(self) -> int:
        return NUM_ARCHITECTURES

    def config(self) -> dict[str, Any]:
        return {}

    def decode(self, tokens: Sequence[int]) -> NB201Architecture:
        tokens = self.check_tokens(tokens)
        return NB201Architecture(tuple(OPS[t] for t in tokens))

    def encode(self, arch: Architecture) -> tuple[int, ...]:
        return tuple(OPS.index(op) for op in self._check_arch(arch).ops)

    def architecture_from_dict(self, d: dict[str, Any]) -> NB201Architecture:
        return NB201Architecture.from_dict(d)

    def key(self, arch: Architecture) -> str:
        """The official arch string (isomorphic cells have separate table rows, so they are not merged)."""
        return self._check_arch(arch).arch_str

    @staticmethod
    def _check_arch(arch: Architecture) -> NB201Architecture:
        if not isinstance(arch, NB201Architecture):
            raise InvalidTokenError(f"{arch!r} is not an NB201 architecture")
        return arch
