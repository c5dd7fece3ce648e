"""Retrain the best architectures of a CIFAR-10 search over a small hyperparameter grid; report test accuracy.

The paper's last step (Zoph & Le, section 4.1): the top architectures are trained again with a grid over
learning rate, weight decay and batch-norm epsilon, the configuration is chosen on validation accuracy,
and its test accuracy is reported. Here every (architecture, grid point) is one job of the same dispatcher
as the search (local, SLURM or inline); each result lands in ``RUN_DIR/retrain/store.sqlite`` the moment it
arrives, so running the command again finishes an interrupted retraining and trains nothing twice. Each
job keeps its trained weights, which ``nas export`` turns into a plain PyTorch program.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import time
from pathlib import Path
from typing import Any, Callable

from evaluation.retrained import test_split
from nas_env.evaluators import TrainingEvaluator, resolve_recipe
from nas_env.results import EvalResult, Status
from nas_env.spaces.base import Architecture

#: the grid when none is given; the paper names the three hyperparameters but not their values
DEFAULT_GRID: dict[str, list[float]] = {"lr": [0.05, 0.1], "weight_decay": [1e-4, 5e-4], "bn_eps": [1e-5, 1e-3]}
GRID_KEYS = ("lr", "weight_decay", "bn_eps")
SUMMARY_FILE = "summary.json"

class RetrainEvaluator(TrainingEvaluator):
    """A :class:`TrainingEvaluator` that also measures the official test split and saves the trained
    weights (``weights_dir``); ``bn_eps`` is the batch-norm epsilon of the child."""

    def __init__(self, *args: Any, bn_eps: float = 1e-5, weights_dir: str | Path | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not (isinstance(bn_eps, (int, float)) and 0 < bn_eps < 1):
            raise ValueError(f"bn_eps must be a number in (0, 1), got {bn_eps!r}")
        self.bn_eps = float(bn_eps)
        self.weights_dir = None if weights_dir is None else str(weights_dir)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "bn_eps": self.bn_eps, "test_split": "test"}

    def build_model(self, arch: Architecture) -> Any:
        from nas_env.children.cnn import build_cnn

        return build_cnn(arch, bn_eps=self.bn_eps)  # type: ignore[arg-type]

    def test_data(self, device: str) -> Any:
        """The official test split at the recipe's resolution, on ``device`` (read once per process)."""
        return test_split(self.data_dir, self.recipe.resolution, device, self.download)

    def after_training(self, model: Any, arch: Architecture, result: EvalResult, device: str) -> EvalResult:
        import torch

        from nas_env.training import evaluate_accuracy

        images, labels = self.test_data(device)
        extra = {**result.extra, "test_accuracy": evaluate_accuracy(model, images, labels), "num_test": len(labels)}
        if self.weights_dir is not None:
            path = weights_path(self.weights_dir, arch.to_json(), self.fingerprint())
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save({"arch_json": arch.to_json(), "bn_eps": self.bn_eps, "resolution": self.recipe.resolution,
                        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}, tmp)  # fmt: skip
            tmp.replace(path)
            extra["weights_path"] = str(path)
        return result.with_updates(extra=extra)


def weights_path(folder: str | Path, arch_json: str, fingerprint: str) -> Path:
    """Where the weights of one (architecture, grid point) are kept."""
    digest = hashlib.sha256(f"{arch_json}|{fingerprint}".encode()).hexdigest()[:20]
    return Path(folder) / f"{digest}.pt"


def grid_points(grid: dict[str, list[float]], recipe: dict[str, Any]) -> list[dict[str, float]]:
    """Every combination of the grid's values, in a fixed order; a hyperparameter the grid leaves out
    keeps the recipe's value (batch-norm epsilon: PyTorch's 1e-5). Unknown names are a ValueError."""
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        raise ValueError(f"unknown grid hyperparameters {unknown}; the grid may set {list(GRID_KEYS)}")
    fixed = {"lr": [recipe["lr"]], "weight_decay": [recipe["weight_decay"]], "bn_eps": [1e-5]}
    full = {**fixed, **grid}
    for name, values in full.items():
        if not isinstance(values, list) or not values or not all(isinstance(v, (int, float)) for v in values):
            raise ValueError(f"grid[{name!r}] must be a non-empty list of numbers, got {values!r}")
    return [dict(zip(GRID_KEYS, combo)) for combo in itertools.product(*(full[k] for k in GRID_KEYS))]


