"""Tests for :mod:`mmadn.utils.checkpoint_safety`.

They use a real :class:`mmengine.runner.Runner` (no mocks) on a tiny
deterministic model, with ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` so that every
``torch.load`` mmengine makes is a ``weights_only=True`` load, as it is by
default on torch >= 2.6.
"""
import importlib
import importlib.util
import inspect
import os
import pickle
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint, load_checkpoint
from torch.utils.data import Dataset

from ..conftest import requires_allow_list

MODULE = 'mmadn.utils.checkpoint_safety'


def _import_checkpoint_safety():
    """Import the module under test.

    ``mmadn/__init__.py`` also imports mmdet/mmpretrain (which need mmcv);
    the module itself only needs torch and mmengine, so fall back to loading
    it from its file when the package cannot be imported in this environment.
    """
    try:
        return importlib.import_module(MODULE)
    except ImportError:
        if MODULE in sys.modules:  # imported before the package failed
            return sys.modules[MODULE]
        path = Path(__file__).parents[2] / 'mmadn' / 'utils' / \
            'checkpoint_safety.py'
        spec = importlib.util.spec_from_file_location(MODULE, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[MODULE] = module
        spec.loader.exec_module(module)
        return module


checkpoint_safety = _import_checkpoint_safety()
checkpoint_safety.allow_mmengine_checkpoints()


@pytest.fixture(scope='module', autouse=True)
def _force_weights_only():
    """Make every torch.load a weights_only load, whatever the torch."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', raising=False)
        mp.setenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '1')
        yield


# --------------------------------------------------------------------------
# A tiny deterministic training setup.
# --------------------------------------------------------------------------
class ToyModel(BaseModel):
    """Linear regression with fixed initial weights."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        gen = torch.Generator().manual_seed(1234)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(1, 4, generator=gen))
            self.linear.bias.copy_(torch.randn(1, generator=gen))

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.linear(inputs).squeeze(-1)
        if mode == 'loss':
            return dict(loss=((out - labels)**2).mean())
        return out


class ToyDataset(Dataset):
    """8 fixed samples; ``metainfo`` as mmdet/mmpretrain datasets have."""

    metainfo = dict(classes=('cat', 'dog'), palette=[(220, 20, 60), (0, 0, 1)])

    def __init__(self):
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(8, 4, generator=gen)
        self.y = self.x @ torch.tensor([1., -2., 3., .5]) + 0.1

    def __len__(self):
        return len(self.x)

    def __getitem__(self, idx):
        return dict(inputs=self.x[idx], labels=self.y[idx])


class RecordIters(Hook):
    """Records the iteration training starts at and the iterations run."""

    def __init__(self):
        self.start_iter = None
        self.trained_iters = []

    def before_train(self, runner):
        self.start_iter = runner.iter

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.trained_iters.append(batch_idx)


def build_runner(work_dir, name, max_iters, resume=False, load_from=None):
    recorder = RecordIters()
    runner = Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        experiment_name=name,  # unique: MessageHub/loggers are per name
        train_dataloader=dict(
            dataset=ToyDataset(),
            batch_size=2,  # 4 iterations per epoch
            num_workers=0,
            # Infinite: DefaultSampler makes mmengine sleep 2 s per epoch.
            sampler=dict(type='InfiniteSampler', shuffle=True),
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.2, by_epoch=False, begin=0, end=3),
            # An explicit ``end``: mmengine sets a missing one to the
            # max_iters of the run, which a resumed run would inherit.
            dict(type='MultiStepLR', milestones=[8], gamma=0.1, by_epoch=False, begin=0, end=100),
        ],
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=False)),
        custom_hooks=[recorder],
        randomness=dict(seed=0),
        load_from=load_from,
        resume=resume,
        log_level='WARNING')
    return runner, recorder


def weights_of(runner):
    return {k: v.detach().clone() for k, v in runner.model.state_dict().items()}


TOTAL_ITERS, STOP_ITER = 10, 6


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """An uninterrupted run, and one stopped at ``STOP_ITER`` then resumed."""
    ref_dir = tmp_path_factory.mktemp('uninterrupted')
    ref, _ = build_runner(ref_dir, 'uninterrupted', TOTAL_ITERS)
    ref.train()

    work_dir = tmp_path_factory.mktemp('interrupted')
    first, _ = build_runner(work_dir, 'interrupted', STOP_ITER)
    first.train()
    resumed, recorder = build_runner(work_dir, 'resumed', TOTAL_ITERS, resume=True)
    resumed.train()
    return dict(ref=ref, ref_weights=weights_of(ref), first_weights=weights_of(first),
                resumed=resumed, recorder=recorder, checkpoint=work_dir / f'iter_{STOP_ITER}.pth')


