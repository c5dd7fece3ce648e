"""The vector faces: Gymnasium's ``make_vec`` (native, sync, async), SB3's ``make_vec_env``, one batch per step."""

from __future__ import annotations

import numpy as np
import gymnasium as gym
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

import nas_env  # noqa: F401 - registers the ids
from agents.sb3 import model_kwargs
from nas_env.vector_env import NASVectorEnv

ALL_IDS = ["NAS-Synthetic-v0", "NAS-Bench-201-v0", "NAS-CIFAR10-v0", "NAS-PTB-v0"]


def _rollout(venv: gym.vector.VectorEnv, actions: np.ndarray) -> tuple[np.ndarray, dict]:
    """Step every env with the same per-step actions until all terminate; the terminal rewards and infos."""
    venv.reset(seed=0)
    for step_actions in actions:
        _, rewards, terminated, truncated, infos = venv.step(step_actions)
    assert terminated.all() and not truncated.any()
    return rewards, infos


def test_make_vec_gives_the_native_vector_env_with_one_batch_per_step() -> None:
    venv = gym.make_vec("NAS-Synthetic-v0", num_envs=3, num_layers=2)
    native = venv.unwrapped if hasattr(venv, "unwrapped") else venv
    assert isinstance(native, NASVectorEnv)
    batches: list[int] = []
    inner = native.batch_evaluator
    native.batch_evaluator = lambda space, items: batches.append(len(items)) or inner(space, items)
    space = native.space
    rng = np.random.default_rng(0)
    actions = np.stack([[rng.integers(d.num_choices) for _ in range(3)] for d in space.decisions])
    rewards, infos = _rollout(venv, actions)
    assert batches == [3]  # the three terminal steps of one step went out as one batch
    single = gym.make("NAS-Synthetic-v0", num_layers=2)
    for i in range(3):
        single.reset(seed=0)
        for a in actions[:, i]:
            _, reward, terminated, _, info = single.step(int(a))
        assert reward == pytest.approx(rewards[i])
        assert infos["final_info"]["architecture"][i] == info["architecture"]
        assert infos["final_obs"][i]["step"] == space.num_steps  # the terminal observation is kept
    venv.close()


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_gymnasium_sync_and_async_vector_envs_work(mode: str) -> None:
    venv = gym.make_vec("NAS-Bench-201-v0", num_envs=2, vectorization_mode=mode)
    num_steps = venv.single_observation_space["tokens"].shape[0]
    venv.reset(seed=0)
    finals = 0
    for _ in range(num_steps + 1):  # NEXT_STEP autoreset of the Gymnasium vector envs needs one more step
        _, rewards, terminated, _, _ = venv.step(np.array([1, 3]))
        finals += int(terminated.sum())
        if terminated.any():
            assert 0.0 < rewards.min() <= rewards.max() < 1.0  # NB201 validation accuracies
    assert finals == 2
    venv.close()


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_sb3_make_vec_env_builds_every_id(env_id: str) -> None:
    venv = make_vec_env(env_id, n_envs=2)  # SB3 asks for render_mode="rgb_array"
    obs = venv.reset()
    assert obs["tokens"].shape[0] == 2
    frames = venv.get_images()
    assert len(frames) == 2 and frames[0].ndim == 3
    venv.close()


class _TerminalRewards(BaseCallback):
    def __init__(self) -> None:
        super().__init__()
        self.rewards: list[float] = []

    def _on_step(self) -> bool:
        self.rewards += [info["result"].reward for info in self.locals["infos"] if "terminal_observation" in info]
        return True


@pytest.mark.parametrize(
    ("env_id", "env_kwargs", "architectures", "margin"),
    [("NAS-Synthetic-v0", {"num_layers": 2}, 320, 0.2), ("NAS-Bench-201-v0", {}, 600, 0.02)],
)
def test_ppo_learns_through_sb3_make_vec_env(env_id: str, env_kwargs: dict, architectures: int, margin: float) -> None:
    for seed in (0, 1):
        venv = make_vec_env(env_id, n_envs=4, seed=seed, env_kwargs=env_kwargs)
        num_steps = venv.observation_space["tokens"].shape[0]
        kwargs = model_kwargs("ppo", num_steps, 4)
        model = PPO(kwargs.pop("policy"), venv, seed=seed, **kwargs)
        recorder = _TerminalRewards()
        model.learn(total_timesteps=architectures * num_steps, callback=recorder)
        first, last = np.mean(recorder.rewards[:100]), np.mean(recorder.rewards[-100:])
        assert last > first + margin, (seed, first, last)


@pytest.mark.parametrize("env_id", ["NAS-Synthetic-v0", "NAS-Bench-201-v0"])
def test_the_usual_wrappers_work_unmodified(env_id: str, tmp_path) -> None:
    from gymnasium.wrappers import FlattenObservation, RecordEpisodeStatistics, RenderCollection, TimeLimit
    from gymnasium.wrappers.vector import RecordEpisodeStatistics as VectorEpisodeStatistics

    env = RecordEpisodeStatistics(TimeLimit(FlattenObservation(gym.make(env_id, render_mode="rgb_array")), 500))
    env = RenderCollection(env)
    obs, _ = env.reset(seed=0)
    assert obs.ndim == 1
    terminated = False
    while not terminated:
        obs, reward, terminated, truncated, info = env.step(0)
    assert info["episode"]["l"] == env.unwrapped.space.num_steps and info["episode"]["r"] == pytest.approx(reward)
    frames = env.render()
    assert len(frames) == env.unwrapped.space.num_steps + 1 and all(f.ndim == 3 for f in frames)
    env.close()

    venv = VectorEpisodeStatistics(gym.make_vec(env_id, num_envs=2))
    venv.reset(seed=0)
    for _ in range(venv.unwrapped.space.num_steps):
        _, _, terminated, _, infos = venv.step(np.array([0, 1]))
    assert terminated.all() and infos["episode"]["l"].tolist() == [venv.unwrapped.space.num_steps] * 2
    venv.close()
