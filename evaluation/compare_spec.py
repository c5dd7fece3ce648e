"""What defines a comparison and where its files are: the spec (``OUT/compare.json``), the run folders
(``OUT/runs/<label>-seed<seed>``) and the timing sessions (``OUT/timings.json``).

Shared by :mod:`evaluation.compare`, which runs a comparison, and :mod:`evaluation.report`, which reads one
back; neither needs the other for these.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

from agents.run_dir import SearchConfig

#: the executor of every run unless told otherwise: table lookups are cheapest in the driver process
DEFAULT_EXECUTOR: dict[str, Any] = {"executor": "inline", "max_in_flight": 1}
SPEC_FILE = "compare.json"
TIMINGS_FILE = "timings.json"


class CompareError(RuntimeError):
    """A comparison cannot start (bad agents, a folder holding another comparison) or some runs failed."""


@dataclasses.dataclass(frozen=True)
class AgentSpec:
    """One competitor: a ``label`` (names its runs and its table row), the agent's registry name, and its
    hyperparameters. The same agent may appear twice under two labels (e.g. two REINFORCE settings)."""

    label: str
    agent: str
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- the spec
@dataclasses.dataclass
class CompareSpec:
    """Everything that defines a comparison (written to ``OUT/compare.json``)."""

    env_id: str
    agents: list[AgentSpec]
    seeds: list[int]
    budget: int
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_simulated_time_s: float | None = None
    max_wall_time_s: float | None = None
    executor: dict[str, Any] = dataclasses.field(default_factory=lambda: dict(DEFAULT_EXECUTOR))
    confidence: float = 0.95
    reference: str | None = None  # the label others are compared with (default: "random" when present)

    def __post_init__(self) -> None:
        if not self.agents:
            raise CompareError("a comparison needs at least one agent")
        if not self.seeds:
            raise CompareError("a comparison needs at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise CompareError(f"seeds repeat: {self.seeds}")
        labels = [a.label for a in self.agents]
        if self.reference is not None and self.reference not in labels:
            raise CompareError(f"reference {self.reference!r} is not one of the agents {labels}")
        if not 0.0 < self.confidence < 1.0:
            raise CompareError(f"confidence must be in (0, 1), got {self.confidence}")
        for spec in self.agents:  # a bad budget or time limit fails here, before any run starts
            self.run_config(spec, self.seeds[0])

    @property
    def reference_label(self) -> str | None:
        labels = [a.label for a in self.agents]
        return self.reference or ("random" if "random" in labels and len(labels) > 1 else None)

    def run_config(self, spec: AgentSpec, seed: int) -> SearchConfig:
        """The search config of one (agent, seed) run."""
        return SearchConfig(
            env_id=self.env_id,
            env_kwargs=dict(self.env_kwargs),
            agent=spec.agent,
            agent_kwargs=dict(spec.kwargs),
            seed=int(seed),
            budget=int(self.budget),
            max_wall_time_s=self.max_wall_time_s,
            max_simulated_time_s=self.max_simulated_time_s,
            executor=dict(self.executor),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CompareSpec":
        d = dict(d)
        d["agents"] = [AgentSpec(**a) for a in d["agents"]]
        return cls(**d)


def run_name(label: str, seed: int) -> str:
    return f"{label}-seed{seed}"


def runs_dir(out_dir: Path) -> Path:
    return Path(out_dir) / "runs"


def read_spec(out_dir: str | Path) -> CompareSpec:
    path = Path(out_dir) / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir} holds no comparison ({SPEC_FILE} is missing)")
    return CompareSpec.from_dict(json.loads(path.read_text()))


def write_spec(out_dir: Path, spec: CompareSpec) -> None:
    path = out_dir / SPEC_FILE
    if path.is_file() and read_spec(out_dir).to_dict() != spec.to_dict():
        raise CompareError(f"{out_dir} already holds a different comparison ({SPEC_FILE}); choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec.to_dict(), indent=2, sort_keys=True) + "\n")


def read_timings(out: Path) -> list[dict[str, Any]]:
    """The timing sessions recorded in ``out`` (an older single-session file counts as one session)."""
    path = Path(out) / TIMINGS_FILE
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    return data["sessions"] if "sessions" in data else [{"started": "-", **data}]
