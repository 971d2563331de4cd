from .subnet_loops import SubnetTestLoop, SubnetValLoop, metrics_table, resolve_skips

__all__ = ['SubnetValLoop', 'SubnetTestLoop', 'resolve_skips', 'metrics_table']