# --------------------------------------------------------------------------
# Real mmengine checkpoints load and resume with weights_only=True.
# --------------------------------------------------------------------------
@requires_allow_list
def test_resume_continues_like_an_uninterrupted_run(runs):
    recorder = runs['recorder']
    # It resumed from iter_6.pth, not from scratch, ...
    assert recorder.start_iter == STOP_ITER
    assert recorder.trained_iters == list(range(STOP_ITER, TOTAL_ITERS))
    # ... and ends where the uninterrupted run ends, with the same weights
    # (which needs the optimizer momentum, the LR schedulers and the
    # dataloader position to have been restored too).
    assert runs['resumed'].iter == runs['ref'].iter == TOTAL_ITERS
    resumed = weights_of(runs['resumed'])
    assert resumed.keys() == runs['ref_weights'].keys()
    for key, value in runs['ref_weights'].items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6)
    # Non-vacuous: training moved the weights after the checkpoint.
    assert not torch.allclose(resumed['linear.weight'], runs['first_weights']['linear.weight'])


@requires_allow_list
def test_runner_checkpoint_needs_exactly_the_allow_list(runs):
    ckpt = str(runs['checkpoint'])
    assert torch.serialization.get_unsafe_globals_in_checkpoint(ckpt) == []
    loaded = torch.load(ckpt, weights_only=True)
    assert loaded['meta']['iter'] == STOP_ITER
    assert loaded['meta']['dataset_meta'] == ToyDataset.metainfo
    hub = loaded['message_hub']
    loss = hub['log_scalars']['train/loss']
    assert type(loss).__name__ == 'HistoryBuffer'
    assert len(loss.data[0]) == STOP_ITER
    assert np.isfinite(loss.mean())  # its statistics methods were restored
    assert loaded['param_schedulers'][1]['milestones'] == {8: 1}

    # Without the allow-list, the same checkpoint is refused.
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(ckpt)
        with pytest.raises(pickle.UnpicklingError):
            torch.load(ckpt, weights_only=True)
    finally:
        torch.serialization.add_safe_globals(saved)
    assert {'mmengine.logging.history_buffer.HistoryBuffer', 'builtins.getattr'} <= set(unsafe)


@requires_allow_list
def test_allow_list_is_minimal_and_has_no_generic_callables():
    entries = checkpoint_safety._safe_globals()
    registered = set(torch.serialization.get_safe_globals())
    names = set()
    for entry in entries:
        assert entry in registered
        obj, name = entry if isinstance(
            entry, tuple) else (entry, f'{entry.__module__}.{entry.__qualname__}')
        names.add(name)
        # No generic callable: no builtins (numpy's C helpers aside), ...
        assert not inspect.isbuiltin(obj) or obj.__module__.startswith('numpy'), name
        assert obj not in (getattr, setattr, eval, exec, open), name
        assert not name.startswith(
            ('os.', 'posix.', 'nt.', 'sys.', 'functools.', 'subprocess.')), name
    assert names == {
        'mmengine.logging.history_buffer.HistoryBuffer',
        'builtins.getattr',  # restricted to HistoryBuffer statistics
        'numpy.ndarray',
        'numpy.dtype',
        'numpy._core.multiarray._reconstruct',
        'numpy._core.multiarray.scalar',
        'numpy.core.multiarray._reconstruct',
        'numpy.core.multiarray.scalar',
    } | {f'numpy.dtypes.{t}DType'
         for t in ('Bool', 'Int32', 'Int64', 'Float32', 'Float64')}


@requires_allow_list
def test_getattr_is_only_allowed_for_history_buffer_statistics():
    from mmengine.logging import HistoryBuffer
    shim = dict((n, o) for o, n in (e for e in checkpoint_safety._safe_globals()
                                    if isinstance(e, tuple)))['builtins.getattr']
    assert shim is not getattr
    for name in ('min', 'max', 'current', 'mean'):
        assert shim(HistoryBuffer, name) is getattr(HistoryBuffer, name)
    for obj, name in [(HistoryBuffer, 'update'), (HistoryBuffer, '__init__'),
                      (HistoryBuffer, '__class__'), (OrderedDict, 'fromkeys'),
                      (np.ndarray, 'tofile'), (HistoryBuffer(), 'mean')]:
        with pytest.raises(pickle.UnpicklingError):
            shim(obj, name)


