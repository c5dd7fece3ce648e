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

INVALID_ACTIONS = ("wrap", "error")
RENDER_MODES = ["ansi", "rgb_array"]


def observation_space(space: SearchSpace) -> spaces.Dict:
    """``Dict(tokens=MultiDiscrete([max_choices + 1] * T), step=Discrete(T + 1))`` of a search space."""
    num_steps, max_choices = space.num_steps, space.max_choices
    return spaces.Dict(
        {
            "tokens": spaces.MultiDiscrete(np.full(num_steps, max_choices + 1, dtype=np.int64)),
            "step": spaces.Discrete(num_steps + 1),
        }
    )


class TokenEpisode:
    """The tokens chosen so far in one episode: checking an action, the observation, the mask, the info.

    Shared by :class:`NASEnv` and :class:`~nas_env.vector_env.NASVectorEnv`, so one architecture is built
    the same way whichever face chose its tokens.
    """

    def __init__(self, space: SearchSpace, invalid_action: str = "wrap") -> None:
        if invalid_action not in INVALID_ACTIONS:
            raise ValueError(f"invalid_action must be 'error' or 'wrap', got {invalid_action!r}")
        self.space = space
        self.invalid_action = invalid_action
        self.tokens: list[int] = []

    def reset(self) -> None:
        self.tokens = []

    @property
    def complete(self) -> bool:
        return len(self.tokens) == self.space.num_steps

    def apply(self, action: Any, action_space: spaces.Discrete) -> bool:
        """Check and record one action; True when the architecture is complete."""
        step = len(self.tokens)
        if not action_space.contains(action):
            raise InvalidTokenError(
                f"action {action!r} is not in the action space Discrete({self.space.max_choices}) "
                f"(step {step}, {self.space.decisions[step].name})"
            )
        token = int(action)
        num_choices = self.space.decisions[step].num_choices
        if token >= num_choices:
            if self.invalid_action == "wrap":
                token %= num_choices
            else:
                self.space.check_token(step, token)  # raises with the step, decision and choices
        self.tokens.append(token)
        return self.complete

    def architecture(self) -> Architecture:
        """The architecture the chosen tokens describe (all tokens must be chosen)."""
        return self.space.decode(self.tokens)

    def observation(self) -> dict[str, Any]:
        tokens = np.zeros(self.space.num_steps, dtype=np.int64)
        tokens[: len(self.tokens)] = np.asarray(self.tokens, dtype=np.int64) + 1
        return {"tokens": tokens, "step": len(self.tokens)}

    def action_mask(self) -> np.ndarray:
        """Valid actions at the current step (all True once the architecture is complete)."""
        if self.complete:
            return np.ones(self.space.max_choices, dtype=bool)
        return self.space.action_mask(len(self.tokens))

    def step_info(self) -> dict[str, Any]:
        step = len(self.tokens)
        decision = self.space.decisions[step].name if step < self.space.num_steps else None
        return {"decision": decision, "action_mask": self.action_mask()}

    def terminal_info(self, arch: Architecture, result: EvalResult, cached: bool) -> dict[str, Any]:
        """The documented keys of the terminal step's info."""
        return {
            **self.step_info(),
            "architecture": arch,
            "arch_key": self.space.key(arch),
            "result": result,
            "cached": cached,
        }

    def lines(self, result: EvalResult | None = None) -> list[str]:
        """The chosen decisions as ``name = value`` lines (and the result, once there is one)."""
        names = [d.name for d in self.space.decisions]
        lines = [f"{names[i]} = {self.space.decisions[i].choices[t]}" for i, t in enumerate(self.tokens)]
        if result is not None:
            lines.append(f"-> {result.status}: reward {result.reward:.4g}")
        return lines


