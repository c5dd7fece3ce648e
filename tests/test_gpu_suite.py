"""The GPU suite's dry run (``benchmarks/gpu_suite.sh --device cpu --quick``): every section runs end to end
on the CPU at tiny sizes, with the k worker processes started together through the start file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_dry_run_prints_every_section(data_root: Path) -> None:
    env = {**os.environ, "NAS_DATA_DIR": str(data_root / "cifar10-subset")}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--device", "cpu", "--quick"],
                          capture_output=True, text=True, env=env, timeout=400)  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, done.stderr[-3000:]
    assert "data: real CIFAR-10" in out  # the subset holds enough images for the dry run's sizes
    for header in ("== 1. training images/s", "== 2. seconds per epoch", "== 3. children per hour"):
        assert header in out
    rows = [line.split() for line in out.splitlines()]
    depths = [r[0] for r in rows if len(r) > 1 and r[1] in ("layers", "layers:")]
    assert depths == ["6", "15", "6", "15"]  # sections 1 and 2, both depths
    shared = [r for r in rows if len(r) >= 5 and r[0] in ("1", "2") and r[3].endswith("x")]
    assert [r[0] for r in shared] == ["1", "2"] and all(float(r[2]) > 0 for r in shared)
    assert "gpu suite done" in out


@pytest.mark.skipif(sys.platform != "linux", reason="the suite is a bash script")
def test_cuda_without_a_gpu_is_one_line_and_exit_2() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh")], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "torch sees no CUDA device" in done.stderr and "--device cpu --quick" in done.stderr
