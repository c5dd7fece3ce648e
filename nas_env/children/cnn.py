"""Build a PyTorch module from a :class:`~nas_env.spaces.cnn.CNNArchitecture` (Zoph & Le 2017, section 3.3).

The paper's rules that make every token string a valid network ("compilation failures"):

1. a layer whose ``inputs`` is empty takes the image;
2. a layer with several inputs concatenates them along the channel axis; inputs of different spatial
   size are first zero-padded (bottom and right) to the largest height and the largest width among them;
3. at the top, every layer output that feeds no later layer is zero-padded to a common size, the
   outputs are concatenated along channels, globally average-pooled and sent to a linear classifier.

Pooling happens after the padding, as the paper words it, so the padded zeros count in the average of
a smaller output. Each layer is conv (``"same"``-style padding ``k // 2`` per axis, no bias) -> BN -> ReLU.

Max-pooling layers at fixed depths (``arch.pool_at``, the paper's v3): a pooling depth ``d`` is a 2x2
max-pool, stride 2 (``ceil_mode``: odd sizes round up, so a 1x1 map survives), on every path that enters
layer ``d`` or a later one. An input from layer ``j`` to layer ``i`` (or the image to layer ``i``, or a top
output to the classifier) is pooled once per pooling depth in ``(j, i]`` (``[0, i]`` for the image). So every
layer above a pooling layer, skips included, works at the lower resolution: the zero-padding of rule 2 never
blows a pooled stage back up to the full image, which is what keeps a 39-layer child's memory bounded.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from nas_env.spaces.cnn import CNNArchitecture

__all__ = ["ChildCNN", "LayerShape", "architecture_params", "build_cnn", "cnn_cost", "count_flops", "count_params",
           "layer_shapes", "output_layers"]


@dataclasses.dataclass(frozen=True)
class LayerShape:
    """Input and output shape of one conv layer for a given image size (per-image, no batch axis)."""

    in_channels: int
    in_height: int
    in_width: int
    out_channels: int
    out_height: int
    out_width: int


def output_layers(arch: CNNArchitecture) -> tuple[int, ...]:
    """Indices of the layers whose output feeds no later layer: they go to the classifier (rule 3)."""
    used = {j for layer in arch.layers for j in layer.inputs}
    return tuple(i for i in range(arch.num_layers) if i not in used)


def _conv_out(size: int, kernel: int, stride: int) -> int:
    """Output length of a conv axis with padding ``kernel // 2``."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def _pooled(size: int, times: int) -> int:
    """Length of an axis after ``times`` 2x2/2 max-pools with ``ceil_mode``."""
    for _ in range(times):
        size = (size + 1) // 2
    return size


def layer_shapes(
    arch: CNNArchitecture, resolution: int | tuple[int, int] = 32, in_channels: int = 3
) -> tuple[LayerShape, ...]:
    """Every layer's input (after pooling, padding + concatenation) and output shape, from the rules above."""
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    shapes: list[LayerShape] = []
    for i, layer in enumerate(arch.layers):
        stage = arch.stage(i)
        if layer.inputs:
            sources = [(shapes[j], stage - arch.stage(j)) for j in layer.inputs]
            c_in = sum(s.out_channels for s, _ in sources)
            h_in = max(_pooled(s.out_height, k) for s, k in sources)
            w_in = max(_pooled(s.out_width, k) for s, k in sources)
        else:
            c_in, h_in, w_in = in_channels, _pooled(height, stage), _pooled(width, stage)
        h_out = _conv_out(h_in, layer.filter_height, layer.stride_height)
        w_out = _conv_out(w_in, layer.filter_width, layer.stride_width)
        shapes.append(LayerShape(c_in, h_in, w_in, layer.num_filters, h_out, w_out))
    return tuple(shapes)


