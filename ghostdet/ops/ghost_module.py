"""A ghost module's output in one C++ pass at inference (``csrc/ghost_module.cpp``).

At inference a ghost module is cat(p, act(w ⊛ p + b)): its primary half p = act(primary conv) and a cheap
depthwise conv of p, gated by upsampled DFC attention in a bottleneck's first ghost module. PyTorch writes
and reads back several full-size maps for that; the kernel writes the output once, with the same float
operations up to the order of the conv's sums (``tests/test_ops/test_ghost_module_op.py``). It runs where
nothing needs gradients and no graph is recorded (ONNX export, FLOP counting and torch.compile see the
PyTorch ops), on float32 CPU maps in channels-last format, the backbone's default.
"""
import functools
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .build import extension, kernels_built
from .switch import graph_is_recorded, kernel_takes


def ghost_module_output(x: Tensor, primary: nn.Module, cheap: nn.Module, out_channels: int,
                        gate: Optional[Tensor]) -> Optional[Tensor]:
    """act(cat(p, cheap(p))) for p = ``primary(x)``, times ``gate`` upsampled (nearest) to the output size,
    in one pass; None where the kernel does not apply (the module then runs its PyTorch ops)."""
    if not _applies(x, primary, cheap, out_channels, gate):
        return None
    kernel, bias = cheap.fused_kernel_bias()
    rows = cols = x.new_empty(0, dtype=torch.long)
    if gate is not None:
        rows = nearest_sources(gate.shape[2], x.shape[2])
        cols = nearest_sources(gate.shape[3], x.shape[3])
    before_act = primary.forward_linear(x).contiguous(memory_format=torch.channels_last)
    return extension().ghost_module_output(before_act, kernel.reshape(-1, 9).contiguous(), bias.contiguous(),
                                           isinstance(cheap.act, nn.ReLU), gate, rows, cols)


def _applies(x: Tensor, primary: nn.Module, cheap: nn.Module, out_channels: int, gate: Optional[Tensor]) -> bool:
    """``cheap`` is one depthwise 3×3 stride-1 conv now (fused, or BNs in eval mode) of the ``primary``
    conv's ``out_channels / 2`` channels, both activated alike (ReLU or nothing); ``x`` and ``gate`` are maps
    the kernel reads; nothing requires gradients, autocasts or records the graph; and the kernels are
    built."""
    tensors = [x] if gate is None else [x, gate]
    return (all(kernel_takes(t) for t in tensors)
            and cheap.is_single_conv() and cheap.kernel_size == 3 and cheap.stride == 1
            and cheap.groups == cheap.in_channels == cheap.out_channels == primary.out_channels
            and 2 * primary.out_channels == out_channels
            and type(primary.act) is type(cheap.act) and isinstance(cheap.act, (nn.ReLU, nn.Identity))
            and not (torch.is_grad_enabled() and any(
                t.requires_grad for t in [*tensors, *primary.parameters(), *cheap.parameters()]))
            and not torch.is_autocast_enabled('cpu') and not graph_is_recorded()
            and kernels_built())


@functools.lru_cache(maxsize=256)
def nearest_sources(in_size: int, out_size: int) -> Tensor:
    """For each of ``out_size`` positions, the source index F.interpolate(mode='nearest') reads (taken from
    F.interpolate itself, so odd sizes match too)."""
    positions = torch.arange(in_size, dtype=torch.float32).view(1, 1, -1)
    return F.interpolate(positions, size=out_size, mode='nearest').view(-1).long()
