"""Crash-point harness: stop a ``nas search`` at one named boundary, resume it, and compare with a clean run.

One check (:func:`crash_and_resume`):

1. run the search as a subprocess with ``NAS_CRASH_AT=NAME:K:SIGNAL`` (``NAS_WORKER_CRASH_AT`` for the
   ``worker.*`` boundaries, which the jobs inherit): the K-th boundary NAME (``*``: any) sends the process
   SIGKILL, SIGINT or SIGTERM; it must end with -9, 130 or 143 (exactly when it reached the boundary);
2. ``--resume`` it without the variable: it must exit 0;
3. compare with an uninterrupted reference run of the same scenario (:func:`run_reference`; same seed, same
   config): the told results, nothing trained twice, ``ResultStore.integrity_check()``, every proposal told
   exactly once, ``told_seq`` contiguous ``1..budget``.

The reference run is made with ``NAS_CRASH_AT=*:<huge>:KILL``, which never fires but makes the process count
every boundary; it reports the counts on exit, so a test learns how many boundaries of each kind a run passes
and picks its Ks over the run.
"""

from __future__ import annotations

import collections
import functools
import io
import json
import pickle
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.core import FACE_STATE
from agents.registry import SB3_AGENTS
from agents.run_dir import RunDir
from nas_env import crash_points
from nas_env.crash_points import DRIVER_VARIABLE, WORKER_VARIABLE
from nas_env.store import ResultStore

#: the exit status of a driver stopped by each signal (see ``nas_cli.main``)
EXIT_STATUS = {"KILL": -9, "INT": 130, "TERM": 143}

#: a K no run reaches: the boundaries are counted, nothing fires
NEVER = 10**9

#: runs the ``nas`` command line and writes the process's boundary counts (name -> hits) to argv[1] at exit
_COUNTING_MAIN = """
import atexit, json, sys
from nas_env import crash_points
from nas_cli.main import main
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(json.dumps(crash_points.boundaries_reached())))
sys.exit(main(sys.argv[2:]))
"""

ENVS = {"nb201": "NAS-Bench-201-v0", "synthetic": "NAS-Synthetic-v0"}


@dataclass(frozen=True)
class Scenario:
    """One search configuration: the same one for the reference and for every crashed run."""

    env: str = "nb201"  # "nb201" or "synthetic"
    agent: str = "reinforce"
    executor: str = "inline"
    parallel: int = 1
    budget: int = 3
    seed: int = 0
    epochs: int = 2  # synthetic only: epochs each checkpointed, so a re-run resumes rather than trains
    agent_kwargs: tuple[tuple[str, Any], ...] = ()
    extra_args: tuple[str, ...] = ()  # e.g. the SLURM partition
    timeout_s: float = 240.0
    #: run each driver as a child forked from this (already imported) process instead of a fresh interpreter:
    #: the same process boundary for signals and kills, without seconds of imports per run, which is what
    #: makes every K of a run affordable; False runs ``python -c`` like a user's shell would
    fork: bool = True

    @property
    def ordered(self) -> bool:
        """Whether two runs must tell the same results in the same order. Inline children run one at a time
        at submission, and one child in flight (``parallel=1``) is told before the next is asked, so an ask/tell
        agent's told order is a function of the seed. With several children in flight the results arrive in
        the order the jobs finish, which the OS decides; the agent is told in that order and so may ask for
        other architectures (compare a random agent, whose asks do not depend on results, as multisets)."""
        return self.executor == "inline" or self.parallel == 1

    @property
    def reproducible(self) -> bool:
        """Whether a crashed-and-resumed run must tell what the reference told. Not for the SB3 agents: their
        policy is saved after each policy update only (``sb3_model.zip``), so a resumed run goes on from the
        last update (reseeded with ``seed + told``) and asks for other architectures than the reference;
        their told prefix up to the crash is still compared, and their store checked like every other."""
        return self.agent not in SB3_AGENTS

    def env_kwargs(self, log_path: Path) -> dict[str, Any]:
        if self.env == "synthetic":
            return {"num_layers": 2, "epochs": self.epochs, "seconds_per_epoch": 0.0, "log_path": str(log_path)}
        return {}

    def command(self, run_dir: Path, log_path: Path, counts_path: Path) -> list[str]:
        return [
            sys.executable, "-c", _COUNTING_MAIN, str(counts_path), "search", "--env", ENVS[self.env],
            "--agent", self.agent, "--budget", str(self.budget), "--seed", str(self.seed),
            "--executor", self.executor, "--parallel", str(self.parallel),
            "--env-kwargs", json.dumps(self.env_kwargs(log_path)), "--agent-kwargs", json.dumps(dict(self.agent_kwargs)),
            "--run-dir", str(run_dir), "--no-progress",
            *self.extra_args,
        ]  # fmt: skip

    def resume_command(self, run_dir: Path, counts_path: Path) -> list[str]:
        return [sys.executable, "-c", _COUNTING_MAIN, str(counts_path), "search", "--resume", str(run_dir),
                "--no-progress"]  # fmt: skip


