"""The evaluation package: statistics, `nas compare` (report numbers = what the stores hold, reproducible per
seed) and `nas report` on one run directory, and their error messages."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from evaluation.compare import CompareError, CompareSpec, parse_agents, read_spec, run_compare
from evaluation.report import write_run_report
from evaluation.stats import mean_ci, t_cdf, t_quantile, welch_difference
from evaluation.traces import RunDirError, load_trace
from nas_cli.main import main
from nas_env.results import EvalResult
from nas_env.store import ResultStore

ENV_KWARGS = {"dataset": "cifar10-valid", "fidelity": 12}
REA = {"population_size": 5, "sample_size": 2}
REINFORCE = {"batch_size": 4, "lr": 0.01}
SEEDS = 3
BUDGET = 24
SIM_TIME = 2000.0  # NB201 12-epoch cells cost ~50-200 simulated s: some runs stop on time, some on budget


def _cli_compare(out: Path, workers: int) -> int:
    return main([
        "compare", "--env", "NAS-Bench-201-v0", "--env-kwargs", json.dumps(ENV_KWARGS),
        "--agents", "reinforce,rea:evolution",
        "--agent-kwargs", f"reinforce={json.dumps(REINFORCE)}", "--agent-kwargs", f"rea={json.dumps(REA)}",
        "--seeds", str(SEEDS), "--budget", str(BUDGET), "--simulated-time", str(SIM_TIME),
        "--workers", str(workers), "--out", str(out), "--quiet",
    ])


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small comparison run in this process (2 agents x 3 seeds, inline executor)."""
    out = tmp_path_factory.mktemp("compare") / "out"
    assert _cli_compare(out, workers=1) == 0
    return out


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _pick_from_store(run_dir: Path) -> tuple[float, float, int]:
    """Straight from sqlite: (best told reward, test accuracy in % of the first architecture told with it,
    number told)."""
    with ResultStore(run_dir / "store.sqlite") as store:
        told = store.told()
        best = max(r.reward for r in told)
        first = next(r for r in told if r.reward == best)
        result = store.get(first.arch_key, first.fingerprint)
    assert isinstance(result, EvalResult)
    return best, 100.0 * result.extra["test_accuracy"], len(told)


# ---------------------------------------------------------------------------------------------- statistics
@pytest.mark.parametrize(
    "df, expected",  # two-sided 95% critical values from the standard t table
    [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (29, 2.045), (30, 2.042), (99, 1.984), (1000, 1.962)],
)
def test_t_quantile_matches_table(df: int, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-3)
    assert t_cdf(t_quantile(0.975, df), df) == pytest.approx(0.975, abs=1e-10)


