from . import backbones, distill, layers, losses, necks  # noqa: F401
from .builder import build_model
from .checkpoint import (CHECKPOINT_ERRORS, adn_backbone_meta, check_checkpoint_fits,
                         first_nonfinite, load_checkpoint_dict_strictly, load_checkpoint_file,
                         load_strictly)
from .layers import CheckpointMismatchError, find_adn_backbone

__all__ = [
    'build_model', 'find_adn_backbone', 'CheckpointMismatchError', 'CHECKPOINT_ERRORS',
    'adn_backbone_meta', 'check_checkpoint_fits', 'load_checkpoint_file', 'load_strictly',
    'load_checkpoint_dict_strictly', 'first_nonfinite'
]
