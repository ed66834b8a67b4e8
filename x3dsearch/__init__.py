"""x3dsearch: find the best X3D video network for a compute budget by progressive expansion."""

from .config import ConfigError, X3DConfig, preset
from .cost import count_flops, count_params
from .model import build_model
from .rundir import load_run
from .space import expand

__all__ = ["X3DConfig", "ConfigError", "preset", "build_model", "count_flops", "count_params",
           "expand", "load_run"]
__version__ = "0.1.0"
