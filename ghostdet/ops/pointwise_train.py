"""A train-mode 1×1 re-parameterizable block as ONE matmul, exactly equal to its branches.

Each branch is BN(W_i x); BN's batch mean and variance of W_i x are W_i m and diag(W_i Σ W_iᵀ), with m and
Σ the mean and covariance of the input channels. So the summed branches equal (Σ_i s_i W_i) x + b with
s_i = γ_i / sqrt(var_i + eps): one matmul instead of one conv and one BN pass per branch, forward and
backward (autograd differentiates through m and Σ).

The statistics and this algebra run in float64: diag(W Σ Wᵀ) cancels heavily where few pixels feed many
channels (Σ is then far from full rank), which costs float32 most of its digits in the variances and
gradients of deep stages; in float64 the block is as exact as BN's own kernel. Measured gain on the 1.0x
backbone's train step: docs/benchmarks.md.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor


def pointwise_branches_bn(x: Tensor, weights: Tensor, identity: Optional[Tensor], gamma: Tensor,
                          beta: Tensor, eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Σ_i BN_i(W_i x) in train mode for (B, out, in) 1×1 ``weights`` (+ BN(``identity`` x), a copy
    kernel (out, in)) with one BN per row of ``gamma``/``beta``; also returns each BN's batch mean and
    unbiased variance (float64) for the running statistics."""
    batch, channels, height, width = x.shape
    pixels = x.permute(0, 2, 3, 1).reshape(-1, channels)  # a view for channels-last input
    count = pixels.shape[0]
    exact = pixels.double()
    mean = exact.mean(0)
    centred = exact - mean
    cov = centred.t() @ centred / count
    weights = weights.double()
    means = weights @ mean
    variances = ((weights @ cov) * weights).sum(2)
    if identity is not None:
        weights = torch.cat([weights, identity[None].double()])
        means = torch.cat([means, mean[None]])
        variances = torch.cat([variances, cov.diagonal()[None]])
    scale = gamma.double() * (variances + eps).rsqrt()
    kernel = (weights * scale[..., None]).sum(0).to(x.dtype)
    bias = (beta.double() - means * scale).sum(0).to(x.dtype)
    out = torch.addmm(bias, pixels, kernel.t())
    out = out.view(batch, height, width, kernel.shape[0]).permute(0, 3, 1, 2)
    return out, means, variances * (count / (count - 1))
