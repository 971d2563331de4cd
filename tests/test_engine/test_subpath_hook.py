"""The training hook on a real mmdet Mask R-CNN and a real mmpretrain classifier."""
import copy
import glob
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config, DictAction
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import mmadn  # noqa: F401
from mmadn.engine.hooks import SubPathSpecializationHook
from ..conftest import CLS_DEMO, DET_DEMO, cls_overrides, det_overrides, read_scalars, run_tool


def _cfg(path, overrides, work_dir):
    cfg = Config.fromfile(path)
    parsed = {}  # the same parsing as --cfg-options
    for item in overrides:
        key, val = item.split('=', 1)
        parsed[key] = DictAction._parse_iterable(val)
    cfg.merge_from_dict(parsed)
    # zero-initialized residual branches make super- and base-net equal at init (KD = 0)
    cfg.model.backbone.zero_init_residual = False
    cfg.work_dir = str(work_dir)
    return cfg


def _one_batch_losses(runner):
    model = runner.model
    batch = next(iter(runner.train_dataloader))
    data = model.data_preprocessor(batch, True)
    return model(**data, mode='loss')


def _all_params_get_grads(runner):
    model = runner.model
    model.train()
    model.zero_grad(set_to_none=True)
    losses = _one_batch_losses(runner)
    loss, log_vars = model.parse_losses(losses)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    return losses, log_vars, missing


@pytest.fixture
def det_runner(det_data_root, tmp_path):
    cfg = _cfg(DET_DEMO, det_overrides(det_data_root), tmp_path)
    runner = Runner.from_cfg(cfg)
    yield runner
    DefaultScope._instance_dict.clear()


def test_detector_step_losses_grads_and_plain_keys(det_runner):
    runner = det_runner
    runner.model.init_weights()
    plain_keys = list(runner.model.state_dict())
    hook = SubPathSpecializationHook()
    with DefaultScope.overwrite_default_scope('mmdet'):
        hook.install(runner.model)
        losses, log_vars, missing = _all_params_get_grads(runner)
    assert {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask',
            'loss_kd_feat'} <= set(losses)
    assert 'loss_kd_logits' not in losses  # a detector has no classification head
    assert log_vars['loss_kd_feat'] > 0
    assert missing == []  # skip-aware BNs, skippable blocks, FPN, heads: all trained
    bb = runner.model.backbone
    assert bb.layer1[0].bn1_skip.weight.grad.abs().sum() > 0
    assert bb.layer1[1].conv1.weight.grad.abs().sum() > 0
    assert bb.skip_str == 'FFFF'  # restored after the two passes
    assert list(runner.model.state_dict()) == plain_keys
    hook.uninstall()
    assert 'loss' not in runner.model.__dict__


def test_hook_weights_follow_alpha_and_base_task_loss(det_runner):
    runner = det_runner
    runner.model.init_weights()
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        batch = next(iter(runner.train_dataloader))
        data = runner.model.data_preprocessor(batch, True)
        runner.model.eval()  # fixed BN statistics: the two calls see the same network
        torch.manual_seed(0)  # the same RPN / RoI samples in both calls
        plain = runner.model(**data, mode='loss')
        hook = SubPathSpecializationHook(alpha=0.25, base_task_loss=True)
        hook.install(runner.model)
        torch.manual_seed(0)
        adn = runner.model(**data, mode='loss')
        hook.uninstall()
    # the proposal sampling is random, but RPN losses are deterministic in eval mode
    assert adn['loss_rpn_cls'][0].item() == pytest.approx(0.25 * plain['loss_rpn_cls'][0].item(),
                                                          rel=1e-4)
    assert 'base_loss_rpn_cls' in adn and 'base_loss_mask' in adn
    assert adn['loss_kd_feat'].item() > 0


def test_hook_refuses_a_plain_backbone(det_data_root, tmp_path):
    cfg = _cfg(DET_DEMO, det_overrides(det_data_root), tmp_path)
    cfg.model.backbone = dict(type='ResNet', depth=18, norm_eval=False)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(
            TypeError, match=r'SubPathSpecializationHook needs a model with an ADN '
            r'backbone: MaskRCNN has no ADN backbone \(its backbone is ResNet\)'):
        SubPathSpecializationHook().install(runner.model)
    DefaultScope._instance_dict.clear()


