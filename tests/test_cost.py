"""Cost-aware rewards: hard limits never train, MnasNet's soft reward, every env id, fingerprints; Pareto and
time to threshold in the comparison report."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import nas_env  # noqa: F401 - registers the ids
from agents.run_dir import RunDir, SearchConfig
from agents.search import Search
from evaluation.pareto import pareto_ranks
from evaluation.report import rank_by_pareto
from evaluation.thresholds import first_reach, thresholds_of
from nas_env.children.cnn import build_cnn, count_flops, count_params
from nas_env.cost import CostAwareEvaluator, base_evaluator
from nas_env.results import Status
from nas_env.spaces.cnn import CNNSpace, cnn_preset
from nas_env.store import ResultStore
from nas_env.tabular import TabularEvaluator

INLINE = {"executor": "inline", "max_in_flight": 2}


def test_every_env_id_takes_a_cost(data_root: Path) -> None:
    kwargs = {
        "NAS-CIFAR10-v0": {"recipe": "tiny", "data_dir": str(data_root / "cifar10-subset")},
        "NAS-Bench-201-v0": {"fidelity": 12},
        "NAS-Synthetic-v0": {},
        "NAS-PTB-v0": {"recipe": "tiny", "data_dir": str(data_root)},
    }
    for env_id, extra in kwargs.items():
        env = gym.make(env_id, cost={"metric": "params", "limit": 1e9}, disable_env_checker=True, **extra).unwrapped
        assert isinstance(env.evaluator, CostAwareEvaluator)
        cost = env.evaluator.cost(env.space.sample(0))
        assert cost["params"] > 0
        clone = pickle.loads(pickle.dumps(env.evaluator))
        assert clone.fingerprint() == env.evaluator.fingerprint() != base_evaluator(env.evaluator).fingerprint()
    with pytest.raises(ValueError, match="unknown cost key"):
        gym.make("NAS-Bench-201-v0", cost={"metric": "params", "limt": 5})
    with pytest.raises(ValueError, match="limit.*target"):
        gym.make("NAS-Bench-201-v0", cost={"metric": "params"})


def test_costs_are_counted_without_training(data_root: Path) -> None:
    space = cnn_preset("v2").space()
    env = gym.make("NAS-CIFAR10-v0", preset="v2", recipe="tiny", cost={"metric": "flops", "limit": 1e12},
                   disable_env_checker=True).unwrapped
    arch = space.sample(5)
    assert env.evaluator.cost(arch) == {"params": count_params(build_cnn(arch)), "flops": count_flops(arch, 16)}
    nb = gym.make("NAS-Bench-201-v0", cost={"metric": "flops", "limit": 1e12}).unwrapped
    cell = nb.space.sample(2)
    row = TabularEvaluator().table().row(TabularEvaluator().table().index_of(cell.arch_str))
    assert nb.evaluator.cost(cell) == {"params": row["params_cifar10"], "flops": row["flops_cifar10"]}


def test_a_hard_limit_rejects_an_oversized_child_without_training_it_and_the_search_goes_on(tmp_path: Path) -> None:
    log = tmp_path / "trained.jsonl"
    limit = 300_000
    config = SearchConfig(
        env_id="NAS-Synthetic-v0",
        env_kwargs={"num_layers": 4, "log_path": str(log), "cost": {"metric": "params", "limit": limit}},
        agent="random", budget=24, executor=INLINE,
    )
    search = Search(tmp_path / "run", config)
    try:
        summary = search.run()
    finally:
        search.close()
    assert summary.finished and summary.evaluations == 24
    with ResultStore(RunDir(tmp_path / "run").store_path) as store:
        results = [e.result for e in store.evaluations()]
    over = [r for r in results if r.status is Status.OVER_LIMIT]
    ok = [r for r in results if r.ok]
    assert over and ok, "the seeded sample should hold children on both sides of the limit"
    for r in over:
        assert r.params > limit and r.reward == 0.0 and "exceed the hard limit 300,000" in r.error
        assert r.extra.get("simulated_train_time_s", 0.0) == 0.0
    assert all(r.params <= limit for r in ok)
    trained = [json.loads(line)["key"] for line in log.read_text().splitlines()]
    assert len(trained) == len(ok)  # the synthetic trainer ran for the children under the limit only


def test_the_soft_reward_matches_its_formula() -> None:
    plain = gym.make("NAS-Bench-201-v0", fidelity=12).unwrapped.evaluator
    target, w = 4e5, -0.07
    soft = gym.make("NAS-Bench-201-v0", fidelity=12, cost={"metric": "params", "target": target, "w": w}).unwrapped
    for seed in range(5):
        cell = soft.space.sample(seed)
        base, result = plain.evaluate(cell), soft.evaluator.evaluate(cell)
        assert result.reward == pytest.approx(base.reward * (base.params / target) ** w, rel=1e-12)
        assert result.metric == base.metric and result.extra["reward_before_cost"] == base.reward
    evaluator = CostAwareEvaluator(plain, metric="flops", target=1e7, w=-0.5)
    assert evaluator.factor(4e7) == pytest.approx(0.5)


def test_agents_work_unchanged_with_presets_and_costs(tmp_path: Path) -> None:
    for agent in ("reinforce", "random", "evolution", "grid"):
        config = SearchConfig(env_id="NAS-Synthetic-v0", agent=agent, budget=6, executor=INLINE,
                              env_kwargs={"preset": "v1", "cost": {"metric": "params", "target": 1e6}})
        search = Search(tmp_path / agent, config)
        try:
            assert search.run().evaluations == 6
        finally:
            search.close()


def test_pareto_ranking_on_a_known_set() -> None:
    # (cost, score): a, b, c on the front; d beaten by b; e beaten by d (and b); f a duplicate of a
    points = [(1.0, 0.5), (2.0, 0.8), (3.0, 0.9), (2.5, 0.7), (3.0, 0.6), (1.0, 0.5)]
    assert pareto_ranks(points) == [1, 1, 1, 2, 3, 1]
    agents = [{"label": n, "pick_params_mean": c, "test_mean": s, "best_reward_mean": 0.0}
              for n, (c, s) in zip("abcdef", points)]
    ranked = rank_by_pareto(agents)
    assert [a["label"] for a in ranked] == ["c", "b", "a", "f", "d", "e"]
    assert [a["pareto_rank"] for a in ranked] == [1, 1, 1, 1, 2, 3]


def test_thresholds_and_first_reach() -> None:
    values = np.linspace(0.0, 1.0, 2000)
    top1, top01, best = thresholds_of(values)
    assert (top1.count, top01.count, best.count) == (20, 2, 1) and best.value == 1.0

    class Trace:
        steps = [type("S", (), {"result": type("R", (), {"extra": {"nb201_index": i}})()})() for i in (5, 1990, 1999)]

        def cumulative_time_s(self) -> np.ndarray:
            return np.array([10.0, 30.0, 60.0])

    assert first_reach(Trace(), values, top1.value) == (2, 30.0)
    assert first_reach(Trace(), values, best.value) == (3, 60.0)
    assert first_reach(Trace(), values[::-1].copy(), best.value) is None


def test_nas_compare_writes_time_to_threshold_and_ranks_by_pareto(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from nas_cli.main import main

    out = tmp_path / "cmp"
    code = main(["compare", "--env", "NAS-Bench-201-v0", "--env-kwargs", '{"dataset": "cifar10-valid", "fidelity": 12}',
                 "--agents", "grid,random", "--seeds", "3", "--budget", "1000", "--simulated-time", "3000",
                 "--workers", "1", "--rank", "pareto", "--out", str(out), "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    assert "## Time to threshold" in text and "| grid | top 1% ≥ 83.57% (158) |" in text and "Pareto rank" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rank"] == "pareto" and {a["pareto_rank"] for a in summary["agents"]} <= {1, 2}
    rows = summary["time_to_threshold"]
    assert [(r["label"], r["threshold"]) for r in rows[:3]] == [(summary["agents"][0]["label"], t)
                                                              for t in ("top 1%", "top 0.1%", "optimum")]
    assert (out / "time_to_threshold.png").stat().st_size > 0 and (out / "time_to_threshold.csv").is_file()
    import csv

    runs = list(csv.DictReader(open(out / "runs.csv")))
    for r in runs:  # each run's own first hit agrees with the per-agent fraction
        assert "evals_to_top_1pct" in r and "simulated_s_to_optimum" in r
    for row in rows:
        hits = [r for r in runs if r["label"] == row["label"] and r[f"evals_to_{row['threshold'].replace('%', 'pct').replace(' ', '_')}"]]
        assert row["reached"] == pytest.approx(len(hits) / 3)
