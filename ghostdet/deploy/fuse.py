"""Fuse every re-parameterizable module of a model, and fuse a model's weights for a deploy checkpoint.

Convention (mmpretrain's RepVGG/MobileOne, mmyolo, ghostdet): a module with training-time branches has a
``switch_to_deploy()`` that fuses it in place, and its config takes ``deploy=True`` to build the fused form.
"""
import time
from dataclasses import dataclass
from typing import Dict, List

import torch
import torch.nn as nn
from torch import Tensor

StateDict = Dict[str, Tensor]


def _reparam_modules(model: nn.Module) -> List[nn.Module]:
    return [m for m in model.modules() if callable(getattr(m, 'switch_to_deploy', None))]


def count_reparam_leaves(model: nn.Module) -> int:
    """Number of innermost re-parameterizable modules (those with no such module inside)."""
    fusable = _reparam_modules(model)
    ids = {id(m) for m in fusable}
    return sum(not any(c is not m and id(c) in ids for c in m.modules()) for m in fusable)


def fuse_model(model: nn.Module) -> int:
    """Call ``switch_to_deploy()`` on every module that has one, innermost first; return how many
    innermost re-parameterizable modules were fused (0: nothing to fuse)."""
    num_leaves = count_reparam_leaves(model)
    for module in reversed(_reparam_modules(model)):  # modules() is pre-order: reversed = children first
        module.switch_to_deploy()
    return num_leaves


def keep_rng_state():
    """Building a module draws initial weights from the global RNG; a hook doing it mid-training (or
    before the weights are initialised) must not change the training's random stream."""
    return torch.random.fork_rng(devices=[])


@dataclass
class FusedWeights:
    """A fused state dict and what the deploy checkpoint records about it."""
    state_dict: StateDict
    num_fused: int
    num_params: int
    seconds: float

    @property
    def size_mb(self) -> float:
        """Size of the weights (tensor bytes) in MiB."""
        return sum(t.numel() * t.element_size() for t in self.state_dict.values()) / 2**20


def fuse_weights(model: nn.Module) -> FusedWeights:
    """Fuse ``model`` (a private copy: it is modified) and return its weights.

    The folding runs in float64: BN folding adds and subtracts terms much larger than the result when
    running means are large, and float32 would keep their rounding error in the stored weights.
    """
    dtype = next(model.parameters()).dtype
    start = time.perf_counter()
    with keep_rng_state():  # fusing builds new convs
        model.double()
        num_fused = fuse_model(model)
        model.to(dtype)
    seconds = time.perf_counter() - start
    return FusedWeights(model.state_dict(), num_fused, sum(p.numel() for p in model.parameters()), seconds)