def test_classifier_step_logit_kd_accuracy_and_grads(cls_data_root, tmp_path):
    cfg = _cfg(CLS_DEMO, cls_overrides(cls_data_root), tmp_path)
    runner = Runner.from_cfg(cfg)
    runner.model.init_weights()
    hook = SubPathSpecializationHook(logit_kd=dict(type='SubPathKDLoss', topk=2))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        hook.install(runner.model)
        losses, log_vars, missing = _all_params_get_grads(runner)
        hook.uninstall()
    assert {'loss', 'loss_kd_feat', 'loss_kd_logits', 'acc_super', 'acc_base'} <= set(losses)
    assert 0 <= log_vars['acc_base'] <= 100
    assert log_vars['loss_kd_logits'] > 0 and log_vars['loss_kd_feat'] > 0
    assert missing == []
    DefaultScope._instance_dict.clear()


def _checkpoint_state(path):
    return torch.load(path, map_location='cpu')['state_dict']


def _assert_both_bn_sets_moved(state, prefix):
    for name in (f'{prefix}layer2.0.bn1', f'{prefix}layer2.0.bn1_skip'):
        assert state[name + '.running_mean'].abs().sum() > 0, name  # init: zeros
        assert state[name + '.num_batches_tracked'].item() >= 2, name
    assert not torch.equal(state[f'{prefix}layer2.0.bn1.running_mean'],
                           state[f'{prefix}layer2.0.bn1_skip.running_mean'])


def test_train_tool_detector(det_data_root, tmp_path):
    work_dir = str(tmp_path / 'det')
    run_tool(['python', 'tools/train.py', DET_DEMO, '--work-dir', work_dir, '--cfg-options'] +
             det_overrides(det_data_root))
    rows = [r for r in read_scalars(work_dir) if 'loss' in r]
    assert len(rows) == 2
    # the authors' recipe: the base-net's detection losses and KD beside the super-net's
    assert {
        'loss_kd_feat', 'loss_cls', 'loss_mask', 'loss_rpn_cls', 'base_loss_cls', 'base_loss_mask'
    } <= set(rows[0])
    val = [r for r in read_scalars(work_dir) if 'FFFF/coco/bbox_mAP' in r]
    assert val and 'TTTT/coco/segm_mAP' in val[0]
    state = _checkpoint_state(osp.join(work_dir, 'iter_2.pth'))
    # norm_eval: neither norm set's statistics moved from their initial values
    for name in ('layer2.0.bn1', 'layer2.0.bn1_skip'):
        assert state[f'backbone.{name}.running_mean'].abs().sum() == 0, name
        assert state[f'backbone.{name}.num_batches_tracked'].item() == 0, name


def test_train_tool_classifier(cls_data_root, tmp_path):
    work_dir = str(tmp_path / 'cls')
    run_tool(['python', 'tools/train.py', CLS_DEMO, '--work-dir', work_dir, '--cfg-options'] +
             cls_overrides(cls_data_root))
    rows = [r for r in read_scalars(work_dir) if 'loss' in r]
    assert {'loss_kd_feat', 'loss_kd_logits', 'acc_base', 'acc_super'} <= set(rows[0])
    val = [r for r in read_scalars(work_dir) if 'FFFF/accuracy/top1' in r]
    assert val and 'TTTT/accuracy/top1' in val[0]
    _assert_both_bn_sets_moved(_checkpoint_state(osp.join(work_dir, 'iter_2.pth')), 'backbone.')


