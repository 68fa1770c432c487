"""Train-mode depthwise RepConvBN as one autograd op backed by a small C++ kernel (CPU, channels-last).

Each k×k branch is BN(z_b) with z_b = w_b ⊛ x and BN's batch statistics; the 1×1 scale and identity
branches are BN(s·x) and BN(x) on the centre tap. Forward: the kernel computes every z_b and the
per-channel sums of z_b, z_b², x, x² in one pass; from those come each branch's mean μ, variance σ² and
a = γ / sqrt(σ² + eps), and a second pass writes y = Σ a_b (z_b - μ_b) + β_b. Backward, with g = dL/dy:
BN's input gradient is gz_b = a_b g - e_b z_b + f_b, e_b = a_b dγ_b / (N (σ_b² + eps)^½),
f_b = e_b μ_b - a_b Σg / N, dγ_b = (Σ g z_b - μ_b Σg) / (σ_b² + eps)^½, dβ_b = Σg; one reduction pass gives
those sums, one pass the kernels' gradients, one the input's gradient. Same numbers as the branches
(float rounding aside), without the ~30 kernel calls and full-size maps PyTorch needs per block.

The kernel is compiled on first use (torch.utils.cpp_extension, ~40 s, cached under
TORCH_EXTENSIONS_DIR per CPU instruction set); without a compiler ghostdet warns once and trains with the
PyTorch branches. ``GHOSTDET_DEPTHWISE_KERNEL=0`` turns the kernel off (same numbers, slower).
"""
import functools
import hashlib
import logging
import os
import os.path as osp
import sys
import warnings
from typing import List, Optional, Sequence, Tuple

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
    # A venv's ninja sits next to its python, which need not be on PATH.
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


def _pointwise_terms(scale: Optional[Tensor], has_identity: bool, like: Tensor) -> List[Tensor]:
    """The per-channel weight of each centre-tap branch: the 1×1 scale conv's, then 1 for identity."""
    weights = [scale.detach().double()] if scale is not None else []
    return weights + ([torch.ones_like(like)] if has_identity else [])


class DepthwiseBranchesBN(torch.autograd.Function):
    """y = Σ_b BN_b(w_b ⊛ x) + BN(s·x) + BN(x) in train mode; also returns the batch means and
    (biased) variances, one row per BN, for the caller's running statistics."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, scale: Optional[Tensor], gamma: Tensor, beta: Tensor,
                eps: float, stride: int, has_identity: bool) -> Tuple[Tensor, Tensor, Tensor]:
        kernel = extension()
        branches, channels, _, size, _ = weight.shape
        taps = weight.detach().reshape(branches, channels, size, size).permute(0, 2, 3, 1).contiguous()
        z, sums = kernel.forward(x, taps, stride)
        count = z.shape[0] * z.shape[1] * z.shape[3]
        mean, square = sums[0] / count, sums[1] / count
        var = (square - mean * mean).clamp_min(0)
        pointwise = _pointwise_terms(scale, has_identity, mean[-1])
        means = torch.cat([mean[:branches]] + [w * mean[-1:] for w in pointwise])
        variances = torch.cat([var[:branches]] + [w * w * var[-1:] for w in pointwise])
        inv_std = (variances + eps).rsqrt()
        a = gamma.detach().double() * inv_std
        centre = sum((w * a_w for w, a_w in zip(pointwise, a[branches:])), torch.zeros_like(mean[-1]))
        coef = torch.cat([a[:branches], centre[None]]).float()
        bias = (beta.detach().double() - means * a).sum(0).float()
        y = kernel.combine(z, x, taps, coef, bias, stride)
        ctx.save_for_backward(x, taps, z, scale, sums, means, inv_std, a)
        ctx.setup = (stride, has_identity, count, weight.shape)
        ctx.mark_non_differentiable(means, variances)
        return y, means.float(), variances.float()

    @staticmethod
    def backward(ctx, grad_y: Tensor, *_) -> Sequence[Optional[Tensor]]:
        x, taps, z, scale, sums, means, inv_std, a = ctx.saved_tensors
        stride, has_identity, count, weight_shape = ctx.setup
        kernel = extension()
        branches = taps.shape[0]
        grad_y = grad_y.contiguous(memory_format=torch.channels_last)
        grad_sums = kernel.grad_sums(grad_y, z, x, taps, stride)
        grad_total, grad_centre = grad_sums[branches], grad_sums[branches + 1]
        pointwise = _pointwise_terms(scale, has_identity, grad_total)
        grad_dot = torch.cat([grad_sums[:branches]] + [w[None] * grad_centre for w in pointwise])
        grad_beta = grad_total.expand_as(means)
        grad_gamma = (grad_dot - means * grad_total) * inv_std
        e = a * grad_gamma * inv_std / count
        f = e * means - a * grad_total / count
        zero = torch.zeros_like(grad_total)
        centre_terms = torch.stack([
            sum((w * a[branches + i] for i, w in enumerate(pointwise)), zero),
            sum((w * w * e[branches + i] for i, w in enumerate(pointwise)), zero),
            sum((w * f[branches + i] for i, w in enumerate(pointwise)), zero)])
        coef = torch.stack([a[:branches], e[:branches], f[:branches]]).float().contiguous()
        grad_x, grad_taps = kernel.backward(grad_y, z, x, taps, coef, centre_terms.float().contiguous(), stride)
        grad_weight = grad_taps.permute(0, 3, 1, 2).reshape(weight_shape)
        grad_scale = None
        if scale is not None:  # Σ_p gz_s · x_centre, with gz_s = a_s g - e_s s x + f_s
            centre_sum, centre_square = sums[0, -1], sums[1, -1]
            grad_scale = (a[branches] * grad_centre - e[branches] * scale.double() * centre_square
                          + f[branches] * centre_sum).float()
        return (grad_x, grad_weight, grad_scale, grad_gamma.float(), grad_beta.float(), None, None, None)


def kernel_applies(x: Tensor, stride: int) -> bool:
    """Whether ``x`` is what the kernel takes (float32 CPU, channels-last, more than one output pixel
    per channel, as BN needs) and the kernel is built."""
    return (x.dim() == 4 and x.dtype == torch.float32 and x.device.type == 'cpu'
            and x.is_contiguous(memory_format=torch.channels_last)
            and x.shape[0] * -(-x.shape[2] // stride) * -(-x.shape[3] // stride) > 1
            and os.environ.get('GHOSTDET_DEPTHWISE_KERNEL', '1') != '0' and extension() is not None)
