"""The paper's CNN spaces by name (v1, v2, v3): token counts, full-depth children, v3's pooling, the CLI."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import nas_env  # noqa: F401 - registers the ids
from nas_cli.main import main
from nas_env.children.cnn import architecture_params, build_cnn, count_params, layer_shapes
from nas_env.spaces.cnn import PRESETS, CNNArchitecture, CNNSpace, cnn_preset

# the token counts docs/presets.md gives: L * k + L (L - 1) / 2
DOCUMENTED_TOKENS = {"v1": 15 * 3 + 15 * 14 // 2, "v2": 20 * 5 + 20 * 19 // 2, "v3": 39 * 3 + 39 * 38 // 2}


def test_presets_match_the_documented_table() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "presets.md").read_text()
    assert (DOCUMENTED_TOKENS["v1"], DOCUMENTED_TOKENS["v2"], DOCUMENTED_TOKENS["v3"]) == (150, 290, 858)
    for name, preset in PRESETS.items():
        assert preset.num_tokens == DOCUMENTED_TOKENS[name] == preset.space().num_steps
        assert f"| `{name}` |" in doc and f"| {preset.num_tokens} |" in doc
        assert preset.curriculum["max_layers"] == preset.num_layers  # the curriculum ends at the preset's depth
    assert (PRESETS["v1"].num_layers, PRESETS["v2"].num_layers, PRESETS["v3"].num_layers) == (15, 20, 39)
    assert not PRESETS["v1"].predict_strides and not PRESETS["v1"].pool_at
    assert PRESETS["v2"].predict_strides and not PRESETS["v2"].pool_at
    assert not PRESETS["v3"].predict_strides and PRESETS["v3"].pool_at == (13, 26)
    assert "max-pooling before layers 13 and 26" in doc  # where v3 pools, as the doc says


@pytest.mark.parametrize("env_id", ["NAS-CIFAR10-v0", "NAS-Synthetic-v0"])
@pytest.mark.parametrize("name", list(PRESETS))
def test_gym_make_with_a_preset(env_id: str, name: str) -> None:
    env = gym.make(env_id, preset=name, disable_env_checker=True).unwrapped
    assert env.space.config() == cnn_preset(name).space().config()
    assert env.space.num_steps == DOCUMENTED_TOKENS[name]


def test_an_unknown_preset_or_a_preset_with_a_space_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown CNN preset 'v4'"):
        gym.make("NAS-Synthetic-v0", preset="v4")
    with pytest.raises(ValueError, match="preset or a space"):
        gym.make("NAS-Synthetic-v0", preset="v1", space={"num_layers": 3})


@pytest.mark.parametrize("name", list(PRESETS))
def test_random_children_at_full_depth_build_and_run_forward_on_cpu(name: str) -> None:
    space = cnn_preset(name).space()
    torch.manual_seed(0)
    for seed in range(2):
        arch = space.sample(np.random.default_rng(seed))
        assert space.decode(space.encode(arch)) == arch
        assert arch.num_layers == cnn_preset(name).num_layers
        model = build_cnn(arch)
        assert count_params(model) == architecture_params(arch)
        with torch.no_grad():
            out = model(torch.randn(2, 3, 32, 32))
        assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_v3_pools_where_the_doc_says() -> None:
    """Layers 0..12 at 32x32, 13..25 at 16x16, 26..38 at 8x8, skips across a pooling depth included."""
    space = cnn_preset("v3").space()
    dense = space.decode([1 if d.kind == "anchor" else 0 for d in space.decisions])  # every skip on, 1x1 filters
    assert dense.pool_at == (13, 26)
    for arch in (dense, space.sample(3)):
        shapes = layer_shapes(arch, 32)
        for i, s in enumerate(shapes):
            expected = 32 if i < 13 else 16 if i < 26 else 8
            assert (s.in_height, s.in_width, s.out_height, s.out_width) == (expected,) * 4, i
    # in the forward pass too: record what each conv sees
    model, seen = build_cnn(dense), {}

    def record(i: int):
        def hook(module, args) -> None:  # a pre-hook that returns None leaves the input as it is
            seen[i] = tuple(args[0].shape[2:])

        return hook

    for i, layer in enumerate(model.layers):
        layer.register_forward_pre_hook(record(i))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert [seen[i] for i in (0, 12, 13, 25, 26, 38)] == [(32, 32)] * 2 + [(16, 16)] * 2 + [(8, 8)] * 2


def test_pooling_follows_the_curriculum_and_keeps_old_keys() -> None:
    v3 = cnn_preset("v3").space()
    assert v3.with_layers(6).decode(v3.with_layers(6).sample_tokens(np.random.default_rng(0))).pool_at == ()
    assert v3.with_layers(20).sample(0).pool_at == (13,)
    plain = CNNSpace(num_layers=3)
    assert "pool_at" not in plain.config() and "pool_at" not in plain.sample(0).to_dict()
    arch = v3.sample(1)
    assert CNNArchitecture.from_dict(arch.to_dict()) == arch
    with pytest.raises(Exception, match="pools at"):
        cnn_preset("v1").space().with_layers(39).encode(arch)


def test_nas_search_with_a_preset_and_its_curriculum(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["search", "--env", "NAS-Synthetic-v0", "--preset", "v2", "--agent", "random", "--budget", "3",
                 "--curriculum", "--executor", "inline", "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert code == 0
    from agents.run_dir import RunDir

    config = RunDir(tmp_path / "run").read_config()
    assert config.env_kwargs["preset"] == "v2"
    assert config.curriculum == cnn_preset("v2").curriculum
    assert main(["search", "--env", "NAS-Bench-201-v0", "--preset", "v1", "--run-dir", str(tmp_path / "x"),
                 "--no-progress"]) != 0
    assert "--preset is a CNN space" in capsys.readouterr().err
