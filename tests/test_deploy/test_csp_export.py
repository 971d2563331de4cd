"""Static export of an RTMDet-ADN sub-network (the demo config, with the skippable neck):
the written model is mmdet's CSPNeXt (and the neck's blocks of that depth) and computes
what the adaptive model computes at that depth. (ONNX: test_csp_dynamic_depth.py.)"""
import re

from mmengine.config import Config

import mmadn  # noqa: F401
from ..conftest import ROOT
from .conftest import load_tool, save_tiny_checkpoint

DEMO = f'{ROOT}/configs/demo/rtmdet_cspnext_adn_demo.py'


def _neck_config(tmp_path) -> str:
    path = tmp_path / 'rtmdet_neck_adn_demo.py'
    path.write_text(f"_base_ = {DEMO!r}\nmodel = dict(neck=dict(type='CSPNeXtPAFPNADN'))\n")
    return str(path)


def test_export_subnet_of_backbone_and_neck(tmp_path, capsys):
    config = _neck_config(tmp_path)
    ckpt = save_tiny_checkpoint(config, str(tmp_path / 'rtmdet.pth'))
    skip = 'TFT' + 'FTFT'  # the backbone's stages 1, 3 and the neck's layers 2, 4 skip
    tool = load_tool('tools/deployment/export_subnet.py')
    assert tool.main(
        [config, ckpt, '--skip', skip, '--out',
         str(tmp_path / 'static'), '--shape', '64', '64']) == 0
    out = capsys.readouterr().out
    assert f'exported sub-network {skip}: stage blocks (1, 4, 2, 2)' in out
    assert float(re.search(r'max \|static - adaptive\(\w+\)\| = (\S+)', out).group(1)) == 0.0
    static_cfg = Config.fromfile(str(tmp_path / 'static' / f'rtmdet_neck_adn_demo_{skip}.py'))
    assert static_cfg.model.backbone.type == 'CSPNeXt'  # mmdet's own class
    assert [row[2] for row in static_cfg.model.backbone.arch_ovewrite] == [1, 4, 2, 2]
    assert static_cfg.model.neck.layer_blocks == [2, 1, 2, 1]
    assert static_cfg.custom_hooks == [] and static_cfg.val_cfg.type == 'ValLoop'
