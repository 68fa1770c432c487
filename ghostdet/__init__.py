"""ghostdet: GhostNetV3 for MMDetection 3.x.

``import ghostdet`` (or ``custom_imports=dict(imports=['ghostdet'])`` in a config) registers the
backbone, hooks, distillers and datasets in the OpenMMLab registries and turns on safe checkpoint
loading for MMEngine runner checkpoints (see :mod:`ghostdet.safe_load`).
"""
from .safe_load import enable_safe_checkpoint_loading

enable_safe_checkpoint_loading()

from . import models  # noqa: E402,F401  (registers modules)
from . import datasets, engine  # noqa: E402,F401  (registers datasets, hooks)
from .models import GhostNetV3  # noqa: E402
from .deploy import fuse_model  # noqa: E402
from .ops import cpu_kernels, set_cpu_kernels  # noqa: E402

__version__ = '0.1.0'
__all__ = ['GhostNetV3', 'cpu_kernels', 'fuse_model', 'set_cpu_kernels', '__version__']
