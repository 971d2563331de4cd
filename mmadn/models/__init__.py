from . import backbones, distill, layers, losses  # noqa: F401
