"""Started by ``torch.distributed.run --nproc_per_node 2`` (gloo, CPU) from
test_subpath_hook.py: two two-backward steps of the tiny classifier under
``MMDistributedDataParallel``, each rank on its half of a batch of 4, with DDP's
``find_unused_parameters`` False and True. Rank 0 compares the gradients that the optimizer
applies (and the parameters) with one process (one-backward step) on the whole batch, and
with the one-backward step under DDP, and writes the figures of each step to the JSON file
argv[1].

BatchNorm is in eval mode (``norm_eval=True``, statistics estimated on the first batch
beforehand): with batch statistics, 2 images per rank would normalize differently from 4
in one process.
"""
import json
import re
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope
from torch.nn.modules.batchnorm import _BatchNorm

import mmadn  # noqa: F401
from mmadn.engine.hooks import SubPathSpecializationHook

CLS_DEMO = 'configs/demo/resnet18_adn_demo.py'
SKIPPABLE = re.compile(r'^backbone\.layer\d\.1\.')  # ResNet-18-ADN: the second block


def build_model(calibration_batch):
    """The tiny classifier, its BatchNorm statistics (both norm sets) estimated on
    ``calibration_batch`` and then frozen (``norm_eval``)."""
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(CLS_DEMO)
    cfg.model.backbone.update(norm_eval=True, zero_init_residual=False)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, _BatchNorm):
                m.train()
                m.momentum = None  # the plain average over the calibration passes
        inputs = model.data_preprocessor(as_data(calibration_batch), False)['inputs']
        for skip in ('super', 'base'):
            with model.backbone.skipping(skip):
                model.backbone(inputs)
    return model.train()  # norm_eval: the norms stay in eval mode


def batches():
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(2):
        inputs = [
            torch.randint(0, 256, (3, 64, 64), generator=g, dtype=torch.uint8) for _ in range(4)
        ]
        labels = torch.randint(0, 4, (4, ), generator=g).tolist()
        out.append([(x, DataSample().set_gt_label(lb)) for x, lb in zip(inputs, labels)])
    return out


def as_data(pairs):
    return dict(inputs=[x for x, _ in pairs], data_samples=[s for _, s in pairs])


def train(model, step_model, data_batches, two_backward):
    """The gradients the optimizer applies at each step, and the parameters after it."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    grads = []
    optimizer.register_step_pre_hook(lambda *_: grads.append({
        n: p.grad.clone()
        for n, p in model.named_parameters() if p.grad is not None
    }))
    optim = OptimWrapper(optimizer)
    hook = SubPathSpecializationHook(two_backward=two_backward)
    hook.install(step_model)
    states = []
    for pairs in data_batches:
        step_model.train_step(as_data(pairs), optim_wrapper=optim)
        states.append({n: p.detach().clone() for n, p in model.named_parameters()})
    hook.uninstall()
    return grads, states


def max_diff(a, b, names=None):
    names = names if names is not None else list(a)
    return max((a[n] - b[n]).abs().max().item() for n in names)


def main():
    out_path = sys.argv[1]
    dist.init_process_group('gloo', timeout=timedelta(seconds=120))
    rank, world = dist.get_rank(), dist.get_world_size()
    assert world == 2, world
    data = batches()
    halves = [pairs[2 * rank:2 * rank + 2] for pairs in data]
    results = {}
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        init = {n: p.detach().clone() for n, p in build_model(data[0]).named_parameters()}
        # the one-backward step under DDP: what DDP's own arithmetic gives
        model = build_model(data[0])
        ddp = MMDistributedDataParallel(model, device_ids=None, broadcast_buffers=False)
        ddp_one_grads, _ = train(model, ddp, halves, two_backward=False)
        for find_unused in (False, True):
            model = build_model(data[0])
            ddp = MMDistributedDataParallel(model, device_ids=None, broadcast_buffers=False,
                                            find_unused_parameters=find_unused)
            grads, states = train(model, ddp, halves, two_backward=True)
            flat = torch.cat([states[-1][n].flatten() for n in sorted(states[-1])])
            gathered = [torch.zeros_like(flat) for _ in range(world)]
            dist.all_gather(gathered, flat)
            if rank == 0:
                single = build_model(data[0])
                ref_grads, refs = train(single, single, data, two_backward=False)
                half = build_model(data[0])
                half_grads, _ = train(half, half, [pairs[:2] for pairs in data], two_backward=False)
                skippable = [n for n in init if SKIPPABLE.match(n)]
                r = dict(num_skippable_params=len(skippable),
                         params_with_grads=[len(g) for g in grads],
                         ref_params_with_grads=[len(g) for g in ref_grads])
                for step in range(len(data)):
                    g, ref, ref_p = grads[step], ref_grads[step], refs[step]
                    scale = max_diff(ref, {n: 0 * v for n, v in ref.items()})
                    update = max_diff(ref_p, init)
                    r[f'step{step + 1}'] = dict(
                        max_grad=scale, grad_rel_diff=max_diff(g, ref) / scale,
                        skippable_grad_rel_diff=max_diff(g, ref, skippable) / scale,
                        half_batch_grad_rel_diff=max_diff(half_grads[step], ref) / scale,
                        ddp_one_backward_grad_rel_diff=max_diff(ddp_one_grads[step], ref) / scale,
                        vs_ddp_one_backward_grad_rel_diff=max_diff(g, ddp_one_grads[step]) / scale,
                        param_max_update=update, param_max_diff=max_diff(states[step], ref_p),
                        param_max_abs=max(v.abs().max().item() for v in ref_p.values()))
                r['rel_diff_between_ranks'] = (gathered[0] - gathered[1]).abs().max().item()
                results[f'find_unused_parameters={find_unused}'] = r
    if rank == 0:
        with open(out_path, 'w') as f:
            json.dump(results, f, indent=1)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == '__main__':
    main()
