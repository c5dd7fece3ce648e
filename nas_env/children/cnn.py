"""Build a PyTorch module from a :class:`~nas_env.spaces.cnn.CNNArchitecture` (Zoph & Le 2017, section 3.3).

The paper's rules that make every token string a valid network ("compilation failures"):

1. a layer whose ``inputs`` is empty takes the image;
2. a layer with several inputs concatenates them along the channel axis; inputs of different spatial
   size are first zero-padded (bottom and right) to the largest height and the largest width among them;
3. at the top, every layer output that feeds no later layer is zero-padded to a common size, the
   outputs are concatenated along channels, globally average-pooled and sent to a linear classifier.

Pooling happens after the padding, as the paper words it, so the padded zeros count in the average of
a smaller output. Each layer is conv (``"same"``-style padding ``k // 2`` per axis, no bias) -> BN -> ReLU.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from nas_env.spaces.cnn import CNNArchitecture

__all__ = ["ChildCNN", "LayerShape", "build_cnn", "count_flops", "count_params", "layer_shapes", "output_layers"]


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


def layer_shapes(
    arch: CNNArchitecture, resolution: int | tuple[int, int] = 32, in_channels: int = 3
) -> tuple[LayerShape, ...]:
    """Every layer's input (after padding + concatenation) and output shape, from the rules above."""
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    shapes: list[LayerShape] = []
    for layer in arch.layers:
        if layer.inputs:
            sources = [shapes[j] for j in layer.inputs]
            c_in = sum(s.out_channels for s in sources)
            h_in = max(s.out_height for s in sources)
            w_in = max(s.out_width for s in sources)
        else:
            c_in, h_in, w_in = in_channels, height, width
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
        for layer, inputs in zip(self.layers, self.inputs):
            feats.append(layer(_pad_cat([feats[j] for j in inputs]) if inputs else x))
        top = _pad_cat([feats[i] for i in self.outputs])
        return self.classifier(top.mean(dim=(2, 3)))


def build_cnn(arch: CNNArchitecture, num_classes: int = 10, in_channels: int = 3, bn_eps: float = 1e-5) -> ChildCNN:
    """The child network for ``arch`` (freshly initialised with PyTorch's defaults and global RNG);
    ``bn_eps`` is one of the hyperparameters the paper tunes when it retrains the best architectures."""
    return ChildCNN(arch, num_classes=num_classes, in_channels=in_channels, bn_eps=bn_eps)


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


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
