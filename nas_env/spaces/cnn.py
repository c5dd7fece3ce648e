"""The paper's convolutional search space (Zoph & Le 2017, section 3.3 and Table 1).

Per layer ``i`` (0-based) the tokens are, in order:

1. ``i`` binary anchor decisions, one per earlier layer ``j < i``: does layer ``j`` feed layer ``i``?
   (the paper's anchor point sits at the start of each layer);
2. filter height, filter width (choices ``filter_sizes``, default {1, 3, 5, 7});
3. only when ``predict_strides``: stride height, stride width (choices ``strides``, default {1, 2, 3});
4. number of filters (choices ``num_filters``, default {24, 36, 48, 64}).

A space with ``L`` layers therefore has ``L * k + L * (L - 1) / 2`` tokens, ``k`` = 3 or 5.

``pool_at`` (not searched, no tokens) puts 2x2 max-pooling layers, stride 2, at fixed depths: a pooling
depth ``d`` halves the resolution of everything that enters layer ``d`` or any later layer (see
:mod:`nas_env.children.cnn`). Depths at or beyond ``num_layers`` are ignored, so the depth curriculum
can grow a space up to its pooling layers.

:data:`PRESETS` holds the paper's three variants of Table 1 by name (``v1``, ``v2``, ``v3``), with the depth
curriculum and the child recipe of each; ``docs/presets.md`` explains every choice.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Sequence

from nas_env.spaces.base import Architecture, Decision, InvalidTokenError, SearchSpace


@dataclasses.dataclass(frozen=True)
class ConvLayer:
    """One conv -> BN -> ReLU layer; ``inputs`` are the earlier layers feeding it (empty: the image)."""

    filter_height: int
    filter_width: int
    num_filters: int
    stride_height: int = 1
    stride_width: int = 1
    inputs: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["inputs"] = list(self.inputs)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ConvLayer":
        d = dict(d)
        d["inputs"] = tuple(int(i) for i in d.get("inputs", ()))
        return cls(**d)


@dataclasses.dataclass(frozen=True)
class CNNArchitecture(Architecture):
    """A stack of :class:`ConvLayer` s with anchor-point skip connections."""

    layers: tuple[ConvLayer, ...]
    #: depths whose layer (and every later one) sees inputs max-pooled once more (2x2, stride 2)
    pool_at: tuple[int, ...] = ()
    space_name: ClassVar[str] = "cnn"

    def __post_init__(self) -> None:
        for i, layer in enumerate(self.layers):
            if any(not 0 <= j < i for j in layer.inputs) or tuple(sorted(set(layer.inputs))) != layer.inputs:
                raise ValueError(f"layer {i} inputs {layer.inputs} must be sorted, distinct and < {i}")
        pool_at = tuple(int(d) for d in self.pool_at)
        if tuple(sorted(set(pool_at))) != pool_at or any(not 0 <= d < len(self.layers) for d in pool_at):
            raise ValueError(f"pool_at {pool_at} must be sorted, distinct depths in 0..{len(self.layers) - 1}")
        object.__setattr__(self, "pool_at", pool_at)

    def stage(self, i: int) -> int:
        """How many pooling layers lie below layer ``i`` (its inputs are pooled to this stage)."""
        return sum(1 for d in self.pool_at if d <= i)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"layers": [layer.to_dict() for layer in self.layers]}
        if self.pool_at:  # only when present: keys of architectures without pooling stay as they were
            d["pool_at"] = list(self.pool_at)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CNNArchitecture":
        return cls(layers=tuple(ConvLayer.from_dict(x) for x in d["layers"]), pool_at=tuple(d.get("pool_at", ())))

    def __str__(self) -> str:
        parts = []
        for i, layer in enumerate(self.layers):
            s = "maxpool | " if i in self.pool_at else ""
            s += f"{layer.filter_height}x{layer.filter_width}/{layer.num_filters}"
            if (layer.stride_height, layer.stride_width) != (1, 1):
                s += f"s{layer.stride_height}x{layer.stride_width}"
            if layer.inputs:
                s += "<" + ",".join(str(j) for j in layer.inputs)
            parts.append(s)
        return " | ".join(parts)


class CNNSpace(SearchSpace):
    """The paper's CNN space with ``num_layers`` layers; choice lists and the stride variant are parameters."""

    name: ClassVar[str] = "cnn"

    def __init__(
        self,
        num_layers: int = 6,
        filter_sizes: Sequence[int] = (1, 3, 5, 7),
        num_filters: Sequence[int] = (24, 36, 48, 64),
        strides: Sequence[int] = (1, 2, 3),
        predict_strides: bool = False,
        pool_at: Sequence[int] = (),
    ) -> None:
        if int(num_layers) < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        for label, values in (("filter_sizes", filter_sizes), ("num_filters", num_filters), ("strides", strides)):
            if len(values) < 1 or any(int(v) < 1 for v in values):
                raise ValueError(f"{label} must be a non-empty list of positive ints, got {list(values)}")
        self.num_layers = int(num_layers)
        self.filter_sizes = tuple(int(v) for v in filter_sizes)
        self.num_filters = tuple(int(v) for v in num_filters)
        self.strides = tuple(int(v) for v in strides)
        self.predict_strides = bool(predict_strides)
        self.pool_at = tuple(sorted({int(d) for d in pool_at}))
        if any(d < 0 for d in self.pool_at):
            raise ValueError(f"pool_at depths must be >= 0, got {list(pool_at)}")
        self._decisions = self._build_decisions()

    def _layer_fields(self) -> list[tuple[str, tuple[int, ...]]]:
        fields = [("filter_height", self.filter_sizes), ("filter_width", self.filter_sizes)]
        if self.predict_strides:
            fields += [("stride_height", self.strides), ("stride_width", self.strides)]
        fields.append(("num_filters", self.num_filters))
        return fields

    def _build_decisions(self) -> tuple[Decision, ...]:
        out: list[Decision] = []
        for i in range(self.num_layers):
            for j in range(i):
                out.append(Decision(f"layer{i}.skip_from_{j}", "anchor", (0, 1), layer=i, source=j))
            for field, choices in self._layer_fields():
                out.append(Decision(f"layer{i}.{field}", field, choices, layer=i))
        return tuple(out)

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return self._decisions

    def config(self) -> dict[str, Any]:
        return {
            "num_layers": self.num_layers,
            "filter_sizes": list(self.filter_sizes),
            "num_filters": list(self.num_filters),
            "strides": list(self.strides),
            "predict_strides": self.predict_strides,
            # only when set: the configs (and fingerprints, run directories) of spaces without pooling are unchanged
            **({"pool_at": list(self.pool_at)} if self.pool_at else {}),
        }

    @property
    def active_pool_at(self) -> tuple[int, ...]:
        """The pooling depths inside this space's depth (those its architectures carry)."""
        return tuple(d for d in self.pool_at if d < self.num_layers)

    def with_layers(self, num_layers: int) -> "CNNSpace":
        """The same space at another depth (used by the depth curriculum)."""
        return CNNSpace(**{**self.config(), "num_layers": num_layers})

    def decode(self, tokens: Sequence[int]) -> CNNArchitecture:
        tokens = self.check_tokens(tokens)
        layers, pos = [], 0
        for i in range(self.num_layers):
            inputs = tuple(j for j in range(i) if tokens[pos + j] == 1)
            pos += i
            values: dict[str, int] = {}
            for field, choices in self._layer_fields():
                values[field] = choices[tokens[pos]]
                pos += 1
            layers.append(ConvLayer(inputs=inputs, **values))
        return CNNArchitecture(tuple(layers), pool_at=self.active_pool_at)

    def encode(self, arch: Architecture) -> tuple[int, ...]:
        if not isinstance(arch, CNNArchitecture) or arch.num_layers != self.num_layers:
            raise InvalidTokenError(f"{arch!r} is not a {self.num_layers}-layer CNN architecture")
        if arch.pool_at != self.active_pool_at:
            raise InvalidTokenError(f"architecture pools at {list(arch.pool_at)}, this space at {list(self.active_pool_at)}")
        tokens: list[int] = []
        for i, layer in enumerate(arch.layers):
            tokens += [1 if j in layer.inputs else 0 for j in range(i)]
            for field, choices in self._layer_fields():
                value = getattr(layer, field)
                if value not in choices:
                    raise InvalidTokenError(f"layer {i} {field}={value} is not one of {list(choices)}")
                tokens.append(choices.index(value))
            if not self.predict_strides and (layer.stride_height, layer.stride_width) != (1, 1):
                raise InvalidTokenError(f"layer {i} has strides but this space does not predict strides")
        return tuple(tokens)

    def architecture_from_dict(self, d: dict[str, Any]) -> CNNArchitecture:
        return CNNArchitecture.from_dict(d)


