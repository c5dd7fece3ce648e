"""The one exception classifier: real exceptions, and the tracebacks that raising them produces."""

from __future__ import annotations

import pickle
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

from nas_env.data.paths import CorruptDatasetError, DatasetDownloadError, DatasetError, DatasetNotFoundError
from nas_env.errors import DeviceError, SetupError
from nas_env.evaluators import SyntheticEvaluator, safe_evaluate
from nas_env.failures import classify, classify_traceback
from nas_env.results import Status
from nas_env.spaces import CNNSpace
from nas_env.store import CACHEABLE
from nas_env.tabular import TableError, TabularEvaluator
from slurm import faults


def _cuda_oom() -> BaseException:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def _allocator_oom() -> BaseException:
    return RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried "
                        "to allocate 1099511627776 bytes. Error code 12 (Cannot allocate memory) out of memory")  # fmt: skip


def _host_oom() -> BaseException:
    try:
        bytearray(1 << 62)  # a real MemoryError from the allocator
    except MemoryError as exc:
        return exc
    raise AssertionError("allocating 4 EiB succeeded")


def _raised(exc: BaseException) -> tuple[BaseException, str]:
    """Raise exc from a nested call and return it with its formatted traceback."""

    def inner() -> None:
        raise exc

    try:
        inner()
    except BaseException as caught:  # noqa: BLE001
        return caught, traceback.format_exc()
    raise AssertionError("not raised")


CASES = [
    (lambda: SetupError("something about the machine"), Status.SETUP),
    (lambda: DeviceError("device 'cuda' requested but torch sees no CUDA device on this machine"), Status.SETUP),
    (lambda: DatasetNotFoundError("CIFAR-10", [Path("/nowhere")], ["data_batch_1"]), Status.SETUP),
    (lambda: CorruptDatasetError(Path("d") / "data_batch_3", "not a readable pickle, maybe truncated"), Status.SETUP),
    (lambda: DatasetDownloadError("http://127.0.0.1:9/x.tar.gz", "Connection refused"), Status.SETUP),
    (lambda: TableError("corrupt NB201 table nb201.npz"), Status.SETUP),
    (_cuda_oom, Status.OOM),
    (_allocator_oom, Status.OOM),
    (_host_oom, Status.OOM),
    (lambda: ValueError("bad kernel size"), Status.FAILED),
    (lambda: RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 9x2)"), Status.FAILED),
]


@pytest.mark.parametrize("make, status", CASES)
def test_exceptions_and_their_tracebacks_classify_alike(make, status: Status) -> None:
    exc, text = _raised(make())
    assert classify(exc) is status
    assert classify_traceback(text) is status
    assert faults.status_from_traceback(text) is status  # the SLURM side delegates
    # the traceback a worker sends back, after the error was pickled there and raised again
    again, text_again = _raised(pickle.loads(pickle.dumps(exc)))
    assert classify(again) is status and classify_traceback(text_again) is status


def test_oom_found_in_the_chain_and_the_last_exception_decides_setup() -> None:
    try:
        try:
            raise _cuda_oom()
        except torch.cuda.OutOfMemoryError as oom:
            raise RuntimeError("training step failed") from oom
    except RuntimeError as exc:
        assert classify(exc) is Status.OOM
        assert classify_traceback(traceback.format_exc()) is Status.OOM
    try:
        try:
            raise DatasetNotFoundError("PTB", [], ["ptb.train.txt"])
        except DatasetError:
            raise ValueError("a bug while reporting") from None
    except ValueError as exc:
        assert classify(exc) is Status.FAILED
    assert classify_traceback("Traceback (most recent call last):\n  ...\nValueError: not about DatasetError") \
        is Status.FAILED  # fmt: skip


def test_setup_results_are_not_cached_and_safe_evaluate_raises_them(tmp_path: Path) -> None:
    assert Status.SETUP.value == "setup_error" and Status.SETUP not in CACHEABLE
    space = CNNSpace(num_layers=2)
    arch = space.sample(np.random.default_rng(0))

    class Broken(SyntheticEvaluator):
        def __init__(self, exc: BaseException) -> None:
            super().__init__(space)
            self.exc = exc

        def evaluate(self, arch, checkpoint_path=None):  # type: ignore[override]
            raise self.exc

    with pytest.raises(DeviceError, match="no CUDA device"):
        safe_evaluate(Broken(DeviceError("device 'cuda' requested but torch sees no CUDA device")), arch)
    oom = safe_evaluate(Broken(_cuda_oom()), arch)
    assert oom.status is Status.OOM and "OutOfMemoryError" in oom.error
    failed = safe_evaluate(Broken(ValueError("bad")), arch)
    assert failed.status is Status.FAILED and "ValueError: bad" in failed.error


def test_tabular_prepare_reads_the_table(tmp_path: Path) -> None:
    evaluator = TabularEvaluator()
    evaluator.prepare()
    broken = tmp_path / "nb201.npz"
    broken.write_bytes(b"not a zip archive")
    evaluator.table_path = str(broken)
    with pytest.raises(TableError, match=f"corrupt NB201 table {broken}"):
        evaluator.prepare()
    SyntheticEvaluator(CNNSpace(num_layers=2)).prepare()  # nothing to check
