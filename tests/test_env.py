"""NASEnv through the Gymnasium API: checkers, episode shape, masks, errors, terminal info, pickling, rendering."""

from __future__ import annotations

import copy
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import nas_env
from nas_env import InvalidTokenError, Status
from nas_env.config_dicts import ArgumentError
from nas_env.render import FRAME_SHAPE

ENV_IDS = ["NAS-Synthetic-v0", "NAS-Bench-201-v0"]


def _play(env: gym.Env, tokens: list[int]) -> tuple[float, dict, list[float]]:
    env.reset(seed=0)
    rewards, info = [], {}
    for t in tokens:
        _, reward, terminated, truncated, info = env.step(t)
        rewards.append(reward)
        assert not truncated
    assert terminated
    return rewards[-1], info, rewards[:-1]


def _check_strictly(env: gym.Env) -> None:
    """Both checkers with every warning an error: a checker's complaint must fail the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env.unwrapped)
        sb3_check_env(env.unwrapped, warn=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_both_env_checkers_pass(env_id: str) -> None:
    _check_strictly(gym.make(env_id, render_mode="rgb_array"))


def test_env_checkers_pass_on_cifar10(data_root) -> None:
    _check_strictly(gym.make("NAS-CIFAR10-v0", recipe="tiny", device="cpu", data_dir=data_root / "cifar10-subset"))


@pytest.mark.parametrize("env_id", ["NAS-Synthetic-v0", "NAS-Bench-201-v0", "NAS-CIFAR10-v0", "NAS-PTB-v0"])
def test_every_env_pickles_and_deep_copies_mid_episode(env_id: str) -> None:
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    env.step(1)
    for clone in (pickle.loads(pickle.dumps(env)), copy.deepcopy(env)):
        assert clone.tokens == env.tokens == (1,)
        assert clone.evaluator.fingerprint() == env.evaluator.fingerprint()
        obs, *_ = clone.step(0)
        assert obs["step"] == 2 and env.tokens == (1,)  # the copy is independent


def test_episode_is_one_architecture_with_a_terminal_reward() -> None:
    env = gym.make("NAS-Synthetic-v0", num_layers=4, target_seed=3)
    space = env.unwrapped.space
    target = list(env.unwrapped.evaluator.target_tokens)
    obs, info = env.reset(seed=1)
    assert obs["step"] == 0 and not obs["tokens"].any()
    assert info["decision"] == space.decisions[0].name
    reward, info, earlier = _play(env, target)
    assert earlier == [0.0] * (space.num_steps - 1)
    assert reward == pytest.approx(1.0)
    assert info["result"].status is Status.OK
    assert info["architecture"] == space.decode(target)
    assert info["arch_key"] == space.key(info["architecture"])


def test_observation_holds_the_history() -> None:
    env = gym.make("NAS-Synthetic-v0", num_layers=3)
    obs, _ = env.reset()
    obs, *_ = env.step(2)
    obs, *_ = env.step(0)
    assert obs["step"] == 2
    assert list(obs["tokens"][:3]) == [3, 1, 0]  # 1 + token, 0 = not chosen yet
    assert env.observation_space.contains(obs)


def test_masks_follow_the_decisions() -> None:
    env = gym.make("NAS-Synthetic-v0", num_layers=3, predict_strides=True)
    env.reset()
    space = env.unwrapped.space
    for step in range(space.num_steps):
        mask = env.unwrapped.action_masks()
        assert mask.sum() == space.decisions[step].num_choices
        env.step(int(np.flatnonzero(mask)[-1]))


def test_invalid_tokens_error_mode_names_the_decision() -> None:
    env = gym.make("NAS-Synthetic-v0", num_layers=3, invalid_action="error")
    env.reset()
    for _ in range(3):  # layer 0: filter height, width, filters
        env.step(0)
    with pytest.raises(InvalidTokenError, match=r"layer1.skip_from_0.*choices 0..1"):
        env.step(3)
    with pytest.raises(InvalidTokenError, match="not in the action space"):
        env.step(7)


def test_wrap_mode_is_the_documented_modulo() -> None:
    env = gym.make("NAS-Synthetic-v0", num_layers=2, predict_strides=True)
    space = env.unwrapped.space
    actions = [3] * space.num_steps
    _, info, _ = _play(env, actions)
    expected = [3 % d.num_choices for d in space.decisions]
    assert space.encode(info["architecture"]) == tuple(expected)


def test_step_before_reset_and_after_termination() -> None:
    env = nas_env.registration.make_synthetic_env(num_layers=1)
    with pytest.raises(gym.error.ResetNeeded):
        env.step(0)
    env.reset()
    for _ in range(env.space.num_steps):
        env.step(0)
    with pytest.warns(UserWarning, match="after the episode terminated"):
        _, reward, terminated, _, _ = env.step(0)
    assert reward == 0.0 and terminated
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        env.step(0)  # warns only once


def test_the_env_keeps_no_results_and_evaluates_every_episode(tmp_path) -> None:
    log = tmp_path / "trainings.jsonl"
    env = gym.make("NAS-Synthetic-v0", num_layers=2, log_path=str(log))
    tokens = [0] * env.unwrapped.space.num_steps
    r1, info1, _ = _play(env, tokens)
    r2, info2, _ = _play(env, tokens)
    assert not info1["cached"] and not info2["cached"]
    assert r1 == r2
    assert len(log.read_text().splitlines()) == 2  # caching belongs to the search core, not to the env
    with pytest.raises(ArgumentError, match="unknown keyword 'store'"):
        gym.make("NAS-Bench-201-v0", store=str(tmp_path / "store.sqlite"))


def test_misspelt_or_ill_typed_kwargs_name_the_key() -> None:
    with pytest.raises(ArgumentError, match=r"unknown keyword 'fidelty' \(did you mean 'fidelity'\?\)"):
        gym.make("NAS-Bench-201-v0", fidelty=12)
    with pytest.raises(ArgumentError, match="keyword 'fidelity' expects int, got str '12'"):
        gym.make("NAS-Bench-201-v0", fidelity="12")
    with pytest.raises(ArgumentError, match="keyword 'num_layers' expects int"):
        gym.make("NAS-Synthetic-v0", num_layers=2.5)


def test_render_rgb_array_frames_have_the_documented_shape() -> None:
    env = gym.make("NAS-Bench-201-v0", render_mode="rgb_array")
    env.reset(seed=0)
    blank = env.render()
    frames = [blank]
    for _ in range(env.unwrapped.space.num_steps):
        env.step(3)
        frames.append(env.render())
    for frame in frames:
        assert frame.shape == FRAME_SHAPE and frame.dtype == np.uint8
    assert not np.array_equal(frames[0], frames[-1])  # the drawing shows the chosen tokens


def test_render_ansi() -> None:
    env = gym.make("NAS-Bench-201-v0", render_mode="ansi")
    env.reset()
    env.step(3)
    assert "edge0->1 = nor_conv_3x3" in env.render()


def test_cifar10_terminal_step_trains_a_real_child(data_root) -> None:
    env = gym.make("NAS-CIFAR10-v0", recipe="tiny", device="cpu", num_layers=2, data_dir=data_root / "cifar10-subset")
    space = env.unwrapped.space
    reward, info, _ = _play(env, list(space.encode(space.sample(0))))
    result = info["result"]
    assert result.status is Status.OK
    assert 0.0 < result.metric <= 1.0
    assert reward == pytest.approx(result.metric**3)  # the paper's reward: accuracy cubed
    assert result.params > 0 and result.flops > 0 and len(result.curve) == 1


def test_bad_env_arguments_are_clear() -> None:
    with pytest.raises(ValueError, match="invalid_action"):
        gym.make("NAS-Synthetic-v0", invalid_action="ignore")
    with pytest.raises(ValueError, match="unknown training recipe preset 'huge'"):
        gym.make("NAS-CIFAR10-v0", recipe="huge")
    with pytest.raises(ValueError, match="epochs"):
        gym.make("NAS-CIFAR10-v0", recipe={"epochs": 0})
    with pytest.raises(ValueError, match="reward shaping"):
        gym.make("NAS-CIFAR10-v0", reward_shaping="log")
