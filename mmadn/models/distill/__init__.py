from .recorder import OutputRecorder
from .subpath_distiller import SubPathDistiller

__all__ = ['OutputRecorder', 'SubPathDistiller']
