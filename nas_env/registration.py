"""Factories behind the registered environment ids; ``import nas_env`` registers them with Gymnasium."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym

from nas_env.config_dicts import check_kwargs
from nas_env.cost import with_cost
from nas_env.env import NASEnv
from nas_env.evaluators import Evaluator
from nas_env.spaces.cnn import CNNSpace, cnn_preset
from nas_env.vector_env import BatchEvaluator, NASVectorEnv

CIFAR10_ID = "NAS-CIFAR10-v0"
NB201_ID = "NAS-Bench-201-v0"
SYNTHETIC_ID = "NAS-Synthetic-v0"
PTB_ID = "NAS-PTB-v0"


def _cnn_space(
    space: CNNSpace | dict[str, Any] | None, num_layers: int, predict_strides: bool, preset: str | None = None
) -> CNNSpace:
    if preset is not None:
        if space is not None:
            raise ValueError("give a preset or a space, not both")
        return cnn_preset(preset).space()
    if isinstance(space, CNNSpace):
        return space
    if space is None:
        return CNNSpace(num_layers=num_layers, predict_strides=predict_strides)
    if isinstance(space, dict):
        return CNNSpace(**space)
    raise TypeError(f"space must be a CNNSpace or a dict of its arguments, got {type(space).__name__}")


def make_cifar10_env(
    space: CNNSpace | dict[str, Any] | None = None,
    recipe: Any = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    reward_shaping: str = "cube",
    num_layers: int = 6,
    predict_strides: bool = False,
    compile: bool = False,
    failure_reward: float = 0.0,
    invalid_action: str = "wrap",
    evaluator: Evaluator | None = None,
    render_mode: str | None = None,
    preset: str | None = None,
    cost: dict[str, Any] | None = None,
) -> NASEnv:
    """``NAS-CIFAR10-v0``: the paper's CNN space; the terminal step trains the child on CIFAR-10.

    ``recipe`` (how each child is trained) is a :class:`~nas_env.training.TrainingRecipe`, a dict of its
    fields, or a preset name (``"paper"``: 50 epochs on 45,000 images at 32x32; ``"cpu-demo"``, ``"tiny"``:
    see :data:`nas_env.evaluators.RECIPE_PRESETS`). ``data_dir`` overrides ``NAS_DATA_DIR``; without either
    the official archive is downloaded and verified on first use.

    ``preset`` (``"v1"``, ``"v2"``, ``"v3"``: the paper's Table 1 spaces, see ``docs/presets.md``) replaces
    ``space``/``num_layers``/``predict_strides`` and gives the recipe when ``recipe`` is not given (default:
    ``"paper"``). ``cost`` folds params or FLOPs into the reward (a hard ``limit``, or MnasNet's soft
    ``target`` and ``w``; see :mod:`nas_env.cost`), e.g. ``cost={"metric": "params", "limit": 1e6}``.
    """
    from nas_env.evaluators import TrainingEvaluator

    cnn_space = _cnn_space(space, num_layers, predict_strides, preset)
    if recipe is None:
        recipe = cnn_preset(preset).recipe if preset is not None else "paper"
    if evaluator is None:
        evaluator = TrainingEvaluator(
            recipe=recipe,
            data_dir=data_dir,
            device=device,
            seed=seed,
            reward_shaping=reward_shaping,
            compile=compile,
            failure_reward=failure_reward,
        )
    return NASEnv(cnn_space, with_cost(evaluator, cost), invalid_action=invalid_action, render_mode=render_mode)


def make_nb201_env(
    dataset: str = "cifar10-valid",
    fidelity: int = 200,
    reward_shaping: str = "identity",
    invalid_action: str = "wrap",
    render_mode: str | None = None,
    cost: dict[str, Any] | None = None,
) -> NASEnv:
    """``NAS-Bench-201-v0``: the 6-edge cell space; the reward is looked up in the packaged table.
    ``cost``: the table's params or FLOPs in the reward (see :mod:`nas_env.cost`)."""
    from nas_env.spaces.nb201 import NB201Space
    from nas_env.tabular import TabularEvaluator

    evaluator = with_cost(TabularEvaluator(dataset=dataset, fidelity=fidelity, reward_shaping=reward_shaping), cost)
    return NASEnv(NB201Space(), evaluator, invalid_action=invalid_action, render_mode=render_mode)


def make_synthetic_env(
    space: CNNSpace | dict[str, Any] | None = None,
    num_layers: int = 6,
    predict_strides: bool = False,
    target_seed: int = 0,
    epochs: int = 1,
    seconds_per_epoch: float = 0.0,
    log_path: str | None = None,
    invalid_action: str = "wrap",
    render_mode: str | None = None,
    preset: str | None = None,
    cost: dict[str, Any] | None = None,
) -> NASEnv:
    """``NAS-Synthetic-v0``: the CNN token space with a free, exactly known reward (fraction of
    decisions equal to a hidden target architecture); for testing agents and dispatchers.
    ``epochs`` x ``seconds_per_epoch`` make each evaluation take time like a real child would.
    ``preset``: one of the paper's spaces (as for ``NAS-CIFAR10-v0``); ``cost``: the child's params or FLOPs
    in the reward (see :mod:`nas_env.cost`)."""
    from nas_env.evaluators import SyntheticEvaluator

    cnn_space = _cnn_space(space, num_layers, predict_strides, preset)
    evaluator = SyntheticEvaluator(
        cnn_space, target_seed=target_seed, epochs=epochs, seconds_per_epoch=seconds_per_epoch, log_path=log_path
    )
    return NASEnv(cnn_space, with_cost(evaluator, cost), invalid_action=invalid_action, render_mode=render_mode)


def make_ptb_env(
    num_leaves: int = 8,
    recipe: Any = "paper",
    data_dir: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    reward_c: float = 80.0,
    failure_reward: float = 0.0,
    invalid_action: str = "wrap",
    evaluator: Evaluator | None = None,
    render_mode: str | None = None,
    cost: dict[str, Any] | None = None,
) -> NASEnv:
    """``NAS-PTB-v0``: the paper's recurrent-cell space (a tree of ``num_leaves`` leaves, "base 8");
    the terminal step trains a word-level language model around the cell on Penn Treebank, and the
    reward is ``reward_c / (validation perplexity)^2`` (the paper: c = 80).

    ``recipe`` is a :class:`~nas_env.lm_training.LMRecipe`, a dict of its fields or a preset name
    (``"paper"``: 35 epochs; ``"cpu-demo"``, ``"tiny"``: see :data:`nas_env.ptb_evaluator.LM_RECIPE_PRESETS`).
    ``data_dir`` overrides ``NAS_DATA_DIR``; without either the official archive is downloaded and its
    files verified on first use. ``cost``: the language model's parameter count in the reward (a hard
    ``limit`` or a soft ``target``; see :mod:`nas_env.cost`; FLOPs are not counted for PTB).
    """
    from nas_env.ptb_evaluator import PTBEvaluator
    from nas_env.spaces.rnn_cell import RNNCellSpace

    if evaluator is None:
        evaluator = PTBEvaluator(recipe=recipe, data_dir=data_dir, device=device, seed=seed, reward_c=reward_c,
                                 failure_reward=failure_reward)  # fmt: skip
    space = RNNCellSpace(num_leaves=num_leaves)
    return NASEnv(space, with_cost(evaluator, cost), invalid_action=invalid_action, render_mode=render_mode)


#: id -> factory of one NASEnv; ``gym.make(id, **kwargs)`` calls it after checking the kwargs
FACTORIES: dict[str, Callable[..., NASEnv]] = {
    CIFAR10_ID: make_cifar10_env,
    NB201_ID: make_nb201_env,
    SYNTHETIC_ID: make_synthetic_env,
    PTB_ID: make_ptb_env,
}


def make_env(env_id: str, **kwargs: Any) -> NASEnv:
    """The ``NASEnv`` of ``env_id``; an unknown or ill-typed keyword is one error line naming it."""
    factory = FACTORIES[env_id]
    check_kwargs(factory, kwargs, env_id)
    return factory(**kwargs)


def make_vector_env(
    env_id: str, num_envs: int = 1, batch_evaluator: BatchEvaluator | None = None, **kwargs: Any
) -> NASVectorEnv:
    """``gym.make_vec(env_id, num_envs=n, **kwargs)``: one space and evaluator for ``n`` lock-step episodes."""
    env = make_env(env_id, **kwargs)
    return NASVectorEnv(env.space, env.evaluator, num_envs=num_envs, invalid_action=env.invalid_action,
                        render_mode=env.render_mode, batch_evaluator=batch_evaluator)  # fmt: skip


def register_envs() -> None:
    """Register the ids with their single and vector entry points (idempotent)."""
    for env_id in FACTORIES:
        if env_id not in gym.registry:
            gym.register(
                id=env_id,
                entry_point=functools.partial(make_env, env_id),
                vector_entry_point=functools.partial(make_vector_env, env_id),
                disable_env_checker=False,
            )
