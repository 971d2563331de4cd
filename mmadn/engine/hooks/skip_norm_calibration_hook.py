"""Skip-norm calibration during training (see :mod:`mmadn.models.layers.calibration`)."""
from typing import Sequence

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ...models.layers.calibration import (all_reduce_skip_norm_stats,
                                          calibrate_skip_norms)
from ...models.layers.skip_aware import AdaptiveDepthMixin


@HOOKS.register_module()
class SkipNormCalibrationHook(Hook):
    """Gives the ``*_skip`` norms running statistics of their own, from training batches
    run through the base-net (or the given sub-networks), for backbones whose norms are
    frozen (``norm_eval=True``) and that start from a plain checkpoint, where the skip norms
    would otherwise stay copies of their partners.

    Calibrates before training starts and, after training iterations, every ``interval``
    epochs (``by_epoch=True``) or iterations, and after the last one. It runs before the
    checkpoint hook, so the saved checkpoints and the validation that follows use the
    calibrated statistics. Only the skip norms' running means and variances change (see
    :func:`~mmadn.models.layers.calibration.calibrate_skip_norms`); the random generators
    are restored afterwards.

    Args:
        num_batches (int): training batches per calibration. Default 16.
        skips (Sequence): sub-networks whose skip norms are calibrated. Default
            ``('base', )``.
        interval (int): calibrate every ``interval`` epochs / iterations; ``-1`` only
            before training and after the last iteration. Default 1.
        by_epoch (bool): whether ``interval`` counts epochs. Default True.
        before_train (bool): also calibrate before the first iteration. Default True.
    """

    priority = 'ABOVE_NORMAL'  # before CheckpointHook (VERY_LOW) saves

    def __init__(self,
                 num_batches: int = 16,
                 skips: Sequence = ('base', ),
                 interval: int = 1,
                 by_epoch: bool = True,
                 before_train: bool = True):
        if not isinstance(num_batches, int) or isinstance(num_batches, bool) \
                or num_batches < 1:
            raise ValueError(f'num_batches={num_batches!r}: expected an int >= 1')
        if not isinstance(interval, int) or (interval < 1 and interval != -1):
            raise ValueError(f'interval={interval!r}: expected an int >= 1, or -1')
        if isinstance(skips, str):
            skips = (skips, )
        self.num_batches = num_batches
        self.skips = tuple(skips)
        self.interval = interval
        self.by_epoch = by_epoch
        self.calibrate_before_train = before_train
        self._loader = self._stream = None
        self.num_calibrations = 0

    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def before_train(self, runner) -> None:
        model = self._model(runner)
        if not isinstance(getattr(model, 'backbone', None), AdaptiveDepthMixin):
            raise TypeError(
                'SkipNormCalibrationHook needs a model whose `backbone` is an ADN backbone; '
                f'got {type(getattr(model, "backbone", None)).__name__}')
        # the skips must parse before any work is done
        for skip in self.skips:
            with model.backbone.skipping(skip):
                pass
        # a loader of its own, so the training loader's order is not touched
        self._loader = runner.build_dataloader(runner.cfg.train_dataloader, seed=runner.seed)
        self._stream = iter(self._loader)
        if self.calibrate_before_train:
            self.calibrate(runner)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None):
        if self.by_epoch:
            return
        last = runner.iter + 1 == runner.max_iters
        if last or (self.interval > 0 and self.every_n_train_iters(runner, self.interval)):
            self.calibrate(runner)

    def after_train_epoch(self, runner) -> None:
        if not self.by_epoch:
            return
        last = runner.epoch + 1 == runner.max_epochs
        if last or (self.interval > 0 and self.every_n_epochs(runner, self.interval)):
            self.calibrate(runner)

    def _next_batch(self):
        """The next batch of the hook's own loader, one stream across calibrations (an
        epoch-based loader starts over when it runs out)."""
        try:
            return next(self._stream)
        except StopIteration:
            self._stream = iter(self._loader)
            return next(self._stream)

    def calibrate(self, runner) -> None:
        model = self._model(runner)
        preprocessor = model.data_preprocessor

        def batches():
            for _ in range(self.num_batches):
                yield preprocessor(self._next_batch(), True)['inputs']

        names = calibrate_skip_norms(model.backbone, batches(), self.skips)
        all_reduce_skip_norm_stats(model.backbone, names)
        self.num_calibrations += 1
        print_log(f'SkipNormCalibrationHook: calibrated {len(names)} skip norms on '
                  f'{self.num_batches} batches through {list(self.skips)}', logger='current')
