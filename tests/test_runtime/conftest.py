"""The tiny demo checkpoints of the deploy tests, shared with the run-time tests."""
import pytest
from mmengine.registry import DefaultScope

from ..test_deploy.conftest import cls_ckpt, det_ckpt  # noqa: F401


@pytest.fixture(autouse=True)
def keep_default_scope():
    """The inferencers set mmengine's default scope (mmdet / mmpretrain); put it back, so
    that tests run later build their models in the scope they expect."""
    saved = dict(DefaultScope._instance_dict)
    yield
    DefaultScope._instance_dict.clear()
    DefaultScope._instance_dict.update(saved)