@dataclass
class RunState:
    """What a run directory holds once its driver has ended."""

    told: list[tuple[str, str, float]]  # (architecture key, status, reward) in told order
    told_seq: list[int]
    proposals: int
    in_flight: int
    integrity: list[str]
    evaluated: list[str]  # architecture keys in the store's evaluations
    fresh_told: list[str]  # architecture keys of results told fresh (not from the store's cache)
    trained_epochs: dict[str, int] = field(default_factory=dict)  # synthetic: epochs really trained, per key
    agent_state: Any = None  # the ask/tell face's last committed checkpoint (agent weights, optimizer, RNGs)


@dataclass
class Reference:
    scenario: Scenario
    state: RunState
    counts: dict[str, int]  # boundary name (and "*") -> how many an uninterrupted run passes


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (DRIVER_VARIABLE, WORKER_VARIABLE)}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return {**env, **extra}


def _run(
    command: list[str], extra_env: dict[str, str], timeout_s: float, fork: bool = False
) -> subprocess.CompletedProcess[str]:
    if fork:
        return _forked(command, extra_env, timeout_s)
    return subprocess.run(command, env=_env(extra_env), capture_output=True, text=True, timeout=timeout_s)


@functools.lru_cache(maxsize=None)
def _warm() -> None:
    """Import once in this process what every driver needs (torch's first layer initialisation alone imports
    torch._dynamo, seconds), so that forked children start warm."""
    import torch
    import torch._dynamo  # noqa: F401 - what the agents' first parameter initialisation imports

    import agents.evolution  # noqa: F401
    import agents.reinforce  # noqa: F401
    import agents.sb3  # noqa: F401
    import agents.search  # noqa: F401
    import slurm.dispatch  # noqa: F401
    from agents.core import make_env_parts

    for env_id in ENVS.values():
        make_env_parts(env_id, {})
    with torch.device("cpu"):  # as the agents build their networks
        torch.nn.Embedding(2, 2)


