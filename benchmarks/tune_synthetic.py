"""REINFORCE settings on NAS-Synthetic-v0's reward without the search core: the agent is asked and told directly,
with ``--in-flight`` proposals outstanding (the oldest told first, as the inline executor of
``bench_sb3_vs_reinforce.py`` does with ``max_in_flight``), so a sweep costs the controller's time only.

Reported per setting, mean ± std over seeds: the best reward in ``--budget`` architectures and the mean reward of
the last 100 (how good the policy is at the end). Random search is the reference row: when it runs first, every
later row also gets the difference of its last-100 mean to random search's (Welch, 95% CI, p). Tune on seeds 1000+; the
reported comparison is ``bench_sb3_vs_reinforce.py`` (real run directories) on seeds 0..2.

    python benchmarks/tune_synthetic.py --seeds 1000 1001 1002 --settings tuned heads heads-norepeat
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import time
from typing import Any

import torch

from agents.registry import make_agent
from evaluation.stats import welch_difference
from nas_env.evaluators import SyntheticEvaluator
from nas_env.spaces import CNNSpace

TUNED_NB201 = {"lr": 0.02, "batch_size": 1, "baseline_decay": 0.9, "entropy_coef": 0.01, "grad_clip": 1.0}
HEADS = {**TUNED_NB201, "per_decision_heads": True}
#: label -> (agent, agent_kwargs)
SETTINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "random": ("random", {}),
    "paper": ("reinforce", {}),
    "reinforce-tuned": ("reinforce-tuned", {}),
    "reinforce-ppo": ("reinforce-ppo", {}),
    "tuned": ("reinforce", TUNED_NB201),
    "heads": ("reinforce", HEADS),
    "heads-norepeat": ("reinforce", {**HEADS, "no_repeat": True}),
    "heads-advnorm-lr0.005": ("reinforce", {**HEADS, "advantage_norm": True, "lr": 0.005}),
    "heads-advnorm-lr0.01": ("reinforce", {**HEADS, "advantage_norm": True, "lr": 0.01}),
    "heads-ppo-m8": ("reinforce", {**HEADS, "advantage_norm": True, "lr": 0.005, "batch_size": 8, "ppo_clip": 0.2,
                                   "ppo_epochs": 4}),
    "heads-importance2": ("reinforce", {**HEADS, "importance_clip": 2.0}),
    "heads-entsched": ("reinforce", {**HEADS, "entropy_coef": 0.02, "entropy_coef_end": 0.0,
                                     "schedule_evaluations": 1000}),
    "offsets": ("reinforce", {**TUNED_NB201, "decision_offsets": True}),
    "offsets-norepeat-tanh1.5": ("reinforce", {**TUNED_NB201, "decision_offsets": True, "no_repeat": True,
                                               "tanh_constant": 1.5}),
    "offsets-ppo-m8": ("reinforce", {**TUNED_NB201, "decision_offsets": True, "advantage_norm": True, "lr": 0.005,
                                     "batch_size": 8, "ppo_clip": 0.2, "ppo_epochs": 4}),
    "paper-heads": ("reinforce", {"per_decision_heads": True}),
    "paper-heads-advnorm": ("reinforce", {"per_decision_heads": True, "advantage_norm": True}),
}


def run(agent_name: str, kwargs: dict[str, Any], seed: int, budget: int, in_flight: int) -> list[float]:
    """Rewards in told order of one search on the default NAS-Synthetic-v0 space and target."""
    space = CNNSpace(num_layers=6)
    evaluator = SyntheticEvaluator(space, target_seed=0)
    agent = make_agent(agent_name, space, seed=seed, **kwargs)
    queue: collections.deque = collections.deque(agent.ask(in_flight))
    rewards: list[float] = []
    while len(rewards) < budget and queue:
        proposal = queue.popleft()
        rewards.append(evaluator.score(proposal.tokens))
        agent.tell(proposal, rewards[-1])
        if len(rewards) + len(queue) < budget:
            queue.extend(agent.ask(1))
    return rewards


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), help=f"labels of {sorted(SETTINGS)}, or "
                        "LABEL=AGENT:JSON for another setting")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1000, 1001, 1002])
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--in-flight", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"NAS-Synthetic-v0 reward, {args.budget} architectures, {args.in_flight} in flight, seeds {args.seeds}")
    print("| setting | best reward | mean of the last 100 | last 100 - random's [95% CI], p | s per run |")
    print("|---|---|---|---|---|")
    random_last: list[float] | None = None
    for label in args.settings:
        if "=" in label:
            label, _, spec = label.partition("=")
            agent_name, _, kwargs_text = spec.partition(":")
            agent_name, kwargs = agent_name, json.loads(kwargs_text or "{}")
        else:
            agent_name, kwargs = SETTINGS[label]
        best, last, seconds = [], [], []
        for seed in args.seeds:
            start = time.perf_counter()
            rewards = run(agent_name, kwargs, seed, args.budget, args.in_flight)
            seconds.append(time.perf_counter() - start)
            best.append(max(rewards))
            last.append(statistics.fmean(rewards[-100:]))
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0  # noqa: E731
        if agent_name == "random" and not kwargs:
            random_last, versus = last, ""
        elif random_last is not None and len(last) > 1:
            versus = welch_difference(last, random_last).text()
        else:
            versus = ""
        print(f"| {label} | {statistics.fmean(best):.3f} ± {sd(best):.3f} | {statistics.fmean(last):.3f} ± "
              f"{sd(last):.3f} | {versus} | {statistics.fmean(seconds):.1f} |", flush=True)


if __name__ == "__main__":
    main()