def test_dist_train_two_processes_on_cpu(det_data_root, tmp_path):
    work_dir = str(tmp_path / 'dist')
    # non-zero residual branches: super- and base-net differ from the first iteration
    run_tool([
        'bash', 'tools/dist_train.sh', DET_DEMO, '2', '--work-dir', work_dir, '--cfg-options',
        'model.backbone.zero_init_residual=False'
    ] + det_overrides(det_data_root), env={'PORT': '29517'})
    rows = [r for r in read_scalars(work_dir) if 'loss' in r]
    assert len(rows) == 2 and all(r['loss_kd_feat'] > 1e-4 for r in rows)
    assert osp.isfile(osp.join(work_dir, 'iter_2.pth'))
    log = open(glob.glob(osp.join(work_dir, '*', '*.log'))[0]).read()
    assert 'world_size: 2' in log or 'Distributed training: True' in log


def test_kd_warmup_ramps_the_kd_weight_and_bad_arguments():
    hook = SubPathSpecializationHook(alpha=0.5, kd_warmup_iters=10)
    assert [hook.distiller.kd_weight(it) for it in (0, 5, 10, 20)] == [0.0, 0.25, 0.5, 0.5]
    with pytest.raises(ValueError, match='alpha=1.5'):
        SubPathSpecializationHook(alpha=1.5)
    with pytest.raises(ValueError, match="features='fpn'"):
        SubPathSpecializationHook(features='fpn')


def test_kd_warmup_follows_the_runners_iteration(cls_data_root, tmp_path):
    """kd_warmup_iters=2, alpha=0.5: the KD weight is 0 at iteration 0, 0.25 at 1."""
    cfg = _cfg(CLS_DEMO, cls_overrides(cls_data_root), tmp_path)
    cfg.custom_hooks[0].kd_warmup_iters = 2
    cfg.train_cfg.val_interval = 10  # no validation
    runner = Runner.from_cfg(cfg)
    runner.train()
    DefaultScope._instance_dict.clear()
    rows = [r for r in read_scalars(str(tmp_path)) if 'loss' in r]
    assert [r['loss_kd_feat'] == 0 for r in rows] == [True, False]
    assert [r['loss_kd_logits'] == 0 for r in rows] == [True, False]


def test_classifier_trains_with_ema_and_gradient_accumulation(cls_data_root, tmp_path):
    cfg = _cfg(CLS_DEMO, cls_overrides(cls_data_root, iters=4), tmp_path)
    cfg.custom_hooks = cfg.custom_hooks + [dict(type='EMAHook', momentum=0.01)]
    cfg.optim_wrapper.accumulative_counts = 2
    runner = Runner.from_cfg(cfg)
    runner.train()
    DefaultScope._instance_dict.clear()
    assert runner.iter == 4
    rows = [r for r in read_scalars(str(tmp_path)) if 'loss' in r]
    assert len(rows) == 4 and all(r['loss_kd_logits'] > 0 for r in rows)
    state = torch.load(osp.join(str(tmp_path), 'iter_4.pth'))
    ema = state['ema_state_dict']
    assert 'module.backbone.layer1.0.bn1_skip.weight' in ema
    # the EMA copy never ran the ADN loss: its keys are the model's keys
    assert sorted(k[len('module.'):] for k in ema if k.startswith('module.')) == \
        sorted(state['state_dict'])


def test_hook_refuses_a_base_that_does_not_skip_strictly_more():
    # equal sub-networks: KD 0, nothing trains the base-net
    with pytest.raises(ValueError) as info:
        SubPathSpecializationHook(super_skip='TTFF', base_skip='TTFF')
    assert str(info.value) == (
        "SubPathSpecializationHook super_skip='TTFF', base_skip='TTFF': both are the same "
        'sub-network, so the KD is 0 and nothing trains the base-net from the super-net; the '
        "base-net must skip strictly more (e.g. super_skip='super', base_skip='base')")
    with pytest.raises(ValueError, match='both are the same sub-network'):
        SubPathSpecializationHook(super_skip='base', base_skip='TTTT')
    # a base that runs a stage the super-net skips
    with pytest.raises(ValueError) as info:
        SubPathSpecializationHook(super_skip='TFFF', base_skip='FTTT')
    assert "the base-net runs stage(s) [1] that the super-net skips" in str(info.value)
    with pytest.raises(ValueError, match='runs stage'):
        SubPathSpecializationHook(super_skip='base', base_skip='super')
    # what it accepts: strictly more, in any form
    SubPathSpecializationHook(super_skip='TFFF', base_skip='TFTF')
    SubPathSpecializationHook(super_skip=[True, False, False, False], base_skip='base')


