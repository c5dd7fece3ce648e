"""Throughput of the REINFORCE controller on CPU: architectures per second for sampling and for
sample + update, on the paper's 12-layer CNN space (with and without predicted strides).

Sampling is one batched pass over the token steps; the baseline in the same process samples the same
number of architectures one at a time. Run from the repository root:

    python benchmarks/bench_controller.py            # defaults: 12 layers, batches 8 and 100, 1 thread

A second table gives the milliseconds per architecture of ask + tell (sampling and every update) for the
named agents (``reinforce``: the paper's settings, an update every 8; ``reinforce-tuned``: its options and an
update every 4 architectures; ``reinforce-ppo``: 8 clipped steps on every 16), on NAS-Bench-201 and the
paper's CNN space, against random search's ask + tell in the same process (and ``reinforce-tuned`` against itself
without self-imitation, the cost of that option). Its reward favours high tokens, so a policy that learns collapses
and ``no_repeat`` meets its worst case.

A third table times the realistic case: searches on the NAS-Bench-201 table's 12-epoch validation reward (the
benchmark's protocol), CPU milliseconds of ``ask(1)`` and of ``tell`` for architectures 30..129 of seeds 0..4.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import torch

from agents.registry import make_agent
from agents.reinforce import ReinforceAgent
from nas_env.spaces import CNNSpace
from nas_env.spaces.base import SearchSpace
from nas_env.spaces.nb201 import NB201Space
from nas_env.tabular import TabularEvaluator


def rate(work: Callable[[], None], items: int, min_time: float) -> float:
    """Items per second of ``work`` (which handles ``items`` items), repeated for at least ``min_time`` s."""
    work()  # warm-up
    calls, start = 0, time.perf_counter()
    while True:
        work()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return calls * items / elapsed


def bench_space(space: CNNSpace, batch: int, min_time: float) -> dict[str, float]:
    """Batched sampling, one-at-a-time sampling, and ask + tell (one update per batch), in archs/s."""
    agent = ReinforceAgent(space, seed=0, batch_size=batch)
    controller, generator = agent.controller, agent.generator

    def sample_batched() -> None:
        with torch.no_grad():
            controller.sample(batch, space, generator)

    def sample_one_by_one() -> None:
        with torch.no_grad():
            for _ in range(batch):
                controller.sample(1, space, generator)

    def sample_and_update() -> None:
        proposals = agent.ask(batch)
        logs = [agent.tell(p, float(sum(p.tokens)) / len(p.tokens)) for p in proposals]
        assert logs[-1], "the last tell of a batch must update"

    return {
        "batched": rate(sample_batched, batch, min_time),
        "one_by_one": rate(sample_one_by_one, batch, min_time),
        "update": rate(sample_and_update, batch, min_time),
    }


def ms_per_architecture(agent_name: str, space: SearchSpace, ask: int, min_time: float, **kwargs: Any) -> float:
    """Milliseconds per architecture of ``ask(ask)`` + a tell of each (a fixed reward that varies with the tokens),
    in a steady state: the agent first runs 200 architectures so that its policy is no longer uniform."""
    agent = make_agent(agent_name, space, seed=0, **kwargs)

    def step() -> None:
        for proposal in agent.ask(ask):
            agent.tell(proposal, float(sum(proposal.tokens)) / (len(proposal.tokens) * space.max_choices))

    for _ in range(200 // ask):
        step()
    return 1000.0 / rate(step, ask, min_time)


def ms_on_the_nb201_table(
    agent_name: str, seeds: int = 5, skip: int = 30, timed: int = 100
) -> tuple[float, float, int]:
    """CPU milliseconds per architecture of ``ask(1)`` and of ``tell`` in searches on the NB201 table's 12-epoch
    validation reward (architectures ``skip .. skip + timed - 1`` of each seed), and the no-repeat fallbacks."""
    space, evaluator = NB201Space(), TabularEvaluator(dataset="cifar10-valid", fidelity=12)
    ask_s = tell_s = 0.0
    fallbacks = 0
    for seed in range(seeds):
        agent = make_agent(agent_name, space, seed=seed)
        for i in range(skip + timed):
            start = time.process_time()
            proposal = agent.ask(1)[0]
            asked = time.process_time()
            reward = evaluator.evaluate(proposal.arch).reward  # the lookup is not the agent's time
            told = time.process_time()
            agent.tell(proposal, reward)
            if i >= skip:
                ask_s, tell_s = ask_s + asked - start, tell_s + time.process_time() - told
        fallbacks += getattr(agent, "fallbacks", 0)
    count = seeds * timed
    return 1000.0 * ask_s / count, 1000.0 * tell_s / count, fallbacks


#: the second table's rows: label -> (agent name, hyperparameters); the second row of reinforce-tuned is its own
#: baseline for the cost of self-imitation (its latest option), measured in the same process
AGENTS: dict[str, tuple[str, dict[str, Any]]] = {
    "random": ("random", {}),
    "reinforce": ("reinforce", {}),
    "reinforce-tuned": ("reinforce-tuned", {}),
    "reinforce-tuned without self-imitation": ("reinforce-tuned", {"self_imitation": 0}),
    "reinforce-ppo": ("reinforce-ppo", {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12, help="CNN depth (paper: 6 .. 20 under the curriculum)")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 100], help="architectures per pass / update")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (tiny tensors: 1 is fastest)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU; architectures per second")
    header = "| space | tokens | batch | sample batched | sample one by one | batched / one-by-one | sample + update |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for predict_strides in (False, True):
        space = CNNSpace(num_layers=args.layers, predict_strides=predict_strides)
        label = f"cnn{args.layers}" + ("+strides" if predict_strides else "")
        for batch in args.batches:
            r = bench_space(space, batch, args.min_time)
            print(
                f"| {label} | {space.num_steps} | {batch} | {r['batched']:,.0f} | {r['one_by_one']:,.0f} "
                f"| {r['batched'] / r['one_by_one']:.1f}x | {r['update']:,.0f} |",
                flush=True,
            )
    print("\nask + tell, milliseconds per architecture (one core), steady state after 200 architectures")
    spaces = {"nb201": NB201Space(), f"cnn{args.layers}": CNNSpace(num_layers=args.layers)}
    print("| space | agent | ask 1 | ask 8 |")
    print("|---|---|---|---|")
    for label, space in spaces.items():
        for agent_label, (agent_name, kwargs) in AGENTS.items():
            ms = [ms_per_architecture(agent_name, space, ask, args.min_time, **kwargs) for ask in (1, 8)]
            print(f"| {label} | {agent_label} | {ms[0]:.2f} | {ms[1]:.2f} |", flush=True)
    print("\nNB201 table's 12-epoch validation reward: CPU milliseconds per architecture "
          "(architectures 30..129, seeds 0..4)")
    print("| agent | ask | tell | ask + tell | no-repeat fallbacks |")
    print("|---|---|---|---|---|")
    for agent_name in ("random", "reinforce", "reinforce-tuned", "reinforce-ppo"):
        ask_ms, tell_ms, fallbacks = ms_on_the_nb201_table(agent_name)
        print(f"| {agent_name} | {ask_ms:.2f} | {tell_ms:.2f} | {ask_ms + tell_ms:.2f} | {fallbacks} |", flush=True)


if __name__ == "__main__":
    main()
