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
from mmengine.model import BaseModule
from torch import Tensor

from . import cpu_kernels, depthwise_train
from .norm import BatchNorm2d


def fuse_conv_bn(weight: Tensor, bn: nn.BatchNorm2d, mean: Optional[Tensor] = None,
                 var: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Fold BN into a bias-free conv kernel: returns (kernel, bias). BN's running statistics (eval
    mode) unless ``mean``/``var`` of the conv's output are given (batch statistics in train mode)."""
    mean = bn.running_mean if mean is None else mean
    var = bn.running_var if var is None else var
    scale = bn.weight / (var + bn.eps).sqrt()
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias - mean * scale


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
        if cpu_kernels.graph_is_recorded() or (torch.is_grad_enabled() and any(t.requires_grad for t in sources)):
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

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                              groups=groups, bias=False)
        self.bn = BatchNorm2d(out_channels)


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
        with_act: apply ReLU after the sum.
        deploy: build the fused single-conv form directly.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, num_branches: int = 3, use_scale: bool = True,
                 use_identity: bool = True, with_act: bool = False, deploy: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if kernel_size % 2 != 1:
            raise ValueError(f'RepConvBN needs an odd kernel size, got {kernel_size}')
        if num_branches < 1:
            raise ValueError(f'RepConvBN needs at least one conv branch, got {num_branches}')
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.groups = kernel_size, stride, groups
        self.deploy = deploy
        self.act = nn.ReLU(inplace=True) if with_act else nn.Identity()
        self._fold_cache = FoldCache()
        if deploy:
            self.fused = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                                   groups=groups, bias=True)
            return
        self.branches = nn.ModuleList(
            ConvBN(in_channels, out_channels, kernel_size, stride, groups)
            for _ in range(num_branches))
        self.scale = (ConvBN(in_channels, out_channels, 1, stride, groups)
                      if use_scale and kernel_size > 1 else None)
        self.identity = (BatchNorm2d(out_channels)
                         if use_identity and in_channels == out_channels and stride == 1 else None)

    def train(self, mode: bool = True) -> 'RepConvBN':
        self._fold_cache.clear()
        return super().train(mode)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.forward_linear(x))

    def forward_linear(self, x: Tensor) -> Tensor:
        """The output before the activation."""
        if self.deploy:
            return self.fused(x)
        if self.is_single_conv():  # eval, norm_eval or frozen: one conv fused on the fly
            return self._conv(x, *self.fused_kernel_bias())
        norms = self._norms()
        if self._pointwise_statistics_pay(x, norms):
            return self._forward_pointwise_train(x, norms)
        if self._depthwise_kernel_applies(x, norms):
            return self._forward_depthwise_train(x, norms)
        return self.forward_branches(x)

    def forward_branches(self, x: Tensor) -> Tensor:
        """The reference train form: every branch on its own, then the sum."""
        out = self.identity(x) if self.identity is not None else 0
        if self.scale is not None:
            out = out + self.scale(x)
        for branch in self.branches:
            out = out + branch(x)
        return out

    def _pointwise_statistics_pay(self, x: Tensor, norms: List[nn.BatchNorm2d]) -> bool:
        """Whether the train-mode 1×1 block is cheaper as one matmul (see ``_forward_pointwise_train``):
        it adds a C_in × C_in covariance and saves two convs and every BN pass. Measured on the 1.0x
        backbone's train step (640², 2 CPU threads, one interleaved run): all blocks with
        C_in < 8 C_out, -18%; with C_in < 3 C_out, -14%; every 1×1 block, -8%."""
        return (self.kernel_size == 1 and self.stride == 1 and self.groups == 1
                and self.in_channels < 8 * self.out_channels and x.dim() == 4
                and x.shape[0] * x.shape[2] * x.shape[3] > 1 and self._batch_statistics_only(norms)
                and cpu_kernels.switched_on())

    @staticmethod
    def _batch_statistics_only(norms: List[nn.BatchNorm2d]) -> bool:
        """Every BN normalizes with batch statistics and updates its running ones, all with one momentum
        and one eps (what the one-op train paths assume), and none is a SyncBatchNorm (whose statistics are
        taken over every device: only its own forward does that)."""
        return (all(bn.training and bn.track_running_stats and bn.momentum is not None
                    and not isinstance(bn, nn.SyncBatchNorm) for bn in norms)
                and len({(bn.momentum, bn.eps) for bn in norms}) == 1)

    @staticmethod
    def _update_running_stats(norms: List[nn.BatchNorm2d], means: Sequence[Tensor],
                              unbiased_variances: Sequence[Tensor]) -> None:
        """What BN does to its buffers in train mode (momentum update with the unbiased variance), as three
        multi-tensor ops instead of three ops per BN."""
        momentum = norms[0].momentum
        with torch.no_grad():
            torch._foreach_lerp_([bn.running_mean for bn in norms], list(means), momentum)
            torch._foreach_lerp_([bn.running_var for bn in norms], list(unbiased_variances), momentum)
            torch._foreach_add_([bn.num_batches_tracked for bn in norms], 1)

    def _depthwise_kernel_applies(self, x: Tensor, norms: List[nn.BatchNorm2d]) -> bool:
        """Whether the train-mode depthwise block runs as one C++ op (see ``depthwise_train``). Measured
        on the 1.0x backbone's train step (640², 2 CPU threads): see docs/benchmarks.md."""
        return (self.kernel_size > 1 and self.groups == self.in_channels == self.out_channels
                and self._batch_statistics_only(norms) and depthwise_train.kernel_applies(x, self.stride))

    def _forward_depthwise_train(self, x: Tensor, norms: List[nn.BatchNorm2d]) -> Tensor:
        """Train-mode depthwise block: all branches and their BNs in one autograd op."""
        weight = torch.stack([branch.conv.weight for branch in self.branches])
        scale = self.scale.conv.weight.reshape(-1) if self.scale is not None else None
        gamma = torch.stack([bn.weight for bn in norms])
        beta = torch.stack([bn.bias for bn in norms])
        out, means, variances = depthwise_train.DepthwiseBranchesBN.apply(
            x, weight, scale, gamma, beta, norms[0].eps, self.stride, self.identity is not None)
        self._update_running_stats(norms, means, variances)
        return out

    def _forward_pointwise_train(self, x: Tensor, norms: List[nn.BatchNorm2d]) -> Tensor:
        """Train-mode 1×1 block as ONE matmul, exactly equal to the branches (up to float rounding).

        Each branch is BN(W_i x); BN's batch mean and variance of W_i x are W_i m and diag(W_i Σ W_iᵀ),
        with m and Σ the mean and covariance of the input channels. So the summed branches equal
        (Σ_i s_i W_i) x + b with s_i = γ_i / sqrt(var_i + eps): one matmul instead of one conv and one BN
        pass per branch, forward and backward (autograd differentiates through m and Σ). Running
        statistics are updated as BN would (unbiased variance, momentum).

        The statistics and this algebra run in float64: diag(W Σ Wᵀ) cancels heavily where few pixels feed
        many channels (Σ is then far from full rank), which costs float32 most of its digits in the
        variances and gradients of deep stages; in float64 the block is as exact as BN's own kernel."""
        batch, channels, height, width = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(-1, channels)  # a view for channels-last input
        count = pixels.shape[0]
        exact = pixels.double()
        mean = exact.mean(0)
        centred = exact - mean
        cov = centred.t() @ centred / count
        weights = torch.stack([branch.conv.weight for branch in self.branches]).flatten(2).double()  # (B, out, in)
        means = weights @ mean
        variances = ((weights @ cov) * weights).sum(2)
        if self.identity is not None:
            weights = torch.cat([weights, self._identity_kernel().flatten(1)[None].double()])
            means = torch.cat([means, mean[None]])
            variances = torch.cat([variances, cov.diagonal()[None]])
        gamma = torch.stack([bn.weight for bn in norms]).double()
        scale = gamma * (variances + norms[0].eps).rsqrt()
        kernel = (weights * scale[..., None]).sum(0).to(x.dtype)
        bias = (torch.stack([bn.bias for bn in norms]).double() - means * scale).sum(0).to(x.dtype)
        buffers = norms[0].running_mean.dtype
        self._update_running_stats(norms, means.to(buffers), (variances * (count / (count - 1))).to(buffers))
        out = torch.addmm(bias, pixels, kernel.t())
        return out.view(batch, height, width, self.out_channels).permute(0, 3, 1, 2)

    def _conv(self, x: Tensor, kernel: Tensor, bias: Optional[Tensor] = None) -> Tensor:
        return F.conv2d(x, kernel, bias, self.stride, self.kernel_size // 2, 1, self.groups)

    def _norms(self) -> List[nn.BatchNorm2d]:
        norms = [branch.bn for branch in self.branches]
        norms += [self.scale.bn] if self.scale is not None else []
        return norms + ([self.identity] if self.identity is not None else [])

    def is_single_conv(self) -> bool:
        """Whether the block computes one conv now: fused, or every BN in eval mode (running statistics)."""
        return self.deploy or not any(bn.training for bn in self._norms())

    def fused_kernel_bias(self) -> Tuple[Tensor, Tensor]:
        """The (kernel, bias) of the single conv equivalent to all branches in eval mode (the fused conv's
        once fused); cached while the weights and statistics are unchanged (see :class:`FoldCache`)."""
        if self.deploy:
            return self.fused.weight, self.fused.bias
        return self._fold_cache.get('kernel_bias', [*self.parameters(), *self.buffers()], self._fuse_branches)

    def _fuse_branches(self) -> Tuple[Tensor, Tensor]:
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
            k, b = fuse_conv_bn(self._identity_kernel(), self.identity)
            kernels.append(k)
            biases.append(b)
        return torch.stack(kernels).sum(0), torch.stack(biases).sum(0)

    def _identity_kernel(self) -> Tensor:
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
