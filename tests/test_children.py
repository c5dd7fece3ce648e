"""Every token string of the CNN space builds a working network, following the paper's compilation rules."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nas_env.children import ChildCNN, build_cnn, count_flops, count_params, layer_shapes, output_layers
from nas_env.spaces import CNNArchitecture, CNNSpace, ConvLayer

BATCH = 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _conv_inputs(model: ChildCNN) -> list[int]:
    return [seq[0].in_channels for seq in model.layers]


def check_rules(arch: CNNArchitecture, model: ChildCNN, in_channels: int = 3) -> None:
    """The wiring rules, checked on the built module (not by re-deriving the builder's code)."""
    for i, (layer, seq) in enumerate(zip(arch.layers, model.layers)):
        conv, bn = seq[0], seq[1]
        expected = sum(arch.layers[j].num_filters for j in layer.inputs) if layer.inputs else in_channels
        assert conv.in_channels == expected, f"layer {i}"
        assert conv.out_channels == bn.num_features == layer.num_filters
        assert conv.kernel_size == (layer.filter_height, layer.filter_width)
        assert conv.stride == (layer.stride_height, layer.stride_width)
        assert conv.padding == (layer.filter_height // 2, layer.filter_width // 2)
        assert conv.bias is None
        assert isinstance(seq[2], nn.ReLU)
    feeding = {j for layer in arch.layers for j in layer.inputs}
    leaves = [i for i in range(arch.num_layers) if i not in feeding]
    assert list(output_layers(arch)) == leaves
    assert arch.num_layers - 1 in leaves  # the last layer always reaches the classifier
    assert model.classifier.in_features == sum(arch.layers[i].num_filters for i in leaves)


def hook_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates per image counted from the real tensors seen by forward hooks."""
    total = [0]

    def conv_hook(mod: nn.Conv2d, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        kh, kw = mod.kernel_size
        total[0] += out[0].numel() * (mod.in_channels // mod.groups) * kh * kw

    def linear_hook(mod: nn.Linear, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        total[0] += mod.in_features * mod.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    with torch.no_grad():
        model.eval()(x[:1])
    for h in handles:
        h.remove()
    return total[0]


def forward_ok(arch: CNNArchitecture, size: int = 8) -> ChildCNN:
    model = build_cnn(arch)
    out = model(torch.randn(BATCH, 3, size, size))
    assert out.shape == (BATCH, 10)
    assert torch.isfinite(out).all()
    check_rules(arch, model)
    return model


@pytest.mark.parametrize("predict_strides", [False, True])
@pytest.mark.parametrize("depth", range(2, 16))
def test_random_architectures_build_and_run(depth: int, predict_strides: bool) -> None:
    space = CNNSpace(num_layers=depth, predict_strides=predict_strides)
    for seed in range(8):
        arch = space.sample(seed)
        model = forward_ok(arch, size=8)
        x = torch.randn(1, 3, 8, 8)
        assert count_flops(arch, resolution=8) == hook_macs(model, x), str(arch)


def test_all_skip_patterns_of_four_layers() -> None:
    """Exhaustive over the 2**6 anchor patterns of 4 layers, with mixed strides so sizes differ."""
    strides = [(1, 1), (3, 3), (1, 2), (2, 1)]
    sizes = [3, 5, 1, 7]
    wirings = set()
    for bits in itertools.product((0, 1), repeat=6):
        it = iter(bits)
        layers = []
        for i in range(4):
            inputs = tuple(j for j in range(i) if next(it))
            layers.append(ConvLayer(sizes[i], sizes[(i + 1) % 4], 24 + 12 * i, *strides[i], inputs=inputs))
        arch = CNNArchitecture(tuple(layers))
        model = forward_ok(arch, size=8)
        wirings.add((tuple(_conv_inputs(model)), model.classifier.in_features))
    # filters 24/36/48/60 give every subset of inputs its own channel sum: 64 patterns, 64 different networks
    assert len(wirings) == 64


def test_stride3_feeding_stride1_is_zero_padded_bottom_right() -> None:
    arch = CNNArchitecture(
        (
            ConvLayer(3, 3, 24),  # 16x16
            ConvLayer(3, 3, 36, 3, 3),  # 6x6
            ConvLayer(1, 1, 48, inputs=(0, 1)),  # both, 6x6 padded to 16x16
        )
    )
    model = forward_ok(arch, size=16)
    shapes = layer_shapes(arch, 16)
    assert (shapes[1].out_height, shapes[1].out_width) == (6, 6)
    assert (shapes[2].in_channels, shapes[2].in_height, shapes[2].in_width) == (60, 16, 16)

    seen: dict[str, torch.Tensor] = {}
    model.layers[1].register_forward_hook(lambda m, i, o: seen.__setitem__("l1", o.detach().clone()))
    model.layers[2][0].register_forward_hook(lambda m, i, o: seen.__setitem__("in2", i[0].detach().clone()))
    model.eval()(torch.randn(BATCH, 3, 16, 16))
    in2, l1 = seen["in2"], seen["l1"]
    assert in2.shape == (BATCH, 60, 16, 16)
    from_l1 = in2[:, 24:]
    assert torch.equal(from_l1[:, :, :6, :6], l1)  # top-left holds the small output
    assert not from_l1[:, :, 6:, :].any() and not from_l1[:, :, :, 6:].any()  # bottom/right are zeros


def test_asymmetric_strides_pad_each_axis_to_its_max() -> None:
    arch = CNNArchitecture(
        (
            ConvLayer(3, 3, 24, 3, 1),  # 6x16
            ConvLayer(3, 3, 24, 1, 3),  # 16x6
            ConvLayer(3, 3, 24, inputs=(0, 1)),  # 16x16
        )
    )
    forward_ok(arch, size=16)
    assert (layer_shapes(arch, 16)[2].in_height, layer_shapes(arch, 16)[2].in_width) == (16, 16)


def test_layer_without_inputs_in_the_middle_takes_the_image() -> None:
    arch = CNNArchitecture(
        (
            ConvLayer(3, 3, 24),
            ConvLayer(3, 3, 36, inputs=(0,)),
            ConvLayer(5, 5, 48),  # no inputs: the image
            ConvLayer(3, 3, 64, inputs=(2,)),
        )
    )
    model = forward_ok(arch, size=8)
    assert _conv_inputs(model) == [3, 24, 3, 48]
    assert output_layers(arch) == (1, 3)
    assert model.classifier.in_features == 36 + 64


def test_every_layer_connected() -> None:
    filters = (24, 36, 48, 64, 24, 36)
    arch = CNNArchitecture(tuple(ConvLayer(3, 3, f, inputs=tuple(range(i))) for i, f in enumerate(filters)))
    model = forward_ok(arch, size=8)
    assert _conv_inputs(model) == [3] + [sum(filters[:i]) for i in range(1, 6)]
    assert output_layers(arch) == (5,)
    assert model.classifier.in_features == 36


def test_top_pads_then_pools_unconnected_outputs() -> None:
    """The classifier sees the mean over the padded concatenation: zeros of a smaller output count."""
    arch = CNNArchitecture((ConvLayer(3, 3, 24), ConvLayer(3, 3, 36, 2, 2)))  # two leaves: 8x8 and 4x4
    model = build_cnn(arch).eval()
    seen: dict[str, torch.Tensor] = {}
    model.layers[0].register_forward_hook(lambda m, i, o: seen.__setitem__("a", o.detach().clone()))
    model.layers[1].register_forward_hook(lambda m, i, o: seen.__setitem__("b", o.detach().clone()))
    model.classifier.register_forward_hook(lambda m, i, o: seen.__setitem__("feat", i[0].detach().clone()))
    model(torch.randn(BATCH, 3, 8, 8))
    a, b = seen["a"], seen["b"]
    expected = torch.cat([a.mean((2, 3)), F.pad(b, (0, 4, 0, 4)).mean((2, 3))], dim=1)
    torch.testing.assert_close(seen["feat"], expected)
    torch.testing.assert_close(seen["feat"][:, 24:], b.mean((2, 3)) / 4)


def test_channels_last_gives_the_same_output() -> None:
    arch = CNNSpace(num_layers=8, predict_strides=True).sample(7)
    model = build_cnn(arch).eval()
    x = torch.randn(BATCH, 3, 16, 16)
    ref = model(x)
    model_cl = model.to(memory_format=torch.channels_last)
    out = model_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_flops_match_hooks_at_several_resolutions() -> None:
    space = CNNSpace(num_layers=6, predict_strides=True)
    for seed, res in itertools.product(range(3), (8, 11, 32)):
        arch = space.sample(100 + seed)
        model = build_cnn(arch)
        assert count_flops(arch, resolution=res) == hook_macs(model, torch.randn(1, 3, res, res))


def test_flops_closed_form_by_hand() -> None:
    arch = CNNArchitecture((ConvLayer(3, 3, 24), ConvLayer(1, 1, 36, 2, 2, inputs=(0,))))
    # layer 0: 32*32 outputs * 24 filters * 3 channels * 9; layer 1: 16*16 * 36 * 24 * 1; linear: 36 * 10
    assert count_flops(arch, 32) == 32 * 32 * 24 * 3 * 9 + 16 * 16 * 36 * 24 + 36 * 10


def test_count_params_by_hand() -> None:
    arch = CNNArchitecture((ConvLayer(3, 3, 24), ConvLayer(1, 5, 36, inputs=(0,))))
    expected = (24 * 3 * 9 + 2 * 24) + (36 * 24 * 5 + 2 * 36) + (36 * 10 + 10)
    assert count_params(build_cnn(arch)) == expected


def test_other_classes_channels_and_even_kernels() -> None:
    space = CNNSpace(num_layers=5, filter_sizes=(1, 2, 4), predict_strides=True)
    for seed in range(5):
        arch = space.sample(seed)
        model = build_cnn(arch, num_classes=7, in_channels=1)
        assert model(torch.randn(BATCH, 1, 9, 9)).shape == (BATCH, 7)
        check_rules(arch, model, in_channels=1)
        assert count_flops(arch, 9, num_classes=7, in_channels=1) == hook_macs(model, torch.randn(1, 1, 9, 9))


def test_single_layer_and_tiny_images() -> None:
    forward_ok(CNNArchitecture((ConvLayer(7, 7, 24, 3, 3),)), size=8)
    deep = CNNArchitecture(tuple(ConvLayer(7, 7, 24, 3, 3, inputs=(i - 1,) if i else ()) for i in range(6)))
    model = forward_ok(deep, size=8)  # shrinks to 1x1 and stays there
    assert layer_shapes(deep, 8)[-1].out_height == 1
    assert count_flops(deep, 8) == hook_macs(model, torch.randn(1, 3, 8, 8))
