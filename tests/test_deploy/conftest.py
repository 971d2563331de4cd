"""Tiny ADN checkpoints of the demo configs, shared by the deploy tests."""
import glob
import importlib.util
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import save_checkpoint

from mmadn.datasets import DEMO_SHAPES_CLASSES, DEMO_SHAPES_PALETTE
from mmadn.deploy import build_model
from ..conftest import CLS_DEMO, DET_DEMO, ROOT


def randomize_norms(model: torch.nn.Module, seed: int = 0) -> None:
    """Distinct statistics and affine parameters in every norm, so that a ``*_skip`` norm
    differs from its partner and a mix-up shows in the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)


def save_tiny_checkpoint(config: str, path: str) -> str:
    """A freshly built demo model (norms randomized) saved as an mmengine checkpoint with
    the demo classes in its meta, as tools/train.py would save it."""
    torch.manual_seed(0)
    model, _ = build_model(Config.fromfile(config))
    randomize_norms(model)
    meta = dict(dataset_meta=dict(classes=DEMO_SHAPES_CLASSES, palette=DEMO_SHAPES_PALETTE))
    save_checkpoint({'meta': meta, 'state_dict': model.state_dict()}, path)
    return path


@pytest.fixture(scope='session')
def cls_ckpt(tmp_path_factory):
    """(demo classification config, tiny checkpoint)"""
    path = tmp_path_factory.mktemp('ckpt') / 'cls.pth'
    return CLS_DEMO, save_tiny_checkpoint(CLS_DEMO, str(path))


@pytest.fixture(scope='session')
def det_ckpt(tmp_path_factory):
    """(demo detection config, tiny checkpoint)"""
    path = tmp_path_factory.mktemp('ckpt') / 'det.pth'
    return DET_DEMO, save_tiny_checkpoint(DET_DEMO, str(path))


def load_tool(path: str):
    """Import a script of tools/ or demo/ as a module (to call its ``main(argv)``)."""
    spec = importlib.util.spec_from_file_location(
        osp.splitext(osp.basename(path))[0], osp.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def first_image(data_root: str, pattern: str) -> str:
    return sorted(glob.glob(osp.join(data_root, pattern)))[0]