def test_mean_ci_on_a_known_sample() -> None:
    s = mean_ci([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    assert (s.n, s.mean) == (10, 5.5)
    assert s.std == pytest.approx(3.0276503540974917)  # sqrt(55 / 6)
    # 5.5 -+ t_{0.975, 9} * std / sqrt(10), t_{0.975, 9} = 2.2621571628 (R: qt(0.975, 9))
    assert s.ci_low == pytest.approx(5.5 - 2.2621571628 * 3.0276503540974917 / math.sqrt(10), abs=1e-8)
    assert s.ci_high == pytest.approx(3.0 + 2.5 + 2.2621571628 * 0.9574271077563381, abs=1e-8)
    assert s.ci_low == pytest.approx(3.334149, abs=1e-6)
    one = mean_ci([3.0])
    assert one.mean == 3.0 and math.isnan(one.ci_low)
    with pytest.raises(ValueError):
        mean_ci([])


def test_welch_difference() -> None:
    d = welch_difference([1, 2, 3, 4, 5], [2, 4, 6, 8, 10, 12])
    assert d.diff == -4.0
    assert d.df == pytest.approx(6.9722557, abs=1e-6)  # Welch-Satterthwaite
    assert d.ci_low < -4.0 < d.ci_high < 0.2
    assert 0.05 < d.p_value < 0.06  # scipy (df not floored): 0.0532; floored df 6: slightly larger


def test_a_difference_far_beyond_the_t_cdf_s_resolution_is_not_printed_as_p_0() -> None:
    """Two samples 20 standard errors apart: 2 (1 - cdf) rounds to 0, the text says how small it is instead."""
    far = welch_difference([10.0, 10.1, 9.9, 10.05, 9.95] * 40, [0.0, 0.1, -0.1, 0.05, -0.05] * 40)
    assert far.p_value < 1e-14
    assert far.text().endswith("p < 1e-14") and "p = 0" not in far.text()
    assert welch_difference([1, 2, 3, 4, 5], [2, 4, 6, 8, 10, 12]).text(1) == "-4.0 [-8.1, +0.1], p = 0.055"


# ---------------------------------------------------------------------------------------------- compare
def test_compare_writes_the_report_files(compare_dir: Path) -> None:
    for name in ("summary.md", "summary.csv", "summary.json", "runs.csv", "curves.csv", "timings.json",
                 "curves_evaluations.png", "curves_simulated_time.png", "final_test.png", "compare.json"):
        assert (compare_dir / name).is_file(), name
        assert (compare_dir / name).stat().st_size > 0
    assert (compare_dir / "curves_evaluations.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = sorted(p.name for p in (compare_dir / "runs").iterdir())
    assert runs == sorted(f"{label}-seed{s}" for label in ("reinforce", "rea") for s in range(SEEDS))
    spec = read_spec(compare_dir)
    assert [a.kwargs for a in spec.agents] == [REINFORCE, REA]
    assert "| reinforce |" in (compare_dir / "summary.md").read_text()


def test_compare_numbers_match_the_stores(compare_dir: Path) -> None:
    """Every number of the tables, recomputed from the sqlite stores without the evaluation package."""
    summary = json.loads((compare_dir / "summary.json").read_text())
    runs = _read_csv(compare_dir / "runs.csv")
    assert summary["optimum"]["test_pct"] == pytest.approx(94.3733, abs=1e-4)
    for agent in summary["agents"]:
        label = agent["label"]
        picks = [_pick_from_store(compare_dir / "runs" / f"{label}-seed{s}") for s in range(SEEDS)]
        rewards, tests = np.array([p[0] for p in picks]), np.array([p[1] for p in picks])
        for s, (reward, test, told) in enumerate(picks):
            row = next(r for r in runs if r["label"] == label and int(r["seed"]) == s)
            assert float(row["best_reward"]) == reward
            assert float(row["test_acc"]) == pytest.approx(test, abs=1e-9)
            assert int(row["evaluations"]) == told <= BUDGET
        assert agent["runs"] == SEEDS
        assert agent["best_reward_mean"] == pytest.approx(rewards.mean())
        assert agent["test_mean"] == pytest.approx(tests.mean())
        assert agent["test_std"] == pytest.approx(tests.std(ddof=1))
        half = 4.302652729911275 * tests.std(ddof=1) / math.sqrt(SEEDS)  # t_{0.975, 2}
        assert agent["test_ci_low"] == pytest.approx(tests.mean() - half)
        assert agent["test_ci_high"] == pytest.approx(tests.mean() + half)
        assert agent["regret_mean"] == pytest.approx(94.3733 - tests.mean(), abs=1e-4)
    summary_csv = {r["label"]: r for r in _read_csv(compare_dir / "summary.csv")}
    assert float(summary_csv["rea"]["test_mean"]) == next(a for a in summary["agents"] if a["label"] == "rea")["test_mean"]


def test_compare_curves_end_at_the_picks(compare_dir: Path) -> None:
    """The evaluation-axis curves carry every run's final value to the end: their last point is the mean pick."""
    curves = _read_csv(compare_dir / "curves.csv")
    summary = {a["label"]: a for a in json.loads((compare_dir / "summary.json").read_text())["agents"]}
    for label, agent in summary.items():
        rows = [r for r in curves if r["label"] == label and r["axis"] == "evaluations"]
        best = [r for r in rows if r["quantity"] == "best_reward"]
        test = [r for r in rows if r["quantity"] == "picked_test"]
        assert float(best[-1]["mean"]) == pytest.approx(agent["best_reward_mean"])
        assert 100 * float(test[-1]["mean"]) == pytest.approx(agent["test_mean"])
        means = [float(r["mean"]) for r in best]
        assert means == sorted(means)  # best so far never decreases
        timed = [r for r in curves if r["label"] == label and r["axis"] == "simulated_time_s" and r["quantity"] == "best_reward"]
        assert float(timed[-1]["x"]) >= SIM_TIME  # the evaluation that crosses the budget still counts
        assert float(timed[-1]["mean"]) == pytest.approx(agent["best_reward_mean"])


def test_compare_is_reproducible(compare_dir: Path, tmp_path: Path) -> None:
    """The same seeds give the same tables, also when the runs go through the process pool."""
    assert _cli_compare(tmp_path / "again", workers=2) == 0
    for name in ("summary.csv", "runs.csv", "curves.csv", "summary.json"):
        assert (tmp_path / "again" / name).read_text() == (compare_dir / name).read_text(), name


def test_compare_resumes_into_the_same_folder(compare_dir: Path, tmp_path: Path) -> None:
    """Running the same comparison again keeps the finished runs; another comparison there is refused."""
    def stored() -> dict[str, list[tuple]]:  # seeded runs repeat their numbers: created_at shows a rerun
        rows = {}
        for run_dir in sorted((compare_dir / "runs").iterdir()):
            with ResultStore(run_dir / "store.sqlite") as store:
                rows[run_dir.name] = [(e.id, e.arch_key, e.created_at) for e in store.evaluations()] + [
                    (r.proposal_id, r.told_seq, r.arch_key) for r in store.told()]
        return rows

    before, stores_before = (compare_dir / "summary.csv").read_text(), stored()
    spec = read_spec(compare_dir)
    report = run_compare(compare_dir, spec, workers=1)
    assert (compare_dir / "summary.csv").read_text() == before
    assert stored() == stores_before and len(stores_before) == 2 * SEEDS  # nothing evaluated or told again
    assert report.agent("rea")["runs"] == SEEDS
    other = CompareSpec(env_id=spec.env_id, agents=spec.agents, seeds=[7], budget=5, env_kwargs=spec.env_kwargs)
    with pytest.raises(CompareError, match="different comparison"):
        run_compare(compare_dir, other, workers=1)


# ---------------------------------------------------------------------------------------------- report
def test_report_on_a_run_dir(compare_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = compare_dir / "runs" / "reinforce-seed1"
    assert main(["report", str(run_dir), "--top", "5"]) == 0
    assert str(run_dir / "report") in capsys.readouterr().out
    for name in ("best_so_far.png", "rewards.png", "top_k.md", "top_k.csv", "summary.json"):
        assert (run_dir / "report" / name).is_file(), name
    best, test, told = _pick_from_store(run_dir)
    top = _read_csv(run_dir / "report" / "top_k.csv")
    assert len(top) == 5 and float(top[0]["reward"]) == best
    assert float(top[0]["test_acc"]) == pytest.approx(test)
    assert [float(r["reward"]) for r in top] == sorted((float(r["reward"]) for r in top), reverse=True)
    markdown = (run_dir / "report" / "top_k.md").read_text()
    assert f"| 1 | {top[0]['seq']} | {best:.4f} |" in markdown
    assert "`" + top[0]["architecture"].replace("|", "\\|") + "`" in markdown  # the cell's pipes are escaped
    summary = json.loads((run_dir / "report" / "summary.json").read_text())
    assert summary["best_reward"] == best and summary["evaluations"] == told
    assert summary["best_architecture"] == top[0]["architecture"]
    assert load_trace(run_dir).pick.reward == best


# ---------------------------------------------------------------------------------------------- errors
def test_bad_agent_name_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CompareError, match=r"unknown agent 'reinforse'.*known agents: .*reinforce"):
        parse_agents("reinforse,random")
    with pytest.raises(CompareError, match="given twice"):
        parse_agents("random,random")
    with pytest.raises(CompareError, match="not a label of --agents"):
        parse_agents("random,rea:evolution", {"evolution": {"population_size": 3}})
    specs = parse_agents("reinforce,reinforce-paper:reinforce", {"reinforce": {"lr": 0.02}})
    assert [(s.label, s.agent, s.kwargs) for s in specs] == [
        ("reinforce", "reinforce", {"lr": 0.02}), ("reinforce-paper", "reinforce", {})]  # kwargs go by label only
    assert main(["compare", "--agents", "random,foo", "--seeds", "2", "--budget", "3", "--out", str(tmp_path / "x")]) == 2
    assert "unknown agent 'foo'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing ran


def test_missing_run_dir_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "not a search run directory" in capsys.readouterr().err
    with pytest.raises(RunDirError):
        write_run_report(tmp_path / "empty")


def test_pareto_front_on_a_known_set() -> None:
    from evaluation.pareto import pareto_front

    points = [(1.0, 0.5), (2.0, 0.6), (2.0, 0.55), (3.0, 0.6), (0.5, 0.1), (4.0, 0.9), (2.0, 0.6), (5.0, 0.85)]
    # (2, 0.55) and (5, 0.85) are dominated; (3, 0.6) costs more than (2, 0.6) for the same score
    assert pareto_front(points) == [4, 0, 1, 6, 5]
    assert pareto_front([]) == []
