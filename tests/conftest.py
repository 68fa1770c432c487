"""Shared test helpers: randomized BN statistics make fusion and parity checks meaningful; a detector's
loss and backward pass on generated data."""
import pytest
import torch

from ghostdet.exactness import randomize_bn  # noqa: F401 (shared by the tests through conftest)


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-12)).item()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def loss_and_backward(model, image_shapes):
    from mmdet.testing import demo_mm_inputs
    packed = demo_mm_inputs(len(image_shapes), [(3, *s) for s in image_shapes], num_items=[3] * len(image_shapes),
                            num_classes=80)
    model.train()
    data = model.data_preprocessor(packed, True)
    losses = model.loss(data['inputs'], data['data_samples'])
    total = sum(v.sum() if isinstance(v, torch.Tensor) else sum(x.sum() for x in v)
                for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    return losses