def test_hook_names_an_option_that_does_not_parse():
    with pytest.raises(ValueError) as info:
        SubPathSpecializationHook(super_skip='TTX')
    assert str(info.value) == (
        "SubPathSpecializationHook super_skip='TTX' does not parse: expected a string of T/F "
        "letters, one per stage (e.g. 'TTFF'), a list of bools, or 'super' / 'base'")
    with pytest.raises(ValueError, match="base_skip=''"):
        SubPathSpecializationHook(base_skip='')
    with pytest.raises(ValueError, match='different numbers of stages'):
        SubPathSpecializationHook(super_skip='TF', base_skip='TTTT')
    with pytest.raises(ValueError) as info:
        SubPathSpecializationHook(alpha='0.5')
    assert str(info.value) == "alpha='0.5' (str): expected a number in [0, 1], e.g. alpha=0.5"
    with pytest.raises(ValueError, match=r'alpha=True \(bool\)'):
        SubPathSpecializationHook(alpha=True)


def test_cfg_options_may_set_one_argument_of_the_default_kd_loss(tmp_path):
    """``--cfg-options custom_hooks.0.feat_kd.mode=pooled`` on a hook whose ``feat_kd`` is
    the default gives a dict without ``type``: it sets that argument of the default loss."""
    from mmadn.engine.launch import load_config
    config = tmp_path / 'cfg.py'
    config.write_text(f"_base_ = [{CLS_DEMO!r}]\n"
                      "custom_hooks = [dict(type='SubPathSpecializationHook')]\n")
    cfg = load_config(str(config), {
        'custom_hooks.0.feat_kd.mode': 'pooled',
        'custom_hooks.0.logit_kd.topk': 2
    })
    assert cfg.custom_hooks[0]['feat_kd'] == dict(mode='pooled')
    distiller = SubPathSpecializationHook(**{
        k: v
        for k, v in cfg.custom_hooks[0].items() if k != 'type'
    }).distiller
    assert (distiller.feat_kd.mode, distiller.feat_kd.topk) == ('pooled', None)
    assert (distiller.logit_kd.mode, distiller.logit_kd.topk) == ('pooled', 2)


def test_level_reduction_sum_mean_and_one_random_level():
    torch.manual_seed(0)
    pairs = [(torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)) for _ in range(3)]
    kd = SubPathSpecializationHook(
        feat_kd=dict(type='SubPathKDLoss', mode='pooled')).distiller.feat_kd
    terms = [kd(s, t).item() for s, t in pairs]
    assert len(set(terms)) == 3 and min(terms) > 0
    by = {
        r:
        SubPathSpecializationHook(feat_kd=dict(type='SubPathKDLoss', mode='pooled'),
                                  level_reduction=r).distiller
        for r in ('sum', 'mean', 'random')
    }
    assert by['sum'].reduce_levels(pairs).item() == pytest.approx(sum(terms), rel=1e-6)
    assert by['mean'].reduce_levels(pairs).item() == pytest.approx(sum(terms) / 3, rel=1e-6)
    drawn = set()
    for seed in range(12):
        torch.manual_seed(seed)
        value = by['random'].reduce_levels(pairs).item()
        drawn.add(min(range(3), key=lambda i: abs(terms[i] - value)))
        assert min(abs(t - value) for t in terms) < 1e-7  # exactly one level's term
    assert drawn == {0, 1, 2}
    with pytest.raises(ValueError, match="level_reduction='avg'.*'mean'"):
        SubPathSpecializationHook(level_reduction='avg')


