from .recorder import OutputRecorder

__all__ = ['OutputRecorder']