@dataclasses.dataclass(frozen=True)
class RetrainRow:
    """One architecture of the search, retrained: the grid point chosen on validation, and its test accuracy."""

    search_rank: int
    arch_json: str
    search_reward: float
    chosen: dict[str, float]
    val_accuracy: float
    test_accuracy: float
    params: int | None
    weights_path: str | None
    points: list[dict[str, Any]]


def top_architectures(run_dir: str | Path, k: int) -> tuple[Any, list[tuple[str, str, float]]]:
    """The run's space and its ``k`` best distinct successful architectures: (key, JSON, reward), best first."""
    from agents.run_dir import RunDir
    from agents.search import make_env_parts
    from nas_env.store import ResultStore

    run = RunDir(run_dir)
    config = run.read_config()
    if config.env_id != "NAS-CIFAR10-v0":
        raise ValueError(f"retraining is for NAS-CIFAR10-v0 searches; {run.path} searched {config.env_id}")
    space, evaluator, _ = make_env_parts(config.env_id, config.env_kwargs)
    with ResultStore(run.store_path) as store:
        rows = [e for e in store.evaluations(evaluator.fingerprint()) if e.result.status is Status.OK]
    if not rows:
        raise ValueError(f"{run.path} holds no successful evaluation to retrain")
    rows.sort(key=lambda e: e.result.reward, reverse=True)
    seen: dict[str, tuple[str, str, float]] = {}
    for e in rows:
        seen.setdefault(e.arch_key, (e.arch_key, e.arch_json, float(e.result.reward)))
    return space, list(seen.values())[:k]


def retrain(
    run_dir: str | Path,
    top: int = 5,
    grid: dict[str, list[float]] | None = None,
    recipe: Any = "paper",
    executor: dict[str, Any] | None = None,
    device: str = "auto",
    seed: int = 0,
    data_dir: str | Path | None = None,
    log: Callable[[str], None] | None = print,
) -> list[RetrainRow]:
    """Retrain the run's ``top`` architectures at every grid point; write ``retrain/summary.{json,md}``."""
    from agents.run_dir import RunDir
    from evaluation.ensemble import ensemble_accuracies
    from nas_env.store import ResultStore
    from slurm.config import ExecutorConfig
    from slurm.dispatch import Dispatcher, Task

    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    run = RunDir(run_dir)
    space, archs = top_architectures(run.path, top)
    base = resolve_recipe(recipe).to_dict()
    data_dir = data_dir if data_dir is not None else run.read_config().env_kwargs.get("data_dir")
    out = run.path / "retrain"
    points = grid_points(grid if grid is not None else DEFAULT_GRID, base)
    evaluators = [
        RetrainEvaluator(recipe={**base, "lr": p["lr"], "weight_decay": p["weight_decay"]}, bn_eps=p["bn_eps"],
                         weights_dir=out / "weights", data_dir=data_dir, device=device, seed=seed)
        for p in points
    ]  # fmt: skip
    dispatcher = Dispatcher(ExecutorConfig.from_dict(executor or {}), out / "jobs")
    dispatcher.check()
    results: dict[tuple[str, int], EvalResult] = {}
    start = time.perf_counter()
    with ResultStore(out / "store.sqlite") as store:
        pending: list[tuple[str, Task]] = []
        for key, arch_json, _ in archs:
            arch = space.architecture_from_json(arch_json)
            for i, evaluator in enumerate(evaluators):
                stored = store.get(key, evaluator.fingerprint())
                if stored is not None and stored.status is not Status.NOT_STARTED:
                    results[(key, i)] = stored
                    continue
                task_key = "r" + hashlib.sha1(f"{key}|{evaluator.fingerprint()}".encode()).hexdigest()[:20]
                pending.append((task_key, Task(task_key, evaluator, arch)))
        total, index = len(pending) + len(results), dict(pending)
        if log and results:
            log(f"{len(results)} of {total} retrainings already in {out / 'store.sqlite'}")
        queue = [task for _, task in pending]
        try:
            while queue or dispatcher.in_flight():
                room = dispatcher.capacity()
                if queue and room:
                    dispatcher.submit(queue[:room])
                    queue = queue[room:]
                for done in dispatcher.wait(timeout=5.0):
                    task = index[done.key]
                    arch_key = space.key(task.arch)
                    i = evaluators.index(task.evaluator)
                    store.put(arch_key, task.evaluator.fingerprint(), space.name, task.arch.to_json(), done.result)
                    results[(arch_key, i)] = done.result
                    if log:
                        r = done.result
                        test = r.extra.get("test_accuracy")
                        log(f"[{len(results)}/{total}] {points[i]}: {r.status.value}"
                            + (f", val {r.metric:.4f}, test {test:.4f}" if r.ok else f" ({(r.error or '')[:80]})")
                            + f" ({time.perf_counter() - start:.0f} s)")  # fmt: skip
        finally:
            dispatcher.close()
    rows = _summarise(archs, points, results)
    members = sorted((r for r in rows if r.chosen and r.weights_path), key=lambda r: -r.val_accuracy)
    ensemble = ensemble_accuracies([r.weights_path for r in members], data_dir)  # type: ignore[misc]
    _write_summary(out, rows, points, base, ensemble)
    return rows


