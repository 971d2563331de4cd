"""What importing mmadn changes outside its own modules (the README lists it): mmengine's
checkpoint loaders re-registered through the public ``CheckpointLoader.register_scheme``,
and ``Config._get_cfg_path``. No other attribute of an mmengine, mmdet or mmpretrain class
changes."""
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

before = snapshot()
import mmadn
after = snapshot()
changed = sorted(k for k in before if after.get(k) != before[k])
print(json.dumps(dict(changed=changed, compared=len(before))))
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
