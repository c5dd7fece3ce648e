"""Retraining the best architectures of a real (tiny) CIFAR-10 search over a grid, and exporting the winner
as a torch.export program that runs without this package."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation.export import export_retrained
from evaluation.retrain import grid_points, read_summary, retrain
from nas_env.data.cifar10 import load_cifar10
from nas_env.store import ResultStore
from nas_env.training import prepare_eval_images

GRID = {"lr": [0.05, 0.1]}


def nas(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas_cli", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)  # fmt: skip


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory, cifar_dir: Path) -> Path:
    """A finished 3-child random search on real CIFAR-10 images (tiny recipe)."""
    run_dir = tmp_path_factory.mktemp("retrain") / "run"
    done = nas("search", "--agent", "random", "--budget", "3", "--recipe", "tiny", "--layers", "3",
               "--executor", "inline", "--no-progress", "--data-dir", str(cifar_dir), "--run-dir", str(run_dir))  # fmt: skip
    assert done.returncode == 0, done.stderr
    return run_dir


@pytest.fixture(scope="module")
def retrained(searched: Path) -> Path:
    retrain(searched, top=2, grid=GRID, recipe="tiny", executor={"executor": "inline"}, device="cpu", log=None)
    return searched


def test_each_architecture_gets_its_validation_choice_and_a_test_accuracy(retrained: Path, cifar_dir: Path) -> None:
    summary = read_summary(retrained)
    rows = summary["rows"]
    assert [r["search_rank"] for r in rows] == [1, 2] and len(summary["grid"]) == 2
    _, test_labels = load_cifar10(cifar_dir, "test")
    for row in rows:
        assert len(row["points"]) == 2 and all(p["status"] == "ok" for p in row["points"])
        best = max(row["points"], key=lambda p: p["val_accuracy"])
        assert row["chosen"]["lr"] == best["lr"] and row["val_accuracy"] == best["val_accuracy"]
        assert row["test_accuracy"] == best["test_accuracy"]
        assert 0.0 <= row["test_accuracy"] <= 1.0
        assert (row["test_accuracy"] * len(test_labels)) == pytest.approx(round(row["test_accuracy"] * len(test_labels)))
        assert Path(row["weights_path"]).is_file()
    ensemble = summary["ensemble_test_accuracy"]
    by_val = sorted(rows, key=lambda r: -r["val_accuracy"])
    assert len(ensemble) == 2 and ensemble[0] == pytest.approx(by_val[0]["test_accuracy"], abs=2 / len(test_labels))
    assert "Ensembles of the best k" in (retrained / "retrain" / "summary.md").read_text()


def test_running_it_again_trains_nothing(retrained: Path) -> None:
    store_path = retrained / "retrain" / "store.sqlite"

    def stored() -> list[tuple]:  # a retrained point replaces its row: created_at shows it was written again
        with ResultStore(store_path) as store:
            return [(e.id, e.arch_key, e.fingerprint, e.created_at, e.result) for e in store.evaluations()]

    before = stored()
    rows = retrain(retrained, top=2, grid=GRID, recipe="tiny", executor={"executor": "inline"}, device="cpu", log=None)
    assert len(before) == 4 and stored() == before  # every point answered from the store, none written again
    assert [r.test_accuracy for r in rows] == [r["test_accuracy"] for r in read_summary(retrained)["rows"]]


def test_the_exported_program_runs_with_torch_alone_and_scores_as_reported(
    retrained: Path, cifar_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "winner.pt2"
    meta = export_retrained(retrained, out)
    assert json.loads(Path(f"{out}.json").read_text())["test_accuracy"] == meta["test_accuracy"]
    images, labels = load_cifar10(cifar_dir, "test")
    x, _ = prepare_eval_images(images, labels, meta["resolution"], "cpu")
    torch.save(x.float().div(255).contiguous(), tmp_path / "images.pt")
    script = (
        "import sys, torch\n"
        f"model = torch.export.load({str(out)!r}).module()\n"
        f"print(model(torch.load({str(tmp_path / 'images.pt')!r})).argmax(1).tolist())\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('nas_env', 'evaluation', 'agents', 'slurm')]\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    predictions = np.array(json.loads(done.stdout))
    accuracy = float(np.mean(predictions == labels))
    assert accuracy == pytest.approx(meta["test_accuracy"], abs=2 / len(labels))  # float rounding may flip a tie


def test_bad_requests_are_named(searched: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown grid hyperparameters"):
        grid_points({"momentum": [0.9]}, {"lr": 0.1, "weight_decay": 1e-4})
    with pytest.raises(ValueError, match="non-empty list"):
        grid_points({"lr": []}, {"lr": 0.1, "weight_decay": 1e-4})
    nb201 = tmp_path / "nb201"
    assert nas("search", "--env", "NAS-Bench-201-v0", "--budget", "2", "--executor", "inline", "--no-progress",
               "--run-dir", str(nb201)).returncode == 0  # fmt: skip
    done = nas("retrain", str(nb201))
    assert done.returncode == 2 and "retraining is for NAS-CIFAR10-v0 searches" in done.stderr
    fresh = nas("export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.pt2"))
    assert fresh.returncode == 2 and "run `nas retrain" in fresh.stderr
