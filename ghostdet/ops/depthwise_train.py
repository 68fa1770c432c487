"""Train-mode depthwise RepConvBN as one autograd op backed by a small C++ kernel (CPU, channels-last).

Each k×k branch is BN(z_b) with z_b = w_b ⊛ x and BN's batch statistics; the 1×1 scale and identity
branches are BN(s·x) and BN(x) on the centre tap. Once the batch statistics are known the block is linear
in x, so the forward is a statistics pass and one conv with the combined kernel; BN's backward, with
g = dL/dy, is a_b g - e_b z_b + f_b per branch, whose per-channel coefficients come from a few
correlations of g with x. Two passes over the maps forward and two backward (PyTorch's branches: ~30
kernels and as many full-size maps per block); the formulas are in ``csrc/depthwise_branches.cpp``. Same
numbers as the branches up to float rounding (``tests/test_ops/test_depthwise_train.py``).

The kernel is compiled on first use (see ``build``); without it the block trains with the PyTorch
branches (same numbers, slower).
"""
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from .build import extension


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

    # The C++ backward records no graph: differentiating it again (create_graph=True, e.g. a gradient
    # penalty) must raise, not return gradients missing its terms.
    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y: Tensor, *_) -> Sequence[Optional[Tensor]]:
        x, taps, z, scale, sums, state = ctx.saved_tensors
        stride, weight_shape = ctx.setup
        grad_x, grad_taps, grad_scale, grad_gamma, grad_beta = extension().train_backward(
            grad_y, z, x, taps, scale, sums, state, stride)
        grad_weight = grad_taps.permute(0, 3, 1, 2).reshape(weight_shape)
        return (grad_x, grad_weight, grad_scale if scale.numel() else None, grad_gamma, grad_beta,
                None, None, None)
