"""mmadn: Adaptive Depth Networks for MMDetection and MMPretrain.

Importing the package registers its modules (backbones, losses, hooks, datasets) in
mmengine's, mmdet's and mmpretrain's registries and makes trained checkpoints loadable
under torch >= 2.6 (see :mod:`mmadn.utils.checkpoint_safety`).
"""
from .version import __version__  # noqa: F401
from .utils import checkpoint_safety as _checkpoint_safety

_checkpoint_safety.allow_mmengine_checkpoints()

from . import analysis, datasets, engine, models, runtime  # noqa: E402,F401

__all__ = ['__version__']