# ---------------------------------------------------------------------------------------------- presets
@dataclasses.dataclass(frozen=True)
class CNNPreset:
    """One of the paper's CNN search spaces by name: the space, the depth curriculum that ends at its depth,
    and the recipe its children are trained with. ``docs/presets.md`` gives the reasons for each value."""

    name: str
    paper_row: str  # the row of Zoph & Le's Table 1 it corresponds to
    num_layers: int
    predict_strides: bool = False
    pool_at: tuple[int, ...] = ()
    #: :class:`agents.curriculum.DepthCurriculum` fields: start, step, every, and the end point (max_layers)
    curriculum: dict[str, int] = dataclasses.field(default_factory=dict)
    #: a child recipe: a name of ``nas_env.evaluators.RECIPE_PRESETS`` or a dict of TrainingRecipe fields
    recipe: Any = "paper"

    def space_config(self) -> dict[str, Any]:
        """:class:`CNNSpace` arguments (the paper's choice lists are CNNSpace's defaults)."""
        return {"num_layers": self.num_layers, "predict_strides": self.predict_strides, "pool_at": list(self.pool_at)}

    def space(self) -> CNNSpace:
        return CNNSpace(**self.space_config())

    @property
    def num_tokens(self) -> int:
        """``L * k + L * (L - 1) / 2`` with ``k`` = 5 when strides are predicted, else 3."""
        k = 5 if self.predict_strides else 3
        return self.num_layers * k + self.num_layers * (self.num_layers - 1) // 2


