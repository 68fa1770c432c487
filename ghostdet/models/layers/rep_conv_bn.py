"""One re-parameterizable conv-BN block and its exact fusion.

GhostNetV3 trains three places with MobileOne-style parallel branches (k×k conv-BN branches, an optional
1×1 "scale" conv-BN branch and an optional BN-only identity branch, summed and then activated). The authors
and timm write this twice with shared metadata (a latent bug, upstream issue #265); here each block owns its
own geometry, so the fusion is exact for every branch layout.
"""
import weakref
from typing import Callable, Dict, Hashable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer
from mmdet.utils import ConfigType, OptConfigType
from mmengine.model import BaseModule
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ... import ops
from .norm import DEFAULT_NORM, build_norm


def fuse_conv_bn(weight: Tensor, bn: nn.BatchNorm2d) -> Tuple[Tensor, Tensor]:
    """Fold an eval-mode BN (its running statistics) into a bias-free conv kernel: (kernel, bias)."""
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class FoldCache:
    """Weights derived from parameters and buffers (BNs folded into conv kernels), kept while their sources
    are unchanged: the same tensor objects with the same storage and in-place version. Optimizer steps and
    ``load_state_dict`` bump versions; BN's train-mode forward updates its running statistics without
    doing so, so BN sources must include ``num_batches_tracked``, which it increments in place. Writes
    through ``.data`` (MMEngine's EMA) bump nothing: owners clear the cache on every ``train()``/``eval()``
    call, which such updates are followed by (validation switches to eval). Recomputed, with autograd,
    whenever a gradient has to flow into them, and while a graph is recorded."""

    def __init__(self) -> None:
        self._entries: Dict[Hashable, Tuple[list, Tuple[Tensor, ...]]] = {}

    def clear(self) -> None:
        self._entries.clear()

    def get(self, name: Hashable, sources: Sequence[Tensor],
            compute: Callable[[], Tuple[Tensor, ...]]) -> Tuple[Tensor, ...]:
        if ops.graph_is_recorded() or (torch.is_grad_enabled() and any(t.requires_grad for t in sources)):
            return compute()
        entry = self._entries.get(name)
        if entry is None or not self._unchanged(entry[0], sources):
            with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable in any later mode
                entry = ([(weakref.ref(t), t.data_ptr(), t._version) for t in sources], compute())
            self._entries[name] = entry
        return entry[1]

    @staticmethod
    def _unchanged(stamps: list, sources: Sequence[Tensor]) -> bool:
        return len(stamps) == len(sources) and all(
            ref() is t and ptr == t.data_ptr() and version == t._version
            for (ref, ptr, version), t in zip(stamps, sources))