@requires_allow_list
def test_allow_mmengine_checkpoints_is_idempotent():
    safe_before = set(torch.serialization.get_safe_globals())
    loaders_before = dict(CheckpointLoader._schemes)
    checkpoint_safety.allow_mmengine_checkpoints()
    checkpoint_safety.allow_mmengine_checkpoints()
    assert set(torch.serialization.get_safe_globals()) == safe_before
    assert dict(CheckpointLoader._schemes) == loaders_before
    local = CheckpointLoader._schemes['']
    # Wrapped exactly once, keeping the name mmengine logs.
    assert local.__name__ == 'load_from_local'
    assert not hasattr(local.__wrapped__, '__wrapped__')


@requires_allow_list
def test_numpy1_checkpoints_load(tmp_path):
    """numpy < 2 pickles name ``numpy.core.multiarray``, numpy 2
    ``numpy._core.multiarray``: both load."""
    obj = {
        'hist': np.arange(3.),
        'best_score': np.float32(0.5),
        'count': np.ones(2, dtype=np.int64)
    }
    new = tmp_path / 'numpy2.pth'
    torch.save(obj, new)
    old = tmp_path / 'numpy1.pth'
    with zipfile.ZipFile(new) as zin, zipfile.ZipFile(old, 'w') as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith('data.pkl'):
                renamed = data.replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
                assert renamed != data
                data = renamed
            zout.writestr(info, data)
    for path in (new, old):
        loaded = _load_checkpoint(str(path))
        np.testing.assert_array_equal(loaded['hist'], obj['hist'])
        assert loaded['best_score'] == obj['best_score']
        assert loaded['best_score'].dtype == np.float32


def test_plain_state_dict_still_loads(tmp_path):
    src = nn.Linear(3, 2)
    path = tmp_path / 'bare_state_dict.pth'
    torch.save(src.state_dict(), path)  # torchvision-style bare dict

    loaded = _load_checkpoint(str(path))
    assert isinstance(loaded, OrderedDict)
    for key, value in src.state_dict().items():
        assert torch.equal(loaded[key], value)

    dst = nn.Linear(3, 2)
    load_checkpoint(dst, str(path), map_location='cpu', strict=True)
    assert torch.equal(dst.weight, src.weight)
    assert torch.equal(dst.bias, src.bias)


# --------------------------------------------------------------------------
# Malicious checkpoints are refused with a clear error and never run.
# --------------------------------------------------------------------------
class _OsSystemPayload:

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


class _OpenPayload:

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, 'w')


class _GetattrPayload:
    """Reaches a method through getattr, the way gadget chains do."""

    def __reduce__(self):
        return getattr, (OrderedDict, 'fromkeys')


def _save_malicious(path, payload):
    torch.save({'state_dict': OrderedDict(w=torch.zeros(1)), 'meta': payload}, path)


@requires_allow_list
@pytest.mark.parametrize('payload_cls, refused', [
    (_OsSystemPayload, f'{os.system.__module__}.system'),
    (_OpenPayload, f'{open.__module__}.open'),
], ids=['os.system', 'open'])
@pytest.mark.parametrize('load', [
    lambda path: _load_checkpoint(path),
    lambda path: load_checkpoint(nn.Linear(1, 1), path),
    lambda path: CheckpointLoader.load_checkpoint(path),
], ids=['_load_checkpoint', 'load_checkpoint', 'CheckpointLoader'])
def test_malicious_checkpoint_is_refused(tmp_path, monkeypatch, payload_cls, refused, load):
    marker = tmp_path / 'pwned'
    path = str(tmp_path / 'malicious.pth')
    _save_malicious(path, payload_cls(marker))

    with pytest.raises(checkpoint_safety.UnsafeCheckpointError) as info:
        load(path)
    err = info.value
    message = str(err)
    assert not marker.exists(), 'the malicious payload ran'
    assert isinstance(err, pickle.UnpicklingError)  # what torch.load raises
    assert err.filename == path and err.refused_globals == [refused]
    assert path in message
    assert refused in message
    assert 'could run code' in message
    if payload_cls is _OsSystemPayload:
        # torch never allow-lists os/posix: say so, and suggest no way to load it
        assert 'torch never allows' in message and 'do not load it' in message
        assert 'weights_only=False' not in message and 'add_safe_globals' not in message
    else:
        # open() can run code's work (write any file): never suggested for the allow-list
        assert 'add_safe_globals' not in message and 'do not allow-list it' in message

    # Non-vacuous: the payload does run when the protection is off.
    if payload_cls is _OpenPayload:
        monkeypatch.delenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD')
        torch.load(path, weights_only=False)
        assert marker.exists()


