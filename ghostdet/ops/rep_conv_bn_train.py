"""The accelerated train-mode forward of a :class:`~ghostdet.models.layers.RepConvBN`: one entry point,
``train_forward``, that picks the path fitting the block and gives None where none does (the block
then sums its branches, the reference computation).

Two paths, each exactly the branch sum with BN batch statistics (judged against float64 in
``tests/test_ops``): a 1×1 block as one matmul (``pointwise_train``, any device) and a depthwise k×k
block as one C++ op (``depthwise_train``, float32 CPU channels-last maps). Both update the running
statistics as BN would.
"""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from .build import kernels_built
from .depthwise_train import DepthwiseBranchesBN
from .pointwise_train import pointwise_branches_bn
from .switch import graph_is_recorded, kernel_takes, use_cpu_kernels


def train_forward(block: nn.Module, x: Tensor) -> Optional[Tensor]:
    """The block's train-mode output before its activation, or None where no fast path applies."""
    norms = block.norms()
    if not (use_cpu_kernels() and _batch_statistics_only(norms) and x.dim() == 4):
        return None
    if _pointwise_applies(block, x):
        return _pointwise(block, x, norms)
    if _depthwise_applies(block, x):
        return _depthwise(block, x, norms)
    return None


def _batch_statistics_only(norms: List[nn.Module]) -> bool:
    """Every norm is a BN that normalizes with batch statistics and updates its running ones, all with one
    momentum and one eps (what the one-op paths assume), and none is a SyncBatchNorm (whose statistics are
    taken over every device: only its own forward does that) or another norm (GroupNorm: no statistics)."""
    return (all(isinstance(bn, _BatchNorm) and not isinstance(bn, nn.SyncBatchNorm)
                and bn.training and bn.track_running_stats and bn.momentum is not None for bn in norms)
            and len({(bn.momentum, bn.eps) for bn in norms}) == 1)


def _pointwise_applies(block: nn.Module, x: Tensor) -> bool:
    """A dense stride-1 1×1 block over more than one pixel, whose input is not much wider than its output:
    the matmul path adds a C_in × C_in covariance and saves two convs and every BN pass. Measured on the
    1.0x backbone's train step (640², 2 CPU threads, one interleaved run): all blocks with C_in < 8 C_out,
    -18%; with C_in < 3 C_out, -14%; every 1×1 block, -8%."""
    return (block.kernel_size == 1 and block.stride == 1 and block.groups == 1
            and block.in_channels < 8 * block.out_channels and x.shape[0] * x.shape[2] * x.shape[3] > 1)


def _depthwise_applies(block: nn.Module, x: Tensor) -> bool:
    """A depthwise k×k block on a map the kernel reads, with more than one output pixel per channel (as BN
    needs), no graph recorded (torch.compile / export and tracers see the branches) and the kernel built."""
    stride = block.stride
    return (block.kernel_size > 1 and block.groups == block.in_channels == block.out_channels
            and kernel_takes(x) and x.shape[0] * -(-x.shape[2] // stride) * -(-x.shape[3] // stride) > 1
            and not graph_is_recorded() and kernels_built())


def _pointwise(block: nn.Module, x: Tensor, norms: List[nn.Module]) -> Tensor:
    weights = torch.stack([branch.conv.weight for branch in block.branches]).flatten(2)
    identity = block.identity_kernel().flatten(1) if block.identity is not None else None
    out, means, variances = pointwise_branches_bn(
        x, weights, identity, torch.stack([bn.weight for bn in norms]), torch.stack([bn.bias for bn in norms]),
        norms[0].eps)
    buffers = norms[0].running_mean.dtype
    _update_running_stats(norms, means.to(buffers), variances.to(buffers))
    return out


def _depthwise(block: nn.Module, x: Tensor, norms: List[nn.Module]) -> Tensor:
    weight = torch.stack([branch.conv.weight for branch in block.branches])
    scale = block.scale.conv.weight.reshape(-1) if block.scale is not None else None
    gamma = torch.stack([bn.weight for bn in norms])
    beta = torch.stack([bn.bias for bn in norms])
    out, means, variances = DepthwiseBranchesBN.apply(
        x, weight, scale, gamma, beta, norms[0].eps, block.stride, block.identity is not None)
    _update_running_stats(norms, means, variances)
    return out


def _update_running_stats(norms: List[nn.Module], means: Sequence[Tensor],
                          unbiased_variances: Sequence[Tensor]) -> None:
    """What BN does to its buffers in train mode (momentum update with the unbiased variance), as three
    multi-tensor ops instead of three ops per BN."""
    momentum = norms[0].momentum
    with torch.no_grad():
        torch._foreach_lerp_([bn.running_mean for bn in norms], list(means), momentum)
        torch._foreach_lerp_([bn.running_var for bn in norms], list(unbiased_variances), momentum)
        torch._foreach_add_([bn.num_batches_tracked for bn in norms], 1)
