"""The paper's CNN token space: decode/encode, masks, sampling, mutation, keys, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nas_env.spaces import CNNArchitecture, CNNSpace, ConvLayer, InvalidTokenError, space_from_config


@pytest.mark.parametrize("predict_strides", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2, 6, 15])
def test_token_count_and_order(num_layers: int, predict_strides: bool) -> None:
    space = CNNSpace(num_layers=num_layers, predict_strides=predict_strides)
    per_layer = 5 if predict_strides else 3
    assert space.num_steps == num_layers * per_layer + num_layers * (num_layers - 1) // 2
    # layer 2 starts with its anchor decisions (skip from 0 and 1), then its hyperparameters
    if num_layers >= 3:
        names = [d.name for d in space.decisions]
        start = names.index("layer2.skip_from_0")
        assert names[start + 1] == "layer2.skip_from_1"
        assert names[start + 2] == "layer2.filter_height"
        assert names[start + 2 + per_layer - 1] == "layer2.num_filters"


@pytest.mark.parametrize("predict_strides", [False, True])
def test_decode_encode_round_trip_over_many_random_architectures(predict_strides: bool) -> None:
    rng = np.random.default_rng(0)
    for depth in range(2, 16):
        space = CNNSpace(num_layers=depth, predict_strides=predict_strides)
        for _ in range(40):
            tokens = space.sample_tokens(rng)
            arch = space.decode(tokens)
            assert space.encode(arch) == tokens
            assert space.architecture_from_json(arch.to_json()) == arch  # JSON round trip
            assert hash(arch) == hash(CNNArchitecture.from_dict(json.loads(arch.to_json())))
            assert arch.num_layers == depth


def test_decode_gives_the_paper_values() -> None:
    space = CNNSpace(num_layers=2, predict_strides=True)
    # layer 0: fh=3 (1), fw=7 (3), sh=2 (1), sw=3 (2), nf=64 (3); layer 1: skip from 0 = 1, fh=1, fw=5, s=1,1, nf=24
    arch = space.decode([1, 3, 1, 2, 3, 1, 0, 2, 0, 0, 0])
    assert arch.layers[0] == ConvLayer(3, 7, 64, stride_height=2, stride_width=3, inputs=())
    assert arch.layers[1] == ConvLayer(1, 5, 24, inputs=(0,))


def test_action_mask_matches_choices() -> None:
    space = CNNSpace(num_layers=3, predict_strides=True)
    assert space.max_choices == 4
    for step, decision in enumerate(space.decisions):
        mask = space.action_mask(step)
        assert mask.sum() == decision.num_choices and mask[: decision.num_choices].all()
    with pytest.raises(IndexError):
        space.action_mask(space.num_steps)


def test_bad_tokens_name_the_problem() -> None:
    space = CNNSpace(num_layers=3)
    tokens = list(space.sample_tokens(np.random.default_rng(1)))
    bad = list(tokens)
    step = [d.name for d in space.decisions].index("layer1.skip_from_0")
    bad[step] = 2
    with pytest.raises(InvalidTokenError, match=r"token 2 at step \d+ \(layer1.skip_from_0\)"):
        space.decode(bad)
    with pytest.raises(InvalidTokenError, match="expected 12 tokens"):
        space.decode(tokens[:-1])
    with pytest.raises(InvalidTokenError, match="-1"):
        space.decode([-1] + tokens[1:])


def test_bad_space_config_and_architecture() -> None:
    with pytest.raises(ValueError, match="num_layers"):
        CNNSpace(num_layers=0)
    with pytest.raises(ValueError, match="num_filters"):
        CNNSpace(num_filters=())
    with pytest.raises(ValueError, match="inputs"):
        CNNArchitecture((ConvLayer(3, 3, 24, inputs=(0,)),))  # a layer cannot feed itself
    with pytest.raises(InvalidTokenError, match="filter_height=2"):
        CNNSpace(num_layers=1).encode(CNNArchitecture((ConvLayer(2, 3, 24),)))


def test_sampling_is_seeded() -> None:
    space = CNNSpace(num_layers=8, predict_strides=True)
    assert space.sample(7) == space.sample(7)
    assert len({space.key(space.sample(s)) for s in range(50)}) == 50


def test_mutate_changes_exactly_one_decision() -> None:
    space = CNNSpace(num_layers=6, predict_strides=True)
    rng = np.random.default_rng(3)
    for _ in range(200):
        arch = space.sample(rng)
        child = space.mutate(arch, rng)
        diff = np.asarray(space.encode(arch)) != np.asarray(space.encode(child))
        assert diff.sum() == 1


def test_keys_and_space_config_round_trip() -> None:
    space = CNNSpace(num_layers=4, filter_sizes=(1, 3), num_filters=(8, 16), predict_strides=True)
    again = space_from_config({"name": space.name, **space.config()})
    assert again.decisions == space.decisions
    a = space.sample(0)
    assert space.key(a) == again.key(again.decode(space.encode(a)))
    assert space.with_layers(6).num_layers == 6
    with pytest.raises(ValueError, match="unknown search space"):
        space_from_config({"name": "nope"})
