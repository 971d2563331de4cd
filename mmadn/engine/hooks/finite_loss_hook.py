"""Stop a training run at the first iteration whose losses are not finite."""
import math

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


class TrainingDivergedError(RuntimeError):
    """The losses or the weights of a training run stopped being finite."""


def divergence_advice(runner) -> str:
    """Which checkpoint is the last good one, and what to try, for a diverged run."""
    last = runner.message_hub.get_info('last_ckpt')
    where = (f'the last checkpoint, {last}, holds finite weights (continue from it with '
             '--resume)' if last else 'no checkpoint was written before')
    return (f'{where}. Try a lower learning rate (--cfg-options '
            'optim_wrapper.optimizer.lr=...), gradient clipping '
            '(optim_wrapper.clip_grad.max_norm=...) or a KD warm-up '
            "(the SubPathSpecializationHook's kd_warmup_iters)")


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Checks every training iteration's losses and stops the run at the first one that is
    NaN or infinite, with one message: which losses, which iteration, the last checkpoint
    and what to try. It runs before the checkpoint hook of the same iteration, so no
    checkpoint of the diverged weights is written. ``tools/train.py`` adds it to every run.
    """

    priority = 'ABOVE_NORMAL'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        bad = {
            k: float(v)
            for k, v in (outputs or {}).items() if 'loss' in k and not math.isfinite(float(v))
        }
        if bad:
            shown = ', '.join(f'{k} = {v}' for k, v in bad.items())
            raise TrainingDivergedError(
                f'training diverged at iteration {runner.iter + 1}: {shown}; no checkpoint of '
                f'these weights was written, and {divergence_advice(runner)}')
