"""Build the model of a config, with a checkpoint loaded strictly."""
import copy
from typing import Optional, Tuple

import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

from .checkpoint import load_strictly


def build_model(cfg: Config, checkpoint: Optional[str] = None,
                device: str = 'cpu') -> Tuple[nn.Module, dict]:
    """Build ``cfg.model`` in the config's default scope and load ``checkpoint``.

    A top-level ``data_preprocessor`` (mmpretrain configs: mean, std, ``to_rgb``) goes into
    the model config unless it has its own, as mmengine's ``Runner`` does, so the model
    normalizes its inputs as in training and testing.

    Returns the model (in eval mode, on ``device``) and the checkpoint's ``meta``.
    """
    model_cfg = cfg.model
    if isinstance(model_cfg, dict) and cfg.get('data_preprocessor') is not None \
            and 'data_preprocessor' not in model_cfg:
        model_cfg = copy.deepcopy(model_cfg)
        model_cfg['data_preprocessor'] = copy.deepcopy(cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        model = MODELS.build(model_cfg)
    meta = {}
    if checkpoint is not None:
        ckpt = load_strictly(model, checkpoint)
        meta = dict(ckpt.get('meta') or {})
    return model.to(device).eval(), meta
