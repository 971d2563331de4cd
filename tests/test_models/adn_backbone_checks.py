"""Checks shared by the tests of the non-ResNet ADN backbones (MobileNetV2, ViT, Swin)."""
import contextlib
from typing import Callable, Dict, List, Set

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmpretrain.structures import DataSample

from mmadn.engine.hooks import SubPathSpecializationHook
from mmadn.models.layers import format_skip


@pytest.fixture(scope='module')
def one_thread():
    """One intra-op thread while a module's tests run: with tiny models on a shared CPU,
    two threads that wait on each other are many times slower than one."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@contextlib.contextmanager
def called_modules(root: torch.nn.Module):
    """Collects the names (relative to ``root``) of the modules a forward calls."""
    names = {id(m): n for n, m in root.named_modules()}
    called: Set[str] = set()
    handles = [
        m.register_forward_pre_hook(lambda mod, _a: called.add(names[id(mod)]))
        for m in root.modules()
    ]
    try:
        yield called
    finally:
        for h in handles:
            h.remove()


def run_every_subnet(backbone, x: torch.Tensor,
                     stage_blocks: List[List[str]]) -> Dict[str, List[torch.Tensor]]:
    """Forward + backward of every sub-network. ``stage_blocks[i]``: the skippable blocks
    of stage ``i``. Checks, per sub-network, that the blocks of a skipping stage neither
    run nor get gradients while the others do, and that each skip-aware norm pair runs
    (and trains) exactly one of its two norms."""
    backbone.train()
    assert sorted(sum(stage_blocks, [])) == sorted(backbone.skippable_blocks())
    pairs = backbone.skip_norm_pairs()
    outputs = {}
    for skip in backbone.subnet_skips():
        backbone.zero_grad(set_to_none=True)
        with backbone.skipping(skip), called_modules(backbone) as called:
            outs = backbone(x)
            sum(o.float().pow(2).mean() for o in outs).backward()
        name = format_skip(skip)
        outputs[name] = [o.detach() for o in outs]
        for flag, blocks in zip(skip, stage_blocks):
            for block in blocks:
                grads = [p.grad for p in backbone.get_submodule(block).parameters()]
                assert _ran(backbone, block, called) is not flag, (name, block)
                assert all(g is None for g in grads) is flag, (name, block)
        for s, p in pairs:
            assert (s in called) != (p in called), (name, s, p)  # exactly one set runs
            active = backbone.get_submodule(s if s in called else p)
            assert active.weight.grad is not None and active.weight.grad.abs().sum() > 0
        assert backbone.skip_str == 'F' * backbone.num_skippable_stages  # restored
    return outputs


def _ran(backbone, block: str, called: Set[str]) -> bool:
    """Whether any module with parameters inside ``block`` ran (a skipped block may still
    be entered, e.g. a transformer layer that hands its input through)."""
    return any((n == block or n.startswith(block + '.'))
               and next(backbone.get_submodule(n).parameters(recurse=False), None) is not None
               for n in called)


def skip_norms_in_use(backbone, x: torch.Tensor, skip) -> Set[str]:
    """The ``*_skip`` norms that a forward of sub-network ``skip`` calls."""
    with torch.no_grad(), backbone.skipping(skip), called_modules(backbone) as called:
        backbone(x)
    return {s for s, _ in backbone.skip_norm_pairs() if s in called}


def stage_feature_shapes(backbone, x: torch.Tensor, skip='base') -> List[tuple]:
    """The shapes of the stage features (``stage_modules()`` outputs, what the training
    hook distils) in one forward of sub-network ``skip``."""
    shapes = []
    handles = [
        s.register_forward_hook(lambda _m, _i, o: shapes.append(tuple(o.shape)))
        for s in backbone.stage_modules()
    ]
    try:
        with torch.no_grad(), backbone.skipping(skip):
            backbone(x)
    finally:
        for h in handles:
            h.remove()
    return shapes


def assert_skip_norms_copied(backbone) -> None:
    for skip_name, partner_name in backbone.skip_norm_pairs():
        s, p = backbone.get_submodule(skip_name), backbone.get_submodule(partner_name)
        for (ks, vs), (kp, vp) in zip(s.state_dict().items(), p.state_dict().items()):
            assert ks == kp and torch.equal(vs, vp), (skip_name, ks)


def load_plain_checkpoint(cls, plain: torch.nn.Module, tmp_path, **kwargs):
    """``cls(**kwargs)`` loaded from the plain upstream backbone ``plain``, in eval mode.
    Loads it twice: ``load_state_dict`` (strict: every plain key fits) and a ``Pretrained``
    init_cfg on an mmpretrain-style checkpoint file (``state_dict``, ``backbone.`` keys,
    through mmengine's loading); checks that both give the same weights, skip norms copies
    of their partners."""
    adn = cls(**kwargs)
    adn.load_state_dict(plain.state_dict())
    assert_skip_norms_copied(adn)
    path = str(tmp_path / 'plain.pth')
    torch.save(dict(state_dict={'backbone.' + k: v for k, v in plain.state_dict().items()}), path)
    via_cfg = cls(**kwargs, init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.'))
    via_cfg.init_weights()
    sa, sb = adn.state_dict(), via_cfg.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    adn.eval()
    return adn


def classifier_train_step_with_hook(model, num_classes: int, size: int, **hook_kw):
    """One real training iteration (data preprocessor, the hook's two passes, backward,
    SGD step) of an mmpretrain classifier; returns the log variables and the parameters
    that changed."""
    torch.manual_seed(0)
    data = dict(
        inputs=[torch.randint(0, 256, (3, size, size), dtype=torch.uint8) for _ in range(2)],
        data_samples=[DataSample().set_gt_label(k % num_classes) for k in range(2)])
    return train_step_with_hook(model, data, **hook_kw)


def train_step_with_hook(model, data, **hook_kw):
    hook = SubPathSpecializationHook(**hook_kw)
    hook.install(model)
    try:
        model.train()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
        log_vars = model.train_step(data, optim)
    finally:
        hook.uninstall()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    return log_vars, changed


def flops_g(model, backbone, skip, size: int = 224, forward: Callable = None) -> float:
    from mmadn.analysis import count_flops
    x = torch.zeros(1, 3, size, size)
    fwd = forward or (lambda inp: model(inp, mode='tensor'))
    with backbone.skipping(skip):
        return count_flops(model, x, fwd) / 1e9