def test_neck_kd_on_a_detector_averages_the_fpn_levels(det_runner):
    """features='neck': one pooled KD term per FPN level (5 for the demo's FPN), averaged."""
    runner = det_runner
    runner.model.init_weights()
    hook = SubPathSpecializationHook(features='neck', level_reduction='mean',
                                     feat_kd=dict(type='SubPathKDLoss',
                                                  mode='pooled'), base_task_loss=True)
    levels = []
    with DefaultScope.overwrite_default_scope('mmdet'):
        hook.install(runner.model)
        orig = hook.distiller.reduce_levels
        hook.distiller.reduce_levels = lambda pairs: (levels.append(len(pairs)), orig(pairs))[1]
        losses = _one_batch_losses(runner)
        hook.uninstall()
    assert levels == [5]
    assert losses['loss_kd_feat'].item() > 0
    assert {'base_loss_cls', 'base_loss_mask', 'base_loss_rpn_cls'} <= set(losses)


# -- the two-backward step ----------------------------------------------------------------
def _train_copies(model, optim_cfg, batches, accumulative_counts=1, **hook_kw):
    """Train a copy of ``model`` on ``batches`` (the same seed before each step) with the
    one-backward and with the two-backward step; returns the two final states, the state
    after the first step of each, and the two modes' log variables."""
    # SGD, with the config's clipping and parameter-wise settings: its update is proportional
    # to the gradient. (Adam's first update is about lr * sign(grad), so a parameter whose
    # gradient is rounding noise moves by lr either way and the comparison says nothing.)
    sgd = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4)
    optim_cfg = dict(optim_cfg, optimizer=sgd, accumulative_counts=accumulative_counts)
    out = {}
    for two_backward in (False, True):
        m = copy.deepcopy(model)
        optim = build_optim_wrapper(m, optim_cfg)
        optim.initialize_count_status(m, 0, len(batches))
        hook = SubPathSpecializationHook(two_backward=two_backward, **hook_kw)
        hook.install(m)
        logs, first = [], None
        for i, batch in enumerate(batches):
            torch.manual_seed(i)  # the same RPN / RoI samples in both modes
            logs.append(m.train_step(copy.deepcopy(batch), optim_wrapper=optim))
            if first is None:
                first = _state(m)
        assert ('train_step' in m.__dict__) == two_backward
        hook.uninstall()
        assert 'train_step' not in m.__dict__ and 'loss' not in m.__dict__
        out[two_backward] = (_state(m), first, logs)
    return out


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _rel_diff(a, b, init, params):
    """max |a - b| over the parameters, relative to the largest update of ``b``."""
    update = max((b[n] - init[n]).abs().max().item() for n in params)
    diff = max((a[n] - b[n]).abs().max().item() for n in params)
    return diff / update, update


def _check_equal_steps(model, out, tol=1e-6):
    init = _state(model)
    params = [n for n, p in model.named_parameters() if p.requires_grad]
    (two, _, logs2), (one, _, logs1) = out[True], out[False]
    rel, update = _rel_diff(two, one, init, params)
    print(f'two vs one backward: max diff {rel:.2e} of the largest update ({update:.3g})')
    assert update > 1e-4  # the step moved the parameters
    assert rel <= tol, rel
    # BatchNorm statistics (both sets) follow the same forwards
    buffers = [k for k in init if k.endswith(('running_mean', 'running_var'))]
    assert buffers and max((two[k] - one[k]).abs().max().item() for k in buffers) <= 1e-6
    assert sorted(logs1[-1]) == sorted(logs2[-1])
    for k, v in logs1[-1].items():
        assert logs2[-1][k].item() == pytest.approx(v.item(), rel=1e-5, abs=1e-6), k
    return rel


@pytest.mark.parametrize('with_cp', [False, True])
def test_two_backward_equals_one_backward_classifier(cls_data_root, tmp_path, with_cp):
    cfg = _cfg(CLS_DEMO, cls_overrides(cls_data_root), tmp_path)
    cfg.model.backbone.with_cp = with_cp
    runner = Runner.from_cfg(cfg)
    runner.model.init_weights()
    batch = next(iter(runner.train_dataloader))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        out = _train_copies(runner.model, cfg.optim_wrapper, [batch])
    DefaultScope._instance_dict.clear()
    _check_equal_steps(runner.model, out)
    assert {'loss_kd_feat', 'loss_kd_logits', 'acc_base'} <= set(out[True][2][0])


