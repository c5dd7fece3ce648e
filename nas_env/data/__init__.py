"""Datasets: where they are (``NAS_DATA_DIR``), how they are downloaded and read, and their errors."""

from nas_env.data.cifar10 import (
    CLASSES,
    OFFICIAL_MD5,
    OFFICIAL_URL,
    CIFAR10Splits,
    find_cifar10,
    load_cifar10,
    load_cifar10_splits,
    train_val_split,
)
from nas_env.data.paths import (
    CorruptDatasetError,
    DatasetDownloadError,
    DatasetError,
    DatasetNotFoundError,
    cache_dir,
    data_root,
)
from nas_env.data.ptb import PTB_URL, PTBCorpus, batchify, find_ptb, load_ptb, load_ptb_corpus

__all__ = [
    "CLASSES",
    "OFFICIAL_MD5",
    "OFFICIAL_URL",
    "PTB_URL",
    "PTBCorpus",
    "CIFAR10Splits",
    "CorruptDatasetError",
    "DatasetDownloadError",
    "DatasetError",
    "DatasetNotFoundError",
    "batchify",
    "cache_dir",
    "data_root",
    "find_cifar10",
    "find_ptb",
    "load_cifar10",
    "load_cifar10_splits",
    "load_ptb",
    "load_ptb_corpus",
    "train_val_split",
]
