"""Evaluators turn an architecture into an :class:`EvalResult`.

An evaluator is a small picklable object: the dispatcher sends it, with the architecture, to a worker
(subprocess or SLURM job). ``fingerprint()`` names everything that changes the result (training
recipe, dataset, reward shaping), so the store keys a result by architecture + fingerprint.
"""

from __future__ import annotations

import abc
import hashlib
import json
import pickle
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nas_env.errors import DeviceError, SetupError
from nas_env.failures import classify
from nas_env.results import EvalResult, Status, failure
from nas_env.spaces.base import Architecture, SearchSpace


def reward_from_metric(metric: float, shaping: str = "cube") -> float:
    """The paper's reward is the validation accuracy cubed; ``shaping`` picks another monotone map.

    ``cube``: R = acc^3 (Zoph & Le); ``identity``: R = acc; ``square``: R = acc^2.
    """
    powers = {"identity": 1, "square": 2, "cube": 3}
    if shaping not in powers:
        raise ValueError(f"unknown reward shaping {shaping!r}; choose one of {sorted(powers)}")
    return float(metric) ** powers[shaping]


class Evaluator(abc.ABC):
    """Scores architectures. Subclasses must stay picklable (plain attributes, no open handles)."""

    #: reward recorded for failures (diverged, OOM, timeout, raised); the paper has no failures, 0 is natural
    failure_reward: float = 0.0

    @abc.abstractmethod
    def evaluate(self, arch: Architecture, checkpoint_path: str | Path | None = None) -> EvalResult:
        """Evaluate one architecture. ``checkpoint_path``: where a long evaluation may save and
        resume its progress (used when a SLURM job is preempted and requeued)."""

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """Everything that defines this evaluator's results, JSON-serialisable."""

    def fingerprint(self) -> str:
        """Short stable hash of :meth:`config`: part of the store key."""
        blob = json.dumps({"class": type(self).__name__, **self.config()}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def prepare(self, check_device: bool = True) -> None:
        """Check the machine, data and settings, once, in the driver before any child is submitted.

        Raises a :class:`~nas_env.errors.SetupError` naming the problem (an absent device, a missing or
        corrupt dataset, a recipe the data cannot satisfy), so a search stops before it trains anything
        instead of recording every child as failed. ``check_device``: whether the children run on this
        machine, so its devices are theirs (False for a driver that submits to SLURM). The default checks
        nothing.
        """

    def simulate(self, arch: Architecture) -> tuple[EvalResult, float]:
        """The result of ``arch`` and how many seconds its evaluation occupies a worker, without spending them
        (what the ``simulated`` executor runs). The default evaluates for real and takes the evaluator's own
        estimate (``simulated_train_time_s`` in the result, e.g. the NB201 table's training time) or the time
        it took. A SetupError raises, as in :func:`safe_evaluate`."""
        result = safe_evaluate(self, arch)
        return result, float(result.extra.get("simulated_train_time_s", result.wall_time_s))

    def __call__(self, arch: Architecture) -> EvalResult:
        return self.evaluate(arch)

    # Evaluators that can tell an architecture's cost without training it also define
    # ``cost(arch) -> {"params": int, "flops": int | None}``; :class:`nas_env.cost.CostAwareEvaluator` needs it.


class SyntheticEvaluator(Evaluator):
    """A cheap, exactly known reward over a real token space: the fraction of decisions that match a
    hidden target architecture (sampled from ``target_seed``). Under a depth curriculum, an
    architecture of another depth is compared with the target of its own depth.

    Used to test that agents learn, and to exercise dispatchers without GPU time. It can pretend to
    train for ``epochs`` epochs of ``seconds_per_epoch`` each (saving progress to ``checkpoint_path``
    so a preempted job resumes), raise for the architectures whose canonical keys are in
    ``fail_keys`` (fault injection for tests and demos), and append one line per finished evaluation
    to ``log_path`` (so a test can show that nothing was trained twice; each line also holds the Unix
    times the evaluation started and ended, so a test can show which children ran at once).
    """

    def __init__(
        self,
        space: SearchSpace,
        target_seed: int = 0,
        epochs: int = 1,
        seconds_per_epoch: float = 0.0,
        fail_keys: Sequence[str] = (),
        failure_reward: float = 0.0,
        log_path: str | Path | None = None,
    ) -> None:
        self.space = space
        self.log_path = None if log_path is None else str(log_path)
        self.target_seed = int(target_seed)
        self.target_tokens = self._target(space)
        self.epochs = int(epochs)
        self.seconds_per_epoch = float(seconds_per_epoch)
        self.fail_keys = frozenset(fail_keys)
        self.failure_reward = float(failure_reward)

    def config(self) -> dict[str, Any]:
        return {
            "space": {"name": self.space.name, **self.space.config()},
            "target_seed": self.target_seed,
            "epochs": self.epochs,
        }

    def _target(self, space: SearchSpace) -> tuple[int, ...]:
        # a random stream of its own, so that an agent seeded like the target does not start on it
        return space.sample_tokens(np.random.default_rng([self.target_seed, 1611_01578]))

    def _space_of(self, arch: Architecture) -> SearchSpace:
        depth = getattr(arch, "num_layers", None)
        if depth is not None and depth != getattr(self.space, "num_layers", depth):
            return self.space.with_layers(depth)  # type: ignore[attr-defined]
        return self.space

    def score(self, tokens: Sequence[int], space: SearchSpace | None = None) -> float:
        """Fraction of decisions equal to the target's (in ``space``, default the evaluator's own)."""
        target = self.target_tokens if space is None else self._target(space)
        return float(np.mean(np.asarray(tokens) == np.asarray(target)))

    def simulate(self, arch: Architecture) -> tuple[EvalResult, float]:
        """The same result as :meth:`evaluate`, at once; it would take ``epochs x seconds_per_epoch``."""
        return self._evaluate(arch, None, sleep=False), self.epochs * self.seconds_per_epoch

    def cost(self, arch: Architecture) -> dict[str, int]:
        """Params and FLOPs of the CNN child (closed form, 32x32, nothing built): what a real child would cost."""
        from nas_env.children.cnn import cnn_cost
        from nas_env.spaces.cnn import CNNArchitecture

        if not isinstance(arch, CNNArchitecture):
            raise TypeError(f"the synthetic evaluator counts the cost of CNN architectures only, not {type(arch).__name__}")
        return cnn_cost(arch)

    def evaluate(self, arch: Architecture, checkpoint_path: str | Path | None = None) -> EvalResult:
        return self._evaluate(arch, checkpoint_path, sleep=True)

    def _evaluate(self, arch: Architecture, checkpoint_path: str | Path | None, sleep: bool) -> EvalResult:
        start, started_at = time.perf_counter(), time.time()
        if self.space.key(arch) in self.fail_keys:
            raise RuntimeError(f"injected failure for architecture {self.space.key(arch)}")
        space = self._space_of(arch)
        metric = self.score(space.encode(arch), space)
        epoch, resumed_from = 0, 0
        path = Path(checkpoint_path) if checkpoint_path else None
        if path is not None and path.exists():
            epoch = resumed_from = pickle.loads(path.read_bytes())["epoch"]
        while epoch < self.epochs:
            if sleep:
                time.sleep(self.seconds_per_epoch)
            epoch += 1
            if path is not None:
                path.write_bytes(pickle.dumps({"epoch": epoch}))
        curve = tuple(metric * (e + 1) / self.epochs for e in range(self.epochs))
        if self.log_path is not None:
            with open(self.log_path, "a") as log:
                line = {"key": self.space.key(arch), "resumed_from_epoch": resumed_from, "started": started_at,
                        "ended": time.time()}  # fmt: skip
                log.write(json.dumps(line) + "\n")
        return EvalResult(
            status=Status.OK,
            reward=metric,
            metric=metric,
            curve=curve,
            wall_time_s=time.perf_counter() - start,
            extra={"resumed_from_epoch": resumed_from},
        )


def safe_evaluate(evaluator: Evaluator, arch: Architecture, checkpoint_path: str | Path | None = None) -> EvalResult:
    """Run ``evaluator`` and turn an exception into a result (status from :func:`nas_env.failures.classify`:
    OOM or FAILED, traceback kept).

    Setup errors (:class:`~nas_env.errors.SetupError`: a missing or corrupt dataset, an absent device) still
    raise: they are not the child's fault and would fail every other child the same way.
    """
    start = time.perf_counter()
    try:
        return evaluator.evaluate(arch, checkpoint_path=checkpoint_path)
    except SetupError:
        raise
    except Exception as exc:  # noqa: BLE001 - a failing child is a result, never a crashed search
        return failure(
            classify(exc),
            error=traceback.format_exc(),
            reward=evaluator.failure_reward,
            wall_time_s=time.perf_counter() - start,
        )


#: named training recipes: the paper's, and small ones that train on a CPU in seconds
RECIPE_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},  # 50 epochs, all 45,000 training images, 32x32, batch 128, SGD 0.1 nesterov
    # ~15 s on a 2-core CPU, ~50% validation accuracy: every image of the subset's split for more epochs at
    # 8x8 (a 6-layer child then sees the whole image), a warm-up to a high rate and a linear decay, label
    # smoothing, no augmentation (it only pays over long training), 555 validation images (fewer ties)
    "cpu-demo": {"epochs": 8, "train_images": 4992, "val_images": 555, "resolution": 8, "batch_size": 128,
                 "lr": 0.2, "warmup": 0.1, "lr_schedule": "linear", "label_smoothing": 0.1, "augment": False},
    "tiny": {"epochs": 1, "train_images": 256, "val_images": 128, "resolution": 16, "batch_size": 64},
}


