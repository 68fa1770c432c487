"""The C++ train-mode path of depthwise RepConvBN blocks: same outputs, gradients and BN statistics as the
PyTorch branches (checked against float64 branches, which are exact to ~1e-15), and a clean fallback."""
import copy

import pytest
import torch
from torch.utils import cpp_extension

from ghostdet import ops
from ghostdet.models import RepConvBN
from ghostdet.ops import build
from ghostdet.testing import max_rel_diff, random_depthwise_block

# (channels, kernel, stride, height, width, scale branch, identity branch, batch): GhostNetV3's block kinds,
# odd sizes and borders, few and many channels (tiles of several pixels vs one pixel).
CASES = [(8, 3, 1, 17, 13, True, True, 2), (24, 5, 2, 16, 15, True, True, 1), (16, 3, 2, 9, 11, True, True, 3),
         (12, 3, 1, 10, 10, False, True, 2), (12, 5, 1, 7, 9, True, False, 2), (20, 3, 1, 6, 6, False, False, 1),
         (300, 3, 1, 5, 7, True, True, 2), (300, 5, 2, 9, 6, True, True, 1), (40, 3, 2, 4, 3, True, True, 1)]


def takes_the_kernel(block: RepConvBN, x: torch.Tensor) -> bool:
    """Whether the block's train-mode forward runs the C++ op (on a copy: it updates BN statistics)."""
    return ops.rep_conv_bn_train(copy.deepcopy(block), x) is not None


def train_step(block: RepConvBN, x: torch.Tensor, reference: bool):
    """Output, input gradient, parameter gradients and buffers after one train-mode forward/backward."""
    x = x.clone().requires_grad_(True)
    out = block.act(block.forward_branches(x)) if reference else block(x)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape) ** 3
    (out * weights).sum().backward()
    grads = {name: p.grad.double() for name, p in block.named_parameters()}
    return out.double(), x.grad.double(), grads, {name: b.double() for name, b in block.named_buffers()}


@pytest.mark.parametrize('channels,kernel,stride,height,width,scale,identity,batch', CASES)
def test_kernel_matches_float64_branches(channels, kernel, stride, height, width, scale, identity, batch):
    block = random_depthwise_block(channels, kernel, stride, scale, identity)
    x = (torch.randn(batch, channels, height, width) * 2 + 1).contiguous(memory_format=torch.channels_last)
    assert takes_the_kernel(block, x)
    fast = train_step(copy.deepcopy(block), x, reference=False)
    exact = train_step(copy.deepcopy(block).double(), x.double(), reference=True)
    assert max_rel_diff(exact[0], fast[0]) < 1e-5
    assert max_rel_diff(exact[1], fast[1]) < 1e-4
    for name, grad in exact[2].items():
        assert max_rel_diff(grad, fast[2][name]) < 1e-3, name
    for name, buffer in exact[3].items():
        assert max_rel_diff(buffer, fast[3][name]) < 1e-5, name


def test_kernel_is_deterministic():
    block = random_depthwise_block(24, 3, 1, True, True)
    x = torch.randn(2, 24, 33, 31).contiguous(memory_format=torch.channels_last)
    first, second = (train_step(copy.deepcopy(block), x, reference=False) for _ in range(2))
    assert torch.equal(first[1], second[1])
    assert all(torch.equal(first[2][name], second[2][name]) for name in first[2])


def test_inputs_the_kernel_does_not_take_use_the_branches(monkeypatch):
    block = random_depthwise_block(8, 3, 1, True, True)
    assert not takes_the_kernel(block, torch.randn(2, 8, 9, 9))  # not channels-last
    assert not takes_the_kernel(block.double(), torch.randn(2, 8, 9, 9).double())
    block.float()
    assert not takes_the_kernel(block, torch.randn(1, 8, 1, 1))  # BN needs 2+ values
    dense = RepConvBN(8, 8, 3).train()
    x = torch.randn(2, 8, 9, 9).contiguous(memory_format=torch.channels_last)
    assert not takes_the_kernel(dense, x)  # a dense 3×3 conv
    monkeypatch.setenv(ops.SWITCH, '0')
    assert not takes_the_kernel(block, x)
    out = block(x)  # the PyTorch branches, same numbers
    monkeypatch.delenv(ops.SWITCH)
    assert max_rel_diff(out, copy.deepcopy(block)(x)) < 1e-5


def test_without_a_compiler_training_warns_and_uses_the_branches(monkeypatch, tmp_path):
    """A build failure (here: no C++ compiler on PATH) is a warning, not an error."""
    build.extension.cache_clear()
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path))
    monkeypatch.setenv('CXX', str(tmp_path / 'no-such-compiler'))
    try:
        with pytest.warns(UserWarning, match='could not build the CPU kernels'):
            assert build.extension() is None
        block = random_depthwise_block(8, 3, 1, True, True)
        x = torch.randn(2, 8, 9, 9).contiguous(memory_format=torch.channels_last)
        assert not takes_the_kernel(block, x)
        block(x).sum().backward()
    finally:
        build.extension.cache_clear()
        # torch's loader remembers the attempt in another folder and would rename this process's next build
        # (<name>_v1), rewriting the shared cache's build files: every later process would compile again.
        cpp_extension.JIT_EXTENSION_VERSIONER.entries.clear()
