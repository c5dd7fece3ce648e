"""How the CIFAR-10 reward reads a child's validation curve: the paper's max of the last 5 epochs, or a preset's
own reading (cpu-demo: the mean of its last 3), the same through the evaluator, ``gym.make`` and the CLI."""

from __future__ import annotations

import gymnasium as gym
import pytest

import nas_env  # noqa: F401  (registers the environments)
from nas_cli.main import build_parser
from nas_cli.search import _env_kwargs
from nas_env.evaluators import TrainingEvaluator, reward_reading
from nas_env.results import Status
from nas_env.training import TrainingOutcome


def test_the_paper_reads_the_max_of_the_last_five_and_cpu_demo_the_mean_of_its_last_three() -> None:
    assert reward_reading("paper", None, None) == (5, "max")
    assert reward_reading("cpu-demo", None, None) == (3, "mean")
    assert reward_reading({"epochs": 8}, None, None) == (5, "max")  # fields, not a preset: the paper's
    assert reward_reading("cpu-demo", 2, None) == (2, "mean") and reward_reading("cpu-demo", None, "max") == (3, "max")
    with pytest.raises(ValueError, match="reward_reduction must be 'max' or 'mean', got 'median'"):
        reward_reading("paper", None, "median")
    with pytest.raises(ValueError, match="reward_last_epochs must be an int >= 1, got 0"):
        reward_reading("paper", 0, None)


def test_an_outcome_reads_its_curve_either_way() -> None:
    outcome = TrainingOutcome(status=Status.OK, val_curve=(0.2, 0.5, 0.3, 0.4), epochs_done=4)
    assert outcome.recent_accuracy(3, "max") == outcome.max_recent_accuracy(3) == 0.5
    assert outcome.recent_accuracy(2, "mean") == pytest.approx(0.35)
    assert TrainingOutcome(status=Status.OK, val_curve=(), epochs_done=0).recent_accuracy(3, "mean") is None


def test_the_reading_is_part_of_the_evaluator_identity_only_when_it_is_not_the_papers() -> None:
    paper = TrainingEvaluator(recipe="paper", download=False)
    assert "reward_reduction" not in paper.config()  # stores written before the option keep their fingerprint
    demo = TrainingEvaluator(recipe="cpu-demo", download=False)
    assert demo.config()["reward_reduction"] == "mean" and demo.config()["reward_last_epochs"] == 3
    assert demo.fingerprint() != TrainingEvaluator(recipe="cpu-demo", reward_reduction="max", download=False).fingerprint()


def test_gym_make_and_the_cli_pass_the_reading_on() -> None:
    env = gym.make("NAS-CIFAR10-v0", recipe="cpu-demo", reward_last_epochs=4, reward_reduction="max")
    evaluator = env.unwrapped.evaluator
    assert (evaluator.reward_last_epochs, evaluator.reward_reduction) == (4, "max")
    env.close()
    with pytest.raises(ValueError, match="reward_reduction"):
        gym.make("NAS-CIFAR10-v0", recipe="cpu-demo", reward_reduction="median")

    parser = build_parser()
    changed = _env_kwargs(parser.parse_args(["search", "--env", "NAS-CIFAR10-v0", "--recipe", "cpu-demo", "--epochs", "4"]))
    assert changed["recipe"]["epochs"] == 4  # the preset's fields, changed
    assert (changed["reward_last_epochs"], changed["reward_reduction"]) == (3, "mean")  # and its reading kept
    given = _env_kwargs(parser.parse_args(["search", "--env", "NAS-CIFAR10-v0", "--recipe", "cpu-demo", "--epochs", "4",
                                           "--env-kwargs", '{"reward_reduction": "max"}']))  # fmt: skip
    assert given["reward_reduction"] == "max"