@pytest.mark.parametrize('hook_kw', [dict(), dict(base_task_loss=True, features='neck')])
def test_two_backward_equals_one_backward_detector(det_runner, hook_kw):
    runner = det_runner
    runner.model.init_weights()
    batch = next(iter(runner.train_dataloader))
    with DefaultScope.overwrite_default_scope('mmdet'):
        # the demo config clips gradients (max_norm 10): the clipping sees the summed grads
        out = _train_copies(runner.model, runner.cfg.optim_wrapper, [batch], **hook_kw)
    _check_equal_steps(runner.model, out)
    logs = out[True][2][0]
    assert logs['loss_kd_feat'] > 0 and ('base_loss_mask' in logs) == bool(hook_kw)


def test_two_backward_gradient_accumulation(cls_data_root, tmp_path):
    """accumulative_counts=2: both backwards of an iteration are scaled by 1/2 and the
    optimizer steps once, after the second iteration."""
    cfg = _cfg(CLS_DEMO, cls_overrides(cls_data_root), tmp_path)
    runner = Runner.from_cfg(cfg)
    runner.model.init_weights()
    it = iter(runner.train_dataloader)
    batches = [next(it), next(it)]
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        out = _train_copies(runner.model, cfg.optim_wrapper, batches, accumulative_counts=2)
    DefaultScope._instance_dict.clear()
    init = _state(runner.model)
    for two_backward in (False, True):
        first = out[two_backward][1]
        assert all(torch.equal(first[n], init[n]) for n, _ in runner.model.named_parameters())
    _check_equal_steps(runner.model, out)


def test_two_backward_ddp_equals_one_process(tmp_path):
    out = tmp_path / 'ddp.json'
    run_tool([
        'python', '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29533',
        'tests/test_engine/ddp_two_backward_worker.py',
        str(out)
    ])
    results = json.loads(out.read_text())
    assert set(results) == {'find_unused_parameters=False', 'find_unused_parameters=True'}
    for key, r in results.items():
        assert r['num_skippable_params'] > 0, key
        assert r['params_with_grads'] == r['ref_params_with_grads'], key
        assert r['rel_diff_between_ranks'] == 0.0, key  # the ranks agree exactly
        for step in ('step1', 'step2'):
            f = r[step]
            # the two-backward DDP step applies the one-backward DDP step's gradients
            assert f['vs_ddp_one_backward_grad_rel_diff'] <= 1e-6, (key, step, f)
            # and those of one process on the combined batch, skipped blocks included, up
            # to DDP's float32 averaging (about 1e-6 of the largest gradient here)
            assert f['grad_rel_diff'] <= 1e-5, (key, step, f)
            assert f['skippable_grad_rel_diff'] <= 1e-6, (key, step, f)
            assert f['param_max_diff'] <= 4 * 1.2e-7 * f['param_max_abs'], (key, step, f)
            # the check is sensitive: the gradients of half of the batch are far away
            assert f['half_batch_grad_rel_diff'] > 0.1, (key, step, f)


def test_two_backward_refuses_an_optim_wrapper_dict(cls_data_root, tmp_path):
    from mmengine.optim import OptimWrapperDict
    cfg = _cfg(CLS_DEMO, cls_overrides(cls_data_root), tmp_path)
    runner = Runner.from_cfg(cfg)
    optim = OptimWrapperDict(main=build_optim_wrapper(runner.model, cfg.optim_wrapper))
    hook = SubPathSpecializationHook()
    hook.install(runner.model)
    with pytest.raises(TypeError, match='needs one OptimWrapper; got OptimWrapperDict'):
        runner.model.train_step({}, optim_wrapper=optim)
    hook.uninstall()
    with pytest.raises(ValueError, match="two_backward='yes'"):
        SubPathSpecializationHook(two_backward='yes')
    DefaultScope._instance_dict.clear()
