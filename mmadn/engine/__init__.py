from . import hooks, runner  # noqa: F401
from .two_backward_step import TwoBackwardStep  # noqa: F401
