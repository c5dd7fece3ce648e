"""``NASEnv``: architecture design as a Gymnasium episode (one episode = one architecture)."""

from __future__ import annotations

import warnings
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from nas_env.evaluators import Evaluator, safe_evaluate
from nas_env.results import EvalResult
from nas_env.spaces.base import Architecture, InvalidTokenError, SearchSpace
from nas_env.store import ResultStore


class NASEnv(gym.Env):
    """Design a neural network token by token; the last token trains the child and pays its reward.

    ## Description
    The paper's controller (Zoph & Le, ICLR 2017) emits an architecture as a sequence of tokens. Here each
    token is one action: at step ``t`` the agent picks one of the choices of decision ``t`` of the search
    space (``space.decisions[t]``: e.g. ``layer2.filter_height`` with choices (1, 3, 5, 7), or
    ``layer3.skip_from_1`` with choices (0, 1)). After the last decision the architecture is decoded, the
    evaluator trains (or looks up) the child network and its shaped validation accuracy is the reward.

    ## Action Space
    ``Discrete(space.max_choices)``: the index of a choice of the current decision. Decisions with fewer
    choices than ``max_choices`` leave the top indices invalid; ``action_masks()`` gives the valid ones
    (the sb3-contrib MaskablePPO convention). What an invalid index does is set by ``invalid_action``:
    ``"wrap"`` (default) maps it to ``action % num_choices``, a documented, deterministic mapping so
    that agents which cannot mask (plain PPO, A2C, a random policy) still build the network they were
    told; ``"error"`` raises :class:`~nas_env.spaces.InvalidTokenError` naming the step, the decision
    and its valid choices. An action outside ``Discrete(max_choices)`` always raises.

    ## Observation Space
    ``Dict({"tokens": MultiDiscrete([max_choices + 1] * T), "step": Discrete(T + 1)})`` with ``T`` the
    number of decisions:

    | key | index | meaning | min | max |
    |-----|-------|---------|-----|-----|
    | tokens | i | 0 if decision i is not chosen yet, else 1 + the chosen token | 0 | max_choices |
    | step | - | number of tokens chosen so far (the next decision's index) | 0 | T |

    The whole history is in the observation, so a feed-forward policy can condition on it.

    ## Rewards
    0 on every step but the last. On the last step: ``EvalResult.reward`` of the evaluator (for
    ``NAS-CIFAR10-v0`` the paper's (max validation accuracy of the last 5 epochs)^3). A child that
    diverges, runs out of memory or raises gets the evaluator's ``failure_reward`` (default 0).

    ## Starting State
    No tokens chosen, ``step = 0``. ``reset(seed=...)`` seeds ``self.np_random`` (the environment
    itself draws nothing at random; the seed of child training is the evaluator's).

    ## Episode End
    Terminated after ``T`` actions. Never truncated. Stepping after termination warns and returns the
    terminal observation with reward 0.

    ## Info
    Every step: ``decision`` (name of the next decision) and ``action_mask``. The terminal step adds
    ``architecture`` (the decoded :class:`Architecture`), ``arch_key``, ``result`` (the
    :class:`~nas_env.results.EvalResult`) and ``cached`` (True when the store already held it).

    ## Arguments
    - ``space``: the :class:`~nas_env.spaces.SearchSpace`.
    - ``evaluator``: the :class:`~nas_env.evaluators.Evaluator` scoring a finished architecture.
    - ``store``: optional :class:`~nas_env.store.ResultStore` or path; results are written the moment they
      arrive and a repeated architecture is not evaluated again.
    - ``invalid_action``: ``"wrap"`` (default) or ``"error"`` (see Action Space).

    ## Example
    >>> import gymnasium as gym, nas_env
    >>> env = gym.make("NAS-Bench-201-v0")
    >>> obs, info = env.reset(seed=0)
    >>> terminated = False
    >>> while not terminated:
    ...     mask = env.unwrapped.action_masks()
    ...     obs, reward, terminated, truncated, info = env.step(int(np.flatnonzero(mask)[0]))
    >>> info["architecture"]  # doctest: +SKIP

    ## Vectorized environment
    :class:`agents.sb3.BatchedNASVecEnv` steps ``n`` copies and sends the terminal steps of all of them to
    the dispatcher as one batch.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        space: SearchSpace,
        evaluator: Evaluator,
        store: ResultStore | str | None = None,
        invalid_action: str = "wrap",
        render_mode: str | None = None,
    ) -> None:
        if invalid_action not in ("error", "wrap"):
            raise ValueError(f"invalid_action must be 'error' or 'wrap', got {invalid_action!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.space = space
        self.evaluator = evaluator
        self.store = ResultStore(store) if isinstance(store, (str, bytes)) or hasattr(store, "__fspath__") else store
        self.invalid_action = invalid_action
        self.render_mode = render_mode
        num_steps, max_choices = space.num_steps, space.max_choices
        self.action_space = spaces.Discrete(max_choices)
        self.observation_space = spaces.Dict(
            {
                "tokens": spaces.MultiDiscrete(np.full(num_steps, max_choices + 1, dtype=np.int64)),
                "step": spaces.Discrete(num_steps + 1),
            }
        )
        self._tokens: list[int] = []
        self._started = False
        self._done = False
        self._warned_after_done = False
        self.last_result: EvalResult | None = None
        self.last_architecture: Architecture | None = None

    # ------------------------------------------------------------------ Gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self._tokens = []
        self._started, self._done, self._warned_after_done = True, False, False
        return self._obs(), self._step_info()

    def step(self, action: Any) -> tuple[dict, SupportsFloat, bool, bool, dict]:
        if self._done:
            if not self._warned_after_done:
                warnings.warn("step() called after the episode terminated; call reset(). Returning reward 0.")
                self._warned_after_done = True
            return self._obs(), 0.0, True, False, {}
        if not self.apply_token(action):
            return self._obs(), 0.0, False, False, self._step_info()
        arch = self.pending_architecture()
        result, cached = self.evaluate(arch)
        return self.finish(arch, result, cached)

    def action_masks(self) -> np.ndarray:
        """Valid actions at the current step (all True once the episode is over)."""
        if not self._started or len(self._tokens) >= self.space.num_steps:
            return np.ones(self.space.max_choices, dtype=bool)
        return self.space.action_mask(len(self._tokens))

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        names = [d.name for d in self.space.decisions]
        lines = [f"{names[i]} = {self.space.decisions[i].choices[t]}" for i, t in enumerate(self._tokens)]
        if self.last_result is not None and self._done:
            lines.append(f"-> {self.last_result.status}: reward {self.last_result.reward:.4f}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ pieces shared with the vector env
    def apply_token(self, action: Any) -> bool:
        """Check and record one action; True when the architecture is complete."""
        if not self._started:
            raise gym.error.ResetNeeded("Cannot call step() before reset()")
        if self._done:
            raise gym.error.ResetNeeded("the episode is over: call reset() before applying more tokens")
        if not self.action_space.contains(action):
            raise InvalidTokenError(
                f"action {action!r} is not in the action space Discrete({self.space.max_choices}) "
                f"(step {len(self._tokens)}, {self.space.decisions[len(self._tokens)].name})"
            )
        step = len(self._tokens)
        token = int(action)
        num_choices = self.space.decisions[step].num_choices
        if token >= num_choices:
            if self.invalid_action == "wrap":
                token %= num_choices
            else:
                self.space.check_token(step, token)  # raises with the step, decision and choices
        self._tokens.append(token)
        return len(self._tokens) == self.space.num_steps

    def pending_architecture(self) -> Architecture:
        """The architecture the chosen tokens describe (all tokens must be chosen)."""
        return self.space.decode(self._tokens)

    def evaluate(self, arch: Architecture) -> tuple[EvalResult, bool]:
        """Score ``arch`` (from the store when it already holds it); returns (result, cached)."""
        key, fingerprint = self.space.key(arch), self.evaluator.fingerprint()
        if self.store is not None:
            cached = self.store.get_cached(key, fingerprint)
            if cached is not None:
                return cached, True
        result = safe_evaluate(self.evaluator, arch)
        if self.store is not None:
            self.store.put(key, fingerprint, self.space.name, arch.to_json(), result)
        return result, False

    def finish(self, arch: Architecture, result: EvalResult, cached: bool) -> tuple[dict, float, bool, bool, dict]:
        """Close the episode with ``result``: the terminal step's five values."""
        self._done = True
        self.last_result, self.last_architecture = result, arch
        info = {
            **self._step_info(),
            "architecture": arch,
            "arch_key": self.space.key(arch),
            "result": result,
            "cached": cached,
        }
        return self._obs(), float(result.reward), True, False, info

    @property
    def tokens(self) -> tuple[int, ...]:
        return tuple(self._tokens)

    # ------------------------------------------------------------------ helpers
    def _obs(self) -> dict[str, Any]:
        tokens = np.zeros(self.space.num_steps, dtype=np.int64)
        tokens[: len(self._tokens)] = np.asarray(self._tokens, dtype=np.int64) + 1
        return {"tokens": tokens, "step": len(self._tokens)}

    def _step_info(self) -> dict[str, Any]:
        step = len(self._tokens)
        decision = self.space.decisions[step].name if step < self.space.num_steps else None
        return {"decision": decision, "action_mask": self.action_masks()}
