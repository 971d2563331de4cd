from .adaptive_depth import AdaptiveDepthMixin, CheckpointMismatchError, find_adn_backbone
from .calibration import calibrate_skip_norms
from .skip import default_num_shared_blocks, enumerate_skips, format_skip, parse_skip
from .skip_aware import SKIP_SUFFIX, SkipAwareNormMixin

__all__ = [
    'parse_skip', 'format_skip', 'enumerate_skips', 'default_num_shared_blocks',
    'SkipAwareNormMixin', 'AdaptiveDepthMixin', 'CheckpointMismatchError', 'find_adn_backbone',
    'SKIP_SUFFIX', 'calibrate_skip_norms'
]
