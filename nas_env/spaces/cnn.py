"""The paper's convolutional search space (Zoph & Le 2017, section 3.3 and Table 1).

Per layer ``i`` (0-based) the tokens are, in order:

1. ``i`` binary anchor decisions, one per earlier layer ``j < i``: does layer ``j`` feed layer ``i``?
   (the paper's anchor point sits at the start of each layer);
2. filter height, filter width (choices ``filter_sizes``, default {1, 3, 5, 7});
3. only when ``predict_strides``: stride height, stride width (choices ``strides``, default {1, 2, 3});
4. number of filters (choices ``num_filters``, default {24, 36, 48, 64}).

A space with ``L`` layers therefore has ``L * k + L * (L - 1) / 2`` tokens, ``k`` = 3 or 5.
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
    space_name: ClassVar[str] = "cnn"

    def __post_init__(self) -> None:
        for i, layer in enumerate(self.layers):
            if any(not 0 <= j < i for j in layer.inputs) or tuple(sorted(set(layer.inputs))) != layer.inputs:
                raise ValueError(f"layer {i} inputs {layer.inputs} must be sorted, distinct and < {i}")

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [layer.to_dict() for layer in self.layers]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CNNArchitecture":
        return cls(layers=tuple(ConvLayer.from_dict(x) for x in d["layers"]))

    def __str__(self) -> str:
        parts = []
        for i, layer in enumerate(self.layers):
            s = f"{layer.filter_height}x{layer.filter_width}/{layer.num_filters}"
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
        }

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
        return CNNArchitecture(tuple(layers))

    def encode(self, arch: Architecture) -> tuple[int, ...]:
        if not isinstance(arch, CNNArchitecture) or arch.num_layers != self.num_layers:
            raise InvalidTokenError(f"{arch!r} is not a {self.num_layers}-layer CNN architecture")
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