#: the paper's curriculum (6 layers, +2 every 1,600 sampled architectures) ending at the preset's depth
_PAPER_CURRICULUM = {"start_layers": 6, "step_layers": 2, "every": 1600}

#: Table 1's variants by name; ``gym.make("NAS-CIFAR10-v0", preset="v1")``, ``nas search --preset v1``
PRESETS: dict[str, CNNPreset] = {
    "v1": CNNPreset(
        name="v1", paper_row="Neural Architecture Search v1 no stride or pooling: 15 layers, 4.2M params, 5.50% error",
        num_layers=15, curriculum={**_PAPER_CURRICULUM, "max_layers": 15},
    ),
    "v2": CNNPreset(
        name="v2", paper_row="Neural Architecture Search v2 predicting strides: 20 layers, 2.5M params, 6.01% error",
        num_layers=20, predict_strides=True, curriculum={**_PAPER_CURRICULUM, "max_layers": 20},
    ),
    "v3": CNNPreset(
        name="v3", paper_row="Neural Architecture Search v3 max pooling: 39 layers, 7.1M params, 4.47% error",
        num_layers=39, pool_at=(13, 26),
        # +2 every 1,600 would reach only 20 layers in the paper's 12,800 architectures: +5 reaches 39
        curriculum={"start_layers": 6, "step_layers": 5, "every": 1600, "max_layers": 39},
    ),
}


def cnn_preset(name: str) -> CNNPreset:
    """The preset called ``name``; a clear error naming the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown CNN preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]
