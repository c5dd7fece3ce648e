"""SB3's ``VecEnv`` API over :class:`~nas_env.vector_env.NASVectorEnv`, the Gymnasium-native vector env.

The vector env does the work (lock-step episodes; the architectures completed on one step go to its
``batch_evaluator`` as one batch: in a search, :meth:`agents.core.SearchCore.evaluate_batch`, which answers
repeats from the store and sends the rest to the dispatcher as one job array). This adapter only translates:
``step_async`` keeps the actions, ``step_wait`` runs one vector step, and a terminal env's info gets what SB3
expects: ``terminal_observation``, ``TimeLimit.truncated`` and a Monitor-style ``episode`` record (SB3 logs
``rollout/ep_rew_mean`` from it), beside ``NASEnv``'s terminal keys (``architecture``, ``arch_key``,
``result``, ``cached``). :meth:`action_masks` (and ``env_method("action_masks")``) feed MaskablePPO.
"""

from __future__ import annotations

import time
from typing import Any, Iterable, Sequence

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from nas_env.vector_env import NASVectorEnv


class SB3VecEnv(VecEnv):
    """A :class:`NASVectorEnv` seen through Stable-Baselines3's ``VecEnv`` interface (see the module doc)."""

    def __init__(self, venv: NASVectorEnv) -> None:
        self.venv = venv
        self.space = venv.space
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._actions: np.ndarray | None = None
        self._start = time.monotonic()

    # ------------------------------------------------------------------ SB3 VecEnv API
    def reset(self) -> VecEnvObs:
        seed = self._seeds[0] if self._seeds and self._seeds[0] is not None else None
        obs, _ = self.venv.reset(seed=seed)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        steps = self.venv.step_each(self._actions)
        infos: list[dict[str, Any]] = []
        for obs, reward, terminated, truncated, info in steps:
            if terminated or truncated:
                final = info["final_info"]
                info = {
                    **final,
                    "terminal_observation": info["final_obs"],
                    "TimeLimit.truncated": truncated and not terminated,
                    "episode": {"r": reward, "l": self.space.num_steps, "t": time.monotonic() - self._start},
                }
            infos.append(info)
        obs = {key: np.stack([s[0][key] for s in steps]) for key in steps[0][0]}
        rewards = np.array([s[1] for s in steps], dtype=np.float32)
        dones = np.array([s[2] or s[3] for s in steps], dtype=bool)
        return obs, rewards, dones, infos

    def action_masks(self) -> np.ndarray:
        """``(n_envs, max_choices)`` boolean masks of the valid tokens of each env's current decision."""
        return self.venv.action_masks()

    def close(self) -> None:
        self.venv.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.venv, attr_name) for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: VecEnvIndices = None, **kwargs: Any) -> list[Any]:
        if method_name == "action_masks":
            masks = self.venv.action_masks()
            return [masks[i] for i in self._indices(indices)]
        method = getattr(self.venv, method_name)
        return [method(*args, **kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._indices(indices)]

    def _indices(self, indices: VecEnvIndices) -> Sequence[int] | Iterable[int]:
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else indices
