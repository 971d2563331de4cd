from .subpath_kd_loss import SubPathKDLoss

__all__ = ['SubPathKDLoss']
