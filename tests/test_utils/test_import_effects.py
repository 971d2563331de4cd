"""What importing mmadn changes outside its own modules (the README lists it): mmengine's
checkpoint loaders re-registered through the public ``CheckpointLoader.register_scheme``,
``Config._get_cfg_path``, and one torch module-registration hook (the ADN neck link). No
other attribute of an mmengine, mmdet or mmpretrain class changes."""
import json
import subprocess
import sys

from ..conftest import ROOT

SNAPSHOT = r'''
import inspect, json, sys
import mmengine.config, mmengine.runner, mmengine.hooks, mmengine.model, mmengine.optim
import mmdet.models, mmpretrain.models

def snapshot():
    out = {}
    for name, module in list(sys.modules.items()):
        if not name.split('.')[0] in ('mmengine', 'mmdet', 'mmpretrain') or module is None:
            continue
        for cname, cls in list(vars(module).items()):
            if inspect.isclass(cls) and cls.__module__ == name:
                for attr, value in vars(cls).items():
                    out[f'{name}.{cname}.{attr}'] = id(value)
    return out

from torch.nn.modules import module as torch_module
hooks = dict(torch_module._global_module_registration_hooks)
before = snapshot()
import mmadn
after = snapshot()
changed = sorted(k for k in before if after.get(k) != before[k])
added = [f'{h.__module__}.{h.__qualname__}'
         for k, h in torch_module._global_module_registration_hooks.items() if k not in hooks]
print(json.dumps(dict(changed=changed, compared=len(before), torch_hooks=added)))
'''


def test_importing_mmadn_changes_only_what_the_readme_says():
    proc = subprocess.run([sys.executable, '-c', SNAPSHOT], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['compared'] > 5000  # the classes of the three packages were seen
    assert result['changed'] == [
        'mmengine.config.config.Config._get_cfg_path',
        'mmengine.runner.checkpoint.CheckpointLoader._schemes',
    ]
    assert result['torch_hooks'] == ['mmadn.models.necks.csp_pafpn_adn.link_adn_neck']
