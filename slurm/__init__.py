"""Run child evaluations as jobs: local subprocesses, SLURM job arrays (through submitit) or inline.

The search loop uses :class:`Dispatcher` with an :class:`ExecutorConfig`; ``slurm/cluster/`` holds the
scripts that start a real one-node SLURM for tests and CI (see ``slurm/cluster/README.md``).
"""

from slurm.config import EXECUTORS, ClusterConfigError, ExecutorConfig
from slurm.dispatch import Completed, Dispatcher, Task
from slurm.job import EvaluateTask, checkpoint_path

__all__ = [
    "EXECUTORS",
    "ClusterConfigError",
    "Completed",
    "Dispatcher",
    "EvaluateTask",
    "ExecutorConfig",
    "Task",
    "checkpoint_path",
]