def _pad_cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Zero-pad (bottom/right) NCHW tensors to the largest height and width among them, then concat channels."""
    if len(tensors) == 1:
        return tensors[0]
    height = max(t.shape[2] for t in tensors)
    width = max(t.shape[3] for t in tensors)
    padded = [
        t if (t.shape[2], t.shape[3]) == (height, width) else F.pad(t, (0, width - t.shape[3], 0, height - t.shape[2]))
        for t in tensors
    ]
    return torch.cat(padded, dim=1)


class ChildCNN(nn.Module):
    """The child network of one architecture: a DAG of conv-BN-ReLU layers, global pooling, linear."""

    def __init__(self, arch: CNNArchitecture, num_classes: int = 10, in_channels: int = 3, bn_eps: float = 1e-5) -> None:
        super().__init__()
        if arch.num_layers < 1:
            raise ValueError("a child CNN needs at least one layer")
        self.arch = arch
        self.inputs: tuple[tuple[int, ...], ...] = tuple(layer.inputs for layer in arch.layers)
        self.outputs: tuple[int, ...] = output_layers(arch)
        self.stages: tuple[int, ...] = tuple(arch.stage(i) for i in range(arch.num_layers))
        self.top_stage = len(arch.pool_at)
        channels: list[int] = []
        layers = []
        for layer in arch.layers:
            c_in = sum(channels[j] for j in layer.inputs) if layer.inputs else in_channels
            kernel = (layer.filter_height, layer.filter_width)
            layers.append(
                nn.Sequential(
                    nn.Conv2d(
                        c_in,
                        layer.num_filters,
                        kernel,
                        stride=(layer.stride_height, layer.stride_width),
                        padding=(layer.filter_height // 2, layer.filter_width // 2),
                        bias=False,
                    ),
                    nn.BatchNorm2d(layer.num_filters, eps=bn_eps),
                    nn.ReLU(inplace=True),
                )
            )
            channels.append(layer.num_filters)
        self.layers = nn.ModuleList(layers)
        self.classifier = nn.Linear(sum(channels[i] for i in self.outputs), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats: list[torch.Tensor] = []
        pooled: dict[tuple[int, int], torch.Tensor] = {}  # (source, stage) -> the source pooled to that stage

        def at(source: int, stage: int) -> torch.Tensor:
            """Output of layer ``source`` (-1: the image) pooled down to ``stage`` (each once per forward)."""
            own = self.stages[source] if source >= 0 else 0
            if stage == own:
                return feats[source] if source >= 0 else x
            if (source, stage) not in pooled:
                pooled[(source, stage)] = F.max_pool2d(at(source, stage - 1), 2, 2, ceil_mode=True)
            return pooled[(source, stage)]

        for layer, inputs, stage in zip(self.layers, self.inputs, self.stages):
            feats.append(layer(_pad_cat([at(j, stage) for j in inputs]) if inputs else at(-1, stage)))
        top = _pad_cat([at(i, self.top_stage) for i in self.outputs])
        return self.classifier(top.mean(dim=(2, 3)))


def build_cnn(arch: CNNArchitecture, num_classes: int = 10, in_channels: int = 3, bn_eps: float = 1e-5) -> ChildCNN:
    """The child network for ``arch`` (freshly initialised with PyTorch's defaults and global RNG);
    ``bn_eps`` is one of the hyperparameters the paper tunes when it retrains the best architectures."""
    return ChildCNN(arch, num_classes=num_classes, in_channels=in_channels, bn_eps=bn_eps)


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def architecture_params(arch: CNNArchitecture, num_classes: int = 10, in_channels: int = 3) -> int:
    """Trainable parameters of ``build_cnn(arch)`` in closed form (no module built): convs (no bias), BN scale
    and shift, the linear classifier. Equal to ``count_params(build_cnn(arch))``; pooling has no parameters."""
    shapes = layer_shapes(arch, 32, in_channels)  # channel counts do not depend on the resolution
    convs = sum(s.in_channels * layer.filter_height * layer.filter_width * s.out_channels + 2 * s.out_channels
                for s, layer in zip(shapes, arch.layers))  # fmt: skip
    features = sum(shapes[i].out_channels for i in output_layers(arch))
    return int(convs + features * num_classes + num_classes)


def cnn_cost(arch: CNNArchitecture, resolution: int | tuple[int, int] = 32, num_classes: int = 10) -> dict[str, int]:
    """``{"params": ..., "flops": ...}`` of a child without building or training it (closed forms)."""
    return {"params": architecture_params(arch, num_classes), "flops": count_flops(arch, resolution, num_classes)}


def count_flops(
    arch: CNNArchitecture, resolution: int | tuple[int, int] = 32, num_classes: int = 10, in_channels: int = 3
) -> int:
    """Multiply-accumulates of one image's forward pass through the convs and the classifier (closed form).

    Convs count over their (zero-padded) inputs; BN, ReLU, padding and pooling are not counted.
    """
    shapes = layer_shapes(arch, resolution, in_channels)
    macs = sum(
        s.out_height * s.out_width * s.out_channels * s.in_channels * layer.filter_height * layer.filter_width
        for s, layer in zip(shapes, arch.layers)
    )
    features = sum(shapes[i].out_channels for i in output_layers(arch))
    return int(macs + features * num_classes)
