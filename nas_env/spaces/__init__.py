"""Search spaces: token vocabularies with decode/encode, masks, sampling, mutation and canonical keys."""

from nas_env.spaces.base import Architecture, Decision, InvalidTokenError, SearchSpace
from nas_env.spaces.cnn import CNNArchitecture, CNNSpace, ConvLayer
from nas_env.spaces.rnn_cell import RNNCellArchitecture, RNNCellSpace

__all__ = [
    "Architecture",
    "CNNArchitecture",
    "CNNSpace",
    "ConvLayer",
    "Decision",
    "InvalidTokenError",
    "RNNCellArchitecture",
    "RNNCellSpace",
    "SearchSpace",
    "space_from_config",
]


def space_from_config(config: dict) -> SearchSpace:
    """Rebuild a space from ``{"name": ..., **space.config()}`` (as written in run directories)."""
    config = dict(config)
    name = config.pop("name")
    if name == "cnn":
        return CNNSpace(**config)
    if name == "nb201":
        from nas_env.spaces.nb201 import NB201Space

        return NB201Space(**config)
    if name == "rnn_cell":
        return RNNCellSpace(**config)
    raise ValueError(f"unknown search space {name!r} (known: cnn, nb201, rnn_cell)")
