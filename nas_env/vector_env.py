"""``NASVectorEnv``: ``n`` architecture-design episodes in lock-step, their terminal steps evaluated as one batch.

``gym.make_vec("NAS-Bench-201-v0", num_envs=8)`` returns one (through the ids' ``vector_entry_point``).
Why not ``SyncVectorEnv``: there every terminal step trains its child on its own, one after another, so ``n``
envs finishing together cost ``n`` serial trainings. Here the architectures completed on one ``step`` go to
``batch_evaluator`` in one call: by default they are evaluated in this process one after another (the same
results as ``n`` single envs), and a search core (:mod:`agents.core`) passes one that answers repeats from its
store and sends the rest to the dispatcher as one job array.

Autoreset is Gymnasium's ``SAME_STEP`` mode (also what SB3 expects): a terminated env returns the first
observation of its next episode, and ``info["final_obs"]`` / ``info["final_info"]`` hold the terminal ones.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from nas_env.env import RENDER_MODES, TokenEpisode, observation_space, render_episode
from nas_env.evaluators import Evaluator, safe_evaluate
from nas_env.results import EvalResult
from nas_env.spaces.base import Architecture, SearchSpace

#: ``(space, [(tokens, architecture), ...]) -> [(result, cached), ...]``, one entry per architecture, in order
BatchEvaluator = Callable[[SearchSpace, Sequence[tuple[tuple[int, ...], Architecture]]], list[tuple[EvalResult, bool]]]

#: one env's step: (observation, reward, terminated, truncated, info), as a single ``NASEnv`` returns it
EnvStep = tuple[dict[str, Any], float, bool, bool, dict[str, Any]]


def evaluate_in_process(evaluator: Evaluator) -> BatchEvaluator:
    """The default batch evaluator: each architecture evaluated here, in order (a SetupError raises)."""

    def evaluate(space: SearchSpace, items: Sequence[tuple[tuple[int, ...], Architecture]]) -> list[tuple[EvalResult, bool]]:
        return [(safe_evaluate(evaluator, arch), False) for _, arch in items]

    return evaluate


class NASVectorEnv(VectorEnv):
    """``num_envs`` copies of :class:`~nas_env.env.NASEnv` over one space and one evaluator; see the module doc.

    Observations, actions, rewards and the terminal ``info`` keys are those of ``NASEnv``. Besides the
    Gymnasium API, :meth:`step_each` returns one ``NASEnv``-style step per env (what adapters to other vector
    APIs, such as SB3's, consume) and :meth:`action_masks` one mask row per env (MaskablePPO).
    """

    metadata = {"render_modes": RENDER_MODES, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        space: SearchSpace,
        evaluator: Evaluator,
        num_envs: int = 1,
        invalid_action: str = "wrap",
        render_mode: str | None = None,
        batch_evaluator: BatchEvaluator | None = None,
    ) -> None:
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {RENDER_MODES} or None, got {render_mode!r}")
        self.space = space
        self.evaluator = evaluator
        self.num_envs = int(num_envs)
        self.render_mode = render_mode
        self.batch_evaluator: BatchEvaluator = batch_evaluator or evaluate_in_process(evaluator)
        self.single_action_space = spaces.Discrete(space.max_choices)
        self.single_observation_space = observation_space(space)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.episodes = [TokenEpisode(space, invalid_action) for _ in range(self.num_envs)]
        self._observations = create_empty_array(self.single_observation_space, n=self.num_envs, fn=np.zeros)
        self._started = False
        #: batch calls made so far (one per step on which at least one architecture was completed)
        self.batch_calls = 0

    # ------------------------------------------------------------------ Gymnasium VectorEnv API
    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed if isinstance(seed, int) or seed is None else seed[0])
        for episode in self.episodes:
            episode.reset()
        self._started = True
        infos: dict[str, Any] = {}
        for i, episode in enumerate(self.episodes):
            infos = self._add_info(infos, episode.step_info(), i)
        return self._batch([e.observation() for e in self.episodes]), infos

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        steps = self.step_each(actions)
        infos: dict[str, Any] = {}
        for i, (_, _, _, _, info) in enumerate(steps):
            infos = self._add_info(infos, info, i)
        return (
            self._batch([s[0] for s in steps]),
            np.array([s[1] for s in steps], dtype=np.float64),
            np.array([s[2] for s in steps], dtype=bool),
            np.array([s[3] for s in steps], dtype=bool),
            infos,
        )

    def render(self) -> tuple[Any, ...] | None:
        if self.render_mode is None:
            return None
        return tuple(render_episode(e, self.render_mode) for e in self.episodes)

    # ------------------------------------------------------------------ per-env steps
    def step_each(self, actions: Any) -> list[EnvStep]:
        """Apply one action per env; evaluate the completed architectures as one batch; auto-reset them.

        A terminal env's step holds the first observation of its next episode, with ``final_obs`` and
        ``final_info`` (the terminal observation and ``NASEnv``'s terminal info) in its info.
        """
        if not self._started:
            raise gym.error.ResetNeeded("Cannot call step() before reset()")
        actions = np.asarray(actions).reshape(self.num_envs)
        steps: list[EnvStep | None] = [None] * self.num_envs
        complete: list[int] = []
        for i, (episode, action) in enumerate(zip(self.episodes, actions)):
            if episode.apply(action.item(), self.single_action_space):
                complete.append(i)
            else:
                steps[i] = (episode.observation(), 0.0, False, False, episode.step_info())
        if complete:
            archs = [self.episodes[i].architecture() for i in complete]
            items = [(tuple(self.episodes[i].tokens), arch) for i, arch in zip(complete, archs)]
            outcomes = self.batch_evaluator(self.space, items)
            self.batch_calls += 1
            if len(outcomes) != len(items):
                raise RuntimeError(f"the batch evaluator returned {len(outcomes)} results for {len(items)} architectures")
            for i, arch, (result, cached) in zip(complete, archs, outcomes):
                episode = self.episodes[i]
                final_obs, final_info = episode.observation(), episode.terminal_info(arch, result, cached)
                episode.reset()
                info = {**episode.step_info(), "final_obs": final_obs, "final_info": final_info}
                steps[i] = (episode.observation(), float(result.reward), True, False, info)
        return [s for s in steps if s is not None]

    def action_masks(self) -> np.ndarray:
        """``(num_envs, max_choices)`` boolean masks of the valid tokens of each env's current decision."""
        return np.stack([episode.action_mask() for episode in self.episodes])

    def _batch(self, observations: list[dict[str, Any]]) -> Any:
        self._observations = concatenate(self.single_observation_space, observations, self._observations)
        return {k: np.copy(v) for k, v in self._observations.items()}
