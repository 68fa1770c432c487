"""Train mode is as exact as the reference: outputs, every parameter gradient and the BN running statistics
of one step, fast paths on or off, against the same model in float64; the bound is the float32 error of the
reference computation itself (NCHW, plain PyTorch branches) measured in the same run, so it holds on any
CPU."""
import copy

import pytest
import torch

from ghostdet import ops
from ghostdet.exactness import compare_with_float64, random_backbone, randomize_bn, relative_error, train_step
from ghostdet.models import GhostNetV3, RepConvBN
from ghostdet.testing import RELU

FACTOR = 4  # a fast path may be this much less exact than the reference's own float32 run ...
FLOOR = 1e-6  # ... or this far from float64 (8 float32 ulps), whichever is larger


def within_bound(fast: float, reference: float) -> bool:
    return fast <= FACTOR * reference + FLOOR


# (batch, height, width): the odd size (stride-32 stage of 5×6 pixels), batch 1 at the smallest size
# a batch-1 train step allows (the DFC attention pools stride 32 to 2×2), and a deep stage of 2×3 pixels.
SHAPES = [(2, 131, 171), (1, 128, 160), (2, 64, 96)]


@pytest.mark.parametrize('kernels', ['1', '0'])
@pytest.mark.parametrize('width', [0.5, 1.0])
@pytest.mark.parametrize('batch,height,width_px', SHAPES)
def test_backbone_train_step_is_as_exact_as_the_reference(monkeypatch, kernels, width, batch, height, width_px):
    monkeypatch.setenv(ops.SWITCH, kernels)
    torch.manual_seed(0)
    errors = compare_with_float64(random_backbone(width), torch.randn(batch, 3, height, width_px))
    fast, reference = errors['fast'], errors['reference']
    for stage, (f, r) in enumerate(zip(fast.outputs, reference.outputs)):
        assert within_bound(f, r), f'stage {stage} output: {f:.2e} vs reference {r:.2e}'
    for name, quantile in (('median', 0.5), ('90th percentile', 0.9)):
        f, r = fast.gradient_quantile(quantile), reference.gradient_quantile(quantile)
        assert within_bound(f, r), f'{name} gradient error: {f:.2e} vs reference {r:.2e}'
    assert within_bound(fast.worst_gradient, reference.worst_gradient), (
        f'worst gradient {fast.worst_gradient_name}: {fast.worst_gradient:.2e} vs {reference.worst_gradient:.2e}')
    f, r = max(fast.buffers.values()), max(reference.buffers.values())
    assert within_bound(f, r), f'running statistics: {f:.2e} vs reference {r:.2e}'


@pytest.mark.parametrize('pixels', [(1, 3, 3), (2, 2, 3), (4, 7, 9)])
def test_pointwise_train_path_is_exact_with_few_pixels_and_many_channels(pixels):
    """The one-matmul 1×1 path derives BN's statistics from the input covariance; with fewer pixels than
    channels (a deep stage) that covariance is far from full rank and diag(W Σ Wᵀ) cancels heavily. In a
    whole 1.0x backbone its float32 algebra put the median gradient error at 4e-3 (float64 algebra: 6e-6)."""
    block = randomize_bn(RepConvBN(160, 480, 1, act_cfg=RELU)).train()
    for param in block.parameters():
        torch.nn.init.normal_(param, 1.0, 0.5)
    batch, height, width = pixels
    x = torch.randn(batch, 160, height, width).relu().contiguous(memory_format=torch.channels_last)
    assert ops.rep_conv_bn_train(copy.deepcopy(block), x) is not None
    fast = train_step(block, x)
    exact = train_step(block, x, reference=True, dtype=torch.float64)
    reference = train_step(block, x, reference=True)
    assert within_bound(relative_error(fast.outputs[0], exact.outputs[0]),
                        relative_error(reference.outputs[0], exact.outputs[0]))
    for name, grad in exact.gradients.items():
        assert within_bound(relative_error(fast.gradients[name], grad),
                            relative_error(reference.gradients[name], grad)), name
    for name, buffer in exact.buffers.items():
        assert within_bound(relative_error(fast.buffers[name], buffer),
                            relative_error(reference.buffers[name], buffer)), name


def test_reference_computation_is_restored():
    """compare_with_float64 leaves the model, its memory format and the switch as they were."""
    model = GhostNetV3(0.5)
    before = copy.deepcopy(model.state_dict())
    compare_with_float64(model, torch.randn(2, 3, 64, 64))
    assert model.channels_last and ops.use_cpu_kernels()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).is_contiguous(memory_format=torch.channels_last)
