"""The tiny demo checkpoints of the deploy tests, shared with the run-time tests."""
from ..test_deploy.conftest import cls_ckpt, det_ckpt  # noqa: F401
