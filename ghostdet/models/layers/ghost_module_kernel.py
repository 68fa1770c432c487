"""A ghost module's output in one C++ pass at inference (``csrc/ghost_module.cpp``).

At inference a ghost module is cat(p, act(w ⊛ p + b)): its primary half p = act(primary conv) and a cheap
depthwise conv of p, gated by upsampled DFC attention (a bottleneck's first ghost module) or plus the shortcut
(its second). PyTorch writes and reads back seven full-size maps for that; the kernel writes the output
once, with the same float operations up to the order of the conv's sums
(``tests/test_ghost_module_kernel.py``). It runs where nothing needs gradients and no graph is recorded
(ONNX export, FLOP counting and torch.compile see the PyTorch ops), on float32 CPU maps in channels-last
format, the backbone's default.
"""
import functools
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from . import cpu_kernels
from .reparam import RepConvBN


def applies(x: Tensor, primary: RepConvBN, cheap: RepConvBN, out_channels: int, *maps: Optional[Tensor]) -> bool:
    """Whether the kernel computes the module's output: ``cheap`` is one depthwise 3×3 stride-1 conv now
    (fused, or BNs in eval mode) of the ``primary`` conv's ``out_channels / 2`` channels, both activated
    alike (ReLU or nothing); ``x`` is a float32 CPU map in channels-last format and so are the other maps;
    nothing requires gradients or traces the graph; and the kernels are built."""
    tensors = [x, *(m for m in maps if m is not None)]
    return (all(cpu_kernels.takes(t) for t in tensors)
            and cheap.is_single_conv() and cheap.kernel_size == 3 and cheap.stride == 1
            and cheap.groups == cheap.in_channels == cheap.out_channels == primary.out_channels
            and 2 * primary.out_channels == out_channels
            and type(primary.act) is type(cheap.act) and isinstance(cheap.act, (nn.ReLU, nn.Identity))
            and not (torch.is_grad_enabled() and any(
                t.requires_grad for t in [*tensors, *primary.parameters(), *cheap.parameters()]))
            and not cpu_kernels.graph_is_recorded()
            and cpu_kernels.enabled())


def ghost_module_output(primary: Tensor, cheap: RepConvBN, gate: Optional[Tensor] = None,
                        residual: Optional[Tensor] = None) -> Tensor:
    """act(cat(primary, cheap(act(primary)))), times ``gate`` upsampled (nearest) to the output size, plus
    ``residual``, from the primary conv's output before its activation ``act``; where ``applies`` holds."""
    kernel, bias = cheap.fused_kernel_bias()
    rows = cols = primary.new_empty(0, dtype=torch.long)
    if gate is not None:
        rows = nearest_sources(gate.shape[2], primary.shape[2])
        cols = nearest_sources(gate.shape[3], primary.shape[3])
    return cpu_kernels.extension().ghost_module_output(
        primary.contiguous(memory_format=torch.channels_last), kernel.reshape(-1, 9).contiguous(),
        bias.contiguous(), isinstance(cheap.act, nn.ReLU), gate, rows, cols, residual)


@functools.lru_cache(maxsize=256)
def nearest_sources(in_size: int, out_size: int) -> Tensor:
    """For each of ``out_size`` positions, the source index F.interpolate(mode='nearest') reads (taken from
    F.interpolate itself, so odd sizes match too)."""
    positions = torch.arange(in_size, dtype=torch.float32).view(1, 1, -1)
    return F.interpolate(positions, size=out_size, mode='nearest').view(-1).long()
