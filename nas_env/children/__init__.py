"""Child networks: build a torch module from an architecture."""

from nas_env.children.cnn import ChildCNN, build_cnn, count_flops, count_params, layer_shapes, output_layers
from nas_env.children.rnn_cell import RNNLanguageModel, SearchedCell

__all__ = [
    "ChildCNN",
    "RNNLanguageModel",
    "SearchedCell",
    "build_cnn",
    "count_flops",
    "count_params",
    "layer_shapes",
    "output_layers",
]