def _forked(command: list[str], extra_env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """``command`` (a :data:`_COUNTING_MAIN` command line) in a child forked from this process: its exit
    status as subprocess gives it (``-signal`` when killed), its stdout and stderr together as ``stderr``."""
    import tempfile
    import time

    from nas_cli.main import main

    _warm()
    assert command[1:3] == ["-c", _COUNTING_MAIN]
    counts_path, argv = command[3], command[4:]
    with tempfile.TemporaryFile("w+") as output:
        pid = os.fork()
        if pid == 0:  # the child: never returns into the test
            code = 1
            try:
                os.dup2(output.fileno(), 1)
                os.dup2(output.fileno(), 2)
                environment = _env(extra_env)
                os.environ.clear()
                os.environ.update(environment)
                import signal as signals

                for signum in (signals.SIGINT, signals.SIGTERM):
                    signals.signal(signum, signals.default_int_handler if signum == signals.SIGINT else signals.SIG_DFL)
                crash_points.forget_boundaries()
                import torch

                torch.set_num_threads(1)  # as a driver on a shared machine; and no OpenMP pool across fork
                code = main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - report it like an interpreter would
                import traceback

                traceback.print_exc()
            finally:
                try:
                    Path(counts_path).write_text(json.dumps(crash_points.boundaries_reached()))
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        deadline = time.monotonic() + timeout_s
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                raise subprocess.TimeoutExpired(command, timeout_s)
            time.sleep(0.02)
        output.seek(0)
        return subprocess.CompletedProcess(command, os.waitstatus_to_exitcode(status), "", output.read())


def read_state(scenario: Scenario, run_dir: Path, log_path: Path) -> RunState:
    with ResultStore(RunDir(run_dir).store_path) as store:
        told = store.told()
        state = RunState(
            told=[(r.arch_key, str(r.status), float(r.reward)) for r in told],  # type: ignore[arg-type]
            told_seq=[int(r.told_seq) for r in told],  # type: ignore[arg-type]
            proposals=store.num_proposals(),
            in_flight=store.num_in_flight(),
            integrity=store.integrity_check(),
            evaluated=[e.arch_key for e in store.evaluations()],
            fresh_told=[r.arch_key for r in told if not r.cached],
        )
        blobs = store.load_states(prefix=f"{FACE_STATE}/")
    if blobs:  # the agent's checkpoint parts as saved (pickled by the search face)
        state.agent_state = {name: pickle.loads(blob) for name, blob in sorted(blobs.items())}
    if scenario.env == "synthetic" and log_path.exists():
        trained: dict[str, int] = collections.Counter()
        for line in log_path.read_text().splitlines():
            entry = json.loads(line)
            trained[entry["key"]] += scenario.epochs - int(entry["resumed_from_epoch"])
        state.trained_epochs = dict(trained)
    return state


def run_reference(scenario: Scenario, folder: Path) -> Reference:
    """The uninterrupted run, counting its boundaries (``NAS_WORKER_CRASH_AT`` too: jobs count theirs)."""
    folder.mkdir(parents=True, exist_ok=True)
    run_dir, log_path, counts_path = folder / "run", folder / "trainings.jsonl", folder / "counts.json"
    spec = f"*:{NEVER}:KILL"
    out = _run(scenario.command(run_dir, log_path, counts_path), {DRIVER_VARIABLE: spec, WORKER_VARIABLE: spec},
               scenario.timeout_s, scenario.fork)  # fmt: skip
    assert out.returncode == 0, f"the reference run failed ({out.returncode}):\n{out.stderr[-3000:]}"
    state = read_state(scenario, run_dir, log_path)
    check_store(scenario, state)
    return Reference(scenario, state, json.loads(counts_path.read_text()))


def check_store(scenario: Scenario, state: RunState) -> None:
    """What every finished run directory must satisfy, crashed or not."""
    assert state.integrity == ["ok"], state.integrity
    assert state.in_flight == 0, f"{state.in_flight} proposals never told"
    assert state.proposals == scenario.budget == len(state.told), (state.proposals, len(state.told))
    assert state.told_seq == list(range(1, scenario.budget + 1)), state.told_seq  # each told once, in sequence
    # nothing trained twice: every stored evaluation was told fresh exactly once (a table lookup shows a second
    # evaluation only here) ...
    assert sorted(state.fresh_told) == sorted(state.evaluated), (state.fresh_told, state.evaluated)
    # ... and, for a child that really trains, its epochs add up to one training exactly (a re-run after a
    # lost result resumes from the child's checkpoint and trains nothing)
    if scenario.env == "synthetic":
        assert state.trained_epochs == {key: scenario.epochs for key in state.evaluated}, (
            f"trained epochs per architecture {state.trained_epochs}, expected {scenario.epochs} each"
        )


@dataclass
class CrashReport:
    name: str
    k: int
    signal: str
    first: subprocess.CompletedProcess[str]
    resumed: subprocess.CompletedProcess[str]
    told_at_crash: int
    state: RunState


def crash_and_resume(reference: Reference, folder: Path, name: str, k: int, signal: str) -> CrashReport:
    """Stop the scenario's search at the K-th boundary ``name`` with ``signal``, resume it, check it against
    ``reference``; returns what happened (the assertions have passed). A job boundary (``worker.*``) stops
    only the first job that reaches it: the task's next job (run again by the dispatcher) goes through."""
    scenario = reference.scenario
    folder.mkdir(parents=True, exist_ok=True)
    run_dir, log_path, counts_path = folder / "run", folder / "trainings.jsonl", folder / "counts.json"
    variable = WORKER_VARIABLE if name.startswith("worker.") else DRIVER_VARIABLE
    spec = f"{name}:{k}:{signal}" + (f":{folder / 'stopped-once'}" if variable == WORKER_VARIABLE else "")
    first = _run(scenario.command(run_dir, log_path, counts_path), {variable: spec},
                 scenario.timeout_s, scenario.fork)  # fmt: skip
    where = f"{name}:{k}:{signal} on {scenario}"
    if variable == DRIVER_VARIABLE:
        assert first.returncode == EXIT_STATUS[signal], (
            f"{where}: the driver ended with {first.returncode}, not {EXIT_STATUS[signal]}:\n{first.stderr[-3000:]}"
        )
    else:  # a job was stopped; the driver goes on and may finish by itself
        assert first.returncode == 0, f"{where}: the driver ended with {first.returncode}:\n{first.stderr[-3000:]}"
    with ResultStore(RunDir(run_dir).store_path) as store:
        assert store.integrity_check() == ["ok"], where
        crashed = [(r.arch_key, str(r.status), float(r.reward)) for r in store.told()]

    resumed = _run(scenario.resume_command(run_dir, counts_path), {}, scenario.timeout_s, scenario.fork)
    assert resumed.returncode == 0, f"{where}: the resume ended with {resumed.returncode}:\n{resumed.stderr[-3000:]}"
    state = read_state(scenario, run_dir, log_path)
    try:
        check_store(scenario, state)
        expected = reference.state.told
        if scenario.ordered:  # what was committed before the crash is the reference's beginning
            assert crashed == expected[: len(crashed)], (crashed, expected)
        else:
            assert not collections.Counter(crashed) - collections.Counter(expected), (crashed, expected)
        if scenario.reproducible:
            if scenario.ordered:
                assert state.told == expected, (state.told, expected)
                # the agent heard exactly what the reference agent heard, once each: its state is the same
                assert same(state.agent_state, reference.state.agent_state), "the agent's final state differs"
            else:
                assert collections.Counter(state.told) == collections.Counter(expected), (state.told, expected)
    except AssertionError as exc:
        raise AssertionError(f"{where}: {exc}\n--- crashed run stderr ---\n{first.stderr[-2000:]}"
                             f"\n--- resume stderr ---\n{resumed.stderr[-2000:]}") from None  # fmt: skip
    return CrashReport(name, k, signal, first, resumed, len(crashed), state)


def same(a: Any, b: Any) -> bool:
    """Deep equality of checkpoints: tensors and arrays element by element, containers recursively."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if hasattr(a, "__dict__") and type(a) is type(b) and not isinstance(a, type):
        return same(vars(a), vars(b))
    return bool(a == b)


def spread(n: int, count: int) -> list[int]:
    """``count`` values of K spread over ``1..n`` (every K when ``count >= n``), first and last included."""
    if count >= n:
        return list(range(1, n + 1))
    return sorted({1 + round(i * (n - 1) / (count - 1)) for i in range(count)})
