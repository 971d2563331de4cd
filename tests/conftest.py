import glob
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

# torch < 2.4 has no weights_only allow-list, and its torch.load defaults to
# weights_only=False: mmengine checkpoints load without one, and nothing is refused.
requires_allow_list = pytest.mark.skipif(
    not hasattr(torch.serialization, 'add_safe_globals'),
    reason='torch < 2.4: no weights_only allow-list (torch.serialization.add_safe_globals); '
    'torch.load defaults to weights_only=False there')

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

if os.environ.get('PYTEST_XDIST_WORKER'):
    # tools/run_tests.sh runs the suite on every core (pytest-xdist): one torch thread per
    # worker and per process it starts, or the workers' threads fight over the cores
    torch.set_num_threads(1)
    os.environ['OMP_NUM_THREADS'] = os.environ['MKL_NUM_THREADS'] = '1'
DET_DEMO = osp.join(ROOT, 'configs', 'demo', 'mask_rcnn_r18_adn_fpn_demo.py')
CLS_DEMO = osp.join(ROOT, 'configs', 'demo', 'resnet18_adn_demo.py')

# small generated data shared by the tests of one session
SMALL_DET = dict(num_train=16, num_val=8)
SMALL_CLS = dict(num_train_per_class=8, num_val_per_class=4)


@pytest.fixture(scope='session')
def det_data_root(tmp_path_factory):
    from mmadn.datasets import ensure_demo_shapes
    return ensure_demo_shapes(str(tmp_path_factory.mktemp('data') / 'demo_shapes'), **SMALL_DET)


@pytest.fixture(scope='session')
def cls_data_root(tmp_path_factory):
    from mmadn.datasets import ensure_demo_shapes_cls
    return ensure_demo_shapes_cls(str(tmp_path_factory.mktemp('data') / 'demo_shapes_cls'),
                                  **SMALL_CLS)


def det_overrides(data_root, iters=2):
    """--cfg-options pointing the demo detection config at small data, a few iterations,
    its backbone from scratch (no pretrained classifier)."""
    root = data_root.rstrip('/') + '/'
    return [
        'model.backbone.init_cfg=None',
        f'train_dataloader.dataset.data_root={root}',
        f'val_dataloader.dataset.data_root={root}',
        f'test_dataloader.dataset.data_root={root}',
        f'val_evaluator.ann_file={root}annotations/instances_val.json',
        f'test_evaluator.ann_file={root}annotations/instances_val.json',
        f'train_cfg.max_iters={iters}',
        f'train_cfg.val_interval={iters}',
        'train_dataloader.batch_size=2',
        'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.interval=1',
    ]


def cls_overrides(data_root, iters=2):
    return [
        f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}',
        f'train_cfg.max_iters={iters}',
        f'train_cfg.val_interval={iters}',
        'train_dataloader.batch_size=4',
        'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.interval=1',
    ]


def run_tool(args, timeout=600, env=None):
    """Run a tools/ script as a user would, with the test interpreter."""
    if args[0] == 'python':
        args = [sys.executable] + list(args[1:])
    full_env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    full_env.update(env or {})
    proc = subprocess.run(args, cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (proc.stdout[-3000:] + '\n' + proc.stderr[-6000:])
    return proc


def read_scalars(work_dir):
    """The rows mmengine's LocalVisBackend logged (training and validation), in order."""
    rows = []
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def load_tool(relpath):
    """Import a script of tools/ or demo/ as a module (its main() runs in this process)."""
    import importlib.util
    path = osp.join(ROOT, relpath)
    name = 'tool_' + osp.splitext(relpath)[0].replace('/', '_').replace('-', '_')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The dynamic-depth ONNX files of the demo models, exported once per session for the deploy
# and the run-time tests (an export takes 20-30 s; a fixture defined in both folders' conftest
# would run twice). Their tiny checkpoints are the deploy tests' (randomized norms).
@pytest.fixture(scope='session')
def dynamic_cls_onnx(tmp_path_factory):
    """The demo classifier's dynamic-depth file, as ``export_onnx.py --skip dynamic`` writes
    it at 32 x 32 px: (file, config, checkpoint, what the tool printed)."""
    import contextlib
    import io

    from .test_deploy.conftest import load_tool, save_tiny_checkpoint
    folder = tmp_path_factory.mktemp('onnx')
    ckpt = save_tiny_checkpoint(CLS_DEMO, str(folder / 'cls.pth'))
    out_file = str(folder / 'cls_dynamic.onnx')
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = load_tool('tools/deployment/export_onnx.py').main(
            [CLS_DEMO, ckpt, '--skip', 'dynamic', '--out', out_file, '--shape', '32', '32'])
    assert code == 0, printed.getvalue()
    return out_file, CLS_DEMO, ckpt, printed.getvalue()


@pytest.fixture(scope='session')
def dynamic_det_onnx(tmp_path_factory):
    """The demo detector's backbone + neck as a dynamic-depth file, H and W any multiple of
    32 (exported at 64 x 64): (file, config, checkpoint)."""
    from mmengine.config import Config

    from mmadn.analysis import profile_subnets
    from mmadn.deploy import build_model, export_onnx_dynamic
    from .test_deploy.conftest import save_tiny_checkpoint
    folder = tmp_path_factory.mktemp('onnx')
    ckpt = save_tiny_checkpoint(DET_DEMO, str(folder / 'det.pth'))
    model, _ = build_model(Config.fromfile(DET_DEMO), ckpt)
    x = torch.randn(1, 3, 64, 64)
    gflops = {r['skip']: r['gflops'] for r in profile_subnets(model, x, latency=False)}
    out_file = str(folder / 'det_dynamic.onnx')
    export_onnx_dynamic(model, out_file, shape=(64, 64), gflops=gflops, dynamic_hw=True)
    return out_file, DET_DEMO, ckpt


@pytest.fixture(autouse=True)
def _no_default_scope():
    """mmengine's current default scope is process-wide: a test (or a session fixture set
    up before it) that builds a Runner or an inferencer makes 'mmdet' or 'mmpretrain'
    current, and registries then build in that scope. Each test starts with none, as in a
    fresh process, whatever ran before it in this worker, and leaves none."""
    from mmengine.registry import DefaultScope
    DefaultScope._instance_dict.clear()
    yield
    DefaultScope._instance_dict.clear()
