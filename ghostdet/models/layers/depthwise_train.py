"""Train-mode depthwise RepConvBN as one autograd op backed by a small C++ kernel (CPU, channels-last).

Each k×k branch is BN(z_b) with z_b = w_b ⊛ x and BN's batch statistics; the 1×1 scale and identity
branches are BN(s·x) and BN(x) on the centre tap. Once the batch statistics are known the block is linear
in x, so the forward is a statistics pass and one conv with the combined kernel; BN's backward, with
g = dL/dy, is a_b g - e_b z_b + f_b per branch, whose per-channel coefficients come from a few
correlations of g with x. Two passes over the maps forward and two backward (PyTorch's branches: ~30
kernels and as many full-size maps per block); the formulas are in ``csrc/depthwise_branches.cpp``. Same
numbers as the branches up to float rounding (``tests/test_depthwise_train_kernel.py``).

The kernel is compiled on first use (torch.utils.cpp_extension, ~40 s, cached under
TORCH_EXTENSIONS_DIR per CPU instruction set); without a compiler ghostdet warns once and trains with the
PyTorch branches. ``GHOSTDET_DEPTHWISE_KERNEL=0`` turns the kernel off (same numbers, slower).
"""
import functools
import hashlib
import logging
import os
import os.path as osp
import shutil
import sys
import warnings
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

_SOURCE = osp.join(osp.dirname(__file__), 'csrc', 'depthwise_branches.cpp')


@functools.lru_cache(maxsize=None)
def extension():
    """The compiled kernel module, or None (with one warning) when it cannot be built."""
    logger = logging.getLogger('torch.utils.cpp_extension')
    level = logger.level
    logger.setLevel(logging.ERROR)  # its import warns that there is no CUDA, which is irrelevant here
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)
    if shutil.which('ninja') is None:  # a venv's ninja sits next to its python, which need not be on PATH
        os.environ['PATH'] = osp.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', '')
    try:
        return cpp_extension.load(
            name=f'ghostdet_depthwise_branches_{_cpu_tag()}', sources=[_SOURCE],
            extra_cflags=['-O3', '-march=native', '-ffp-contract=fast', '-fopenmp'],
            extra_ldflags=['-fopenmp'])
    except (OSError, RuntimeError, ImportError) as error:  # no compiler / ninja / headers
        warnings.warn(f'ghostdet: could not build the depthwise train kernel ({error}); training uses the '
                      'slower PyTorch branches (same numbers). Install a C++ compiler and ninja to fix.')
        return None


def _cpu_tag() -> str:
    """A short hash of the CPU's instruction-set flags: the kernel is built with -march=native, so a
    cache shared between different machines must not hand one's build to the other."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith('flags')), '')
    except OSError:
        flags = ''
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


class DepthwiseBranchesBN(torch.autograd.Function):
    """y = Σ_b BN_b(w_b ⊛ x) + BN(s·x) + BN(x) in train mode; also returns the batch means and unbiased
    variances, one row per BN, for the caller's running statistics. Every pass and the per-channel algebra
    run in C++: one call forward, one backward (small tensor ops cost more than the passes on small maps)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, scale: Optional[Tensor], gamma: Tensor, beta: Tensor,
                eps: float, stride: int, has_identity: bool) -> Tuple[Tensor, Tensor, Tensor]:
        branches, channels, _, size, _ = weight.shape
        taps = weight.detach().reshape(branches, channels, size, size).permute(0, 2, 3, 1).contiguous()
        scale = scale.detach() if scale is not None else x.new_empty(0)
        y, z, sums, state, batch_mean, batch_var = extension().train_forward(
            x, taps, scale, gamma.detach(), beta.detach(), eps, stride, has_identity)
        ctx.save_for_backward(x, taps, z, scale, sums, state)
        ctx.setup = (stride, weight.shape)
        ctx.mark_non_differentiable(batch_mean, batch_var)
        return y, batch_mean, batch_var

    @staticmethod
    def backward(ctx, grad_y: Tensor, *_) -> Sequence[Optional[Tensor]]:
        x, taps, z, scale, sums, state = ctx.saved_tensors
        stride, weight_shape = ctx.setup
        grad_x, grad_taps, grad_scale, grad_gamma, grad_beta = extension().train_backward(
            grad_y, z, x, taps, scale, sums, state, stride)
        grad_weight = grad_taps.permute(0, 3, 1, 2).reshape(weight_shape)
        return (grad_x, grad_weight, grad_scale if scale.numel() else None, grad_gamma, grad_beta,
                None, None, None)


def kernel_applies(x: Tensor, stride: int) -> bool:
    """Whether ``x`` is what the kernel takes (float32 CPU, channels-last, more than one output pixel
    per channel, as BN needs) and the kernel is built."""
    return (x.dim() == 4 and x.dtype == torch.float32 and x.device.type == 'cpu'
            and x.is_contiguous(memory_format=torch.channels_last)
            and x.shape[0] * -(-x.shape[2] // stride) * -(-x.shape[3] // stride) > 1
            and os.environ.get('GHOSTDET_DEPTHWISE_KERNEL', '1') != '0' and extension() is not None)
