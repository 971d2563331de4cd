"""mmadn: Adaptive Depth Networks for MMDetection and MMPretrain.

Importing the package registers its modules (backbones, losses, hooks, datasets) in
mmengine's, mmdet's and mmpretrain's registries and makes trained checkpoints loadable
under torch >= 2.6 (see :mod:`mmadn.utils.checkpoint_safety`); from then on config files can
inherit mmadn's configs as ``_base_ = 'mmadn::mask_rcnn_r50_adn_fpn_1x_coco.py'`` (see
:mod:`mmadn.utils.config_prefix`).
"""
from .version import __version__  # noqa: F401
from .utils import checkpoint_safety as _checkpoint_safety
from .utils import config_prefix as _config_prefix

_checkpoint_safety.allow_mmengine_checkpoints()
_config_prefix.enable_config_prefix()

from . import analysis, datasets, engine, models, runtime  # noqa: E402,F401

__all__ = ['__version__']
