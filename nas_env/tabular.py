"""The NAS-Bench-201 tabular benchmark: the packaged table and an evaluator that looks rewards up.

``NB201Table`` reads ``nas_env/data/tables/nb201.npz`` (built by ``scripts/build_nb201_table.py``
from the shared CSV; provenance in ``nas_env/data/tables/README.md``) once per process. Accuracies
in the table are in % (as published); :class:`TabularEvaluator` reports them in [0, 1].

Datasets (NB201 names) and where the reward comes from:

* ``cifar10-valid``: reward = ``cifar10valid_valid_acc_{12,200}ep`` (the standard NB201 search
  reward); ``test_accuracy`` = ``cifar10_test_acc_200ep`` (the usual "CIFAR-10 test" number) and
  ``cifar10valid_test_accuracy`` = ``cifar10valid_test_acc_200ep`` (same model as the reward).
* ``cifar10``: the table has no validation column for the 50k-image model, so the reward is the
  cifar10-valid validation accuracy (as in NB201's own protocol); the test reported is ``cifar10``'s.
* ``cifar100``, ``ImageNet16-120``: validation accuracy exists only after 12 epochs, so only
  ``fidelity=12`` is possible; the 200-epoch test accuracy is still reported in ``extra``.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nas_env.data.paths import DatasetError
from nas_env.evaluators import Evaluator, reward_from_metric
from nas_env.results import EvalResult, Status
from nas_env.spaces.base import Architecture
from nas_env.spaces.nb201 import NUM_ARCHITECTURES, NB201Architecture

TABLE_PATH = Path(__file__).resolve().parent / "data" / "tables" / "nb201.npz"
FORMAT_VERSION = 1
FIDELITIES = (12, 200)
REBUILD_HINT = "rebuild it with `python scripts/build_nb201_table.py` (needs the shared nasbench201 CSV)"


class TableError(DatasetError):
    """The packaged table is missing, unreadable, or not the expected format.

    A :class:`DatasetError`, so ``safe_evaluate`` raises it (a setup problem) instead of recording
    every child as failed.
    """


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Where one NB201 dataset's numbers live in the table (``None``: not in the table)."""

    name: str
    valid_prefix: str  # the reward column is f"{valid_prefix}_valid_acc_{fidelity}ep"
    test_prefix: str  # test columns are f"{test_prefix}_test_acc_{12,200}ep"
    cost_suffix: str  # params_<suffix>, flops_<suffix>
    extra_test: Mapping[str, str] = dataclasses.field(default_factory=dict)  # extra key -> column

    def valid_column(self, fidelity: int) -> str:
        return f"{self.valid_prefix}_valid_acc_{fidelity}ep"

    def test_column(self, fidelity: int) -> str:
        return f"{self.test_prefix}_test_acc_{fidelity}ep"


DATASETS: dict[str, DatasetSpec] = {
    "cifar10-valid": DatasetSpec(
        "cifar10-valid", "cifar10valid", "cifar10", "cifar10",
        extra_test={"cifar10valid_test_accuracy": "cifar10valid_test_acc_200ep"},
    ),
    "cifar10": DatasetSpec("cifar10", "cifar10valid", "cifar10", "cifar10"),
    "cifar100": DatasetSpec("cifar100", "cifar100", "cifar100", "cifar100"),
    "ImageNet16-120": DatasetSpec("ImageNet16-120", "imagenet16_120", "imagenet16_120", "imagenet16_120"),
}


def dataset_spec(dataset: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of an NB201 dataset name; a clear error for unknown names."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown NB201 dataset {dataset!r}; choose one of {list(DATASETS)}")
    return DATASETS[dataset]


@dataclasses.dataclass(frozen=True)
class Optimum:
    """The best value of one table column (in the table's units: % for accuracies) and where it is."""

    column: str
    value: float
    indices: tuple[int, ...]

    @property
    def fraction(self) -> float:
        """``value / 100``: comparable with :attr:`EvalResult.metric`."""
        return self.value / 100.0


