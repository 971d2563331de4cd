"""mmadn.models.build_model builds the model the Runner would build."""
import torch
from mmengine.runner import Runner

import mmadn  # noqa: F401
from mmadn.engine.launch import load_config
from mmadn.models import build_model
from ..conftest import CLS_DEMO


def test_top_level_data_preprocessor_is_used_as_the_runner_does(tmp_path):
    cfg = load_config(CLS_DEMO, work_dir=str(tmp_path))
    assert 'data_preprocessor' not in cfg.model  # the demo config sets it at top level
    model, _ = build_model(cfg)
    runner_model = Runner.from_cfg(cfg).model
    for m in (model, runner_model):
        pre = m.data_preprocessor
        assert pre.mean.flatten().tolist() == [127.5] * 3
        assert pre.std.flatten().tolist() == [64.0] * 3 and pre.to_rgb
    img = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    a = model.data_preprocessor(dict(inputs=[img]), False)['inputs']
    b = runner_model.data_preprocessor(dict(inputs=[img]), False)['inputs']
    assert torch.equal(a, b)
    assert torch.allclose(a[0, 0], (img[2].float() - 127.5) / 64)  # BGR -> RGB, normalized
    # a model config with its own preprocessor keeps it
    cfg.model['data_preprocessor'] = dict(type='ClsDataPreprocessor', mean=[0, 0, 0], std=[2, 2, 2])
    model, _ = build_model(cfg)
    assert model.data_preprocessor.std.flatten().tolist() == [2.0] * 3
