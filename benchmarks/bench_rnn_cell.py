"""Training throughput of a searched recurrent cell (PTB search) against a naive per-leaf implementation.

Three implementations of the same cell compute the same numbers (checked before timing), each run
forward + backward over a (bptt x batch) window:

- naive: one ``nn.Linear`` pair per leaf, called per leaf and per step (2 x leaves matmuls per step);
- stacked: ``SearchedCell.forward`` per step (every leaf's W x and U h in one matmul each);
- sequence: what ``RNNLanguageModel`` does, the W x of all steps in one matmul before the loop, then one
  matmul per step.

The full language model (embedding, tied 10,000-word decoder) is timed too, for scale. Run from the
repository root:

    python benchmarks/bench_rnn_cell.py            # defaults: 8 leaves, 200 units, bptt 35, batch 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch import nn

from nas_env.children.rnn_cell import RNNLanguageModel, SearchedCell, _ACTIVATIONS, _COMBINES
from nas_env.spaces.rnn_cell import RNNCellSpace, tree_children


class PerLeafCell(nn.Module):
    """The same cell with one Linear pair per leaf (the obvious way to write it)."""

    def __init__(self, cell: SearchedCell) -> None:
        super().__init__()
        self.cell, h = cell, cell.hidden_size
        self.w = nn.ModuleList(nn.Linear(cell.input_size, h) for _ in range(cell.num_leaves))
        self.u = nn.ModuleList(nn.Linear(h, h) for _ in range(cell.num_leaves))
        with torch.no_grad():  # the stacked cell's weights, so both compute the same numbers
            for i in range(cell.num_leaves):
                rows = slice(i * h, (i + 1) * h)
                self.w[i].weight.copy_(cell.weight_ih[rows]), self.w[i].bias.copy_(cell.bias_ih[rows])
                self.u[i].weight.copy_(cell.weight_hh[rows]), self.u[i].bias.copy_(cell.bias_hh[rows])

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, tuple]:
        arch, (h, c) = self.cell.arch, state
        out: list[torch.Tensor] = []
        c_t = h
        for k, ((comb, act), pair) in enumerate(zip(arch.nodes, tree_children(arch.num_leaves))):
            combine, activation = _COMBINES[comb], _ACTIVATIONS[act]
            pre = combine(self.w[k](x), self.u[k](h)) if pair is None else combine(out[pair[0]], out[pair[1]])
            if k == arch.cell_from:
                c_t = pre
            a = activation(pre)
            if k == arch.inject_into:
                a = _ACTIVATIONS[arch.inject[1]](_COMBINES[arch.inject[0]](a, c))
            out.append(a)
        return out[-1], (out[-1], c_t)


def unroll_steps(cell: Callable, xs: torch.Tensor, state: tuple) -> torch.Tensor:
    outputs = []
    for x_t in xs:
        h, state = cell(x_t, state)
        outputs.append(h)
    return torch.stack(outputs)


def unroll_sequence(cell: SearchedCell, xs: torch.Tensor, state: tuple) -> torch.Tensor:
    outputs = []
    for wx_t in cell.input_projection(xs):
        h, state = cell.step(wx_t, state)
        outputs.append(h)
    return torch.stack(outputs)


def tokens_per_s(runs: dict[str, Callable[[], torch.Tensor]], tokens: int, repeats: int) -> dict[str, float]:
    """Median tokens per second of forward + backward for each run, measured in interleaved rounds
    (one of each per round, so that machine noise hits them alike), after one warm-up each."""
    for run in runs.values():
        run().square().mean().backward()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run().square().mean().backward()
            rates[name].append(tokens / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leaves", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=200)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--vocab", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    arch = RNNCellSpace(args.leaves).sample(args.seed)
    cell = SearchedCell(arch, args.hidden, args.hidden)
    naive = PerLeafCell(cell)
    xs = torch.randn(args.bptt, args.batch, args.hidden) * 0.1
    state = cell.init_state(args.batch)
    with torch.no_grad():
        reference = unroll_steps(cell, xs, state)
        assert torch.allclose(unroll_steps(naive, xs, state), reference, atol=1e-5)
        assert torch.allclose(unroll_sequence(cell, xs, state), reference, atol=1e-5)
    tokens = args.bptt * args.batch
    print(f"cell: {arch}")
    print(f"{args.leaves} leaves, {args.hidden} units, window {args.bptt} x {args.batch}, "
          f"{torch.get_num_threads()} threads; forward + backward, median of {args.repeats}")  # fmt: skip
    model = RNNLanguageModel(arch, args.vocab, args.hidden, args.hidden)
    ids = torch.randint(args.vocab, (args.bptt, args.batch))
    rates = tokens_per_s(
        {
            "naive: a Linear pair per leaf": lambda: unroll_steps(naive, xs, state),
            "stacked: 2 matmuls per step": lambda: unroll_steps(cell, xs, state),
            "sequence: W x for all steps at once": lambda: unroll_sequence(cell, xs, state),
            "model": lambda: model(ids)[0],
        },
        tokens,
        args.repeats,
    )
    naive_rate, model_rate = rates["naive: a Linear pair per leaf"], rates.pop("model")
    print("| implementation | tokens/s | vs naive |\n|---|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:,.0f} | {rate / naive_rate:.2f}x |")
    print(f"| the whole language model ({args.vocab:,}-word tied decoder) | {model_rate:,.0f} | - |")


if __name__ == "__main__":
    main()
