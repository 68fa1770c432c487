"""How exact one train-mode step of a model is, judged against the same model run in float64.

A fast path is trusted when its float32 error (outputs, every parameter gradient, BN running statistics)
is no more than a small factor above the float32 error of the reference computation (the plain PyTorch
branches in NCHW, which equal the authors' GhostNetV3 bit for bit). Both errors are measured here against
a float64 run, so a bound built from them holds on any CPU: it is never tuned to one machine's rounding.
"""
import copy
from contextlib import contextmanager
from dataclasses import dataclass
from statistics import median
from typing import Dict, Iterator, List, Sequence

import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from torch import Tensor

from . import ops
from .models.backbones import GhostNetV3


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN non-trivial statistics and affine parameters (fresh BNs are identities, which would
    hide errors in their fusion or gradients)."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=gen) * 0.6 - 0.3)
    return model


def random_backbone(width: float, out_indices: Sequence[int] = (0, 1, 2, 3, 4)) -> GhostNetV3:
    """A GhostNetV3 as a user builds it (the default Kaiming init), with random BN statistics."""
    model = GhostNetV3(width, out_indices=out_indices)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')  # init_weights logs every tensor
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)
    return randomize_bn(model)


@contextmanager
def reference_computation(model: nn.Module) -> Iterator[nn.Module]:
    """The model as the reference computes it: NCHW weights and ``channels_last=False``, and every fast path
    off. The flags and the switch are restored afterwards, the weights stay NCHW (it runs on copies)."""
    formats = {m: m.channels_last for m in model.modules() if hasattr(m, 'channels_last')}
    try:
        for module in formats:
            module.channels_last = False
        with ops.cpu_kernels(False):
            yield model.to(memory_format=torch.contiguous_format)
    finally:
        for module, value in formats.items():
            module.channels_last = value


@dataclass
class TrainStep:
    """What one train-mode forward/backward produced, in float64 for comparison."""
    outputs: List[Tensor]
    gradients: Dict[str, Tensor]
    buffers: Dict[str, Tensor]


def train_step(model: nn.Module, x: Tensor, reference: bool = False, dtype: torch.dtype = torch.float32,
               seed: int = 0) -> TrainStep:
    """One train-mode step of a copy of ``model`` (which stays untouched) in ``dtype``, fast paths as
    configured unless ``reference``. The loss is a fixed random projection of every output, so each
    gradient is a generic one (not correlated with the outputs)."""
    net = copy.deepcopy(model).to(dtype).train()
    x = x.to(dtype)
    if reference:
        with reference_computation(net):
            outputs = _forward(net, x.contiguous())
            _backward(outputs, seed)
    else:
        outputs = _forward(net, x)
        _backward(outputs, seed)
    return TrainStep([o.detach().double() for o in outputs],
                     {name: p.grad.double() for name, p in net.named_parameters() if p.grad is not None},
                     {name: b.double() for name, b in net.named_buffers() if b.is_floating_point()})


def _forward(net: nn.Module, x: Tensor) -> List[Tensor]:
    outputs = net(x)
    return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]


def _backward(outputs: Sequence[Tensor], seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=generator, dtype=torch.float64).to(o)).sum() / o.numel() ** 0.5
               for o in outputs)
    loss.backward()


def relative_error(value: Tensor, exact: Tensor) -> float:
    """max |value - exact| / max |exact| (0 where both are 0)."""
    scale = exact.abs().max().item()
    error = (value - exact).abs().max().item()
    return error / scale if scale > 0 else error


@dataclass
class Exactness:
    """A train step's errors against float64: per output, per gradient and per buffer tensor."""
    outputs: List[float]
    gradients: Dict[str, float]
    buffers: Dict[str, float]

    @property
    def median_gradient(self) -> float:
        return median(self.gradients.values())

    @property
    def worst_gradient(self) -> float:
        return max(self.gradients.values())

    @property
    def worst_gradient_name(self) -> str:
        return max(self.gradients, key=self.gradients.get)

    def share_of_gradients_above(self, threshold: float = 1e-3) -> float:
        return sum(e > threshold for e in self.gradients.values()) / len(self.gradients)

    def gradient_quantile(self, q: float) -> float:
        errors = sorted(self.gradients.values())
        return errors[min(len(errors) - 1, int(q * len(errors)))]


def exactness(step: TrainStep, exact: TrainStep) -> Exactness:
    """Errors of ``step`` against ``exact``. Gradients that are zero by construction (a BN's bias and
    scale feeding straight into another BN, which removes them) are left out: in float64 they are 1e-10 of
    the others or less, and relative to that any rounding is 'wrong'."""
    largest = max(g.abs().max().item() for g in exact.gradients.values())
    return Exactness([relative_error(o, e) for o, e in zip(step.outputs, exact.outputs)],
                     {k: relative_error(step.gradients[k], g) for k, g in exact.gradients.items()
                      if g.abs().max().item() > 1e-10 * largest},
                     {k: relative_error(step.buffers[k], b) for k, b in exact.buffers.items()})


def compare_with_float64(model: nn.Module, x: Tensor) -> Dict[str, Exactness]:
    """``{'fast': …, 'reference': …}``: the float32 errors of the model as configured and of the reference
    computation, both against the reference computation in float64."""
    exact = train_step(model, x, reference=True, dtype=torch.float64)
    return {'fast': exactness(train_step(model, x), exact),
            'reference': exactness(train_step(model, x, reference=True), exact)}
