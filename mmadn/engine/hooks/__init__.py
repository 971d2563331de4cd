from .subpath_specialization_hook import SubPathSpecializationHook

__all__ = ['SubPathSpecializationHook']
