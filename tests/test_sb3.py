"""Stable-Baselines3 baselines: real environments, real SB3 training on free rewards, the real dispatcher.

- SB3's ``check_env`` passes on every registered NAS environment;
- every SB3 agent completes a short search on NAS-Bench-201 (table look-ups) with the inline executor and
  leaves a run directory like ``Search`` does (proposals told = budget, results, scalars, the model);
- the SB3 VecEnv over the native vector env sends the terminal steps of all its envs through the search core
  to ``Dispatcher.submit`` as ONE call (the real dispatcher, subclassed only to count calls; the ``local``
  executor runs the children in other processes), answers repeats from the store without dispatching, and
  never evaluates past the budget;
- a resumed run loads the saved model and continues to the new budget without re-evaluating anything.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, ClassVar, Sequence

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.env_checker import check_env

import agents.core as core_module
import agents.sb3 as sb3
from agents.core import SearchCore
from agents.run_dir import RunDir, SearchConfig
from agents.sb3 import SB3_AGENTS, make_vec_env_for, run_sb3_search
from agents.sb3_vec_env import SB3VecEnv
from nas_env.registration import CIFAR10_ID, NB201_ID, PTB_ID, SYNTHETIC_ID
from nas_env.spaces.rnn_cell import paper_example
from nas_env.store import ResultStore
from slurm.dispatch import Dispatcher, ExecutorConfig, Task


class CountingDispatcher(Dispatcher):
    """The real dispatcher; it only records the keys of every ``submit`` call (one list per call)."""

    instances: ClassVar[list["CountingDispatcher"]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[list[str]] = []
        CountingDispatcher.instances.append(self)

    def submit(self, tasks: Sequence[Task]) -> list[str]:
        tasks = list(tasks)
        self.batches.append([t.key for t in tasks])
        return super().submit(tasks)


def _config(agent: str, budget: int, env_id: str = NB201_ID, n_envs: int = 4, **kwargs: Any) -> SearchConfig:
    return SearchConfig(
        env_id=env_id,
        agent=agent,
        budget=budget,
        seed=0,
        executor={"executor": "inline", "max_in_flight": n_envs},
        **kwargs,
    )


def _vec_env(tmp_path: Path, executor: str, n_envs: int = 4, budget: int = 1000, monkeypatch=None):
    """The SB3 vec env of a search core over NAS-Synthetic-v0, with a counting dispatcher, on a fresh run."""
    monkeypatch.setattr(core_module, "Dispatcher", CountingDispatcher)
    CountingDispatcher.instances.clear()
    executor_config = {"executor": executor, "max_in_flight": n_envs, "poll_interval_s": 0.1, "time_limit_min": 5}
    core = SearchCore(tmp_path / "run", SearchConfig(env_id=SYNTHETIC_ID, agent="ppo", budget=budget,
                                                     executor=executor_config))  # fmt: skip
    (dispatcher,) = CountingDispatcher.instances
    return make_vec_env_for(core), dispatcher, core


def _play_episode(vec: SB3VecEnv, per_env_actions: Sequence[int]):
    """Every env plays the same action index all episode (``invalid_action="wrap"`` keeps it valid)."""
    actions = np.asarray(per_env_actions)
    for _ in range(vec.space.num_steps - 1):
        obs, rewards, dones, infos = vec.step(actions)
        assert not dones.any() and not rewards.any()
    return vec.step(actions)


# ---------------------------------------------------------------------------------------------- check_env
@pytest.mark.parametrize("env_id", [CIFAR10_ID, NB201_ID, SYNTHETIC_ID, PTB_ID])
def test_check_env_passes_on_every_registered_env(env_id: str, data_root: Path) -> None:
    registered = sorted(i for i in gym.registry if i.startswith("NAS-"))
    assert registered == sorted([CIFAR10_ID, NB201_ID, SYNTHETIC_ID, PTB_ID]), "a new env id needs a check_env case"
    kwargs: dict[str, Any] = {}
    if env_id == CIFAR10_ID:
        kwargs = {"recipe": "tiny", "device": "cpu", "data_dir": str(data_root / "cifar10-subset")}
    if env_id == PTB_ID:
        kwargs = {"recipe": "tiny", "device": "cpu", "data_dir": str(data_root / "ptb"), "num_leaves": 2}
    env = gym.make(env_id, **kwargs)
    check_env(env.unwrapped, warn=True)
    check_env(env, warn=True)
    # check_env stops short of the terminal step; play one whole episode (CIFAR-10, PTB: trains one tiny child)
    obs, _ = env.reset(seed=0)
    terminated, steps = False, 0
    # the smallest choice of every decision is the cheapest CNN; for a recurrent cell (all identities) it
    # diverges, so the PTB episode plays the paper's example cell instead
    actions = list(env.unwrapped.space.encode(paper_example())) if env_id == PTB_ID else None
    while not terminated:
        action = actions[steps] if actions else 0
        obs, reward, terminated, truncated, info = env.step(action)
        assert env.observation_space.contains(obs) and not truncated
        steps += 1
    assert steps == env.unwrapped.space.num_steps and info["result"].ok and 0.0 <= reward <= 1.0


# ---------------------------------------------------------------------------------------------- searches
@pytest.mark.parametrize("agent", SB3_AGENTS)
def test_each_agent_completes_a_search_and_writes_the_store(agent: str, tmp_path: Path) -> None:
    budget = 18  # 4 envs: batches of 4, 4, 4, 4 and then only 2 of the last 4 architectures
    summary = run_sb3_search(tmp_path / "run", _config(agent, budget), progress=False)

    assert summary.finished and summary.evaluations == budget and summary.in_flight == 0
    run = RunDir(tmp_path / "run")
    with ResultStore(run.store_path) as store:
        told = store.told()
        assert summary.best and summary.best[0].result.reward == max(r.reward for r in told)
        assert store.get(summary.best[0].arch_key, summary.best[0].fingerprint) == summary.best[0].result
        assert store.num_told() == store.num_proposals() == budget  # nothing evaluated past the budget
        assert [r.told_seq for r in told] == list(range(1, budget + 1))
        assert store.count() == sum(not r.cached for r in told)  # repeats answered from the store
        assert all(r.status == "ok" and 0.0 < r.reward <= 1.0 for r in told)
    rows = [line.split(",") for line in run.scalars_path.read_text().splitlines()[1:]]
    assert sorted(int(step) for step, name, *_ in rows if name == "search/reward") == list(range(1, budget + 1))
    assert run.read_config().agent == agent
    data = json.loads(zipfile.ZipFile(run.path / sb3.MODEL_FILE).read("data"))
    assert data["_n_updates"] > 0, "the policy was never updated"
    assert data["n_envs"] == 4


def test_agent_kwargs_override_constructor_arguments() -> None:
    kwargs = sb3.model_kwargs("ppo", 6, 4, {"n_steps": 12, "policy_kwargs": {"net_arch": [32]}, "gamma": 0.9})
    assert kwargs["n_steps"] == 12 and kwargs["gamma"] == 0.9 and kwargs["policy_kwargs"] == {"net_arch": [32]}
    defaults = sb3.default_hyperparameters("maskable-ppo", 6, 4)
    assert defaults["gamma"] == 1.0 and defaults["n_steps"] % 6 == 0
    with pytest.raises(ValueError, match="unknown SB3 agent"):
        sb3.default_hyperparameters("dqn", 6, 4)


def test_the_wall_time_budget_stops_learning(tmp_path: Path) -> None:
    config = _config("a2c", 100_000, env_id=SYNTHETIC_ID, max_wall_time_s=2.0)
    summary = run_sb3_search(tmp_path / "run", config, progress=False)
    assert summary.out_of_time and summary.finished and summary.in_flight == 0
    with ResultStore(tmp_path / "run" / "store.sqlite") as store:
        assert store.num_told() == store.num_proposals() == summary.evaluations


def test_curriculum_is_refused_with_a_reason(tmp_path: Path) -> None:
    config = _config("ppo", 4, env_id=SYNTHETIC_ID, curriculum={"start_layers": 2, "every": 2})
    with pytest.raises(ValueError, match="curriculum"):
        run_sb3_search(tmp_path / "run", config, progress=False)


# ---------------------------------------------------------------------------------------------- the vec env
def test_terminal_steps_of_all_envs_go_out_as_one_submit_across_processes(tmp_path: Path, monkeypatch) -> None:
    vec, dispatcher, core = _vec_env(tmp_path, "local", n_envs=4, monkeypatch=monkeypatch)
    store = core.store
    try:
        vec.reset()
        masks = vec.env_method("action_masks")
        assert np.stack(masks).shape == vec.action_masks().shape == (4, vec.space.max_choices)
        obs, rewards, dones, infos = _play_episode(vec, [0, 1, 2, 3])  # four different architectures

        assert dispatcher.batches and len(dispatcher.batches) == 1 and len(dispatcher.batches[0]) == 4
        assert dones.all() and (obs["step"] == 0).all() and (obs["tokens"] == 0).all()  # auto-reset
        target = vec.venv.evaluator
        for i, info in enumerate(infos):
            assert info["terminal_observation"]["step"] == vec.space.num_steps and not info["cached"]
            tokens = vec.space.encode(info["architecture"])
            assert rewards[i] == pytest.approx(target.score(tokens))
            job_id = info["result"].job_id
            assert job_id and int(job_id.rpartition("-")[2]) != os.getpid()  # ran in another process
        assert store.count() == 4 and store.num_told() == 4

        _, rewards2, dones2, infos2 = _play_episode(vec, [0, 1, 2, 3])  # the same four: from the store
        assert len(dispatcher.batches) == 1 and dones2.all() and all(i["cached"] for i in infos2)
        np.testing.assert_allclose(rewards2, rewards)
        assert store.count() == 4 and store.num_told() == 8
    finally:
        vec.close()
        core.close()


def test_a_repeat_within_a_batch_is_evaluated_once_and_the_budget_is_never_exceeded(tmp_path: Path, monkeypatch) -> None:
    vec, dispatcher, core = _vec_env(tmp_path, "inline", n_envs=4, budget=7, monkeypatch=monkeypatch)
    store = core.store
    try:
        vec.reset()
        _, rewards, _, infos = _play_episode(vec, [0, 0, 1, 2])  # envs 0 and 1 build the same network
        assert [len(b) for b in dispatcher.batches] == [3]
        assert [i["cached"] for i in infos] == [False, True, False, False] and rewards[0] == rewards[1]

        _, _, dones, infos = _play_episode(vec, [3, 1, 2, 1])  # 3 evaluations left for 4 architectures
        assert dones.all() and [i["result"].status for i in infos[:3]] != ["not_started"] * 3
        assert [i["result"].status.value for i in infos].count("not_started") == 1
        assert infos[3]["result"].status == "not_started" and "budget is spent" in infos[3]["result"].error
        assert store.num_told() == store.num_proposals() == 7
        assert core.remaining() == 0
    finally:
        vec.close()
        core.close()


# ---------------------------------------------------------------------------------------------- resume
def test_resume_loads_the_model_and_continues_to_the_new_budget_without_re_evaluating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(core_module, "Dispatcher", CountingDispatcher)
    run = RunDir(tmp_path / "run")
    first = run_sb3_search(run.path, _config("ppo", 8), progress=False)
    assert first.evaluations == 8
    with ResultStore(run.store_path) as store:
        told_before = store.told()
        rows_before = {e.arch_key: e.created_at for e in store.evaluations()}
    steps_before = json.loads(zipfile.ZipFile(run.path / sb3.MODEL_FILE).read("data"))["num_timesteps"]

    config = run.read_config()
    config.budget = 16  # what `nas search --resume RUN_DIR --budget 16` passes
    CountingDispatcher.instances.clear()
    second = run_sb3_search(run.path, config, progress=False)

    assert second.finished and second.evaluations == 16
    with ResultStore(run.store_path) as store:
        assert store.told()[:8] == told_before  # the first session's history is untouched
        rows_after = {e.arch_key: e.created_at for e in store.evaluations()}
    assert {k: rows_after[k] for k in rows_before} == rows_before  # nothing evaluated twice
    (dispatcher,) = CountingDispatcher.instances
    submitted = [key for batch in dispatcher.batches for key in batch]
    assert len(submitted) == len(set(submitted)) == len(rows_after) - len(rows_before)
    steps_after = json.loads(zipfile.ZipFile(run.path / sb3.MODEL_FILE).read("data"))["num_timesteps"]
    assert steps_after == steps_before + 8 * 6  # the loaded model went on counting (a new one restarts at 0)


def test_proposals_left_in_flight_by_a_killed_driver_are_settled_on_resume(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    config = _config("a2c", 6, n_envs=2)
    core = SearchCore(run.path, config)  # what a driver killed mid-dispatch leaves behind: registered proposals
    space = core.space
    archs = [space.sample(seed) for seed in (1, 2)]
    with core.store.transaction():
        for arch in archs:
            core.store.add_proposal(core._record(core.new_proposal(space.encode(arch), arch, space)))
    assert len(core.store.in_flight()) == 2
    core.close()
    summary = run_sb3_search(run.path, config, progress=False)
    assert summary.finished and summary.evaluations == 6
    with ResultStore(run.store_path) as store:
        assert not store.in_flight()
        assert [r.arch_key for r in store.told()[:2]] == [space.key(a) for a in archs]
