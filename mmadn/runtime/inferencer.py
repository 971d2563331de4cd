"""mmdet's DetInferencer for trained ADN checkpoints: the weights must fit the model."""
from mmdet.apis import DetInferencer

from ..models import CheckpointMismatchError, load_checkpoint_dict_strictly


class StrictDetInferencer(DetInferencer):
    """mmdet's ``DetInferencer``, loading its weights strictly: a checkpoint that does not
    fit the config (another model, another split, a classifier's backbone) raises
    :class:`~mmadn.models.CheckpointMismatchError` saying what it is, where
    ``DetInferencer`` would load what fits and draw the rest at random. ``weights`` is
    required."""

    def _init_model(self, cfg, weights, device):
        self._weights = weights  # for the messages
        return super()._init_model(cfg, weights, device)

    def _load_weights_to_model(self, model, checkpoint, cfg):
        if checkpoint is None:
            raise CheckpointMismatchError('no checkpoint given: trained weights are needed')
        load_checkpoint_dict_strictly(model, checkpoint, self._weights)
        super()._load_weights_to_model(model, checkpoint, cfg)  # the dataset meta