def _summarise(archs: list[tuple[str, str, float]], points: list[dict[str, float]],
               results: dict[tuple[str, int], EvalResult]) -> list[RetrainRow]:  # fmt: skip
    rows = []
    for rank, (key, arch_json, reward) in enumerate(archs, 1):
        tried = [(i, results[(key, i)]) for i in range(len(points)) if (key, i) in results]
        per_point = [{**points[i], "status": r.status.value, "val_accuracy": r.metric,
                      "test_accuracy": r.extra.get("test_accuracy")} for i, r in tried]  # fmt: skip
        ok = [(i, r) for i, r in tried if r.ok]
        if not ok:
            rows.append(RetrainRow(rank, arch_json, reward, {}, float("nan"), float("nan"), None, None, per_point))
            continue
        i, best = max(ok, key=lambda item: (item[1].metric, -item[0]))  # chosen on validation, first on ties
        rows.append(RetrainRow(rank, arch_json, reward, points[i], float(best.metric),
                               float(best.extra["test_accuracy"]), best.params, best.extra.get("weights_path"),
                               per_point))  # fmt: skip
    return rows


def _write_summary(out: Path, rows: list[RetrainRow], points: list[dict[str, float]], recipe: dict[str, Any],
                   ensemble: list[float]) -> None:  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    payload = {"recipe": recipe, "grid": points, "rows": [dataclasses.asdict(r) for r in rows],
               "ensemble_test_accuracy": ensemble}  # fmt: skip
    (out / SUMMARY_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    lines = [
        f"Retrained over {len(points)} grid point(s), chosen on validation accuracy; test = the official test split.",
        "",
        "| search rank | search reward | chosen lr / wd / bn_eps | val acc | test acc | params |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (not r.chosen, -r.val_accuracy if r.chosen else 0.0)):
        chosen = " / ".join(f"{r.chosen.get(k, '-')}" for k in GRID_KEYS) if r.chosen else "(all failed)"
        lines.append(f"| {r.search_rank} | {r.search_reward:.4f} | {chosen} | {r.val_accuracy:.4f} | "
                     f"{r.test_accuracy:.4f} | {r.params if r.params is not None else '-'} |")  # fmt: skip
    if len(ensemble) > 1:
        lines += ["", "Ensembles of the best k by validation (mean softmax) on the test split:", "",
                  "| k | " + " | ".join(str(k) for k in range(1, len(ensemble) + 1)) + " |",
                  "|---|" + "---|" * len(ensemble),
                  "| test acc | " + " | ".join(f"{a:.4f}" for a in ensemble) + " |"]  # fmt: skip
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """``RUN_DIR/retrain/summary.json``; a ValueError saying to run ``nas retrain`` first when missing."""
    path = Path(run_dir) / "retrain" / SUMMARY_FILE
    if not path.is_file():
        raise ValueError(f"{path} does not exist: run `nas retrain {run_dir}` first")
    return json.loads(path.read_text())
