from .checkpoint_hook import AtomicCheckpointHook
from .subpath_specialization_hook import SubPathSpecializationHook

__all__ = ['AtomicCheckpointHook', 'SubPathSpecializationHook']