class ConvBN(nn.Sequential):
    """A bias-free conv followed by BN: one branch of a :class:`RepConvBN`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int,
                 norm_cfg: ConfigType = DEFAULT_NORM) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                              groups=groups, bias=False)
        self.bn = build_norm(norm_cfg, out_channels)


class RepConvBN(BaseModule):
    """Sum of parallel conv-BN branches (+1×1 scale, +BN identity), then an activation.

    Train form: ``branches`` (``num_branches`` k×k conv-BN), ``scale`` (1×1 conv-BN, only when k > 1 and
    ``use_scale``), ``identity`` (BN only, when in == out channels and stride 1 and ``use_identity``).
    Deploy form: one biased conv ``fused`` with the same geometry. ``switch_to_deploy`` turns the first
    into the second in place, so outputs agree up to float rounding.

    Args:
        in_channels / out_channels / kernel_size / stride / groups: geometry of the k×k conv (odd k,
            padding k // 2, so the 1×1 and identity branches sample the same centres).
        num_branches: number of parallel k×k conv-BN branches (GhostNetV3: 3).
        use_scale: add the 1×1 conv-BN branch when ``kernel_size > 1``.
        use_identity: add the BN identity branch when the shapes allow it.
        norm_cfg: every branch's norm (mmcv style). BN and SyncBN fold into the fused conv; other norms
            (GN) train and evaluate branch by branch and cannot be fused.
        act_cfg: the activation after the sum (mmcv style); None: none.
        deploy: build the fused single-conv form directly.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, num_branches: int = 3, use_scale: bool = True,
                 use_identity: bool = True, norm_cfg: ConfigType = DEFAULT_NORM,
                 act_cfg: OptConfigType = None, deploy: bool = False, init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg)
        if kernel_size % 2 != 1:
            raise ValueError(f'RepConvBN needs an odd kernel size, got {kernel_size}')
        if num_branches < 1:
            raise ValueError(f'RepConvBN needs at least one conv branch, got {num_branches}')
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.groups = kernel_size, stride, groups
        self.deploy = deploy
        self.act = build_activation_layer(act_cfg) if act_cfg is not None else nn.Identity()
        self._fold_cache = FoldCache()
        if deploy:
            self.fused = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                                   groups=groups, bias=True)
            return
        self.branches = nn.ModuleList(
            ConvBN(in_channels, out_channels, kernel_size, stride, groups, norm_cfg)
            for _ in range(num_branches))
        self.scale = (ConvBN(in_channels, out_channels, 1, stride, groups, norm_cfg)
                      if use_scale and kernel_size > 1 else None)
        self.identity = (build_norm(norm_cfg, out_channels)
                         if use_identity and in_channels == out_channels and stride == 1 else None)

    def train(self, mode: bool = True) -> 'RepConvBN':
        self._fold_cache.clear()
        return super().train(mode)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.forward_linear(x))

    def forward_linear(self, x: Tensor) -> Tensor:
        """The output before the activation: the sum of the branches (one conv once fused, or when every
        BN uses its running statistics). In train mode :mod:`ghostdet.ops` computes that sum in one op
        where it can."""
        if self.deploy:
            return self.fused(x)
        if self.is_single_conv():  # eval, norm_eval or frozen: one conv fused on the fly
            return self._conv(x, *self.fused_kernel_bias())
        out = ops.rep_conv_bn_train(self, x)
        return self.forward_branches(x) if out is None else out

    def forward_branches(self, x: Tensor) -> Tensor:
        """The reference train form: every branch on its own, then the sum."""
        out = self.identity(x) if self.identity is not None else 0
        if self.scale is not None:
            out = out + self.scale(x)
        for branch in self.branches:
            out = out + branch(x)
        return out

    def _conv(self, x: Tensor, kernel: Tensor, bias: Optional[Tensor] = None) -> Tensor:
        return F.conv2d(x, kernel, bias, self.stride, self.kernel_size // 2, 1, self.groups)

    def norms(self) -> List[nn.Module]:
        """Every branch's norm: k×k branches, then scale, then identity."""
        norms = [branch.bn for branch in self.branches]
        norms += [self.scale.bn] if self.scale is not None else []
        return norms + ([self.identity] if self.identity is not None else [])

    def is_single_conv(self) -> bool:
        """Whether the block computes one conv now: fused, or every norm a BN in eval mode (running
        statistics)."""
        return self.deploy or all(isinstance(bn, _BatchNorm) and not bn.training for bn in self.norms())

    def fused_kernel_bias(self) -> Tuple[Tensor, Tensor]:
        """The (kernel, bias) of the single conv equivalent to all branches in eval mode (the fused conv's
        once fused); cached while the weights and statistics are unchanged (see :class:`FoldCache`)."""
        if self.deploy:
            return self.fused.weight, self.fused.bias
        return self._fold_cache.get('kernel_bias', [*self.parameters(), *self.buffers()], self._fuse_branches)

    def _fuse_branches(self) -> Tuple[Tensor, Tensor]:
        if not all(isinstance(bn, _BatchNorm) for bn in self.norms()):
            raise TypeError('RepConvBN can only fuse branches normalized by BN or SyncBN (running statistics '
                            f'fold into the conv), not {type(self.norms()[0]).__name__}: build the model with '
                            "norm_cfg=dict(type='BN') to deploy it fused.")
        pad = self.kernel_size // 2
        kernels: List[Tensor] = []
        biases: List[Tensor] = []
        for branch in self.branches:
            k, b = fuse_conv_bn(branch.conv.weight, branch.bn)
            kernels.append(k)
            biases.append(b)
        if self.scale is not None:
            k, b = fuse_conv_bn(self.scale.conv.weight, self.scale.bn)
            kernels.append(F.pad(k, [pad] * 4))
            biases.append(b)
        if self.identity is not None:
            k, b = fuse_conv_bn(self.identity_kernel(), self.identity)
            kernels.append(k)
            biases.append(b)
        return torch.stack(kernels).sum(0), torch.stack(biases).sum(0)

    def identity_kernel(self) -> Tensor:
        """A k×k kernel that copies input channel i to output channel i (grouped layout)."""
        per_group = self.in_channels // self.groups
        kernel = self.branches[0].conv.weight.new_zeros(
            self.out_channels, per_group, self.kernel_size, self.kernel_size)
        centre = self.kernel_size // 2
        idx = torch.arange(self.out_channels)
        kernel[idx, idx % per_group, centre, centre] = 1
        return kernel

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Fuse all branches into ``self.fused`` in place (idempotent)."""
        if self.deploy:
            return
        kernel, bias = self.fused_kernel_bias()
        self._fold_cache.clear()
        conv = self.branches[0].conv
        self.fused = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                               self.kernel_size // 2, groups=self.groups, bias=True).to(kernel)
        self.fused.weight.copy_(kernel)
        self.fused.bias.copy_(bias)
        self.fused.weight.requires_grad_(conv.weight.requires_grad)
        self.fused.bias.requires_grad_(conv.weight.requires_grad)
        del self.branches, self.scale, self.identity
        self.deploy = True
