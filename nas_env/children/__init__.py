"""Child networks: build a torch module from an architecture."""

from nas_env.children.cnn import ChildCNN, build_cnn, count_flops, count_params, layer_shapes, output_layers

__all__ = ["ChildCNN", "build_cnn", "count_flops", "count_params", "layer_shapes", "output_layers"]
