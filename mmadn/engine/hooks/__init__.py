from .checkpoint_hook import AtomicCheckpointHook, CheckpointWriteError
from .finite_loss_hook import FiniteLossHook, TrainingDivergedError
from .skip_norm_calibration_hook import SkipNormCalibrationHook
from .subpath_specialization_hook import SubPathSpecializationHook

__all__ = [
    'AtomicCheckpointHook', 'CheckpointWriteError', 'FiniteLossHook', 'TrainingDivergedError',
    'SubPathSpecializationHook', 'SkipNormCalibrationHook'
]
