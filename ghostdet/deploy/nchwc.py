"""Channel padding of a fused GhostNetV3 for onnxruntime's blocked CPU layout (NCHWc).

onnxruntime runs convolutions on the CPU in a blocked layout (16 channels a block with AVX-512, 8 with
AVX2) and keeps the blocks from one convolution to the next. A ``Concat`` stays blocked only when every
input has a multiple of the block: a ghost module's halves (8, 12, 20, 36, 60, ... channels at 1.0x) do
not, so each of its concatenations converts both halves to NCHW and the result back, and the DFC gate's
product and the shortcut's sum fall back to NCHW with it (measured: a third of the exported detector's
time went to these conversions).

:func:`padded_for_nchwc` (a copy of a fused model, for export) gives each ghost module's halves
zero channels up to a multiple of 16, so that both halves and their concatenation are whole blocks, and
re-lays every consumer's weights to the padded positions with zero weights for the padding. The padding
channels stay exactly zero (zero weights and biases, ReLU(0) = 0, gated by any finite value), so the
outputs are the same; the backbone's outputs are gathered back to their own channels for the neck.
"""
import copy
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ..models.backbones.ghostnetv3 import ConvBNSequential, GhostBottleneckV3, GhostModuleV3, GhostNetV3
from ..models.layers import RepConvBN

BLOCK = 16  # AVX-512's block; a multiple of AVX2's 8

__all__ = ['BLOCK', 'Layout', 'padded_for_nchwc']


@dataclass(frozen=True)
class Layout:
    """Where each channel of a tensor sits in its padded form: ``positions[i]`` of ``width`` channels."""
    positions: Tuple[int, ...]
    width: int

    @classmethod
    def plain(cls, channels: int, width: Optional[int] = None) -> 'Layout':
        return cls(tuple(range(channels)), channels if width is None else width)

    @classmethod
    def ghost(cls, half: int, padded_half: int) -> 'Layout':
        """A ghost module's output: primary channels, padding, cheap channels, padding."""
        return cls(tuple(range(half)) + tuple(range(padded_half, padded_half + half)), 2 * padded_half)


