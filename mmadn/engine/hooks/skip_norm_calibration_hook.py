"""Skip-norm calibration during training (see :mod:`mmadn.models.layers.calibration`)."""
from typing import Sequence

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ...models.layers import find_adn_backbone
from ...models.layers.calibration import all_reduce_skip_norm_stats, calibrate_skip_norms


@HOOKS.register_module()
class SkipNormCalibrationHook(Hook):
    """Gives the ``*_skip`` norms running statistics of their own before training, from
    training batches run through the base-net (or the given sub-networks), for backbones
    whose norms are frozen (``norm_eval=True``) and that start from a plain checkpoint,
    where the skip norms would otherwise stay copies of their partners.

    It calibrates once, before the first iteration of a run that starts at iteration 0 (a
    resumed run keeps the statistics of its checkpoint). Afterwards the statistics stay
    frozen like every other norm's: under frozen norms the weights are trained for the
    statistics in use, and recalibrating a trained detector changes the function it learned
    (the README's section on calibration has the measurements). Only the skip norms'
    running means and variances change (see
    :func:`~mmadn.models.layers.calibration.calibrate_skip_norms`); the random generators
    are restored afterwards.

    Args:
        num_batches (int): training batches for the calibration. Default 16.
        skips (Sequence): sub-networks whose skip norms are calibrated. Default
            ``('base', )``.
    """

    priority = 'ABOVE_NORMAL'
    needs_adn_backbone = True  # a static export of the model drops it

    def __init__(self, num_batches: int = 16, skips: Sequence = ('base', )):
        if not isinstance(num_batches, int) or isinstance(num_batches, bool) \
                or num_batches < 1:
            raise ValueError(f'num_batches={num_batches!r}: expected an int >= 1')
        if isinstance(skips, str):
            skips = (skips, )
        self.num_batches = num_batches
        self.skips = tuple(skips)
        self._loader = self._stream = None
        self.num_calibrations = 0

    @staticmethod
    def _model(runner):
        return runner.model.module if is_model_wrapper(runner.model) else runner.model

    def before_train(self, runner) -> None:
        model = self._model(runner)
        find_adn_backbone(model, user=type(self).__name__)
        # the skips must parse before any work is done
        for skip in self.skips:
            with model.backbone.skipping(skip):
                pass
        if runner.iter > 0 or runner.epoch > 0:
            print_log(
                f'SkipNormCalibrationHook: resumed at iteration {runner.iter}; the skip '
                'norms keep the statistics of the checkpoint', logger='current')
            return
        # a loader of its own, so the training loader's order is not touched
        self._loader = runner.build_dataloader(runner.cfg.train_dataloader, seed=runner.seed)
        self._stream = iter(self._loader)
        self.calibrate(runner)

    def _next_batch(self):
        """The next batch of the hook's own loader (an epoch-based loader starts over when
        ``num_batches`` exceeds its length)."""
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
        print_log(
            f'SkipNormCalibrationHook: calibrated {len(names)} skip norms on '
            f'{self.num_batches} batches through {list(self.skips)}', logger='current')