def render_episode(episode: TokenEpisode, render_mode: str | None, result: EvalResult | None = None) -> Any:
    """``ansi``: the chosen decisions as text; ``rgb_array``: the architecture chosen so far drawn (partial
    ones too) in a frame of :data:`nas_env.render.FRAME_SHAPE`; otherwise None."""
    if render_mode == "rgb_array":
        from nas_env.render import architecture_image

        step = len(episode.tokens)
        caption = [f"{step}/{episode.space.num_steps} decisions"
                   + (f", next: {episode.space.decisions[step].name}" if step < episode.space.num_steps else "")]
        if result is not None:
            caption.append(f"-> {result.status}: reward {result.reward:.4g}")
        return architecture_image(episode.space, episode.tokens, caption)
    if render_mode == "ansi":
        return "\n".join(episode.lines(result))
    return None


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
    :class:`~nas_env.results.EvalResult`) and ``cached`` (always False here: the environment keeps no
    results; the vector env sets it when a search core answered a repeat from its store).

    A :class:`~nas_env.errors.SetupError` (missing or corrupt dataset, a device that is not there) raised by
    the evaluator is raised by ``step``: it is not the architecture's fault and would fail every child alike.
    Any other failure of the child (divergence, out of memory, an exception) is a result with that status and
    the evaluator's ``failure_reward``.

    ## Arguments
    - ``space``: the :class:`~nas_env.spaces.SearchSpace`.
    - ``evaluator``: the :class:`~nas_env.evaluators.Evaluator` scoring a finished architecture.
    - ``invalid_action``: ``"wrap"`` (default) or ``"error"`` (see Action Space).
    - ``render_mode``: ``None``, ``"ansi"`` (the chosen decisions as text) or ``"rgb_array"`` (the architecture
      chosen so far drawn as an ``(H, W, 3)`` uint8 image of the fixed shape ``nas_env.render.FRAME_SHAPE``,
      for ``RecordVideo`` and SB3's ``make_vec_env``; needs matplotlib).

    The environment holds a space and an evaluator and nothing else: it always pickles and deep-copies.
    Caching results and writing them to a store belong to the search core (:mod:`agents.core`).

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
    ``gym.make_vec(id, num_envs=n)`` gives :class:`~nas_env.vector_env.NASVectorEnv`, which steps ``n``
    episodes in lock-step and hands the architectures completed on one step to its ``batch_evaluator`` as one
    batch (by default evaluated here one after another; a search core sends them to the dispatcher as one job
    array). ``vectorization_mode="sync"`` / ``"async"`` build ordinary Gymnasium vector envs of copies.
    """

    metadata = {"render_modes": RENDER_MODES, "render_fps": 4}

    def __init__(
        self,
        space: SearchSpace,
        evaluator: Evaluator,
        invalid_action: str = "wrap",
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {RENDER_MODES} or None, got {render_mode!r}")
        self.space = space
        self.evaluator = evaluator
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(space.max_choices)
        self.observation_space = observation_space(space)
        self._episode = TokenEpisode(space, invalid_action)
        self._started = False
        self._done = False
        self._warned_after_done = False
        self.last_result: EvalResult | None = None
        self.last_architecture: Architecture | None = None

    @property
    def invalid_action(self) -> str:
        return self._episode.invalid_action

    @property
    def tokens(self) -> tuple[int, ...]:
        """The tokens chosen so far in this episode."""
        return tuple(self._episode.tokens)

    # ------------------------------------------------------------------ Gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self._episode.reset()
        self._started, self._done, self._warned_after_done = True, False, False
        self.last_result = self.last_architecture = None
        return self._episode.observation(), self._episode.step_info()

    def step(self, action: Any) -> tuple[dict, SupportsFloat, bool, bool, dict]:
        if not self._started:
            raise gym.error.ResetNeeded("Cannot call step() before reset()")
        if self._done:
            if not self._warned_after_done:
                warnings.warn("step() called after the episode terminated; call reset(). Returning reward 0.")
                self._warned_after_done = True
            return self._episode.observation(), 0.0, True, False, {}
        if not self._episode.apply(action, self.action_space):
            return self._episode.observation(), 0.0, False, False, self._episode.step_info()
        arch = self._episode.architecture()
        result = safe_evaluate(self.evaluator, arch)  # a SetupError raises; a failing child is a result
        self._done = True
        self.last_result, self.last_architecture = result, arch
        info = self._episode.terminal_info(arch, result, cached=False)
        return self._episode.observation(), float(result.reward), True, False, info

    def action_masks(self) -> np.ndarray:
        """Valid actions at the current step (all True before reset and once the episode is over)."""
        if not self._started:
            return np.ones(self.space.max_choices, dtype=bool)
        return self._episode.action_mask()

    def render(self) -> Any:
        """``ansi``: the decisions chosen so far (and the result once terminated); ``rgb_array``: the
        architecture chosen so far, drawn."""
        return render_episode(self._episode, self.render_mode, self.last_result if self._done else None)
