"""Architecture design as a Gymnasium environment (Zoph & Le, ICLR 2017).

Importing this package registers the environment ids ``NAS-CIFAR10-v0`` (train real children on
CIFAR-10), ``NAS-PTB-v0`` (search a recurrent cell, train language models on Penn Treebank),
``NAS-Bench-201-v0`` (tabular rewards, seconds per search) and ``NAS-Synthetic-v0`` (a free, exactly
known reward for testing agents).
"""

from nas_env.env import NASEnv
from nas_env.registration import CIFAR10_ID, NB201_ID, PTB_ID, SYNTHETIC_ID, register_envs
from nas_env.results import EvalResult, Status
from nas_env.spaces import Architecture, CNNArchitecture, CNNSpace, InvalidTokenError, SearchSpace
from nas_env.store import ResultStore

__version__ = "0.1.0"

register_envs()

__all__ = [
    "CIFAR10_ID",
    "NB201_ID",
    "PTB_ID",
    "SYNTHETIC_ID",
    "Architecture",
    "CNNArchitecture",
    "CNNSpace",
    "EvalResult",
    "InvalidTokenError",
    "NASEnv",
    "ResultStore",
    "SearchSpace",
    "Status",
]
