"""ghostdet's CPU fast paths, behind one switch.

Each fast path computes what the model's plain PyTorch modules compute (the reference, which the model code
spells out), in fewer passes over the maps, and steps aside where it does not apply (other devices and
dtypes, autocast, SyncBatchNorm, tracing and compiling, a missing compiler). The model calls in at two
places: :func:`rep_conv_bn_train` from ``RepConvBN`` in train mode, :func:`ghost_module_output` from
``GhostModuleV3`` at inference. ``GHOSTDET_CPU_KERNELS=0``, ``set_cpu_kernels(False)`` or
``with cpu_kernels(False):`` turns every one off.
"""
from .build import kernels_built
from .ghost_module import ghost_module_output
from .rep_conv_bn_train import train_forward as rep_conv_bn_train
from .switch import SWITCH, cpu_kernels, graph_is_recorded, set_cpu_kernels, use_cpu_kernels

__all__ = [
    'SWITCH', 'cpu_kernels', 'ghost_module_output', 'graph_is_recorded', 'kernels_built', 'rep_conv_bn_train',
    'set_cpu_kernels', 'use_cpu_kernels'
]