class NB201Table:
    """All 15,625 NB201 rows, indexed by the official index. Arrays are read-only and shared."""

    REQUIRED = (
        "format_version", "source_sha256", "arch_str", "iso_class_id",
        "cifar10valid_valid_acc_12ep", "cifar10valid_valid_acc_200ep", "cifar100_valid_acc_12ep",
        "imagenet16_120_valid_acc_12ep", "cifar10_test_acc_200ep", "cifar10valid_test_acc_200ep",
        "cifar10_test_acc_12ep", "cifar100_test_acc_12ep", "cifar100_test_acc_200ep",
        "imagenet16_120_test_acc_12ep", "imagenet16_120_test_acc_200ep",
        "cifar10valid_train_time_per_epoch_s", "cifar10valid_train_time_200ep_s",
        "params_cifar10", "params_cifar100", "params_imagenet16_120",
        "flops_cifar10", "flops_cifar100", "flops_imagenet16_120",
    )
    META = ("format_version", "source_sha256")

    def __init__(self, arrays: Mapping[str, np.ndarray], path: Path | str = "<memory>") -> None:
        self.path = Path(path)
        self._check(arrays)
        self.source_sha256 = str(arrays["source_sha256"])
        self._columns: dict[str, np.ndarray] = {}
        for name, array in arrays.items():
            if name not in self.META:
                array = np.array(array)
                array.setflags(write=False)
                self._columns[name] = array
        self._index = {s: i for i, s in enumerate(self._columns["arch_str"].tolist())}
        if len(self._index) != NUM_ARCHITECTURES:
            raise TableError(f"NB201 table {self.path}: arch_str values are not unique; {REBUILD_HINT}")

    def _check(self, arrays: Mapping[str, np.ndarray]) -> None:
        missing = [name for name in self.REQUIRED if name not in arrays]
        if missing:
            raise TableError(f"NB201 table {self.path} lacks columns {missing}; {REBUILD_HINT}")
        if int(arrays["format_version"]) != FORMAT_VERSION:
            found = int(arrays["format_version"])
            raise TableError(f"NB201 table {self.path} has format {found}, expected {FORMAT_VERSION}; {REBUILD_HINT}")
        bad = [n for n in self.REQUIRED if n not in self.META and np.shape(arrays[n]) != (NUM_ARCHITECTURES,)]
        if bad:
            raise TableError(
                f"NB201 table {self.path}: columns {bad} do not have {NUM_ARCHITECTURES} rows; {REBUILD_HINT}"
            )

    @classmethod
    def load(cls, path: Path | str | None = None) -> "NB201Table":
        """The table at ``path`` (default: the packaged one), read once per process and path."""
        return _load_cached(str(Path(path).resolve() if path is not None else TABLE_PATH))

    def __len__(self) -> int:
        return NUM_ARCHITECTURES

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self._columns)

    def column(self, name: str) -> np.ndarray:
        """One whole column (read-only), in index order."""
        if name not in self._columns:
            raise KeyError(f"the NB201 table has no column {name!r}; it has {sorted(self._columns)}")
        return self._columns[name]

    def has_column(self, name: str) -> bool:
        return name in self._columns

    def arch_str(self, index: int) -> str:
        return str(self._columns["arch_str"][self._check_index(index)])

    def index_of(self, arch_str: str) -> int:
        """The official index of an arch string (exact match: isomorphic cells have their own rows)."""
        try:
            return self._index[arch_str]
        except KeyError:
            raise KeyError(f"{arch_str!r} is not an NB201 arch string in the table") from None

    def index_of_architecture(self, arch: NB201Architecture) -> int:
        """The official NB201 / NATS-tss index of ``arch`` (its row in this table)."""
        if not isinstance(arch, NB201Architecture):
            raise TypeError(f"{arch!r} is not an NB201 architecture")
        return self.index_of(arch.arch_str)

    def architecture(self, index: int) -> NB201Architecture:
        """The architecture at official index ``index`` (inverse of :meth:`index_of_architecture`)."""
        return NB201Architecture.from_arch_str(self.arch_str(index))

    def row(self, index: int) -> dict[str, Any]:
        """Every column at ``index`` as plain Python values (accuracies in %, times in s, counts)."""
        i = self._check_index(index)
        out: dict[str, Any] = {"index": i}
        for name, array in self._columns.items():
            out[name] = array[i].item()
        return out

    def optimum(self, dataset: str, metric: str = "test", fidelity: int = 200) -> Optimum:
        """Best ``metric`` ("valid" or "test") of ``dataset`` at ``fidelity`` epochs; ties list every index."""
        spec = dataset_spec(dataset)
        if metric not in ("valid", "test"):
            raise ValueError(f"metric must be 'valid' or 'test', got {metric!r}")
        name = spec.valid_column(fidelity) if metric == "valid" else spec.test_column(fidelity)
        if name not in self._columns:
            raise ValueError(f"{dataset}: the NB201 table has no column {name!r} ({metric} at {fidelity} epochs)")
        values = self._columns[name]
        best = float(values.max())
        return Optimum(name, best, tuple(int(i) for i in np.flatnonzero(values == best)))

    @staticmethod
    def _check_index(index: int) -> int:
        if not isinstance(index, (int, np.integer)) or not 0 <= int(index) < NUM_ARCHITECTURES:
            raise IndexError(f"NB201 index {index!r} outside 0..{NUM_ARCHITECTURES - 1}")
        return int(index)


