"""mmadn: Adaptive Depth Networks for MMDetection and MMPretrain.

Importing the package registers its modules (backbones, losses, hooks, loops, datasets) in
mmengine's, mmdet's and mmpretrain's registries, and changes two things of mmengine's:
its checkpoint loaders are re-registered wrapped, so that trained checkpoints load under
``torch.load(weights_only=True)`` (see :mod:`mmadn.utils.checkpoint_safety`), and
``Config._get_cfg_path`` also resolves ``mmadn::`` config paths (see
:mod:`mmadn.utils.config_prefix`).
"""
from .utils import checkpoint_safety as _checkpoint_safety
from .utils import config_prefix as _config_prefix
from .version import __version__  # noqa: F401

_checkpoint_safety.allow_mmengine_checkpoints()
_config_prefix.enable_config_prefix()

from . import analysis, datasets, engine, models, runtime  # noqa: E402,F401

__all__ = ['__version__']
