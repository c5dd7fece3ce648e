"""Stable-Baselines3 baselines on the NAS environments: PPO, A2C, MaskablePPO and RecurrentPPO.

``run_sb3_search(run_dir, config)`` is what ``nas search --agent ppo|a2c|maskable-ppo|recurrent-ppo`` runs.
The policy is trained through SB3's standard ``learn()`` on a :class:`~agents.sb3_vec_env.SB3VecEnv` over the
Gymnasium-native :class:`~nas_env.vector_env.NASVectorEnv` (``n_envs`` = the executor's ``max_in_flight``),
whose terminal steps go through the search core (:class:`agents.core.SearchCore`) to the dispatcher as one
batch: the same ledger, limits, resume rule and scalars as every other agent.
The search is measured in **evaluated architectures**, like every other agent of this project: a callback
stops ``learn()`` when the store's told count reaches ``config.budget`` (or the wall-clock / simulated-time
budget is spent), whatever the number of env steps. The run directory is the one a
:class:`agents.search.Search` writes (config.json, store.sqlite with proposals and results, jobs/,
scalars.csv, tensorboard/) plus ``sb3_model.zip``, saved after every policy update and at the end;
``--resume RUN_DIR`` loads that model and continues counting from the store.

Defaults suit this problem rather than Atari/MuJoCo: an episode is one architecture (``T`` tokens, the
reward only on the last step), so ``gamma = 1`` and ``gae_lambda = 1`` (the advantage of a token is the
architecture's reward minus the value estimate: REINFORCE with a learned, state-dependent baseline),
``n_steps`` is a whole number of episodes per env (``T * ceil(16 / n_envs)``: about 16 architectures per
update), and the networks are small (one hidden layer of 64). Any SB3 constructor argument can be
overridden through ``config.agent_kwargs`` (``policy_kwargs`` is merged key by key).
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.torch_layers import CombinedExtractor

from agents.core import SearchCore, SearchSummary
from agents.registry import SB3_AGENTS
from agents.run_dir import RunDir, SearchConfig
from agents.sb3_vec_env import SB3VecEnv
from nas_env.vector_env import NASVectorEnv

__all__ = [
    "SB3_AGENTS",
    "SB3VecEnv",
    "BudgetCallback",
    "MODEL_FILE",
    "algorithm_class",
    "default_hyperparameters",
    "make_model",
    "model_kwargs",
    "run_sb3_search",
]

#: the saved model inside the run directory
MODEL_FILE = "sb3_model.zip"

#: about this many architectures (episodes, over all envs) per policy update of the PPO variants
EPISODES_PER_UPDATE = 16


# ---------------------------------------------------------------------------------------------- models
class NASCombinedExtractor(CombinedExtractor):
    """SB3's Dict-observation extractor (one-hot of every ``tokens`` entry and of ``step``, concatenated) with
    ``features_dim`` as a Python int: SB3 sums the MultiDiscrete ``nvec`` into a numpy integer, which
    ``torch.nn.LSTM`` rejects as ``input_size`` (RecurrentPPO)."""

    def __init__(self, observation_space: Any, **kwargs: Any) -> None:
        super().__init__(observation_space, **kwargs)
        self._features_dim = int(self._features_dim)


def algorithm_class(agent: str) -> type[BaseAlgorithm]:
    """The SB3 / sb3-contrib class of an agent name (imported lazily: sb3-contrib is only needed for its two)."""
    if agent == "ppo":
        from stable_baselines3 import PPO

        return PPO
    if agent == "a2c":
        from stable_baselines3 import A2C

        return A2C
    if agent == "maskable-ppo":
        from sb3_contrib import MaskablePPO

        return MaskablePPO
    if agent == "recurrent-ppo":
        from sb3_contrib import RecurrentPPO

        return RecurrentPPO
    raise ValueError(f"unknown SB3 agent {agent!r}; choose one of {list(SB3_AGENTS)}")


def _minibatch_size(rollout_size: int, minibatches: int = 4) -> int:
    """The largest ``rollout_size / d`` with ``d <= minibatches`` dividing it (SB3 warns on a ragged last batch)."""
    for d in range(minibatches, 0, -1):
        if rollout_size % d == 0:
            return rollout_size // d
    return rollout_size


def default_hyperparameters(agent: str, num_steps: int, n_envs: int) -> dict[str, Any]:
    """Constructor arguments suited to episodes of ``num_steps`` tokens with a terminal-only reward.

    - ``gamma = 1``, ``gae_lambda = 1``: nothing to discount inside one architecture; the advantage of every
      token is the final reward minus V(s_t), unbiased by bootstrapping from a poor value estimate.
    - PPO variants: ``n_steps = T * ceil(16 / n_envs)`` (whole episodes, ~16 architectures per update),
      4 epochs over 4 minibatches, ``learning_rate = 1e-3``, ``ent_coef = 0.01`` against an early collapse.
    - A2C: ``n_steps = T``, one architecture per env per update (A2C's on-line character), RMSprop at
      ``3e-3`` with normalized advantages: the rewards of one update differ by a few hundredths, and
      unnormalized A2C barely moves (measured on NAS-Synthetic-v0, see docs/sb3.md).
    - Small networks: one hidden layer of 64 units for policy and value (RecurrentPPO: LSTM of 64).
    - ``device = "cpu"``: the networks are tiny; the GPU belongs to the children.
    """
    if agent not in SB3_AGENTS:
        raise ValueError(f"unknown SB3 agent {agent!r}; choose one of {list(SB3_AGENTS)}")
    common: dict[str, Any] = {"gamma": 1.0, "gae_lambda": 1.0, "device": "cpu", "verbose": 0}
    if agent == "a2c":
        return {
            **common,
            "policy": "MultiInputPolicy",
            "n_steps": num_steps,
            "learning_rate": 3e-3,
            "ent_coef": 0.01,
            "normalize_advantage": True,
            "policy_kwargs": {"net_arch": {"pi": [64], "vf": [64]}},
        }
    episodes_per_env = max(1, math.ceil(EPISODES_PER_UPDATE / n_envs))
    n_steps = num_steps * episodes_per_env
    ppo: dict[str, Any] = {
        **common,
        "n_steps": n_steps,
        "batch_size": _minibatch_size(n_steps * n_envs),
        "n_epochs": 4,
        "learning_rate": 1e-3,
        "ent_coef": 0.01,
        "clip_range": 0.2,
    }
    if agent == "recurrent-ppo":
        return {
            **ppo,
            "policy": "MultiInputLstmPolicy",
            "policy_kwargs": {
                "lstm_hidden_size": 64,
                "n_lstm_layers": 1,
                "net_arch": {"pi": [], "vf": []},
                "features_extractor_class": NASCombinedExtractor,
            },
        }
    return {**ppo, "policy": "MultiInputPolicy", "policy_kwargs": {"net_arch": {"pi": [64], "vf": [64]}}}


def model_kwargs(agent: str, num_steps: int, n_envs: int, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The defaults updated with ``overrides`` (``config.agent_kwargs``); ``policy_kwargs`` merges key by key."""
    kwargs = default_hyperparameters(agent, num_steps, n_envs)
    overrides = dict(overrides or {})
    if "policy_kwargs" in overrides:
        kwargs["policy_kwargs"] = {**kwargs.get("policy_kwargs", {}), **(overrides.pop("policy_kwargs") or {})}
    kwargs.update(overrides)
    return kwargs


def make_model(
    agent: str, env: SB3VecEnv, seed: int = 0, overrides: dict[str, Any] | None = None
) -> BaseAlgorithm:
    """A fresh SB3 model of ``agent`` on ``env`` with :func:`model_kwargs`."""
    kwargs = model_kwargs(agent, env.space.num_steps, env.num_envs, overrides)
    policy = kwargs.pop("policy")
    return algorithm_class(agent)(policy, env, seed=seed, **kwargs)


def save_model(model: BaseAlgorithm, path: Path) -> None:
    """Save atomically: a killed driver leaves the previous model, never half a zip."""
    tmp = path.with_name(path.stem + ".tmp.zip")
    model.save(tmp)
    os.replace(tmp, path)


def load_model(agent: str, path: Path, env: SB3VecEnv, seed: int) -> BaseAlgorithm:
    """Load a saved model onto ``env`` (its ``n_envs`` may differ from the saved run's), reseeded with ``seed``
    so that a resumed run does not replay the first session's random stream."""
    model = algorithm_class(agent).load(path, env=env, device="cpu")
    model.set_random_seed(seed)
    return model


def _sb3_logger(folder: Path) -> Any:
    """SB3's own logger (train/ and rollout/ metrics) into TensorBoard when installed, else nowhere."""
    formats = ["tensorboard"] if importlib.util.find_spec("tensorboard") is not None else []
    return configure(str(folder), formats)


# ---------------------------------------------------------------------------------------------- callback
class BudgetCallback(BaseCallback):
    """Stops ``learn()`` on the step at which the architecture budget (or the time budget) is spent, and saves
    the model after every policy update (at the start of each rollout) when new evaluations were told."""

    def __init__(self, core: SearchCore, model_path: Path) -> None:
        super().__init__(verbose=0)
        self.core = core
        self.model_path = model_path
        self.stopped = False
        self._saved_at_told = core.num_told()

    def _on_step(self) -> bool:
        if self.core.remaining() <= 0:
            self.stopped = True
            return False
        return True

    def _on_rollout_start(self) -> None:
        told = self.core.num_told()
        if told > self._saved_at_told:
            save_model(self.model, self.model_path)
            self._saved_at_told = told


# ---------------------------------------------------------------------------------------------- the search
def check_sb3_config(config: SearchConfig) -> None:
    """What an SB3 search cannot do, refused before anything starts."""
    if config.agent not in SB3_AGENTS:
        raise ValueError(f"run_sb3_search runs the SB3 agents {list(SB3_AGENTS)}, not {config.agent!r}")
    if config.curriculum:
        raise ValueError(
            "the depth curriculum changes the observation and action spaces mid-run, which SB3 models cannot "
            "follow; use --agent reinforce for a curriculum"
        )


def _learn(model: BaseAlgorithm, callback: BudgetCallback, core: SearchCore, num_steps: int) -> None:
    """``learn()`` until the callback stops it. ``total_timesteps`` only has to be large enough: the budget
    counts architectures; it is recomputed if the policy ever ran out of steps first."""
    n_envs = model.n_envs
    rollout = int(getattr(model, "n_steps", num_steps)) * n_envs
    while not callback.stopped and core.remaining() > 0:
        remaining = min(core.remaining(), 1 << 30)
        model.learn(
            total_timesteps=(remaining + n_envs) * num_steps + rollout,
            callback=callback,
            reset_num_timesteps=False,
            log_interval=1,
        )


def make_vec_env_for(core: SearchCore) -> SB3VecEnv:
    """``max(1, max_in_flight)`` lock-step episodes (one per child the executor may run at once) whose
    completed architectures are evaluated through ``core``."""
    n_envs = max(1, int(core.executor_config.max_in_flight))
    venv = NASVectorEnv(core.space, core.evaluator, num_envs=n_envs, invalid_action=core.env.invalid_action,
                        batch_evaluator=core.evaluate_batch)  # fmt: skip
    vec_env = SB3VecEnv(venv)
    vec_env.seed(core.config.seed)
    return vec_env


class SB3Search:
    """An SB3 agent's search over one run directory: the same shape as :class:`agents.search.Search`
    (every setup check in the constructor, :meth:`run`, :meth:`close`)."""

    def __init__(self, run_dir: str | Path, config: SearchConfig | None = None, progress: bool = False) -> None:
        check_sb3_config(config if config is not None else RunDir(run_dir).read_config())
        self.core = SearchCore(run_dir, config, progress=progress)
        self.config = self.core.config

    def run(self) -> SearchSummary:
        """Train the policy until ``config.budget`` architectures are evaluated.

        A fresh run directory gets a new model; one holding ``sb3_model.zip`` gets that model back and the
        count continues from its store (proposals an earlier driver left in flight are settled first, without
        evaluating anything twice: the policy that asked for them is gone, so they count toward the budget).
        """
        core = self.core
        core.resume()
        core.drain()
        vec_env = make_vec_env_for(core)
        model_path = core.run.path / MODEL_FILE
        agent = core.config.agent
        if model_path.exists():
            model = load_model(agent, model_path, vec_env, core.config.seed + core.num_told())
        else:
            model = make_model(agent, vec_env, core.config.seed, core.config.agent_kwargs)
        model.set_logger(_sb3_logger(core.run.tensorboard_path / f"sb3-{agent}"))
        callback = BudgetCallback(core, model_path)
        if core.remaining() > 0:
            _learn(model, callback, core, vec_env.space.num_steps)
        save_model(model, model_path)
        return core.summary()

    def close(self) -> None:
        self.core.close()


def run_sb3_search(run_dir: str | Path, config: SearchConfig | None = None, progress: bool = True) -> SearchSummary:
    """Run (or resume) an SB3 search in ``run_dir`` until ``config.budget`` architectures are evaluated."""
    search = SB3Search(run_dir, config, progress=progress)
    try:
        return search.run()
    finally:
        search.close()
