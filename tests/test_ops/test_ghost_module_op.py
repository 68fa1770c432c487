"""Inference fast paths: the C++ ghost-module kernel and the cached BN folds give the same outputs as the
PyTorch modules, step aside wherever gradients, tracing or other inputs need the modules, and never serve
stale weights."""
import copy

import pytest
import torch

from ghostdet import ops
from ghostdet.models import GhostNetV3
from ghostdet.testing import max_rel_diff, random_ghost_module, randomize_bn

CHANNELS_LAST = torch.channels_last


def takes_the_kernel(x: torch.Tensor, module, gate=None) -> bool:
    return ops.ghost_module_output(x, module.primary, module.cheap, module.out_channels, gate) is not None


# (in, out, height, width): channel blocks of 16/8/4/1 lanes (out / 2 = 4, 6, 8, 12, 36, 46), even and odd
# sizes (the DFC gate's nearest upsampling is not a plain 2× there), single rows and columns.
SHAPES = [(8, 8, 9, 7), (5, 12, 6, 8), (16, 16, 13, 17), (24, 24, 1, 5), (12, 72, 10, 1), (40, 92, 7, 12),
          (8, 8, 2, 2)]


@pytest.mark.parametrize('deploy', [True, False], ids=['fused', 'eval-form'])
@pytest.mark.parametrize('in_channels,out_channels,height,width', SHAPES)
def test_kernel_equals_the_modules(in_channels, out_channels, height, width, deploy):
    x = torch.randn(2, in_channels, height, width).contiguous(memory_format=CHANNELS_LAST)
    with torch.no_grad():
        for relu, dfc in ((True, True), (True, False), (False, False)):
            module = random_ghost_module(in_channels, out_channels, relu, dfc and min(height, width) > 1, deploy)
            gate = torch.sigmoid(module.dfc(torch.nn.functional.avg_pool2d(x, 2))) if module.dfc else None
            assert takes_the_kernel(x, module, gate)
            out = module(x)
            assert out.is_contiguous(memory_format=CHANNELS_LAST)
            with ops.cpu_kernels(False):
                assert max_rel_diff(module(x), out) < 1e-6


def test_backbone_outputs_with_and_without_kernel():
    model = randomize_bn(GhostNetV3(0.5, out_indices=(0, 1, 2, 3, 4, 5))).eval()
    fused = copy.deepcopy(model)
    fused.switch_to_deploy()
    for net in (model, fused):
        for size in ((97, 131), (64, 64)):
            x = torch.randn(1, 3, *size)
            with torch.no_grad():
                fast = net(x)
                with ops.cpu_kernels(False):
                    slow = net(x)
            for a, b in zip(slow, fast):
                assert max_rel_diff(a, b) < 1e-5


def test_kernel_steps_aside_where_the_modules_are_needed(monkeypatch):
    module = random_ghost_module(8, 16, True, False, deploy=False)
    x = torch.randn(1, 8, 6, 6).contiguous(memory_format=CHANNELS_LAST)
    with torch.no_grad():
        assert takes_the_kernel(x, module)
        assert not takes_the_kernel(x.contiguous(), module)  # NCHW
        assert not takes_the_kernel(x.double(), module)
        monkeypatch.setenv(ops.SWITCH, '0')
        assert not takes_the_kernel(x, module)
        monkeypatch.delenv(ops.SWITCH)
        with ops.cpu_kernels(False):
            assert not takes_the_kernel(x, module)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert not takes_the_kernel(x, module)
            assert module(x).isfinite().all()
        module.cheap.train()  # BN batch statistics: not one conv
        assert not takes_the_kernel(x, module)
        module.cheap.eval()
    assert not takes_the_kernel(x, module)  # gradients needed: autograd runs the modules
    traced = []
    torch.jit.trace(lambda t: traced.append(takes_the_kernel(t, module)) or t, x, check_trace=False)
    assert traced == [False]  # ONNX export and FLOP counting see PyTorch ops


def test_eval_mode_backward_reaches_every_weight():
    """Eval mode with gradients (e.g. a frozen-BN fine-tune or input saliency) differentiates through the
    folds; a cache filled under inference_mode must not leak inference tensors into autograd."""
    model = randomize_bn(GhostNetV3(0.5)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        model(x)
    sum(o.sum() for o in model(x)).backward()
    assert all(p.grad is not None for p in model.parameters())
    model.requires_grad_(False)
    with torch.inference_mode():
        model(x)
    image = x.clone().requires_grad_(True)
    sum(o.sum() for o in model(image)).backward()
    assert image.grad is not None and image.grad.abs().sum() > 0


@pytest.mark.parametrize('deploy', [True, False], ids=['fused', 'eval-form'])
def test_cached_folds_follow_weight_changes(deploy):
    """Folded BNs are cached between calls; loading weights, in-place updates and training steps must
    show up in the next eval output exactly as in a model that never cached anything."""
    model = randomize_bn(GhostNetV3(0.5)).eval()
    if deploy:
        model.switch_to_deploy()
    x = torch.randn(2, 3, 64, 64)  # 2 images: the train step's BNs need 2+ values at stride 64
    with torch.no_grad():
        model(x)  # fills the caches
        other = randomize_bn(copy.deepcopy(model), seed=1)
        model.load_state_dict(other.state_dict())
        assert all(torch.equal(a, b) for a, b in zip(model(x), copy.deepcopy(other)(x)))
        model.stem[1].running_var.mul_(3)
        model.stages[2][0].ghost1.dfc[1].weight.add_(1)
        expected = copy.deepcopy(model)(x)
        assert all(torch.equal(a, b) for a, b in zip(model(x), expected))
        for param in model.parameters():  # as MMEngine's EMA writes (no version bump), then validation
            param.data.mul_(0.9)
        model.eval()
        expected = copy.deepcopy(model)(x)
        assert all(torch.equal(a, b) for a, b in zip(model(x), expected))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    for update_weights in (False, True):
        model.train()
        if update_weights:
            sum(o.square().mean() for o in model(x)).backward()
            optimizer.step()
        else:
            with torch.no_grad():
                model(x)  # only the BNs' running statistics move (without bumping their versions)
        model.eval()
        with torch.no_grad():
            outs = model(x)
            assert all(torch.equal(a, b) and a.isfinite().all() for a, b in zip(outs, copy.deepcopy(model)(x)))