@functools.lru_cache(maxsize=None)
def _load_cached(path: str) -> NB201Table:
    """Read and check an npz table (cached per path: one read per process)."""
    file = Path(path)
    if not file.is_file():
        raise TableError(f"NB201 table not found: {file}; {REBUILD_HINT}")
    try:
        with np.load(file, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}  # read everything now: corrupt data fails here
    except Exception as exc:  # zipfile.BadZipFile, zlib.error, ValueError (pickled/garbage), OSError, EOFError
        raise TableError(f"corrupt NB201 table {file}: {type(exc).__name__}: {exc}; {REBUILD_HINT}") from exc
    return NB201Table(arrays, file)


class TabularEvaluator(Evaluator):
    """Looks an NB201 architecture up instead of training it: reward from validation accuracy only.

    ``fidelity`` is the training budget in epochs (12 or 200); ``reward_shaping`` maps the metric
    (validation accuracy in [0, 1]) to the reward (see :func:`reward_from_metric`). ``noise`` is the
    standard deviation of Gaussian noise added to the metric (in [0, 1] units, clipped), drawn from
    ``(noise_seed, index)``: it stands in for seed-to-seed variation that the table's means hide,
    and stays deterministic per architecture. Test accuracy is only ever reported in ``extra``.
    """

    def __init__(
        self,
        dataset: str = "cifar10-valid",
        fidelity: int = 200,
        reward_shaping: str = "identity",
        noise: float = 0.0,
        noise_seed: int = 0,
        table_path: str | Path | None = None,
    ) -> None:
        self.spec = dataset_spec(dataset)
        self.dataset = dataset
        self.fidelity = int(fidelity)
        if self.fidelity not in FIDELITIES:
            raise ValueError(f"fidelity must be one of {FIDELITIES} epochs (the NB201 schedules), got {fidelity!r}")
        reward_from_metric(1.0, reward_shaping)  # raises for an unknown shaping
        self.reward_shaping = reward_shaping
        if not float(noise) >= 0.0:
            raise ValueError(f"noise must be a standard deviation >= 0, got {noise!r}")
        self.noise = float(noise)
        self.noise_seed = int(noise_seed)
        self.table_path = str(table_path) if table_path is not None else None
        self._check_columns(self.table())

    def _check_columns(self, table: NB201Table) -> None:
        valid = self.spec.valid_column(self.fidelity)
        if not table.has_column(valid):
            raise ValueError(
                f"NB201 {self.dataset} at fidelity {self.fidelity}: the table has no validation column {valid!r} "
                f"(no public copy has it); use fidelity=12, which has {self.spec.valid_column(12)!r}"
            )

    def table(self) -> NB201Table:
        return NB201Table.load(self.table_path)

    def prepare(self, check_device: bool = True) -> None:
        """Check the table is readable and has this dataset's reward column (TableError otherwise)."""
        self._check_columns(self.table())

    def config(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "fidelity": self.fidelity,
            "reward_shaping": self.reward_shaping,
            "noise": self.noise,
            "noise_seed": self.noise_seed,
        }

    def evaluate(self, arch: Architecture, checkpoint_path: str | Path | None = None) -> EvalResult:
        """Look ``arch`` up; ``checkpoint_path`` is ignored (a lookup has nothing to resume)."""
        start = time.perf_counter()
        if not isinstance(arch, NB201Architecture):
            raise TypeError(f"TabularEvaluator needs an NB201Architecture, got {type(arch).__name__}")
        table = self.table()
        index = table.index_of(arch.arch_str)
        clean = self._accuracy(table, self.spec.valid_column(self.fidelity), index)
        metric = self._noisy(clean, index)
        return EvalResult(
            status=Status.OK,
            reward=reward_from_metric(metric, self.reward_shaping),
            metric=metric,
            params=int(table.column(f"params_{self.spec.cost_suffix}")[index]),
            flops=int(table.column(f"flops_{self.spec.cost_suffix}")[index]),
            wall_time_s=time.perf_counter() - start,
            extra=self._extra(table, index, clean),
        )

    def cost(self, arch: Architecture) -> dict[str, int]:
        """The table's parameter count and FLOPs (MACs) of ``arch`` for this dataset (no lookup of accuracy)."""
        if not isinstance(arch, NB201Architecture):
            raise TypeError(f"TabularEvaluator needs an NB201Architecture, got {type(arch).__name__}")
        table = self.table()
        index = table.index_of(arch.arch_str)
        return {"params": int(table.column(f"params_{self.spec.cost_suffix}")[index]),
                "flops": int(table.column(f"flops_{self.spec.cost_suffix}")[index])}  # fmt: skip

    @staticmethod
    def _accuracy(table: NB201Table, column: str, index: int) -> float:
        return float(table.column(column)[index]) / 100.0

    def _noisy(self, metric: float, index: int) -> float:
        if self.noise == 0.0:
            return metric
        draw = np.random.default_rng([self.noise_seed, index]).normal(0.0, self.noise)
        return float(np.clip(metric + draw, 0.0, 1.0))

    def simulated_train_time_s(self, table: NB201Table, index: int) -> float:
        """Training cost of the fidelity. The table only times cifar10-valid, so every dataset uses it.

        Rounded to 1e-4 s: the times are stored as float32 (error <= 1.2e-4 s).
        """
        if self.fidelity == 200:
            seconds = float(table.column("cifar10valid_train_time_200ep_s")[index])
        else:
            seconds = self.fidelity * float(table.column("cifar10valid_train_time_per_epoch_s")[index])
        return round(seconds, 4)

    def _extra(self, table: NB201Table, index: int, clean_metric: float) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "nb201_index": index,
            "iso_class_id": int(table.column("iso_class_id")[index]),
            "test_accuracy": self._accuracy(table, self.spec.test_column(200), index),
            "test_accuracy_12ep": self._accuracy(table, self.spec.test_column(12), index),
            "simulated_train_time_s": self.simulated_train_time_s(table, index),
        }
        for key, column in self.spec.extra_test.items():
            extra[key] = self._accuracy(table, column, index)
        if self.noise:
            extra["noise_free_metric"] = clean_metric
        return extra