@pytest.mark.parametrize('protocol', [0, 2])
def test_a_raw_pickle_calling_os_system_is_refused_without_unsafe_advice(tmp_path, protocol):
    """A plain pickle (no torch.save zip; protocol 0 is text) naming ``posix.system``: the
    static reading of its globals names it, and nothing suggests a way to load it."""
    marker = tmp_path / 'pwned'
    path = str(tmp_path / 'raw.pth')
    with open(path, 'wb') as f:
        pickle.dump({'state_dict': _OsSystemPayload(marker)}, f, protocol=protocol)
    with pytest.raises(checkpoint_safety.UnsafeCheckpointError) as info:
        CheckpointLoader.load_checkpoint(path)
    assert not marker.exists()
    assert info.value.refused_globals == [f'{os.system.__module__}.system']
    message = str(info.value)
    assert 'do not load it' in message
    for advice in ('weights_only=False', 'will likely succeed', 'add_safe_globals'):
        assert advice not in message


def test_globals_of_a_torch_save_zip_are_read_without_running_it(tmp_path):
    # what names the refused global on a torch without get_unsafe_globals_in_checkpoint
    # (torch 2.1's own message does not name it)
    marker = tmp_path / 'pwned'
    path = str(tmp_path / 'malicious.pth')
    _save_malicious(path, _OsSystemPayload(marker))
    assert zipfile.is_zipfile(path)
    found = checkpoint_safety._pickle_globals(path)
    assert f'{os.system.__module__}.system' in found
    assert 'collections.OrderedDict' in found
    assert not marker.exists()


def test_malicious_checkpoint_is_refused_on_resume(tmp_path):
    marker = tmp_path / 'pwned'
    path = str(tmp_path / 'malicious.pth')
    _save_malicious(path, _OsSystemPayload(marker))
    runner, recorder = build_runner(tmp_path / 'work', 'malicious_resume', 2, resume=True,
                                    load_from=path)
    with pytest.raises(checkpoint_safety.UnsafeCheckpointError) as info:
        runner.train()
    assert path in str(info.value)
    assert f'{os.system.__module__}.system' in str(info.value)
    assert not marker.exists()
    assert recorder.start_iter is None  # training never started


@requires_allow_list
def test_generic_getattr_is_refused(tmp_path):
    path = str(tmp_path / 'getattr.pth')
    _save_malicious(path, _GetattrPayload())
    with pytest.raises(checkpoint_safety.UnsafeCheckpointError) as info:
        _load_checkpoint(path)
    assert info.value.refused_globals == ['builtins.getattr']
    assert path in str(info.value)
    assert "'fromkeys'" in str(info.value)

    # A user who trusts the file can allow the real getattr.
    with torch.serialization.safe_globals([getattr]):
        loaded = _load_checkpoint(path)
    assert loaded['meta'] == OrderedDict.fromkeys


class _EvalPayload:

    def __reduce__(self):
        return eval, ('1 + 1', )


class UserConfig:
    """A harmless class of the user's own: allow-listing it is the right advice."""

    def __init__(self):
        self.lr = 0.1


@requires_allow_list
def test_refusal_never_suggests_allow_listing_code_runners(tmp_path):
    path = str(tmp_path / 'eval.pth')
    _save_malicious(path, _EvalPayload())
    with pytest.raises(checkpoint_safety.UnsafeCheckpointError) as info:
        _load_checkpoint(path)
    message = str(info.value)
    assert info.value.refused_globals == ['builtins.eval']
    assert 'builtins.eval can run code by itself' in message
    assert 'do not allow-list it' in message and 'add_safe_globals' not in message
    # a class of the user's own is still explained with the allow-list recipe
    torch.save({
        'state_dict': OrderedDict(w=torch.zeros(1)),
        'meta': UserConfig()
    }, tmp_path / 'user.pth')
    with pytest.raises(checkpoint_safety.UnsafeCheckpointError) as info:
        _load_checkpoint(str(tmp_path / 'user.pth'))
    assert 'torch.serialization.add_safe_globals([UserConfig])' in str(info.value)
    assert 'do not allow-list' not in str(info.value)