def resolve_recipe(recipe: Any) -> Any:
    """A :class:`~nas_env.training.TrainingRecipe` from a recipe, a dict of its fields or a preset name."""
    from nas_env.recipe import recipe_from
    from nas_env.training import TrainingRecipe

    return recipe_from(recipe, TrainingRecipe, RECIPE_PRESETS, "training recipe")


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; any other name is checked.

    A :class:`~nas_env.errors.DeviceError` for a name torch does not know, for ``cuda`` (or ``cuda:N``)
    where torch sees no CUDA device, and for an index beyond the devices torch sees.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"unknown device {device!r} ({exc}); use cpu, cuda, cuda:N or auto") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} requested but torch sees no CUDA device on this machine;"
                              " use --device cpu or auto")  # fmt: skip
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise DeviceError(f"device {device!r} requested but torch sees {count} CUDA device(s)"
                              f" (cuda:0..cuda:{count - 1}); pick one of those, or use --device auto")  # fmt: skip
    return device


class TrainingEvaluator(Evaluator):
    """Train the child CNN on CIFAR-10 with a training recipe; reward = shaped max validation accuracy of the
    last ``reward_last_epochs`` epochs (the paper: (max of the last 5)^3).

    The data is read once per process (from ``data_dir``, ``NAS_DATA_DIR`` or the verified download)
    and kept on the device; the train/validation split is seeded (``split_seed``), 10% held out as in
    the paper's 45,000/5,000.
    """

    def __init__(
        self,
        recipe: Any = "paper",
        data_dir: str | Path | None = None,
        device: str = "auto",
        seed: int = 0,
        reward_shaping: str = "cube",
        reward_last_epochs: int = 5,
        compile: bool = False,
        failure_reward: float = 0.0,
        split_seed: int = 0,
        num_val: int | None = None,
        download: bool = True,
    ) -> None:
        self.recipe = resolve_recipe(recipe)
        reward_from_metric(0.5, reward_shaping)  # validates the name now, not in a worker
        if reward_last_epochs < 1:
            raise ValueError(f"reward_last_epochs must be >= 1, got {reward_last_epochs}")
        self.data_dir = None if data_dir is None else str(data_dir)
        self.device = device
        self.seed = int(seed)
        self.reward_shaping = reward_shaping
        self.reward_last_epochs = int(reward_last_epochs)
        self.compile = bool(compile)
        self.failure_reward = float(failure_reward)
        self.split_seed = int(split_seed)
        self.num_val = num_val
        self.download = bool(download)

    def config(self) -> dict[str, Any]:
        return {
            "dataset": "cifar10",
            "recipe": self.recipe.to_dict(),
            "seed": self.seed,
            "reward_shaping": self.reward_shaping,
            "reward_last_epochs": self.reward_last_epochs,
            "split_seed": self.split_seed,
            "num_val": self.num_val,
        }

    def prepare(self, check_device: bool = True) -> None:
        """Check the device, find CIFAR-10 (downloading it once if allowed), read and verify every
        training batch file, and check the recipe's image counts fit the split; SetupError otherwise."""
        from nas_env.data.cifar10 import load_cifar10_splits

        if check_device:  # not where the children run elsewhere (a SLURM driver on a login node)
            resolve_device(self.device)
        splits = load_cifar10_splits(self.data_dir, num_val=self.num_val, seed=self.split_seed, download=self.download)
        r = self.recipe
        for field, wanted, have in (("train_images", r.train_images, len(splits.train_labels)),
                                    ("val_images", r.val_images, len(splits.val_labels))):  # fmt: skip
            if wanted is not None and wanted > have:
                raise SetupError(f"the recipe asks for {field}={wanted} but the CIFAR-10 split has {have};"
                                 f" lower {field} or point NAS_DATA_DIR at a larger copy of CIFAR-10")  # fmt: skip

    def data(self, device: str) -> Any:
        """The recipe's training/validation tensors on ``device``, loaded once per process."""
        from nas_env.data.cifar10 import load_cifar10_splits
        from nas_env.data_cache import cached
        from nas_env.training import prepare_data

        def build() -> Any:
            splits = load_cifar10_splits(self.data_dir, num_val=self.num_val, seed=self.split_seed,
                                         download=self.download)  # fmt: skip
            return prepare_data(splits.train_images, splits.train_labels, splits.val_images, splits.val_labels,
                                self.recipe, device=device, seed=self.seed)  # fmt: skip

        r = self.recipe
        return cached(("cifar10-train", self.data_dir, self.split_seed, self.num_val, r.train_images, r.val_images,
                       r.resolution, device, self.seed), build)  # fmt: skip

    def evaluate(self, arch: Architecture, checkpoint_path: str | Path | None = None) -> EvalResult:
        import torch

        from nas_env.children.cnn import count_flops, count_params
        from nas_env.training import train_child

        device = resolve_device(self.device)
        data = self.data(device)
        torch.manual_seed(self.seed)
        model = self.build_model(arch)
        params, flops = count_params(model), count_flops(arch, resolution=self.recipe.resolution)  # type: ignore[arg-type]
        outcome = train_child(model, data, self.recipe, device=device, seed=self.seed, compile=self.compile,
                              checkpoint_path=checkpoint_path)
        common = {
            "curve": tuple(outcome.val_curve),
            "params": params,
            "flops": flops,
            "wall_time_s": outcome.wall_time_s,
            "extra": {
                "epochs_done": outcome.epochs_done,
                "train_images_per_s": outcome.train_images_per_s,
                "resumed_from_epoch": outcome.resumed_from_epoch,
                "device": device,
                "torch_threads": torch.get_num_threads(),
            },
        }
        if outcome.status is not Status.OK:
            return EvalResult(status=outcome.status, reward=self.failure_reward, error=outcome.error, **common)
        metric = float(outcome.max_recent_accuracy(self.reward_last_epochs))
        result = EvalResult(status=Status.OK, reward=reward_from_metric(metric, self.reward_shaping), metric=metric,
                            **common)  # fmt: skip
        return self.after_training(model, arch, result, device)

    def cost(self, arch: Architecture) -> dict[str, int]:
        """Params and FLOPs (at the recipe's resolution) of the child, counted in closed form without training."""
        from nas_env.children.cnn import cnn_cost

        return cnn_cost(arch, resolution=self.recipe.resolution)  # type: ignore[arg-type]

    def build_model(self, arch: Architecture) -> Any:
        """The child to train (under the seeded global RNG); subclasses change its hyperparameters."""
        from nas_env.children.cnn import build_cnn

        return build_cnn(arch)  # type: ignore[arg-type]

    def after_training(self, model: Any, arch: Architecture, result: EvalResult, device: str) -> EvalResult:
        """A hook on a successful training run (e.g. test accuracy, saved weights); the result as is here."""
        return result