def _round_up(channels: int) -> int:
    return -(-channels // BLOCK) * BLOCK


def _scatter(tensor: Tensor, layout: Layout, dim: int, fill: float = 0.) -> Tensor:
    shape = list(tensor.shape)
    shape[dim] = layout.width
    out = tensor.new_full(shape, fill)
    return out.index_copy_(dim, torch.tensor(layout.positions, device=tensor.device), tensor.contiguous())


def _relay_conv(conv: nn.Conv2d, in_layout: Layout, out_layout: Layout) -> None:
    """Output channels to ``out_layout``; input channels to ``in_layout`` (a depthwise conv: its channels)."""
    depthwise = conv.groups > 1
    if depthwise and not (conv.groups == conv.in_channels == conv.out_channels and in_layout == out_layout):
        raise ValueError(f'cannot re-lay a grouped, not depthwise conv ({conv})')
    if not depthwise and conv.groups != 1:
        raise ValueError(f'cannot re-lay {conv}')
    weight = _scatter(conv.weight.detach(), out_layout, 0)
    if depthwise:
        conv.groups = out_layout.width
    else:
        weight = _scatter(weight, in_layout, 1)
    conv.in_channels, conv.out_channels = in_layout.width, out_layout.width
    conv.weight = nn.Parameter(weight, requires_grad=False)
    if conv.bias is not None:
        conv.bias = nn.Parameter(_scatter(conv.bias.detach(), out_layout, 0), requires_grad=False)


def _relay_norm(norm: _BatchNorm, layout: Layout) -> None:
    """Padding channels normalize to 0 (weight 0, bias 0, mean 0, variance 1)."""
    norm.weight = nn.Parameter(_scatter(norm.weight.detach(), layout, 0), requires_grad=False)
    norm.bias = nn.Parameter(_scatter(norm.bias.detach(), layout, 0), requires_grad=False)
    norm.running_mean = _scatter(norm.running_mean, layout, 0)
    norm.running_var = _scatter(norm.running_var, layout, 0, fill=1.)
    norm.num_features = layout.width


def _relay_sequential(sequence: ConvBNSequential, in_layout: Layout, out_layout: Layout) -> None:
    """Conv-BN pairs: a dense conv maps to ``out_layout``, a depthwise one keeps the current layout."""
    current = in_layout
    for module in sequence:
        if isinstance(module, nn.Conv2d):
            target = current if module.groups > 1 else out_layout
            _relay_conv(module, current, target)
            current = target
        elif isinstance(module, _BatchNorm):
            _relay_norm(module, current)
    if current != out_layout:
        raise ValueError(f'{sequence} does not end in the wanted layout')


def _relay_rep_conv(conv: RepConvBN, in_layout: Layout, out_layout: Layout) -> None:
    _relay_conv(conv.fused, in_layout, out_layout)
    conv.in_channels, conv.out_channels, conv.groups = in_layout.width, out_layout.width, conv.fused.groups


def _pad_ghost_module(module: GhostModuleV3, in_layout: Layout, padded_half: int) -> Layout:
    half = module.primary.out_channels
    primary_layout = Layout.plain(half, padded_half)
    _relay_rep_conv(module.primary, in_layout, primary_layout)
    _relay_rep_conv(module.cheap, primary_layout, primary_layout)
    out_layout = Layout.ghost(half, padded_half)
    if module.dfc is not None:
        _relay_sequential(module.dfc, in_layout, out_layout)
    module.out_channels = out_layout.width
    return out_layout


def _pad_bottleneck(block: GhostBottleneckV3, in_layout: Layout) -> Layout:
    mid = _pad_ghost_module(block.ghost1, in_layout, _round_up(block.ghost1.primary.out_channels))
    if block.conv_dw is not None:
        _relay_rep_conv(block.conv_dw, mid, mid)
    if block.se is not None:
        reduced = Layout.plain(block.se.conv_reduce.out_channels)
        _relay_conv(block.se.conv_reduce, mid, reduced)
        _relay_conv(block.se.conv_expand, reduced, mid)
    half = block.ghost2.primary.out_channels
    if isinstance(block.shortcut, nn.Identity):  # the sum needs the input's layout
        padded_half = next((p for p in (_round_up(half), half) if Layout.ghost(half, p) == in_layout), None)
        if padded_half is None:
            raise ValueError('an identity shortcut whose input is not laid out as its ghost module output')
    else:
        padded_half = _round_up(half)
    out_layout = _pad_ghost_module(block.ghost2, mid, padded_half)
    if not isinstance(block.shortcut, nn.Identity):
        _relay_sequential(block.shortcut, in_layout, out_layout)
    return out_layout


class GatheredOutputs(nn.Module):
    """A padded backbone whose outputs are gathered back to their own channels (for the neck)."""

    def __init__(self, backbone: GhostNetV3, layouts: List[Layout]) -> None:
        super().__init__()
        self.backbone = backbone
        device = next(backbone.parameters()).device
        for i, layout in enumerate(layouts):
            self.register_buffer(f'positions_{i}', torch.tensor(layout.positions, device=device), persistent=False)
        self.gathers = [layout.positions != tuple(range(layout.width)) for layout in layouts]

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        return tuple(out.index_select(1, getattr(self, f'positions_{i}')) if gather else out
                     for i, (out, gather) in enumerate(zip(self.backbone(x), self.gathers)))


def _pad_backbone(backbone: GhostNetV3) -> GatheredOutputs:
    layout = Layout.plain(backbone.stem[0].out_channels)
    taps = []
    for i, stage in enumerate(backbone.stages):
        for block in stage:
            layout = _pad_bottleneck(block, layout)
        if i in backbone.out_indices:
            taps.append(layout)
    if backbone.last_conv is not None:
        channels = backbone.last_conv[0].out_channels
        _relay_sequential(backbone.last_conv, layout, Layout.plain(channels))
        taps.append(Layout.plain(channels))
    return GatheredOutputs(backbone, taps)


def _paddable(backbone: nn.Module) -> bool:
    """A fused GhostNetV3 with even ghost module widths (``make_divisible`` gives multiples of 4)."""
    return (isinstance(backbone, GhostNetV3)
            and all(getattr(m, 'deploy', True) for m in backbone.modules() if isinstance(m, RepConvBN))
            and all(m.out_channels % 2 == 0 for m in backbone.modules() if isinstance(m, GhostModuleV3)))


@torch.no_grad()
def padded_for_nchwc(model: nn.Module) -> Optional[nn.Module]:
    """A copy of ``model`` (a fused GhostNetV3, or a detector with one as its backbone) whose backbone is
    padded for onnxruntime's blocked layout; None where there is nothing to pad. For export only: the copy
    computes the same outputs with more channels."""
    if isinstance(model, GhostNetV3):
        return _pad_backbone(copy.deepcopy(model)) if _paddable(model) else None
    if not _paddable(getattr(model, 'backbone', None)):
        return None
    padded = copy.deepcopy(model)
    padded.backbone = _pad_backbone(padded.backbone)
    return padded
