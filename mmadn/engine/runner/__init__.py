from .subnet_loops import SubnetTestLoop, SubnetValLoop, metrics_table

__all__ = ['SubnetValLoop', 'SubnetTestLoop', 'metrics_table']
