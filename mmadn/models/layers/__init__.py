from .calibration import calibrate_skip_norms
from .skip import (default_num_shared_blocks, enumerate_skips, format_skip,
                   parse_skip)
from .skip_aware import SKIP_SUFFIX, AdaptiveDepthMixin, SkipAwareNormMixin

__all__ = [
    'parse_skip', 'format_skip', 'enumerate_skips', 'default_num_shared_blocks',
    'SkipAwareNormMixin', 'AdaptiveDepthMixin', 'SKIP_SUFFIX',
    'calibrate_skip_norms'
]
