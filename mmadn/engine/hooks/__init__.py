from .checkpoint_hook import AtomicCheckpointHook
from .skip_norm_calibration_hook import SkipNormCalibrationHook
from .subpath_specialization_hook import SubPathSpecializationHook

__all__ = ['AtomicCheckpointHook', 'SubPathSpecializationHook', 'SkipNormCalibrationHook']
