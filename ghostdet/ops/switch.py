"""The one switch of ghostdet's CPU fast paths, and the conditions every fast path shares.

Every fast path computes what the plain PyTorch modules compute (the reference computation), in fewer
passes. Turning them off leaves exactly that reference: ``GHOSTDET_CPU_KERNELS=0`` in the environment,
or from Python ``set_cpu_kernels(False)`` / ``with cpu_kernels(False):``, as timm's ``set_fused_attn``.
"""
import contextlib
import os
from typing import Iterator, Optional

import torch

SWITCH = 'GHOSTDET_CPU_KERNELS'
_override: Optional[bool] = None  # set_cpu_kernels(); None: the environment decides


def set_cpu_kernels(enable: Optional[bool]) -> None:
    """Turn every fast path on or off for this process; ``None`` hands the choice back to ``SWITCH``."""
    global _override
    _override = enable


@contextlib.contextmanager
def cpu_kernels(enable: bool) -> Iterator[None]:
    """The fast paths on or off inside a ``with`` block (the previous setting is restored)."""
    previous = _override
    set_cpu_kernels(enable)
    try:
        yield
    finally:
        set_cpu_kernels(previous)


def use_cpu_kernels() -> bool:
    """Whether the fast paths may run: ``set_cpu_kernels`` if called, else ``GHOSTDET_CPU_KERNELS`` (on
    unless ``0``)."""
    if _override is not None:
        return _override
    return os.environ.get(SWITCH, '1') != '0'


def graph_is_recorded() -> bool:
    """Whether a tracer or compiler records the graph (torch.jit.trace for ONNX export and FLOP counting,
    torch.compile / torch.export): the plain PyTorch ops must run then, uncached. torch.compiler's flags
    count as unset where torch predates them (is_exporting: torch 2.6; export sets is_compiling too)."""
    return (torch.jit.is_tracing() or getattr(torch.compiler, 'is_compiling', lambda: False)()
            or getattr(torch.compiler, 'is_exporting', lambda: False)())


def kernel_takes(map_: torch.Tensor) -> bool:
    """Whether a tensor is what the C++ kernels read: a 4-d float32 CPU map in channels-last format."""
    return (map_.dim() == 4 and map_.dtype == torch.float32 and map_.device.type == 'cpu'
            and map_.is_contiguous(memory_format=torch.channels_last))
